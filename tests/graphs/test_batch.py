"""Tests of screener/graphs/batch.py: collate_graphs offsets and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from screener.graphs import build_graph, collate_graphs


def test_collate_offsets():
    a = build_graph(Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]]))  # 1 atom
    b = build_graph(Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))  # 2 atoms
    c = build_graph(Structure(Lattice.cubic(3.6), ["Cu"] * 3, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]]))  # 3 atoms
    batch = collate_graphs([a, b, c])
    assert batch.n_crystals == 3
    assert batch.atomic_numbers.tolist() == [84, 11, 17, 29, 29, 29]
    assert batch.atom_crystal.tolist() == [0, 1, 1, 2, 2, 2]
    offsets = [0, 1, 3]
    expected_src = np.concatenate([g.edge_src + o for g, o in zip((a, b, c), offsets)])
    expected_dst = np.concatenate([g.edge_dst + o for g, o in zip((a, b, c), offsets)])
    assert batch.edge_src.tolist() == expected_src.tolist()
    assert batch.edge_dst.tolist() == expected_dst.tolist()
    # every edge stays inside its crystal
    assert torch.equal(batch.atom_crystal[batch.edge_src], batch.atom_crystal[batch.edge_dst])
    assert batch.edge_src.shape == (24 * 6,) and batch.edge_rank.dtype == torch.long
    assert batch.comp_numbers.tolist() == [84, 11, 17, 29]
    assert batch.comp_crystal.tolist() == [0, 1, 1, 2]
    torch.testing.assert_close(batch.comp_fractions, torch.tensor([1.0, 0.5, 0.5, 1.0]))
    # crystal 1's edges point only at atoms 1 and 2
    mask = batch.atom_crystal[batch.edge_src] == 1
    assert set(batch.edge_dst[mask].tolist()) == {1, 2}


def test_collate_empty_raises():
    with pytest.raises(ValueError):
        collate_graphs([])
