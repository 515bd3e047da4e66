"""Campaign science rules: a candidate that IS a known phase (its twin stays a competitor of the others, left out
only where that candidate is judged), one stable threshold, N_p of the SCAN model, MP PBE/SCAN twins, and a campaign
whose policy declines everything."""

from __future__ import annotations

import copy
import json
import types

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

MU = {"Li": -1.9, "O": -4.9}  # eV/atom of the elemental references (both fidelities here)


def _li2o_antifluorite() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.6), ["Li", "O"], [[0.25, 0.25, 0.25], [0, 0, 0]])


def _li2o_other() -> Structure:
    # another Li2O arrangement (not the antifluorite): a second candidate of the same formula
    return Structure(Lattice.tetragonal(3.0, 5.0), ["Li", "Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.25]])


def _entry(sid: str, structure: Structure, fidelity: str, e_form_ev_per_atom: float) -> ComputedStructureEntry:
    comp = structure.composition
    energy = sum(MU[el.symbol] * n for el, n in comp.items()) + e_form_ev_per_atom * comp.num_atoms
    return ComputedStructureEntry(structure, energy, entry_id=sid, parameters={"run_type": f"test {fidelity}"},
                                  data={"fidelity": fidelity, "structure_id": sid, "apply_mp2020": False})


def _element(el: str, fidelity: str) -> ComputedStructureEntry:
    return _entry(f"ref:{fidelity}:{el}", Structure(Lattice.cubic(3.0), [el], [[0, 0, 0]]), fidelity, 0.0)


@pytest.fixture
def twin_hulls(tmp_path):
    """Known phases: Li, O and the antifluorite Li2O at -2.0 eV/atom (the twin of candidate "cand-A"); candidate
    "cand-B" is another Li2O."""
    from monty.serialization import dumpfn

    from screener.campaign.hulls import CampaignHulls, prepare_references

    known = [e for f in ("pbe", "scan")
             for e in (_element("Li", f), _element("O", f), _entry("kp-Li2O", _li2o_antifluorite(), f, -2.0))]
    dumpfn([e.as_dict() for e in known], tmp_path / "known.json")
    (tmp_path / "camp").mkdir()
    path = prepare_references(tmp_path / "camp", str(tmp_path / "known.json"), ["Li", "O"], "standin",
                              candidates={"cand-A": _li2o_antifluorite(), "cand-B": _li2o_other()})
    return CampaignHulls.from_file(path), path


def test_a_known_twin_competes_with_the_others_and_not_with_its_candidate(twin_hulls):
    hulls, path = twin_hulls
    assert hulls.twins == {"cand-A": ["kp-Li2O"]}
    for f in ("pbe", "scan"):
        # the twin is on the hull every other Li2O is measured against ...
        assert hulls.hull_formation_energy_ev_per_atom(f, "Li2O") == pytest.approx(-2.0)
        assert hulls.hull_formation_energy_ev_per_atom(f, "Li2O", "cand-B") == pytest.approx(-2.0)
        # ... and is left out where cand-A itself is judged (only the elements remain there)
        assert hulls.hull_formation_energy_ev_per_atom(f, "Li2O", "cand-A") == pytest.approx(0.0)
    # computed results: cand-A at its twin's energy is on the hull; cand-B, 0.1 eV/atom above the twin, is not
    # (before the fix the twin was dropped from every hull and cand-B read -1.9 eV/atom below it)
    a = _entry("cand-A", _li2o_antifluorite(), "scan", -2.0).as_dict()
    b = _entry("cand-B", _li2o_other(), "scan", -1.9).as_dict()
    assert hulls.e_above_hull_ev_per_atom("scan", a) == pytest.approx(-2.0)  # not yet in the hull: distance below
    hulls.add_result("scan", a)
    hulls.add_result("scan", b)
    assert hulls.e_above_hull_ev_per_atom("scan", a) == pytest.approx(0.0)
    assert hulls.e_above_hull_ev_per_atom("scan", b) == pytest.approx(0.1)
    snap = hulls.snapshot("scan")
    assert snap["stable_ids"] == ["cand-A"]  # degenerate with its twin, yet judged without it: stable
    assert snap["e_hull_ev_per_atom"]["cand-B"] == pytest.approx(0.1)
    assert json.loads(path.read_text())["meta"]["candidate_twins"] == {"cand-A": ["kp-Li2O"]}


def test_a_twin_known_only_at_pbe_is_not_bought_again_as_a_scan_competing_phase(tmp_path):
    """The candidate's own SCAN run is its twin's structure: buying the twin as well would compute it twice."""
    from monty.serialization import dumpfn

    from screener.campaign.hulls import CampaignHulls, prepare_references

    known = [_element(el, f) for f in ("pbe", "scan") for el in ("Li", "O")]
    known.append(_entry("kp-Li2O", _li2o_antifluorite(), "pbe", -2.0))  # an MP GGA entry without an r2SCAN twin
    dumpfn([e.as_dict() for e in known], tmp_path / "known.json")
    (tmp_path / "camp").mkdir()
    path = prepare_references(tmp_path / "camp", str(tmp_path / "known.json"), ["Li", "O"], "standin",
                              candidates={"cand-A": _li2o_antifluorite()})
    hulls = CampaignHulls.from_file(path)
    assert hulls.twins == {"cand-A": ["kp-Li2O"]}
    assert hulls.missing_competing_phases("scan", "Li-O") == []


def test_ranking_measures_a_rediscovery_without_its_twin(twin_hulls):
    from screener.campaign.ranking import predicted_e_hull

    hulls, _ = twin_hulls
    comps = [_li2o_antifluorite().composition, _li2o_other().composition]
    e_hull, _, hull_e, _ = predicted_e_hull([-1.95, -1.95], [0.05, 0.05], comps, hulls, "scan",
                                            structure_ids=["cand-A", "cand-B"])
    assert hull_e == pytest.approx([0.0, -2.0])
    assert e_hull == pytest.approx([-1.95, 0.05])


def test_the_campaign_threshold_decides_stable_in_the_snapshot(twin_hulls, tmp_path):
    from screener.campaign.hulls import CampaignHulls

    _, path = twin_hulls
    b = _entry("cand-B", _li2o_other(), "scan", -1.97).as_dict()  # 30 meV/atom above the twin
    for threshold, expected in ((0.0, []), (0.05, ["cand-B"])):
        hulls = CampaignHulls.from_file(path, stable_threshold_ev_per_atom=threshold)
        hulls.add_result("scan", b)
        snap = hulls.snapshot("scan")
        assert snap["stable_ids"] == expected and snap["stable_threshold_ev_per_atom"] == threshold


def test_ledger_status_and_report_name_the_rediscovery_and_the_threshold(twin_hulls, tmp_path):
    from screener.campaign.hulls import record_competing_phases
    from screener.campaign.ledger import Ledger
    from screener.campaign.status import campaign_status

    hulls, _ = twin_hulls
    camp = tmp_path / "camp"
    with Ledger.in_dir(camp, create=True) as ledger:
        ledger.add_candidates([{"structure_id": s, "formula": "Li2O", "chemsys": "Li-O", "n_sites": 3,
                                "role": "candidate", "structure_json": json.dumps(st.as_dict())}
                               for s, st in (("cand-A", _li2o_antifluorite()), ("cand-B", _li2o_other()))])
        ledger.set_meta("budget_unit", "core-hours")
        ledger.set_meta("budget_total", 10.0)
        ledger.set_meta("config", {"stable_threshold_ev_per_atom": 0.025})
        record = record_competing_phases(ledger, hulls, {"cand-A": "Li-O", "cand-B": "Li-O"})
        hulls.add_result("scan", _entry("cand-A", _li2o_antifluorite(), "scan", -2.0).as_dict())
        snap = hulls.snapshot("scan")
        ledger.record_hull(1, "scan", n_entries=snap["n_entries"], n_stable=snap["n_stable"],
                           hull_json=json.dumps({"stable_ids": snap["stable_ids"],
                                                 "e_hull_ev_per_atom": snap["e_hull_ev_per_atom"]}))
        assert ledger.get_meta("candidate_twins") == {"cand-A": ["kp-Li2O"]}
    # per candidate, its own twin is not counted as its competitor
    assert record["candidates"]["cand-A"]["scan"] == 0 and record["candidates"]["cand-B"]["scan"] == 1
    status = campaign_status(camp)
    assert status["rediscoveries"] == {"cand-A": ["kp-Li2O"]}
    assert status["stable_found"] == ["cand-A"] and status["n_new_stable"] == 0
    assert status["stable_threshold_ev_per_atom"] == 0.025
    assert status["e_hull_ev_per_atom"]["scan"]["cand-A"] == pytest.approx(0.0)


# ---- N_p of the model that makes the SCAN predictions ------------------------------------------------------------

def _models():
    return [
        {"version": "round001-pbe", "round": 1, "fidelity": "pbe", "path": "/c/r1/pbe", "parent": "/init",
         "n_train": 4},
        {"version": "round002-pbe", "round": 2, "fidelity": "pbe", "path": "/c/r2/pbe", "parent": "/c/r1/pbe",
         "n_train": 8},
        {"version": "round002-scan", "round": 2, "fidelity": "scan", "path": "/c/r2/scan", "parent": "/c/r2/pbe",
         "n_train": 2},
        {"version": "round003-pbe", "round": 3, "fidelity": "pbe", "path": "/c/r3/pbe", "parent": "/c/r2/pbe",
         "n_train": 11},
        {"version": "round003-scan", "round": 3, "fidelity": "scan", "path": "/c/r3/scan", "parent": "/c/r2/scan",
         "n_train": 4},
    ]


def test_scan_model_keeps_the_pbe_data_of_its_transfer():
    from screener.campaign.loop import pbe_data_behind_scan_model

    models = _models()
    # the SCAN model was transferred from round 2's PBE model (8 campaign PBE results); round 3's 11 never reach it
    assert pbe_data_behind_scan_model(models) == (8, False)
    # before any SCAN model the PBE model predicts SCAN: its own campaign PBE data, and more will reach it
    assert pbe_data_behind_scan_model(models[:2]) == (8, True)
    assert pbe_data_behind_scan_model([]) == (0, True)
    # a SCAN model transferred from the initial model (not trained by the campaign): no campaign PBE data
    assert pbe_data_behind_scan_model([{**models[2], "parent": "/init"}]) == (0, False)
    # started from a SCAN ensemble: no campaign PBE result is behind it, before or after its fine-tunes
    assert pbe_data_behind_scan_model(models[:2], initial_scan_model=True) == (0, False)
    assert pbe_data_behind_scan_model([], initial_scan_model=True) == (0, False)


def _request(**kw):
    from screener.campaign.protocols import PlanRequest

    n = 4
    base = dict(round_number=3, structure_ids=[f"c{i}" for i in range(n)], chemsys=["Li-O"] * n,
                e_hull_mean={"scan": np.array([0.04, 0.3, 0.3, 0.3]), "pbe": np.array([0.04, 0.3, 0.3, 0.3])},
                e_hull_std={"scan": np.full(n, 0.01), "pbe": np.full(n, 0.01)},
                cost={"scan": np.full(n, 5.0), "pbe": np.full(n, 1.0)}, done=set(), n_scan=4, n_pbe=20,
                learning_curve=[], remaining_budget=100.0, batch_size=2, seed=0, n_pbe_pretraining=1000)
    base.update(kw)
    return PlanRequest(**base)


def _planner(threshold: float = 0.0, **expected_value):
    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.policies import load_policy

    config = CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0,
                            stable_threshold_ev_per_atom=threshold)
    policy = load_policy("expected-value")
    if expected_value:
        policy = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(update=expected_value)})
    return PolicyPlanner(policy, config)


