"""Fixtures of the hull tests: the 375 real MP entries of Li-Fe-O (loaded once per session), hand-made entries with
known energies and SCAN twins of PBE entries (as fixtures, because tests run with ``--import-mode=importlib``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

MP_ENTRIES = Path(__file__).parents[1] / "data" / "mp_entries" / "Li-Fe-O.json.gz"


def _toy_entry(formula: str, energy_per_atom_ev: float, sid: str | None = None, fidelity: str = "pbe"):
    """A hand-made entry with no run type (so no correction applies) and a known energy per atom."""
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    comp = Composition(formula)
    data = {"fidelity": fidelity, "structure_id": sid or formula}
    return ComputedEntry(comp, energy_per_atom_ev * comp.num_atoms, data=data)


def _as_scan(entry, shift_ev_per_atom: float = -0.1):
    """A SCAN twin of a PBE entry: uncorrected energy shifted, r2SCAN run type, same structure_id."""
    e = copy.deepcopy(entry)
    e.energy_adjustments = []
    e._energy = e.uncorrected_energy + shift_ev_per_atom * e.composition.num_atoms
    e.parameters = {**e.parameters, "run_type": "r2SCAN"}
    e.data = {**e.data, "fidelity": "scan", "structure_id": str(entry.data.get("structure_id") or entry.entry_id)}
    return e


@pytest.fixture
def toy_entry():
    """``toy_entry(formula, energy_per_atom_ev, sid=None, fidelity="pbe")`` -> ComputedEntry."""
    return _toy_entry


@pytest.fixture
def as_scan():
    """``as_scan(pbe_entry, shift_ev_per_atom=-0.1)`` -> its r2SCAN twin (same structure_id)."""
    return _as_scan


@pytest.fixture
def mp_entries_path() -> Path:
    """tests/data/mp_entries/Li-Fe-O.json.gz (see the README there)."""
    return MP_ENTRIES


@pytest.fixture(scope="session")
def mp_entries_readonly():
    """The 375 MP entries, shared by all tests: do not modify them (use ``li_fe_o_entries``)."""
    from monty.serialization import loadfn

    return loadfn(MP_ENTRIES)


@pytest.fixture
def li_fe_o_entries(mp_entries_readonly):
    """Fresh copies of the 375 MP ComputedStructureEntries (MP2020 already applied), safe to modify."""
    return copy.deepcopy(mp_entries_readonly)
