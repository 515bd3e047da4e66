"""How often a candidate that would be stable against today's hull stays stable once the pool's other candidates
are computed: its *competitor survival*.

A campaign judges a candidate against the hull it holds: the known phases and its own results. The truth is the hull
of every structure, the pool's uncomputed candidates included, and those undercut many candidates that look stable
today: a lower polymorph of the same formula, or a compound of a neighbouring composition that cuts the hull below
it. On the issue-12 Li-Mn-Fe-Co-Ni-O world, 79 pool structures are each below the known set's SCAN hull on their
own, and only 39 of them are truly stable: 16 are beaten by a pool polymorph, 24 by pool compounds of other
compositions. A P(stable) against today's hull is therefore about twice too high for the purchases a policy makes,
and it cannot tell the candidate that will survive from the one whose five predicted polymorphs make it a long shot.

:func:`competitor_survival` estimates, by Monte Carlo over the candidates' predictions, ``S_i = P(i stable on the
hull of everything | i stable on today's hull)``. Each draw samples an E_hull for every *plausible* candidate (its
P(below today's hull) at least ``min_p``; the others cannot move the hull), puts those below today's hull into the
hull with today's hull vertices, and checks which of them are still on it. ``S_i`` is the share of draws in which
``i`` is below today's hull that it is also on the new hull, shrunk toward the overall share with two pseudo-draws
(so a candidate below the hull in a handful of draws is not called certain). Only the lower hull matters: its
facets' planes give the hull energy at any composition as their maximum, so a draw costs one ``qhull`` call and one
matrix product, and a 1,500-candidate campaign pays well under a second per round for 64 draws.

The draws treat the predictions as independent Gaussians (the calibrated mean and sigma the policy ranks with). The
model's errors of related structures are correlated, which this ignores. A candidate with a PBE result is drawn
from what that result says instead (:func:`scan_mean_given_p_stable` of the PBE -> SCAN relation's
P(SCAN-stable | PBE E_hull)): a screened PBE-stable polymorph is as likely below the hull as the policy values it,
and a screened PBE-unstable one no longer undercuts its neighbours at the model's odds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["competitor_survival", "lower_hull_energy", "scan_mean_given_p_stable"]

#: qhull in more dimensions than this is slow and fragile; such element sets are skipped (survival 1).
MAX_ELEMENTS = 8


def lower_hull_energy(points_x: np.ndarray, points_e: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Energy of the lower convex hull of ``(points_x, points_e)`` at the compositions ``query_x``.

    Parameters
    ----------
    points_x : ndarray, shape (k, d)
        Atomic fractions over ``d`` elements (rows sum to 1); the ``d`` pure elements must be among them.
    points_e : ndarray, shape (k,)
        Formation energies per atom (the elements at 0).
    query_x : ndarray, shape (n, d)
        Compositions to evaluate, inside the simplex.

    Returns
    -------
    ndarray, shape (n,)
        The hull's formation energy per atom at each query: the maximum over the lower facets' planes (each lies below
        every point, and the facet holding the query touches the hull there).
    """
    from scipy.spatial import ConvexHull

    d = points_x.shape[1]
    if d == 1:
        return np.full(len(query_x), float(np.min(points_e)))
    pts = np.column_stack([points_x[:, :-1], points_e])  # fractions sum to 1: drop one coordinate
    # one point high above the centre makes the hull full-dimensional even when only the elements are given; the
    # facets it adds face upward and never count as lower facets
    top = np.append(np.full(d - 1, 1.0 / d), float(np.max(points_e)) + 10.0)
    pts = np.vstack([pts, top])
    try:  # triangulated output is several times faster; joggling is the fallback for degenerate inputs
        hull = ConvexHull(pts, qhull_options="Qt")
    except Exception:  # noqa: BLE001 - scipy raises QhullError for precision trouble
        hull = ConvexHull(pts, qhull_options="QJ")
    eq = hull.equations  # rows (normal, offset) with normal . p + offset <= 0 inside; normals are unit vectors
    lower = eq[eq[:, -2] < -1e-7]  # outward normal points down in energy
    coef = -lower[:, :-2] / lower[:, -2:-1]  # e = coef . x' + intercept on each lower facet's plane
    intercept = -lower[:, -1] / lower[:, -2]
    return (query_x[:, :-1] @ coef.T + intercept).max(axis=1)


def scan_mean_given_p_stable(p_stable: Any, std: Any, threshold: float = 0.0) -> np.ndarray:
    """The Gaussian mean at which a prediction of sigma ``std`` is at or below ``threshold`` with probability
    ``p_stable``: how a candidate known through another route (its PBE result) enters the draws. ``p_stable`` is
    clipped to [1e-6, 1 - 1e-6] so the mean stays finite."""
    p = np.clip(np.asarray(p_stable, dtype=float), 1e-6, 1.0 - 1e-6)
    return threshold - ndtri(p) * np.maximum(np.asarray(std, dtype=float), 1e-3)


