"""The composition model beside the ensemble (screener/policies/composition_model.py): the precision blend and the
expected-value option that uses it."""

from __future__ import annotations

import numpy as np
import pytest

from screener.errors import InvalidInputError
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
        update={"composition_gp_weight": weight})})


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


def test_the_blend_without_formulas_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="formulas"):
        decide(_policy(1.0), {**_state(["LiFeO2"]), "formulas": None})
