"""Calibration of the ensemble spread: one scale per fidelity so that ~68 % of errors fall within 1 sigma.

An ensemble's spread measures only how much its members disagree; on held-out data the shipped model's errors fall
within 1 std for 45 % of structures (a calibrated Gaussian: 68 %). P(stable) built on that spread is overconfident.
The fix is a split-conformal scale: the 68.27 % quantile of ``|error| / std`` over errors the model did not train on
(its held-out split, or a campaign's prospective errors: predictions made before the result was bought). Multiplying
every std by that scale puts 68 % of those errors within 1 sigma by construction; the 2-sigma share says how far the
tails are from Gaussian.

With few errors the quantile is noisy and, taken as the interpolated 68.27 % quantile, too small (half the time below
the true one, and a campaign ranks with it on the NEXT round's errors). So the data scale is the split-conformal
order statistic: the ``ceil((n + 1) 0.6827)``-th smallest ``|error| / std`` of ``n``, which covers a new error with
probability >= 68.27 % for exchangeable errors; and a campaign's scale is shrunk toward the prior (for PBE the model
card's scale, or 1; for SCAN the campaign's PBE scale: the SCAN model is the PBE model's transfer, and early SCAN
errors are few) on the log scale with ``n / (n + prior_weight)``.

The ensemble std says which predictions are less certain, but not in proportion: on held-out and prospective errors
the smallest stds understate the error most (the error of the quarter of predictions with the smallest std is ~6x
that std, of the largest ~1.4x), so one scale makes P(stable) of a confident prediction near the hull too extreme
and of a wild one far above it too generous, and ranking by P buys the wild ones. So the spread is calibrated as a
power of the std, ``sigma = scale * s_ref * (std / s_ref)^exponent`` with ``s_ref`` = 0.1 eV/atom (the scale is
the multiplier at that std; exponent 1 is one plain scale): the exponent is fitted by maximum a posteriori
(Gaussian errors, a Gaussian prior on the exponent, sd 0.25), then the scale is the conformal quantile of
``|error| / (s_ref (std / s_ref)^exponent)``, so the 68 % coverage holds as before.

A signed mean error (bias) is reported too, shrunk the same way: the campaign applies it only where the predictions
of a fidelity come from another fidelity's model (SCAN predictions from the PBE model before any SCAN fine-tune: the
learned fidelity shift). That shift is itself estimated from few errors: its standard error joins the spread in
quadrature (:meth:`SpreadCalibration.calibrated_std` with ``shifted=True``), since a prediction moved by an uncertain
shift is that much less certain.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ONE_SIGMA_SHARE", "REFERENCE_STD_EV_PER_ATOM", "DEFAULT_EXPONENT_PRIOR", "HELD_OUT_MIN_ERRORS",
           "SpreadCalibration", "conformal_quantile", "coverage", "fit_held_out_calibration", "fit_spread_calibration",
           "fit_spread_exponent"]

#: Share of a Gaussian within 1 standard deviation.
ONE_SIGMA_SHARE = 0.6827
#: The std at which ``scale`` is the multiplier of a power-law calibration (eV/atom): a typical ensemble std.
REFERENCE_STD_EV_PER_ATOM = 0.1
#: Prior sd of the exponent: a few dozen errors move it by ~0.1-0.3, a handful hardly.
EXPONENT_PRIOR_SD = 0.25
#: Prior of the exponent where nothing better is known: maximum likelihood on four initial models' errors of whole
#: pools gave 0.29-0.35 (bench/results/spread_exponent_*.json).
DEFAULT_EXPONENT_PRIOR = 0.35
#: Fewest held-out errors a trained ensemble's own calibration is fitted on (below, none is written).
HELD_OUT_MIN_ERRORS = 20
_STD_FLOOR = 1e-3


class SpreadCalibration(BaseModel):
    """A fitted spread scale (and bias) of one fidelity, with the coverage before and after it."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.0, gt=0, description="Multiply the ensemble std by this (at the reference std, for "
                                                "an exponent other than 1).")
    exponent: float = Field(1.0, ge=0, le=1, description="sigma = scale * s_ref * (std / s_ref)^exponent; 1: one "
                                                         "plain scale.")
    exponent_prior: float | None = Field(None, description="Prior of the exponent (None: fixed at 1, not fitted).")
    bias_ev_per_atom: float = Field(0.0, description="Mean signed error (prediction - result), shrunk to 0.")
    bias_se_ev_per_atom: float = Field(
        0.0, ge=0, description="Standard error of that bias (0 unless fitted with debias): added to the spread of "
                               "predictions shifted by it.")
    n_errors: int = Field(0, ge=0, description="Errors the fit used.")
    prior_scale: float = Field(1.0, gt=0)
    data_scale: float | None = Field(None, description="Conformal scale of the data alone (no shrinkage).")
    within_1_sigma_raw: float | None = Field(None, description="Share of |error| <= raw std.")
    within_2_sigma_raw: float | None = None
    within_1_sigma: float | None = Field(None, description="Share of |error| <= scale * std.")
    within_2_sigma: float | None = None
    source: str = ""

    def numbers(self, prefix: str = "") -> dict[str, Any]:
        """Flat numbers for the ledger."""
        return {f"{prefix}{k}": v for k, v in self.model_dump(mode="json").items()}

    def calibrated_std(self, stds: Any, *, shifted: bool = False) -> np.ndarray:
        """The spread to rank with: ``scale * s_ref * (std / s_ref)^exponent`` (``scale * std`` for exponent 1), and
        for predictions shifted by the bias (``shifted``) that in quadrature with ``bias_se`` (eV/atom)."""
        s = self.scale * power_std(stds, self.exponent)
        return np.sqrt(s * s + self.bias_se_ev_per_atom ** 2) if shifted else s