def competitor_survival(base_x: np.ndarray, base_e: np.ndarray, cand_x: np.ndarray, e_hull_mean: Any,
                        e_hull_std: Any, *, threshold: float = 0.0, samples: int = 64, seed: int = 0,
                        min_p: float = 1e-3, max_plausible: int = 500, error_correlation: float = 0.0,
                        against: str = "all", block: int = 20) -> tuple[np.ndarray, dict[str, Any]]:
    """``S_i = P(stable among all candidates | stable on today's hull)`` by Monte Carlo (module docstring).

    Parameters
    ----------
    base_x, base_e : ndarray, shapes (k, d) and (k,)
        Today's hull vertices (stable entries, the pure elements included): atomic fractions and formation energy
        per atom.
    cand_x : ndarray, shape (n, d)
        The open candidates' atomic fractions over the same ``d`` elements.
    e_hull_mean, e_hull_std : array-like, shape (n,)
        Their predicted E_hull against today's hull and its (calibrated) sigma, eV/atom.
    threshold : float
        E_hull at or below which a structure counts as stable.
    samples : int
        Monte Carlo draws.
    min_p, max_plausible : float, int
        Candidates with P(E_hull <= threshold) below ``min_p`` never enter a draw (at most ``max_plausible`` of the
        likeliest do); their survival is the overall share.
    error_correlation : float
        ``rho`` in [0, 1): each draw's standard normal is ``sqrt(rho) Z_shared + sqrt(1 - rho) Z_own``, one
        ``Z_shared`` for every candidate of the draw (the model's shared error); 0: independent.
    against : {"all", "fewer_elements", "same_elements", "likelier"}
        Which drawn candidates each one is judged against (besides today's hull): ``"all"``; ``"fewer_elements"``,
        those of fewer elements only (the hull's "hubs": an elemental polymorph or a binary undercuts every compound
        above it), not its own polymorphs and same-order neighbours, which a crowded chemical system has many of;
        ``"same_elements"``, the other way round: those of as many elements, i.e. its polymorphs and the compounds of
        its own chemical system (a compound of as many elements but another element set cannot undercut it);
        ``"likelier"``, those ranked above it by P(below today's hull), in blocks that double in size from ``block``
        (a batch: the ones a campaign would buy first), so the likeliest member of a crowd keeps its odds and the
        rest are marked down.
    block : int
        First block's size with ``against="likelier"``.

    Returns
    -------
    survival : ndarray, shape (n,)
    numbers : dict
        ``n_plausible``, ``overall_survival`` (share of below-hull draws that stayed on the hull), ``samples``.
    """
    mean = np.asarray(e_hull_mean, dtype=float)
    std = np.maximum(np.asarray(e_hull_std, dtype=float), 1e-3)
    n = len(mean)
    p = np.where(np.isfinite(mean), ndtr((threshold - np.nan_to_num(mean, nan=np.inf)) / std), 0.0)
    order = np.argsort(-p, kind="stable")
    plausible = order[: min(max_plausible, int(np.sum(p >= min_p)))]
    numbers: dict[str, Any] = {"n_plausible": int(len(plausible)), "samples": int(samples)}
    if len(plausible) == 0:
        numbers["overall_survival"] = None
        return np.ones(n), numbers
    x = cand_x[plausible]
    if against in ("fewer_elements", "same_elements"):
        level = (x > 1e-9).sum(axis=1)  # elements in each candidate
    elif against == "likelier":
        # plausible is in order of P: rank blocks that double in size (ranks [0, b), [b, 3b), [3b, 7b), ...), so
        # the top is ranked finely and a draw costs a handful of hulls, not one per block
        level = np.floor(np.log2(1.0 + np.arange(len(plausible)) / max(int(block), 1))).astype(int)
    elif against == "all":
        level = np.zeros(len(plausible), dtype=int)
    else:
        raise ValueError(f"against must be 'all', 'fewer_elements', 'same_elements' or 'likelier', not {against!r}")
    own_level = against in ("all", "same_elements")
    h0 = lower_hull_energy(base_x, base_e, x)  # today's hull at each plausible candidate
    rng = np.random.default_rng(seed)
    k_below = np.zeros(len(plausible))
    k_stays = np.zeros(len(plausible))
    rho = float(error_correlation)
    for _ in range(samples):
        z = rng.standard_normal(len(plausible))
        if rho > 0.0:  # drawn after the own errors, so rho = 0 repeats the independent draws exactly
            z = np.sqrt(rho) * rng.standard_normal() + np.sqrt(1.0 - rho) * z
        e_hull = mean[plausible] + std[plausible] * z
        below = e_hull <= threshold
        if not below.any():
            continue
        e = h0 + e_hull
        # (points, judged) per level: each level judged against its own (all: one level) or against the lower ones
        groups = [(below & ((level == k) if own_level else (level < k)), below & (level == k))
                  for k in np.unique(level[below])]
        try:
            h = np.empty(len(plausible))
            for points, judged in groups:
                h[judged] = lower_hull_energy(np.vstack([base_x, x[points]]), np.concatenate([base_e, e[points]]),
                                              x[judged])
        except Exception:  # noqa: BLE001 - a degenerate draw (qhull precision) is skipped, not fatal
            continue
        k_below[below] += 1.0
        # on the new hull: no lower than the hull through it (a threshold above 0 keeps near-hull ones)
        k_stays[below] += e[below] - h[below] <= max(threshold, 0.0) + 1e-6
    overall = float(k_stays.sum() / k_below.sum()) if k_below.sum() else 1.0
    survival = np.full(n, overall)
    survival[plausible] = (k_stays + 2.0 * overall) / (k_below + 2.0)
    numbers["overall_survival"] = overall
    return survival, numbers
