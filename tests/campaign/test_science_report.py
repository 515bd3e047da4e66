"""The report flags a candidate that IS a known phase (a rediscovery) and names the stable threshold."""

from __future__ import annotations

import sys
from pathlib import Path

REPORT_TESTS = str(Path(__file__).parents[1] / "report")
if REPORT_TESTS not in sys.path:  # synthetic_campaign.py of the report tests
    sys.path.insert(0, REPORT_TESTS)


def test_report_flags_a_rediscovery_and_names_the_threshold(tmp_path):
    from synthetic_campaign import build_synthetic_campaign

    from screener.campaign.ledger import Ledger
    from screener.report.data import load_report_data
    from screener.report.pages import candidate_page, overview_page

    campaign = build_synthetic_campaign(tmp_path / "c")
    with Ledger.in_dir(campaign) as ledger:
        ledger.set_meta("candidate_twins", {"Li2O-afl": ["mp-<1960>"]})
        ledger.set_meta("config", {**ledger.get_meta("config"), "stable_threshold_ev_per_atom": 0.02})
    data = load_report_data(campaign)
    li2o = next(c for c in data.candidates if c.structure_id == "Li2O-afl")
    assert li2o.twin_of == ["mp-<1960>"] and data.stable_threshold_ev_per_atom == 0.02
    page = candidate_page(li2o, data, viewer="", files={}, structure_note="", energy_figure=None, hull_figures={})
    assert "Rediscovery of a known phase" in page and "mp-<1960>" not in page  # escaped
    assert "&#60;" in page or "&lt;" in page
    other = next(c for c in data.candidates if c.structure_id == "NaCl-rs")
    assert "Rediscovery" not in candidate_page(other, data, viewer="", files={}, structure_note="",
                                               energy_figure=None, hull_figures={})
    overview = overview_page(data, {}, title="t")
    assert "SCAN E_hull &lt;= 20 meV/atom" in overview or "SCAN E_hull <= 20 meV/atom" in overview
