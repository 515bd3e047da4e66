"""A screened candidate's PBE result read on the campaign's SCAN hull.

The PBE -> SCAN relation (:class:`screener.policies.expected_value.PbeScanRelation`) turns a PBE result into
P(SCAN-stable) from its PBE E_hull alone, on the PBE hull. Every candidate on the PBE hull gets the same ``q``, yet
the campaign also holds a SCAN hull: the known set's SCAN phases and every SCAN result it bought, some of which the
PBE hull orders differently. Here the PBE formation energy is carried to SCAN by the fidelity shift fitted on the
pairs computed at both levels (a linear function of the atomic fractions, as the functionals' errors are mostly
per element), and measured against the SCAN hull:

    ``x_s = E_hull^SCAN(E_form^PBE + delta(composition))``

With ``scan_hull_map`` on (off by default), a probit map reorders the screened candidates waiting for a SCAN
follow-up: ``P = Phi(Phi^-1(q) - k (x_s - x_ref))``, ``x_ref`` their mean ``x_s``, so their mean P stays where the
relation put it. ``k`` (at least 0, Gaussian prior at 0: no change) is fitted on the campaign's pairs, each ``x_s``
read against the SCAN hull without that structure, its outcome SCAN-stable on the current hull.

Read from the ledgers of today's default (``bench/scan_hull_from_ledgers.py``: follow-ups, truly stable or not on
the world's own hull), ``x_s`` split the follow-ups of candidates on the PBE hull where ``q`` could not: on
Mg-Mn-Fe-Cr-V-S 35 of 58 truly stable at ``x_s <= -0.1`` eV/atom against 2 of 35 above 0. It found no more: the
follow-ups it would spare (on the PBE hull, above the SCAN hull: 2.8-3.5 per campaign on three worlds, 6 of 77
truly stable) are a tenth of the 30-35 SCAN runs a campaign buys, and the variants that
also let it set the follow-ups' level (``fit_level``) or value a screen by it lowered every follow-up at once, and
the policy answered with more screens and fewer follow-ups (docs/policy-benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.special import log_ndtr, ndtr, ndtri

__all__ = ["FidelityShift", "ScanHullMap", "atomic_fractions", "fit_fidelity_shift", "fit_scan_hull_map"]


def atomic_fractions(composition: Any) -> dict[str, float]:
    """``{element: atomic fraction}`` of a pymatgen Composition: the form :class:`FidelityShift` reads."""
    return {str(el): float(composition.get_atomic_fraction(el)) for el in composition.elements}


class FidelityShift(BaseModel):
    """``delta(x) = w . x``: SCAN minus PBE formation energy (eV/atom) of a composition with atomic fractions ``x``
    over ``elements`` (ridge fit on computed pairs); ``residual_sd`` is the pairs' scatter about it."""

    elements: list[str] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    residual_sd: float = 0.0
    n_pairs: int = 0

    def __call__(self, fractions: dict[str, float]) -> float:
        """The shift of a composition given as ``{element: atomic fraction}`` (elements outside the fit add 0)."""
        return float(sum(w * float(fractions.get(el, 0.0)) for el, w in zip(self.elements, self.weights)))


def fit_fidelity_shift(fractions: Sequence[dict[str, float]], shifts: Sequence[float], *, ridge: float = 1e-3
                       ) -> FidelityShift:
    """Least squares of ``shifts`` (SCAN minus PBE E_form, eV/atom) on the atomic fractions, with a small ridge so
    an element seen in few pairs stays near 0. No pairs: the zero shift."""
    if not len(fractions):
        return FidelityShift()
    elements = sorted({el for f in fractions for el in f})
    x = np.array([[float(f.get(el, 0.0)) for el in elements] for f in fractions])
    y = np.asarray(shifts, dtype=float)
    w = np.linalg.solve(x.T @ x + ridge * len(y) * np.eye(len(elements)), x.T @ y)
    return FidelityShift(elements=elements, weights=[float(v) for v in w],
                         residual_sd=float(np.std(y - x @ w)), n_pairs=len(y))