def test_planner_feeds_the_scan_models_n_p_and_no_pbe_learning_value_after_the_transfer():
    plan = _planner().plan(_request(n_pbe_behind_scan_model=8, pbe_reaches_scan_model=False))
    assert plan.numbers["n_pbe_campaign"] == 8  # not the 20 PBE results of the campaign
    assert plan.numbers["ev_learning_value_pbe"] == 0.0
    before = _planner().plan(_request(n_pbe_behind_scan_model=8, pbe_reaches_scan_model=True))
    assert before.numbers["ev_learning_value_pbe"] > 0.0


def test_one_threshold_governs_the_policys_p_stable():
    # c0 is predicted 40 meV/atom above the hull (+- 10): unlikely stable at 0, likely at a 50 meV/atom threshold
    # (the SCAN model's P alone: without the cap at the PBE view, whose prior-only relation has no pairs here)
    p, capped = {}, {}
    for threshold in (0.0, 0.05):
        for out, kw in ((p, {"scan_now_at_most_pbe_view": False}), (capped, {})):
            plan = _planner(threshold, **kw).plan(_request())
            first = next(i for i in plan.items if i.structure_id == "c0")
            out[threshold] = first.numbers["p_scan_stable"]
    assert p[0.0] < 0.01 and p[0.05] > 0.8
    # the default caps it at the PBE view, which the same threshold governs (the relation's "stable" is E_hull <= t)
    assert capped[0.0] < 0.01 and capped[0.05] > 0.3


