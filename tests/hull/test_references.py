"""Shipped elemental references, reference structures for stand-in calculators, local entry files."""

from __future__ import annotations

import bz2
import json

import pytest
from screener.errors import InvalidInputError
from screener.hull import (
    FidelityHull,
    elemental_reference_structures,
    load_entries,
    make_reference_entries,
    reference_entries,
    save_entries,
)
from screener.hull.corrections import entry_fidelity


def test_shipped_references_match_the_source_figures():
    # figures from shared/data/README.md: Si -5.42532 (MP), -5.42361 (MatPES PBE), -8.77476 (MatPES r2SCAN) eV/atom
    (mp,) = reference_entries("pbe", elements=["Si"])
    (matpes_pbe,) = reference_entries("pbe", "matpes", elements=["Si"])
    (matpes_scan,) = reference_entries("scan", elements=["Si"])
    assert mp.energy_per_atom == pytest.approx(-5.42532, abs=1e-5)
    assert matpes_pbe.energy_per_atom == pytest.approx(-5.42361, abs=1e-5)
    assert matpes_scan.energy_per_atom == pytest.approx(-8.77476, abs=1e-5)
    assert [entry_fidelity(e) for e in (mp, matpes_pbe, matpes_scan)] == ["pbe", "pbe", "scan"]
    assert matpes_scan.structure.composition.reduced_formula == "Si"
    assert len(reference_entries("pbe")) == 89 and len(reference_entries("scan")) == 89


def test_polymorph_source_takes_the_lowest_energy():
    (c,) = reference_entries("pbe", "mp-polymorphs", elements=["C"])
    assert c.energy_per_atom == pytest.approx(reference_entries("pbe", "mp", elements=["C"])[0].energy_per_atom,
                                              abs=0.01)


def test_reference_errors():
    with pytest.raises(InvalidInputError, match="no scan"):
        reference_entries("scan", "mp")
    with pytest.raises(InvalidInputError, match="unknown reference source"):
        reference_entries("pbe", "nist")
    with pytest.raises(InvalidInputError, match="Xx"):
        reference_entries("pbe", elements=["Xx"])


def test_reference_structures_and_same_calculator_entries():
    structures = elemental_reference_structures(["Si", "O", "Fe"])
    assert set(structures) == {"Si", "O", "Fe"}
    assert all(s.composition.reduced_formula in ("Si", "O2", "Fe") for s in structures.values())
    assert len(elemental_reference_structures(["Si"], source="matpes")["Si"]) == 2
    # a stand-in calculator computed these energies; they form the references of its own hull, uncorrected
    energies = {el: -5.0 * len(s) for el, s in structures.items()}
    refs = make_reference_entries(structures, energies, "scan", label="CHGNet r2scan")
    hull = FidelityHull("scan", references=refs)
    assert hull.hull_energy_ev_per_atom("Fe2O3") == pytest.approx(-5.0)
    assert {e.data["backend"] for e in hull.references} == {"standin"}
    with pytest.raises(InvalidInputError, match="no energy"):
        make_reference_entries(structures, {"Si": -10.0}, "pbe")


def test_local_entry_files_round_trip(tmp_path, mp_entries_readonly, toy_entry):
    path = save_entries(mp_entries_readonly[:5], tmp_path / "db.json.gz")
    back = load_entries([path])
    assert [e.entry_id for e in back] == [e.entry_id for e in mp_entries_readonly[:5]]
    assert [e.energy for e in back] == pytest.approx([e.energy for e in mp_entries_readonly[:5]])
    # Alexandria-style bz2 dump without @class and ids in data
    doc = toy_entry("NaCl", -2.0).as_dict()
    for key in ("@module", "@class"):
        doc.pop(key)
    doc["entry_id"] = None
    doc["data"] = {"mat_id": "agm0001", "fidelity": "pbe"}
    alex = tmp_path / "part.json.bz2"
    with bz2.open(alex, "wt") as fh:
        json.dump([doc], fh)
    (entry,) = load_entries([alex])
    assert entry.entry_id == "agm0001" and entry.data["structure_id"] == "agm0001"
    with pytest.raises(InvalidInputError, match="no such file"):
        load_entries([tmp_path / "missing.json"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"a": 1}]))
    with pytest.raises(InvalidInputError, match="not a computed entry"):
        load_entries([bad])
