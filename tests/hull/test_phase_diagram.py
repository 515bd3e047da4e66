"""FidelityHull: real MP Li-Fe-O hull against pymatgen, a hand-computed toy system, caching, persistence."""

from __future__ import annotations

import json

import pytest
from screener.hull import FidelityHull, FidelityMismatchError, MissingReferenceError, chemsys_elements

STABLE_LI_FE_O = sorted(["Fe", "Li", "O2", "FeO", "Fe2O3", "Li2O", "Li2O2", "LiO8", "LiFeO2", "Li2FeO3", "Li5FeO4"])


def test_li_fe_o_matches_direct_pymatgen(mp_entries_readonly):
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    entries = mp_entries_readonly
    assert len(entries) == 375
    direct = PhaseDiagram(entries)
    hull = FidelityHull("pbe", entries=entries)
    for entry in entries:
        assert hull.e_above_hull_ev_per_atom(entry) == pytest.approx(direct.get_e_above_hull(entry), abs=1e-9)
        assert hull.e_form_ev_per_atom(entry) == pytest.approx(direct.get_form_energy_per_atom(entry), abs=1e-9)
    stable = hull.stable_entries()
    assert sorted(e.composition.reduced_formula for e in stable) == STABLE_LI_FE_O
    assert sum(hull.is_stable(e) for e in entries) == 11
    # the Fe-O subsystem is its own (cached) diagram and agrees with pymatgen's
    fe_o = [e for e in entries if {str(el) for el in e.composition.elements} <= {"Fe", "O"}]
    sub = PhaseDiagram(fe_o)
    assert sorted(e.composition.reduced_formula for e in hull.stable_entries("Fe-O")) == sorted(
        e.composition.reduced_formula for e in sub.stable_entries
    )


def test_hull_energy_and_formation_energy_at_a_composition(mp_entries_readonly):
    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    lifeo2 = next(e for e in hull.stable_entries() if e.composition.reduced_formula == "LiFeO2")
    # at a stable composition the hull is the phase itself
    assert hull.hull_formation_energy_ev_per_atom("LiFeO2") == pytest.approx(hull.e_form_ev_per_atom(lifeo2))
    assert hull.hull_energy_ev_per_atom("LiFeO2") == pytest.approx(lifeo2.energy_per_atom)
    # a predicted formation energy 50 meV above the hull
    e_form = hull.hull_formation_energy_ev_per_atom("Li2Fe2O4") + 0.05
    assert hull.e_above_hull_from_formation_energy("Li2Fe2O4", e_form) == pytest.approx(0.05)


@pytest.fixture
def toy_hull(toy_entry) -> FidelityHull:
    """A = Na (-1 eV/atom), B = Cl (-2 eV/atom), NaCl (-2.0 eV/atom), Na2Cl (-1.5 eV/atom)."""
    return FidelityHull(
        "pbe",
        entries=[toy_entry("NaCl", -2.0), toy_entry("Na2Cl", -1.5)],
        references=[toy_entry("Na", -1.0), toy_entry("Cl2", -2.0)],
    )


def test_toy_system_by_hand(toy_hull):
    hull = toy_hull
    nacl, na2cl = hull.get_entry("NaCl"), hull.get_entry("Na2Cl")
    # E_form(NaCl) = -2.0 - (0.5 * -1 + 0.5 * -2) = -0.5; it is the only compound: on the hull
    assert hull.e_form_ev_per_atom(nacl) == pytest.approx(-0.5)
    assert hull.e_above_hull_ev_per_atom(nacl) == pytest.approx(0.0)
    # E_form(Na2Cl) = -1.5 - (2/3 * -1 + 1/3 * -2) = -1/6; hull at x_Cl = 1/3 is -0.5 * (1/3) / 0.5 = -1/3
    assert hull.e_form_ev_per_atom(na2cl) == pytest.approx(-1 / 6)
    assert hull.hull_formation_energy_ev_per_atom("Na2Cl") == pytest.approx(-1 / 3)
    assert hull.e_above_hull_ev_per_atom(na2cl) == pytest.approx(1 / 6)
    assert hull.decomposition(na2cl) == pytest.approx({"Na": 1 / 3, "NaCl": 2 / 3})
    # the hull's total energy at Na2Cl: 1/3 Na (-1) + 2/3 NaCl (-2)
    assert hull.hull_energy_ev_per_atom("Na2Cl") == pytest.approx(-5 / 3)
    assert [e.composition.reduced_formula for e in hull.stable_entries()] == ["Cl2", "Na", "NaCl"]


