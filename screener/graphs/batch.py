"""Collating crystal graphs into one disjoint batch graph (index offsets, no torch-geometric)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray
import torch
from torch import Tensor

from screener.graphs.graph import CrystalGraph

__all__ = ["GraphBatch", "collate_graphs"]


@dataclass
class GraphBatch:
    """Several crystal graphs as one disconnected graph.

    Shape:
        - ``atomic_numbers``: (N,) long, Z per atom
        - ``edge_src``, ``edge_dst``: (E,) long, global atom indices (offset per crystal)
        - ``edge_rank``: (E,) long, shell rank 1..n_neighbors
        - ``atom_crystal``: (N,) long, crystal index of each atom
        - ``comp_numbers``: (M,) long, Z of each (crystal, element) composition node
        - ``comp_fractions``: (M,) float, its atomic fraction
        - ``comp_crystal``: (M,) long, crystal index of each composition node
        - ``n_crystals``: int
    """

    atomic_numbers: Tensor
    edge_src: Tensor
    edge_dst: Tensor
    edge_rank: Tensor
    atom_crystal: Tensor
    comp_numbers: Tensor
    comp_fractions: Tensor
    comp_crystal: Tensor
    n_crystals: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GraphBatch:
        """Move every tensor to ``device``."""
        moved = {
            f.name: (
                getattr(self, f.name).to(device, non_blocking=non_blocking)
                if isinstance(getattr(self, f.name), Tensor)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return GraphBatch(**moved)

    def pin_memory(self) -> GraphBatch:
        """Page-lock every tensor (called by DataLoader when ``pin_memory=True``)."""
        pinned = {
            f.name: (getattr(self, f.name).pin_memory() if isinstance(getattr(self, f.name), Tensor) else getattr(self, f.name))
            for f in fields(self)
        }
        return GraphBatch(**pinned)


def collate_graphs(graphs: Sequence[CrystalGraph]) -> GraphBatch:
    """Concatenate graphs with index offsets.

    Parameters
    ----------
    graphs : sequence of CrystalGraph
        At least one graph.

    Returns
    -------
    GraphBatch
        Tensors on the CPU.
    """
    if len(graphs) == 0:
        raise ValueError("cannot collate an empty list of graphs")
    n_atoms = np.fromiter((g.n_atoms for g in graphs), dtype=np.int64, count=len(graphs))
    n_edges = np.fromiter((g.n_edges for g in graphs), dtype=np.int64, count=len(graphs))
    n_comp = np.fromiter((len(g.comp_numbers) for g in graphs), dtype=np.int64, count=len(graphs))
    atom_offsets = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)
    idx = np.arange(len(graphs), dtype=np.int64)

    def cat(name: str, dtype: np.dtype) -> NDArray:
        return np.concatenate([getattr(g, name) for g in graphs]).astype(dtype, copy=False)

    return GraphBatch(
        atomic_numbers=torch.from_numpy(cat("atomic_numbers", np.int64)),
        edge_src=torch.from_numpy(cat("edge_src", np.int64) + atom_offsets),
        edge_dst=torch.from_numpy(cat("edge_dst", np.int64) + atom_offsets),
        edge_rank=torch.from_numpy(cat("edge_rank", np.int64)),
        atom_crystal=torch.from_numpy(np.repeat(idx, n_atoms)),
        comp_numbers=torch.from_numpy(cat("comp_numbers", np.int64)),
        comp_fractions=torch.from_numpy(cat("comp_fractions", np.float32)),
        comp_crystal=torch.from_numpy(np.repeat(idx, n_comp)),
        n_crystals=len(graphs),
    )



