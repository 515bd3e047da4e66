"""bench/relation_from_ledgers.py: the PBE -> SCAN relation against outcomes, binned on a hand-built ledger."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from relation_from_ledgers import decisions_by_bin, world_by_bin  # noqa: E402
from test_bench_routes import _ledger  # noqa: E402


def test_decisions_on_pbe_results_are_binned_by_their_pbe_e_hull(tmp_path):
    def follow_up(x, p, s):
        return {"p_scan_source": "pbe result", "pbe_e_hull_ev_per_atom": x, "p_scan_stable": p,
                "competitor_survival": s}

    decisions = [("a", follow_up(0.0, 0.5, 0.5)), ("b", follow_up(0.0, 0.3, 1.0)),  # on the hull: q 1.0 and 0.3
                 ("c", follow_up(0.015, 0.2, 0.8)),  # (0.01, 0.02]
                 ("d", {"p_scan_source": "model", "p_scan_stable": 0.9}),  # valued on the model: not counted
                 ("e", follow_up(0.3, 0.01, 1.0))]  # > 0.2
    bins = decisions_by_bin([_ledger(tmp_path / "camp", [], decisions)],
                            {"a": True, "b": False, "c": False, "d": True, "e": True})
    on, just_above, far = bins[0], bins[2], bins[-1]
    assert on["decisions"] == 2 and on["truly_scan_stable_share"] == 0.5
    assert on["mean_q_relation"] == 0.65 and on["mean_p_scan_stable"] == 0.4
    assert just_above["bin_pbe_e_hull_ev_per_atom"] == "(0.01, 0.02]" and just_above["mean_q_relation"] == 0.25
    assert just_above["truly_scan_stable_share"] == 0.0
    assert far["decisions"] == 1 and far["truly_scan_stable_share"] == 1.0
    assert sum(b["decisions"] for b in bins) == 4


def test_world_bins_count_every_structure_once():
    x = np.array([0.0, 0.0, 0.005, 0.03, 0.5])
    out = world_by_bin(x, np.array([True, False, True, False, False]))
    assert [b["structures"] for b in out] == [2, 1, 0, 1, 0, 0, 1]
    assert out[0]["scan_stable_share"] == 0.5 and out[2]["scan_stable_share"] is None
