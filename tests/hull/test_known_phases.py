"""The known-phase set of the stand-in back-end and the rule that a candidate is never its own competing phase."""

from __future__ import annotations

import sys

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry


@pytest.fixture(scope="module")
def demo_candidates():
    from screener.campaign.api import default_candidates_path
    from screener.structures import read_structures

    return {r.structure_id: r.structure for r in read_structures([default_candidates_path()]).records}


@pytest.fixture(scope="module")
def known_doc():
    from screener.hull.known_phases import read_known_phases

    return read_known_phases()


def test_known_set_never_contains_a_demo_candidate(demo_candidates, known_doc):
    from screener.hull.known_phases import candidate_matches

    assert len(demo_candidates) == 40
    records = [r for r in known_doc["phases"] if not r.get("element_reference")]
    ids = {r["structure_id"] for r in records} | {a for r in records for a in r.get("same_as", [])}
    assert not ids & set(demo_candidates)
    by_formula = {s.composition.reduced_formula for s in demo_candidates.values()}
    matcher = StructureMatcher()
    for rec in records:
        structure = Structure.from_dict(rec["structure"])
        if structure.composition.reduced_formula in by_formula:  # only these could match: check them for real
            assert candidate_matches(None, structure, demo_candidates, matcher) is None, rec["structure_id"]


def test_every_demo_candidate_has_competing_phases_at_both_fidelities(tmp_path, demo_candidates):
    from screener.campaign.hulls import CampaignHulls, prepare_references

    elements = {str(el) for s in demo_candidates.values() for el in s.composition.elements}
    path = prepare_references(tmp_path, "auto", elements, "standin", candidates=demo_candidates)
    hulls = CampaignHulls.from_file(path)
    assert hulls.meta["mode"] == "standin"
    for sid, structure in demo_candidates.items():
        counts = hulls.competing_phase_counts(structure.composition.chemical_system)
        assert counts["pbe"] >= 3 and counts["scan"] >= 3, (sid, counts)
        # the candidate itself is not among them (held out of the set, and by the campaign too)
        assert sid not in hulls.hulls["pbe"] and sid not in hulls.hulls["scan"]
    # stand-in energies only: a stand-in hull never mixes in DFT energies
    assert {(e.data or {}).get("backend") for f in ("pbe", "scan") for e in hulls.hulls[f].references} == {"standin"}


def _cell(species, a=3.0):
    n = len(species)
    return Structure(Lattice.orthorhombic(a * n, a, a), species, [[i / n, 0, 0] for i in range(n)])


def _entry(sid, structure, fidelity, energy_per_atom):
    return ComputedStructureEntry(structure, energy_per_atom * len(structure), parameters={"run_type": "standin"},
                                  entry_id=sid, data={"structure_id": sid, "fidelity": fidelity,
                                                      "backend": "standin"})


def test_exclude_candidates_by_id_and_by_structure():
    from screener.hull.known_phases import exclude_candidates

    candidate = _cell(["Li", "Na"])
    same_structure = candidate.copy()
    same_structure.scale_lattice(candidate.volume * 1.02)  # a relaxed copy under another id
    other = _cell(["Li", "Li", "Na"])
    entries = [_entry("mp-1", _cell(["Li", "Na"], 3.3), "pbe", -1.0),  # same id as the candidate
               _entry("known-2", same_structure, "pbe", -1.0), _entry("known-3", other, "pbe", -1.0),
               _entry("ref:standin:pbe:Li", _cell(["Li"]), "pbe", -1.9)]
    kept, dropped = exclude_candidates(entries, {"mp-1": candidate})
    assert [e.entry_id for e in kept] == ["known-3", "ref:standin:pbe:Li"]
    assert dropped == {"mp-1": "mp-1", "known-2": "mp-1"}


def _nacl_polymorphs():
    """NaCl in four structure types: rocksalt, CsCl and zinc blende (2-site primitive cells), wurtzite (4 sites)."""
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cscl = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    blende = Structure.from_spacegroup("F-43m", Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    wurtzite = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(4.2, 6.8), ["Na", "Cl"],
                                         [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]])
    return {"rocksalt": rocksalt, "cscl": cscl, "blende": blende, "wurtzite": wurtzite}


