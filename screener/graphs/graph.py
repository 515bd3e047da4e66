"""The crystal graph: what CGAT sees of a crystal.

A :class:`CrystalGraph` holds plain numpy arrays (no torch), so graphs can be built in worker processes, cached on
disk and collated later. Edge convention (as in CGAT): for every site ``i`` we list its ``n_neighbors`` nearest
neighbours ``j`` (periodic images included). The edge ``(i, j)`` is stored with ``edge_src = i`` (the centre whose
neighbour list holds it) and ``edge_dst = j`` (the neighbour). Messages flow ``src -> dst``: each atom receives
messages from the atoms that count it among their nearest neighbours, so its in-degree varies while every out-degree
is ``n_neighbors``. ``edge_rank`` is the neighbour-shell rank of ``j`` seen from ``i``: 1 for the nearest shell,
increasing by one each time the distance increases (equal distances share a rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CrystalGraph"]


@dataclass
class CrystalGraph:
    """Graph of one crystal.

    Attributes
    ----------
    atomic_numbers : ndarray of int16, shape (n_atoms,)
        Z of every site; the model looks the element embedding up by Z.
    edge_src : ndarray of int32, shape (n_edges,)
        Centre site of each edge (sender of the message).
    edge_dst : ndarray of int32, shape (n_edges,)
        Neighbour site of each edge (receiver of the message).
    edge_rank : ndarray of int8, shape (n_edges,)
        Neighbour-shell rank, 1..n_neighbors.
    comp_numbers : ndarray of int16, shape (n_elements,)
        Z of each distinct element, sorted by Z (Roost composition graph nodes).
    comp_fractions : ndarray of float32, shape (n_elements,)
        Atomic fraction of each distinct element (sums to 1).
    structure_id : str
        Id of the structure the graph was built from.
    """

    atomic_numbers: NDArray[np.int16]
    edge_src: NDArray[np.int32]
    edge_dst: NDArray[np.int32]
    edge_rank: NDArray[np.int8]
    comp_numbers: NDArray[np.int16]
    comp_fractions: NDArray[np.float32]
    structure_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_src.shape[0])

    def to_arrays(self) -> dict[str, NDArray]:
        """Arrays for ``np.savez`` (the on-disk cache format)."""
        return {
            "atomic_numbers": self.atomic_numbers,
            "edge_src": self.edge_src,
            "edge_dst": self.edge_dst,
            "edge_rank": self.edge_rank,
            "comp_numbers": self.comp_numbers,
            "comp_fractions": self.comp_fractions,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray], structure_id: str = "") -> CrystalGraph:
        return cls(
            atomic_numbers=np.asarray(arrays["atomic_numbers"], dtype=np.int16),
            edge_src=np.asarray(arrays["edge_src"], dtype=np.int32),
            edge_dst=np.asarray(arrays["edge_dst"], dtype=np.int32),
            edge_rank=np.asarray(arrays["edge_rank"], dtype=np.int8),
            comp_numbers=np.asarray(arrays["comp_numbers"], dtype=np.int16),
            comp_fractions=np.asarray(arrays["comp_fractions"], dtype=np.float32),
            structure_id=structure_id,
        )
