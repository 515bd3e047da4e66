"""Tests of screener/campaign/ranking.py: E_hull against the current hull, the SCAN->PBE fallback, P(stable)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from screener.campaign.ranking import predicted_e_hull, probability_below


class TableHulls:
    """Hull formation energies from a table; nan where the 'scan' hull lacks a reference."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def hull_formation_energy_ev_per_atom(self, fidelity, composition):
        self.calls.append((fidelity, composition))
        return self.table[fidelity].get(composition, math.nan)


def test_e_hull_is_e_form_minus_hull_and_fallback_is_flagged():
    hulls = TableHulls({"pbe": {"AB": -0.2, "A2B": -0.1}, "scan": {"AB": -0.3}})
    mean, std = np.array([-0.25, 0.0, -0.1]), np.array([0.1, 0.2, 0.05])
    e_hull, e_std, hull_e, fallback = predicted_e_hull(mean, std, ["AB", "A2B", "AB"], hulls, "scan",
                                                       fallback_fidelity="pbe")
    np.testing.assert_allclose(e_hull, [0.05, 0.1, 0.2])
    np.testing.assert_allclose(hull_e, [-0.3, -0.1, -0.3])
    np.testing.assert_array_equal(fallback, [False, True, False])
    np.testing.assert_allclose(e_std, std)
    assert hulls.calls.count(("scan", "AB")) == 1  # one hull query per composition


def test_without_fallback_nan_stays_nan():
    hulls = TableHulls({"pbe": {}, "scan": {}})
    e_hull, _, _, fallback = predicted_e_hull([0.1], [0.1], ["AB"], hulls, "scan")
    assert math.isnan(e_hull[0]) and not fallback[0]


def test_probability_below_known_values():
    p = probability_below(np.array([0.0, -0.1, 0.1, 0.05]), np.array([0.1, 0.1, 0.1, 0.0]), 0.0)
    assert p[0] == pytest.approx(0.5)
    assert p[1] == pytest.approx(0.841344746, abs=1e-8)
    assert p[2] == pytest.approx(0.158655254, abs=1e-8)
    assert p[3] == pytest.approx(0.0, abs=1e-12)  # std floored at 1 meV: 50 sigma above
    assert np.all(np.diff(probability_below(np.linspace(-1, 1, 9), np.full(9, 0.2))) < 0)
