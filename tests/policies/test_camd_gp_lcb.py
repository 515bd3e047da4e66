"""The CAMD GP-LCB peer (screener/policies/camd_gp_lcb.py): LCB order, exploitation of certain candidates and
PBE exploration of those whose rank rests on their uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.policies import decide, load_policy
from screener.policies.camd_gp_lcb import ExactGP

# seed: SCAN and PBE E_hull of three compositions of Li-Fe-O, a few polymorphs each (two below the old hull)
SEED = [(f, fid, e + d) for f, e in (("LiFeO2", -0.1), ("Li5FeO4", -0.08), ("LiFe5O8", 0.3))
        for fid in ("pbe", "scan") for d in (-0.01, 0.0, 0.01)]


def _state(formulas, **kw):
    n = len(formulas)
    state = {
        "candidate_ids": [f"c{i}" for i in range(n)], "chemsys": ["Fe-Li-O"] * n,
        "scan_mean_ev_per_atom": [0.1] * n, "scan_std_ev_per_atom": [0.1] * n,
        "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n,
        "budget_cpu_hours": 1000.0, "formulas": formulas, "seed_rows": SEED,
    }
    state.update(kw)
    return state


def _policy(batch, **camd):
    base = load_policy("camd-gp-lcb")
    return base.model_copy(update={"batch_size": batch, "max_calculations_per_round": batch,
                                   "camd": base.camd.model_copy(update=camd)})


def test_scan_picks_follow_the_lcb_order():
    # every candidate exploited (CAMD's test sets unc_percentile=100): SCAN in ascending GP LCB
    state = _state(["LiFe5O8", "LiFeO2", "Li5FeO4"], pbe_done=["c0", "c1", "c2"])
    plan = decide(_policy(3, uncertainty_percentile=100.0), state)
    assert [(i.job_id, i.fidelity) for i in plan.items] == [("c1", "scan"), ("c2", "scan"), ("c0", "scan")]
    lcbs = [i.numbers["gp_lcb_ev_per_atom"] for i in plan.items]
    assert lcbs == sorted(lcbs)
    assert [i.numbers["camd_rank"] for i in plan.items] == [0, 1, 2]


def test_uncertain_candidate_whose_rank_falls_is_explored_with_pbe():
    # NaCl is far from every seed composition: the GP's prior mean (0) and large std give it the best LCB; once its
    # PBE row is hallucinated its std shrinks and its rank falls, so CAMD buys PBE for it (rank_threshold 0), or
    # SCAN when any fall is tolerated
    formulas = ["NaCl", "LiFeO2", "LiFeO2", "Li5FeO4", "Li5FeO4", "LiFe5O8"]
    state = _state(formulas)
    explore = decide(_policy(1, rank_threshold=0, uncertainty_percentile=0.0), state)
    assert [(i.job_id, i.fidelity) for i in explore.items] == [("c0", "pbe")]
    assert explore.items[0].numbers["camd_rank"] == 0
    assert explore.items[0].numbers["camd_rank_after_hallucination"] > 0
    keep = decide(_policy(1, rank_threshold=1000, uncertainty_percentile=0.0), state)
    assert [(i.job_id, i.fidelity) for i in keep.items] == [("c0", "scan")]


def test_hallucination_equals_conditioning_on_the_predicted_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = np.sin(x[:, 0]) + 0.05 * rng.normal(size=30)
    gp = ExactGP(x, y, max_iter=50)
    xs, xh = rng.normal(size=(5, 2)), rng.normal(size=(2, 2))
    mean_s, var_s, v_s = gp.posterior(xs)
    mean_h, _, v_h = gp.posterior(xh)
    fast = gp.hallucinated_variance(xs, v_s, var_s, xh, v_h)
    # reference: the same GP (same hyperparameters) with the pseudo-observations added to its data
    ref = ExactGP.__new__(ExactGP)
    ref.variance, ref.length_scale, ref.noise = gp.variance, gp.length_scale, gp.noise
    ref.x, ref.y = np.vstack([x, xh]), np.concatenate([y, mean_h])
    from scipy.linalg import cho_solve, cholesky

    k = ref._k(((ref.x[:, None] - ref.x[None]) ** 2).sum(-1)) + (ref.noise + 1e-8) * np.eye(len(ref.y))
    ref._chol = cholesky(k, lower=True)
    ref._alpha = cho_solve((ref._chol, True), ref.y)
    mean_ref, var_ref, _ = ref.posterior(xs)
    np.testing.assert_allclose(fast, var_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mean_ref, mean_s, atol=1e-6)
    assert (fast < var_s).all()


def test_missing_inputs_are_one_line_errors():
    with pytest.raises(InvalidInputError, match="formulas"):
        decide("camd-gp-lcb", {**_state(["LiFeO2"]), "formulas": None})
    with pytest.raises(InvalidInputError, match="seed_rows"):
        decide("camd-gp-lcb", _state(["LiFeO2"], seed_rows=[]))


def test_campaign_planner_feeds_formulas_and_seed_rows():
    from types import SimpleNamespace

    from pymatgen.entries.computed_entries import ComputedEntry

    from screener.campaign import CampaignConfig, PlanRequest
    from screener.campaign.components import PolicyPlanner

    ids = ["c0", "c1", "c2"]
    formulas = {"c0": "LiFeO2", "c1": "Li5FeO4", "c2": "LiFe5O8"}
    ledger = SimpleNamespace(
        candidates=lambda role=None, with_structures=True: [{"structure_id": s, "formula": f} for s, f in formulas.items()],
        jobs=lambda states=None: [SimpleNamespace(structure_id="c1", fidelity="pbe", result={"entry": {"x": 1}})])
    refs = [ComputedEntry("Li2O", -10.0), ComputedEntry("Fe2O3", -20.0)]
    hull = SimpleNamespace(references=refs, e_above_hull_ev_per_atom=lambda e: 0.05 if "Fe" in str(e.composition)
                           else 0.0)
    hulls = SimpleNamespace(hulls={"pbe": hull, "scan": hull}, e_above_hull_ev_per_atom=lambda fid, entry: 0.12)
    config = CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0)
    planner = PolicyPlanner(load_policy("camd-gp-lcb"), config, ledger=ledger, hulls=hulls)
    got_formulas, rows, n_own = planner._camd_seed(ids)
    assert n_own == 1 and rows[0] == ("Li5FeO4", "pbe", 0.12)  # the campaign's rows come first, counted
    assert got_formulas == ["LiFeO2", "Li5FeO4", "LiFe5O8"]
    assert ("Li5FeO4", "pbe", 0.12) in rows  # the campaign's PBE result, in the current hull
    assert {("Li2O", f, 0.0) for f in ("pbe", "scan")} | {("Fe2O3", f, 0.05) for f in ("pbe", "scan")} <= set(rows)
    request = PlanRequest(
        round_number=1, structure_ids=ids, chemsys=["Fe-Li-O"] * 3,
        e_hull_mean={"pbe": np.array([0.0, 0.1, 0.2]), "scan": np.array([0.0, 0.1, 0.2])},
        e_hull_std={"pbe": np.full(3, 0.05), "scan": np.full(3, 0.05)},
        cost={"pbe": np.full(3, 1.0), "scan": np.full(3, 5.0)}, done={("c1", "pbe")}, n_scan=0, n_pbe=1,
        learning_curve=[], remaining_budget=100.0, batch_size=2, seed=0)
    plan = planner.plan(request)
    assert len(plan.items) == 2 and plan.numbers["gp_n_train"] == 5  # 2 known formulas x 2 fidelities + c1's PBE


def test_the_seed_subsample_keeps_every_campaign_result():
    """Only known-set rows are subsampled to max_seed_rows: the results the campaign paid for are all kept."""
    from types import SimpleNamespace

    from screener.policies.camd_gp_lcb import _seed

    own = [(f"Li{i}O", "scan", 0.01 * i) for i in range(1, 8)]
    known = [(f"Fe{i}O", "pbe", 0.02 * i) for i in range(1, 40)]
    policy = SimpleNamespace(seed=0, camd=SimpleNamespace(max_seed_rows=10))
    state = SimpleNamespace(seed_rows=own + known, n_campaign_seed_rows=len(own), round_index=3)
    formulas, fidelities, _ = _seed(state, policy)
    assert len(formulas) == 10
    from pymatgen.core import Composition

    assert {Composition(f).reduced_formula for f, _, _ in own} <= set(formulas)  # all 7 own rows, 3 known ones


def test_fit_composition_gp_scales_on_the_seed_rows_and_serves_both_policies():
    from screener.policies import PolicyState
    from screener.policies.camd_gp_lcb import TooFewSeedRows, fit_composition_gp

    policy = _policy(3)
    state = PolicyState.model_validate(_state(["LiFeO2", "LiFe5O8", "NaCl"]))
    fitted = fit_composition_gp(state, policy)
    assert fitted.n_train == 6  # three compositions x two fidelities, polymorphs averaged
    assert fitted.formulas == ["LiFeO2", "LiFe5O8", "NaCl"]
    # the training rows are standard-scaled (mean 0, std 1 where they vary): the fitted GP saw exactly those
    assert np.allclose(fitted.gp.x.mean(0), 0.0, atol=1e-9)
    assert np.allclose(fitted.gp.x.std(0)[fitted.scale_std != 1.0], 1.0)
    # a candidate's row at a fidelity is its seed row where the seed has that composition: the same GP input
    seed_lifeo2_scan = [k for k, row in enumerate(fitted.gp.x) if np.allclose(row, fitted.rows(np.array([0]), "scan")[0])]
    assert len(seed_lifeo2_scan) == 1
    mean, var, _ = fitted.posterior(np.array([0, 1]), "scan")
    assert mean[0] < mean[1] and np.all(var > 0)  # LiFeO2 (stable seeds) below LiFe5O8 (0.3 eV/atom)
    with pytest.raises(TooFewSeedRows, match="1 computed structure"):
        fit_composition_gp(PolicyState.model_validate(_state(["LiFeO2"], seed_rows=SEED[:1])), policy)
