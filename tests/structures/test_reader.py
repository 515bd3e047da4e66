"""read_structures: paths, ids, targets, validation and skip_invalid."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from screener.errors import InvalidInputError, InvalidStructureError
from screener.structures import ReadResult, read_structures


@pytest.fixture
def mixed_folder(tmp_path, gate, si, structures_dir):
    """A folder with 2 good structures and 4 bad ones, each bad in a different way."""
    from pymatgen.io.vasp import Poscar

    folder = tmp_path / "cands"
    folder.mkdir()
    shutil.copy(structures_dir / "mp-10009.cif", folder / "a_good.cif")
    Poscar(si).write_file(folder / "b_good.vasp")
    crowded = gate.copy()
    crowded.append("Te", gate[0].coords + np.array([0.2, 0.0, 0.0]), coords_are_cartesian=True)
    (folder / "c_overlap.json").write_text(crowded.to_json())
    disordered = gate.copy()
    disordered.replace(1, {"Ga": 0.5, "In": 0.5})
    (folder / "d_disordered.json").write_text(disordered.to_json())
    (folder / "e_unreadable.cif").write_text("data_x\nthis is not a cif\n")
    exotic = si.copy()
    exotic.replace_species({"Si": "Og"})
    (folder / "f_exotic.json").write_text(exotic.to_json())
    (folder / "README.txt").write_text("not a structure")  # ignored: unknown format inside a folder
    (folder / ".hidden.cif").write_text("ignored")
    return folder


def test_first_invalid_raises_with_its_id(mixed_folder):
    with pytest.raises(InvalidStructureError) as info:
        read_structures(mixed_folder)
    assert info.value.structure_id == "c_overlap"
    assert "overlapping atoms" in info.value.reason


def test_skip_invalid_collects_and_warns(mixed_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="screener.structures"):
        result = read_structures(mixed_folder, skip_invalid=True)
    assert isinstance(result, ReadResult)
    assert result.structure_ids == ["a_good", "b_good"]
    reasons = {err.structure_id: err.reason for err in result.skipped}
    assert list(reasons) == ["c_overlap", "d_disordered", str(mixed_folder / "e_unreadable.cif"), "f_exotic"]
    assert "overlapping atoms" in reasons["c_overlap"]
    assert "partial occupancy / disorder at site 1" in reasons["d_disordered"]
    assert reasons[str(mixed_folder / "e_unreadable.cif")].startswith("unreadable CIF file")
    assert "Og" in reasons["f_exotic"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 4 and all(m.startswith("skipping ") for m in warned)
    assert "skipped 4" in result.summary()


def test_validate_false_keeps_overlapping(mixed_folder):
    result = read_structures(mixed_folder / "c_overlap.json", validate=False)
    assert result.structure_ids == ["c_overlap"]


def test_missing_target_is_invalid(structures_dir):
    with pytest.raises(InvalidStructureError) as info:
        read_structures(structures_dir / "alexandria_part_1.json.bz2", target="band_gap_pbe")
    assert info.value.structure_id == "agm003188153"
    assert info.value.reason.startswith("missing target 'band_gap_pbe' (available: ")
    assert "e_above_hull" in info.value.reason


def test_blank_target_cell_is_invalid_and_skippable(structures_dir, tmp_path):
    import csv

    csv.field_size_limit(2**31 - 1)
    rows = list(csv.DictReader(open(structures_dir / "mp_20_test_first12.csv", newline="")))
    rows[2]["e_above_hull"] = ""
    rows[3]["e_above_hull"] = "n/a"
    with open(tmp_path / "holes.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = read_structures(tmp_path / "holes.csv", target="e_above_hull", skip_invalid=True)
    assert len(result) == 10
    skipped = {e.structure_id: e.reason for e in result.skipped}
    assert skipped[rows[2]["material_id"]].startswith("missing target 'e_above_hull'")
    assert skipped[rows[3]["material_id"]] == "target 'e_above_hull' is not a number ('n/a')"


def test_broken_item_inside_a_readable_file_is_skipped_alone(structures_dir, tmp_path):
    entries = json.load(open(structures_dir / "aviary_examples_subset.json"))
    first = next(iter(entries["structure"]))
    entries["structure"][first] = {"lattice": "nonsense"}
    (tmp_path / "table.json").write_text(json.dumps(entries))
    result = read_structures(tmp_path / "table.json", skip_invalid=True)
    assert len(result) == 12
    assert [e.structure_id for e in result.skipped] == [entries["material_id"][first]]
    assert result.skipped[0].reason.startswith("unreadable structure (")


def test_duplicate_ids_are_an_error(structures_dir):
    # mp-10009.cif and the first row of the MP-20 CSV are both "mp-10009"
    with pytest.raises(InvalidInputError, match=r"duplicate structure id 'mp-10009' \(in .*mp-10009.cif and"):
        read_structures([structures_dir / "mp-10009.cif", structures_dir / "mp_20_test_first12.csv"])


def test_ids_are_unique_across_formats(structures_dir):
    files = [
        "alexandria_part_1.json.bz2",
        "aviary_examples_subset.json",
        "mp_Li-Fe-O_subset.json.gz",
        "mp_20_test_first12.csv",
        "perov_5_val_first6.csv",
        "vasp",
    ]
    calls = []
    result = read_structures([structures_dir / f for f in files], progress=lambda i, n: calls.append((i, n)))
    assert len(result) == 10 + 13 + 14 + 12 + 6 + 2
    assert len(set(result.structure_ids)) == len(result)
    assert calls[-1] == (7, 7)  # the vasp folder holds two files


@pytest.mark.parametrize("bad", ["missing.cif", "nowhere/"])
def test_missing_path(tmp_path, bad):
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        read_structures(tmp_path / bad)


def test_unknown_format_and_empty_inputs(tmp_path):
    (tmp_path / "OUTCAR").write_text("x")
    with pytest.raises(InvalidInputError, match="unknown structure file format"):
        read_structures(tmp_path / "OUTCAR")
    with pytest.raises(InvalidInputError, match="folder holds no structure files"):
        read_structures(tmp_path)
    with pytest.raises(InvalidInputError, match="no structure files given"):
        read_structures([])


def test_molecule_frame_in_extxyz_is_invalid(tmp_path):
    from ase import Atoms
    from ase.io import write

    write(tmp_path / "mol.extxyz", [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])], format="extxyz")
    with pytest.raises(InvalidStructureError) as info:
        read_structures(tmp_path / "mol.extxyz")
    assert info.value.structure_id == "mol.extxyz:0"
    assert "not periodic in 3D" in info.value.reason
