"""The campaign report: an MkDocs site written from a campaign's ledger (read-only) and built offline.

``build_report(campaign_dir)`` writes ``<campaign_dir>/report/`` (``mkdocs.yml`` + ``docs/``) and runs
``mkdocs build --strict`` into ``report/site/``: overview (spend, discoveries, model error and scaling law, policy
decisions), a sortable candidate table, one page per selected candidate (structure viewer, CIF/POSCAR, predicted vs
computed E_hull, hull plot, jobs) and methods. See docs/report.md.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


_LAZY = {
    "build_report": "screener.report.site",
    "write_report": "screener.report.site",
    "run_mkdocs_build": "screener.report.site",
    "ReportResult": "screener.report.site",
    "ReportBuildError": "screener.report.site",
    "load_report_data": "screener.report.data",
    "ReportData": "screener.report.data",
    "CandidateInfo": "screener.report.data",
    "JobInfo": "screener.report.data",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
