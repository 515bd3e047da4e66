"""The composition model beside the ensemble (screener/policies/composition_model.py): the precision blend and the
expected-value option that uses it."""

from __future__ import annotations

import numpy as np
import pytest

from screener.policies import decide, load_policy
from screener.policies.composition_model import composition_gp_predictions, precision_blend

# computed E_hull of Li-Fe-O compositions, both fidelities, three polymorphs each: LiFeO2 and Li5FeO4 near the hull,
# LiFe5O8 and LiFe2O4 far above it
SEED = [(f, fid, e + d) for f, e in (("LiFeO2", -0.05), ("Li5FeO4", -0.02), ("LiFe5O8", 0.4), ("LiFe2O4", 0.45))
        for fid in ("pbe", "scan") for d in (-0.01, 0.0, 0.01)]


def test_precision_blend_is_the_product_of_the_two_gaussians():
    mean, std = precision_blend([0.2, 0.0, np.inf], [0.1, 0.1, 0.1], [0.0, 0.3, 0.0], [0.1, 0.2, 0.1], 1.0)
    # equal precision: the midpoint, variance halved; a GP twice as wide pulls a quarter as hard
    np.testing.assert_allclose(mean[:2], [0.1, 0.3 / 5])
    np.testing.assert_allclose(std[:2], [0.1 / np.sqrt(2), 1 / np.sqrt(100 + 25)])
    assert mean[2] == np.inf and std[2] == 0.1  # no model prediction: left as it is
    # the weight discounts the GP's precision; weight 0 leaves the model's Gaussian
    half, _ = precision_blend([0.2], [0.1], [0.0], [0.1], 0.5)
    assert half[0] == pytest.approx(0.2 * 100 / 150)
    same, same_sd = precision_blend([0.2], [0.1], [0.0], [0.1], 0.0)
    assert same[0] == pytest.approx(0.2) and same_sd[0] == pytest.approx(0.1)


def _state(formulas, **kw):
    n = len(formulas)
    state = {
        "candidate_ids": [f"c{i}" for i in range(n)], "chemsys": [f"Fe-Li-O-{i}" for i in range(n)],
        "scan_mean_ev_per_atom": [0.1] * n, "scan_std_ev_per_atom": [0.1] * n,
        "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n, "n_pbe": 20000,
        "budget_cpu_hours": 1000.0, "formulas": formulas, "seed_rows": SEED, "n_campaign_seed_rows": 0,
    }
    state.update(kw)
    return state


def _policy(weight):
    policy = load_policy("expected-value")
    return policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"composition_gp_weight": weight, "composition_gp_pool": False})})


def test_gp_follows_the_computed_compositions_at_both_fidelities():
    from screener.policies import PolicyState

    state = PolicyState(**_state(["LiFeO2", "LiFe5O8"]))
    gp, numbers = composition_gp_predictions(_policy(1.0), state)
    for fidelity in ("scan", "pbe"):
        mean, std = gp[fidelity]
        assert mean[0] < 0.05 < 0.3 < mean[1]
        assert np.all(std > 0) and np.all(std < 0.3)
    assert numbers["composition_gp_n_train"] == 8  # averaged per (composition, fidelity)


def test_the_blend_moves_p_stable_where_the_gp_and_the_ensemble_disagree():
    # the ensemble rates both candidates alike (0.1 +- 0.1); the GP knows LiFeO2 sits on the hull and LiFe5O8 far
    # above it, so with the blend the first's P(SCAN-stable) rises and the second's falls
    state = _state(["LiFeO2", "LiFe5O8"])
    p = {}
    for weight in (0.0, 1.0):
        plan = decide(_policy(weight), state)
        p[weight] = {i.job_id: i.numbers for i in plan.items if i.kind == "candidate"}
    assert "composition_gp_scan_mean_ev_per_atom" not in p[0.0]["c0"]
    blended = decide(_policy(1.0), state)
    assert blended.numbers["composition_gp_n_train"] == 8
    on = {i.job_id: i.numbers for i in blended.items if i.kind == "candidate"}
    assert on["c0"]["composition_gp_scan_mean_ev_per_atom"] < on["c1"]["composition_gp_scan_mean_ev_per_atom"]
    assert on["c0"]["p_scan_stable"] > p[0.0]["c0"]["p_scan_stable"]
    assert "c1" not in on or on["c1"]["p_scan_stable"] < p[0.0]["c1"]["p_scan_stable"]
    # the raw P recorded is the ensemble's own (the outcome calibration is fitted on it)
    assert on["c0"]["p_scan_model_raw"] == pytest.approx(p[0.0]["c0"]["p_scan_model_raw"])


