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

Where candidates' costs differ (the size-dependent cost) the map has one more term, an offset per **cost class**
(``cost_classes`` bins of equal width in log(cost / median cost) over the candidates, each offset with prior 0 worth
``prior_weight`` purchases, shared by both fidelities): the policy values a candidate per unit of its own cost, so an
error of P that follows cell size moves its choices most. On the issue-12 Li-Mn-Fe-Co-Ni-O world the model
overrated cells of 5-12 sites and underrated those of 13-20 (in round 1, none of the 15 candidates of 5-12 sites
at P 0.1-0.6 was truly stable, while 26 of the 39 truly stable crystals have 13-20 sites), a pattern no single
slope in log cost follows.

Each fidelity gets its own map (:func:`fit_outcome_calibration_by_fidelity`), shrunk towards the map fitted on both
fidelities' purchases together: the PBE and SCAN models overrate by different amounts (on the issue-12
Li-Mn-Fe-Co-Ni-O world with the size-dependent cost, PBE screens came out PBE-stable at about a seventh of the rate
their P said, SCAN purchases at about a third), and a pooled map overvalues the PBE screen where PBE is the worse
overrated. With few purchases of one fidelity its map stays near the pooled one.

With the **competitor survival fitted** (``competitor_survival_fitted``) the map has one more term, ``g ln S``, where
``S`` is the candidate's competitor survival when it was bought (:mod:`screener.policies.competitors`): ``g`` (prior
0 worth ``prior_weight`` purchases, at least 0, shared by both fidelities like the cost-class offsets) says how much
the campaign's own purchases in crowded chemistry came out unstable beyond what their P said. Multiplying P by ``S``
outright helped on some stand-in worlds and cost finds on others. Refitted on eight rows' survival-on ledgers,
``g`` came out 0.2-2.1 on five and about 0 (-0.15 to 0.02) on the two Li-Mn rows and the size-dependent Na-Ti
row, within 0.25 of the same fit on the truth. In the campaigns the fitted ``g`` did not tell the worlds where the
survival helps from those where it costs, and the option (off by default) found 860 over eleven rows against 876
without it (docs/policy-benchmarks.md).