# ---- MP PBE / r2SCAN twins of the known set ---------------------------------------------------------------------

def test_known_pairs_match_mp_gga_and_r2scan_entries_by_material(mp_entries_small):
    from screener.campaign.components import _known_pairs
    from screener.hull import FidelityHull

    pbe, scan = [], []
    for i, e in enumerate(mp_entries_small):
        mid = str(e.data["material_id"])
        g = copy.deepcopy(e)
        g.entry_id = f"{mid}-{e.parameters.get('run_type', 'GGA')}"  # mp-api style ids: mp-123-GGA / -GGA+U
        g.data = {"fidelity": "pbe", "backend": "standin"}
        s = copy.deepcopy(e)
        s.energy_adjustments, s.parameters = [], {"run_type": "r2SCAN"}
        # mp-api's r2SCAN entries: mp-123-r2SCAN; every third one here without any id (matched by its structure)
        s.entry_id = None if i % 3 == 0 else f"{mid}-r2SCAN"
        s.data = {"fidelity": "scan", "backend": "standin"}
        pbe.append(g)
        scan.append(s)
    hulls = types.SimpleNamespace(hulls={"pbe": FidelityHull("pbe", references=pbe),
                                         "scan": FidelityHull("scan", references=scan)})
    n_compounds = sum(len(e.composition.elements) > 1 for e in mp_entries_small)
    censored = _known_pairs(hulls)
    assert len(censored) == n_compounds
    # signed: a PBE-stable compound reads its depth below the other phases (negative); the rest are unchanged
    signed = _known_pairs(hulls, signed=True)
    on_hull = [i for i, (x, _) in enumerate(censored) if x <= 1e-6]
    assert on_hull and all(signed[i][0] < -1e-3 for i in on_hull)
    assert all(signed[i] == censored[i] for i in range(len(censored)) if i not in on_hull)
    assert [y for _, y in signed] == [y for _, y in censored]
    # with_sites: the same pairs, each with its PBE structure's n_sites (the relation's cell-size term)
    sized = _known_pairs(hulls, with_sites=True)
    assert [(x, y) for x, y, _ in sized] == censored
    compounds = [e for e in pbe if len(e.composition.elements) > 1]
    assert sorted(n for *_, n in sized) == sorted(float(len(e.structure)) for e in compounds)


