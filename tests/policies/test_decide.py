"""Tests of screener/policies/decide.py: each preset behaves as named; plans never exceed the budget."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.errors import InvalidInputError
from screener.policies.config import BUILTIN_POLICIES
from screener.policies.decide import PolicyState, RoundPlan, decide

SYSTEMS = ["Li-O", "Fe-O", "Fe-Li-O", "Mn-O", "Co-Li-O", "Na-Cl"]


def _state(n: int = 60, seed: int = 1, **kw) -> dict:
    rng = np.random.default_rng(seed)
    state = dict(
        candidate_ids=[f"c{i}" for i in range(n)],
        chemsys=[SYSTEMS[i % len(SYSTEMS)] for i in range(n)],
        scan_mean_ev_per_atom=rng.normal(0.05, 0.08, n).tolist(),
        scan_std_ev_per_atom=rng.uniform(0.01, 0.05, n).tolist(),
        cost_scan_cpu_hours=rng.uniform(4.0, 6.0, n).tolist(),
        cost_pbe_cpu_hours=rng.uniform(0.8, 1.2, n).tolist(),
        n_scan=1000,
        n_pbe=4000,
        budget_cpu_hours=1000.0,
    )
    state.update(kw)
    return state


def _curve(a: float, b: float) -> list[dict]:
    """Learning-curve points of a known scaling law (N_s and N_p both varied)."""
    pts = []
    for ns in (250, 500, 1000):
        for npb in (1000, 2000, 4000):
            pts.append(dict(n_scan=ns, n_pbe=npb, mae_ev_per_atom=math.exp(0.5 + a * math.log(ns) + b * math.log(npb))))
    return pts


def _policy(name: str, **update):
    return BUILTIN_POLICIES[name].model_copy(update=update)


def test_scaling_law_buys_scan_when_scan_slope_is_steeper():
    pol = _policy("scaling-law", max_per_chemsys=None, exploitation=_policy("scan-only").exploitation)
    plan = decide(pol, _state(learning_curve=_curve(a=-0.5, b=-0.1)))
    alloc = plan.allocation
    assert alloc is not None and alloc.gain_per_cpu_hour_scan > 2 * alloc.gain_per_cpu_hour_pbe
    assert plan.fit is not None and plan.fit.a == pytest.approx(-0.5, abs=0.01)
    # every whole SCAN calculation the budget buys goes to SCAN; only the remainder (< 1 SCAN) buys PBE
    assert alloc.n_scan == int(alloc.budget_cpu_hours // alloc.cost_scan_cpu_hours)
    assert alloc.pbe_cpu_hours < alloc.cost_scan_cpu_hours
    assert plan.numbers["scan_cpu_hours"] > plan.budget_cpu_hours - 2 * max(_state()["cost_scan_cpu_hours"])


def test_scaling_law_buys_pbe_when_pbe_slope_is_steeper():
    pol = _policy("scaling-law", max_per_chemsys=None, exploitation=_policy("scan-only").exploitation)
    plan = decide(pol, _state(n=200, learning_curve=_curve(a=-0.1, b=-0.5)))
    assert plan.allocation is not None and plan.allocation.decision == "pbe"
    assert plan.numbers["n_scan_planned"] == 0 and plan.numbers["n_pbe_planned"] > 0
    assert plan.numbers["pbe_cpu_hours"] > 0.9 * plan.budget_cpu_hours - 1.2


def test_scaling_law_without_curve_uses_the_default_prior_balance():
    pol = _policy("scaling-law", max_per_chemsys=None, exploitation=_policy("scan-only").exploitation,
                  cost_ratio_scan_to_pbe=5.0)
    cost = dict(cost_scan_cpu_hours=[5.0] * 60, cost_pbe_cpu_hours=[1.0] * 60)
    more_pbe = decide(pol, _state(n_scan=1000, n_pbe=16_000, **cost))
    more_scan = decide(pol, _state(n_scan=1000, n_pbe=1000, **cost))
    assert more_pbe.fit.source == "prior" and more_pbe.allocation.decision == "scan"
    assert more_scan.allocation.decision == "pbe"


def test_scaling_law_confirms_likely_stable_candidates_first():
    means = [0.2] * 60
    means[7], means[13] = -0.05, -0.03  # two candidates the model thinks are stable
    plan = decide("scaling-law", _state(scan_mean_ev_per_atom=means, learning_curve=_curve(-0.1, -0.5)))
    first = plan.items[:2]
    assert [i.job_id for i in first] == ["c7", "c13"]
    assert all(i.fidelity == "scan" and i.reason.startswith("confirm likely stable") for i in first)
    assert plan.numbers["confirm_cpu_hours"] == pytest.approx(sum(i.cost_cpu_hours for i in first))


def test_scan_only_spends_everything_on_best_scan_candidates():
    state = _state(scan_done=["c0", "c1"])
    plan = decide(_policy("scan-only", max_per_chemsys=None), state)
    assert {i.fidelity for i in plan.items} == {"scan"}
    ids = [i.job_id for i in plan.items]
    assert "c0" not in ids and "c1" not in ids
    scores = [i.score for i in plan.items]
    assert scores == sorted(scores, reverse=True)
    assert plan.budget_cpu_hours - plan.total_cost_cpu_hours < max(state["cost_scan_cpu_hours"])


def test_pbe_then_scan_confirms_screened_and_screens_new():
    state = _state(n=200, pbe_done=["c3", "c4", "c5"], scan_done=["c5"])
    plan = decide(_policy("pbe-then-scan", max_per_chemsys=None), state)
    scan = [i.job_id for i in plan.items if i.fidelity == "scan"]
    pbe = [i.job_id for i in plan.items if i.fidelity == "pbe"]
    assert sorted(scan) == ["c3", "c4"]
    assert not set(pbe) & {"c3", "c4", "c5"} and len(pbe) > 0
    # the SCAN share it could not use goes to more PBE screening
    assert plan.total_cost_cpu_hours > 0.8 * plan.budget_cpu_hours


def test_random_is_deterministic_given_seed_and_differs_between_seeds():
    state = _state()
    a = decide("random", state).as_tuples()
    assert a == decide("random", state).as_tuples()
    assert a != decide(_policy("random", seed=3), state).as_tuples()
    assert a != decide("random", {**state, "round_index": 1}).as_tuples()
    gen = decide("random", state, rng=np.random.default_rng(42)).as_tuples()
    assert gen == decide("random", state, rng=np.random.default_rng(42)).as_tuples()
    assert {t[1] for t in a} == {"scan"}


def test_competing_phases_come_before_their_candidate_and_are_paid_once():
    phases = [dict(job_id="mp-LiO", chemsys="Li-O", cost_cpu_hours=3.0),
              dict(job_id="mp-FeO", chemsys="Fe-O", cost_cpu_hours=3.0)]
    plan = decide("scan-only", _state(required_phases=phases))
    ids = [i.job_id for i in plan.items]
    assert ids.count("mp-LiO") == 1 and ids.count("mp-FeO") == 1
    for item in plan.items:
        if item.kind == "competing_phase":
            assert ids.index(item.job_id) < ids.index(item.for_candidate)


@pytest.mark.parametrize("name", ["scaling-law", "random", "scan-only", "pbe-then-scan"])
def test_diversity_cap_holds_in_plans(name):
    pol = _policy(name, max_per_chemsys=2)
    plan = decide(pol, _state(pbe_done=[f"c{i}" for i in range(0, 60, 2)], budget_cpu_hours=500))
    for fid in ("scan", "pbe"):
        picked = [i.job_id for i in plan.items if i.fidelity == fid and i.kind == "candidate"]
        counts = Counter(SYSTEMS[int(j[1:]) % len(SYSTEMS)] for j in picked)
        assert all(c <= 2 for c in counts.values()), (fid, counts)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["scaling-law", "random", "scan-only", "pbe-then-scan"]),
    costs=st.lists(st.tuples(st.floats(0.01, 50.0), st.floats(0.01, 10.0)), min_size=0, max_size=30),
    budget=st.floats(0.0, 300.0),
    phase_cost=st.floats(0.0, 20.0),
    batch=st.integers(1, 30),
    cap=st.one_of(st.none(), st.integers(1, 10)),
)
def test_plan_never_exceeds_budget(name, costs, budget, phase_cost, batch, cap):
    n = len(costs)
    state = _state(n=n, budget_cpu_hours=budget,
                   cost_scan_cpu_hours=[c[0] for c in costs], cost_pbe_cpu_hours=[c[1] for c in costs],
                   pbe_done=[f"c{i}" for i in range(0, n, 3)],
                   required_phases=[dict(job_id="p", chemsys="Li-O", cost_cpu_hours=phase_cost)],
                   learning_curve=_curve(-0.3, -0.3)[:4])
    plan = decide(_policy(name, batch_size=batch, max_calculations_per_round=cap), state)
    assert plan.budget_cpu_hours <= budget
    assert plan.total_cost_cpu_hours <= plan.budget_cpu_hours * (1 + 1e-9) + 1e-12
    assert cap is None or len(plan.items) <= cap
    pairs = [(i.job_id, i.fidelity) for i in plan.items]
    assert len(pairs) == len(set(pairs))
    assert RoundPlan.model_validate_json(plan.model_dump_json()) == plan


def test_invalid_state_raises_invalid_input():
    bad = _state()
    bad["chemsys"] = bad["chemsys"][:-1]
    with pytest.raises(InvalidInputError, match="chemsys"):
        decide("scan-only", bad)
    bad = _state(cost_scan_cpu_hours=[0.0] * 60)
    with pytest.raises(InvalidInputError, match="cost_scan"):
        decide("scan-only", bad)
    assert isinstance(PolicyState.model_validate(_state()), PolicyState)


def test_empty_candidates_and_zero_budget_give_empty_plans():
    for name in ("scaling-law", "random", "scan-only", "pbe-then-scan"):
        assert decide(name, _state(n=0)).items == []
        assert decide(name, _state(budget_cpu_hours=0.0)).items == []


def test_equal_scores_are_broken_by_lower_predicted_e_hull():
    """P(stable) saturates at 1 for very negative predictions: the most negative must still come first."""
    from screener.policies import decide, load_policy

    policy = load_policy("scan-only").model_copy(update={"batch_size": 1, "max_calculations_per_round": 1})
    state = {
        "candidate_ids": ["a", "b", "c"],
        "chemsys": ["Li-O", "Fe-O", "Na-Cl"],
        "scan_mean_ev_per_atom": [-1.0, -3.0, -2.0],
        "scan_std_ev_per_atom": [0.01, 0.01, 0.01],
        "cost_pbe_cpu_hours": [1.0, 1.0, 1.0],
        "cost_scan_cpu_hours": [5.0, 5.0, 5.0],
        "budget_cpu_hours": 5.0,
    }
    plan = decide(policy, state)
    assert [item.job_id for item in plan.items] == ["b"]
