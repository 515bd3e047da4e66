"""Spread calibration (screener/policies/calibration.py): a conformal scale puts ~68 % of errors within 1 sigma."""

from __future__ import annotations

import numpy as np
import pytest

from screener.policies.calibration import ONE_SIGMA_SHARE, SpreadCalibration, coverage, fit_spread_calibration


def test_overconfident_spread_is_widened_to_68_percent():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.05, 0.2, 2000)
    err = rng.normal(0.0, 2.0 * std)  # the ensemble spread is half the real error
    fit = fit_spread_calibration(err, std, prior_weight=0.0)
    assert fit.within_1_sigma_raw < 0.45
    assert fit.scale == pytest.approx(2.0, rel=0.08)
    assert 0.66 <= fit.within_1_sigma <= 0.70
    assert 0.93 <= fit.within_2_sigma <= 0.97


def test_few_errors_shrink_toward_the_prior_scale():
    err, std = [0.3, -0.2, 0.25], [0.05, 0.05, 0.05]
    alone = fit_spread_calibration(err, std, prior_weight=0.0)
    shrunk = fit_spread_calibration(err, std, prior_scale=1.5, prior_weight=5.0)
    assert alone.scale > 4
    assert 1.5 < shrunk.scale < alone.scale
    assert fit_spread_calibration([], [], prior_scale=1.7).scale == 1.7