def test_a_pbe_stable_result_reads_its_depth_below_the_other_phases(twin_hulls):
    """The signed E_hull (pbe_scan_signed_depth) of a computed structure leaves out itself and the known phase it
    IS: a new Li2O 0.1 eV/atom below the known one reads -0.1 (its E_hull on the hull it joined is 0), the
    rediscovery of the known Li2O reads its depth below Li + O, and an unstable result its usual E_hull."""
    hulls, _ = twin_hulls
    low = _entry("cand-B", _li2o_other(), "pbe", -2.1).as_dict()
    hulls.add_result("pbe", low)
    assert hulls.e_above_hull_ev_per_atom("pbe", low) == pytest.approx(0.0, abs=1e-6)
    assert hulls.e_hull_signed_ev_per_atom("pbe", low) == pytest.approx(-0.1)
    twin = _entry("cand-A", _li2o_antifluorite(), "pbe", -2.05).as_dict()
    hulls.add_result("pbe", twin)
    assert hulls.e_hull_signed_ev_per_atom("pbe", twin) == pytest.approx(0.05)  # cand-B is lower
    assert hulls.e_hull_signed_ev_per_atom("pbe", low) == pytest.approx(-0.05)  # now below cand-A only


@pytest.fixture
def mp_entries_small():
    """Real MP GGA(+U) entries of Li-Fe-O (tests/data/mp_entries), the elements and 12 small compounds."""
    from pathlib import Path

    from screener.hull import load_entries

    entries = load_entries([Path(__file__).parents[1] / "data" / "mp_entries" / "Li-Fe-O.json.gz"])
    elements = {}
    for e in entries:
        if len(e.composition.elements) == 1:
            el = str(e.composition.elements[0])
            if el not in elements or e.energy_per_atom < elements[el].energy_per_atom:
                elements[el] = e
    compounds = sorted((e for e in entries if len(e.composition.elements) > 1 and len(e.structure) <= 8),
                       key=lambda e: str(e.entry_id))[:12]
    return list(elements.values()) + compounds


# ---- a campaign whose policy declines everything -----------------------------------------------------------------

def _empty_plan_campaign(tmp_path, numbers, **config):
    """A campaign of 4 fake candidates whose planner always plans nothing, with these plan numbers; returns the
    created campaign (open: close it) and its components factory (to open it again)."""
    from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, make_structures

    from screener.campaign import Campaign, CampaignConfig, Components, Plan

    class Empty:
        def plan(self, request):
            return Plan([], dict(numbers))

    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), FakeExecutor(tmp_path / "store"), FakeModel(), FakeHulls(), Empty())

    settings = {"budget_total": 50.0, "batch_size": 2, "fine_tune_epochs": 0, **config}
    return Campaign.create(tmp_path / "camp", CampaignConfig(**settings), make_structures(4), factory), factory


def test_campaign_ends_with_a_clear_reason_when_the_policy_declines_everything(tmp_path):
    camp, _ = _empty_plan_campaign(tmp_path, {"policy": "declines"})
    try:
        out = camp.run()
        assert out["finished"]
        assert "declined every open calculation" in out["reason"]
        assert not camp.ledger.models()  # nothing bought, nothing fine-tuned
    finally:
        camp.close()


def test_planner_counts_the_finds_the_stop_rule_divides_by_the_spend(tmp_path, monkeypatch):
    """n_found: candidates computed at SCAN and at or below the campaign's threshold on today's SCAN hull; PBE-only
    results, competing phases and candidates above the threshold do not count."""
    import screener.policies as policies
    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.campaign.ledger import Ledger
    from screener.policies import load_policy

    ledger = Ledger.in_dir(tmp_path / "ledger", create=True)
    ledger.set_budget_total(100.0)
    config = CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0, stable_threshold_ev_per_atom=0.02)
    ev = load_policy("expected-value")
    ev = ev.model_copy(update={"expected_value": ev.expected_value.model_copy(update={"competitor_samples": 0})})
    planner = PolicyPlanner(ev, config, ledger=ledger)
    computed = {"pbe": {"p-only": (1, 0.0, "candidate")},
                "scan": {"on": (1, 0.0, "candidate"), "near": (1, 0.02, "candidate"), "above": (1, 0.03, "candidate"),
                         "phase": (1, 0.0, "competing")}}
    monkeypatch.setattr(planner, "_computed_e_hull", lambda **_: computed)
    seen = {}
    real_decide = policies.decide
    monkeypatch.setattr(policies, "decide", lambda policy, state: seen.setdefault("state", state) and
                        real_decide(policy, state))
    planner.plan(_request(remaining_budget=60.0))
    assert seen["state"]["n_found"] == 2
    assert seen["state"]["spent_cpu_hours"] == pytest.approx(40.0)


