"""Tests of screener/campaign/hulls.py: the campaign's adapter over the real screener.hull.FidelityHull."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from screener.campaign.hulls import CampaignHulls, prepare_references

MU = {"pbe": {"Li": -1.9, "Na": -1.3}, "scan": {"Li": -2.3, "Na": -1.6}}


def _structure(species):
    n = len(species)
    return Structure(Lattice.orthorhombic(3.0 * n, 3.0, 3.0), species, [[i / n, 0, 0] for i in range(n)])


def _entry(sid, species, fidelity, e_form):
    s = _structure(species)
    energy = sum(MU[fidelity][str(sp)] for sp in s.species) + e_form * len(s)
    return ComputedStructureEntry(s, energy, parameters={"run_type": "standin"}, entry_id=sid,
                                  data={"structure_id": sid, "fidelity": fidelity, "backend": "standin"})


@pytest.fixture
def hulls():
    refs = {f: [_entry(f"ref:{f}:{el}", [el], f, 0.0) for el in ("Li", "Na")] for f in ("pbe", "scan")}
    return CampaignHulls({f: [e.as_dict() for e in es] for f, es in refs.items()})


def test_new_stable_phase_moves_the_hull_at_its_neighbours(hulls):
    assert hulls.hull_formation_energy_ev_per_atom("pbe", "LiNa") == pytest.approx(0.0)
    hulls.add_result("pbe", _entry("Li3Na", ["Li", "Li", "Li", "Na"], "pbe", -0.3).as_dict())
    # hull at x_Na = 0.5 on the tie line Li3Na (0.25, -0.3) -- Na (1, 0): -0.3 * 0.5 / 0.75
    assert hulls.hull_formation_energy_ev_per_atom("pbe", "LiNa") == pytest.approx(-0.2)
    assert hulls.hull_formation_energy_ev_per_atom("scan", "LiNa") == pytest.approx(0.0)  # never mixed
    lina = _entry("LiNa", ["Li", "Na"], "pbe", -0.1).as_dict()
    assert hulls.e_form_ev_per_atom("pbe", lina) == pytest.approx(-0.1)
    assert hulls.e_above_hull_ev_per_atom("pbe", lina) == pytest.approx(0.1)
    snap = hulls.snapshot("pbe")
    assert snap["stable_ids"] == ["Li3Na"] and snap["n_entries"] == 1
    json.dumps(snap["json"])  # storable in the ledger


def test_scan_hull_reports_missing_competing_phases():
    # a known phase given at PBE only (e.g. an MP GGA entry without its r2SCAN twin): the SCAN hull needs it
    refs = {f: [_entry(f"ref:{f}:{el}", [el], f, 0.0) for el in ("Li", "Na")] for f in ("pbe", "scan")}
    refs["pbe"].append(_entry("Li3Na", ["Li", "Li", "Li", "Na"], "pbe", -0.3))
    hulls = CampaignHulls({f: [e.as_dict() for e in es] for f, es in refs.items()})
    missing = hulls.missing_competing_phases("scan", "Li-Na")
    assert [sid for sid, _ in missing] == ["Li3Na"] and missing[0][1].composition.reduced_formula == "NaLi3"
    assert hulls.missing_competing_phases("pbe", "Li-Na") == []
    hulls.add_result("scan", _entry("Li3Na", ["Li", "Li", "Li", "Na"], "scan", -0.35).as_dict())
    assert hulls.missing_competing_phases("scan", "Li-Na") == []


def test_element_without_reference_gives_nan_not_a_guess(hulls):
    import math

    assert math.isnan(hulls.hull_formation_energy_ev_per_atom("scan", "LiK"))


def test_shipped_references_file(tmp_path):
    path = prepare_references(tmp_path, "auto", ["Li", "O"], backend="vasp")
    data = json.loads(path.read_text())
    assert set(data) == {"pbe", "scan", "meta"} and len(data["pbe"]) == 2 and len(data["scan"]) == 2
    hulls = CampaignHulls.from_file(path)
    assert hulls.hull_formation_energy_ev_per_atom("scan", "Li2O") == pytest.approx(0.0)
    assert prepare_references(tmp_path, "shipped", ["Fe"], backend="vasp") == path  # written once, then reused