With **chemical-system offsets** (``chemsys_sd``) the map has one more term, ``e_c``: an offset per chemical system
among the purchases, a random effect with prior ``N(0, chemsys_sd^2)`` fitted on both fidelities' purchases together
and shared like the cost-class offsets (or per fidelity, on its own purchases). The purchases' mean offset is held
at 0, so the offsets say only how systems differ and the campaign-wide level stays ``a``'s; a system without
purchases gets 0. The model's errors are shared by related structures, so a system whose purchases keep coming out
unstable is overrated as a whole, and one whose purchases keep paying is underrated; the campaign then spreads its
purchases away from the first kind and stays with the second. The competitor survival tried to tell the two apart from predictions alone, and the cap per
system by a fixed rule; this learns it from what each system's own purchases returned. Off by default: at
``chemsys_sd`` 0.5 it found 6 more than without it over eight measured rows, but like the survival and the cap it
traded the sparse K-Cu-Zn-Sn-S-Se world (86 against 67 over ten seeds) against Mg-Mn-Fe-Cr-V-S (78 against 94);
at 0.25 it found as many as without it on both (docs/policy-benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import log_ndtr, ndtr, ndtri

from screener.policies.acquisition import normalize_chemsys

__all__ = ["OutcomeCalibration", "cost_class", "cost_class_edges", "fit_outcome_calibration",
           "fit_outcome_calibration_by_fidelity", "log_cost_ratio"]

_P_CLIP = 1e-6
_B_BOUNDS = (0.2, 3.0)
_A_BOUNDS = (-4.0, 4.0)
_OFFSET_BOUNDS = (-3.0, 3.0)
_SURVIVAL_SLOPE_BOUNDS = (0.0, 3.0)
_CENTRE_WEIGHT = 1e4  # penalty that holds the purchases' mean chemical-system offset at 0


class OutcomeCalibration(BaseModel):
    """``P_cal = Phi(a + d_k + b Phi^-1(P))``, fitted on purchases (P at purchase, came out stable); ``d_k`` is the
    offset of the candidate's cost class (none where every candidate costs the same)."""

    model_config = ConfigDict(extra="forbid")

    a: float = Field(0.0, description="Probit offset (negative: the model's P ran high).")
    b: float = Field(1.0, gt=0, description="Probit slope (below 1: the model's P ran too confident).")
    cost_class_edges: list[float] = Field(
        default_factory=list, description="Upper edges of the cost classes in log(cost / median cost), cheapest "
        "first (empty: one class, every candidate costs the same).")
    cost_class_offsets: list[float] = Field(
        default_factory=list, description="Probit offset of each cost class (one more than the edges; negative: "
        "that class's purchases came out stable less often than their P said).")
    cost_class_purchases: list[int] = Field(default_factory=list, description="Purchases per cost class.")
    survival_slope: float = Field(0.0, ge=0.0, description="``g`` of the term ``g ln S`` (S: the competitor survival "
                                  "at purchase; 0: the survival does not enter the map).")
    chemsys_offsets: dict[str, float] = Field(
        default_factory=dict, description="Probit offset ``e_c`` of each chemical system among the purchases "
        "(normalised key, elements sorted; empty: no such term; a system not listed: 0).")
    chemsys_sd: float | None = Field(None, gt=0, description="Prior sd of the chemical-system offsets (None: off).")
    n_purchases: int = Field(0, ge=0, description="Purchases the fit used.")
    n_stable: int = Field(0, ge=0, description="Of those, how many came out stable.")
    mean_p_at_purchase: float | None = Field(None, description="Mean raw P(stable) of those purchases.")
    mean_p_calibrated: float | None = Field(None, description="Mean recalibrated P of the same purchases.")
    prior_weight: float = Field(0.0, ge=0, description="Purchases the prior is worth.")
    prior: str = Field("identity", description="The map the fit is shrunk towards: 'identity' (no recalibration) or "
                       "'pooled' (the fit on both fidelities' purchases).")

    def class_offset(self, log_cost: Any = 0.0) -> np.ndarray:
        """The cost-class offset ``d_k`` of each log(cost / median cost) (0 without classes)."""
        f = np.asarray(log_cost, dtype=float)
        if not self.cost_class_offsets:
            return np.zeros_like(f)
        return np.asarray(self.cost_class_offsets)[cost_class(f, self.cost_class_edges)]

    def chemsys_offset(self, chemsys: Sequence[str] | None) -> np.ndarray | float:
        """The chemical-system offset ``e_c`` of each candidate's system (0 for a system without purchases, and
        for all without the term)."""
        if chemsys is None or not self.chemsys_offsets:
            return 0.0
        return np.array([self.chemsys_offsets.get(normalize_chemsys(c), 0.0) for c in chemsys], dtype=float)

    def offset(self, log_cost: Any = 0.0, log_survival: Any = 0.0, chemsys: Sequence[str] | None = None
               ) -> np.ndarray:
        """The probit offset of each candidate: ``a + d_k + g ln S + e_c``."""
        return (self.a + self.class_offset(log_cost) + self.survival_slope * np.asarray(log_survival, dtype=float)
                + self.chemsys_offset(chemsys))

    def calibrate_p(self, p: Any, log_cost: Any = 0.0, log_survival: Any = 0.0,
                    chemsys: Sequence[str] | None = None) -> np.ndarray:
        """Recalibrated probabilities (``log_cost``: log(cost / median cost) of each, when costs differ;
        ``log_survival``: ln of each one's competitor survival, when it enters the map; ``chemsys``: each one's
        chemical system, when the map has system offsets)."""
        z = ndtri(np.clip(np.asarray(p, dtype=float), _P_CLIP, 1.0 - _P_CLIP))
        return ndtr(self.offset(log_cost, log_survival, chemsys) + self.b * z)

    def calibrate_gaussian(self, mean: Any, std: Any, log_cost: Any = 0.0, log_survival: Any = 0.0,
                           chemsys: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian ``N(mu', sd')`` whose P(below any threshold t) is the recalibrated one (module docstring):
        ``sd' = sd / b``, ``mu' = mu - (a + d_k + g ln S + e_c) sd / b``."""
        sd = np.asarray(std, dtype=float) / self.b
        return np.asarray(mean, dtype=float) - self.offset(log_cost, log_survival, chemsys) * sd, sd

    def numbers(self, prefix: str = "outcome_calibration_") -> dict[str, Any]:
        """Flat numbers for the ledger (scalars only): the cost classes as ``cost_classes`` (how many) and
        ``cost_class_<k>_offset``, ``_purchases`` and ``_upper_log_cost`` (None for the dearest) per class; the
        chemical-system offsets (with that term) as ``chemsys_offsets_n``, ``_min`` and ``_max``."""
        out = {f"{prefix}{k}": v for k, v in self.model_dump(mode="json").items()
               if not isinstance(v, (list, dict))}
        if self.chemsys_offsets:
            values = list(self.chemsys_offsets.values())
            out.update({f"{prefix}chemsys_offsets_n": len(values), f"{prefix}chemsys_offsets_min": min(values),
                        f"{prefix}chemsys_offsets_max": max(values)})
        out[f"{prefix}cost_classes"] = len(self.cost_class_offsets)
        for k, d in enumerate(self.cost_class_offsets):
            out[f"{prefix}cost_class_{k}_offset"] = d
            out[f"{prefix}cost_class_{k}_purchases"] = (self.cost_class_purchases[k]
                                                       if k < len(self.cost_class_purchases) else 0)
            out[f"{prefix}cost_class_{k}_upper_log_cost"] = (self.cost_class_edges[k]
                                                            if k < len(self.cost_class_edges) else None)
        return out


def log_cost_ratio(costs: Any) -> np.ndarray:
    """log(cost / median cost) of each candidate (0 for all when every candidate costs the same)."""
    c = np.asarray(costs, dtype=float)
    if c.size == 0:
        return c
    return np.log(np.maximum(c, 1e-12) / max(float(np.median(c)), 1e-12))


def cost_class_edges(log_cost: Any, n_classes: int = 4) -> list[float]:
    """Edges of ``n_classes`` classes of equal width in the candidates' log(cost / median cost), i.e. of equal cost
    ratio (e.g. cost ~ sites^2 over 2-20 sites: about 2-3, 4-6, 7-11 and 12-20 sites); empty when every candidate costs
    the same (or ``n_classes`` < 2). Equal ratios rather than quantiles: the policy's purchases crowd into the
    cheapest cells, and quantile classes of the candidates would put nearly all of them in one class."""
    f = np.asarray(log_cost, dtype=float)
    f = f[np.isfinite(f)]
    if n_classes < 2 or f.size == 0 or float(np.ptp(f)) < 1e-9:
        return []
    return [float(e) for e in np.linspace(f.min(), f.max(), n_classes + 1)[1:-1]]


def cost_class(log_cost: Any, edges: Sequence[float]) -> np.ndarray:
    """Index of each log cost's class: 0 up to and including the first edge, then 1, ..."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(log_cost, dtype=float), side="left")


def fit_outcome_calibration(p_at_purchase: Sequence[float], stable: Sequence[bool], *,
                            log_cost: Sequence[float] | None = None, edges: Sequence[float] = (),
                            prior_weight: float = 10.0, prior: OutcomeCalibration | None = None,
                            min_slope: float = _B_BOUNDS[0], log_survival: Sequence[float] | None = None,
                            fit_survival_slope: bool = False, chemsys: Sequence[str] | None = None,
                            chemsys_sd: float | None = None) -> OutcomeCalibration:
    """Maximum a posteriori probit recalibration of purchase-time probabilities.

    Parameters
    ----------
    p_at_purchase : sequence of float
        P(stable) the policy ranked with when each calculation was bought.
    stable : sequence of bool
        Whether that calculation's result is stable (at its fidelity, on the campaign's current hull).
    log_cost : sequence of float, optional
        log(cost / median cost) of each purchase; with ``edges`` it places each in a cost class.
    edges : sequence of float
        Cost-class edges (:func:`cost_class_edges` over the candidates): each class gets an offset ``d_k`` (prior
        0, worth ``prior_weight`` purchases). Empty (every candidate costs the same): no offsets.
    prior_weight : float
        The identity map ``a = 0, b = 1`` enters as a Gaussian penalty on ``a`` and ``log b`` worth this many
        purchases: a handful of purchases move it little, dozens take over.
    prior : OutcomeCalibration, optional
        Shrink ``a`` and ``log b`` towards this map instead of the identity, and keep its cost-class offsets as
        they are: one fidelity's map around the pooled one (:func:`fit_outcome_calibration_by_fidelity`).
    min_slope : float
        Lower bound of ``b``. Purchases span a narrow range of P, so the slope is poorly determined there, and a
        slope below 1 lifts every P below the purchases' range; 1 fits an offset only (a uniform shift in probit).
    log_survival : sequence of float, optional
        ln of each purchase's competitor survival at purchase (0: none estimated).
    fit_survival_slope : bool
        Fit ``g`` of the term ``g ln S`` (prior 0 worth ``prior_weight`` purchases, bounded to [0, 3]); with a
        ``prior`` its ``g`` is kept as it is.
    chemsys : sequence of str, optional
        Chemical system of each purchase (with ``chemsys_sd``).
    chemsys_sd : float, optional
        Fit an offset ``e_c`` per chemical system among the purchases, prior ``N(0, chemsys_sd^2)``; with a
        ``prior`` its offsets are kept as they are. None: no such term.

    Returns
    -------
    OutcomeCalibration
    """
    from scipy.optimize import minimize

    p = np.asarray(p_at_purchase, dtype=float).ravel()
    y = np.asarray(stable, dtype=bool).ravel()
    f = np.zeros_like(p) if log_cost is None else np.asarray(log_cost, dtype=float).ravel()
    ls = np.zeros_like(p) if log_survival is None else np.asarray(log_survival, dtype=float).ravel()
    keep = np.isfinite(p) & np.isfinite(f) & np.isfinite(ls)
    p, y, f, ls = p[keep], y[keep], f[keep], ls[keep]
    n = int(p.size)
    a0, b0 = (0.0, 1.0) if prior is None else (prior.a, prior.b)
    label = "identity" if prior is None else "pooled"
    edges = list(prior.cost_class_edges) if prior is not None else [float(e) for e in edges]
    k = cost_class(f, edges)
    n_classes = len(edges) + 1 if edges else 0
    counts = np.bincount(k, minlength=n_classes).astype(int).tolist() if n_classes else []
    fixed = prior is not None and bool(prior.cost_class_offsets)
    offsets0 = list(prior.cost_class_offsets) if fixed else [0.0] * n_classes
    g0 = prior.survival_slope if prior is not None else 0.0
    # chemical-system offsets: fitted here when asked (the pooled map, or each fidelity's where the pooled one has
    # none), else kept from the prior like the classes
    systems0 = dict(prior.chemsys_offsets) if prior is not None else {}
    own = bool(chemsys_sd) and chemsys is not None and not systems0
    sd_c = chemsys_sd if own else (prior.chemsys_sd if prior is not None else None)
    kept = None if chemsys is None else list(np.asarray(chemsys, dtype=object).ravel()[keep])  # each purchase's
    keys = [normalize_chemsys(c) for c in kept] if own else []
    groups = sorted(set(keys))
    if n == 0:
        return OutcomeCalibration(a=a0, b=b0, cost_class_edges=edges, cost_class_offsets=offsets0,
                                  cost_class_purchases=counts, survival_slope=g0, prior_weight=prior_weight,
                                  prior=label, chemsys_offsets=systems0, chemsys_sd=sd_c)
    z = ndtri(np.clip(p, _P_CLIP, 1.0 - _P_CLIP))
    free = n_classes if not fixed else 0  # offsets fitted here (the pooled fit), else taken from the prior
    fit_g = fit_survival_slope and prior is None  # g fitted on all purchases, then shared like the offsets
    if groups:
        return _fit_with_chemsys(p, y, z, f, ls, k, edges, counts, groups, keys, float(chemsys_sd), a0, b0,
                                 prior_weight, min_slope, fit_g, g0, None if not fixed else offsets0, label)
    e_fixed = prior.chemsys_offset(kept) if prior is not None else 0.0  # the prior's system offsets, kept

    def loss(c: np.ndarray) -> float:
        d = np.asarray(c[2:2 + free]) if free else np.asarray(offsets0)
        g = c[-1] if fit_g else g0
        u = c[0] + c[1] * z + (d[k] if n_classes else 0.0) + g * ls + e_fixed
        ll = np.sum(np.where(y, log_ndtr(u), log_ndtr(-u)))
        penalty = (c[0] - a0) ** 2 + math.log(c[1] / b0) ** 2 + float(np.sum(np.square(c[2:])))
        return float(-ll + 0.5 * prior_weight * penalty)

    start = [a0, b0] + [0.0] * free + [0.0] * fit_g
    lo = min(max(float(min_slope), _B_BOUNDS[0]), _B_BOUNDS[1])
    start[1] = min(max(start[1], lo), _B_BOUNDS[1])
    bounds = [_A_BOUNDS, (lo, _B_BOUNDS[1])] + [_OFFSET_BOUNDS] * free + [_SURVIVAL_SLOPE_BOUNDS] * fit_g
    res = minimize(loss, np.array(start), method="L-BFGS-B", bounds=bounds)
    fitted = OutcomeCalibration(a=float(res.x[0]), b=float(res.x[1]), cost_class_edges=edges,
                                cost_class_offsets=[float(x) for x in res.x[2:2 + free]] if free else offsets0,
                                cost_class_purchases=counts, n_purchases=n, n_stable=int(y.sum()),
                                survival_slope=float(res.x[-1]) if fit_g else g0,
                                prior_weight=prior_weight, prior=label, chemsys_offsets=systems0, chemsys_sd=sd_c)
    fitted.mean_p_at_purchase = float(p.mean())
    fitted.mean_p_calibrated = float(fitted.calibrate_p(p, f, ls, kept).mean())
    return fitted


def _fit_with_chemsys(p: np.ndarray, y: np.ndarray, z: np.ndarray, f: np.ndarray, ls: np.ndarray, k: np.ndarray,
                      edges: list[float], counts: list[int], groups: list[str], keys: list[str], chemsys_sd: float,
                      a0: float, b0: float, prior_weight: float, min_slope: float, fit_g: bool, g0: float,
                      class_offsets: list[float] | None, label: str) -> OutcomeCalibration:
    """:func:`fit_outcome_calibration` with an offset per chemical system: the same posterior plus
    ``e_c ~ N(0, chemsys_sd^2)``, maximised with its analytic gradient (one parameter per system);
    ``class_offsets`` (a fidelity's map around the pooled one): the cost-class offsets kept as given."""
    from scipy.optimize import minimize

    n_classes = len(edges) + 1 if edges and class_offsets is None else 0  # cost-class offsets fitted here
    d_fixed = np.asarray(class_offsets)[k] if class_offsets else 0.0
    index = {g: i for i, g in enumerate(groups)}
    grp = np.array([index[key] for key in keys], dtype=int)
    n_g = len(groups)
    # the offsets' prior is looser than a's, so without this they would take up the campaign-wide overrating and
    # mark every system with purchases down against those without: they say only how systems differ
    share = np.bincount(grp, minlength=n_g) / max(len(grp), 1)
    i_d, i_e = 2, 2 + n_classes
    i_g = i_e + n_g

    def loss(c: np.ndarray) -> tuple[float, np.ndarray]:
        d, e = c[i_d:i_e], c[i_e:i_g]
        g = c[i_g] if fit_g else g0
        u = c[0] + c[1] * z + (d[k] if n_classes else d_fixed) + g * ls + e[grp]
        lp, lm = log_ndtr(u), log_ndtr(-u)
        log_pdf = -0.5 * u * u - 0.5 * math.log(2.0 * math.pi)
        w = np.where(y, np.exp(log_pdf - lp), -np.exp(log_pdf - lm))  # d log-likelihood / du
        ll = float(np.sum(np.where(y, lp, lm)))
        log_b = math.log(c[1] / b0)
        penalty = (c[0] - a0) ** 2 + log_b ** 2 + float(np.sum(np.square(d))) + (g ** 2 if fit_g else 0.0)
        centre = float(share @ e)  # the purchases' mean offset: held at 0, the level is a's alone
        value = (-ll + 0.5 * prior_weight * penalty + 0.5 * float(np.sum(np.square(e))) / chemsys_sd ** 2
                 + 0.5 * _CENTRE_WEIGHT * centre ** 2)
        grad = np.zeros_like(c)
        grad[0] = -w.sum() + prior_weight * (c[0] - a0)
        grad[1] = -(w * z).sum() + prior_weight * log_b / c[1]
        if n_classes:
            grad[i_d:i_e] = -np.bincount(k, w, minlength=n_classes) + prior_weight * d
        grad[i_e:i_g] = -np.bincount(grp, w, minlength=n_g) + e / chemsys_sd ** 2 + _CENTRE_WEIGHT * centre * share
        if fit_g:
            grad[i_g] = -(w * ls).sum() + prior_weight * g
        return value, grad

    lo = min(max(float(min_slope), _B_BOUNDS[0]), _B_BOUNDS[1])
    start = np.array([a0, min(max(b0, lo), _B_BOUNDS[1])] + [0.0] * (n_classes + n_g) + [0.0] * fit_g)
    bounds = ([_A_BOUNDS, (lo, _B_BOUNDS[1])] + [_OFFSET_BOUNDS] * (n_classes + n_g)
              + [_SURVIVAL_SLOPE_BOUNDS] * fit_g)
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    offsets = list(class_offsets) if class_offsets is not None else [float(x) for x in res.x[i_d:i_e]]
    fitted = OutcomeCalibration(a=float(res.x[0]), b=float(res.x[1]), cost_class_edges=edges,
                                cost_class_offsets=offsets, cost_class_purchases=counts,
                                n_purchases=int(p.size), n_stable=int(y.sum()),
                                survival_slope=float(res.x[i_g]) if fit_g else g0, prior_weight=prior_weight,
                                prior=label, chemsys_offsets={g: float(x) for g, x in zip(groups, res.x[i_e:i_g])},
                                chemsys_sd=chemsys_sd)
    fitted.mean_p_at_purchase = float(p.mean())
    fitted.mean_p_calibrated = float(fitted.calibrate_p(p, f, ls, keys).mean())
    return fitted


def fit_outcome_calibration_by_fidelity(purchases: Sequence[tuple[str, float, bool]], *,
                                        log_cost: Sequence[float] | None = None, edges: Sequence[float] = (),
                                        prior_weight: float = 10.0, min_slope: float = _B_BOUNDS[0],
                                        log_survival: Sequence[float] | None = None,
                                        fit_survival_slope: bool = False, chemsys: Sequence[str] | None = None,
                                        chemsys_sd: float | None = None, chemsys_per_fidelity: bool = False
                                        ) -> dict[str, OutcomeCalibration]:
    """One map per fidelity, each shrunk towards the map of all purchases together (partial pooling); the cost-class
    offsets are the pooled fit's (cell size affects both models alike, and one fidelity alone has few purchases
    per class).

    Parameters
    ----------
    purchases : sequence of (fidelity, P at purchase, came out stable)
    log_cost : sequence of float, optional
        log(cost / median cost) of each purchase (see :func:`fit_outcome_calibration`).
    edges : sequence of float
        Cost-class edges (empty: no cost classes).
    prior_weight : float
        Purchases the identity is worth in the pooled fit, and the pooled fit in each fidelity's.
    min_slope : float
        Lower bound of each map's slope ``b`` (see :func:`fit_outcome_calibration`).
    log_survival : sequence of float, optional
        ln of each purchase's competitor survival at purchase (see :func:`fit_outcome_calibration`).
    fit_survival_slope : bool
        Fit the survival term's ``g`` on all purchases together; each fidelity's map keeps it.
    chemsys : sequence of str, optional
        Chemical system of each purchase; with ``chemsys_sd`` the pooled fit gets an offset per system, which each
        fidelity's map keeps (see :func:`fit_outcome_calibration`).
    chemsys_sd : float, optional
        Prior sd of those offsets (None: no such term).
    chemsys_per_fidelity : bool
        Fit the system offsets in each fidelity's map on that fidelity's purchases alone (the pooled map then has
        none): a system whose PBE screens pay need not be one whose SCAN runs do.

    Returns
    -------
    dict
        ``{"pooled": ..., "pbe": ..., "scan": ...}``; a fidelity without purchases gets the pooled map.
    """
    fid = [f for f, _, _ in purchases]
    p = np.array([x for _, x, _ in purchases], dtype=float)
    y = np.array([s for _, _, s in purchases], dtype=bool)
    f = np.zeros(len(fid)) if log_cost is None or len(log_cost) != len(fid) else np.asarray(log_cost, dtype=float)
    ls = (np.zeros(len(fid)) if log_survival is None or len(log_survival) != len(fid)
          else np.asarray(log_survival, dtype=float))
    systems = (np.asarray(chemsys, dtype=object) if chemsys_sd and chemsys is not None and len(chemsys) == len(fid)
               else None)
    pooled_systems = systems is not None and not chemsys_per_fidelity
    pooled = fit_outcome_calibration(p, y, log_cost=f, edges=edges, prior_weight=prior_weight, min_slope=min_slope,
                                     log_survival=ls, fit_survival_slope=fit_survival_slope,
                                     chemsys=list(systems) if pooled_systems else None,
                                     chemsys_sd=chemsys_sd if pooled_systems else None)
    out = {"pooled": pooled}
    for fidelity in ("pbe", "scan"):
        mine = np.array([x == fidelity for x in fid], dtype=bool)
        out[fidelity] = fit_outcome_calibration(p[mine], y[mine], log_cost=f[mine], prior_weight=prior_weight,
                                                prior=pooled, min_slope=min_slope, log_survival=ls[mine],
                                                chemsys=None if systems is None else list(systems[mine]),
                                                chemsys_sd=chemsys_sd if systems is not None and chemsys_per_fidelity
                                                else None)
    return out