def test_a_campaign_stopped_by_the_stop_rule_says_why_and_keeps_its_budget(tmp_path):
    """An expected-value plan that is empty because of the stop rule: the reason names the rate and the yield it
    came from, the empty round keeps it, ``status`` shows it, a resume stops at once with the same words, and the
    budget is untouched; a lowered budget drops the stored words (they quote the old budget's "left")."""
    from screener.campaign import Campaign
    from screener.campaign.status import campaign_status

    # the numbers plan_expected_value returns when nothing reaches its stop rate
    camp, factory = _empty_plan_campaign(tmp_path, {
        "policy": "expected-value", "ev_stop_rate_per_cpu_hour": 0.0125, "ev_stop_fraction_of_yield": 0.1,
        "ev_n_found": 5, "ev_spent_cpu_hours": 40.0, "ev_n_in_line": 0, "ev_n_below_stop_rate": 3},
        unit_cpu_hours=2.0)
    try:
        out = camp.run()
    finally:
        camp.close()
    assert out["finished"]
    assert ("none reaches its stop rate of 0.025 expected finds per pbe-equivalent: 10% of the 5 finds per 20 "
            "pbe-equivalent spent so far") in out["reason"]
    assert out["reason"].endswith("with 50 pbe-equivalent left")
    status = campaign_status(tmp_path / "camp")
    assert status["finished"] and status["stop_reason"] == out["reason"] and status["budget_left"] == 50.0
    again = Campaign.open(tmp_path / "camp", factory)
    try:
        assert again.run()["reason"] == out["reason"]
        again.ledger.set_budget_total(30.0)  # lowered: still finished, but "with 50 left" is no longer true
        lowered = again.run()
    finally:
        again.close()
    assert lowered["finished"] and "50" not in lowered["reason"]
    status = campaign_status(tmp_path / "camp")
    assert status["finished"] and status["stop_reason"] is None and status["budget_left"] == 30.0


@pytest.mark.parametrize("numbers", [
    {"ev_stop_rate_per_cpu_hour": 0.0125, "ev_n_in_line": 4, "ev_n_below_stop_rate": 3},  # the budget's doing
    {"ev_stop_rate_per_cpu_hour": 0.0125, "ev_n_in_line": 0, "ev_n_below_stop_rate": 0},  # nothing worth anything
    {"ev_stop_rate_per_cpu_hour": 0.0},  # the rule off
])
def test_the_stop_rule_is_named_only_where_it_alone_emptied_the_plan(tmp_path, numbers):
    """Options in line that the budget could not take (e.g. screens whose follow-up the last units cannot pay),
    or no option worth anything: the reason does not blame the stop rule. A hand-edited stored reason that is not
    one of ours reads as the plain one on resume."""
    import sqlite3

    from screener.campaign import Campaign

    camp, factory = _empty_plan_campaign(tmp_path, {"policy": "expected-value", **numbers})
    try:
        out = camp.run()
    finally:
        camp.close()
    assert "(none is expected to add a stable find)" in out["reason"] and "stop rate" not in out["reason"]
    conn = sqlite3.connect(tmp_path / "camp" / "ledger.sqlite")
    conn.execute("UPDATE rounds SET info_json = '{\"stop_reason\": 5}' WHERE state = 'empty'")
    conn.commit()
    conn.close()
    again = Campaign.open(tmp_path / "camp", factory)
    try:
        resumed = again.run()
    finally:
        again.close()
    assert resumed["finished"] and resumed["reason"].startswith("nothing left worth buying")


def test_run_says_before_round_1_how_many_candidates_are_known_phases(twin_hulls, tmp_path):
    from screener.campaign.hulls import record_competing_phases
    from screener.campaign.ledger import Ledger
    from screener.cli import _competing_phase_lines

    hulls, _ = twin_hulls
    with Ledger.in_dir(tmp_path / "c", create=True) as ledger:
        record = record_competing_phases(ledger, hulls, {"cand-A": "Li-O", "cand-B": "Li-O"})
    lines = _competing_phase_lines(record)
    assert lines[1].startswith("  Li-O: PBE 1, SCAN 1 (2 candidate(s))")
    assert "1 candidate(s) ARE known phases (rediscoveries)" in lines[-1]


