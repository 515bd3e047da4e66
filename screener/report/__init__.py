"""The campaign report: an MkDocs site written from a campaign's ledger (read-only) and built offline.

``build_report(campaign_dir)`` writes ``<campaign_dir>/report/`` (``mkdocs.yml`` + ``docs/``) and runs
``mkdocs build --strict`` into ``report/site/``: overview (spend, discoveries, model error and scaling law, policy
decisions), a sortable candidate table, one page per selected candidate (structure viewer, CIF/POSCAR, predicted vs
computed E_hull, hull plot, jobs) and methods. See docs/report.md.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'screener.report' has no attribute {name!r}")