def test_new_stable_phase_changes_neighbours_e_hull(toy_hull, toy_entry):
    hull = toy_hull
    na2cl = hull.get_entry("Na2Cl")
    assert hull.e_above_hull_ev_per_atom(na2cl) == pytest.approx(1 / 6)
    # Na3Cl with E_form = -0.4 eV/atom: per atom -0.4 + (0.75 * -1 + 0.25 * -2) = -1.65 eV/atom
    na3cl = toy_entry("Na3Cl", -1.65)
    # not yet in the hull: below it, so a negative E_hull (-0.4 - (-0.25))
    assert hull.e_above_hull_ev_per_atom(na3cl) == pytest.approx(-0.15)
    assert hull.is_stable(na3cl)
    hull.add_entries([na3cl])
    assert hull.e_above_hull_ev_per_atom(na3cl) == pytest.approx(0.0)
    # Na2Cl (x = 1/3) now sits between Na3Cl (x = 1/4, -0.4) and NaCl (x = 1/2, -0.5): hull -0.4 - 0.1/3
    assert hull.hull_formation_energy_ev_per_atom("Na2Cl") == pytest.approx(-0.4 - 0.1 / 3)
    assert hull.e_above_hull_ev_per_atom(na2cl) == pytest.approx(-1 / 6 + 0.4 + 0.1 / 3)
    assert "Na3Cl" in {e.composition.reduced_formula for e in hull.stable_entries()}


def test_new_stable_phase_in_real_system_moves_neighbours(mp_entries_readonly):
    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    probe = next(e for e in mp_entries_readonly if e.composition.reduced_formula == "Li3(FeO3)2")
    before = hull.e_above_hull_ev_per_atom(probe)
    # a hypothetical Li3Fe2O6 polymorph 100 meV/atom below the current hull at that composition
    from pymatgen.entries.computed_entries import ComputedEntry

    hull_e = hull.hull_energy_ev_per_atom(probe.composition)
    new = ComputedEntry(probe.composition, (hull_e - 0.1) * probe.composition.num_atoms,
                        data={"fidelity": "pbe", "structure_id": "new-Li3Fe2O6"})
    assert hull.e_above_hull_ev_per_atom(new) == pytest.approx(-0.1)
    hull.add_entries([new])
    assert hull.e_above_hull_ev_per_atom(probe) == pytest.approx(before + 0.1)
    assert hull.is_stable(new) and not hull.is_stable(probe)


def test_fidelities_are_never_mixed(toy_hull, toy_entry):
    hull = toy_hull
    with pytest.raises(FidelityMismatchError, match="never mix"):
        hull.add_entries([toy_entry("NaCl3", -2.1, fidelity="scan")])
    with pytest.raises(FidelityMismatchError):
        hull.e_above_hull_ev_per_atom(toy_entry("NaCl", -2.0, sid="x", fidelity="scan"))
    with pytest.raises(FidelityMismatchError):
        FidelityHull("scan", entries=[toy_entry("Na", -1.0)])
    assert len(hull) == 4  # nothing was added


def test_missing_element_reference_is_a_clear_error(toy_entry):
    hull = FidelityHull("pbe", entries=[toy_entry("NaCl", -2.0), toy_entry("Na", -1.0)])
    with pytest.raises(MissingReferenceError, match="Cl"):
        hull.e_above_hull_ev_per_atom(hull.get_entry("NaCl"))


def test_cache_is_per_chemsys_and_dropped_on_add(mp_entries_readonly, toy_entry):
    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    li_o = hull.phase_diagram("Li-O")
    ternary = hull.phase_diagram("Li-Fe-O")
    assert hull.phase_diagram("O-Li") is li_o
    assert hull.phase_diagram(["Fe", "Li", "O"]) is ternary
    hull.add_entries([toy_entry("Fe3O4", -7.0, sid="fe3o4-new")])  # Fe-O changes: Li-Fe-O too, Li-O not
    assert hull.phase_diagram("Li-O") is li_o
    assert hull.phase_diagram("Li-Fe-O") is not ternary


def test_same_id_replaces_entry(toy_hull, toy_entry):
    hull = toy_hull
    hull.add_entries([toy_entry("Na2Cl", -1.8)])  # recomputed: now below the Na-NaCl tie line
    assert len(hull) == 4
    assert hull.e_above_hull_ev_per_atom(hull.get_entry("Na2Cl")) == pytest.approx(0.0)