class ScanHullMap(BaseModel):
    """``P = Phi(a + Phi^-1(q) - k (x_s - x_ref))``: the relation's ``q`` refined by the mapped SCAN E_hull
    ``x_s``; at ``x_s = x_ref`` the map leaves ``q`` at ``a`` (0 unless the level is fitted)."""

    a: float = 0.0
    k_per_ev_per_atom: float = 0.0
    x_ref_ev_per_atom: float = 0.0
    n_pairs: int = 0

    def probit_shift(self, x_s: Any) -> np.ndarray:
        """What the map adds to ``Phi^-1(q)`` at ``x_s`` (0 where ``x_s`` is not finite)."""
        x_s = np.asarray(x_s, dtype=float)
        return np.where(np.isfinite(x_s), self.a - self.k_per_ev_per_atom * (np.nan_to_num(x_s)
                                                                              - self.x_ref_ev_per_atom), 0.0)

    def apply(self, q: Any, x_s: Any) -> np.ndarray:
        """Refined P where ``x_s`` is finite; ``q`` unchanged elsewhere."""
        q = np.asarray(q, dtype=float)
        z = ndtri(np.clip(q, 1e-9, 1 - 1e-9)) + self.probit_shift(x_s)
        return np.where(np.isfinite(np.asarray(x_s, dtype=float)) & np.isfinite(q), ndtr(z), q)

    def numbers(self) -> dict[str, Any]:
        return {"scan_hull_map_a": self.a, "scan_hull_map_k_per_ev_per_atom": self.k_per_ev_per_atom,
                "scan_hull_map_x_ref_ev_per_atom": self.x_ref_ev_per_atom, "scan_hull_map_n_pairs": self.n_pairs}


def fit_scan_hull_map(q: Sequence[float], x_s: Sequence[float], stable: Sequence[bool], *, prior_sd_a: float = 1.0,
                      prior_sd_k: float = 10.0, fit_level: bool = False) -> ScanHullMap:
    """MAP fit of ``k`` (and with ``fit_level`` of ``a``; else ``a = 0``) on pairs: the relation's ``q`` of each,
    its ``x_s`` (against the SCAN hull without it) and whether it is SCAN-stable, ``x_s`` measured from the pairs'
    mean. Gaussian priors at 0 (sd ``prior_sd_a``, ``prior_sd_k`` per eV/atom); ``k >= 0``: a result further above
    the SCAN hull is never likelier stable. No pairs: no change.

    ``a`` is the level the campaign's follow-ups came out at against the relation's ``q``. Fitted (-1 in probit on
    Mg-Mn-Fe-Cr-V-S: the relation's 0.72-0.77 on the PBE hull against about a third), it lowered every screen's
    follow-up at once, the policy answered with more screens and fewer follow-ups and found less; at 0 the map
    only orders the screened candidates (docs/policy-benchmarks.md)."""
    from scipy.optimize import minimize  # only where a map is fitted: it is slow to import

    q = np.asarray(q, dtype=float)
    x = np.asarray(x_s, dtype=float)
    y = np.asarray(stable, dtype=bool)
    keep = np.isfinite(q) & np.isfinite(x)
    q, x, y = q[keep], x[keep], y[keep]
    if not len(y):
        return ScanHullMap()
    zq = ndtri(np.clip(q, 1e-6, 1 - 1e-6))
    x_ref = float(np.mean(x))
    dx = x - x_ref

    def loss(c: np.ndarray) -> float:
        z = c[0] + zq - c[1] * dx
        return float(-np.sum(np.where(y, log_ndtr(z), log_ndtr(-z)))
                     + 0.5 * (c[0] / prior_sd_a) ** 2 + 0.5 * (c[1] / prior_sd_k) ** 2)

    res = minimize(loss, np.zeros(2), method="L-BFGS-B",
                   bounds=[(None, None) if fit_level else (0.0, 0.0), (0.0, None)])
    return ScanHullMap(a=float(res.x[0]), k_per_ev_per_atom=float(res.x[1]), x_ref_ev_per_atom=x_ref,
                       n_pairs=int(len(y)))
