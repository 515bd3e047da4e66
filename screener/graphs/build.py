"""Structure -> :class:`CrystalGraph`: the ``n_neighbors`` nearest neighbours of every site with shell-rank edges.

The neighbour search is pymatgen's compiled cell-list search
(:func:`pymatgen.optimization.neighbors.find_points_in_spheres`) followed by vectorised numpy sorting; there is no
Python loop over sites.

Algorithm
---------
1. Search radius: the radius of a sphere that holds ``n_neighbors + 1`` atoms at the cell's mean density,
   ``r0 = (3 (n_neighbors + 1) V / (4 pi N))**(1/3)``, times :data:`RADIUS_SAFETY`.
2. All pairs within ``r`` (periodic images included; the zero-offset self pair excluded).
3. If some site has fewer than ``n_neighbors`` neighbours, or its ``n_neighbors``-th neighbour is not inside
   ``r (1 - 1e-6)`` (so a neighbour tied with it could sit just outside the sphere), ``r`` is multiplied by
   :data:`RADIUS_GROWTH` and the search repeated. Sites never silently get fewer neighbours.
4. Per site, neighbours are sorted by distance and grouped into shells: sorted distances ``d[k-1] <= d[k]`` belong
   to the same shell when ``d[k] - d[k-1] <= TIE_RTOL * d[k] + TIE_ATOL_ANGSTROM`` (1e-8 relative with a 1e-10 A
   floor; consecutive comparison, so a shell is a chain of near-equal distances). Within a shell neighbours are
   ordered by (neighbour index, image a, image b, image c): when the ``n_neighbors`` cut falls inside a shell, the
   members kept are the first in that order, so the result never depends on floating-point noise or on the order
   the search returns pairs. The first ``n_neighbors`` are kept; the edge rank is the shell number counted from 1
   for the nearest shell (equal distances share a rank, each larger distance adds 1).

Only the atomic numbers, the lattice (with its pbc flags) and the fractional coordinates matter, which is what
:func:`structure_arrays` extracts; worker processes receive those arrays, not Structure objects.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import NDArray

from screener.errors import InvalidStructureError
from screener.graphs.graph import CrystalGraph

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "build_graph",
    "graph_from_arrays",
    "structure_arrays",
    "StructureArrays",
    "neighbor_shells",
    "RADIUS_SAFETY",
    "RADIUS_GROWTH",
    "TIE_RTOL",
    "TIE_ATOL_ANGSTROM",
    "MAX_RADIUS_GROWTHS",
    "MIN_PAIR_DISTANCE_ANGSTROM",
]

logger = logging.getLogger(__name__)

#: Initial radius = density estimate x this factor (1.0 would hold n_neighbors + 1 atoms on average).
RADIUS_SAFETY: float = 1.15
#: Factor by which the radius grows while some site has too few neighbours.
RADIUS_GROWTH: float = 1.5
#: Relative tolerance for equal distances (same shell).
TIE_RTOL: float = 1e-8
#: Absolute floor of the tie tolerance, in Angstrom.
TIE_ATOL_ANGSTROM: float = 1e-10
#: Give up (InvalidStructureError) after this many growths (1.5**30 ~ 2e5 x the density estimate).
MAX_RADIUS_GROWTHS: int = 30
#: Two distinct sites (or a site and an image of itself) closer than this are rejected as coincident.
MIN_PAIR_DISTANCE_ANGSTROM: float = 1e-3
#: Largest n_neighbors: ranks are stored as int8.
MAX_NEIGHBORS: int = 127

_MAX_ELEMENT_Z = 118
# find_points_in_spheres includes points up to r + SEARCH_TOL.
_SEARCH_TOL = 1e-8


@lru_cache(maxsize=4)
def _embedding_mask(name: str = "matscholar200") -> NDArray[np.bool_]:
    """Boolean mask over Z = 0..MAX_Z: True where the element has an embedding vector."""
    from pymatgen.core import Element

    from screener.data import MAX_Z, elements_with_embedding

    mask = np.zeros(MAX_Z + 1, dtype=bool)
    for symbol in elements_with_embedding(name):
        mask[Element(symbol).Z] = True
    mask.setflags(write=False)
    return mask


class StructureArrays(NamedTuple):
    """What a crystal graph depends on, as plain arrays (cheap to pickle to worker processes and to hash)."""

    lattice_matrix: NDArray[np.float64]  # (3, 3), rows are lattice vectors, Angstrom
    pbc: NDArray[np.bool_]  # (3,)
    frac_coords: NDArray[np.float64]  # (n_sites, 3)
    atomic_numbers: NDArray[np.int16]  # (n_sites,)
    structure_id: str = ""


def structure_arrays(structure: Structure, structure_id: str = "") -> StructureArrays:
    """Extract the arrays a graph is built from.

    Raises
    ------
    InvalidStructureError
        Partially occupied sites or species that are not elements.
    """
    n_sites = len(structure)
    try:
        z = np.fromiter((site.specie.Z for site in structure), dtype=np.int64, count=n_sites)
    except (AttributeError, OverflowError) as exc:  # disordered site (no .specie) or a species without a Z
        if not structure.is_ordered:
            raise InvalidStructureError(
                structure_id, "has partially occupied (disordered) sites; order it first"
            ) from exc
        raise InvalidStructureError(structure_id, f"has a site that is not an element ({exc})") from exc
    bad = (z < 1) | (z > _MAX_ELEMENT_Z)
    if bad.any():  # DummySpecies ("X") have a made-up Z
        species = sorted({str(structure[int(i)].specie) for i in np.flatnonzero(bad)})
        raise InvalidStructureError(structure_id, f"has sites that are not elements: {', '.join(species)}")
    lattice = structure.lattice
    frac = np.array([site.frac_coords for site in structure], dtype=np.float64).reshape(n_sites, 3)
    return StructureArrays(
        np.array(lattice.matrix, dtype=np.float64),
        np.array(lattice.pbc, dtype=bool),
        frac,
        z.astype(np.int16),
        structure_id,
    )


def _check_embedding(z: NDArray[np.integer], structure_id: str) -> None:
    """Raise InvalidStructureError if some Z has no element embedding."""
    mask = _embedding_mask()
    bad = (z <= 0) | (z >= mask.shape[0])
    bad[~bad] = ~mask[z[~bad]]
    if bad.any():
        from pymatgen.core import Element

        symbols = sorted({Element.from_Z(int(zi)).symbol if 0 < zi <= 118 else f"Z={zi}" for zi in z[bad]})
        raise InvalidStructureError(structure_id, f"element(s) {', '.join(symbols)} have no matscholar200 embedding")


def _composition(z: NDArray[np.integer]) -> tuple[NDArray[np.int16], NDArray[np.float32]]:
    """Distinct Z (sorted) and their atomic fractions."""
    counts = np.bincount(z)
    numbers = np.flatnonzero(counts)
    return numbers.astype(np.int16), (counts[numbers] / z.shape[0]).astype(np.float32)


def initial_radius_angstrom(volume_angstrom3: float, n_sites: int, n_neighbors: int) -> float:
    """Radius (Angstrom) of a sphere holding ``n_neighbors + 1`` atoms at the mean density, times the safety factor."""
    r0 = (3.0 * (n_neighbors + 1) * volume_angstrom3 / (4.0 * np.pi * n_sites)) ** (1.0 / 3.0)
    return float(RADIUS_SAFETY * r0)


def neighbor_shells(
    structure: Structure | StructureArrays,
    *,
    n_neighbors: int = 24,
    structure_id: str = "",
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], float]:
    """The ``n_neighbors`` nearest neighbours of every site, with images, distances and shell ranks.

    Parameters
    ----------
    structure : Structure or StructureArrays
        Periodic, ordered structure (or its arrays, see :func:`structure_arrays`).
    n_neighbors : int
        Neighbours per site (1..127).
    structure_id : str
        Used in error messages (default: the id stored in ``StructureArrays``).

    Returns
    -------
    neighbors : ndarray of int64, shape (n_sites, n_neighbors)
        Neighbour site index of each (site, slot).
    images : ndarray of int64, shape (n_sites, n_neighbors, 3)
        Lattice translation of the neighbour image.
    ranks : ndarray of int64, shape (n_sites, n_neighbors)
        Shell rank, starting at 1.
    distances_angstrom : ndarray of float64, shape (n_sites, n_neighbors)
    radius_angstrom : float
        Search radius finally used.

    Raises
    ------
    InvalidStructureError
        Coincident sites, or no radius up to the growth limit gives every site enough neighbours.
    """
    if not 1 <= int(n_neighbors) <= MAX_NEIGHBORS:
        raise ValueError(f"n_neighbors must be in 1..{MAX_NEIGHBORS}, got {n_neighbors}")
    arrays = structure if isinstance(structure, StructureArrays) else structure_arrays(structure, structure_id)
    structure_id = structure_id or arrays.structure_id
    n_sites = arrays.frac_coords.shape[0]
    if n_sites == 0:
        raise InvalidStructureError(structure_id, "has no sites")
    matrix = np.ascontiguousarray(arrays.lattice_matrix, dtype=np.float64)
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = matrix.tolist()
    volume = abs(ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx))
    if not math.isfinite(volume) or volume <= 1e-6:
        raise InvalidStructureError(structure_id, f"has a degenerate lattice (volume {volume:.3g} A^3)")
    cart = np.ascontiguousarray(arrays.frac_coords @ matrix)
    if not np.isfinite(cart).all():
        raise InvalidStructureError(structure_id, "has non-finite coordinates")
    pbc = np.ascontiguousarray(arrays.pbc, dtype=np.int64)
    if not pbc.any() and n_sites - 1 < n_neighbors:
        raise InvalidStructureError(
            structure_id, f"is not periodic and has {n_sites} sites: cannot give each {n_neighbors} neighbours"
        )

    from pymatgen.optimization.neighbors import find_points_in_spheres

    radius = initial_radius_angstrom(volume, n_sites, n_neighbors)
    for _ in range(MAX_RADIUS_GROWTHS + 1):
        center, point, offsets, dist = find_points_in_spheres(
            cart, cart, r=radius, pbc=pbc, lattice=matrix, tol=_SEARCH_TOL
        )
        # Drop each site's zero-offset self pair; any other pair this close means coincident sites.
        close = dist < MIN_PAIR_DISTANCE_ANGSTROM
        if np.count_nonzero(close) != n_sites:
            _raise_coincident(center, point, offsets, dist, structure_id)
        keep = ~close
        center, point, offsets, dist = center[keep], point[keep], offsets[keep], dist[keep]
        order = _sort_by_center_distance(center, dist, n_sites, radius)
        c, d = center[order], dist[order]
        counts = np.bincount(c, minlength=n_sites)
        starts = np.cumsum(counts) - counts
        # Enough neighbours, and the n-th one far enough inside the sphere that no neighbour tied with it
        # can lie outside.
        if counts.min() >= n_neighbors and d[starts + (n_neighbors - 1)].max() < radius * (1.0 - 1e-6):
            break
        logger.debug("%s: radius %.3f A holds too few neighbours for some site; growing", structure_id, radius)
        radius *= RADIUS_GROWTH
    else:
        raise InvalidStructureError(
            structure_id, f"no site environment with {n_neighbors} neighbours within {radius:.1f} A (empty cell?)"
        )

    # Shells: a new one at each centre's first pair and wherever the distance steps up by more than the tolerance.
    new_shell = np.empty(d.shape[0], dtype=bool)
    new_shell[0] = True
    np.greater(d[1:] - d[:-1], TIE_RTOL * d[1:] + TIE_ATOL_ANGSTROM, out=new_shell[1:])
    new_shell[starts] = True
    shell = np.cumsum(new_shell)  # global shell id, non-decreasing along the sorted pairs
    p = point[order]
    im = np.rint(offsets[order]).astype(np.int64)
    order2 = _sort_within_shells(shell, p, im, n_sites)
    # Groups stay contiguous after order2 (shell ids grow with the centre): the first n_neighbors of each.
    idx = order2[starts[:, None] + np.arange(n_neighbors)]
    ranks = shell[idx] - shell[starts][:, None] + 1
    return p[idx], im[idx], ranks, d[idx], radius


def _raise_coincident(
    center: NDArray[np.int64],
    point: NDArray[np.int64],
    offsets: NDArray[np.float64],
    dist: NDArray[np.float64],
    structure_id: str,
) -> None:
    """Raise for the closest pair that is not a site's own zero-offset copy."""
    self_pair = (center == point) & ~np.rint(offsets).astype(bool).any(axis=1)
    others = np.flatnonzero(~self_pair & (dist < MIN_PAIR_DISTANCE_ANGSTROM))
    if others.size == 0:  # pragma: no cover - find_points_in_spheres always reports self pairs
        raise RuntimeError(f"{structure_id}: neighbour search returned no self pairs")
    k = others[np.argmin(dist[others])]
    raise InvalidStructureError(
        structure_id, f"sites {int(center[k])} and {int(point[k])} coincide (distance {dist[k]:.2g} A)"
    )