def test_json_round_trip(mp_entries_readonly):
    hull = FidelityHull("pbe", entries=mp_entries_readonly[:120], references=[])
    hull.add_entries([e for e in mp_entries_readonly if len(e.composition.elements) == 1], reference=True)
    back = FidelityHull.from_dict(json.loads(hull.to_json()))
    assert back.fidelity == "pbe" and len(back) == len(hull) and len(back.references) == len(hull.references)
    for entry in mp_entries_readonly[:120]:
        assert back.e_above_hull_ev_per_atom(entry) == pytest.approx(hull.e_above_hull_ev_per_atom(entry), abs=1e-9)


def test_save_and_load(tmp_path, toy_hull):
    hull = toy_hull
    path = hull.save(tmp_path / "hull.json.gz")
    back = FidelityHull.load(path)
    assert back.e_above_hull_ev_per_atom(back.get_entry("Na2Cl")) == pytest.approx(1 / 6)
    assert {e.composition.reduced_formula for e in back.references} == {"Na", "Cl2"}


def test_chemsys_parsing():
    assert chemsys_elements("Li-Fe-O") == {"Li", "Fe", "O"}
    assert chemsys_elements("Fe") == {"Fe"}
    assert chemsys_elements("LiFeO2") == {"Li", "Fe", "O"}
    assert chemsys_elements(["O", "Li"]) == {"Li", "O"}


def test_entry_dicts_are_accepted(toy_hull, mp_entries_readonly):
    # calculation results arrive as ComputedStructureEntry dicts (CalcResult.entry)
    stand_in = mp_entries_readonly[0].as_dict()
    stand_in["data"] = {"structure_id": "cand-1", "fidelity": "pbe", "backend": "standin", "apply_mp2020": False}
    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    before = hull.e_above_hull_ev_per_atom(stand_in)
    assert hull.add_entry(stand_in) == "cand-1"
    assert hull.e_above_hull_ev_per_atom(stand_in) == pytest.approx(before)
    assert hull.get_entry("cand-1").energy == pytest.approx(mp_entries_readonly[0].energy)


def test_stand_in_and_dft_energies_in_one_hull(toy_entry, caplog):
    standin = toy_entry("NaCl", -2.0, sid="standin-nacl")
    standin.data["backend"] = "standin"
    refs = [toy_entry("Na", -1.0), toy_entry("Cl2", -2.0)]  # no backend: DFT energies
    with pytest.raises(Exception, match="same calculator"):
        FidelityHull("pbe", entries=[standin], references=refs, on_mixed_backends="raise")
    with caplog.at_level("WARNING", logger="screener.hull.phase_diagram"):
        FidelityHull("pbe", entries=[standin], references=refs)
    assert "same calculator" in caplog.text


def test_an_entry_can_be_judged_without_given_entries(mp_entries_readonly):
    """``exclude``: the diagram without some compounds (a candidate's known twin), elements kept, cached apart and
    dropped like the full diagram when an entry of its system is added."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    hull = FidelityHull("pbe", entries=mp_entries_readonly)
    lifeo2 = next(e for e in hull.stable_entries() if e.composition.reduced_formula == "LiFeO2")
    key = str(lifeo2.entry_id)
    without = PhaseDiagram([e for e in mp_entries_readonly if str(e.entry_id) != key])
    # on the full hull LiFeO2 is a vertex; without itself it lies below the rest of the hull
    assert hull.e_above_hull_ev_per_atom(lifeo2) == pytest.approx(0.0, abs=1e-9)
    below = hull.e_above_hull_ev_per_atom(lifeo2, exclude=[key])
    assert below == pytest.approx(without.get_e_above_hull(lifeo2, allow_negative=True), abs=1e-9) and below < 0
    assert hull.hull_formation_energy_ev_per_atom("LiFeO2", exclude=[key]) > hull.hull_formation_energy_ev_per_atom(
        "LiFeO2")
    assert hull.is_stable(lifeo2, exclude=[key])  # below the hull without it: stable
    # an element is never left out (the hull would lose its reference energy)
    fe = next(e for e in hull.stable_entries() if e.composition.reduced_formula == "Fe")
    assert hull.hull_formation_energy_ev_per_atom("Fe2O3", exclude=[str(fe.entry_id)]) == pytest.approx(
        hull.hull_formation_energy_ev_per_atom("Fe2O3"), abs=1e-12)
    # a new entry of the system drops the cached diagram without the twin too
    from pymatgen.entries.computed_entries import ComputedEntry

    deep = ComputedEntry("LiFeO2", lifeo2.energy_per_atom * 4 - 0.4, entry_id="new-LiFeO2",
                         data={"fidelity": "pbe", "apply_mp2020": False})
    hull.add_entries([deep])
    assert hull.hull_formation_energy_ev_per_atom("LiFeO2", exclude=[key]) == pytest.approx(
        hull.e_form_ev_per_atom(deep), abs=1e-9)