def test_without_formulas_or_data_the_ensemble_stands_alone_and_the_ledger_says_why():
    alone = {i.job_id: i.numbers for i in decide(_policy(0.0), _state(["LiFeO2", "LiFe5O8"])).items}
    for state, why in (({**_state(["LiFeO2", "LiFe5O8"]), "formulas": None}, "formula"),
                       (_state(["LiFeO2", "LiFe5O8"], seed_rows=SEED[:1]), "1 computed structure")):
        plan = decide(_policy(1.0), state)
        assert why in plan.numbers["composition_gp_skipped"]
        got = {i.job_id: i.numbers for i in plan.items}
        assert got.keys() == alone.keys()
        for k in got:
            assert got[k]["p_scan_stable"] == pytest.approx(alone[k]["p_scan_stable"])
            assert "composition_gp_scan_mean_ev_per_atom" not in got[k]


# ---- the learned probit pool ----------------------------------------------------------------------------------------


def test_probit_pool_gives_exactly_the_pooled_probability_and_the_model_alone_at_zero():
    from scipy.special import ndtr

    from screener.policies.composition_model import probit_pool

    mm, sm, mg, sg = np.array([0.05, -0.02, np.inf]), np.array([0.1, 0.05, 0.1]), np.array([-0.1, 0.3, 0.0]), \
        np.array([0.4, 0.2, 0.4])
    for a in (0.0, 0.3, 1.0):
        mean, std = probit_pool(mm, sm, mg, sg, a, 0.0)
        want = ndtr((1 - a) * (0 - mm[:2]) / sm[:2] + a * (0 - mg[:2]) / sg[:2])
        np.testing.assert_allclose(ndtr((0 - mean[:2]) / std[:2]), want, rtol=1e-12)
        assert mean[2] == np.inf and std[2] == 0.1
    mean, std = probit_pool(mm[:2], sm[:2], mg[:2], sg[:2], 0.0, 0.0)
    np.testing.assert_allclose(mean, mm[:2]) and np.testing.assert_allclose(std, sm[:2])


def test_pool_weight_follows_the_expert_that_predicted_the_outcomes():
    from screener.policies.composition_model import fit_pool_weight

    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    sharp = np.where(y, 0.8, 0.1)  # knew which would come out stable
    flat = np.full(60, 0.3)  # knew only the rate
    assert fit_pool_weight(flat, sharp, y)[0] == 1.0
    assert fit_pool_weight(sharp, flat, y)[0] == 0.0
    weight, numbers = fit_pool_weight([], [], [])
    assert weight == 0.0 and numbers["composition_pool_n"] == 0  # no purchases: the ensemble alone


def test_the_pool_learns_its_weight_from_the_purchases_in_the_state():
    # purchases the GP called right and the ensemble wrong: the pool moves P towards the GP
    outcomes = [("pbe", 0.2, True)] * 10 + [("pbe", 0.6, False)] * 10
    gp_p = [0.9] * 10 + [0.05] * 10
    policy = load_policy("expected-value")
    pool = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"composition_gp_pool": True})})
    state = _state(["LiFeO2", "LiFe5O8"], purchase_outcomes=outcomes, purchase_gp_p=gp_p)
    plan = decide(pool, state)
    assert plan.numbers["composition_pool_weight"] == 1.0 and plan.numbers["composition_pool_n"] == 20
    # without recorded GP P the weight stays 0
    plain = decide(pool, _state(["LiFeO2", "LiFe5O8"], purchase_outcomes=outcomes))
    assert plain.numbers["composition_pool_weight"] == 0.0
    # nor with fewer purchases than the guard asks for (here 20: 19 judged)
    few = decide(pool, _state(["LiFeO2", "LiFe5O8"], purchase_outcomes=outcomes[1:], purchase_gp_p=gp_p[1:]))
    assert few.numbers["composition_pool_weight"] == 0.0 and few.numbers["composition_pool_n"] == 19
    # with chemical-system offsets in the outcome map the purchases are judged with their system's offset
    by_system = pool.model_copy(update={"expected_value": pool.expected_value.model_copy(
        update={"outcome_calibration_chemsys_sd": 0.5})})
    plan = decide(by_system, {**state, "purchase_chemsys": ["Fe-Li-O"] * 20})
    assert plan.numbers["composition_pool_weight"] == 1.0 and plan.numbers["composition_pool_n"] == 20
    assert plan.numbers["outcome_calibration_chemsys_offsets_n"] == 1