# ---- competitor survival and purchase outcomes (expected-value) ---------------------------------------------------
def _li2o_planner(hulls, tmp_path):
    """An expected-value planner over the twin hulls with two new Li2O candidates in its ledger."""
    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.campaign.ledger import Ledger
    from screener.policies import load_policy

    ledger = Ledger.in_dir(tmp_path / "ledger", create=True)
    ledger.add_candidates([{"structure_id": s, "formula": "Li2O", "chemsys": "Li-O", "n_sites": 3}
                           for s in ("new-low", "new-high")])
    policy = load_policy("expected-value")  # with the competitor survival on (off in the preset)
    policy = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"competitor_samples": 64})})
    return PolicyPlanner(policy, CampaignConfig(budget_total=100.0, batch_size=2), ledger=ledger, hulls=hulls)


def _li2o_request(**kw):
    """The two Li2O candidates predicted 0.2 and 0.05 eV/atom below today's hull (+- 0.03)."""
    return _request(structure_ids=["new-low", "new-high"], chemsys=["Li-O"] * 2,
                    e_hull_mean={"scan": np.array([-0.2, -0.05]), "pbe": np.array([-0.2, -0.05])},
                    e_hull_std={"scan": np.full(2, 0.03), "pbe": np.full(2, 0.03)},
                    cost={"scan": np.full(2, 5.0), "pbe": np.full(2, 1.0)}, **kw)


def test_planner_discounts_the_polymorph_its_likely_lower_twin_would_undercut(twin_hulls, tmp_path):
    """Two new Li2O candidates below today's hull: the one predicted 0.15 eV/atom higher rarely survives the other."""
    planner = _li2o_planner(twin_hulls[0], tmp_path)
    request = _li2o_request()
    state_survival, numbers = planner._competitor_survival(request)
    assert state_survival[1] < 0.1 < 0.9 < state_survival[0]
    assert numbers["competitor_groups"] == 1 and numbers["competitor_plausible"] == 2
    plan = planner.plan(request)
    by_id = {i.structure_id: i.numbers for i in plan.items}
    assert by_id["new-low"]["competitor_survival"] > 0.9
    assert plan.numbers["competitor_overall_survival"] is not None
    # a candidate already computed at SCAN is on the hull itself: no survival is estimated for it
    done, _ = planner._competitor_survival(_li2o_request(done={("new-low", "scan")}))
    assert done[0] == 1.0 and done[1] > 0.9


@pytest.mark.parametrize("uses_pbe_results", [True, False])
def test_a_screened_pbe_unstable_twin_no_longer_undercuts_the_other(twin_hulls, tmp_path, uses_pbe_results):
    """The lower Li2O polymorph was screened at PBE and came out 0.3 eV/atom above the PBE hull: drawn from that
    result (the default) it almost never undercuts the other; drawn from the SCAN model as if unscreened, it does."""
    planner = _li2o_planner(twin_hulls[0], tmp_path)
    ev = planner.policy.expected_value.model_copy(update={"competitor_uses_pbe_results": uses_pbe_results})
    planner.policy = planner.policy.model_copy(update={"expected_value": ev})
    survival, numbers = planner._competitor_survival(_li2o_request(), {"new-low": 0.3}, [])
    if uses_pbe_results:
        assert survival[1] > 0.9 and numbers["competitor_from_pbe_results"] == 1
    else:
        assert survival[1] < 0.1 and "competitor_from_pbe_results" not in numbers


@pytest.mark.parametrize("signed", [False, True])
def test_planner_reads_a_pbe_stable_result_as_its_depth_when_the_policy_says_so(twin_hulls, tmp_path, signed):
    """new-low's PBE result lies 0.1 eV/atom below the known Li2O: the planner's computed PBE E_hull for the policy
    is 0 (censored, the default) or -0.1 (pbe_scan_signed_depth), and the SCAN view of it follows."""
    import json

    hulls = twin_hulls[0]
    planner = _li2o_planner(hulls, tmp_path)
    ev = planner.policy.expected_value.model_copy(update={"pbe_scan_signed_depth": signed})
    planner.policy = planner.policy.model_copy(update={"expected_value": ev})
    entry = _entry("new-low", _li2o_other(), "pbe", -2.1).as_dict()
    hulls.add_result("pbe", entry)
    ledger = planner.ledger
    ledger.set_budget_total(100.0)
    ledger.commit_plan(1, decisions=[{"structure_id": "new-low", "fidelity": "pbe", "estimated_cost": 1.0}],
                       numbers={}, jobs=[{"uuid": "u1", "structure_id": "new-low", "fidelity": "pbe",
                                          "estimated_cost": 1.0}])
    ledger.finish_job("u1", success=True, result_json=json.dumps({"entry": entry}), actual_cost=1.0,
                      actual_cpu_hours=1.0)
    computed = planner._computed_e_hull(signed_pbe=signed)
    assert computed["pbe"]["new-low"][1] == pytest.approx(-0.1 if signed else 0.0, abs=1e-6)
    plan = planner.plan(_li2o_request(done={("new-low", "pbe")}))
    numbers = {i.structure_id: i.numbers for i in plan.items if i.fidelity == "scan"}
    assert numbers["new-low"]["pbe_e_hull_ev_per_atom"] == pytest.approx(-0.1 if signed else 0.0, abs=1e-6)
    assert plan.numbers["pbe_scan_signed_depth"] is signed


