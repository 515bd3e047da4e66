"""Tests of screener/report/plots.py: each figure is a real PNG; hull plots only where pymatgen can draw one."""

from __future__ import annotations

from screener.report import plots
from screener.report.data import load_report_data

PNG = b"\x89PNG\r\n\x1a\n"


def test_hull_plot_per_fidelity_and_none_without_references(synthetic_campaign, tmp_path):
    data = load_report_data(synthetic_campaign)
    path = plots.plot_hull(data.hull("scan"), "Li-O", tmp_path / "scan_Li-O.png")
    assert path is not None and path.read_bytes().startswith(PNG)
    assert plots.plot_hull(data.hull("scan"), "Fe-O", tmp_path / "scan_Fe-O.png") is None  # no Fe reference
    assert not (tmp_path / "scan_Fe-O.png").exists()


def test_figures_with_and_without_data(synthetic_campaign, tmp_path):
    data = load_report_data(synthetic_campaign)
    made = [
        plots.plot_spend(data.jobs, data.rounds, "pbe-equivalent", tmp_path / "spend.png"),
        plots.plot_spend([], [], "pbe-equivalent", tmp_path / "spend_empty.png"),
        plots.plot_discoveries(data.headline, "pbe-equivalent", 1.0, tmp_path / "disc.png"),
        plots.plot_discoveries(None, "pbe-equivalent", None, tmp_path / "disc_empty.png"),
        plots.plot_learning_curve([], None, tmp_path / "lc_empty.png"),
        plots.plot_parity({f: data.parity(f, "e_form") for f in ("pbe", "scan")}, "e_form", tmp_path / "p1.png"),
        plots.plot_parity({f: data.parity(f, "e_hull") for f in ("pbe", "scan")}, "e_hull", tmp_path / "p2.png"),
        plots.plot_parity({}, "e_form", tmp_path / "p_empty.png"),
        plots.plot_candidate_energies(data.candidates[0], tmp_path / "cand.png"),
    ]
    for path in made:
        assert path.read_bytes().startswith(PNG), path.name
