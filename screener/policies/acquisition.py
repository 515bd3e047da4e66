"""Acquisition functions (which candidates) and diverse batch selection.

All functions take predicted energies above the hull (mean and ensemble std, eV/atom) as arrays and return arrays; a
*score* is always "higher is better". :func:`select_batch` turns scores into an ordered batch with a cap on how many
members one chemical system may take (greedy in score order: the best candidate of each system comes first, and a
system that has reached its cap is skipped until the batch is full or the candidates run out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screener.errors import InvalidInputError

__all__ = [
    "probability_stable",
    "lower_confidence_bound",
    "expected_improvement",
    "acquisition_scores",
    "normalize_chemsys",
    "select_batch",
    "STD_FLOOR_EV_PER_ATOM",
]

#: Smallest ensemble std used by the Gaussian acquisition functions (eV/atom); an ensemble that agrees perfectly
#: is still wrong by about the DFT noise.
STD_FLOOR_EV_PER_ATOM = 1e-3

AcquisitionKind = Literal["probability-stable", "lcb", "expected-improvement"]


def _normal_cdf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import ndtr  # vectorised Phi; scipy is imported only when scores are computed

    return np.asarray(ndtr(x), dtype=float)


def _mean_std(mean: ArrayLike, std: ArrayLike, std_floor: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mu = np.asarray(mean, dtype=float)
    sigma = np.asarray(std, dtype=float)
    if np.any(np.isnan(mu)) or np.any(np.isnan(sigma)):
        raise InvalidInputError("predicted mean and std must not contain NaN")
    if np.any(sigma < 0):
        raise InvalidInputError("predicted std must be >= 0")
    return mu, np.maximum(sigma, std_floor)


def probability_stable(
    mean: ArrayLike,
    std: ArrayLike,
    threshold_ev_per_atom: float = 0.0,
    *,
    std_floor_ev_per_atom: float = STD_FLOOR_EV_PER_ATOM,
) -> NDArray[np.float64]:
    """Probability that the true energy above the hull lies at or below a threshold.

    The prediction is taken as Gaussian: ``P = Phi((threshold - mean) / max(std, std_floor))``.

    Parameters
    ----------
    mean, std : array_like, shape (n,)
        Predicted E_hull and its standard deviation (eV/atom).
    threshold_ev_per_atom : float
        Stability threshold; 0 means on the hull.
    std_floor_ev_per_atom : float
        Smallest std used, so a confident ensemble still gives probabilities strictly between 0 and 1.

    Returns
    -------
    ndarray, shape (n,)

    Examples
    --------
    >>> float(probability_stable(0.0, 0.05)[()])
    0.5
    """
    mu, sigma = _mean_std(mean, std, std_floor_ev_per_atom)
    return _normal_cdf((threshold_ev_per_atom - mu) / sigma)


def lower_confidence_bound(mean: ArrayLike, std: ArrayLike, kappa: float = 1.0) -> NDArray[np.float64]:
    """Optimistic E_hull ``mean - kappa * std`` (eV/atom); lower is more promising."""
    if kappa < 0:
        raise InvalidInputError(f"kappa must be >= 0, got {kappa}")
    mu, sigma = _mean_std(mean, std, 0.0)
    return mu - kappa * sigma


def expected_improvement(
    mean: ArrayLike,
    std: ArrayLike,
    threshold_ev_per_atom: float = 0.0,
    *,
    std_floor_ev_per_atom: float = STD_FLOOR_EV_PER_ATOM,
) -> NDArray[np.float64]:
    """Expected depth below the threshold, ``E[max(threshold - E_hull, 0)]`` (eV/atom), for a Gaussian prediction."""
    mu, sigma = _mean_std(mean, std, std_floor_ev_per_atom)
    u = (threshold_ev_per_atom - mu) / sigma
    pdf = np.exp(-0.5 * u**2) / math.sqrt(2.0 * math.pi)
    return (threshold_ev_per_atom - mu) * _normal_cdf(u) + sigma * pdf


def acquisition_scores(
    mean: ArrayLike,
    std: ArrayLike,
    kind: AcquisitionKind = "probability-stable",
    *,
    threshold_ev_per_atom: float = 0.0,
    kappa: float = 1.0,
    std_floor_ev_per_atom: float = STD_FLOOR_EV_PER_ATOM,
) -> NDArray[np.float64]:
    """Scores to rank candidates by, higher is better (``-LCB`` for ``lcb``)."""
    if kind == "probability-stable":
        return probability_stable(mean, std, threshold_ev_per_atom, std_floor_ev_per_atom=std_floor_ev_per_atom)
    if kind == "lcb":
        return -lower_confidence_bound(mean, std, kappa)
    if kind == "expected-improvement":
        return expected_improvement(mean, std, threshold_ev_per_atom, std_floor_ev_per_atom=std_floor_ev_per_atom)
    raise InvalidInputError(f"unknown acquisition {kind!r}; choose probability-stable, lcb or expected-improvement")


def normalize_chemsys(chemsys: str) -> str:
    """Canonical chemical-system key: elements sorted and joined by '-' (``"O-Fe-Li"`` -> ``"Fe-Li-O"``)."""
    parts = [p.strip() for p in str(chemsys).replace(",", "-").split("-") if p.strip()]
    return "-".join(sorted(set(parts)))


def select_batch(
    scores: ArrayLike,
    chemsys: Sequence[str],
    k: int | None,
    *,
    max_per_chemsys: int | None = None,
    exclude: Iterable[int] | None = None,
    costs: ArrayLike | None = None,
    budget: float | None = None,
    counts: dict[str, int] | None = None,
) -> NDArray[np.int64]:
    """Indices of an ordered, diverse batch: best scores first, at most ``max_per_chemsys`` per chemical system.

    Candidates are visited in descending score (ties: lower index first, so the result is deterministic). A
    candidate is taken unless it is excluded, its chemical system already holds ``max_per_chemsys`` members, or (with
    ``costs`` and ``budget``) it no longer fits in what is left of the budget; cheaper candidates further down the
    ranking may still fit. The cap is hard: the batch can come out smaller than ``k``.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Higher is better; NaN scores are never selected.
    chemsys : sequence of str, length n
        Chemical system of each candidate (any element order).
    k : int or None
        Maximum batch size (None: as many as the other limits allow).
    max_per_chemsys : int, optional
        Cap per chemical system (None: no cap).
    exclude : iterable of int, optional
        Indices never to select (already computed, already planned).
    costs : array_like, shape (n,), optional
        Cost of each candidate; with ``budget`` the batch's total cost never exceeds the budget.
    budget : float, optional
        Total cost allowed (requires ``costs``).
    counts : dict, optional
        Members per (normalised) chemical system already taken elsewhere in the round; updated in place.

    Returns
    -------
    ndarray of int
        Selected indices, in selection order.
    """
    s = np.asarray(scores, dtype=float)
    if len(chemsys) != len(s):
        raise InvalidInputError(f"scores ({len(s)}) and chemsys ({len(chemsys)}) differ in length")
    if max_per_chemsys is not None and max_per_chemsys < 1:
        raise InvalidInputError(f"max_per_chemsys must be >= 1, got {max_per_chemsys}")
    if (budget is None) != (costs is None):
        raise InvalidInputError("select_batch needs both costs and budget, or neither")
    cost = None if costs is None else np.asarray(costs, dtype=float)
    if cost is not None and (len(cost) != len(s) or np.any(~np.isfinite(cost)) or np.any(cost < 0)):
        raise InvalidInputError("costs must be one finite number >= 0 per candidate")
    skip = set(int(i) for i in exclude) if exclude is not None else set()
    counts = {} if counts is None else counts
    keys = [normalize_chemsys(c) for c in chemsys]
    order = np.argsort(-np.where(np.isnan(s), -np.inf, s), kind="stable")
    left = float("inf") if budget is None else float(budget)
    chosen: list[int] = []
    for i in order:
        if k is not None and len(chosen) >= k:
            break
        i = int(i)
        if i in skip or np.isnan(s[i]):
            continue
        key = keys[i]
        if max_per_chemsys is not None and counts.get(key, 0) >= max_per_chemsys:
            continue
        if cost is not None:
            if cost[i] > left:
                continue
            left -= cost[i]
        counts[key] = counts.get(key, 0) + 1
        chosen.append(i)
    return np.asarray(chosen, dtype=np.int64)