def test_purchase_outcomes_leave_out_scan_runs_bought_on_a_pbe_result(tmp_path):
    """(fidelity, P at purchase, stable) pairs come from the round each calculation was bought in; SCAN runs bought
    on a PBE result and competing phases (also a pool candidate bought as one) are left out."""
    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.campaign.ledger import Ledger
    from screener.policies import load_policy

    ledger = Ledger.in_dir(tmp_path / "ledger", create=True)
    rows = [{"structure_id": s, "fidelity": f, "e_form_mean_ev_per_atom": -1.0, "e_form_std_ev_per_atom": 0.1,
             "hull_e_form_ev_per_atom": -1.0, "e_hull_mean_ev_per_atom": 0.0, "e_hull_std_ev_per_atom": 0.1,
             "p_stable": p} for s, f, p in (("a", "pbe", 0.6), ("a", "scan", 0.5), ("b", "scan", 0.7))]
    ledger.record_predictions(1, rows)
    ledger.record_predictions(2, [{**r, "p_stable": 0.9} for r in rows])
    planner = PolicyPlanner(load_policy("expected-value"), CampaignConfig(budget_total=100.0, batch_size=2),
                            ledger=ledger)
    # a: PBE in round 1 (came out stable), SCAN in round 2 (bought on the PBE result); b: SCAN in round 1, unstable
    computed = {"pbe": {"a": (1, 0.0, "candidate")},
                "scan": {"a": (2, 0.0, "candidate"), "b": (1, 0.2, "candidate"), "phase": (1, 0.0, "competing")}}
    assert sorted(planner._purchases(computed)) == [("pbe", 0.6, True, "a"), ("scan", 0.7, False, "b")]
    # c: a pool candidate bought in round 1 as another candidate's competing phase (its role still "candidate")
    ledger.record_predictions(1, [{**rows[2], "structure_id": "c", "p_stable": 0.4}], add=True)
    ledger.set_budget_total(100.0)
    ledger.commit_plan(1, decisions=[
        {"structure_id": "c", "fidelity": "scan", "estimated_cost": 5.0, "numbers": {"kind": "competing_phase"}},
        {"structure_id": "b", "fidelity": "scan", "estimated_cost": 5.0, "numbers": {"kind": "candidate"}}],
        numbers={}, jobs=[{"uuid": u, "structure_id": s, "fidelity": "scan", "estimated_cost": 5.0}
                          for u, s in (("u-c", "c"), ("u-b", "b"))])
    computed["scan"]["c"] = (1, 0.0, "candidate")
    assert sorted(planner._purchases(computed)) == [("pbe", 0.6, True, "a"), ("scan", 0.7, False, "b")]


def test_cost_blind_spend_is_read_from_the_ledger_decisions(tmp_path):
    """The planner's spend before a plan (the budget's total less what the request has left) and the part of it that
    went to cost-blind picks (accepted decisions whose route says so, in CPU-hours), for the cost-blind share."""
    from types import SimpleNamespace

    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.campaign.ledger import Ledger
    from screener.policies import load_policy

    ledger = Ledger.in_dir(tmp_path / "ledger", create=True)
    ledger.set_budget_total(100.0)
    ledger.commit_plan(1, decisions=[
        {"structure_id": "big", "fidelity": "scan", "estimated_cost": 20.0, "numbers": {"route": "cost_blind"}},
        {"structure_id": "small", "fidelity": "scan", "estimated_cost": 1.0, "numbers": {"kind": "candidate"}},
        {"structure_id": "late", "fidelity": "scan", "estimated_cost": 90.0, "numbers": {"route": "cost_blind"}}],
        numbers={}, jobs=[{"uuid": u, "structure_id": s, "fidelity": "scan", "estimated_cost": c}
                          for u, s, c in (("u-big", "big", 20.0), ("u-small", "small", 1.0), ("u-late", "late", 90.0))])
    config = CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=4.0)
    planner = PolicyPlanner(load_policy("expected-value"), config, ledger=ledger)
    # "late" did not fit the budget: not reserved, so not spent; 79 units are left before this round's picks
    spent, blind = planner._spent(SimpleNamespace(remaining_budget=79.0))
    assert (spent, blind) == (pytest.approx(21.0 * 4.0), pytest.approx(20.0 * 4.0))
    assert planner._spent(SimpleNamespace(remaining_budget=70.0))[0] == pytest.approx(30.0 * 4.0)


def test_element_sets_too_large_for_one_hull_are_skipped_and_counted(twin_hulls, tmp_path, monkeypatch):
    from screener.policies import competitors

    monkeypatch.setattr(competitors, "MAX_ELEMENTS", 1)  # Li-O (2 elements) is now "too large"
    survival, numbers = _li2o_planner(twin_hulls[0], tmp_path)._competitor_survival(_li2o_request())
    assert survival == [1.0, 1.0]
    assert numbers["competitor_skipped"] == 2 and numbers["competitor_groups"] == 0