def test_candidate_index_finds_what_the_matcher_finds_and_fits_only_cells_of_equal_size(monkeypatch):
    from screener.hull.known_phases import CandidateIndex

    candidates = _nacl_polymorphs()
    rocksalt_bigger = candidates["rocksalt"].copy()
    rocksalt_bigger.scale_lattice(candidates["rocksalt"].volume * 1.06)
    wurtzite_supercell = candidates["wurtzite"].copy()
    wurtzite_supercell.make_supercell([2, 1, 1])
    nias = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.9, 6.4), ["Na", "Cl"],
                                     [[0, 0, 0], [1 / 3, 2 / 3, 0.25]])  # 4 sites, like wurtzite, yet not it
    known = {"k-rocksalt": rocksalt_bigger, "k-wurtzite": wurtzite_supercell, "k-nias": nias}
    matcher = StructureMatcher()
    brute = {k: next((cid for cid, c in candidates.items() if matcher.fit(s, c)), None) for k, s in known.items()}
    assert brute == {"k-rocksalt": "rocksalt", "k-wurtzite": "wurtzite", "k-nias": None}

    fitted: list[tuple[int, int]] = []
    fit = StructureMatcher.fit

    def counting_fit(self, s1, s2, *args, **kwargs):
        fitted.append((len(s1), len(s2)))
        return fit(self, s1, s2, *args, **kwargs)

    monkeypatch.setattr(StructureMatcher, "fit", counting_fit)
    index = CandidateIndex(candidates)
    assert {k: index.match(k, s) for k, s in known.items()} == brute
    assert fitted and all(a == b for a, b in fitted), fitted  # no fit of a 2-site cell against a 4-site one
    assert len(fitted) == 1 + 1 + 1  # rocksalt on its first try; wurtzite and NiAs each against wurtzite only

    # a matcher that tries supercells judges the sizes itself
    assert CandidateIndex(candidates, StructureMatcher(attempt_supercell=True))._sizes_can_match(
        candidates["rocksalt"], candidates["wurtzite"])


def test_a_candidate_is_never_planned_as_a_competing_phase():
    """Only known phases the SCAN hull lacks are competing phases to buy; campaign candidates are the policy's."""
    from screener.campaign.hulls import CampaignHulls

    refs = {f: [_entry(f"ref:{f}:{el}", _cell([el]), f, mu).as_dict()
                for el, mu in (("Li", -1.9), ("Na", -1.3))] for f in ("pbe", "scan")}
    known = _entry("mp-known", _cell(["Li", "Li", "Li", "Na"]), "pbe", -1.9)  # known at PBE only (as from a file)
    refs["pbe"].append(known.as_dict())
    hulls = CampaignHulls(refs)
    # a candidate computed at PBE, on the PBE hull, not yet at SCAN
    hulls.add_result("pbe", _entry("cand-1", _cell(["Li", "Na"]), "pbe", -1.9).as_dict())
    assert hulls.hulls["pbe"].e_above_hull_ev_per_atom(hulls.hulls["pbe"].get_entry("cand-1")) <= 0
    missing = [sid for sid, _ in hulls.missing_competing_phases("scan", "Li-Na")]
    assert missing == ["mp-known"]
    assert hulls.competing_phase_counts("Li-Na") == {"pbe": 1, "scan": 0}


