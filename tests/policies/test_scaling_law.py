"""Tests of screener/policies/scaling_law.py: fits recover known synthetic learning curves."""

from __future__ import annotations

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.policies.scaling_law import DEFAULT_PRIOR, ScalingLawFit, ScalingLawPrior, fit_scaling_law

TRUE_C, TRUE_A, TRUE_B = 1.0, -0.35, -0.2


def _grid(noise: float, seed: int, floor: float = 0.0):
    rng = np.random.default_rng(seed)
    ns, npb = np.meshgrid([250, 500, 1000, 2000, 4000, 8000], [1e4, 4e4, 1.6e5])
    ns, npb = ns.ravel(), npb.ravel()
    power = np.exp(TRUE_C + TRUE_A * np.log(ns) + TRUE_B * np.log(npb))
    mae = (floor + power) * np.exp(rng.normal(0.0, noise, ns.size))
    return ns, npb, mae


def test_exact_power_law_is_recovered_exactly():
    ns, npb, mae = _grid(0.0, 0)
    fit = fit_scaling_law(ns, npb, mae)
    assert fit.source == "fit"
    assert fit.a == pytest.approx(TRUE_A, abs=1e-9)
    assert fit.b == pytest.approx(TRUE_B, abs=1e-9)
    assert fit.c == pytest.approx(TRUE_C, abs=1e-8)
    assert fit.predict_mae(1000, 1e4) == pytest.approx(np.exp(TRUE_C) * 1000**TRUE_A * 1e4**TRUE_B)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noisy_fit_recovers_coefficients_within_standard_errors(seed):
    ns, npb, mae = _grid(0.03, seed)
    fit = fit_scaling_law(ns, npb, mae)
    assert abs(fit.a - TRUE_A) < 4 * fit.a_std
    assert abs(fit.b - TRUE_B) < 4 * fit.b_std
    assert abs(fit.c - TRUE_C) < 4 * fit.c_std
    assert 0.01 < fit.residual_std_log < 0.06  # the noise level we put in
    assert fit.a_std < 0.02 and fit.is_significant("both")


def test_single_pbe_size_fits_scan_slope_and_takes_b_from_prior():
    ns, npb, mae = _grid(0.02, 5)
    keep = npb == 1e4
    fit = fit_scaling_law(ns[keep], npb[keep], mae[keep])
    assert abs(fit.a - TRUE_A) < 4 * fit.a_std
    assert fit.b == pytest.approx(DEFAULT_PRIOR.b)
    assert fit.b_std == pytest.approx(DEFAULT_PRIOR.b_std)
    assert fit.a_data is not None and fit.b_data is None
    assert fit.is_significant("a") and not fit.is_significant("b")
    assert fit.prior is not None  # the default prior was used for b
    assert fit.prior_weight_b == pytest.approx(1.0) and fit.prior_weight_a == 0.0
    # the intercept absorbs b log N_p, so predictions at the measured N_p are unbiased
    assert fit.predict_mae(1000, 1e4) == pytest.approx(np.exp(TRUE_C) * 1000**TRUE_A * 1e4**TRUE_B, rel=0.05)


def test_floor_fit_recovers_floor_and_slopes():
    ns, npb, mae = _grid(0.01, 7, floor=0.01)
    fit = fit_scaling_law(ns, npb, mae, floor=True)
    assert fit.with_floor
    assert abs(fit.floor_mae - 0.01) < 4 * fit.floor_std
    assert abs(fit.a - TRUE_A) < 4 * fit.a_std
    assert abs(fit.b - TRUE_B) < 4 * fit.b_std
    # ignoring the floor flattens the fitted slope
    plain = fit_scaling_law(ns, npb, mae)
    assert plain.a > fit.a + 0.05


def test_floor_fit_needs_enough_points():
    with pytest.raises(InvalidInputError, match="at least"):
        fit_scaling_law([100, 200, 400], [1e4, 1e4, 1e4], [0.1, 0.08, 0.07], floor=True)


def test_prior_dominates_few_points_and_data_take_over_when_significant():
    prior = ScalingLawPrior(a=-0.6, a_std=0.1, b=-0.05, b_std=0.1, source="deliberately wrong")
    ns, npb, mae = _grid(0.01, 11)
    few = fit_scaling_law(ns[:2], npb[:2], mae[:2], prior=prior)
    assert few.source == "fit+prior"
    many = fit_scaling_law(ns, npb, mae, prior=prior)
    assert many.prior_weight_a < 0.01 and many.prior_weight_b < 0.01
    assert abs(many.a - TRUE_A) < 0.02 and abs(many.b - TRUE_B) < 0.02
    assert few.prior_weight_a > many.prior_weight_a
    assert abs(few.a - prior.a) < abs(many.a - prior.a)


