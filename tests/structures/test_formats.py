"""Every input format read from real data, and written back out and read again with the same ids and structures."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from screener.errors import InvalidInputError, InvalidStructureError
from screener.structures import read_structures
from screener.structures.formats import detect_format, file_stem

ALEXANDRIA_IDS = [
    "agm003188153",
    "agm003157159",
    "agm003157511",
    "agm002194689",
    "agm002214707",
    "agm003189604",
    "agm002326636",
    "agm002179621",
    "agm002133054",
    "agm002180645",
]


def _same(a, b, tol=1e-6) -> bool:
    return (
        len(a) == len(b)
        and [s.species_string for s in a] == [s.species_string for s in b]
        and np.allclose(a.lattice.matrix, b.lattice.matrix, atol=tol)
        and np.allclose(a.cart_coords, b.cart_coords, atol=tol)
    )


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("Si.cif", "cif"),
        ("Si.cif.gz", "cif"),
        ("POSCAR", "poscar"),
        ("CONTCAR.gz", "poscar"),
        ("POSCAR_mp-149", "poscar"),
        ("Si.vasp", "poscar"),
        ("cands.extxyz", "extxyz"),
        ("cands.xyz", "extxyz"),
        ("entries.json.gz", "json"),
        ("part_1.json.bz2", "json"),
        ("mp_20.csv", "csv"),
        ("notes.txt", None),
        ("OUTCAR", None),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_file_stem_gives_folder_for_plain_poscar():
    assert file_stem(Path("calc/mp-1/POSCAR.gz")) == "mp-1/POSCAR"
    assert file_stem(Path("x/Si.cif.gz")) == "Si"
    assert file_stem(Path("x/part_1.json.bz2")) == "part_1"


def test_alexandria_ids_and_targets(structures_dir):
    result = read_structures(structures_dir / "alexandria_part_1.json.bz2", target="e_above_hull")
    assert result.structure_ids == ALEXANDRIA_IDS
    first = result.records[0]
    assert first.entry is not None and first.entry.entry_id is None  # ids live in data["mat_id"]
    assert first.data["prototype_id"] == "A_22_spg194"
    assert first.targets == {"e_above_hull": 0.0}
    assert result.records[1].targets["e_above_hull"] == pytest.approx(0.012389642)
    assert first.structure.composition.reduced_formula == "Ac"
    assert first.source.endswith("alexandria_part_1.json.bz2")


def test_alexandria_entries_wrapper(structures_dir, tmp_path):
    entries = json.load(bz2.open(structures_dir / "alexandria_part_1.json.bz2", "rt"))
    path = tmp_path / "alexandria_wrapped.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump({"entries": entries}, fh)
    result = read_structures(path, target="e_form")
    assert result.structure_ids == ALEXANDRIA_IDS
    assert result.records[0].targets["e_form"] == 0.0


def test_entry_attribute_target(structures_dir):
    result = read_structures(structures_dir / "mp_Li-Fe-O_subset.json.gz", target="energy_per_atom")
    assert len(result) == 14
    assert result.structure_ids[0] == "mp-1211097"  # entry_id wins
    for record in result:
        assert record.targets["energy_per_atom"] == pytest.approx(record.entry.energy_per_atom)


def test_cse_json_round_trip(structures_dir, tmp_path):
    from monty.serialization import dumpfn

    records = read_structures(structures_dir / "mp_Li-Fe-O_subset.json.gz").records
    dumpfn([r.entry for r in records], tmp_path / "entries.json")
    dumpfn(records[3].entry, tmp_path / "single.json.gz")
    back = read_structures(tmp_path / "entries.json").records
    assert [r.structure_id for r in back] == [r.structure_id for r in records]
    assert all(_same(a.structure, b.structure) for a, b in zip(records, back))
    assert back[5].entry.energy == pytest.approx(records[5].entry.energy)
    single = read_structures(tmp_path / "single.json.gz").records
    assert [r.structure_id for r in single] == [records[3].structure_id]


def test_structure_json_single_and_list(gate, si, tmp_path):
    (tmp_path / "gate.json").write_text(gate.to_json())
    with gzip.open(tmp_path / "two.json.gz", "wt") as fh:
        json.dump([gate.as_dict(), si.as_dict()], fh)
    single = read_structures(tmp_path / "gate.json").records
    assert [r.structure_id for r in single] == ["gate"]
    assert _same(single[0].structure, gate)
    pair = read_structures(tmp_path / "two.json.gz").records
    assert [r.structure_id for r in pair] == ["two.json.gz:0", "two.json.gz:1"]
    assert _same(pair[1].structure, si)


def test_aviary_table_json(structures_dir):
    result = read_structures(structures_dir / "aviary_examples_subset.json", target="E_f")
    assert len(result) == 13
    assert result.structure_ids[0] == "c07b988125b3a0adc329b2449eeaac24c9e7def8"  # material_id column
    hf = result.records[0]
    assert hf.structure.composition.reduced_formula == "Hf"  # single-element structures are valid
    assert hf.targets == {"E_f": 0.0}
    assert hf.data["protostructure"] == "A_hP2_194_c:Hf"


def test_pandas_split_json(structures_dir, tmp_path):
    table = json.load(open(structures_dir / "aviary_examples_subset.json"))
    labels = list(table["structure"])
    split = {
        "index": labels,
        "columns": ["structure", "E_f"],
        "data": [[table["structure"][k], table["E_f"][k]] for k in labels],
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    result = read_structures(tmp_path / "split.json", target="E_f")
    assert result.structure_ids == [f"split.json:{k}" for k in labels]
    assert [r.targets["E_f"] for r in result] == pytest.approx([table["E_f"][k] for k in labels])


def test_mp20_csv(structures_dir):
    result = read_structures(structures_dir / "mp_20_test_first12.csv", target="e_above_hull")
    assert len(result) == 12
    first = result.records[0]
    assert first.structure_id == "mp-10009"
    assert first.structure.composition.reduced_formula == "GaTe" and len(first.structure) == 8
    assert first.targets == {"e_above_hull": 0.0}
    assert first.data["band_gap"] == pytest.approx(0.898, abs=1e-3)
    assert "cif" not in first.data and "" not in first.data  # the CIF and pandas' index column are not data


def test_perov5_csv_integer_ids(structures_dir):
    result = read_structures(structures_dir / "perov_5_val_first6.csv", target="heat_ref")
    assert result.structure_ids[:2] == ["18517", "15400"]
    assert all(len(r.structure) == 5 for r in result)


def test_csv_without_ids_uses_row_index(structures_dir, tmp_path):
    text = (structures_dir / "mp_20_test_first12.csv").read_text()
    (tmp_path / "noid.csv").write_text(text.replace("material_id", "mpid", 1))
    result = read_structures(tmp_path / "noid.csv")
    assert result.structure_ids[:2] == ["noid.csv:0", "noid.csv:1"]
    assert result.records[0].data["mpid"] == "mp-10009"


def test_csv_without_cif_column(tmp_path):
    (tmp_path / "x.csv").write_text("material_id,formula\nmp-1,Si\n")
    with pytest.raises(InvalidStructureError, match="no 'cif' column") as info:
        read_structures(tmp_path / "x.csv")
    assert info.value.structure_id == str(tmp_path / "x.csv")


def test_cif_round_trip(gate, structures_dir, tmp_path):
    from pymatgen.io.cif import CifWriter

    result = read_structures(structures_dir / "mp-10009.cif")
    assert result.structure_ids == ["mp-10009"]
    CifWriter(result.records[0].structure).write_file(tmp_path / "GaTe.cif")
    back = read_structures(tmp_path / "GaTe.cif").records[0]
    assert back.structure_id == "GaTe"
    assert back.structure.matches(gate) and len(back.structure) == 8


def test_multi_block_cif_ids(gate, si, tmp_path):
    from pymatgen.io.cif import CifWriter

    text = str(CifWriter(gate)) + "\n" + str(CifWriter(si)).replace("data_Si", "data_Si_2")
    (tmp_path / "two.cif").write_text(text)
    result = read_structures(tmp_path / "two.cif")
    assert result.structure_ids == ["two.cif:0", "two.cif:1"]
    assert len(result.records[1].structure) == 2


def test_poscar_and_contcar_round_trip(si, structures_dir, tmp_path):
    from pymatgen.io.vasp import Poscar

    result = read_structures(structures_dir / "vasp")  # folder: POSCAR.gz and CONTCAR.gz
    assert result.structure_ids == ["GGA_Relax_1/CONTCAR", "GGA_Relax_1/POSCAR"]
    assert _same(result.records[1].structure, si)
    Poscar(si).write_file(tmp_path / "Si.vasp")
    shutil.copy(tmp_path / "Si.vasp", tmp_path / "POSCAR_Si")
    back = read_structures([tmp_path / "Si.vasp", tmp_path / "POSCAR_Si"])
    assert back.structure_ids == ["Si", "POSCAR_Si"]
    assert all(_same(r.structure, si) for r in back)


def test_extxyz_info_keys_become_data_and_targets(gate, si, tmp_path):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for structure, e_form in ((gate, -0.575), (si, 0.0)):
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info = {"e_form": e_form, "label": "from-mp"}
        frames.append(atoms)
    frames[1].info["material_id"] = "mp-149"
    write(tmp_path / "mixed.extxyz", frames, format="extxyz")
    result = read_structures(tmp_path / "mixed.extxyz", target="e_form")
    assert result.structure_ids == ["mixed.extxyz:0", "mp-149"]
    assert result.records[0].targets == {"e_form": pytest.approx(-0.575)}
    assert result.records[0].data["label"] == "from-mp"
    assert _same(result.records[0].structure, gate)


def test_unreadable_file_names_file_and_parser(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3\nloop_\n _atom_site_label\n")
    with pytest.raises(InvalidStructureError) as info:
        read_structures(bad)
    assert info.value.structure_id == str(bad)
    assert info.value.reason.startswith("unreadable CIF file (")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidStructureError, match="unreadable JSON file .*JSONDecodeError"):
        read_structures(tmp_path / "bad.json")


def test_json_without_structures(tmp_path, si):
    (tmp_path / "settings.json").write_text('{"a": 1}')
    with pytest.raises(InvalidStructureError, match="JSON holds no structures"):
        read_structures(tmp_path / "settings.json")
    (tmp_path / "si.json").write_text(si.to_json())
    result = read_structures(tmp_path, skip_invalid=True)  # a stray JSON file in a folder can be skipped
    assert result.structure_ids == ["si"]
    assert [e.structure_id for e in result.skipped] == [str(tmp_path / "settings.json")]
