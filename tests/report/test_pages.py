"""Tests of screener/report/pages.py: markdown helpers and pages built from the synthetic campaign."""

from __future__ import annotations

from screener.report.data import load_report_data
from screener.report.pages import candidates_page, honesty_note, overview_page, strip_external_links


def test_strip_external_links():
    text = "See [the paper](https://doi.org/10.1039/x) and https://example.org/a, [local](methods.md)."
    out = strip_external_links(text)
    assert "http" not in out and "the paper" in out and "example.org/a" in out and "[local](methods.md)" in out


def test_honesty_note_only_for_non_dft():
    assert honesty_note({"vasp": ["VASP r2SCAN static"]}) == ""
    note = honesty_note({"vasp": ["x"], "replay": ["replay: SCAN energy read from a.json, not computed"]})
    assert "Not DFT" in note and "not computed" in note and "`vasp`" not in note


def test_overview_and_table_from_ledger(synthetic_campaign):
    data = load_report_data(synthetic_campaign)
    page = overview_page(data, {"spend": "figures/spend.png"}, title="T")
    assert "![Budget spent by fidelity](figures/spend.png)" in page
    assert "## Discoveries vs spend" not in page  # only the figures given are embedded
    assert "Round 2: 4 planned, 4 bought" in page and "PBE buys more per CPU-hour" in page
    table = candidates_page(data)
    assert table.count("<tr>") == 1 + len(data.candidates)
    assert 'href="candidates/Li_O_odd_id.html"' in table and "Li/O odd:id" in table
    assert "not computed" in table  # LiO2-hyp was never computed at SCAN: not "no"


def test_model_cards_are_nested_and_delinked(synthetic_campaign):
    from screener.report.pages import methods_page

    data = load_report_data(synthetic_campaign)
    card = "# Model card: CGAT ensemble\n\n## Data\n\nSee [MP](https://materialsproject.org).\n"
    page = methods_page(data, model_cards={"initial ensemble": card}, versions={"python": "3.11"},
                        provenance={"seed": "0"})
    assert "### Model card of the initial ensemble: CGAT ensemble" in page
    assert "#### Data" in page and page.count("\n## Data") == 1  # the card's section sits below ours
    assert "See MP." in page and "https://" not in page
    assert "<code>scan-r2</code>" in page and "| python (report build) | <code>3.11</code> |" in page


def test_methods_page_names_the_initial_scan_ensemble_or_says_there_was_none(synthetic_campaign):
    from screener.report.pages import methods_page

    data = load_report_data(synthetic_campaign)
    data.config.pop("scan_model", None)
    page = methods_page(data, model_cards={}, versions={}, provenance={})
    assert "Initial SCAN ensemble: none (SCAN predictions came from the PBE ensemble" in page
    data.config["scan_model"] = "/models/scan <b>"
    page = methods_page(data, model_cards={}, versions={}, provenance={})
    assert "Initial SCAN ensemble: <code>/models/scan &#60;b&#62;</code> (SCAN predictions from round 1 on)." in page


def test_the_initial_scan_ensembles_model_card_is_shown_beside_the_pbe_ones(synthetic_campaign, tmp_path):
    from screener.report.site import _model_cards

    data = load_report_data(synthetic_campaign)
    for name in ("pbe0", "scan0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "MODEL_CARD.md").write_text(f"# Model card: {name}\n")
    data.config.update(model=str(tmp_path / "pbe0"), scan_model=str(tmp_path / "scan0"))
    cards = _model_cards(data)
    assert cards["initial PBE ensemble"] == "# Model card: pbe0\n"
    assert cards["initial SCAN ensemble"] == "# Model card: scan0\n"
    data.config.pop("scan_model")
    assert "initial SCAN ensemble" not in _model_cards(data)
