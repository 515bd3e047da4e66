"""decide() plans a structure at most once per round, even when a candidate is also a competing phase."""

from __future__ import annotations

import pytest

from screener.policies import decide, load_policy
from screener.policies.allocation import CompetingPhaseJob


def _state(**kw):
    ids = ["mp-4073", "mp-863742", "mp-972370", "mp-1", "mp-2"]
    state = {
        "candidate_ids": ids,
        "chemsys": ["Li-O", "Li-O", "Li-O", "Fe-O", "Na-Cl"],
        "scan_mean_ev_per_atom": [-0.2, -0.15, -0.1, 0.0, 0.05],
        "scan_std_ev_per_atom": [0.02] * 5,
        "cost_scan_cpu_hours": [5.0] * 5,
        "cost_pbe_cpu_hours": [1.0] * 5,
        # two candidates are also competing phases of the Li-O SCAN hull (each of its own, too)
        "required_phases": [CompetingPhaseJob(job_id="mp-863742", chemsys="Li-O", cost_cpu_hours=5.0),
                            CompetingPhaseJob(job_id="mp-972370", chemsys="Li-O", cost_cpu_hours=5.0)],
        "budget_cpu_hours": 1000.0,
        "round_index": 3,
    }
    state.update(kw)
    return state


@pytest.mark.parametrize("policy", ["scaling-law", "scan-only", "pbe-then-scan", "random"])
def test_no_structure_twice_in_a_round(policy):
    p = load_policy(policy).model_copy(update={"batch_size": 8, "max_calculations_per_round": 8})
    plan = decide(p, _state())
    ids = [i.job_id for i in plan.items]
    assert len(ids) == len(set(ids)), plan.as_tuples()
    # a candidate bought as a competing phase is not also bought for itself, and the freed slot buys another one
    if policy in ("scaling-law", "scan-only"):
        assert set(ids) == {"mp-4073", "mp-863742", "mp-972370", "mp-1", "mp-2"}
