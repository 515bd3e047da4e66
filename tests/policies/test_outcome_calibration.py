"""Outcome calibration: P(stable) recalibrated on purchases (P at purchase, came out stable)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from screener.policies import decide
from screener.policies.config import load_policy
from screener.policies.outcome_calibration import OutcomeCalibration, fit_outcome_calibration


def _overrated(n: int, factor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Purchases whose true stable rate is the stated P divided by ``factor``."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.9, n)
    return p, rng.random(n) < p / factor


def test_no_purchases_is_identity() -> None:
    cal = fit_outcome_calibration([], [])
    assert (cal.a, cal.b, cal.n_purchases) == (0.0, 1.0, 0)
    np.testing.assert_allclose(cal.calibrate_p([0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], rtol=1e-9)


def test_overrated_probabilities_are_brought_down_to_the_observed_rate() -> None:
    p, y = _overrated(400, 3.0)
    cal = fit_outcome_calibration(p, y)
    assert cal.a < -0.3
    assert cal.mean_p_calibrated == pytest.approx(y.mean(), abs=0.04)
    assert cal.mean_p_at_purchase > 2 * cal.mean_p_calibrated
    # well-calibrated purchases keep (about) the identity
    p2, y2 = _overrated(400, 1.0, seed=1)
    cal2 = fit_outcome_calibration(p2, y2)
    assert abs(cal2.a) < 0.2 and abs(np.log(cal2.b)) < 0.3


def test_prior_holds_with_few_purchases() -> None:
    few = fit_outcome_calibration([0.8, 0.7, 0.9], [False, False, False], prior_weight=10.0)
    many = fit_outcome_calibration([0.8, 0.7, 0.9] * 30, [False, False, False] * 30, prior_weight=10.0)
    assert 0 > few.a > many.a


def test_calibrated_gaussian_gives_the_calibrated_probability() -> None:
    cal = OutcomeCalibration(a=-0.7, b=0.6)
    mu, sd = np.array([-0.05, 0.0, 0.1]), np.array([0.05, 0.1, 0.2])
    m2, s2 = cal.calibrate_gaussian(mu, sd)
    for t in (0.0, 0.05):
        np.testing.assert_allclose(ndtr((t - m2) / s2), ndtr(cal.a + cal.b * (t - mu) / sd), rtol=1e-12)


def _state(outcomes: list[tuple[str, float, bool]]) -> dict:
    n = 40
    mean = np.linspace(-0.05, 0.3, n)
    return {"candidate_ids": [f"c{i}" for i in range(n)], "chemsys": [f"A-B{i}" for i in range(n)],
            "scan_mean_ev_per_atom": list(mean), "scan_std_ev_per_atom": [0.05] * n,
            "pbe_mean_ev_per_atom": list(mean), "pbe_std_ev_per_atom": [0.05] * n,
            "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n, "budget_cpu_hours": 200.0,
            "round_index": 3, "purchase_outcomes": outcomes}


def test_expected_value_policy_screens_more_with_pbe_when_its_purchases_came_out_unstable() -> None:
    base = load_policy("expected-value")
    policy = base.model_copy(update={"batch_size": 10, "expected_value": base.expected_value.model_copy(
        update={"learning_value": False})})
    trusted = decide(policy, _state([]))
    flops = [("scan", 0.7, False)] * 25 + [("pbe", 0.6, False)] * 25 + [("scan", 0.7, True)] * 5
    humbled = decide(policy, _state(flops))
    n_pbe = [sum(i.fidelity == "pbe" for i in plan.items) for plan in (trusted, humbled)]
    assert n_pbe[1] > n_pbe[0]
    assert humbled.numbers["outcome_calibration_a"] < 0
    assert humbled.numbers["outcome_calibration_n_purchases"] == 55
    item = humbled.items[0]
    assert item.numbers["p_scan_stable"] < item.numbers["p_scan_model_raw"] or item.numbers["p_scan_source"] != "model"


def test_a_cost_term_learns_that_cheap_purchases_were_overrated_and_is_inert_at_equal_costs() -> None:
    rng = np.random.default_rng(3)
    n = 600
    p = rng.uniform(0.2, 0.8, n)
    log_cost = rng.uniform(-2.0, 1.0, n)
    # cheap ones (log cost < 0) came out stable far less often than their P
    stable = rng.random(n) < np.where(log_cost < -1.0, p / 6, p)
    cal = fit_outcome_calibration(p, stable, log_cost=log_cost)
    assert cal.c_log_cost > 0.2
    cheap, dear = cal.calibrate_p([0.5], [-1.8])[0], cal.calibrate_p([0.5], [0.8])[0]
    assert cheap < dear
    flat = fit_outcome_calibration(p, stable, log_cost=np.zeros(n))
    same = fit_outcome_calibration(p, stable)
    assert flat.c_log_cost == 0.0 and (flat.a, flat.b) == (same.a, same.b)
