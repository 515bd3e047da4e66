"""Fixtures for the CGAT network tests: small real crystal graphs built with screener.graphs.build_graph."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screener.graphs import build_graph


def generic_structure(seed: int, n_sites: int = 3, species: tuple[str, ...] = ("Li", "Fe", "O")) -> Structure:
    """A low-symmetry cell with random positions: no two neighbour distances tie, so the graph is unique."""
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(*(3.2 + rng.random(3)), *(80 + 20 * rng.random(3)))
    while True:
        frac = rng.random((n_sites, 3))
        s = Structure(lattice, [species[i % len(species)] for i in range(n_sites)], frac)
        if n_sites == 1 or s.distance_matrix[np.triu_indices(n_sites, 1)].min() > 1.0:
            return s


@pytest.fixture
def make_structure():
    """The :func:`generic_structure` factory."""
    return generic_structure


@pytest.fixture
def structures() -> list[Structure]:
    """Four small crystals: 3 ternary generic cells of 3-5 sites and fcc Cu (one site, one element)."""
    out = [generic_structure(seed, n) for seed, n in [(0, 3), (1, 4), (2, 5)]]
    out.append(Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]))
    return out


@pytest.fixture
def graphs(structures):
    return [build_graph(s, structure_id=str(i)) for i, s in enumerate(structures)]
