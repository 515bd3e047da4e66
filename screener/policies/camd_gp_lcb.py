"""Peer policy ``camd-gp-lcb``: TRI's CAMD ``GPMultiAgent`` (GP lower confidence bound, exploration sent to PBE).

Follows ``camd/agent/multi_fidelity.py::GPMultiAgent`` (CAMD, TRI-AMDD/CAMD at 23128c5; Palizhati et al.,
"Multi-fidelity sequential learning for accelerated materials discovery", ChemRxiv 2021). Its selection rule:

1. a Gaussian process learns the target on composition features plus a one-hot fidelity column per fidelity, from
   the seed data of both fidelities (features standard-scaled on the training rows); it predicts every open
   (candidate, fidelity) row;
2. the open high-fidelity (SCAN) rows are ranked by ``LCB = mean - alpha * std`` (lower is better);
3. in that order, until ``N`` picks (CAMD's ``total_budget``): a candidate whose GP std is at or below the
   ``uncertainty_percentile``-th percentile of the SCAN rows' stds, or which has no open low-fidelity row of the same
   composition, is exploited with SCAN; otherwise the agent *hallucinates* those low-fidelity rows (adds them to the
   training data with the GP's own predictions as labels, after Desautels et al.'s batch GP-UCB) and re-ranks: if the
   candidate's rank falls by more than ``rank_threshold``, its uncertainty was the reason it ranked high, so the
   low-fidelity rows are bought (exploration, cheap); else it is computed with SCAN.

Defaults are CAMD's: ``alpha = 1``, ``rank_threshold = 10``, ``uncertainty_percentile = 5``, ``gp_max_iter = 200``.

What differs from CAMD, and why:

- Features: :func:`~screener.policies.camd_features.composition_features`, a Magpie-style set from pymatgen's element
  data (CAMD: matminer's 132 Magpie columns; matminer is not a dependency). As in CAMD the model sees compositions
  only, so polymorphs share one prediction; ties go to the CGAT ensemble's lower predicted SCAN E_hull.
- Target: E_hull in the campaign's current hull of that fidelity, lower is better (CAMD's ``|target - y|`` for a band
  gap of 1.8 eV; for stability CAMD's own agents rank the LCB of the energy ascending, as here).
- Seed data: every structure with a computed E_hull (the known set's and the campaign's results, ``seed_rows``),
  averaged per (composition, fidelity) since composition is all the GP sees, and a seeded subsample of at most
  ``max_seed_rows`` of those (an exact GP is O(n^3) per round).
- GP: the GPy model CAMD uses (``GPRegression``: zero mean, one RBF kernel with variance and length scale, Gaussian
  noise, all starting at 1, maximum likelihood with at most ``gp_max_iter`` optimiser steps) written here in
  numpy/scipy (GPy is not a dependency; ``pip install camd`` needs GPy and matplotlib built from source). The
  hallucination conditions the fitted GP on the pseudo-observations with its hyperparameters kept (CAMD refits them):
  the mean stays, the variances shrink; a rank-``k`` update instead of a refit per candidate.
- ``N`` is the round's calculation cap (``--batch``); picks also stop when the round budget (CPU-hours) is spent, and
  each SCAN pick carries the competing phases its SCAN hull needs. CAMD counts hypotheses, with no costs or hulls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

__all__ = ["CompositionGP", "ExactGP", "TooFewSeedRows", "fit_composition_gp", "plan_gp_lcb"]

logger = logging.getLogger(__name__)

_FIDELITIES = ("pbe", "scan")  # low to high, as CAMD's ``fidelities`` tuple
_JITTER = 1e-8


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


class ExactGP:
    """Zero-mean GP with one isotropic RBF kernel and Gaussian noise, fitted by maximum likelihood (GPy's defaults).

    Parameters
    ----------
    x : numpy.ndarray
        Training inputs, shape (n, d).
    y : numpy.ndarray
        Training targets, shape (n,).
    max_iter : int
        L-BFGS-B iterations at most, from variance = length scale = noise variance = 1.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, max_iter: int = 200) -> None:
        from scipy.optimize import minimize

        self.x, self.y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        self._d2 = _sqdist(self.x, self.x)
        res = minimize(self._nll, np.zeros(3), jac=True, method="L-BFGS-B", bounds=[(-12.0, 8.0)] * 3,
                       options={"maxiter": int(max_iter)})
        self.variance, self.length_scale, self.noise = (float(v) for v in np.exp(res.x))
        k = self._k(self._d2) + (self.noise + _JITTER) * np.eye(len(self.y))
        self._chol = cholesky(k, lower=True)
        self._alpha = cho_solve((self._chol, True), self.y)

    def _k(self, d2: np.ndarray) -> np.ndarray:
        return self.variance * np.exp(-0.5 * d2 / self.length_scale**2)

    def _nll(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        var, ls, noise = np.exp(theta)
        n = len(self.y)
        kf = var * np.exp(-0.5 * self._d2 / ls**2)
        try:
            chol = cholesky(kf + (noise + _JITTER) * np.eye(n), lower=True)
        except np.linalg.LinAlgError:
            return 1e25, np.zeros(3)
        alpha = cho_solve((chol, True), self.y)
        nll = 0.5 * self.y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * n * np.log(2 * np.pi)
        w = np.outer(alpha, alpha) - cho_solve((chol, True), np.eye(n))
        grad = -0.5 * np.array([(w * kf).sum(), (w * kf * self._d2 / ls**2).sum(), noise * np.trace(w)])
        return float(nll), grad

    def posterior(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, predictive variance (noise included, as GPy's ``predict``) and ``L^-1 k(X, xs)`` of test rows."""
        k = self._k(_sqdist(self.x, xs))
        v = solve_triangular(self._chol, k, lower=True)
        mean = k.T @ self._alpha
        var = np.maximum(self.variance - (v * v).sum(0), 0.0) + self.noise
        return mean, var, v

    def hallucinated_variance(self, xs: np.ndarray, vs: np.ndarray, var_s: np.ndarray, xh: np.ndarray,
                              vh: np.ndarray) -> np.ndarray:
        """Predictive variance of rows ``xs`` once rows ``xh`` are observed at the posterior mean (which leaves the
        mean unchanged): ``var - S_sh (S_hh + noise I)^-1 S_hs`` with the current posterior covariances ``S``."""
        s_sh = self._k(_sqdist(xs, xh)) - vs.T @ vh
        s_hh = self._k(_sqdist(xh, xh)) - vh.T @ vh + (self.noise + _JITTER) * np.eye(len(xh))
        return np.maximum(var_s - (s_sh * np.linalg.solve(s_hh, s_sh.T).T).sum(1), self.noise)


def _rows(features: np.ndarray, fidelity: str) -> np.ndarray:
    onehot = np.zeros((len(features), len(_FIDELITIES)))
    onehot[:, _FIDELITIES.index(fidelity)] = 1.0
    return np.hstack([features, onehot])


def _seed(state: Any, policy: Any) -> tuple[list[str], list[str], np.ndarray]:
    """Seed rows averaged per (formula, fidelity); every (formula, fidelity) the campaign computed is kept, the
    known set's others are a seeded subsample so that there are at most ``max_seed_rows`` (unless the campaign's own
    exceed it)."""
    from pymatgen.core import Composition

    groups: dict[tuple[str, str], list[float]] = {}
    own: set[tuple[str, str]] = set()
    for i, (formula, fidelity, e_hull) in enumerate(state.seed_rows):
        if fidelity in _FIDELITIES and np.isfinite(e_hull):
            key = (Composition(formula).reduced_formula, fidelity)
            groups.setdefault(key, []).append(float(e_hull))
            if i < state.n_campaign_seed_rows:
                own.add(key)
    keys = sorted(groups)
    if len(keys) > policy.camd.max_seed_rows:
        others = [k for k in keys if k not in own]
        n_others = max(policy.camd.max_seed_rows - len(own), 0)
        rng = np.random.default_rng([policy.seed, state.round_index])
        kept = {others[i] for i in rng.choice(len(others), min(n_others, len(others)), replace=False)}
        keys = [k for k in keys if k in own or k in kept]
    return ([k[0] for k in keys], [k[1] for k in keys], np.array([np.mean(groups[k]) for k in keys], dtype=float))


@dataclass
class CompositionGP:
    """CAMD's Gaussian process fitted on a campaign's seed rows, ready to predict its candidates at either fidelity.

    Attributes
    ----------
    gp : ExactGP
        The fitted process.
    formulas : list of str
        The candidates' reduced formulas, in ``state.candidate_ids`` order.
    n_train : int
        Seed rows it learned from, one per (composition, fidelity).
    """

    gp: ExactGP
    formulas: list[str]
    n_train: int
    features: np.ndarray  # the candidates' composition features
    scale_mean: np.ndarray  # scikit-learn's StandardScaler (CAMD's default preprocessor), fitted on the seed rows
    scale_std: np.ndarray

    def rows(self, candidates: np.ndarray, fidelity: str) -> np.ndarray:
        """Scaled GP inputs of the ``candidates`` (indices) at ``fidelity``."""
        return (_rows(self.features[candidates], fidelity) - self.scale_mean) / self.scale_std

    def posterior(self, candidates: np.ndarray, fidelity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`ExactGP.posterior` of the ``candidates`` at ``fidelity``."""
        return self.gp.posterior(self.rows(candidates, fidelity))


class TooFewSeedRows(ValueError):
    """Fewer than two (composition, fidelity) rows to fit the GP on; ``n_rows`` says how many."""

    def __init__(self, n_rows: int) -> None:
        super().__init__(f"{n_rows} computed structure(s) to learn from (2 needed)")
        self.n_rows = n_rows


def fit_composition_gp(state: Any, policy: Any) -> CompositionGP:
    """Fit CAMD's GP on ``state.seed_rows`` (see :func:`_seed`) for the candidates ``state.formulas``.

    Raises
    ------
    TooFewSeedRows
        Fewer than two seed rows; each caller says what that means for it.
    """
    from pymatgen.core import Composition

    from screener.policies.camd_features import composition_features

    seed_formulas, seed_fidelities, seed_y = _seed(state, policy)
    if len(seed_y) < 2:
        raise TooFewSeedRows(len(seed_y))
    formulas = [Composition(f).reduced_formula for f in state.formulas]
    seed_feats = composition_features(seed_formulas)
    x_train = np.vstack([_rows(seed_feats[[i]], f) for i, f in enumerate(seed_fidelities)])
    mean, std = x_train.mean(0), x_train.std(0)
    # scikit-learn's StandardScaler (CAMD's preprocessor) centres a constant column and leaves its scale at 1; it
    # calls a column constant when its variance is within rounding of zero (sklearn.preprocessing._data.
    # _is_constant_feature), else a column equal up to rounding would be scaled up to +-1 noise
    eps, n = np.finfo(float).eps, len(x_train)
    std[std**2 <= n * eps * std**2 + (n * mean * eps) ** 2] = 1.0
    gp = ExactGP((x_train - mean) / std, seed_y, max_iter=policy.camd.gp_max_iter)
    return CompositionGP(gp=gp, formulas=formulas, n_train=len(seed_y), features=composition_features(formulas),
                         scale_mean=mean, scale_std=std)


def plan_gp_lcb(r: Any, policy: Any, state: Any) -> dict[str, Any]:
    """Plan one round of ``camd-gp-lcb`` into the round book-keeping ``r`` (see the module docstring).

    Parameters
    ----------
    r : screener.policies.decide._Round
        The round (costs, open masks, planned items); items are appended to it.
    policy : PolicyConfig
        Its ``camd`` block holds the agent's parameters.
    state : PolicyState
        Needs ``formulas`` (per candidate) and ``seed_rows`` (computed E_hull of known and campaign structures).

    Returns
    -------
    dict
        Numbers for the ledger (GP hyperparameters, the uncertainty threshold, the pick counts).

    Raises
    ------
    InvalidInputError
        No formulas, or fewer than two seed rows to train the GP on.
    """
    from screener.errors import InvalidInputError

    cfg = policy.camd
    if not state.formulas:
        raise InvalidInputError("the camd-gp-lcb policy needs the candidates' formulas (state.formulas)")
    try:
        fitted = fit_composition_gp(state, policy)
    except TooFewSeedRows:
        raise InvalidInputError("the camd-gp-lcb policy needs at least 2 computed structures (state.seed_rows) "
                                "to train its Gaussian process") from None
    gp, formulas = fitted.gp, fitted.formulas
    n_total = policy.max_calculations_per_round or policy.batch_size
    ids = state.candidate_ids
    hf = np.flatnonzero(r.open_scan)
    lf = np.flatnonzero(r.open_pbe)
    x_hf, x_lf = fitted.rows(hf, "scan"), fitted.rows(lf, "pbe")
    mean_hf, var_hf, v_hf = gp.posterior(x_hf)
    mean_lf, _, v_lf = gp.posterior(x_lf) if len(lf) else (np.zeros(0), np.zeros(0), np.zeros((fitted.n_train, 0)))
    std_hf = np.sqrt(var_hf)
    lcb = mean_hf - cfg.alpha * std_hf
    tie = r.mean_scan[hf]  # polymorphs share the GP's prediction: the CGAT ensemble breaks the tie
    order = np.lexsort((hf, tie, lcb))  # positions in hf, best first
    rank_of = np.empty(len(hf), dtype=int)
    rank_of[order] = np.arange(len(hf))
    unc_threshold = float(np.percentile(std_hf, cfg.uncertainty_percentile)) if len(hf) else 0.0
    lf_by_formula: dict[str, list[int]] = {}
    for pos, i in enumerate(lf):
        lf_by_formula.setdefault(formulas[i], []).append(pos)
    counts = {"scan": 0, "pbe": 0, "explored": 0, "hallucinated": 0}

    def numbers(pos: int, **extra: Any) -> dict[str, Any]:
        return {"gp_mean_ev_per_atom": float(mean_hf[pos]), "gp_std_ev_per_atom": float(std_hf[pos]),
                "gp_lcb_ev_per_atom": float(lcb[pos]), "camd_rank": int(rank_of[pos]), **extra}

    for pos in order:
        if counts["scan"] + counts["pbe"] >= n_total or r.left <= 0:
            break
        i = int(hf[pos])
        if r.planned[i]:
            continue
        lows = [p for p in lf_by_formula.get(formulas[i], []) if not r.planned[lf[p]]]
        extra: dict[str, Any] = {}
        explore = False
        if std_hf[pos] > unc_threshold and lows:
            counts["hallucinated"] += 1
            var_new = gp.hallucinated_variance(x_hf, v_hf, var_hf, x_lf[lows], v_lf[:, lows])
            lcb_new = mean_hf - cfg.alpha * np.sqrt(var_new)
            new_rank = int(np.flatnonzero(np.lexsort((hf, tie, lcb_new)) == pos)[0])
            extra = {"camd_rank_after_hallucination": new_rank}
            explore = new_rank - int(rank_of[pos]) > cfg.rank_threshold
        if not explore:
            before = len(r.items)
            why = "CAMD GP-LCB: SCAN (" + ("low uncertainty" if std_hf[pos] <= unc_threshold else
                                          "no open PBE row" if not lows else "rank holds after hallucination") + ")"
            if r.add_scan([i], r.left, why) > 0:
                for item in r.items[before:]:
                    if item.kind == "candidate":
                        item.numbers = numbers(pos, camd_role="high fidelity", **extra)
                counts["scan"] += 1
            continue
        counts["explored"] += 1
        for p in lows:  # CAMD buys every low-fidelity row of the composition
            if counts["scan"] + counts["pbe"] >= n_total:
                break
            before = len(r.items)
            if r.add_pbe([int(lf[p])], r.left, f"CAMD GP-LCB: explore {ids[i]} with PBE") > 0:
                for item in r.items[before:]:
                    item.numbers = numbers(pos, camd_role="low fidelity", camd_for=ids[i],
                                           gp_mean_pbe_ev_per_atom=float(mean_lf[p]), **extra)
                counts["pbe"] += 1
    return {"camd_n_total": n_total, "gp_variance": gp.variance, "gp_length_scale": gp.length_scale,
            "gp_noise_variance": gp.noise, "gp_n_train": fitted.n_train, "camd_uncertainty_threshold_ev_per_atom":
            unc_threshold, "camd_scan_picks": counts["scan"], "camd_pbe_picks": counts["pbe"],
            "camd_explored": counts["explored"], "camd_hallucinated": counts["hallucinated"]}
