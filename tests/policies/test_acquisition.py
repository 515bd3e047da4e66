"""Tests of screener/policies/acquisition.py: acquisition functions and diverse batch selection."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.errors import InvalidInputError
from screener.policies.acquisition import (
    acquisition_scores,
    expected_improvement,
    lower_confidence_bound,
    normalize_chemsys,
    probability_stable,
    select_batch,
)


def test_probability_stable_known_values():
    p = probability_stable([0.0, -0.05, 0.05, 0.1], [0.05, 0.05, 0.05, 0.05])
    assert p == pytest.approx([0.5, 0.841344746, 0.158655254, 0.022750132], abs=1e-8)
    # threshold shifts the curve: E_hull 0.02 with threshold 0.02 is a coin toss
    assert probability_stable(0.02, 0.01, threshold_ev_per_atom=0.02) == pytest.approx(0.5)
    # std floor: a perfectly confident ensemble is still not certain at 0.5 meV/atom above the hull
    assert 0.0 < probability_stable(0.0005, 0.0)[()] < 0.5
    assert probability_stable(0.0005, 0.0, std_floor_ev_per_atom=1e-3) == pytest.approx(0.308537539, abs=1e-8)


@settings(max_examples=50, deadline=None)
@given(
    means=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=20),
    std=st.floats(0.0, 0.5),
)
def test_probability_stable_monotone_decreasing_in_mean(means, std):
    m = np.sort(np.asarray(means))
    p = probability_stable(m, np.full(m.size, std))
    assert np.all(np.diff(p) <= 1e-15)
    assert np.all((p >= 0) & (p <= 1))


def test_probability_stable_moves_toward_half_with_std():
    stds = np.linspace(0.01, 1.0, 30)
    above = probability_stable(np.full(30, 0.05), stds)
    below = probability_stable(np.full(30, -0.05), stds)
    assert np.all(np.diff(above) > 0) and np.all(np.diff(below) < 0)
    with pytest.raises(InvalidInputError):
        probability_stable([0.0], [-0.1])
    with pytest.raises(InvalidInputError):
        probability_stable([float("nan")], [0.1])


def test_lcb_and_expected_improvement_values():
    assert lower_confidence_bound([0.1, 0.0], [0.05, 0.1], kappa=2.0) == pytest.approx([0.0, -0.2])
    assert expected_improvement(0.0, 1.0) == pytest.approx(1.0 / math.sqrt(2 * math.pi))
    assert expected_improvement(-1.0, 1e-9) == pytest.approx(1.0, abs=1e-6)  # certainly 1 eV/atom below
    with pytest.raises(InvalidInputError):
        lower_confidence_bound([0.0], [0.1], kappa=-1)
    scores = acquisition_scores([0.1, 0.0], [0.05, 0.1], "lcb", kappa=2.0)
    assert scores == pytest.approx([0.0, 0.2])  # higher is better
    with pytest.raises(InvalidInputError):
        acquisition_scores([0.0], [0.1], "ucb")  # type: ignore[arg-type]


def test_normalize_chemsys():
    assert normalize_chemsys("O-Fe-Li") == "Fe-Li-O"
    assert normalize_chemsys("Li-O") == normalize_chemsys("O-Li")


def test_select_batch_orders_by_score_and_respects_exclude_and_budget():
    scores = [0.1, 0.9, 0.5, 0.9, 0.7]
    chem = ["A-B", "C-D", "E-F", "G-H", "I-J"]
    assert select_batch(scores, chem, 3).tolist() == [1, 3, 4]  # tie 0.9: lower index first
    assert select_batch([float("nan"), 0.2], ["A-B", "C-D"], 2).tolist() == [1]  # NaN never selected
    assert select_batch(scores, chem, 3, exclude=[3]).tolist() == [1, 4, 2]
    costs = [1.0, 5.0, 1.0, 5.0, 1.0]
    assert select_batch(scores, chem, None, costs=costs, budget=7.0).tolist() == [1, 4, 2]
    assert select_batch(scores, chem, None, costs=costs, budget=8.0).tolist() == [1, 4, 2, 0]
    with pytest.raises(InvalidInputError):
        select_batch(scores, chem, 3, budget=3.0)
    with pytest.raises(InvalidInputError):
        select_batch(scores, chem[:2], 3)


def test_select_batch_cap_keeps_one_system_from_taking_the_batch():
    scores = [0.99, 0.98, 0.97, 0.96, 0.2, 0.1]
    chem = ["Li-O", "O-Li", "Li-O", "Li-O", "Na-Cl", "Fe-O"]
    assert select_batch(scores, chem, 4).tolist() == [0, 1, 2, 3]
    assert select_batch(scores, chem, 4, max_per_chemsys=2).tolist() == [0, 1, 4, 5]
    assert select_batch(scores, chem, 4, max_per_chemsys=1).tolist() == [0, 4, 5]  # hard cap: smaller batch


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(-1, 1), st.sampled_from(["Li-O", "Fe-O", "Na-Cl", "Fe-Li-O"])), max_size=40),
    k=st.integers(0, 40),
    cap=st.integers(1, 5),
)
def test_select_batch_cap_property(data, k, cap):
    scores = [d[0] for d in data]
    chem = [d[1] for d in data]
    picked = select_batch(scores, chem, k, max_per_chemsys=cap)
    assert len(picked) <= k and len(set(picked.tolist())) == len(picked)
    counts = Counter(chem[i] for i in picked)
    assert all(c <= cap for c in counts.values())
    # the batch is only smaller than k when every system is full or candidates ran out
    if len(picked) < k:
        total = Counter(chem)
        assert all(counts[s] == min(cap, total[s]) for s in total)
    assert select_batch(scores, chem, k, max_per_chemsys=cap).tolist() == picked.tolist()  # deterministic
