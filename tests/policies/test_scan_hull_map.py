"""A screened candidate's PBE result read on the campaign's SCAN hull (screener/policies/scan_hull_map.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from screener.policies import decide, load_policy
from screener.policies.scan_hull_map import ScanHullMap, fit_fidelity_shift, fit_scan_hull_map


def test_fidelity_shift_recovers_per_element_weights():
    rng = np.random.default_rng(0)
    true = {"Li": -0.1, "O": -0.3, "Mn": 0.2}
    fractions = []
    for _ in range(200):
        x = rng.dirichlet(np.ones(3))
        fractions.append(dict(zip(true, x)))
    shifts = [sum(true[el] * f[el] for el in true) + rng.normal(0, 0.01) for f in fractions]
    shift = fit_fidelity_shift(fractions, shifts)
    assert shift.n_pairs == 200 and shift.residual_sd == pytest.approx(0.01, abs=0.003)
    assert shift({"Li": 0.5, "O": 0.5}) == pytest.approx(-0.2, abs=0.01)
    assert shift({"Fe": 1.0}) == 0.0  # an element no pair holds adds nothing
    assert fit_fidelity_shift([], [])({"Li": 1.0}) == 0.0


def _pairs(k_true, n=400, seed=1):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.2, 0.9, n)
    x_s = rng.normal(0.0, 0.15, n)
    z = ndtri(q) - k_true * x_s
    return q, x_s, rng.uniform(size=n) < ndtr(z)


def test_map_slope_is_recovered_and_about_zero_without_an_effect():
    fitted = fit_scan_hull_map(*_pairs(6.0))
    assert fitted.k_per_ev_per_atom == pytest.approx(6.0, abs=1.5) and fitted.a == 0.0
    assert fitted.x_ref_ev_per_atom == pytest.approx(np.mean(_pairs(6.0)[1]))
    # the level only where asked: the follow-ups came out 0.8 in probit below the relation's q
    q, x_s, _ = _pairs(0.0)
    stable = np.random.default_rng(2).uniform(size=len(q)) < ndtr(ndtri(q) - 0.8 - 6.0 * x_s)
    level = fit_scan_hull_map(q, x_s, stable, fit_level=True)
    assert level.a == pytest.approx(-0.8, abs=0.25) and level.k_per_ev_per_atom == pytest.approx(6.0, abs=2.0)
    assert fit_scan_hull_map(q, x_s, stable).a == 0.0
    assert fit_scan_hull_map(*_pairs(0.0)).k_per_ev_per_atom < 1.0
    # a result further above the SCAN hull is never likelier stable: k stays at its bound
    assert fit_scan_hull_map(*_pairs(-6.0)).k_per_ev_per_atom == pytest.approx(0.0, abs=1e-6)
    empty = fit_scan_hull_map([], [], [])
    assert (empty.a, empty.k_per_ev_per_atom, empty.n_pairs) == (0.0, 0.0, 0)


def test_map_lowers_p_above_the_scan_hull_and_leaves_the_rest():
    m = ScanHullMap(a=0.0, k_per_ev_per_atom=5.0)
    p = m.apply([0.8, 0.8, 0.8], [-0.1, 0.1, np.nan])
    assert p[0] > 0.8 > p[1] and p[2] == pytest.approx(0.8)
    # measured from x_ref: a result at the campaign's mean x_s keeps its q
    assert ScanHullMap(k_per_ev_per_atom=5.0, x_ref_ev_per_atom=-0.05).apply([0.8], [-0.05])[0] == pytest.approx(0.8)
    assert ScanHullMap().apply([0.3], [0.5])[0] == pytest.approx(0.3)


def _screened_state(**kw):
    """Two candidates screened at PBE, both on the PBE hull; c0's result sits 0.1 eV/atom below the SCAN hull
    once carried to SCAN, c1's 0.1 above. The campaign's pairs: those above the SCAN hull came out unstable."""
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 0.1, 60)
    pairs = [(0.0, float(v), bool(v < 0)) for v in x]
    state = {
        "candidate_ids": ["c0", "c1"], "chemsys": ["Li-O", "Li-Mn"],
        "scan_mean_ev_per_atom": [0.1, 0.1], "scan_std_ev_per_atom": [0.1, 0.1],
        "pbe_mean_ev_per_atom": [0.1, 0.1], "pbe_std_ev_per_atom": [0.1, 0.1],
        "cost_scan_cpu_hours": [5.0, 5.0], "cost_pbe_cpu_hours": [1.0, 1.0],
        "n_scan": 0, "n_pbe": 20000, "budget_cpu_hours": 100.0, "pbe_done": ["c0", "c1"],
        "pbe_result_e_hull_ev_per_atom": {"c0": 0.0, "c1": 0.0},
        "pbe_result_scan_hull_e_hull_ev_per_atom": {"c0": -0.1, "c1": 0.1}, "scan_hull_map_pairs": pairs,
    }
    state.update(kw)
    return state


def _policy(on: bool):
    policy = load_policy("expected-value")
    return policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"scan_hull_map": on})})


def test_policy_reads_the_screened_results_on_the_scan_hull_only_when_on():
    off = {i.job_id: i.numbers for i in decide(_policy(False), _screened_state()).items if i.kind == "candidate"}
    plan = decide(_policy(True), _screened_state())
    on = {i.job_id: i.numbers for i in plan.items if i.kind == "candidate"}
    assert off["c0"]["p_scan_stable"] == pytest.approx(off["c1"]["p_scan_stable"])  # the relation alone: alike
    assert "scan_hull_map_k_per_ev_per_atom" not in decide(_policy(False), _screened_state()).numbers
    assert plan.numbers["scan_hull_map_k_per_ev_per_atom"] > 5.0 and plan.numbers["scan_hull_map_n_pairs"] == 60
    assert on["c0"]["p_scan_stable"] > off["c0"]["p_scan_stable"] > on["c1"]["p_scan_stable"]
    assert on["c0"]["scan_hull_mapped_e_hull_ev_per_atom"] == pytest.approx(-0.1)
    assert [i.job_id for i in plan.items][0] == "c0"
    assert plan.numbers["scan_hull_map_x_ref_ev_per_atom"] == pytest.approx(0.0)  # the two waiting: -0.1, +0.1
    # no pairs yet: the prior, no change
    bare = decide(_policy(True), _screened_state(scan_hull_map_pairs=[]))
    assert {i.job_id: i.numbers["p_scan_stable"] for i in bare.items} == pytest.approx(
        {k: v["p_scan_stable"] for k, v in off.items()})

