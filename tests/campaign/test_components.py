"""Tests of screener/campaign/components.py: the adapter from the loop's plan request to screener.policies.decide."""

from __future__ import annotations

import numpy as np
import pytest

from screener.campaign import CampaignConfig, PlanItem, PlanRequest
from screener.campaign.components import PolicyPlanner
from screener.policies import load_policy


def _request(remaining, competing=(), done=frozenset()):
    ids = [f"c{i}" for i in range(8)]
    return PlanRequest(
        round_number=1, structure_ids=ids, chemsys=["Li-O", "Li-O", "Fe-O", "Fe-O", "Li-Fe-O", "Na-Cl", "K-Br", "Cs"],
        e_hull_mean={"pbe": np.linspace(-0.1, 0.3, 8), "scan": np.linspace(-0.12, 0.28, 8)},
        e_hull_std={"pbe": np.full(8, 0.05), "scan": np.array([0.05] * 7 + [np.nan])},
        cost={"pbe": np.linspace(0.5, 2.0, 8), "scan": 5 * np.linspace(0.5, 2.0, 8)},
        done=set(done), n_scan=0, n_pbe=0, learning_curve=[], remaining_budget=remaining, batch_size=4, seed=0,
        competing=list(competing),
    )


@pytest.mark.parametrize("policy", ["scaling-law", "expected-value", "scan-only", "pbe-then-scan", "random"])
@pytest.mark.parametrize("remaining", [0.3, 3.0, 12.0, 100.0])
def test_plan_fits_the_budget_in_budget_units(policy, remaining):
    config = CampaignConfig(budget_total=100, unit_cpu_hours=4.0, batch_size=4)
    request = _request(remaining, done={("c0", "pbe")})
    plan = PolicyPlanner(load_policy(policy), config).plan(request)
    assert sum(i.estimated_cost for i in plan.items) <= remaining + 1e-9
    assert len(plan.items) <= 4
    index = {s: k for k, s in enumerate(request.structure_ids)}
    for item in plan.items:  # costs come back in budget units, the request's own numbers
        assert item.estimated_cost == pytest.approx(request.cost[item.fidelity][index[item.structure_id]])
        assert (item.structure_id, item.fidelity) != ("c0", "pbe")
    if policy == "scan-only":
        assert {i.fidelity for i in plan.items} <= {"scan"}
    assert plan.numbers["policy"] == policy


def test_competing_scan_phases_are_paid_from_the_plan():
    config = CampaignConfig(budget_total=100, unit_cpu_hours=4.0, batch_size=4)
    phase = PlanItem("mp-1960", "scan", "competing phase", 1.5, {"chemsys": "Li-O"})
    plan = PolicyPlanner(load_policy("scan-only"), config).plan(_request(20.0, competing=[phase]))
    ids = [(i.structure_id, i.fidelity) for i in plan.items]
    assert ("mp-1960", "scan") in ids
    assert ids.index(("mp-1960", "scan")) < ids.index(("c0", "scan"))  # the phase comes with its candidate
    assert next(i for i in plan.items if i.structure_id == "mp-1960").estimated_cost == pytest.approx(1.5)
    assert sum(i.estimated_cost for i in plan.items) <= 20.0 + 1e-9