def test_predict_interval_brackets_prediction_and_widens_when_extrapolating():
    ns, npb, mae = _grid(0.03, 3)
    fit = fit_scaling_law(ns, npb, mae)
    mid = fit.predict_mae(1000, 4e4)
    lo, hi = fit.predict_interval(1000, 4e4, level=0.9)
    assert lo < mid < hi
    lo_far, hi_far = fit.predict_interval(1e6, 4e4, level=0.9)
    assert hi_far / lo_far > hi / lo
    lo99, hi99 = fit.predict_interval(1000, 4e4, level=0.99)
    assert lo99 < lo and hi99 > hi
    arr_lo, arr_hi = fit.predict_interval([500, 1000], [4e4, 4e4])
    assert arr_lo.shape == (2,) and np.all(arr_lo < arr_hi)
    with pytest.raises(InvalidInputError):
        fit.predict_interval(1000, 4e4, level=1.5)


def test_flat_or_two_size_curves_are_not_significant():
    rng = np.random.default_rng(0)
    ns = np.repeat([100, 200, 400, 800], 3)
    flat = fit_scaling_law(ns, np.full(ns.size, 1e4), 0.05 * np.exp(rng.normal(0, 0.2, ns.size)))
    assert not flat.is_significant("a")
    two = fit_scaling_law([100, 200, 100, 200], [1e4] * 4, [0.1, 0.08, 0.1, 0.08])
    assert not two.is_significant("a")


def test_prior_only_fit_and_json_round_trip():
    fit = ScalingLawFit.from_prior()
    assert fit.source == "prior" and fit.a == DEFAULT_PRIOR.a and fit.b == DEFAULT_PRIOR.b
    # the default intercept reproduces the paper's anchors (22 meV/atom at 140k SCAN, ~43-47 at 11k)
    assert fit.predict_mae(140_000, 1.8e6) == pytest.approx(0.022, abs=0.002)
    assert 0.040 < fit.predict_mae(11_000, 1.8e6) < 0.050
    ns, npb, mae = _grid(0.02, 1, floor=0.005)
    for f in (fit, fit_scaling_law(ns, npb, mae, floor=True, prior=DEFAULT_PRIOR)):
        again = ScalingLawFit.model_validate_json(f.model_dump_json())
        assert again == f
        assert again.predict_mae(500, 2e4) == f.predict_mae(500, 2e4)


@pytest.mark.parametrize(
    "args",
    [
        ([], [], []),
        ([100, 200], [1e4], [0.1, 0.2]),
        ([100, 200], [1e4, 1e4], [0.1, -0.2]),
        ([100, 200], [1e4, 1e4], [0.1, float("nan")]),
        ([-1, 200], [1e4, 1e4], [0.1, 0.2]),
    ],
)
def test_bad_input_raises_invalid_input(args):
    with pytest.raises(InvalidInputError):
        fit_scaling_law(*args)


def test_weights_downweight_an_outlier():
    ns, npb, mae = _grid(0.0, 0)
    mae = mae.copy()
    mae[0] *= 3.0
    w = np.ones(ns.size)
    w[0] = 1e-6
    assert abs(fit_scaling_law(ns, npb, mae, weights=w).a - TRUE_A) < 1e-3
    assert abs(fit_scaling_law(ns, npb, mae).a - TRUE_A) > 1e-2


def test_standard_errors_and_bands_are_calibrated():
    """Over many noisy replicas, the 90 % intervals of a and of the mean curve cover the truth ~90 % of the time."""
    ns = np.array([200, 400, 800, 1600, 200, 400, 800, 1600])
    npb = np.array([1e4] * 4 + [4e4] * 4)
    truth = np.exp(TRUE_C + TRUE_A * np.log(ns) + TRUE_B * np.log(npb))
    true_at = np.exp(TRUE_C + TRUE_A * np.log(1000) + TRUE_B * np.log(2e4))
    rng = np.random.default_rng(123)
    hits_a = hits_band = 0
    n_rep = 300
    t90 = 2.015  # Student t, 5 degrees of freedom, two-sided 90 %
    for _ in range(n_rep):
        fit = fit_scaling_law(ns, npb, truth * np.exp(rng.normal(0, 0.05, ns.size)))
        hits_a += abs(fit.a - TRUE_A) <= t90 * fit.a_std
        lo, hi = fit.predict_interval(1000, 2e4, level=0.9)
        hits_band += lo <= true_at <= hi
    assert 0.84 <= hits_a / n_rep <= 0.96
    assert 0.84 <= hits_band / n_rep <= 0.96
