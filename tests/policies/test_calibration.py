"""Spread calibration (screener/policies/calibration.py): a conformal scale puts ~68 % of errors within 1 sigma."""

from __future__ import annotations

import numpy as np
import pytest

from screener.policies.calibration import coverage, fit_spread_calibration


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
