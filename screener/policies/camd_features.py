"""Composition features for the CAMD peer agents: a compact Magpie-style featurisation from pymatgen's element data.

CAMD's multi-fidelity agents (``camd.agent.multi_fidelity``) learn on Magpie composition features (matminer's
``ElementProperty.from_preset("magpie")`` plus stoichiometry: 132 columns). matminer is not a dependency here, so
:func:`composition_features` computes the same kind of columns from pymatgen's :class:`~pymatgen.core.Element`:
fraction-weighted mean, mean absolute deviation, minimum, maximum and range of eight element properties, and the
stoichiometric p-norms (p = 0, 2, 3, 5, 7, 10) Magpie also uses. Polymorphs share one composition and so one feature
vector, exactly as in CAMD.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from screener.errors import InvalidInputError

__all__ = ["ELEMENT_PROPERTIES", "composition_features", "feature_names"]

#: Element properties of the featurisation (pymatgen ``Element`` attributes; Magpie's closest equivalents).
ELEMENT_PROPERTIES = ("Z", "X", "row", "group", "atomic_mass", "atomic_radius", "mendeleev_no",
                      "average_ionic_radius")
_STATS = ("mean", "avg_dev", "min", "max", "range")
_P_NORMS = (0, 2, 3, 5, 7, 10)


def feature_names() -> list[str]:
    """Column names of :func:`composition_features`, in order."""
    return ([f"{stat} {prop}" for prop in ELEMENT_PROPERTIES for stat in _STATS]
            + [f"{p}-norm" for p in _P_NORMS])


@lru_cache(maxsize=256)
def _element_row(symbol: str) -> tuple[float, ...]:
    from pymatgen.core import Element

    el = Element(symbol)
    values = []
    for prop in ELEMENT_PROPERTIES:
        value = getattr(el, prop)
        value = float(value) if value is not None else np.nan
        values.append(value)
    return tuple(values)


@lru_cache(maxsize=65536)
def _features_of(formula: str) -> tuple[float, ...]:
    from pymatgen.core import Composition

    try:
        comp = Composition(formula).fractional_composition
    except (ValueError, KeyError) as exc:
        raise InvalidInputError(f"CAMD features: cannot read formula {formula!r}: {exc}") from None
    if not len(comp):
        raise InvalidInputError(f"CAMD features: empty formula {formula!r}")
    symbols = [el.symbol for el in comp]
    frac = np.array([comp[s] for s in symbols], dtype=float)
    table = np.array([_element_row(s) for s in symbols], dtype=float)  # elements x properties
    # an element without a value (e.g. no ionic radius) is left out of that property's statistics
    out: list[float] = []
    for j in range(table.shape[1]):
        col, ok = table[:, j], np.isfinite(table[:, j])
        if not ok.any():
            out += [0.0] * len(_STATS)
            continue
        w = frac[ok] / frac[ok].sum()
        x = col[ok]
        mean = float(w @ x)
        out += [mean, float(w @ np.abs(x - mean)), float(x.min()), float(x.max()), float(x.max() - x.min())]
    out += [float(len(frac)) if p == 0 else float((frac ** p).sum() ** (1.0 / p)) for p in _P_NORMS]
    return tuple(out)


def composition_features(formulas: Sequence[str]) -> np.ndarray:
    """Magpie-style composition features, one row per formula (see the module docstring).

    Parameters
    ----------
    formulas : sequence of str
        Chemical formulas (any form pymatgen reads, e.g. ``LiFeO2``).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(formulas), len(feature_names()))``.

    Raises
    ------
    InvalidInputError
        A formula pymatgen cannot read.
    """
    if not len(formulas):
        return np.zeros((0, len(feature_names())))
    return np.array([_features_of(str(f)) for f in formulas], dtype=float)
