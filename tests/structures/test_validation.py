"""Each validation failure is raised with the structure's id and a reason that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screener.errors import InvalidStructureError
from screener.structures import validate_structure
from screener.structures.validation import check_cell


def _reason(structure, structure_id="cand-1") -> str:
    with pytest.raises(InvalidStructureError) as info:
        validate_structure(structure, structure_id)
    assert info.value.structure_id == structure_id
    assert str(info.value).startswith(f"{structure_id}: ")
    return info.value.reason


def test_real_structures_are_valid(gate, si):
    validate_structure(gate, "mp-10009")
    validate_structure(si, "si")  # single-element structures are valid


def test_empty_structure():
    assert _reason(Structure(Lattice.cubic(4.0), [], [])) == "empty structure (no sites)"


def test_degenerate_cells():
    coplanar = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 0]]), ["Si"], [[0, 0, 0]])
    assert "coplanar" in _reason(coplanar)
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 0]]), ["Si"], [[0, 0, 0]])
    assert "empty or non-3D" in _reason(flat)
    slab = Structure(Lattice(np.eye(3) * 4.0, pbc=(True, True, False)), ["Si"], [[0, 0, 0]])
    assert "not periodic in 3D" in _reason(slab)


def test_check_cell_accepts_triclinic():
    assert check_cell(Lattice.from_parameters(3, 4, 5, 70, 80, 100).matrix) is None
    assert check_cell(np.full((3, 3), np.nan)) == "lattice is not a finite 3x3 matrix"


def test_non_finite_coordinates(si):
    broken = si.copy()
    broken.replace(0, "Si", coords=[np.nan, 0, 0])
    assert "non-finite" in _reason(broken)


def test_overlapping_atoms_direct(gate):
    crowded = gate.copy()
    crowded.append("Te", gate[0].coords + np.array([0.3, 0.0, 0.0]), coords_are_cartesian=True)
    reason = _reason(crowded)
    assert reason.startswith("overlapping atoms: sites 0 (Ga) and 8 (Te) are 0.300 A apart")


def test_overlapping_atoms_across_the_periodic_boundary():
    # 0.25 A apart only through the boundary; 4.75 A apart inside the cell
    structure = Structure(Lattice.cubic(5.0), ["Si", "Si"], [[0.02, 0.5, 0.5], [0.97, 0.5, 0.5]])
    reason = _reason(structure)
    assert "0.250 A apart" in reason and "periodic images included" in reason


def test_atom_overlapping_its_own_image():
    structure = Structure(Lattice.from_parameters(0.4, 5, 5, 90, 90, 90), ["Si"], [[0, 0, 0]])
    assert "own periodic image" in _reason(structure)


def test_just_above_the_distance_limit_is_valid():
    structure = Structure(Lattice.cubic(5.0), ["H", "H"], [[0, 0, 0], [0.51, 0, 0]], coords_are_cartesian=True)
    validate_structure(structure, "h2-in-box")


def test_partial_occupancy(gate):
    mixed = gate.copy()
    mixed.replace(2, {"Ga": 0.5, "In": 0.5})
    reason = _reason(mixed)
    assert "disorder at site 2" in reason and "not supported" in reason
    vacancy = gate.copy()
    vacancy.replace(0, {"Ga": 0.75})
    assert "partial occupancy" in _reason(vacancy)


def test_element_without_embedding(gate):
    exotic = gate.copy()
    exotic.replace_species({"Te": "Og"})
    reason = _reason(exotic)
    assert reason.startswith("element(s) Og have no element embedding")


def test_dummy_species_rejected(si):
    from pymatgen.core import DummySpecies

    dummy = si.copy()
    dummy.replace(0, DummySpecies("X"))
    assert "no element embedding" in _reason(dummy)