def test_planner_gives_the_relation_each_candidates_and_pairs_cell_size(tmp_path):
    """With the relation's cell-size term the planner reads n_sites from the ledger: ln(n_sites / the candidates'
    median) per candidate and per PBE/SCAN pair (the campaign's own first, then the known set's; NaN unknown)."""
    import math

    from screener.campaign.components import PolicyPlanner
    from screener.campaign.config import CampaignConfig
    from screener.campaign.ledger import Ledger
    from screener.policies import load_policy

    ledger = Ledger.in_dir(tmp_path / "ledger", create=True)
    ledger.add_candidates([{"structure_id": s, "formula": "LiO2", "chemsys": "Li-O", "n_sites": n, "role": r,
                            "structure_json": None}
                           for s, n, r in (("a", 4, "candidate"), ("b", 8, "candidate"), ("c", 16, "candidate"),
                                           ("p", 2, "competing"))])
    policy = load_policy("expected-value")
    policy = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"pbe_scan_size_slope_sd": 1.0})})
    planner = PolicyPlanner(policy, CampaignConfig(budget_total=100.0, batch_size=2), ledger=ledger,
                            hulls=object())  # the known pairs below stand for what it reads once from the hulls
    planner._known_pairs, planner._known_pair_sites = [(0.0, 0.0)], [32.0]
    computed = {"pbe": {"c": (1, 0.0, "candidate"), "p": (1, 0.0, "competing"), "a": (1, 0.1, "candidate")},
                "scan": {"c": (2, 0.0, "candidate"), "p": (1, 0.0, "competing")}}
    _, pairs, pair_sites = planner._pbe_results(computed, with_sites=True)
    assert pairs == [(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)] and pair_sites == [16.0, 2.0, 32.0]
    log_sites, pair_log_sites = planner._log_sites(["a", "b", "c", "unknown"], pair_sites)
    assert log_sites[:3] == pytest.approx([math.log(0.5), 0.0, math.log(2.0)]) and math.isnan(log_sites[3])
    assert pair_log_sites == pytest.approx([math.log(2.0), math.log(0.25), math.log(4.0)])


def test_planner_reads_a_screened_result_on_the_campaign_scan_hull(twin_hulls, tmp_path):
    """A polymorph the campaign computed at both levels came out 0.25 eV/atom lower at SCAN than at PBE
    (PBE -2.05, SCAN -2.30; the known Li2O: -2.0 at both). A second one screened at PBE at -2.10 is on the PBE
    hull, but carried to SCAN by the shift fitted on both pairs (-0.125 for Li2O) it lies 0.075 eV/atom above the
    SCAN hull the first one made. The first one is the map's one pair: SCAN-stable, its x_s measured against the
    hull without it (the known Li2O)."""
    hulls = twin_hulls[0]
    planner = _li2o_planner(hulls, tmp_path)
    ev = planner.policy.expected_value.model_copy(update={"scan_hull_map": True, "competitor_samples": 0})
    planner.policy = planner.policy.model_copy(update={"expected_value": ev})
    ledger = planner.ledger
    ledger.set_budget_total(100.0)
    results = [("new-high", "pbe", -2.05, 1), ("new-high", "scan", -2.30, 2), ("new-low", "pbe", -2.10, 2)]
    for number, group in ((1, results[:1]), (2, results[1:])):
        ledger.commit_plan(number, decisions=[{"structure_id": s, "fidelity": f, "estimated_cost": 1.0}
                                              for s, f, _, _ in group], numbers={},
                           jobs=[{"uuid": f"u-{s}-{f}", "structure_id": s, "fidelity": f, "estimated_cost": 1.0}
                                 for s, f, _, _ in group])
        for sid, fidelity, e_form, _ in group:
            entry = _entry(sid, _li2o_other(), fidelity, e_form).as_dict()
            hulls.add_result(fidelity, entry)
            ledger.finish_job(f"u-{sid}-{fidelity}", success=True, result_json=json.dumps({"entry": entry}),
                              actual_cost=1.0, actual_cpu_hours=1.0)
    computed = planner._computed_e_hull()
    mapped, pairs = planner._scan_hull_inputs(computed, 1e-6)
    assert list(mapped) == ["new-low"] and mapped["new-low"] == pytest.approx(0.075, abs=2e-3)
    assert len(pairs) == 1 and pairs[0][2] is True and pairs[0][1] == pytest.approx(-0.175, abs=2e-3)
    plan = planner.plan(_li2o_request(done={("new-low", "pbe"), ("new-high", "pbe"), ("new-high", "scan")}))
    numbers = {i.structure_id: i.numbers for i in plan.items if i.fidelity == "scan"}
    assert numbers["new-low"]["scan_hull_mapped_e_hull_ev_per_atom"] == pytest.approx(0.075, abs=2e-3)
    assert plan.numbers["scan_hull_map_n_pairs"] == 1