def test_coverage_counts_shares_within_one_and_two_sigma():
    assert coverage([0.05, 0.15, 0.5], [0.1, 0.1, 0.1]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert coverage([], []) == (None, None)


def test_a_shift_the_caller_removes_is_not_counted_again_as_spread():
    """SCAN predictions borrowed from the PBE model are shifted by the fitted bias: their scale must come from the
    errors about that bias, not from the shift itself."""
    rng = np.random.default_rng(1)
    std = np.full(5000, 0.03)
    err = 0.1 + rng.normal(0.0, 0.03, 5000)  # a systematic 0.1 eV/atom PBE -> SCAN shift, spread as predicted
    shifted = fit_spread_calibration(err, std, prior_weight=0.0)
    debiased = fit_spread_calibration(err, std, prior_weight=0.0, debias=True)
    assert shifted.scale > 3  # the shift read as spread
    assert debiased.scale == pytest.approx(1.0, rel=0.1)
    assert debiased.bias_ev_per_atom == pytest.approx(0.1, abs=0.005)
    assert 0.64 <= debiased.within_1_sigma <= 0.72


def test_few_errors_give_a_scale_that_covers_the_next_error_68_percent_of_the_time():
    """Split-conformal: fitted on n errors, the scale covers a NEW error with probability >= 68.27 % (the plain
    interpolated quantile covered 64 % at n = 6: a campaign ranks each round with a scale fitted on earlier ones)."""
    rng = np.random.default_rng(2)
    n, trials = 6, 4000
    err = rng.normal(0.0, 1.0, (trials, n + 1))
    hits = [abs(row[-1]) <= fit_spread_calibration(row[:-1], np.ones(n), prior_weight=0.0).scale for row in err]
    assert np.mean(hits) >= 0.67
    # the order statistic: the ceil((n + 1) * 0.6827)-th smallest of |error| / std
    assert fit_spread_calibration([1, -2, 3, -4, 5], [1] * 5, prior_weight=0.0).data_scale == 5.0


def test_an_uncertain_shift_widens_the_spread_of_shifted_predictions():
    """With few errors the fitted PBE -> SCAN shift is itself uncertain: its standard error joins the spread of the
    predictions it moves (and only of those)."""
    err, std = [0.35, 0.15, 0.3, 0.2], [0.05] * 4
    fit = fit_spread_calibration(err, std, prior_weight=0.0, debias=True)
    residual = np.asarray(err) - fit.bias_ev_per_atom
    assert fit.bias_se_ev_per_atom == pytest.approx(np.sqrt(np.mean(residual ** 2) / 4))
    plain = fit.calibrated_std([0.05])
    shifted = fit.calibrated_std([0.05], shifted=True)
    assert plain == pytest.approx([fit.scale * 0.05])
    assert shifted == pytest.approx(np.sqrt(plain ** 2 + fit.bias_se_ev_per_atom ** 2))
    assert fit_spread_calibration(err, std, prior_weight=0.0).bias_se_ev_per_atom == 0.0  # not shifted: no term


def _heteroscedastic(n: int, exponent: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Errors whose true sigma is 0.3 (std / 0.1)^exponent: with exponent < 1 the smallest stds understate most."""
    rng = np.random.default_rng(seed)
    std = np.exp(rng.uniform(np.log(0.005), np.log(1.5), n))
    return rng.normal(0.0, 0.3 * (std / 0.1) ** exponent), std


def test_power_law_exponent_is_recovered_and_its_coverage_holds_across_the_std_range():
    err, std = _heteroscedastic(4000, 0.35)
    fit = fit_spread_calibration(err, std, prior_weight=0.0, exponent_prior=0.5)
    assert fit.exponent == pytest.approx(0.35, abs=0.05)
    assert fit.within_1_sigma == pytest.approx(ONE_SIGMA_SHARE, abs=0.02)
    plain = fit_spread_calibration(err, std, prior_weight=0.0)
    assert plain.exponent == 1.0 and plain.exponent_prior is None
    # one plain scale covers 68 % overall but not within the std's range: the smallest stds are under-covered and
    # the largest over-covered; the power law covers each third of the range about as well as the whole
    order = np.argsort(std)
    thirds = np.array_split(order, 3)
    for cal, spread in ((fit, 0.06), (plain, 0.2)):
        shares = [np.mean(np.abs(err[k]) <= cal.calibrated_std(std[k])) for k in thirds]
        assert (max(shares) - min(shares) < spread) == (cal is fit)
    assert np.mean(np.abs(err[thirds[0]]) <= plain.calibrated_std(std[thirds[0]])) < 0.55


def test_exponent_keeps_its_prior_with_few_errors_and_plain_scale_is_the_old_calibration():
    from screener.policies.calibration import fit_spread_exponent

    err, std = _heteroscedastic(4, 0.2, seed=1)
    few = fit_spread_calibration(err, std, exponent_prior=0.8)
    alone = fit_spread_exponent(err, std, 0.8, prior_sd=100.0)  # the data alone
    assert alone < few.exponent < 0.8  # shrunk toward the prior
    many_err, many_std = _heteroscedastic(400, 0.2, seed=1)
    many = fit_spread_calibration(many_err, many_std, exponent_prior=0.8)
    assert abs(many.exponent - 0.2) < abs(few.exponent - 0.2)  # more errors, closer to the truth
    assert fit_spread_calibration([], [], exponent_prior=0.7).exponent == 0.7
    old = SpreadCalibration(scale=2.0)
    np.testing.assert_allclose(old.calibrated_std([0.01, 0.1, 1.0]), [0.02, 0.2, 2.0])
    power = SpreadCalibration(scale=2.0, exponent=0.5)
    np.testing.assert_allclose(power.calibrated_std([0.01, 0.1, 1.0]), [2 * 0.1 * 0.1 ** 0.5, 0.2, 2 * 0.1 * 10 ** 0.5])


def test_power_law_ranks_a_confident_near_hull_prediction_above_a_wild_one_far_above():
    """A: E_hull 0.05 +- 0.02 (raw), B: 0.6 +- 0.8. One scale of 2 gives B the larger P(stable) (its sigma swamps
    its distance from the hull); with exponent 0.4, A's is larger."""
    from scipy.special import ndtr

    mu, raw = np.array([0.05, 0.6]), np.array([0.02, 0.8])
    p_plain = ndtr(-mu / SpreadCalibration(scale=2.0).calibrated_std(raw))
    p_power = ndtr(-mu / SpreadCalibration(scale=2.0, exponent=0.4).calibrated_std(raw))
    assert p_plain[1] > p_plain[0] and p_power[0] > p_power[1]


def test_held_out_calibration_recovers_the_power_law_and_counts_coverage_out_of_sample():
    from screener.policies.calibration import fit_held_out_calibration

    rng = np.random.default_rng(3)
    std = np.exp(rng.uniform(np.log(0.01), np.log(1.0), 4000))
    err = rng.normal(0.0, 2.0 * 0.1 * (std / 0.1) ** 0.5)  # true sigma: scale 2, exponent 0.5
    fit = fit_held_out_calibration(err, std)
    assert fit.exponent == pytest.approx(0.5, abs=0.05) and fit.scale == pytest.approx(2.0, rel=0.08)
    assert 0.65 <= fit.within_1_sigma <= 0.72 and 0.93 <= fit.within_2_sigma <= 0.97
    assert fit.n_errors == 4000 and "cross-fitted" in fit.source
    # out of sample: on few errors the halves' fits are noisy, so the cross-fitted share is not the in-sample one
    few = fit_held_out_calibration(err[:24], std[:24])
    in_sample = fit_spread_calibration(err[:24], std[:24], prior_weight=0.0, exponent_prior=0.35)
    assert in_sample.within_1_sigma == pytest.approx(18 / 24)  # conformal: the ceil(25 x 0.6827) = 18th of 24
    assert few.within_1_sigma != pytest.approx(in_sample.within_1_sigma)
