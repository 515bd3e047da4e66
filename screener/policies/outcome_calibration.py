"""Calibration of P(stable) against the campaign's own purchases: what was predicted when a calculation was bought,
and whether the result came out stable.

The spread calibration (:mod:`screener.policies.calibration`) makes ~68 % of *all* prospective errors fall within
1 sigma. That is not enough for the probabilities a policy acts on: it buys the candidates whose P(stable) is
highest, and those are the ones the model overrates most (the winner's curse of picking the top of ~1e3 noisy
predictions), judged against a campaign hull that still lacks the pool's own stable structures. On the issue-12
worlds P(SCAN-stable) at purchase ran 2-4x above the share of purchases that came out stable. Overrated
probabilities favour SCAN-now over a PBE screen (a screen pays off when most candidates fail it) and the wrong
candidates under a size-dependent cost.

The fix is a probit recalibration fitted on the purchases themselves: ``P_cal = Phi(a + b Phi^-1(P))``, the maximum
a posteriori ``(a, b)`` on the pairs (P at purchase, stable at that fidelity on the current hull) with a prior
``a = 0, b = 1`` (identity) worth ``prior_weight`` purchases, refitted every round. For a Gaussian prediction
``N(mu, sd)`` and threshold ``t`` it is again a Gaussian: ``Phi(a + b (t - mu) / sd) = Phi((t - mu') / sd')`` with
``sd' = sd / b`` and ``mu' = mu - a sd / b``, so every closed form of the expected-value policy (the PBE route's
bivariate normal) keeps working on the recalibrated prediction.

Only purchases made on the model's own prediction count: a SCAN calculation of a candidate that already had a PBE
result was bought on that result (and is far likelier to come out stable than its model P says).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import log_ndtr, ndtr, ndtri

__all__ = ["OutcomeCalibration", "fit_outcome_calibration", "log_cost_ratio"]

_P_CLIP = 1e-6
_B_BOUNDS = (0.2, 3.0)
_A_BOUNDS = (-4.0, 4.0)


class OutcomeCalibration(BaseModel):
    """``P_cal = Phi(a + b Phi^-1(P))``, fitted on purchases (P at purchase, came out stable)."""

    model_config = ConfigDict(extra="forbid")

    a: float = Field(0.0, description="Probit offset (negative: the model's P ran high).")
    b: float = Field(1.0, gt=0, description="Probit slope (below 1: the model's P ran too confident).")
    c_log_cost: float = Field(
        0.0, description="Probit term per unit of log(cost / median cost): positive when cheap purchases came out "
                         "stable less often than their P said (0 where every candidate costs the same).")
    n_purchases: int = Field(0, ge=0, description="Purchases the fit used.")
    n_stable: int = Field(0, ge=0, description="Of those, how many came out stable.")
    mean_p_at_purchase: float | None = Field(None, description="Mean raw P(stable) of those purchases.")
    mean_p_calibrated: float | None = Field(None, description="Mean recalibrated P of the same purchases.")
    prior_weight: float = Field(0.0, ge=0, description="Purchases the identity prior is worth.")

    def calibrate_p(self, p: Any, log_cost: Any = 0.0) -> np.ndarray:
        """Recalibrated probabilities (``log_cost``: log(cost / median cost) of each, when costs differ)."""
        z = ndtri(np.clip(np.asarray(p, dtype=float), _P_CLIP, 1.0 - _P_CLIP))
        return ndtr(self.a + self.c_log_cost * np.asarray(log_cost, dtype=float) + self.b * z)

    def calibrate_gaussian(self, mean: Any, std: Any, log_cost: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian ``N(mu', sd')`` whose P(below any threshold t) is the recalibrated one (module docstring):
        ``sd' = sd / b``, ``mu' = mu - (a + c log_cost) sd / b``."""
        sd = np.asarray(std, dtype=float) / self.b
        offset = self.a + self.c_log_cost * np.asarray(log_cost, dtype=float)
        return np.asarray(mean, dtype=float) - offset * sd, sd

    def numbers(self, prefix: str = "outcome_calibration_") -> dict[str, Any]:
        """Flat numbers for the ledger."""
        return {f"{prefix}{k}": v for k, v in self.model_dump(mode="json").items()}


def log_cost_ratio(costs: Any) -> np.ndarray:
    """log(cost / median cost) of each candidate (0 for all when every candidate costs the same)."""
    c = np.asarray(costs, dtype=float)
    if c.size == 0:
        return c
    return np.log(np.maximum(c, 1e-12) / max(float(np.median(c)), 1e-12))


def fit_outcome_calibration(p_at_purchase: Sequence[float], stable: Sequence[bool], *,
                            log_cost: Sequence[float] | None = None, prior_weight: float = 10.0
                            ) -> OutcomeCalibration:
    """Maximum a posteriori probit recalibration of purchase-time probabilities.

    Parameters
    ----------
    p_at_purchase : sequence of float
        P(stable) the policy ranked with when each calculation was bought.
    stable : sequence of bool
        Whether that calculation's result is stable (at its fidelity, on the campaign's current hull).
    log_cost : sequence of float, optional
        log(cost / median cost) of each purchase. With a size-dependent cost the policy values a candidate per unit
        of its cost, so a cheap one is bought on a small P, and an overrated small P costs most there; a third term
        ``c log_cost`` (prior 0, same weight) learns that. Where every cost is the same it is left out (``c = 0``).
    prior_weight : float
        The identity map ``a = 0, b = 1`` enters as a Gaussian penalty on ``a`` and ``log b`` worth this many
        purchases: a handful of purchases move it little, dozens take over.

    Returns
    -------
    OutcomeCalibration
    """
    from scipy.optimize import minimize

    p = np.asarray(p_at_purchase, dtype=float).ravel()
    y = np.asarray(stable, dtype=bool).ravel()
    f = np.zeros_like(p) if log_cost is None else np.asarray(log_cost, dtype=float).ravel()
    keep = np.isfinite(p) & np.isfinite(f)
    p, y, f = p[keep], y[keep], f[keep]
    n = int(p.size)
    if n == 0:
        return OutcomeCalibration(prior_weight=prior_weight)
    z = ndtri(np.clip(p, _P_CLIP, 1.0 - _P_CLIP))
    with_cost = bool(np.any(np.abs(f) > 1e-9))

    def loss(c: np.ndarray) -> float:
        u = c[0] + c[1] * z + (c[2] * f if with_cost else 0.0)
        ll = np.sum(np.where(y, log_ndtr(u), log_ndtr(-u)))
        penalty = c[0] ** 2 + math.log(c[1]) ** 2 + (c[2] ** 2 if with_cost else 0.0)
        return float(-ll + 0.5 * prior_weight * penalty)

    start, bounds = [0.0, 1.0], [_A_BOUNDS, _B_BOUNDS]
    if with_cost:
        start, bounds = start + [0.0], bounds + [(-3.0, 3.0)]
    res = minimize(loss, np.array(start), method="L-BFGS-B", bounds=bounds)
    a, b = float(res.x[0]), float(res.x[1])
    c = float(res.x[2]) if with_cost else 0.0
    fitted = OutcomeCalibration(a=a, b=b, c_log_cost=c, n_purchases=n, n_stable=int(y.sum()),
                                prior_weight=prior_weight)
    fitted.mean_p_at_purchase = float(p.mean())
    fitted.mean_p_calibrated = float(fitted.calibrate_p(p, f).mean())
    return fitted