def power_std(stds: Any, exponent: float) -> np.ndarray:
    """``s_ref * (std / s_ref)^exponent`` (the std itself for exponent 1; std floored at 1 meV/atom)."""
    s = np.asarray(stds, dtype=float)
    if exponent == 1.0:
        return s
    return REFERENCE_STD_EV_PER_ATOM * (np.maximum(s, _STD_FLOOR) / REFERENCE_STD_EV_PER_ATOM) ** exponent


def fit_spread_exponent(errors: Any, stds: Any, prior: float, prior_sd: float = EXPONENT_PRIOR_SD) -> float:
    """Maximum a posteriori exponent of ``sigma = c (std / s_ref)^exponent`` for Gaussian errors (``c`` profiled
    out), with a Gaussian prior ``N(prior, prior_sd)``; bounded to [0, 1] (0: the std says nothing, 1: one scale)."""
    from scipy.optimize import minimize_scalar

    e, s = _arrays(errors, stds)
    if e.size < 2:
        return float(np.clip(prior, 0.0, 1.0))
    log_s = np.log(s / REFERENCE_STD_EV_PER_ATOM)
    e2 = np.maximum(e * e, 1e-12)

    def neg_log_post(g: float) -> float:
        c2 = float(np.mean(e2 * np.exp(-2.0 * g * log_s)))  # ML c^2 given g
        nll = 0.5 * e.size * math.log(c2) + g * float(np.sum(log_s))
        return nll + 0.5 * ((g - prior) / prior_sd) ** 2

    res = minimize_scalar(neg_log_post, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def coverage(errors: Any, stds: Any, scale: float = 1.0) -> tuple[float | None, float | None]:
    """Shares of ``|error| <= k * scale * std`` for k = 1, 2 (None without errors)."""
    e, s = _arrays(errors, stds)
    if e.size == 0:
        return None, None
    z = np.abs(e) / (scale * s)
    return float(np.mean(z <= 1.0)), float(np.mean(z <= 2.0))


def fit_spread_calibration(errors: Any, stds: Any, *, prior_scale: float = 1.0, prior_weight: float = 5.0,
                           source: str = "", debias: bool = False,
                           exponent_prior: float | None = None) -> SpreadCalibration:
    """Fit the spread scale on held-out or prospective errors.

    Parameters
    ----------
    errors : array-like
        Prediction minus result (eV/atom), on data the model did not train on.
    stds : array-like
        The raw ensemble std of each prediction (floored at 1 meV/atom).
    prior_scale : float
        Scale without data (the model card's, or 1).
    prior_weight : float
        Pseudo-count of the prior: with ``n`` errors, ``log scale = w log data_scale + (1 - w) log prior_scale``,
        ``w = n / (n + prior_weight)``; 0 uses the data alone.
    debias : bool
        The caller subtracts the fitted bias (``bias_ev_per_atom``) from its predictions (SCAN predictions borrowed
        from the PBE model): fit the scale and the coverage on the errors minus that bias, so the systematic shift is
        not counted twice (once as a shift, once as spread).
    exponent_prior : float, optional
        Fit the power-law exponent (:func:`fit_spread_exponent`) with this prior; None: one plain scale (exponent 1).

    Returns
    -------
    SpreadCalibration
    """
    e, s = _arrays(errors, stds)
    n = int(e.size)
    prior_exponent = 1.0 if exponent_prior is None else float(np.clip(exponent_prior, 0.0, 1.0))
    if n == 0:
        return SpreadCalibration(scale=prior_scale, exponent=prior_exponent, exponent_prior=exponent_prior,
                                 prior_scale=prior_scale, source=source or "prior (no errors)")
    w = n / (n + prior_weight) if prior_weight > 0 else 1.0
    bias = float(w * e.mean())
    residual = e - bias if debias else e
    exponent = prior_exponent if exponent_prior is None else fit_spread_exponent(residual, s, prior_exponent)
    z = np.abs(residual) / power_std(s, exponent)
    data_scale = max(conformal_quantile(z, ONE_SIGMA_SHARE), 1e-3)
    scale = math.exp(w * math.log(data_scale) + (1.0 - w) * math.log(prior_scale))
    # the shift's own uncertainty: standard error of the mean error, from the residuals about it
    bias_se = math.sqrt(float(np.mean(residual ** 2)) / n) if debias else 0.0
    raw1, raw2 = coverage(residual, s)
    cal_std = SpreadCalibration(scale=scale, exponent=exponent,
                                bias_se_ev_per_atom=bias_se).calibrated_std(s, shifted=debias)
    cal1, cal2 = coverage(residual, cal_std)
    return SpreadCalibration(scale=scale, exponent=exponent, exponent_prior=exponent_prior, bias_ev_per_atom=bias,
                             bias_se_ev_per_atom=bias_se, n_errors=n, prior_scale=prior_scale, data_scale=data_scale,
                             within_1_sigma_raw=raw1, within_2_sigma_raw=raw2, within_1_sigma=cal1,
                             within_2_sigma=cal2, source=source)


def fit_held_out_calibration(errors: Any, stds: Any, *, exponent_prior: float | None = DEFAULT_EXPONENT_PRIOR,
                             source: str = "", seed: int = 0) -> SpreadCalibration:
    """The power-law spread calibration of a trained ensemble, fitted on its held-out split (data alone).

    The conformal scale puts 68.27 % of the errors it was fitted on within 1 sigma by construction, so the coverage
    recorded here is **cross-fitted**: the split is halved at random (``seed``), each half's fit is counted on the
    other half, and ``within_1_sigma`` / ``within_2_sigma`` are the shares over both, out of sample.

    Parameters
    ----------
    errors, stds : array-like
        Prediction minus label, and the ensemble std, on structures no member trained on.
    exponent_prior : float, optional
        Prior of the power-law exponent (a few hundred errors overrule it); None: one plain scale.

    Returns
    -------
    SpreadCalibration
        Fitted on all errors; coverage (raw and calibrated) out of sample.
    """
    e, s = _arrays(errors, stds)
    fit = fit_spread_calibration(e, s, prior_weight=0.0, exponent_prior=exponent_prior, source=source)
    if e.size < 4:
        return fit
    order = np.random.default_rng(seed).permutation(e.size)
    halves = (order[: e.size // 2], order[e.size // 2:])
    within = np.zeros(2)
    for fit_on, count_on in (halves, halves[::-1]):
        half = fit_spread_calibration(e[fit_on], s[fit_on], prior_weight=0.0, exponent_prior=exponent_prior)
        z = np.abs(e[count_on]) / half.calibrated_std(s[count_on])
        within += (np.sum(z <= 1.0), np.sum(z <= 2.0))
    return fit.model_copy(update={
        "within_1_sigma": float(within[0] / e.size), "within_2_sigma": float(within[1] / e.size),
        "source": f"{source}; coverage cross-fitted (each random half's fit counted on the other half)".lstrip("; ")})


def conformal_quantile(scores: Any, level: float) -> float:
    """Split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores (the largest when that
    exceeds ``n``), so that a new exchangeable score falls at or below it with probability >= ``level``."""
    z = np.sort(np.asarray(scores, dtype=float).ravel())
    if z.size == 0:
        raise ValueError("no scores")
    k = min(math.ceil((z.size + 1) * level), z.size)
    return float(z[k - 1])


def _arrays(errors: Any, stds: Any) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(errors, dtype=float).ravel()
    s = np.maximum(np.asarray(stds, dtype=float).ravel(), _STD_FLOOR)
    keep = np.isfinite(e) & np.isfinite(s)
    return e[keep], s[keep]