def _sort_by_center_distance(
    center: NDArray[np.int64], dist: NDArray[np.float64], n_sites: int, radius: float
) -> NDArray[np.int64]:
    """Argsort by (centre, distance): one float key ``centre * span + distance`` when its rounding error stays far
    below the tie tolerance, else ``np.lexsort``."""
    span = 2.0 * radius + 1.0
    if n_sites * span < 1e4:  # |key| < 1e4 (cells up to a few hundred sites): rounding < 2e-12 A << tie tolerance
        return np.argsort(center * span + dist)
    return np.lexsort((dist, center))


def _sort_within_shells(
    shell: NDArray[np.int64], point: NDArray[np.int64], images: NDArray[np.int64], n_sites: int
) -> NDArray[np.int64]:
    """Argsort by (shell, neighbour index, image a, b, c): one int64 key when it fits, else ``np.lexsort``."""
    reach = int(np.abs(images).max(initial=0))
    width = 2 * reach + 1
    if (int(shell[-1]) + 1) * n_sites * width**3 < 2**62:
        image_code = (images + reach) @ np.array([width * width, width, 1], dtype=np.int64)
        return np.argsort((shell * n_sites + point) * width**3 + image_code)
    return np.lexsort((images[:, 2], images[:, 1], images[:, 0], point, shell))


