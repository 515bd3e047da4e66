"""Energy scales: functional detection, MP2020 applied exactly once and only to real GGA/GGA+U entries."""

from __future__ import annotations

import copy

import pytest
from screener.errors import InvalidInputError
from screener.hull import FidelityHull, FidelityMismatchError, entry_fidelity, has_mp2020, needs_mp2020
from screener.hull.corrections import prepare_entries


def _oxide(entries, formula="Fe2O3"):
    return next(e for e in entries if e.composition.reduced_formula == formula and e.energy_adjustments)


def test_fidelity_from_data_or_run_type(toy_entry):
    e = toy_entry("NaCl", -2.0)
    assert entry_fidelity(e) == "pbe"
    e.data = {}
    assert entry_fidelity(e) is None
    e.parameters = {"run_type": "GGA+U"}
    assert entry_fidelity(e) == "pbe"
    e.parameters = {"run_type": "r2SCAN"}
    assert entry_fidelity(e) == "scan"
    e.data = {"fidelity": "r2scan"}
    assert entry_fidelity(e) == "scan"


def test_mp2020_not_applied_twice(mp_entries_readonly):
    entries = mp_entries_readonly
    corrected = [e for e in entries if e.energy_adjustments]
    assert corrected and all(has_mp2020(e) for e in corrected)
    assert not any(needs_mp2020(e) for e in corrected)
    # entries without adjustments (e.g. LiFe: MP2020 has nothing to add) are re-checked from their raw energy
    prepared = prepare_entries(entries, "pbe")
    assert [p.energy for p in prepared] == pytest.approx([e.energy for e in entries], abs=1e-9)
    assert [p for p, e in zip(prepared, entries) if e.energy_adjustments] == corrected  # kept as they are
    # what pymatgen itself does with clean=False on these (decoded) entries: it adds the corrections again
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    oxide = _oxide(entries)
    twice = MaterialsProject2020Compatibility().process_entries([oxide], clean=False, inplace=False)[0]
    assert twice.energy < oxide.energy - 1.0  # the trap the hull avoids


def test_uncorrected_gga_entry_gets_mp2020_once(mp_entries_readonly):
    oxide = _oxide(mp_entries_readonly)
    raw = copy.deepcopy(oxide)
    raw.energy_adjustments = []
    raw.data = {**raw.data, "structure_id": "raw-fe2o3", "backend": "vasp"}
    assert needs_mp2020(raw)
    (fixed,) = prepare_entries([raw], "pbe")
    assert fixed is not raw and raw.energy_adjustments == []  # input untouched
    assert fixed.energy == pytest.approx(oxide.energy, abs=1e-6)
    (again,) = prepare_entries([fixed], "pbe")  # a second pass changes nothing
    assert again.energy == pytest.approx(oxide.energy, abs=1e-6)
    # in a hull: the raw entry and MP's corrected twin sit at the same E_hull
    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    assert hull.e_above_hull_ev_per_atom(raw) == pytest.approx(hull.e_above_hull_ev_per_atom(oxide), abs=1e-6)


def test_standin_and_flagged_entries_are_never_corrected(mp_entries_readonly):
    oxide = _oxide(mp_entries_readonly)
    for data in ({"backend": "standin"}, {"backend": "replay", "apply_mp2020": False}):
        e = copy.deepcopy(oxide)
        e.energy_adjustments = []
        e.data = {**e.data, **data, "fidelity": "pbe"}
        assert not needs_mp2020(e)
        (same,) = prepare_entries([e], "pbe")
        assert same.energy == pytest.approx(e.uncorrected_energy)


def test_scan_entries_are_uncorrected_and_refuse_gga_corrections(mp_entries_readonly):
    oxide = _oxide(mp_entries_readonly)
    scan = copy.deepcopy(oxide)
    scan.parameters = {**scan.parameters, "run_type": "r2SCAN"}
    with pytest.raises(InvalidInputError, match="MP2020"):
        prepare_entries([scan], "scan")
    scan.energy_adjustments = []
    (same,) = prepare_entries([scan], "scan")
    assert same.energy == pytest.approx(oxide.uncorrected_energy)
    with pytest.raises(FidelityMismatchError):
        prepare_entries([scan], "pbe")


def test_entry_without_functional_is_refused(toy_entry):
    e = toy_entry("NaCl", -2.0)
    e.data = {}
    with pytest.raises(InvalidInputError, match="functional"):
        prepare_entries([e], "pbe")


def test_incompatible_gga_entry(mp_entries_readonly):
    oxide = copy.deepcopy(_oxide(mp_entries_readonly))
    oxide.energy_adjustments = []
    oxide.parameters = {**oxide.parameters, "hubbards": {"Fe": 3.0, "O": 0.0}}  # not MP's U for Fe
    with pytest.raises(InvalidInputError, match="MP2020"):
        prepare_entries([oxide], "pbe")
    assert prepare_entries([oxide], "pbe", on_incompatible="skip") == []