def test_vasp_campaign_takes_mp_entries_from_the_cache_only(tmp_path, monkeypatch, mp_entries_readonly, caplog):
    """``auto`` for VASP: MP GGA(+U) and r2SCAN entries from the local mp-api cache, never from the server."""
    import copy

    from monty.serialization import dumpfn

    from screener.campaign.hulls import CampaignHulls, prepare_references
    from screener.hull.mp_cache import mp_cache_path

    monkeypatch.setenv("SCREENER_MP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "mp_api", None)  # any attempt to reach the server would fail loudly
    entries = [e for e in mp_entries_readonly if len(e.structure) <= 24]  # small cells keep the test fast
    candidate = next(e for e in entries if e.composition.reduced_formula == "LiFeO2")
    cands = {"my-LiFeO2": candidate.structure}
    # not cached: elements only, said loudly, nothing fetched
    (tmp_path / "a").mkdir()
    with caplog.at_level("WARNING"):
        path = prepare_references(tmp_path / "a", "auto", ["Fe", "Li", "O"], "vasp", candidates=cands)
    assert "no cached Materials Project entries for Fe-Li-O" in caplog.text
    assert CampaignHulls.from_file(path).competing_phase_counts("Fe-Li-O") == {"pbe": 0, "scan": 0}
    # cached (as `--references mp` would have left it): the MP entries are the known phases, the candidate is not
    scan = []
    for e in entries:
        s = copy.deepcopy(e)
        s.energy_adjustments, s.parameters = [], {**s.parameters, "run_type": "r2SCAN"}
        s.data = {**s.data, "fidelity": "scan"}
        scan.append(s)
    pbe = [copy.deepcopy(e) for e in entries]
    for e in pbe:
        e.data = {**e.data, "fidelity": "pbe"}
    for fidelity, entries in (("pbe", pbe), ("scan", scan)):
        mp_cache_path("Fe-Li-O", fidelity).parent.mkdir(parents=True, exist_ok=True)
        dumpfn([e.as_dict() for e in entries], mp_cache_path("Fe-Li-O", fidelity))
    (tmp_path / "b").mkdir()
    path = prepare_references(tmp_path / "b", "auto", ["Fe", "Li", "O"], "vasp", candidates=cands)
    hulls = CampaignHulls.from_file(path)
    counts = hulls.competing_phase_counts("Fe-Li-O")
    n_compounds = sum(len(e.composition.elements) > 1 for e in entries)
    # the candidate's twins stay on the hulls (competitors of the others), left out only where it is judged
    assert counts["pbe"] == counts["scan"] == n_compounds
    twins = hulls.meta["candidate_twins"]["my-LiFeO2"]
    assert str(candidate.entry_id) in twins
    assert 100 < hulls.competing_phase_counts("Fe-Li-O", exclude=twins)["pbe"] < n_compounds


def test_replay_campaign_takes_the_data_sets_own_entries(tmp_path):
    """``auto`` for replay: the data set's other entries of the candidates' systems are the known phases."""
    from monty.serialization import dumpfn

    from screener.campaign.hulls import CampaignHulls, prepare_references

    structures = {"li": _cell(["Li"]), "na": _cell(["Na"]), "k": _cell(["K"]), "li3na": _cell(["Li", "Li", "Li", "Na"]),
                  "lina": _cell(["Li", "Na"]), "lik": _cell(["Li", "K"]), "cand": _cell(["Li", "Na", "Na"])}
    mu = {"Li": -1.9, "Na": -1.3, "K": -1.1}
    items = []
    for sid, s in structures.items():
        for fidelity, shift in (("pbe", 0.0), ("scan", -0.2)):
            energy = sum(mu[str(sp)] + shift for sp in s.species) - (0.1 * len(s) if len(s.composition) > 1 else 0)
            items.append(_entry(sid, s, fidelity, energy / len(s)).as_dict())
    dumpfn(items, tmp_path / "world.json.gz")
    camp = tmp_path / "camp"
    camp.mkdir()
    path = prepare_references(camp, "auto", ["Li", "Na"], "replay", candidates={"my-cand": structures["cand"]},
                              backend_options={"path": str(tmp_path / "world.json.gz")})
    hulls = CampaignHulls.from_file(path)
    assert hulls.meta["mode"] == "world"
    # Li3Na and LiNa are known; the candidate's own structure (another id in the data set) is its hidden answer,
    # not a known phase: off every hull until bought; Li-K is not in the candidate's system
    assert hulls.competing_phase_counts("Li-Na") == {"pbe": 2, "scan": 2}
    assert hulls.meta["candidate_twins"] == {}
    assert hulls.meta["excluded_as_candidates"] == {"cand": "my-cand"}
    assert hulls.hull_formation_energy_ev_per_atom("scan", "Li3Na") == pytest.approx(-0.1)
