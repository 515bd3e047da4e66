from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screener.errors import InvalidInputError
from screener.world.labels import LabelConfig, chgnet_graphs, label_structures


@pytest.fixture(scope="module")
def structures():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.7), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.47), ["Si"], [[0, 0, 0]])
    strained = si.copy()
    strained.scale_lattice(si.volume * 1.15)
    lonely = Structure(Lattice.cubic(30.0), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # no neighbour within 6 A
    return [nacl, si, strained, lonely]


def test_single_points_match_chgnet_and_failures_are_nan(structures):
    from screener.calculators.standin import energies_batch

    labels = label_structures(structures, LabelConfig(n_jobs=1))
    for fidelity in ("pbe", "scan"):
        lab = labels[fidelity]
        assert lab.final_structures is None
        assert np.allclose(lab.energy_per_atom_ev[:3], energies_batch(structures[:3], fidelity), atol=1e-5)
        assert np.isnan(lab.energy_per_atom_ev[3]) and set(lab.failures) == {3}
        assert "graph" in lab.failures[3]
    assert abs(labels["pbe"].energy_per_atom_ev[1] - labels["scan"].energy_per_atom_ev[1]) > 0.5  # different scales


def test_parallel_graphs_equal_serial_graphs(structures):
    many = structures[:3] * 12
    serial, _ = chgnet_graphs(many, n_jobs=1)
    parallel, _ = chgnet_graphs(many, n_jobs=2)
    for a, b in zip(serial, parallel):
        assert (a.atom_graph == b.atom_graph).all() and (a.bond_graph == b.bond_graph).all()
        # graphs from workers are plain copies: torch's shared-memory transport keeps one file descriptor open per
        # tensor, and a 20,000-structure world ran out of them ("Too many open files")
        assert not any(t.is_shared() for t in (b.atom_frac_coord, b.atom_graph, b.bond_graph, b.lattice))


def test_short_relaxation_lowers_the_energy_and_keeps_the_final_structure(structures):
    static = label_structures(structures[2:3], LabelConfig(n_jobs=1), fidelities=["pbe"])["pbe"]
    relaxed = label_structures(structures[2:3], LabelConfig(relax_steps=15), fidelities=["pbe"])["pbe"]
    assert relaxed.final_structures[0] is not None
    assert relaxed.final_structures[0].volume < structures[2].volume  # the strained Si cell shrinks
    assert relaxed.energy_per_atom_ev[0] < static.energy_per_atom_ev[0]
    assert LabelConfig(relax_steps=15).protocol == "relax15"
    with pytest.raises(InvalidInputError):
        LabelConfig(relax_steps=-1)