def test_the_two_ways_of_blending_the_gp_in_are_exclusive():
    from pydantic import ValidationError

    from screener.policies.config import ExpectedValueConfig

    with pytest.raises(ValidationError, match="set one"):
        ExpectedValueConfig(composition_gp_weight=0.5, composition_gp_pool=True)
    assert ExpectedValueConfig().uses_composition_gp  # the pool is on by default
    assert ExpectedValueConfig(composition_gp_pool=False, composition_gp_weight=0.5).uses_composition_gp
    assert not ExpectedValueConfig(composition_gp_pool=False).uses_composition_gp
    assert load_policy("expected-value").expected_value.composition_gp_pool


def test_planner_reads_the_gps_p_at_purchase_from_each_purchase_decision():
    import json

    from scipy.special import ndtr

    from screener.campaign import CampaignConfig
    from screener.campaign.components import PolicyPlanner

    policy = load_policy("expected-value")
    pool = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"composition_gp_pool": True})})
    planner = PolicyPlanner(pool, CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0))

    def decision(sid, fid, accepted=1, **numbers):
        return {"structure_id": sid, "fidelity": fid, "accepted": accepted, "numbers_json": json.dumps(numbers)}

    decisions = [
        decision("c0", "pbe", composition_gp_pbe_mean_ev_per_atom=0.0, composition_gp_pbe_std_ev_per_atom=0.1),
        decision("c1", "scan", accepted=0, composition_gp_scan_mean_ev_per_atom=0.5,
                 composition_gp_scan_std_ev_per_atom=0.1),  # planned, not bought: not the purchase's
        decision("c1", "scan", composition_gp_scan_mean_ev_per_atom=-0.1, composition_gp_scan_std_ev_per_atom=0.1),
        decision("c2", "pbe"),  # bought before the option was on
    ]
    purchases = [("pbe", 0.3, True, "c0"), ("scan", 0.2, False, "c1"), ("pbe", 0.4, False, "c2")]
    got = planner._gp_p_at_purchase(purchases, decisions)
    assert got[0] == pytest.approx(0.5) and got[1] == pytest.approx(float(ndtr(1.0))) and got[2] is None


def test_the_stack_gives_exactly_its_probability_with_the_ensembles_sigma():
    from scipy.special import ndtr

    from screener.policies.composition_model import stack_pool

    mm, sm, mg, sg = np.array([0.05, -0.02, np.inf]), np.array([0.1, 0.05, 0.1]), np.array([-0.1, 0.3, 0.0]), \
        np.array([0.4, 0.2, 0.4])
    coef, scale = (-0.3, 0.7, 1.5), 4.0
    mean, std = stack_pool(mm, sm, mg, sg, coef, 0.0, scale)
    want = ndtr(-0.3 + 0.7 * (0 - mm[:2]) / sm[:2] + 1.5 * 4.0 * (0 - mg[:2]) / sg[:2])
    np.testing.assert_allclose(ndtr((0 - mean[:2]) / std[:2]), want, rtol=1e-12)
    np.testing.assert_array_equal(std, sm)
    assert mean[2] == np.inf
    mean, _ = stack_pool(mm[:2], sm[:2], mg[:2], sg[:2], (0.0, 1.0, 0.0), 0.0, scale)  # the ensemble alone
    np.testing.assert_allclose(mean, mm[:2])


