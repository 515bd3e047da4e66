"""Per-candidate choice by expected value: skip, PBE now (then SCAN if the PBE result says so) or SCAN now.

The objective is confirmed SCAN-stable finds per unit of budget. For each open candidate ``i`` (SCAN cost ``c_s``,
PBE cost ``c_p``, both that candidate's own) the policy values each option by expected finds per unit cost:

* **SCAN now**: ``(p_i + L_s) / c_s``, where ``p_i`` is the calibrated P(SCAN-stable): from the SCAN prediction
  (the campaign's calibrated sigma), or, for a candidate with a PBE result ``x``, ``q(x) = P(SCAN-stable | PBE
  E_hull = x)`` from the PBE -> SCAN relation fitted on computed pairs: ``Phi(c_hull)`` on the PBE hull (``x = 0``,
  a censored value that stands for every depth below the hull) and a probit ``Phi(c0 - c1 x)`` above it;
* **PBE now, SCAN later if worth it**: the PBE result ``X ~ N(mu_p, sigma_p)`` (calibrated PBE prediction); the
  candidate is SCAN-computed afterwards when ``q(X) / c_s >= lambda`` (``lambda``: the finds per unit the budget
  earns at its margin, i.e. the rate of the last SCAN-now pick the remaining budget reaches). Expected finds
  ``F = E[q(X) 1{go}]``, expected cost ``c_p + c_s P(go)``, value ``(F + L_p + P(go) L_s) / (c_p + c_s P(go))``
  in closed form (:func:`pbe_route`: ``q`` falls with ``X``, so "go" is ``X <= x*``, and the expectation of a
  probit over a Gaussian is a bivariate normal probability). With ``pbe_route_joint`` (off by default: it found
  less in the measured worlds) ``F = P(Y <= thr, go)`` with the SCAN result ``Y`` jointly Gaussian with ``X``, so
  ``F <= p``;
* **skip**: 0 (a candidate is planned only if its best rate is positive and the round budget reaches it).

**The stop rule** (off by default): an option is bought only if its rate reaches ``stop_fraction_of_yield`` of the
campaign's yield so far (SCAN-confirmed finds on today's hull / budget spent), once it has ``stop_after_finds`` (3)
finds; the same rate is the least ``lambda`` (below) can be. When no open option reaches it, the round is empty and
the campaign stops with the rest of its budget, saying so. It is the marginal-value rule (stop when the next unit
earns less than the search has been earning); 0.1 leaves a tenfold margin. Off by default: in the measured campaigns
it never stopped one before its last unit, and as lambda's floor it moved the screens' follow-up thresholds
(docs/policy-benchmarks.md).

With ``scan_now_at_most_pbe_view`` (on by default) the SCAN-now ``p`` of a candidate without a PBE result is at most
its **PBE view**, ``E[q(X)]`` times its competitor survival: what the PBE route would find if SCAN always followed the
screen. The campaign's SCAN model is the PBE model fine-tuned on a few SCAN results the campaign selected; where it
alone rates a candidate above what its PBE prediction says, the direct SCAN picks came out stable about half as
often as their P said.

Two options of the relation are off by default (measured, no more finds; docs/policy-benchmarks.md):
``pbe_scan_signed_depth`` reads a PBE-stable result's E_hull as its depth below the hull of the other phases (``q``
rising with it), and ``pbe_scan_campaign_offset_sd`` gives the campaign's own pairs a probit offset of their own (its
level, the known pairs' shape).

Where costs differ, two options (``pbe_scan_size_slope_sd``, ``cost_blind_share_screens``; docs/policy.md) let the
relation depend on cell size (a probit term ``c_sites ln(n_sites / median)``, fitted: large cells on the PBE hull
stay SCAN-stable more often in one stand-in world, less often in another) and let the cost-blind share (below)
screen a dear cell with PBE first, its follow-up judged without ``lambda`` but bought only if it can be paid.

**A composition model** (``composition_gp_pool``, on by default; :mod:`screener.policies.composition_model`): a
Gaussian process on composition features, refitted each round on every computed E_hull, is pooled with the
(outcome-calibrated) ensemble in probit space, ``z = (1 - a) z_ensemble + a z_GP`` at each fidelity, the weight ``a``
learned from the campaign's purchases (0 before ``composition_pool_min_purchases`` of them). The GP learns a
campaign's results at once, the ensemble only through fine-tuning.

Two corrections make ``p`` the probability of a find that counts, not of a result that looks stable today:

* **outcome calibration** (:mod:`screener.policies.outcome_calibration`): the model's P(stable) is refitted each
  round on the campaign's own purchases (P at purchase vs stable or not), ``P_cal = Phi(a + d_k + b Phi^-1(P))``,
  one ``(a, b)`` per fidelity (PBE purchases for the PBE model's Gaussians, SCAN purchases for the SCAN model's, each
  shrunk towards the fit on both) and, where costs differ, an offset ``d_k`` per cost class; applied to the
  Gaussians (``sd' = sd / b``, ``mu' = mu - (a + d_k) sd'``), so the closed forms above still hold;
* **competitor survival** (:mod:`screener.policies.competitors`): ``S_i`` = P(still SCAN-stable once the pool's
  other candidates are computed | SCAN-stable on today's hull), a Monte Carlo over the candidates' predictions;
  ``p``, ``q`` and ``F`` are multiplied by it, and the PBE route's SCAN follow-up goes ahead when
  ``q(x) S_i / c_s >= lambda``. Off in the preset (``competitor_samples: 0``, ``S_i = 1``): it found fewer stable
  crystals on most measured worlds (docs/policy-benchmarks.md). With ``competitor_survival_fitted`` ``S_i`` is
  recorded but not multiplied in: it enters the outcome calibration as ``g ln S_i``, ``g`` fitted on the purchases
  (off too: between on and off on most measured rows, 860 finds against 876 off).

``L_s`` and ``L_p`` are the **learning values** of one calculation: the scaling law's expected MAE drop turned into
expected extra finds in the rest of the campaign. With ``K`` SCAN picks left after this round (remaining budget /
median SCAN cost), ``V(m)`` = expected finds among the model's top ``K`` when its predictions sharpen from sigma to
``m sigma`` (a preposterior estimate: new means ``~ N(mu, sigma^2 - m^2 sigma^2)``, fixed-seed draws), and ``m =
MAE(N_s + k, N_p) / MAE(N_s, N_p)`` for ``k`` more SCAN calculations (``N_p + k`` for PBE), ``L = (V(m) - V(1)) / k``,
with ``N_s`` counted as at least ``learning_value_min_n_scan`` (100): the power law holds from there on.
With a large pre-training set (``N_p`` ~ 2e4 and more) ``L_p`` is negligible: PBE is worth its screen value only.
``N_p`` is the PBE data behind the model that makes the SCAN predictions; once a SCAN model exists (transferred from
the PBE model, then fine-tuned on SCAN only) new PBE results never reach it and ``L_p = 0``.
The learning values are computed and recorded every round, but **added to the rates only with ``learning_value``
on, which is off by default**: in the measured worlds they did not pay. Adding them found 125 against 130 over 9
campaigns (docs/policy-benchmarks.md), and it lost Na-Ti-V-Cr-Cu-O to ``scan-only``. The cause: the preposterior
counts the whole calibrated spread as error that the next SCAN points remove. While the model is young, that
spread is inflated by a shift common to all candidates, and a common shift reorders nothing. One round's ``L_s``
jumped tenfold (0.013 to 0.135 finds per run) and bought SCAN runs of P 0.06-0.18 instead of PBE screens.

Where candidates' costs differ (with equal costs only with ``cost_blind_share_equal_costs``, off by default), a
**cost-blind share** comes first: SCAN runs in ``scan-only``'s order (the model's
own P, cost ignored) until their spend reaches ``cost_blind_share`` of everything spent (this round's budget counted
as spent), a hedge against a model error that follows cell size, which the per-unit ranking would never buy enough
dear cells to learn (their decisions say ``route: cost_blind``). Then candidates are planned greedily by their best
option's rate until the round budget is spent (SCAN plans carry their competing phases); an option that cannot be
planned (its chemical system's ``max_per_chemsys`` for that fidelity is reached this round, or it does not fit what is
left) puts the candidate's other option in line at that option's own rate, not ahead of better-rated ones. With
``reserve_follow_ups``
(on by default) each planned PBE screen keeps back its expected SCAN follow-up (``P(go) c_s``; together at least the
dearest one's whole ``c_s``) from the campaign's remaining budget: later items may not spend it, and a screen whose
own follow-up would not fit beside it is worth its learning value only. It binds only near the end of a campaign,
where the rest of a round otherwise spent what the follow-ups of its screens needed. Every planned item records
its numbers (``numbers`` of the plan item: ``p_scan_stable``, ``p_scan_model_raw``, ``competitor_survival``,
``rate_*``, ``L_*``, ``lambda``); the round's numbers hold the outcome calibration (``outcome_calibration_a``,
``_b``, ``_n_purchases``, ... of the fit on both fidelities, ``outcome_calibration_pbe_*`` and
``outcome_calibration_scan_*`` of each, ``outcome_calibration_cost_class_<k>_*``), the cost-blind share
(``ev_cost_blind_*``) and the competitor Monte Carlo (``competitor_*``).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
from scipy.special import ndtr

from screener.policies.composition_model import (
    composition_gp_predictions,
    fit_pool_stack,
    fit_pool_weight,
    gp_probit_scale,
    precision_blend,
    probit_pool,
    stack_pool,
)
from screener.policies.outcome_calibration import (
    OutcomeCalibration,
    cost_class_edges,
    fit_outcome_calibration,
    fit_outcome_calibration_by_fidelity,
    log_cost_ratio,
)
from screener.policies.scan_hull_map import fit_scan_hull_map

__all__ = ["PbeScanRelation", "costs_differ", "fit_pbe_scan_relation", "follow_ups_kept_back", "learning_values",
           "plan_expected_value", "pbe_route", "bivariate_normal_cdf", "relation_from_config"]


#: A computed E_hull at or below this (eV/atom) is on its hull: E_hull is censored at 0.
ON_HULL_EV_PER_ATOM = 1e-6


class PbeScanRelation:
    """``P(SCAN-stable | PBE E_hull = x)``: ``Phi(c_hull - c_below x)`` on and below the PBE hull, ``Phi(c0 - c1 x)``
    above it.

    Censored (``signed`` false): both E_hull are censored at 0 (a computed structure on its hull reads 0, however deep
    below the old hull it fell), so a linear map of SCAN on PBE E_hull cannot say how often a PBE-stable result stays
    SCAN-stable; a probit on the binary outcome (SCAN E_hull <= tol) can. The on-hull group (``x <=
    ON_HULL_EV_PER_ATOM``) stands for every depth below the hull, so it is far likelier SCAN-stable than a structure
    just above it (stand-in worlds, on the world's own hulls: 0.64-0.83 on the PBE hull, 0.0-0.4 within 10 meV/atom
    above it): ``c_hull`` is its own parameter, at least ``c0``, so ``q`` never rises with ``x``, and ``c_below`` is 0.
    ``c_hull = c0`` (``c_hull`` None) is one probit through both.

    Signed (``signed`` true): a PBE-stable structure's ``x`` is its E_hull against the hull of the other phases
    (negative: how far below it lies; pymatgen's ``allow_negative``), and ``q`` rises with that depth at its own
    scale ``1 / c_below``, continuous at the hull (``c_hull = c0``). A structure 50 meV/atom below the PBE hull is
    far likelier SCAN-stable than one 2 meV/atom below (stand-in worlds, on the known hulls: 0.85-1.0 at 50
    meV/atom and deeper against 0.30-0.44 within 10), which the censored on-hull group averages away.

    ``1 / c1`` is the E_hull scale (eV/atom) over which the probability falls above the hull.
    """

    def __init__(self, c0: float, c1: float, n_pairs: int, source: str, c_hull: float | None = None,
                 c_below: float = 0.0, signed: bool = False, c_sites: float = 0.0) -> None:
        self.c0, self.c1, self.n_pairs, self.source = c0, c1, n_pairs, source
        self.c_hull = max(float(c0 if c_hull is None else c_hull), float(c0))
        self.c_below, self.signed = max(float(c_below), 0.0), bool(signed)
        self.c_sites = float(c_sites)

    @property
    def p_on_hull(self) -> float:
        """P(SCAN-stable | on the PBE hull) of a median cell: at its edge (``x = 0``) when ``signed``."""
        return float(ndtr(self.c_hull))

    def shift(self, log_sites: Any = None) -> np.ndarray | float:
        """The probit shift ``c_sites z`` of cells with ``z = ln(n_sites / median)`` (missing: the median, 0)."""
        if log_sites is None or self.c_sites == 0.0:
            return 0.0
        return self.c_sites * np.nan_to_num(np.asarray(log_sites, dtype=float))

    def p_scan_stable(self, e_hull_pbe: Any, log_sites: Any = None) -> np.ndarray:
        """P(SCAN E_hull <= 0 | computed PBE E_hull) (signed: negative below the hull of the other phases), of cells
        ``log_sites = ln(n_sites / median)`` (default: the median cell)."""
        x = np.asarray(e_hull_pbe, dtype=float)
        if not self.signed:
            x = np.maximum(x, 0.0)
        s = self.shift(log_sites)
        return np.where(x <= ON_HULL_EV_PER_ATOM, ndtr(self.c_hull + s - self.c_below * np.minimum(x, 0.0)),
                        ndtr(self.c0 + s - self.c1 * x))

    def numbers(self) -> dict[str, Any]:
        return {"pbe_scan_p_stable_if_pbe_stable": self.p_on_hull, "pbe_scan_c_hull": self.c_hull,
                "pbe_scan_p_stable_just_above_hull": float(ndtr(self.c0)), "pbe_scan_c0": self.c0,
                "pbe_scan_c1_per_ev_per_atom": self.c1, "pbe_scan_c_below_per_ev_per_atom": self.c_below,
                "pbe_scan_signed_depth": self.signed, "pbe_scan_n_pairs": self.n_pairs,
                "pbe_scan_c_sites_per_ln_sites": self.c_sites}


def fit_pbe_scan_relation(pairs: Any, *, prior_p_stable: float = 0.86, prior_sigma: float = 0.1,
                          prior_weight: float = 5.0, tol: float = 1e-6,
                          prior_p_just_above: float | None = None, weights: Any = None,
                          signed: bool = False, own: Any = None, own_offset_sd: float | None = None,
                          log_sites: Any = None, sites_slope_sd: float | None = None) -> PbeScanRelation:
    """Maximum a posteriori probit of SCAN-stable (SCAN E_hull <= ``tol``) on the computed PBE E_hull.

    With ``prior_p_just_above`` (the hull step) the on-hull pairs fit ``c_hull`` (prior ``Phi^-1(prior_p_stable)``)
    and those above fit ``c0 = c_hull - d`` (``d >= 0``; prior ``Phi^-1(prior_p_just_above) + t / prior_sigma`` for
    the stability threshold ``t = tol``, so that ``q(t)`` is ``prior_p_just_above``, at most ``c_hull``'s) and ``c1``
    (prior ``1 / prior_sigma``); without it one probit ``Phi(c0 - c1 max(x, 0))`` fits both, ``c0``'s prior
    ``Phi^-1(prior_p_stable)``. Each prior enters as a Gaussian penalty worth ``prior_weight`` observations, so a
    few pairs move it little and hundreds take over. ``weights`` (one per pair; default 1) scale each pair's
    log-likelihood term, e.g. to count the known set's pairs as fewer observations than the campaign's own.

    ``signed``: the PBE E_hull of a PBE-stable pair is its depth below the hull of the other phases (negative), and
    the fit is ``Phi(c0 - c_below x)`` below the hull, ``Phi(c0 - c1 x)`` above (continuous at 0; ``c0``'s prior
    ``Phi^-1(prior_p_just_above)``, or ``Phi^-1(prior_p_stable)`` without it; both slopes' ``1 / prior_sigma``).

    ``own`` (a mask: the campaign's own pairs) with ``own_offset_sd``: the own pairs get a probit offset ``delta``
    of their own (prior ``N(0, own_offset_sd^2)``), and the relation returned is theirs (every intercept plus
    ``delta``). The known set's pairs then fix the shape (the slopes, the step) and the campaign's the level: the
    known pairs are judged on the known set's hulls, a population that can agree more often than the pool's
    candidates do, and a few dozen own pairs could not move a fit on hundreds of known ones.

    ``log_sites`` (one per pair: ``ln(n_sites / median candidate n_sites)``, NaN: unknown, read as the median) with
    ``sites_slope_sd``: every intercept gets a term ``c_sites log_sites`` (prior ``N(0, sites_slope_sd^2)``), so the
    agreement of the two functionals may differ with cell size; the relation's intercepts are the median cell's.
    Without a spread of sizes among the pairs the term is left out (``c_sites = 0``).
    """
    from scipy.optimize import minimize
    from scipy.special import log_ndtr, ndtri

    arr = np.asarray(pairs, dtype=float).reshape(-1, 2) if len(pairs) else np.zeros((0, 2))
    w_all = np.ones(len(arr)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    own_all = np.zeros(len(arr), dtype=bool) if own is None else np.asarray(own, dtype=bool).reshape(-1)
    z_sites = (np.zeros(len(arr)) if log_sites is None
               else np.nan_to_num(np.asarray(log_sites, dtype=float).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0))
    if w_all.shape != (len(arr),) or own_all.shape != (len(arr),) or z_sites.shape != (len(arr),):
        raise ValueError(f"{len(w_all)} weights, {len(own_all)} own flags and {len(z_sites)} cell sizes for "
                         f"{len(arr)} pairs")
    finite = np.isfinite(arr).all(axis=1)
    arr, w_all, own_all, z_sites = arr[finite], w_all[finite], own_all[finite], z_sites[finite]
    step = prior_p_just_above is not None
    chp, c1p = float(ndtri(prior_p_stable)), 1.0 / prior_sigma
    # with a stability threshold t > 0 the prior's "just above" sits at x = t: a PBE result below t is likelier
    # within t at SCAN too
    shift = c1p * max(tol - 1e-6, 0.0)
    c0p = min(float(ndtri(prior_p_just_above)) + shift, chp) if step else chp
    n = len(arr)
    if n == 0:
        if signed:
            return PbeScanRelation(c0p, c1p, 0, "prior only (signed PBE E_hull)", c_below=c1p, signed=True)
        return PbeScanRelation(c0p, c1p, 0, f"prior only (P(SCAN-stable | PBE-stable) = {prior_p_stable:g}, "
                                            + (f"just above the hull {prior_p_just_above:g}, " if step else "")
                                            + f"scale {prior_sigma:g} eV/atom)", c_hull=chp)
    x = arr[:, 0] if signed else np.maximum(arr[:, 0], 0.0)
    y = arr[:, 1] <= tol
    on = x <= ON_HULL_EV_PER_ATOM
    with_offset = own_offset_sd is not None and own_offset_sd > 0 and bool(own_all.any())
    with_sites = sites_slope_sd is not None and sites_slope_sd > 0 and float(np.ptp(z_sites)) > 1e-9

    def slope_penalty(c1: float) -> float:
        return ((c1 - c1p) / c1p) ** 2

    # each form: (z(c) without the offset, its prior penalty, start, bounds) -> the relation's intercepts and slopes
    if signed:  # c = (c0, c_below, c1): continuous at the hull
        def z_of(c: np.ndarray) -> np.ndarray:
            return np.where(on, c[0] - c[1] * np.minimum(x, 0.0), c[0] - c[2] * x)

        def penalty(c: np.ndarray) -> float:
            return (c[0] - c0p) ** 2 + slope_penalty(c[1]) + slope_penalty(c[2])

        start, bounds = [c0p, c1p, c1p], [(-5.0, 5.0), (0.0, 20 * c1p), (0.0, 20 * c1p)]
    elif step:  # c = (c_hull, d, c1), c0 = c_hull - d: the on-hull group apart
        def z_of(c: np.ndarray) -> np.ndarray:
            return np.where(on, c[0], c[0] - c[1] - c[2] * x)

        def penalty(c: np.ndarray) -> float:
            return (c[0] - chp) ** 2 + (c[0] - c[1] - c0p) ** 2 + slope_penalty(c[2])

        start, bounds = [chp, chp - c0p, c1p], [(-5.0, 5.0), (0.0, 10.0), (0.0, 20 * c1p)]
    else:  # c = (c0, c1): one probit
        def z_of(c: np.ndarray) -> np.ndarray:
            return c[0] - c[1] * x

        def penalty(c: np.ndarray) -> float:
            return (c[0] - c0p) ** 2 + slope_penalty(c[1])

        start, bounds = [c0p, c1p], [(-5.0, 5.0), (0.0, 20 * c1p)]
    k = len(start)

    k_sites = k + with_offset  # index of c_sites when fitted

    def loss(c: np.ndarray) -> float:
        z = z_of(c[:k])
        prior = prior_weight * penalty(c[:k])
        if with_offset:
            z = z + c[k] * own_all
            prior += 0.5 * (c[k] / own_offset_sd) ** 2
        if with_sites:
            z = z + c[k_sites] * z_sites
            prior += 0.5 * (c[k_sites] / sites_slope_sd) ** 2
        return -float(np.sum(w_all * np.where(y, log_ndtr(z), log_ndtr(-z)))) + prior

    res = minimize(loss, np.array(start + [0.0] * (with_offset + with_sites)), method="L-BFGS-B",
                   bounds=bounds + [(-5.0, 5.0)] * (with_offset + with_sites))
    c = [float(v) for v in res.x]
    delta = c[k] if with_offset else 0.0
    c_sites = c[k_sites] if with_sites else 0.0
    own_note = (f"; the campaign's {int(own_all.sum())} own pairs offset by {delta:+.2f} (prior sd "
                f"{own_offset_sd:g})" if with_offset else "")
    own_note += (f"; {c_sites:+.2f} per e-fold of cell sites (prior sd {sites_slope_sd:g})" if with_sites else "")
    if signed:
        return PbeScanRelation(c[0] + delta, c[2], n, f"probit on {n} computed PBE/SCAN pairs (campaign and known "
                                                      f"set; signed PBE E_hull, {int(on.sum())} on or below the PBE "
                                                      f"hull) with a prior worth {prior_weight:g} pairs{own_note}",
                               c_below=c[1], signed=True, c_sites=c_sites)
    if step:
        return PbeScanRelation(c[0] - c[1] + delta, c[2], n,
                               f"probit on {n} computed PBE/SCAN pairs (campaign and known set; {int(on.sum())} on "
                               f"the PBE hull fitted apart) with a prior worth {prior_weight:g} pairs{own_note}",
                               c_hull=c[0] + delta, c_sites=c_sites)
    return PbeScanRelation(c[0] + delta, c[1], n, f"probit on {n} computed PBE/SCAN pairs (campaign and known set) "
                                                  f"with a prior worth {prior_weight:g} pairs{own_note}",
                           c_sites=c_sites)


def relation_from_config(cfg: Any, pairs: Any, threshold: float, n_known: int = 0,
                         pair_log_sites: Any = None) -> PbeScanRelation:
    """:func:`fit_pbe_scan_relation` with the priors of an ``ExpectedValueConfig``; SCAN-stable means E_hull at or
    below the campaign's ``threshold``. The last ``n_known`` pairs are the known set's: with
    ``known_pairs_weight`` set they count as that many observations together (each ``weight / n_known``, at most 1).
    ``pair_log_sites`` (each pair's ``ln(n_sites / median)``) fits the cell-size term when
    ``pbe_scan_size_slope_sd`` is set (the caller passes it only where costs differ)."""
    weights = None
    n_known = min(max(int(n_known), 0), len(pairs))
    if cfg.known_pairs_weight is not None and n_known > 0:
        w_known = min(1.0, cfg.known_pairs_weight / n_known)
        weights = np.r_[np.ones(len(pairs) - n_known), np.full(n_known, w_known)]
    own = np.r_[np.ones(len(pairs) - n_known, dtype=bool), np.zeros(n_known, dtype=bool)]
    return fit_pbe_scan_relation(pairs, weights=weights, prior_p_stable=cfg.pbe_scan_prior_p_stable_if_pbe_stable,
                                 prior_sigma=cfg.pbe_scan_prior_sigma_ev_per_atom, prior_weight=cfg.prior_weight,
                                 tol=threshold + 1e-6,
                                 prior_p_just_above=(cfg.pbe_scan_prior_p_stable_just_above_hull
                                                     if cfg.pbe_scan_hull_step or cfg.pbe_scan_signed_depth
                                                     else None),
                                 signed=cfg.pbe_scan_signed_depth, own=own,
                                 own_offset_sd=cfg.pbe_scan_campaign_offset_sd,
                                 log_sites=pair_log_sites if cfg.pbe_scan_size_slope_sd else None,
                                 sites_slope_sd=cfg.pbe_scan_size_slope_sd)


def bivariate_normal_cdf(h: Any, k: Any, rho: Any) -> np.ndarray:
    """``P(U <= h, V <= k)`` for standard normals with correlation ``rho`` (|rho| < 1), elementwise, via Owen's T.

    ``Phi2(h, k) = (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta`` with ``a_h = (k - rho h) / (h s)``,
    ``a_k = (h - rho k) / (k s)``, ``s = sqrt(1 - rho^2)`` and ``beta = 1/2`` where ``h k < 0`` (or one is 0 and
    ``h + k < 0``); infinite limits reduce to one-dimensional normals.
    """
    from scipy.special import owens_t

    h, k, rho = np.broadcast_arrays(np.asarray(h, float), np.asarray(k, float), np.asarray(rho, float))
    out = np.empty(h.shape)
    inf_h, inf_k = ~np.isfinite(h), ~np.isfinite(k)
    out[inf_h] = np.where(h[inf_h] > 0, ndtr(k[inf_h]), 0.0)
    only_k = inf_k & ~inf_h
    out[only_k] = np.where(k[only_k] > 0, ndtr(h[only_k]), 0.0)
    fin = ~(inf_h | inf_k)
    hf, kf, r = h[fin], k[fin], np.clip(rho[fin], -1 + 1e-12, 1 - 1e-12)
    # a zero limit makes a_h or a_k infinite: nudged off 0 (the CDF is continuous there)
    hz, kz = np.where(hf == 0.0, 1e-12, hf), np.where(kf == 0.0, 1e-12, kf)
    sq = np.sqrt(1.0 - r * r)
    beta = np.where(hz * kz < 0.0, 0.5, 0.0)
    out[fin] = (0.5 * (ndtr(hf) + ndtr(kf)) - owens_t(hz, (kz - r * hz) / (hz * sq))
                - owens_t(kz, (hz - r * kz) / (kz * sq)) - beta)
    return np.clip(out, 0.0, 1.0)


def pbe_route(relation: PbeScanRelation, mu: Any, sd: Any, threshold_p: Any, *, scan_mean: Any = None,
              scan_sd: Any = None, scan_threshold: float = 0.0, shift: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``P(go)`` and the expected finds ``F`` of the PBE route, exactly, for a predicted PBE E_hull ``X ~ N(mu, sd)``.

    With the candidate's own SCAN prediction (``scan_mean``, ``scan_sd``; the planner passes it under
    ``pbe_route_joint``), ``F = P(Y <= scan_threshold, go)`` for the SCAN E_hull ``Y`` jointly Gaussian with ``X``:
    the two predictions' errors
    differ by the fidelity residual ``tau = 1 / c1`` (the relation's E_hull scale), so ``cov = (sd_s^2 + sd_p^2 -
    tau^2) / 2`` and ``F = Phi2((x* - mu) / sd, (thr - mu_s) / sd_s; rho)``. The route then finds at most what SCAN
    now would (``F <= P(Y <= thr)``, equal when "go" is certain), and a candidate the SCAN prediction rules out (on a
    SCAN hull that lies deeper than the PBE one) is not screened on the PBE prediction alone. Without it, ``F =
    E[q(X) 1{go}]`` (the relation alone, blind to the SCAN prediction).

    ``q`` (``Phi(c_hull - c_below x)`` on and below the hull, ``Phi(c0 - c1 x)`` above, ``c_hull >= c0``, both
    slopes >= 0) never rises with ``x``, so "SCAN after" (``q(X) >= threshold_p``, i.e. ``q(X) / c_s >= lambda``)
    means ``X <= x*``: always when ``threshold_p <= 0``, ``x* = (c0 - Phi^-1(threshold_p)) / c1 >= 0`` up to
    ``Phi(c0)``, ``x* = 0`` (on the hull only) when ``Phi(c0) < threshold_p <= Phi(c_hull)``, and above that ``x* =
    (c_hull - Phi^-1(threshold_p)) / c_below < 0`` (deep enough below the hull; never with ``c_below = 0``). Then
    ``P(go) = Phi((x* - mu) / sd)``, and ``F = E[q(X) 1{X <= x*}]`` is a sum of terms ``E[Phi(a + b Z) 1{Z <= h}]
    = Phi2(h, a / sqrt(1 + b^2); -b / sqrt(1 + b^2))`` with ``X = mu + sd Z``: ``a = c_hull - c_below mu``, ``b =
    -c_below sd`` up to ``min(0, x*)`` (``Phi(c_hull) P(X <= min(0, x*))`` when ``c_below = 0``), and ``a = c0 - c1
    mu``, ``b = -c1 sd`` between 0 and ``x*``.

    ``shift`` (per candidate; :meth:`PbeScanRelation.shift`) moves both intercepts of ``q``: the relation of that
    candidate's cell size.
    """
    from scipy.special import ndtri

    mu, sd, t, s = np.broadcast_arrays(np.asarray(mu, float), np.maximum(np.asarray(sd, float), 1e-12),
                                       np.asarray(threshold_p, float), np.asarray(shift, float))
    c1, cb = float(relation.c1), float(relation.c_below)
    c0, ch = float(relation.c0) + s, float(relation.c_hull) + s  # this candidate's intercepts
    p0 = ndtr(ch)  # q at the PBE hull (and, with c_below 0, below it)
    p_above = ndtr(c0)  # q just above it (= p0 without the hull step)
    with np.errstate(divide="ignore", invalid="ignore"):
        if c1 > 0:
            x_above = np.where(t <= 0.0, np.inf, (c0 - ndtri(np.clip(t, 1e-300, 1.0))) / c1)
        else:  # q constant above the hull
            x_above = np.where(t <= p_above, np.inf, -np.inf)
        x_above = np.where(np.isfinite(x_above), np.maximum(x_above, 0.0), x_above)
        # above p0 only a result deep enough below the hull clears t (never with c_below 0)
        x_below = (np.minimum((ch - ndtri(np.clip(t, 1e-300, 1.0))) / cb, 0.0) if cb > 0
                   else np.full(t.shape, -np.inf))
        x_star = np.where(t > p0, x_below, np.where(t > p_above, 0.0, x_above))
        h_star = (x_star - mu) / sd
        h0 = -mu / sd
    p_go = ndtr(h_star)
    if scan_mean is not None:
        mu_s, sd_s = (np.broadcast_to(np.asarray(v, float), mu.shape) for v in (scan_mean, scan_sd))
        sd_s = np.maximum(sd_s, 1e-12)
        tau = 1.0 / c1 if c1 > 0 else np.inf
        rho_xy = np.clip((sd_s ** 2 + sd ** 2 - tau ** 2) / (2.0 * sd_s * sd), 0.0, 0.995)
        return p_go, bivariate_normal_cdf(h_star, (scan_threshold - mu_s) / sd_s, rho_xy)
    h_low = np.minimum(h0, h_star)
    if cb > 0:  # X <= min(0, x*): q = Phi(c_hull - c_below X)
        b_low = -cb * sd
        norm_low = np.sqrt(1.0 + b_low * b_low)
        below = bivariate_normal_cdf(h_low, (ch - cb * mu) / norm_low, -b_low / norm_low)
    else:  # X <= 0 (and X <= x*): q = Phi(c_hull)
        below = p0 * ndtr(h_low)
    b = -c1 * sd
    norm = np.sqrt(1.0 + b * b)
    kk, rho = (c0 - c1 * mu) / norm, -b / norm
    above = np.where(h_star > h0, bivariate_normal_cdf(h_star, kk, rho) - bivariate_normal_cdf(h0, kk, rho), 0.0)
    return p_go, below + np.maximum(above, 0.0)


def _top_k_finds(p: np.ndarray, k: int) -> float:
    if k <= 0 or p.size == 0:
        return 0.0
    k = min(k, p.size)
    return float(np.sum(np.partition(p, p.size - k)[p.size - k:]))


def learning_values(fit: Any, n_scan: int, n_pbe: int, mean: np.ndarray, std: np.ndarray, *, picks_left: int,
                    threshold: float = 0.0, k: int = 10, draws: int = 16, seed: int = 0) -> dict[str, float]:
    """Expected extra finds per SCAN and per PBE calculation from the scaling law (see the module docstring)."""
    mae_now = float(fit.predict_mae(max(n_scan, 1), max(n_pbe, 1)))
    out = {"mae_now_ev_per_atom": mae_now, "picks_left": int(picks_left)}
    mean, std = np.asarray(mean, float), np.maximum(np.asarray(std, float), 1e-3)
    v_now = _top_k_finds(ndtr((threshold - mean) / std), picks_left)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((draws, mean.size))
    for name, n_s, n_p in (("scan", n_scan + k, n_pbe), ("pbe", n_scan, n_pbe + k)):
        mae = float(fit.predict_mae(max(n_s, 1), max(n_p, 1)))
        m = min(max(mae / mae_now, 1e-3), 1.0) if mae_now > 0 else 1.0
        out[f"mae_after_{name}_ev_per_atom"] = mae
        if m >= 1.0 or picks_left <= 0 or mean.size == 0:
            out[f"learning_value_{name}"] = 0.0
            continue
        # preposterior: a sharper model moves each mean by N(0, (1 - m^2) sigma^2) and leaves m sigma of doubt
        new_mean = mean + z * std * math.sqrt(1.0 - m * m)
        p_new = ndtr((threshold - new_mean) / (m * std))
        v_new = float(np.mean([_top_k_finds(row, picks_left) for row in p_new]))
        out[f"learning_value_{name}"] = max(v_new - v_now, 0.0) / k
    return out


def stop_rate_per_cpu_hour(cfg: Any, n_found: int, spent_cpu_hours: float) -> float:
    """The least expected finds per CPU-hour an option must promise to be bought: ``stop_fraction_of_yield`` of
    the campaign's yield so far (``n_found / spent_cpu_hours``), once it has ``stop_after_finds`` finds; else 0."""
    if cfg.stop_fraction_of_yield <= 0 or n_found < cfg.stop_after_finds or spent_cpu_hours <= 0:
        return 0.0
    return float(cfg.stop_fraction_of_yield * n_found / spent_cpu_hours)


def costs_differ(cost_pbe: Any) -> bool:
    """Whether the candidates' costs differ (by more than rounding): only then do the cost-blind share and the
    relation's cell-size term apply. The planner asks it too, before it reads any cell size."""
    log_cost = log_cost_ratio(cost_pbe)
    return bool(log_cost.size > 0 and float(np.ptp(log_cost)) > 1e-9)


def follow_up_fits(free: float, cost_pbe: float, cost_scan: float) -> bool:
    """Whether a PBE screen and the SCAN run it may lead to both fit in ``free`` (campaign money neither planned nor
    kept back): a screen whose follow-up cannot be paid can find nothing."""
    return free - cost_pbe >= cost_scan * (1.0 - 1e-9)


def follow_ups_kept_back(screens: Any) -> float:
    """CPU-hours kept back for the SCAN follow-ups of planned PBE screens, given as ``(c_s, P(go))`` pairs: their
    expected cost ``sum P(go) c_s``, and at least the dearest one's whole ``c_s``, so one "go" can always be paid."""
    screens = list(screens)
    if not screens:
        return 0.0
    return max(math.fsum(c * p for c, p in screens), max(c for c, _ in screens))


def plan_expected_value(r: Any, policy: Any, state: Any) -> dict[str, Any]:
    """Fill the round ``r`` (a :class:`screener.policies.decide._Round`) by expected finds per unit cost; returns the
    round's numbers (the per-item numbers go into each planned item)."""
    cfg = policy.expected_value
    thr = policy.acquisition.threshold_ev_per_atom
    ids = state.candidate_ids
    n = len(ids)
    if n == 0 or r.left <= 0:
        return {}
    floor = policy.acquisition.std_floor_ev_per_atom
    mu_s = r.mean_scan
    sd_s = np.maximum(np.asarray(state.scan_std_ev_per_atom, float), floor)
    mu_p = r.mean_pbe
    sd_p = np.maximum(np.asarray(state.pbe_std_ev_per_atom or state.scan_std_ev_per_atom, float), floor)
    # P(stable) as the campaign's own purchases turned out (both fidelities pooled: the causes of overrating, the
    # winner's curse and a hull without the pool's stable structures, are shared); identity without purchases
    outcome = {"pooled": OutcomeCalibration()}
    log_cost = log_cost_ratio(r.cost_pbe)  # each candidate's log(cost / median): cost classes, cost-blind share
    bought_log_cost = state.purchase_log_cost or [0.0] * len(state.purchase_outcomes)  # each purchase's, alike
    # the competitor survival: estimated (state.competitor_survival_scan), then either multiplied into P, or, fitted,
    # a term g ln S of the outcome map whose g the campaign's purchases set
    estimated = state.competitor_survival_scan is not None
    survival_estimate = (np.clip(np.asarray(state.competitor_survival_scan, float), 0.0, 1.0) if estimated
                         else np.ones(n))
    fitted_survival = estimated and cfg.competitor_survival_fitted and cfg.outcome_calibration
    log_survival = np.log(np.maximum(survival_estimate, 1e-3)) if fitted_survival else np.zeros(n)
    bought_log_survival = state.purchase_log_survival or [0.0] * len(state.purchase_outcomes)
    # the chemical-system offsets (with outcome_calibration_chemsys_sd): each purchase's system, each candidate's
    by_system = bool(cfg.outcome_calibration_chemsys_sd) and len(state.purchase_chemsys) == len(
        state.purchase_outcomes)
    bought_chemsys = state.purchase_chemsys if by_system else None
    chemsys_sd = cfg.outcome_calibration_chemsys_sd if by_system else None
    systems = list(state.chemsys) if by_system else None
    per_fidelity_systems = cfg.outcome_calibration_chemsys_per_fidelity
    if cfg.outcome_calibration:
        edges = cost_class_edges(log_cost, cfg.outcome_calibration_cost_classes)
        if cfg.outcome_calibration_per_fidelity:  # PBE and SCAN models overrate by different amounts
            outcome = fit_outcome_calibration_by_fidelity(state.purchase_outcomes, log_cost=bought_log_cost,
                                                          edges=edges,
                                                          prior_weight=cfg.outcome_calibration_prior_weight,
                                                          min_slope=cfg.outcome_calibration_min_slope,
                                                          log_survival=bought_log_survival,
                                                          fit_survival_slope=fitted_survival,
                                                          chemsys=bought_chemsys, chemsys_sd=chemsys_sd,
                                                          chemsys_per_fidelity=per_fidelity_systems)
        else:
            outcome = {"pooled": fit_outcome_calibration(
                [p for _, p, _ in state.purchase_outcomes], [y for _, _, y in state.purchase_outcomes],
                log_cost=bought_log_cost, edges=edges, prior_weight=cfg.outcome_calibration_prior_weight,
                min_slope=cfg.outcome_calibration_min_slope, log_survival=bought_log_survival,
                fit_survival_slope=fitted_survival, chemsys=bought_chemsys, chemsys_sd=chemsys_sd)}
        mu_s, sd_s = outcome.get("scan", outcome["pooled"]).calibrate_gaussian(mu_s, sd_s, log_cost, log_survival,
                                                                                systems)
        mu_p, sd_p = outcome.get("pbe", outcome["pooled"]).calibrate_gaussian(mu_p, sd_p, log_cost, log_survival,
                                                                               systems)
    gp: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    gp_numbers: dict[str, Any] = {}
    if cfg.uses_composition_gp:  # after the outcome map, which is fitted on the ensemble's own P
        gp, gp_numbers = composition_gp_predictions(  # empty: nothing to learn from yet (numbers say)
            policy, state, latent=cfg.composition_gp_latent_sigma)
        if gp and cfg.composition_gp_pool:
            # each purchase's ensemble P as the outcome map reads it today: the weight then rewards what the GP
            # adds to the calibrated ensemble, not the calibration the map already gives it
            bought_systems = bought_chemsys or [None] * len(state.purchase_outcomes)
            judged = [(float(outcome.get(f, outcome["pooled"]).calibrate_p(
                p, c, ls, None if cs is None else [cs]).ravel()[0]), g, y)
                      for (f, p, y), g, c, ls, cs in zip(state.purchase_outcomes, state.purchase_gp_p,
                                                         bought_log_cost, bought_log_survival, bought_systems)
                      if g is not None]
            n_judged = len(judged)
            if n_judged < cfg.composition_pool_min_purchases:  # too few outcomes to tell the experts apart
                judged = []
            outcomes = zip(*judged) if judged else ([], [], [])
            if cfg.composition_pool_stack:  # a probit regression on both experts (see composition_model)
                scale = gp_probit_scale(mu_s, sd_s, *gp["scan"], thr)
                coef, pool_numbers = fit_pool_stack(*outcomes, scale=scale,
                                                    prior_sd=cfg.composition_pool_stack_prior_sd)

                def pool(mean: Any, std: Any, fidelity: str) -> tuple[np.ndarray, np.ndarray]:
                    return stack_pool(mean, std, *gp[fidelity], coef, thr, scale)
            else:
                weight, pool_numbers = fit_pool_weight(*outcomes)

                def pool(mean: Any, std: Any, fidelity: str) -> tuple[np.ndarray, np.ndarray]:
                    return probit_pool(mean, std, *gp[fidelity], weight, thr)
            pool_numbers["composition_pool_n"] = n_judged
            gp_numbers.update(pool_numbers)
            mu_s, sd_s = pool(mu_s, sd_s, "scan")
            mu_p, sd_p = pool(mu_p, sd_p, "pbe")
        elif gp:
            mu_s, sd_s = precision_blend(mu_s, sd_s, *gp["scan"], cfg.composition_gp_weight)
            mu_p, sd_p = precision_blend(mu_p, sd_p, *gp["pbe"], cfg.composition_gp_weight)
    differ = costs_differ(r.cost_pbe)
    # the relation's cell-size term (where costs differ: cell size then also sets what a screen saves)
    size_term = bool(cfg.pbe_scan_size_slope_sd) and differ and state.log_sites is not None
    relation = relation_from_config(cfg, state.pbe_scan_pairs, thr, state.n_known_pbe_scan_pairs,
                                    pair_log_sites=state.pbe_scan_pair_log_sites if size_term else None)
    log_sites = np.asarray(state.log_sites, float) if size_term else np.zeros(n)
    q_shift = np.broadcast_to(relation.shift(log_sites), (n,))  # each candidate's relation: its cell size
    p_model = ndtr((thr - mu_s) / sd_s)
    p_raw = ndtr((thr - r.mean_scan) / np.maximum(np.asarray(state.scan_std_ev_per_atom, float), floor))
    pbe_result = np.array([state.pbe_result_e_hull_ev_per_atom.get(c, np.nan) for c in ids], dtype=float)
    has_pbe = np.isfinite(pbe_result)
    q_pbe = np.where(has_pbe, relation.p_scan_stable(np.where(has_pbe, pbe_result, 0.0), log_sites), np.nan)
    hull_map_numbers: dict[str, Any] = {}
    x_scan_hull = np.full(n, np.nan)
    if cfg.scan_hull_map:  # the PBE results read on today's SCAN hull too (screener.policies.scan_hull_map)
        x_scan_hull = np.array([state.pbe_result_scan_hull_e_hull_ev_per_atom.get(c, np.nan) for c in ids], float)
        pairs = np.array(state.scan_hull_map_pairs, dtype=float).reshape(-1, 3)
        hull_map = fit_scan_hull_map(relation.p_scan_stable(pairs[:, 0]), pairs[:, 1], pairs[:, 2] > 0.5,
                                     prior_sd_k=cfg.scan_hull_map_prior_sd_k)
        waiting = has_pbe & r.open_scan & np.isfinite(x_scan_hull)
        if waiting.any():
            # measured from the screened candidates waiting for a follow-up: the map reorders them and leaves
            # their mean where the relation put it (lowering them all sent the budget to more screens)
            hull_map = hull_map.model_copy(update={"x_ref_ev_per_atom": float(np.mean(x_scan_hull[waiting]))})
        q_pbe = np.where(has_pbe, hull_map.apply(q_pbe, x_scan_hull), np.nan)
        hull_map_numbers = hull_map.numbers()
    # a find must also survive the pool's uncomputed candidates (a lower polymorph, a compound cutting the hull)
    survival = np.ones(n) if fitted_survival else survival_estimate  # fitted: already in the outcome map
    p_model, q_pbe = p_model * survival, q_pbe * survival
    p_scan = np.where(has_pbe, q_pbe, p_model)
    if cfg.scan_now_at_most_pbe_view:  # the PBE view: the PBE route's finds were SCAN always to follow the screen
        pbe_view = pbe_route(relation, mu_p, sd_p, np.zeros(n), shift=q_shift)[1] * survival
        p_scan = np.where(has_pbe, p_scan, np.minimum(p_scan, pbe_view))
    c_s, c_p = r.cost_scan, r.cost_pbe

    # lambda: finds per unit of the last SCAN-now pick the remaining campaign budget reaches (best rates first):
    # the margin a later SCAN must beat. 0 when the budget reaches every open pick (nothing is crowded out).
    open_s = r.open_scan & ~r.planned
    rate_s0 = np.where(open_s, p_scan / c_s, -np.inf)
    valid = np.argsort(-rate_s0, kind="stable")[: int(open_s.sum())]
    reach = int(np.searchsorted(np.cumsum(c_s[valid]), state.budget_cpu_hours, side="right"))  # picks paid for
    lam = float(rate_s0[valid[max(reach, 1) - 1]]) if reach < len(valid) else 0.0
    # the stop rule: nothing is bought below a fraction of the campaign's yield so far (finds per unit spent); it
    # is also the least a SCAN follow-up of a PBE screen must promise
    stop_rate = stop_rate_per_cpu_hour(cfg, state.n_found, state.spent_cpu_hours)
    lam = max(lam, stop_rate)

    # learning values from the scaling law (N_p includes the pre-training set: state.n_pbe)
    picks_left = int(max(state.budget_cpu_hours - r.budget, 0.0) / float(np.median(c_s[open_s]))) if open_s.any() \
        else 0
    # computed and recorded either way (what the scaling law says a calculation teaches); added to the options'
    # rates only with learning_value on (off by default: it bought wild SCAN runs, docs/policy-benchmarks.md)
    lv = learning_values(r.fit(), max(state.n_scan, cfg.learning_value_min_n_scan), state.n_pbe, mu_s[open_s],
                         sd_s[open_s], picks_left=picks_left, threshold=thr, k=max(policy.batch_size, 1),
                         draws=cfg.learning_value_draws, seed=state.round_index)
    if not state.pbe_reaches_scan_model:  # the SCAN model no longer learns from PBE results
        lv["learning_value_pbe"] = 0.0
    lv["learning_value_added"] = bool(cfg.learning_value)
    l_s, l_p = ((float(lv["learning_value_scan"]), float(lv["learning_value_pbe"])) if cfg.learning_value
                else (0.0, 0.0))

    # PBE now, SCAN later if the result clears lambda (q(X) / c_s >= lambda): exact over the PBE outcome X
    # (a predicted X below the hull is computed as on it: E_hull 0)
    # after the screen, SCAN goes ahead when q(x) S / c_s >= lambda: the route's threshold on q is lambda c_s / S
    p_go, finds_pbe = pbe_route(relation, mu_p, sd_p, lam * c_s / np.maximum(survival, 1e-9),
                                scan_mean=mu_s if cfg.pbe_route_joint else None, scan_sd=sd_s,
                                scan_threshold=thr, shift=q_shift)
    finds_pbe = finds_pbe * survival
    cost_pbe_route = c_p + c_s * p_go
    rate_pbe = (finds_pbe + l_p + p_go * l_s) / cost_pbe_route
    rate_scan = (p_scan + l_s) / c_s

    def item_numbers(i: int) -> dict[str, Any]:
        out = {"p_scan_stable": float(p_scan[i]), "p_scan_source": "pbe result" if has_pbe[i] else "model",
               "p_scan_model_raw": float(p_raw[i]),
               # None: not estimated (survival off), so a report never shows an estimate of 1 that was not made
               "competitor_survival": float(survival_estimate[i]) if estimated else None,
               "q_pbe_route_finds": float(finds_pbe[i]), "p_go_scan_after_pbe": float(p_go[i]),
               "rate_scan_per_cpu_hour": float(rate_scan[i]), "rate_pbe_per_cpu_hour": float(rate_pbe[i]),
               "learning_value_scan": float(lv["learning_value_scan"]),
               "learning_value_pbe": float(lv["learning_value_pbe"]), "learning_value_added": bool(cfg.learning_value),
               "lambda_per_cpu_hour": lam, "stop_rate_per_cpu_hour": stop_rate,
               "cost_scan_cpu_hours": float(c_s[i]), "cost_pbe_cpu_hours": float(c_p[i])}
        if has_pbe[i]:
            out["pbe_e_hull_ev_per_atom"] = float(pbe_result[i])
            if np.isfinite(x_scan_hull[i]):
                out["scan_hull_mapped_e_hull_ev_per_atom"] = float(x_scan_hull[i])
        if size_term:
            out["pbe_scan_size_shift"] = float(q_shift[i])
        if by_system and cfg.outcome_calibration:  # the probit offsets of the candidate's chemical system
            for f in ("pbe", "scan"):
                out[f"outcome_chemsys_offset_{f}"] = float(np.ravel(
                    outcome.get(f, outcome["pooled"]).chemsys_offset([systems[i]]))[0])
        if gp:
            out["composition_gp_scan_mean_ev_per_atom"], out["composition_gp_scan_std_ev_per_atom"] = (
                float(gp["scan"][0][i]), float(gp["scan"][1][i]))
            out["composition_gp_pbe_mean_ev_per_atom"], out["composition_gp_pbe_std_ev_per_atom"] = (
                float(gp["pbe"][0][i]), float(gp["pbe"][1][i]))
        return out

    def tag(before: int, i: int, numbers: dict[str, Any]) -> bool:
        mine = [item for item in r.items[before:] if item.kind == "candidate" and item.job_id == ids[i]]
        for item in mine:
            item.numbers = numbers
        return bool(mine)

    # the cost-blind share (only where costs differ): SCAN runs in the order of scan-only (the model's own P, before
    # the corrections), first, until their spend reaches `share` of everything spent (this round's budget counted as
    # spent). The per-unit ranking below trusts the corrected P across cell sizes and polymorphs; where the model's
    # error follows cell size (issue-12 world: cells of 13-20 sites rated 3x too low) it never reaches the dear
    # cells, and their outcomes never reach the cost-class offsets.
    share = cfg.cost_blind_share if differ else cfg.cost_blind_share_equal_costs
    blind = {"ev_cost_blind_share": share}
    # the SCAN follow-ups of this round's screens, kept back from the campaign's remaining budget (near the end of a
    # campaign, screens were otherwise bought whose follow-ups the rest of the round spent)
    screens: list[tuple[float, float]] = []
    reserved = 0.0
    if share > 0:
        allowance = min(max(share * (state.spent_cpu_hours + r.budget) - state.cost_blind_spent_cpu_hours, 0.0),
                        r.left)
        planned_blind = 0.0
        c_median = float(np.median(c_s[open_s])) if open_s.any() else 1.0
        share_screens = bool(cfg.cost_blind_share_screens)
        n_blind_screens = 0
        # the order ignores cost: the model's own P, and (with share_screens) a screened candidate's P from its PBE
        # result (the per-unit ranking's lambda, set by cheap cells, would never let a dear cell's screen go on)
        key = np.where(has_pbe, q_pbe, p_raw) if share_screens else p_raw
        if share_screens:  # a share screen goes on to SCAN when its result leaves the odds at least where they were
            go_share, finds_share = pbe_route(relation, mu_p, sd_p, p_scan / np.maximum(survival, 1e-9),
                                              shift=q_shift)
            rate_pbe_share = finds_share * survival / (c_p + c_s * go_share)
        for i in sorted(np.flatnonzero(open_s & (key > 0)), key=lambda j: (-key[j], j)):
            if r.planned[i]:
                continue
            if key[i] / c_median < stop_rate:  # valued at the median cost (the share ignores cost): the rest too
                break
            # campaign money not yet planned or kept back for the follow-ups of this round's screens (as below)
            free = max(state.budget_cpu_hours - r.spent - reserved, 0.0)
            # which candidate ignores cost; how (with share_screens) does not: a screen where it earns more per unit,
            # and only if the campaign can still pay the SCAN run it may lead to (else it would find nothing)
            screen = (share_screens and not has_pbe[i] and bool(r.open_pbe[i])
                      and rate_pbe_share[i] > p_scan[i] / c_s[i] and follow_up_fits(free, c_p[i], c_s[i]))
            room = min(allowance - planned_blind, free)
            if (c_p[i] if screen else c_s[i]) > room:  # waits for the allowance to grow
                break
            before = len(r.items)
            numbers = {**item_numbers(i), "route": "cost_blind"}
            if share_screens and not has_pbe[i]:
                numbers.update(p_go_share_screen=float(go_share[i]), rate_pbe_share_screen=float(rate_pbe_share[i]))
            if screen:
                r.add_pbe([i], room,
                          f"EV cost-blind share: PBE screen first (chosen by the model's P(SCAN-stable)="
                          f"{p_raw[i]:.2f} alone; screening earns {rate_pbe_share[i]:.3g} finds/CPU-h vs SCAN now "
                          f"{p_scan[i] / c_s[i]:.3g})")
            elif has_pbe[i] and share_screens:
                r.add_scan([i], room,
                           f"EV cost-blind share: SCAN after its PBE screen, P(SCAN-stable)={q_pbe[i]:.2f} from the "
                           "PBE result, cost ignored")
            else:
                r.add_scan([i], room,
                           f"EV cost-blind share: SCAN by the model's P(SCAN-stable)={p_raw[i]:.2f} alone, cost "
                           "ignored")
            if tag(before, i, numbers):
                for item in r.items[before:]:
                    # its competing phases were bought for it: they count in the share's spend in later rounds
                    # too (the planner sums the accepted decisions whose route says so)
                    if item.kind == "competing_phase":
                        item.numbers = {"route": "cost_blind"}
                planned_blind += math.fsum(item.cost_cpu_hours for item in r.items[before:])
                if screen:
                    n_blind_screens += 1
                    if cfg.reserve_follow_ups:
                        screens.append((float(c_s[i]), float(go_share[i])))
                        reserved = follow_ups_kept_back(screens)
        blind["ev_cost_blind_n_pbe_screens"] = n_blind_screens
        blind.update({"ev_cost_blind_allowance_cpu_hours": allowance, "ev_cost_blind_planned_cpu_hours": planned_blind,
                      "ev_cost_blind_spent_before_cpu_hours": state.cost_blind_spent_cpu_hours,
                      "ev_spent_before_cpu_hours": state.spent_cpu_hours})

    open_p = r.open_pbe & ~r.planned
    open_s = open_s & ~r.planned
    # candidates in line by their best option's rate (a heap; ties by index): an option that cannot be planned (its
    # chemical system's diversity cap for that fidelity is reached this round, or it does not fit the round) puts
    # the candidate's other option back in line at that option's own rate. Buying the other option at once instead
    # bought SCAN runs of 0.002-0.008 finds per unit ahead of screens rated twice that, whenever the PBE cap of a
    # crowded chemical system was reached (Na-Ti-V-Cr-Cu-O: 30 of 84 direct SCAN runs, 2 truly stable).
    line: list[tuple[float, int, str]] = []
    n_below_stop = 0  # candidates worth something, but less than the stop rate: the stop rule's doing
    for i in np.flatnonzero(open_s):
        best, fid = rate_scan[i], "scan"
        if open_p[i] and rate_pbe[i] > best:
            best, fid = rate_pbe[i], "pbe"
        if best > 0 and best >= stop_rate:
            line.append((-float(best), int(i), fid))
        elif best > 0:
            n_below_stop += 1
    n_in_line = len(line)
    heapq.heapify(line)
    tried: set[tuple[int, str]] = set()
    n_choice = {"scan": 0, "pbe": 0}

    def other_option(i: int, fid: str) -> None:
        other = "pbe" if fid == "scan" else "scan"
        rate = rate_pbe[i] if other == "pbe" else rate_scan[i]
        if open_p[i] and (i, other) not in tried and rate > 0 and rate >= stop_rate:
            heapq.heappush(line, (-float(rate), i, other))

    while line:
        neg_rate, i, fid = heapq.heappop(line)
        if r.planned[i]:  # planned meanwhile (as another candidate's competing phase, or its other option)
            continue
        free = state.budget_cpu_hours - r.spent - reserved  # campaign money not yet planned or kept back
        room = min(r.left, max(free, 0.0))  # = r.left without a reserve (a round never exceeds the campaign)
        if room < min(r.min_cost_pbe, r.min_cost_scan):
            break
        # a PBE screen finds nothing when the campaign cannot afford the SCAN run it would lead to (e.g. the last
        # units of the budget): then it is worth only its learning value, and not bought for nothing
        if open_p[i] and not follow_up_fits(free, c_p[i], c_s[i]) and rate_pbe[i] > l_p / c_p[i]:
            rate_pbe[i] = l_p / c_p[i]
            if fid == "pbe":  # its rate fell: back in line at the new rate, beside its SCAN option
                if rate_pbe[i] > 0 and rate_pbe[i] >= stop_rate:
                    heapq.heappush(line, (-float(rate_pbe[i]), i, "pbe"))
                other_option(i, "pbe")
                continue
        tried.add((i, fid))
        before = len(r.items)
        numbers = item_numbers(i)
        if fid == "scan":
            why = (f"EV: SCAN now, P(SCAN-stable)={p_scan[i]:.2f} ({numbers['p_scan_source']}), "
                   f"{rate_scan[i]:.3g} finds/CPU-h")
            r.add_scan([i], room, why)
        else:
            why = (f"EV: PBE screen, SCAN after if P>= {lam * c_s[i]:.2f} (P(go)={p_go[i]:.2f}), "
                   f"{rate_pbe[i]:.3g} finds/CPU-h vs SCAN now {rate_scan[i]:.3g}")
            r.add_pbe([i], room, why)
        if len(r.items) == before:  # capped or too dear for what is left: the other option waits its turn
            other_option(i, fid)
            continue
        if fid == "pbe" and cfg.reserve_follow_ups:
            screens.append((float(c_s[i]), float(p_go[i])))
            reserved = follow_ups_kept_back(screens)  # only a new screen changes it
        if tag(before, i, numbers):
            n_choice[fid] += 1
    return {**blind, "ev_lambda_per_cpu_hour": lam, "ev_n_scan_chosen": n_choice["scan"],
            "ev_stop_rate_per_cpu_hour": stop_rate, "ev_stop_fraction_of_yield": cfg.stop_fraction_of_yield,
            "ev_n_found": state.n_found, "ev_n_in_line": n_in_line, "ev_n_below_stop_rate": n_below_stop,
            "ev_spent_cpu_hours": state.spent_cpu_hours,
            "ev_n_pbe_chosen": n_choice["pbe"], "ev_picks_left": picks_left, **{f"ev_{k}": v for k, v in lv.items()},
            **relation.numbers(),
            **outcome["pooled"].numbers(),
            **{k: v for f in ("pbe", "scan") if f in outcome
               for k, v in outcome[f].numbers(f"outcome_calibration_{f}_").items()},
            **state.competitor_numbers, **gp_numbers, **hull_map_numbers,
            "pbe_scan_relation_source": relation.source}
