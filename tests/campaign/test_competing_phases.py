"""Competing phases on the campaign's hulls: only the truly stable candidates are called stable, the campaign says how
many competing phases each hull holds before round 1, and --require-competing-phases refuses elements-only hulls.

The Li-Fe-O system uses 375 real Materials Project entries (``tests/data/mp_entries``, CC BY 4.0): the candidates are
replayed from them (``replay`` back-end), the rest is given as ``--references FILE``. MP's file has GGA(+U) energies
only, so the "SCAN" level here replays the same (MP2020-corrected) energies under an r2SCAN label: the hull logic is
what is tested, not the functional.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

sys.path.insert(0, str(Path(__file__).parent))
from campaign_fakes import FakeModel, GreedyPlanner  # noqa: E402

MP_ENTRIES = Path(__file__).parents[1] / "data" / "mp_entries" / "Li-Fe-O.json.gz"


def _as_scan(entry):
    """The entry's corrected energy as a pretend r2SCAN entry (no MP2020 adjustments: the SCAN hull refuses them)."""
    e = copy.deepcopy(entry)
    energy = entry.energy
    e.energy_adjustments = []
    e._energy = energy
    e.parameters = {**(e.parameters or {}), "run_type": "r2SCAN"}
    e.data = {**(e.data or {}), "fidelity": "scan", "structure_id": str(entry.entry_id)}
    return e


def _as_pbe(entry):
    e = copy.deepcopy(entry)
    e.data = {**(e.data or {}), "fidelity": "pbe", "structure_id": str(entry.entry_id)}
    return e


@pytest.fixture(scope="module")
def lifeo():
    """The MP entries of up to 24 sites and four candidates: two on their true hull, two metastable polymorphs (of
    LiFeO2, itself a candidate, and of Li2FeO3, whose stable polymorph stays a known phase)."""
    from monty.serialization import loadfn
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    entries = [e for e in loadfn(MP_ENTRIES) if len(e.structure) <= 24]  # 214 of 375: the test stays fast
    pd = PhaseDiagram(entries)
    e_hull = {e.entry_id: pd.get_e_above_hull(e) for e in entries}
    by_formula: dict[str, list] = {}
    for e in entries:
        by_formula.setdefault(e.composition.reduced_formula, []).append(e)

    def ground(formula):
        return min(by_formula[formula], key=lambda e: e_hull[e.entry_id])

    def polymorph(formula):  # a clearly metastable polymorph of the same composition
        above = [e for e in by_formula[formula] if 0.03 < e_hull[e.entry_id] < 0.3 and len(e.structure) <= 40]
        return min(above, key=lambda e: (len(e.structure), e.entry_id))

    candidates = {"stable": [ground("LiFeO2"), ground("Li2FeO2")],
                  "unstable": [polymorph("LiFeO2"), polymorph("Li2FeO3")]}
    assert all(e_hull[e.entry_id] < 1e-8 for e in candidates["stable"])
    assert all(e_hull[e.entry_id] > 0.03 for e in candidates["unstable"])
    return entries, candidates


def test_campaign_calls_only_the_truly_stable_candidates_stable(tmp_path, lifeo):
    from monty.serialization import dumpfn

    from screener.campaign import Campaign, CampaignConfig, Components, campaign_status
    from screener.campaign.components import build_components
    from screener.campaign.hulls import COMPETING_PHASES_META
    from screener.campaign.ledger import Ledger

    entries, chosen = lifeo
    cands = chosen["stable"] + chosen["unstable"]
    # the known phases: every MP entry at both levels, the candidates included (as a download of MP's entries of the
    # system would be): the campaign must hold them out, by id and by structure (GGA/GGA+U twins)
    refs = [f(e) for e in entries for f in (_as_pbe, _as_scan)]
    dumpfn([e.as_dict() for e in refs], tmp_path / "known.json.gz")
    dumpfn([f(e).as_dict() for e in cands for f in (_as_pbe, _as_scan)], tmp_path / "replay.json.gz")
    config = CampaignConfig(budget_total=1e6, backend="replay", references=str(tmp_path / "known.json.gz"),
                            backend_options={"path": str(tmp_path / "replay.json.gz")}, batch_size=8,
                            fine_tune_epochs=0)

    def factory(config, campaign_dir, ledger):
        real = build_components(config, campaign_dir, ledger)  # replay calculator, local jobflow, real hulls
        return Components(real.calculator, real.executor, FakeModel(), real.hulls, GreedyPlanner())

    structures = {str(e.entry_id): e.structure for e in cands}
    camp = Campaign.create(tmp_path / "camp", config, structures, factory)
    try:
        camp.run()
    finally:
        getattr(camp, "close", camp.ledger.close)()
    status = campaign_status(tmp_path / "camp")
    with Ledger.in_dir(tmp_path / "camp") as ledger:
        assert {j.state for j in ledger.jobs()} == {"done"} and len(ledger.jobs()) == 8
        record = ledger.get_meta(COMPETING_PHASES_META)
    assert sorted(status["stable_found"]) == sorted(str(e.entry_id) for e in chosen["stable"])
    # before round 1 the ledger says how many competing phases each hull held: Li-Fe-O's many known compounds
    assert record["systems"]["Fe-Li-O"]["pbe"] > 100 and record["systems"]["Fe-Li-O"]["scan"] > 100
    assert record["candidates"][str(chosen["unstable"][0].entry_id)]["chemsys"] == "Fe-Li-O"
    assert record["elements_only"] == {}
    known = json.loads((tmp_path / "camp" / "references.json").read_text())
    twins = known["meta"]["candidate_twins"]
    assert set(twins) == set(structures)  # every candidate is a known phase: judged without its twin(s)