def test_the_stack_follows_the_expert_that_ranked_the_outcomes_whatever_its_probits_span():
    from scipy.special import ndtr

    from screener.policies.composition_model import fit_pool_stack, gp_probit_scale

    rng = np.random.default_rng(1)
    z_gp = rng.normal(-0.5, 0.15, 80)  # a compressed GP: its probits span a few tenths
    z_model = rng.normal(-1.0, 1.0, 80)
    scale = float(np.std(z_model) / np.std(z_gp))
    by_gp = (z_gp - z_gp.mean()) / z_gp.std() + rng.normal(0, 0.5, 80) > 1.0
    (b0, b1, b2), numbers = fit_pool_stack(ndtr(z_model), ndtr(z_gp), by_gp, scale=scale)
    assert b2 > 3 * b1 and numbers["composition_pool_loglik_gain"] > 5
    by_model = z_model + rng.normal(0, 0.5, 80) > 0.0
    (_, b1, b2), _ = fit_pool_stack(ndtr(z_model), ndtr(z_gp), by_model, scale=scale)
    assert b1 > 0.8 and b2 < 0.2 * b1
    coef, numbers = fit_pool_stack([], [], [])
    assert coef == (0.0, 1.0, 0.0) and numbers["composition_pool_n"] == 0
    mm, sm = np.array([0.0, 0.2, -0.1]), np.array([0.1, 0.1, 0.1])
    mg, sg = np.array([0.1, 0.12, 0.2]), np.array([0.5, 0.5, 0.5])
    c = gp_probit_scale(mm, sm, mg, sg, 0.0)
    assert c == pytest.approx(np.std(-mm / sm) / np.std(-mg / sg))
    assert gp_probit_scale(mm, sm, np.zeros(3), sg, 0.0) == 1.0  # a flat GP: no rescaling


def test_the_planner_stacks_when_asked_and_only_with_the_pool():
    from pydantic import ValidationError

    from screener.policies.config import ExpectedValueConfig

    with pytest.raises(ValidationError, match="needs composition_gp_pool"):
        ExpectedValueConfig(composition_gp_pool=False, composition_pool_stack=True)
    outcomes = [("pbe", 0.2, True)] * 10 + [("pbe", 0.6, False)] * 10
    gp_p = [0.9] * 10 + [0.05] * 10
    policy = load_policy("expected-value")
    stack = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"composition_pool_stack": True})})
    plan = decide(stack, _state(["LiFeO2", "LiFe5O8"], purchase_outcomes=outcomes, purchase_gp_p=gp_p))
    assert plan.numbers["composition_pool_b2"] > 0 and plan.numbers["composition_pool_n"] == 20
    assert "composition_pool_weight" not in plan.numbers


def test_the_latent_sigma_leaves_the_noise_out_and_the_planner_pools_with_it_when_asked():
    from screener.policies import PolicyState

    state = PolicyState(**_state(["LiFeO2", "LiFe5O8"]))
    predictive, numbers = composition_gp_predictions(_policy(1.0), state)
    latent, _ = composition_gp_predictions(_policy(1.0), state, latent=True)
    noise = numbers["composition_gp_noise_variance"]
    for fidelity in ("scan", "pbe"):
        np.testing.assert_allclose(latent[fidelity][0], predictive[fidelity][0])
        np.testing.assert_allclose(latent[fidelity][1] ** 2, np.maximum(predictive[fidelity][1] ** 2 - noise, 1e-12))
    outcomes = [("pbe", 0.2, True)] * 10 + [("pbe", 0.6, False)] * 10
    policy = load_policy("expected-value")
    on = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"composition_gp_latent_sigma": True})})
    plan = decide(on, _state(["LiFeO2", "LiFe5O8"], purchase_outcomes=outcomes, purchase_gp_p=[0.9] * 10 + [0.05] * 10))
    recorded = {i.job_id: i.numbers for i in plan.items if i.kind == "candidate"}
    some = next(iter(recorded.values()))
    assert some["composition_gp_scan_std_ev_per_atom"] == pytest.approx(
        float(latent["scan"][1][int(next(iter(recorded))[1:])]))
