"""Missing SCAN competing phases, honest status flags and the explicitly flagged mixing fallback."""

from __future__ import annotations

import json
import math

import pytest
from screener.hull import FidelityHull, HullSet, IncompleteHullError, reference_entries


@pytest.fixture
def li_o_set(mp_entries_readonly, as_scan):
    """PBE hull of the real Li-O entries; SCAN hull with Li, O2 and Li2O only."""
    li_o = [e for e in mp_entries_readonly if {str(el) for el in e.composition.elements} <= {"Li", "O"}]
    pbe = FidelityHull("pbe", entries=li_o)
    stable = {e.composition.reduced_formula: e for e in pbe.stable_entries()}
    scan = FidelityHull("scan", entries=[as_scan(stable[f]) for f in ("Li", "O2", "Li2O")])
    return HullSet({"pbe": pbe, "scan": scan}), stable


def test_missing_scan_phases_of_li_fe_o(mp_entries_readonly, as_scan):
    pbe = FidelityHull("pbe", entries=mp_entries_readonly)
    stable = {e.composition.reduced_formula: e for e in pbe.stable_entries()}
    scan = FidelityHull("scan", references=reference_entries("scan", elements=["Li", "Fe", "O"]))
    # Fe2O3 already has a SCAN energy under the same structure_id
    scan.add_entries([as_scan(stable["Fe2O3"])])
    # FeO computed under another id: recognised by its structure
    feo = as_scan(stable["FeO"])
    feo.data["structure_id"] = "my-own-feo"
    scan.add_entries([feo])
    hulls = HullSet({"pbe": pbe, "scan": scan})
    missing = hulls.missing_competing_phases("Li-Fe-O", e_hull_tol_ev_per_atom=0.0)
    assert sorted(p.formula for p in missing) == sorted(["Li2O", "Li2O2", "LiO8", "LiFeO2", "Li2FeO3", "Li5FeO4"])
    assert all(p.known_fidelity == "pbe" and p.e_hull_ev_per_atom == pytest.approx(0.0) for p in missing)
    assert all(p.structure is not None and p.structure_id.startswith("mp-") for p in missing)
    # near-hull phases (within 25 meV/atom of the PBE hull) are included by default
    near = hulls.missing_competing_phases("Li-Fe-O")
    assert len(near) > len(missing) and max(p.e_hull_ev_per_atom for p in near) <= 0.025
    # a binary only needs its own subsystem
    assert sorted(p.formula for p in hulls.missing_competing_phases("Li-O", e_hull_tol_ev_per_atom=0.0)) == [
        "Li2O", "Li2O2", "LiO8"]


def test_evaluate_flags_incomplete_then_complete(li_o_set, as_scan):
    hulls, stable = li_o_set
    candidate = as_scan(stable["Li2O2"], -0.15)
    flagged = hulls.evaluate(candidate)
    assert flagged.status == "incomplete" and stable["LiO8"].entry_id in flagged.missing
    assert stable["Li2O2"].entry_id not in flagged.missing  # the candidate itself is not its own competitor
    with pytest.raises(IncompleteHullError, match="LiO8"):
        hulls.evaluate(candidate, on_missing="raise")
    hulls.add_entries([as_scan(stable["LiO8"])])
    done = hulls.evaluate(candidate, on_missing="raise", e_hull_tol_ev_per_atom=0.0)
    assert done.status == "complete" and done.missing == []
    assert done.e_hull_ev_per_atom == pytest.approx(hulls["scan"].e_above_hull_ev_per_atom(candidate))
    assert done.fidelity == "scan" and done.stable == (done.e_hull_ev_per_atom <= 1e-6)
    pbe = hulls.evaluate(stable["Li2O"])
    assert pbe.status == "complete" and pbe.e_hull_ev_per_atom == pytest.approx(0.0)


def test_mixing_fallback_is_flagged(li_o_set, as_scan):
    hulls, stable = li_o_set
    candidate = as_scan(stable["Li2O2"], -0.15)
    mixed = hulls.evaluate(candidate, on_missing="mix")
    assert mixed.status == "mixed" and mixed.missing
    assert math.isfinite(mixed.e_hull_ev_per_atom) and math.isfinite(mixed.e_form_ev_per_atom)


def test_add_entries_routes_by_functional_and_round_trips(li_o_set, as_scan):
    hulls, stable = li_o_set
    n_scan, n_pbe = len(hulls["scan"]), len(hulls["pbe"])
    keys = hulls.add_entries([as_scan(stable["LiO8"]), as_scan(stable["Li2O2"])])
    assert len(keys["scan"]) == 2 and "pbe" not in keys
    assert (len(hulls["scan"]), len(hulls["pbe"])) == (n_scan + 2, n_pbe)
    back = HullSet.from_dict(json.loads(hulls.to_json()))
    assert len(back["scan"]) == len(hulls["scan"]) and len(back["pbe"]) == len(hulls["pbe"])
    assert back.missing_competing_phases("Li-O", e_hull_tol_ev_per_atom=0.0) == []


def test_from_references_seeds_both_hulls():
    hulls = HullSet.from_references(elements=["Si", "O"])
    assert len(hulls["pbe"]) == 2 and len(hulls["scan"]) == 2
    assert hulls["scan"].hull_formation_energy_ev_per_atom("SiO2") == pytest.approx(0.0)


def test_unknown_pbe_system_is_unchecked_not_complete(toy_entry):
    hulls = HullSet({"scan": FidelityHull("scan", references=reference_entries("scan", elements=["Si", "O"]))})
    sio2 = toy_entry("SiO2", -9.0, fidelity="scan")
    result = hulls.evaluate(sio2, on_missing="raise")
    assert result.status == "unchecked" and result.missing == []
    assert result.e_hull_ev_per_atom == pytest.approx(hulls["scan"].e_above_hull_ev_per_atom(sio2))


def test_scan_hull_with_known_pbe_hull(li_o_set):
    hulls, _ = li_o_set
    scan = FidelityHull("scan", entries=hulls["scan"].entries, known_hull=hulls["pbe"])
    assert [p.formula for p in scan.missing_competing_phases("Li-O", e_hull_tol_ev_per_atom=0.0)] == [
        "Li2O2", "LiO8"]
    with pytest.raises(Exception, match="other functional"):
        FidelityHull("scan").missing_competing_phases("Li-O")
