"""deduplicate: rotated / translated / supercell copies go, distinct polymorphs stay."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.structures import StructureRecord, deduplicate, group_duplicates, read_structures


@pytest.fixture
def polymorphs(structures_dir):
    """The 13 aviary rows: 5 elements and 2 + 4 + 2 distinct polymorphs of HfZnN2, ZrZnN3, TiZn2N3."""
    return read_structures(structures_dir / "aviary_examples_subset.json", target="E_f").records


def _rotated(structure):
    from pymatgen.core.operations import SymmOp

    copy = structure.copy()
    copy.apply_operation(SymmOp.from_axis_angle_and_translation([1, 1, 0], 37.0, translation_vec=[0.3, 0.1, 0.2]))
    return copy


def test_copies_removed_polymorphs_kept(polymorphs, caplog):
    hfznn2 = next(r for r in polymorphs if r.formula == "HfZnN2")
    rotated = StructureRecord("rotated", _rotated(hfznn2.structure), targets={"E_f": 9.0})
    supercell = StructureRecord("supercell", hfznn2.structure * (2, 1, 1), targets={"E_f": -9.0})
    shaken = hfznn2.structure.copy()
    shaken.perturb(0.01)
    perturbed = StructureRecord("perturbed", shaken)
    records = [*polymorphs, rotated, supercell, perturbed]
    with caplog.at_level(logging.INFO, logger="screener.structures"):
        kept = deduplicate(records)
    assert [r.structure_id for r in kept] == [r.structure_id for r in polymorphs]
    assert any("removed 3 duplicate structures" in m for m in caplog.messages)


def test_no_false_matches_between_polymorphs(polymorphs):
    groups = group_duplicates(polymorphs)
    assert groups == [[i] for i in range(len(polymorphs))]


def test_keep_last_and_lowest(polymorphs):
    hfznn2 = next(r for r in polymorphs if r.formula == "HfZnN2")
    a = StructureRecord("a", hfznn2.structure, targets={"E_f": 0.5})
    b = StructureRecord("b", _rotated(hfznn2.structure), targets={"E_f": -0.2})
    c = StructureRecord("c", hfznn2.structure * (1, 1, 2))  # no target: never the lowest
    assert [r.structure_id for r in deduplicate([a, b, c], keep="last")] == ["c"]
    assert [r.structure_id for r in deduplicate([a, b, c], keep="lowest:E_f")] == ["b"]
    assert [r.structure_id for r in deduplicate([c, a, b])] == ["c"]


def test_volume_scaling_option(si):
    expanded = si.copy()
    expanded.scale_lattice(si.volume * 2.0)  # lengths x1.26, beyond ltol=0.2
    records = [StructureRecord("si", si), StructureRecord("si-expanded", expanded)]
    assert len(deduplicate(records)) == 1  # pymatgen default: volumes are scaled before matching
    assert len(deduplicate(records, scale=False)) == 2


def test_bad_keep(si):
    with pytest.raises(InvalidInputError, match="keep="):
        deduplicate([StructureRecord("si", si)], keep="best")


def test_rotation_really_changed_coordinates(polymorphs):
    original = polymorphs[5].structure
    assert not np.allclose(_rotated(original).lattice.matrix, original.lattice.matrix)
