"""The CAMD epsilon-greedy peer (screener/policies/camd_epsilon_greedy.py): a fixed SCAN share of the round's picks,
best predicted first; PBE for the compositions nearest to the next-best."""

from __future__ import annotations

from screener.policies import decide, load_policy


def _state(means, formulas=None, **kw):
    n = len(means)
    state = {
        "candidate_ids": [f"c{i}" for i in range(n)], "chemsys": ["Fe-Li-O"] * n,
        "scan_mean_ev_per_atom": list(means), "scan_std_ev_per_atom": [0.1] * n,
        "pbe_mean_ev_per_atom": list(means), "pbe_std_ev_per_atom": [0.1] * n,
        "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n,
        "budget_cpu_hours": 1000.0, "formulas": formulas,
    }
    state.update(kw)
    return state


def _policy(batch, **camd):
    base = load_policy("camd-epsilon-greedy")
    return base.model_copy(update={"batch_size": batch, "max_calculations_per_round": batch,
                                   "camd": base.camd.model_copy(update=camd)})


MEANS = [0.30, -0.10, 0.05, 0.50, 0.00, 0.20, 0.40, 0.10]  # ascending: c1 c4 c2 c7 c5 c0 c6 c3


def test_fixed_high_fidelity_fraction_of_the_picks_goes_to_scan_best_first():
    plan = decide(_policy(6, high_fidelity_fraction=0.5), _state(MEANS))
    assert [(i.job_id, i.fidelity) for i in plan.items] == [
        ("c1", "scan"), ("c4", "scan"), ("c2", "scan"),  # int(6 * 0.5) best predicted
        ("c7", "pbe"), ("c5", "pbe"), ("c0", "pbe")]      # own PBE of the next-best (no formulas: only own is near)
    plan = decide(_policy(8, high_fidelity_fraction=0.25), _state(MEANS))
    assert [i.job_id for i in plan.items if i.fidelity == "scan"] == ["c1", "c4"]
    assert sum(i.fidelity == "pbe" for i in plan.items) == 6
    assert plan.numbers["camd_scan_picks"] == 2 and plan.numbers["camd_pbe_picks"] == 6


def test_nearest_composition_takes_the_pbe_pick():
    # c2 is the next-best after the single SCAN pick; its own PBE is done, so the pick goes to the candidate of the
    # nearest composition (c3, a polymorph of c2's formula), not to the better-predicted c1 of another formula
    formulas = ["LiFeO2", "Li2O", "Li5FeO4", "Li5FeO4"]
    state = _state([-0.2, 0.3, 0.0, 0.4], formulas=formulas, pbe_done=["c2"])
    plan = decide(_policy(2, high_fidelity_fraction=0.5), state)
    assert [(i.job_id, i.fidelity) for i in plan.items] == [("c0", "scan"), ("c3", "pbe")]
    assert plan.items[1].numbers["camd_for"] == "c2"


def test_without_open_pbe_candidates_all_picks_go_to_scan():
    state = _state(MEANS, pbe_done=[f"c{i}" for i in range(len(MEANS))])
    plan = decide(_policy(4, high_fidelity_fraction=0.5), state)
    assert [(i.job_id, i.fidelity) for i in plan.items] == [("c1", "scan"), ("c4", "scan"), ("c2", "scan"),
                                                             ("c7", "scan")]


def test_similarity_gate_refuses_scan_far_from_the_seed():
    formulas = ["NaCl", "LiFeO2", "Li2O", "Fe2O3"]
    state = _state([-0.3, 0.0, 0.1, 0.2], formulas=formulas,
                   seed_rows=[("LiFeO2", "pbe", 0.0), ("Li2O", "scan", 0.0), ("Fe2O3", "pbe", 0.0)])
    plan = decide(_policy(4, high_fidelity_fraction=0.5, similarity_threshold=1.0), state)
    assert [i.job_id for i in plan.items if i.fidelity == "scan"] == ["c1", "c2"]  # NaCl refused
    assert plan.numbers["camd_refused_by_similarity"] == 1
