"""bench/error_correlation_from_ledgers.py: correlation of the ensemble's errors within a round, by kind of pair."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from error_correlation_from_ledgers import pair_correlations, round_share  # noqa: E402


def test_pairs_are_split_into_polymorphs_one_chemical_system_and_the_rest():
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(200):  # each round: two polymorphs sharing an error, and an unrelated third structure
        shared = rng.standard_normal()
        groups.append([("AB", "A-B", shared + 0.3 * rng.standard_normal()),
                       ("AB", "A-B", shared + 0.3 * rng.standard_normal()),
                       ("A2B", "A-B", rng.standard_normal()), ("CD", "C-D", rng.standard_normal())])
    out = pair_correlations(groups)
    assert out["same_formula"]["pairs"] == 200 and out["same_formula"]["correlation"] > 0.8
    assert out["same_chemical_system"]["pairs"] == 400 and abs(out["same_chemical_system"]["correlation"]) < 0.15
    assert out["other"]["pairs"] == 600 and abs(out["other"]["correlation"]) < 0.15
    assert pair_correlations([[("AB", "A-B", 1.0)]])["same_formula"] == {"pairs": 0, "correlation": None}


def test_a_shared_round_error_shows_in_the_round_share_and_none_reads_near_zero():
    rng = np.random.default_rng(1)
    shared = [[("X", "X", s + rng.standard_normal()) for _ in range(10)] for s in rng.standard_normal(300)]
    alone = [[("X", "X", rng.standard_normal()) for _ in range(10)] for _ in range(300)]
    assert 0.35 < round_share(shared)["shared_share"] < 0.65  # half the variance is the round's
    assert round_share(alone)["shared_share"] < 0.05
    assert round_share(alone[:1])["shared_share"] is None