def _odd_structure():
    # Li-Na: a system the references below know nothing about beyond the elements
    return Structure(Lattice.cubic(4.0), ["Li", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_require_competing_phases_refuses_an_elements_only_hull(tmp_path, run_cli):
    from screener.structures import write_structures
    from screener.structures.records import StructureRecord

    write_structures([StructureRecord("lina-1", _odd_structure())], tmp_path / "c.extxyz")
    args = ["run", "--budget", "5", "--candidates", tmp_path / "c.extxyz", "--references", "shipped",
            "--campaign", tmp_path / "camp"]
    code, out, err = run_cli([*args, "--require-competing-phases"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--require-competing-phases" in lines[0] and "Li-Na" in lines[0]
    assert not (tmp_path / "camp").exists()  # nothing half-made left behind


def test_elements_only_hull_is_recorded_and_warned_about(tmp_path, caplog):
    from screener.campaign import Campaign, CampaignConfig, Components
    from screener.campaign.components import build_components
    from screener.campaign.hulls import COMPETING_PHASES_META
    from screener.campaign.ledger import Ledger

    config = CampaignConfig(budget_total=5, references="shipped", fine_tune_epochs=0)

    def factory(config, campaign_dir, ledger):
        real = build_components(config, campaign_dir, ledger)
        return Components(real.calculator, real.executor, FakeModel(), real.hulls, GreedyPlanner())

    with caplog.at_level("WARNING"):
        camp = Campaign.create(tmp_path / "camp", config, {"lina-1": _odd_structure()}, factory)
    getattr(camp, "close", camp.ledger.close)()
    assert any("ONLY ELEMENTS" in r.getMessage() and "Li-Na" in r.getMessage() for r in caplog.records)
    with Ledger.in_dir(tmp_path / "camp") as ledger:
        record = ledger.get_meta(COMPETING_PHASES_META)
    assert record["systems"] == {"Li-Na": {"pbe": 0, "scan": 0}}
    assert record["elements_only"] == {"Li-Na": ["pbe", "scan"]}
    assert record["candidates"]["lina-1"] == {"chemsys": "Li-Na", "pbe": 0, "scan": 0}


def test_console_lists_competing_phases_per_system_before_round_1(tmp_path, run_cli):
    from screener.structures import write_structures
    from screener.structures.records import StructureRecord

    write_structures([StructureRecord("lina-1", _odd_structure())], tmp_path / "c.extxyz")
    code, out, err = run_cli(["run", "--budget", "1e-9", "--candidates", tmp_path / "c.extxyz", "--references",
                              "shipped", "--campaign", tmp_path / "camp"])
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("competing phases on the hulls before round 1"))
    assert "1 chemical system(s)" in lines[head]
    assert lines[head + 1].strip() == "Li-Na: PBE 0, SCAN 0 (1 candidate(s))  ONLY ELEMENTS"


def test_competing_phase_lines_put_elements_only_systems_first_and_stay_short():
    from screener.cli import _competing_phase_lines

    systems = {f"A{i}-O": {"pbe": i + 1, "scan": i + 1} for i in range(20)}
    systems["Li-Na"] = {"pbe": 0, "scan": 3}
    record = {"systems": systems,
              "candidates": {f"c{i}": {"chemsys": cs, **n} for i, (cs, n) in enumerate(systems.items())}}
    lines = _competing_phase_lines(record, most=5)
    assert len(lines) == 1 + 5 + 1
    assert lines[1].strip() == "Li-Na: PBE 0, SCAN 3 (1 candidate(s))  ONLY ELEMENTS"
    assert lines[-1].strip().startswith("... and 16 more system(s)")
    assert _competing_phase_lines({}) == []
