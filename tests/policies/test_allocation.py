"""Tests of screener/policies/allocation.py: SCAN vs PBE split and SCAN plans with competing phases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.errors import InvalidInputError
from screener.policies.allocation import Allocation, CompetingPhaseJob, allocate_fidelities, plan_scan_share
from screener.policies.scaling_law import ScalingLawFit, ScalingLawPrior, fit_scaling_law


def _curve_fit(a: float, b: float) -> ScalingLawFit:
    """Fit to a synthetic learning curve with known slopes (small noise)."""
    rng = np.random.default_rng(0)
    ns, npb = np.meshgrid([200, 400, 800, 1600, 3200], [2e3, 8e3, 3.2e4])
    ns, npb = ns.ravel(), npb.ravel()
    mae = np.exp(0.5 + a * np.log(ns) + b * np.log(npb) + rng.normal(0, 0.01, ns.size))
    return fit_scaling_law(ns, npb, mae)


def test_steep_scan_curve_buys_scan():
    fit = _curve_fit(a=-0.5, b=-0.1)
    # at N_p = 4 N_s: SCAN gain/cost ~ 0.5/(5 N_s) vs PBE ~ 0.1/(4 N_s): SCAN wins by ~4x
    alloc = allocate_fidelities(fit, 1000, 4000, cost_scan=5.0, cost_pbe=1.0, budget=100.0)
    assert alloc.decision == "scan" and alloc.n_scan == 20 and alloc.n_pbe == 0
    assert alloc.gain_per_cpu_hour_scan > alloc.gain_per_cpu_hour_pbe
    assert alloc.mae_after_allocation == pytest.approx(alloc.mae_after_k_scan)  # k = 20 SCAN calcs


def test_steep_pbe_curve_buys_pbe():
    fit = _curve_fit(a=-0.1, b=-0.5)
    alloc = allocate_fidelities(fit, 1000, 4000, cost_scan=5.0, cost_pbe=1.0, budget=100.0)
    assert alloc.decision == "pbe" and alloc.n_pbe == 100 and alloc.n_scan == 0
    assert alloc.gain_per_cpu_hour_pbe > alloc.gain_per_cpu_hour_scan
    assert alloc.mae_after_allocation < alloc.mae_now


def test_default_prior_balances_at_four_pbe_per_scan_for_cost_ratio_five():
    fit = ScalingLawFit.from_prior()
    at = allocate_fidelities(fit, 1000, 4000, cost_scan=5.0, cost_pbe=1.0, budget=5.0, probe_size=1)
    assert at.balance_ratio_pbe_to_scan == pytest.approx(4.0)
    assert at.gain_per_cpu_hour_scan / at.gain_per_cpu_hour_pbe == pytest.approx(1.0, abs=0.01)
    below = allocate_fidelities(fit, 1000, 3000, cost_scan=5.0, cost_pbe=1.0, budget=50.0)
    above = allocate_fidelities(fit, 1000, 5000, cost_scan=5.0, cost_pbe=1.0, budget=50.0)
    assert below.decision == "pbe" and above.decision == "scan"
    # the paper's scenarios: equal sets -> PBE; 178k pre-training with 11k training -> SCAN
    assert allocate_fidelities(fit, 11_000, 11_000, cost_scan=5, cost_pbe=1, budget=50).decision == "pbe"
    assert allocate_fidelities(fit, 11_000, 178_000, cost_scan=5, cost_pbe=1, budget=50).decision == "scan"
    # a large budget keeps the sizes near the balance ratio
    big = allocate_fidelities(fit, 1000, 4000, cost_scan=5.0, cost_pbe=1.0, budget=5000.0)
    assert big.decision == "mixed"
    assert (4000 + big.n_pbe) / (1000 + big.n_scan) == pytest.approx(4.0, rel=0.05)
    # a more expensive high fidelity moves the balance toward more PBE
    pricey = allocate_fidelities(fit, 1000, 5000, cost_scan=20.0, cost_pbe=1.0, budget=50.0)
    assert pricey.decision == "pbe" and pricey.balance_ratio_pbe_to_scan == pytest.approx(16.0)


def test_no_predicted_gain_goes_to_scan():
    fit = ScalingLawFit.from_prior(ScalingLawPrior(a=0.1, b=0.1))
    alloc = allocate_fidelities(fit, 100, 100, cost_scan=5.0, cost_pbe=1.0, budget=23.0)
    assert alloc.n_scan == 4 and alloc.n_pbe == 3  # the 3 CPU h left after 4 SCAN buy PBE
    assert "no MAE gain" in alloc.reason


def test_allocation_json_round_trip_and_bad_costs():
    alloc = allocate_fidelities(ScalingLawFit.from_prior(), 10, 10, cost_scan=5.0, cost_pbe=1.0, budget=12.0)
    assert Allocation.model_validate_json(alloc.model_dump_json()) == alloc
    with pytest.raises(InvalidInputError):
        allocate_fidelities(ScalingLawFit.from_prior(), 10, 10, cost_scan=0.0, cost_pbe=1.0, budget=12.0)
    with pytest.raises(InvalidInputError):
        allocate_fidelities(ScalingLawFit.from_prior(), 10, 10, cost_scan=5.0, cost_pbe=1.0, budget=-1.0)


@settings(max_examples=60, deadline=None)
@given(
    cost_scan=st.floats(0.01, 100.0),
    cost_pbe=st.floats(0.01, 100.0),
    budget=st.floats(0.0, 2000.0),
    n_scan=st.integers(0, 10_000),
    n_pbe=st.integers(0, 100_000),
    cap=st.one_of(st.none(), st.integers(0, 50)),
)
def test_allocation_never_exceeds_budget(cost_scan, cost_pbe, budget, n_scan, n_pbe, cap):
    alloc = allocate_fidelities(ScalingLawFit.from_prior(), n_scan, n_pbe, cost_scan=cost_scan, cost_pbe=cost_pbe,
                                budget=budget, max_calculations=cap)
    assert alloc.n_scan * cost_scan + alloc.n_pbe * cost_pbe <= budget * (1 + 1e-9)
    assert cap is None or alloc.n_scan + alloc.n_pbe <= cap
    # greedy leaves less than the cheaper calculation unspent (unless capped)
    if cap is None:
        assert budget - alloc.spent_cpu_hours < min(cost_scan, cost_pbe) + 1e-9 * budget + 1e-12 or alloc.n_scan == 0


def test_plan_scan_share_pays_competing_phases_once_and_first():
    phases = [
        CompetingPhaseJob(job_id="LiO", chemsys="Li-O", cost_cpu_hours=2.0),
        CompetingPhaseJob(job_id="FeO", chemsys="O-Fe", cost_cpu_hours=3.0),
        CompetingPhaseJob(job_id="NaCl", chemsys="Na-Cl", cost_cpu_hours=1.0),
        CompetingPhaseJob(job_id="special", chemsys="Mn-O", cost_cpu_hours=1.0, needed_by=["c3"]),
    ]
    cands = [("c1", "Li-Fe-O", 5.0), ("c2", "Fe-O", 5.0), ("c3", "Li-O", 5.0)]
    plan = plan_scan_share(cands, phases, budget=100.0)
    ids = [s.job_id for s in plan]
    assert ids == ["LiO", "FeO", "c1", "c2", "special", "c3"]
    assert [s.kind for s in plan].count("competing_phase") == 3
    assert sum(s.cost_cpu_hours for s in plan) == pytest.approx(2 + 3 + 5 + 5 + 1 + 5)


def test_plan_scan_share_skips_packages_that_do_not_fit():
    phases = [CompetingPhaseJob(job_id="FeO", chemsys="Fe-O", cost_cpu_hours=8.0)]
    cands = [("c1", "Fe-O", 5.0), ("c2", "Li-O", 5.0), ("c3", "Li-O", 5.0)]
    plan = plan_scan_share(cands, phases, budget=12.0)
    assert [s.job_id for s in plan] == ["c2", "c3"]  # c1 + FeO = 13 > 12 is skipped, cheaper ones still fit
    assert [s.job_id for s in plan_scan_share(cands, phases, budget=9.0)] == ["c2"]  # c3 no longer fits
    capped = plan_scan_share([("a", "Li-O", 1.0), ("b", "O-Li", 1.0), ("c", "Na-Cl", 1.0)], [], 10.0,
                             max_per_chemsys=1)
    assert [s.job_id for s in capped] == ["a", "c"]


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.floats(0.0, 50.0), min_size=0, max_size=25),
    phase_costs=st.lists(st.floats(0.0, 20.0), min_size=0, max_size=6),
    budget=st.floats(0.0, 200.0),
)
def test_plan_scan_share_never_exceeds_budget(costs, phase_costs, budget):
    systems = ["Li-O", "Fe-O", "Fe-Li-O", "Na-Cl"]
    cands = [(f"c{i}", systems[i % 4], c) for i, c in enumerate(costs)]
    phases = [CompetingPhaseJob(job_id=f"p{j}", chemsys=systems[j % 4], cost_cpu_hours=c)
              for j, c in enumerate(phase_costs)]
    plan = plan_scan_share(cands, phases, budget)
    assert math.fsum(s.cost_cpu_hours for s in plan) <= budget * (1 + 1e-9) + 1e-12
    seen: set[str] = set()
    for s in plan:  # every phase comes before the candidate it serves
        if s.kind == "candidate":
            seen.add(s.job_id)
        else:
            assert s.for_candidate not in seen
