"""write_structures -> extxyz that read_structures (and ase) read back with ids, targets and data."""

from __future__ import annotations

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.structures import StructureRecord, read_structures, write_structures


def test_round_trip_preserves_ids_targets_data(structures_dir, tmp_path):
    records = read_structures(
        [structures_dir / "alexandria_part_1.json.bz2", structures_dir / "perov_5_val_first6.csv"]
    ).records
    for record in records[:10]:
        record.targets["e_above_hull"] = record.data["e_above_hull"]
    path = write_structures(records, tmp_path / "out" / "cands.extxyz")
    back = read_structures(path)
    assert back.structure_ids == [r.structure_id for r in records]  # "18517" stays a string id
    assert back.records[0].targets == {"e_above_hull": 0.0}
    assert back.records[12].targets == {}
    assert back.records[0].data["mat_id"] == "agm003188153"
    assert back.records[0].data["stress"] == records[0].data["stress"]
    assert back.records[0].data["decomposition"] == " Ac "
    assert back.records[12].data["material_id"] == records[12].data["material_id"]
    for a, b in zip(records, back.records):
        assert np.allclose(a.structure.lattice.matrix, b.structure.lattice.matrix, atol=1e-12)
        assert np.allclose(a.structure.cart_coords, b.structure.cart_coords, atol=1e-10)
        assert [s.species_string for s in a.structure] == [s.species_string for s in b.structure]
    again = read_structures(path, target="e_above_hull", skip_invalid=True)
    assert len(again) == 10 and len(again.skipped) == 6


def test_awkward_ids_and_values_survive(si, tmp_path):
    records = [
        StructureRecord("0012", si, targets={"e form": -0.5, "energy": -10.8}),
        StructureRecord('Si "quoted" \\ id', si.copy(), data={"note": "a=b c", "flag": True, "none": None}),
        StructureRecord("1e5", si.copy(), targets={"e_above_hull": 0.0}),
    ]
    path = write_structures(records, tmp_path / "odd.extxyz.gz")
    back = read_structures(path).records
    assert [r.structure_id for r in back] == ["0012", 'Si "quoted" \\ id', "1e5"]
    assert back[0].targets == {"e form": -0.5, "energy": -10.8}
    assert back[1].data == {"note": "a=b c", "flag": True, "none": None}


def test_plain_keys_readable_by_ase(gate, tmp_path):
    from ase.io import read

    path = write_structures([StructureRecord("mp-10009", gate, targets={"e_above_hull": 0.01})], tmp_path / "c.xyz")
    atoms = read(path, index=0, format="extxyz")
    assert atoms.info["structure_id"] == "mp-10009"
    assert atoms.info["e_above_hull"] == pytest.approx(0.01)
    assert atoms.get_chemical_formula() == gate.composition.alphabetical_formula.replace(" ", "")
    assert np.allclose(atoms.cell.array, gate.lattice.matrix)


def test_wrong_suffix_and_disorder(gate, tmp_path):
    with pytest.raises(InvalidInputError, match="extended XYZ"):
        write_structures([StructureRecord("x", gate)], tmp_path / "x.cif")
    disordered = gate.copy()
    disordered.replace(0, {"Ga": 0.5, "In": 0.5})
    with pytest.raises(InvalidInputError, match="disordered"):
        write_structures([StructureRecord("x", disordered)], tmp_path / "x.extxyz")


def test_a_failed_write_leaves_the_earlier_file_whole_and_no_temporary_file(si, gate, tmp_path):
    # written through a temporary file and os.replace: another campaign reading the candidate file meanwhile sees a
    # whole file (two bench campaigns started at once used to read a half-written pool), and a bad record spoils
    # nothing already there
    path = write_structures([StructureRecord("a", si), StructureRecord("b", si.copy())], tmp_path / "c.extxyz.gz")
    disordered = gate.copy()
    disordered.replace(0, {"Ga": 0.5, "In": 0.5})
    with pytest.raises(InvalidInputError, match="disordered"):
        write_structures([StructureRecord("c", gate), StructureRecord("d", disordered)], path)
    assert read_structures(path).structure_ids == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.extxyz.gz"]