def graph_from_arrays(arrays: StructureArrays, *, n_neighbors: int = 24) -> CrystalGraph:
    """Build the crystal graph from :func:`structure_arrays` output (what worker processes receive).

    See :func:`build_graph` for parameters, result and errors.
    """
    if not 1 <= int(n_neighbors) <= MAX_NEIGHBORS:
        raise ValueError(f"n_neighbors must be in 1..{MAX_NEIGHBORS}, got {n_neighbors}")
    z = np.asarray(arrays.atomic_numbers, dtype=np.int16)
    _check_embedding(z, arrays.structure_id)
    neighbors, _, ranks, _, _ = neighbor_shells(arrays, n_neighbors=n_neighbors)
    n_sites = z.shape[0]
    comp_numbers, comp_fractions = _composition(z)
    return CrystalGraph(
        atomic_numbers=z,
        edge_src=np.repeat(np.arange(n_sites, dtype=np.int32), n_neighbors),
        edge_dst=neighbors.reshape(-1).astype(np.int32),
        edge_rank=ranks.reshape(-1).astype(np.int8),
        comp_numbers=comp_numbers,
        comp_fractions=comp_fractions,
        structure_id=arrays.structure_id,
    )


def build_graph(structure: Structure, *, n_neighbors: int = 24, structure_id: str = "") -> CrystalGraph:
    """Build the crystal graph of one structure.

    Parameters
    ----------
    structure : Structure
        Ordered, periodic structure whose elements all have a matscholar200 embedding.
    n_neighbors : int
        Nearest neighbours per site, periodic images included (1..127).
    structure_id : str
        Stored on the graph and used in error messages.

    Returns
    -------
    CrystalGraph
        ``n_sites * n_neighbors`` edges; ``edge_src`` is the centre, ``edge_dst`` the neighbour, ``edge_rank`` its
        shell rank (see the module docstring for the tie rule).

    Raises
    ------
    InvalidStructureError
        Disordered sites, elements without an embedding, coincident sites, empty or degenerate cells.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> g = build_graph(Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]]))
    >>> g.n_edges, sorted(set(g.edge_rank.tolist()))
    (24, [1, 2, 3])
    """
    return graph_from_arrays(structure_arrays(structure, structure_id), n_neighbors=n_neighbors)
