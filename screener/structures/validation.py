"""Checks that a structure can be screened: 3D cell, ordered, known elements, no overlapping atoms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from screener.errors import InvalidStructureError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MIN_INTERATOMIC_DISTANCE_A",
    "MIN_LATTICE_VECTOR_A",
    "MIN_VOLUME_RATIO",
    "validate_structure",
    "check_cell",
]

MIN_INTERATOMIC_DISTANCE_A = 0.5  # closer pairs (periodic images included) are overlapping atoms
MIN_LATTICE_VECTOR_A = 1e-2  # shorter lattice vectors make the cell degenerate
MIN_VOLUME_RATIO = 1e-6  # |det(L)| / (a b c) below this: lattice vectors are (nearly) coplanar


def check_cell(matrix: np.ndarray, pbc: tuple[bool, bool, bool] | np.ndarray = (True, True, True)) -> str | None:
    """Why a cell cannot hold a 3D crystal, or None when it can.

    Parameters
    ----------
    matrix : ndarray, shape (3, 3)
        Lattice vectors as rows, in Angstrom.
    pbc : three bools
        Periodicity along each vector.

    Returns
    -------
    str or None
        The reason in words, or None for a usable cell.
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        return "lattice is not a finite 3x3 matrix"
    if not all(bool(p) for p in pbc):
        return f"cell is not periodic in 3D (pbc={tuple(bool(p) for p in pbc)}); molecules and slabs are not supported"
    lengths_a = np.linalg.norm(matrix, axis=1)
    if np.any(lengths_a < MIN_LATTICE_VECTOR_A):
        return f"cell is empty or non-3D: lattice vector lengths {np.round(lengths_a, 4).tolist()} A"
    volume_a3 = abs(float(np.linalg.det(matrix)))
    if volume_a3 < MIN_VOLUME_RATIO * float(np.prod(lengths_a)):
        return f"cell is degenerate: lattice vectors are (nearly) coplanar, volume {volume_a3:.3g} A^3"
    return None


def validate_structure(structure: Structure, structure_id: str) -> None:
    """Raise if ``structure`` cannot be screened.

    Checks, in this order: at least one site; a finite, 3D periodic, non-degenerate cell; finite coordinates;
    no partial occupancies or disorder; every element has an embedding
    (:func:`screener.data.elements_with_embedding`); no two atoms (periodic images included) closer than
    :data:`MIN_INTERATOMIC_DISTANCE_A`. Single-element structures are valid.

    Parameters
    ----------
    structure : Structure
        The structure to check.
    structure_id : str
        Its id, put in the error so the user can find it.

    Raises
    ------
    InvalidStructureError
        With ``structure_id`` and the reason.
    """
    reason = _first_problem(structure)
    if reason is not None:
        raise InvalidStructureError(structure_id, reason)


def _first_problem(structure: Structure) -> str | None:
    from pymatgen.core import Structure as _Structure

    if not isinstance(structure, _Structure):
        return f"expected a pymatgen Structure, got {type(structure).__name__}"
    if len(structure) == 0:
        return "empty structure (no sites)"
    reason = check_cell(structure.lattice.matrix, structure.lattice.pbc)
    if reason is not None:
        return reason
    if not np.all(np.isfinite(structure.frac_coords)):
        return "non-finite (NaN or inf) atomic coordinates"
    if not structure.is_ordered:
        index, site = next((i, s) for i, s in enumerate(structure) if not s.is_ordered)
        return (
            f"partial occupancy / disorder at site {index} ({site.species_string}); disordered structures are not "
            "supported: order them first (e.g. pymatgen OrderDisorderedStructureTransformation)"
        )
    reason = _missing_embeddings(structure)
    if reason is not None:
        return reason
    return _overlap(structure)


def _missing_embeddings(structure: Structure) -> str | None:
    from screener.data import elements_with_embedding

    known = elements_with_embedding()
    symbols = {getattr(sp, "symbol", str(sp)) for sp in structure.composition}
    missing = sorted(symbols - known)
    if missing:
        return (
            f"element(s) {', '.join(missing)} have no element embedding (the model knows {len(known)} elements, "
            "H to Lr; dummy species are not supported)"
        )
    return None


def _overlap(structure: Structure) -> str | None:
    centers, points, _images, distances_a = structure.get_neighbor_list(r=MIN_INTERATOMIC_DISTANCE_A)
    if len(distances_a) == 0:
        return None
    k = int(np.argmin(distances_a))
    i, j, d_a = int(centers[k]), int(points[k]), float(distances_a[k])
    if i == j:
        return (
            f"atom {i} ({structure[i].species_string}) is {d_a:.3f} A from its own periodic image "
            f"(minimum {MIN_INTERATOMIC_DISTANCE_A} A): the cell is too small"
        )
    i, j = min(i, j), max(i, j)
    return (
        f"overlapping atoms: sites {i} ({structure[i].species_string}) and {j} ({structure[j].species_string}) are "
        f"{d_a:.3f} A apart (minimum {MIN_INTERATOMIC_DISTANCE_A} A, periodic images included)"
    )
