"""One plan per structure per round, N_p with the pre-training set, and no fine-tune after the last purchase."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, make_structures

from screener.campaign import Campaign, CampaignConfig, Components, Ledger, Plan, PlanItem, PlanRequest
from screener.campaign.components import PolicyPlanner, learning_curve_points
from screener.campaign.loop import mae_with_standard_error
from screener.policies import load_policy

SHIPPED_N_P = 17_616  # the shipped ensemble's train + validation structures (19,573 minus its 1,957 test split)


class RepeatingPlanner:
    """Plans every open candidate at both fidelities and once more as a competing phase: the loop must keep one."""

    def __init__(self) -> None:
        self.requests: list[PlanRequest] = []

    def plan(self, request: PlanRequest) -> Plan:
        self.requests.append(request)
        items: list[PlanItem] = []
        order = np.argsort(request.e_hull_mean["scan"], kind="stable")
        for i in order:
            sid = request.structure_ids[i]
            for fidelity in ("pbe", "scan"):
                if (sid, fidelity) not in request.done:
                    items.append(PlanItem(sid, fidelity, "greedy", float(request.cost[fidelity][i])))
                    items.append(PlanItem(sid, fidelity, f"competing phase for the SCAN hull of {sid}",
                                          float(request.cost[fidelity][i])))
        return Plan(items[: 2 * request.batch_size], {"n_items": len(items)})


class PretrainedModel(FakeModel):
    """A fake model that says how much PBE data it was pre-trained on."""

    def pretraining_set_sizes(self) -> dict[str, int]:
        return {"pbe": SHIPPED_N_P, "scan": 0}


def _factory(store, planner=None, model=None):
    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), FakeExecutor(store), model or FakeModel(), FakeHulls(),
                          planner or RepeatingPlanner())

    return factory


def test_a_structure_is_planned_once_per_round_and_decisions_are_the_jobs(tmp_path):
    planner = RepeatingPlanner()
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=200, batch_size=4), make_structures(10),
                           _factory(tmp_path / "store", planner))
    camp.run(max_rounds=3)
    for r in (1, 2, 3):
        decisions = camp.ledger.decisions(r)
        ids = [d["structure_id"] for d in decisions]
        assert len(ids) == len(set(ids)), f"round {r} plans a structure twice: {Counter(ids)}"
        jobs = camp.ledger.jobs(round_number=r)
        # what the ledger says was planned and accepted is exactly the jobs that were reserved
        assert sorted((d["structure_id"], d["fidelity"]) for d in decisions if d["accepted"]) == sorted(
            (j.structure_id, j.fidelity) for j in jobs)
        # the slots the repeats would have taken go to the next candidates: a full batch
        assert len(jobs) == 4


def test_policy_planner_never_plans_a_candidate_as_its_own_or_anothers_competing_phase():
    """mp-2 is a candidate and also a SCAN competing phase of mp-1's (and its own) chemical system."""
    ids = ["mp-1", "mp-2", "mp-3", "mp-4"]
    request = PlanRequest(
        round_number=3, structure_ids=ids, chemsys=["Li-O", "Li-O", "Li-O", "Fe-O"],
        e_hull_mean={"pbe": np.array([-0.2, -0.1, 0.05, 0.1]), "scan": np.array([-0.2, -0.1, 0.05, 0.1])},
        e_hull_std={"pbe": np.full(4, 0.02), "scan": np.full(4, 0.02)},
        cost={"pbe": np.ones(4), "scan": np.full(4, 5.0)}, done=set(), n_scan=0, n_pbe=0, learning_curve=[],
        remaining_budget=100.0, batch_size=8, seed=0,
        competing=[PlanItem("mp-2", "scan", "competing phase", 5.0, {"chemsys": "Li-O"}),
                   PlanItem("mp-3", "pbe", "competing phase", 1.0, {"chemsys": "Li-O"})],
    )
    config = CampaignConfig(budget_total=100, unit_cpu_hours=1.0, batch_size=8)
    for policy in ("scaling-law", "expected-value", "scan-only", "pbe-then-scan", "random"):
        plan = PolicyPlanner(load_policy(policy), config).plan(request)
        planned = [i.structure_id for i in plan.items]
        assert len(planned) == len(set(planned)), (policy, [(i.structure_id, i.fidelity, i.reason)
                                                            for i in plan.items])


def test_scaling_law_n_p_includes_the_pretraining_set_and_changes_the_allocation():
    """A synthetic learning curve: the same campaign measured with N_p = N_p0 + k and (the old bug) N_p = k."""
    rng = np.random.default_rng(0)
    rows = []
    n_scan, k = 0, 0
    for r in range(1, 7):
        n_scan += 3
        k += 5
        true_mae = 2.0 * n_scan ** -0.3 * (SHIPPED_N_P + k) ** -0.1
        mae = true_mae * float(np.exp(rng.normal(0, 0.05)))
        rows.append({"round": r, "fidelity": "scan", "n_scan": n_scan, "n_pbe": k, "mae_ev_per_atom": mae,
                     "n_points": 5, "mae_se_ev_per_atom": 0.1 * mae, "n_pbe_pretraining": None})
    ids = [f"c{i}" for i in range(30)]
    config = CampaignConfig(budget_total=1000, unit_cpu_hours=1.0, batch_size=10)
    policy = load_policy("scaling-law").model_copy(update={"min_points_for_fit": 3})
    planner = PolicyPlanner(policy, config)
    out = {}
    for n_p0 in (0, SHIPPED_N_P):
        request = PlanRequest(
            round_number=7, structure_ids=ids, chemsys=[f"Li-X{i}" for i in range(30)],
            e_hull_mean={f: np.linspace(-0.1, 0.3, 30) for f in ("pbe", "scan")},
            e_hull_std={f: np.full(30, 0.1) for f in ("pbe", "scan")},
            cost={"pbe": np.ones(30), "scan": np.full(30, 5.0)}, done=set(), n_scan=n_scan, n_pbe=k,
            learning_curve=rows, remaining_budget=1000.0, batch_size=10, seed=0, n_pbe_pretraining=n_p0,
        )
        plan = planner.plan(request)
        out[n_p0] = plan.numbers
    fed, bug = out[SHIPPED_N_P], out[0]
    # N_p barely moves against 17,616 pre-training structures: b comes from the prior, not from 5..30 campaign points
    assert fed["allocation"]["n_pbe_before"] == SHIPPED_N_P + k
    assert bug["allocation"]["n_pbe_before"] == k
    assert fed["b"] != pytest.approx(bug["b"], abs=0.05)
    assert fed["scaling_law"]["prior_weight_b"] > bug["scaling_law"]["prior_weight_b"]
    # 30 more PBE points on top of 17,616 lower the MAE by almost nothing, on top of 30 they seemed to halve it
    assert fed["allocation"]["gain_per_cpu_hour_pbe"] < 0.01 * bug["allocation"]["gain_per_cpu_hour_pbe"]
    assert (fed["allocation"]["n_scan"], fed["allocation"]["n_pbe"]) != (bug["allocation"]["n_scan"],
                                                                        bug["allocation"]["n_pbe"])


def test_learning_curve_points_weight_by_standard_error_and_fix_old_rows():
    rows = [
        {"fidelity": "scan", "n_scan": 3, "n_pbe": 10, "mae_ev_per_atom": 0.2, "mae_se_ev_per_atom": 0.1,
         "n_points": 3, "n_pbe_pretraining": 100},
        {"fidelity": "scan", "n_scan": 9, "n_pbe": 20, "mae_ev_per_atom": 0.2, "mae_se_ev_per_atom": 0.02,
         "n_points": 12, "n_pbe_pretraining": 100},
        {"fidelity": "scan", "n_scan": 12, "n_pbe": 20, "mae_ev_per_atom": 0.1, "n_points": 4},  # old ledger row
        {"fidelity": "pbe", "n_scan": 12, "n_pbe": 20, "mae_ev_per_atom": 0.1, "n_points": 4},
    ]
    points = learning_curve_points(rows, n_pbe_pretraining=100)
    assert [p.weight for p in points] == pytest.approx([4.0, 100.0, 4.0])
    assert [p.n_pbe for p in points] == [10, 20, 120]
    mae, se = mae_with_standard_error([0.1, -0.3, 0.2])
    assert mae == pytest.approx(0.2) and se == pytest.approx(0.1 / np.sqrt(3))


def test_loop_feeds_n_p_with_the_pretraining_set(tmp_path):
    from campaign_fakes import GreedyPlanner

    planner = GreedyPlanner()
    seen: list[PlanRequest] = []
    original = planner.plan
    planner.plan = lambda request: (seen.append(request), original(request))[1]
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=40, batch_size=4), make_structures(8),
                           _factory(tmp_path / "store", planner, PretrainedModel()))
    camp.run(max_rounds=3)
    assert seen and all(r.n_pbe_pretraining == SHIPPED_N_P for r in seen)
    curve = camp.ledger.learning_curve()
    assert curve
    for point in curve:
        assert point["n_pbe_pretraining"] == SHIPPED_N_P
        assert point["n_pbe"] >= SHIPPED_N_P
        assert point["mae_se_ev_per_atom"] > 0
    assert camp.ledger.get_meta("pretraining_set_sizes") == {"pbe": SHIPPED_N_P, "scan": 0}


def test_shipped_model_pretraining_set_size():
    from screener.campaign.ensemble_model import EnsembleModel, default_model_dir, pretraining_set_size

    folder = default_model_dir()
    info = json.loads((folder / "ensemble.json").read_text())
    assert pretraining_set_size(folder) == info["n_structures"] - info["split"]["n_test"] == SHIPPED_N_P
    assert EnsembleModel(folder).pretraining_set_sizes() == {"pbe": SHIPPED_N_P, "scan": 0}


def _ensemble_folder(folder, parent, command, n_structures, n_test):
    """An ensemble folder with only the ``ensemble.json`` fields the pre-training count reads."""
    folder.mkdir()
    (folder / "ensemble.json").write_text(json.dumps({
        "init_from": str(parent) if parent else None, "command": command, "n_structures": n_structures,
        "split": {"n_test": n_test}}))
    return folder


def test_campaign_fine_tunes_count_zero_and_the_chain_leads_to_the_pretrained_model(tmp_path):
    from screener.campaign.ensemble_model import CAMPAIGN_FINE_TUNE_COMMAND, pretraining_set_size

    def write(name, parent, command, n, n_test):
        return _ensemble_folder(tmp_path / name, parent, command, n, n_test)

    base = write("base", None, "screener train ...", 1000, 100)
    round1 = write("r1", base, f"{CAMPAIGN_FINE_TUNE_COMMAND}1 fine-tune, pbe)", 7, 0)
    round2 = write("r2", round1, f"{CAMPAIGN_FINE_TUNE_COMMAND}2 fine-tune, pbe)", 12, 0)
    assert pretraining_set_size(round2) == 900
    assert pretraining_set_size(round2, follow_init=False) == 0
    assert pretraining_set_size(tmp_path / "missing") == 0


def test_an_initial_scan_model_stays_the_scan_pretraining_and_its_own_fit_is_the_scan_prior(tmp_path):
    """A campaign started from a SCAN ensemble (``scan_model``): its training set is N_s0 before and after the
    campaign fine-tunes it, SCAN is not borrowed from the PBE model, and the SCAN spread prior is the SCAN
    ensemble's own held-out fit, never its PBE parent's."""
    from screener.campaign.ensemble_model import CAMPAIGN_FINE_TUNE_COMMAND, EnsembleModel, write_spread_calibration
    from screener.policies.calibration import SpreadCalibration

    def write(name, parent, command, n, n_test):
        return _ensemble_folder(tmp_path / name, parent, command, n, n_test)

    pbe = write("pbe", None, "screener train ...", 1000, 100)
    write_spread_calibration(pbe, {"model": SpreadCalibration(scale=3.0, exponent=0.3)})
    scan0 = write("scan0", pbe, "screener train --init pbe --transfer full", 300, 30)
    scan1 = write("scan1", scan0, f"{CAMPAIGN_FINE_TUNE_COMMAND}1 fine-tune, scan)", 8, 0)
    for current in (scan0, scan1):
        model = EnsembleModel(pbe, current, initial_scan_dir=scan0)
        assert model.pretraining_set_sizes() == {"pbe": 900, "scan": 270}
        assert not model.borrows_model("scan")
    # no SCAN fit of its own: the PBE parent's is not taken for one
    assert EnsembleModel(pbe, scan1, initial_scan_dir=scan0).own_scan_calibration() is None
    write_spread_calibration(scan0, {"model": SpreadCalibration(scale=1.5, exponent=0.6)})
    own = EnsembleModel(pbe, scan1, initial_scan_dir=scan0).own_scan_calibration()
    assert (own.scale, own.exponent) == (1.5, 0.6)
    # the campaign's own transfer (no initial SCAN model) learned SCAN from the campaign only
    transferred = EnsembleModel(pbe, write("scan-own", pbe, f"{CAMPAIGN_FINE_TUNE_COMMAND}1 fine-tune, scan)", 8, 0))
    assert transferred.pretraining_set_sizes() == {"pbe": 900, "scan": 0}
    assert transferred.own_scan_calibration() is None


class CountingModel(FakeModel):
    def __init__(self) -> None:
        super().__init__()
        self.fine_tuned_rounds: list[int] = []

    def fine_tune(self, targets, structures, *, out_dir, round_number, seed):
        self.fine_tuned_rounds.append(round_number)
        return super().fine_tune(targets, structures, out_dir=out_dir, round_number=round_number, seed=seed)


def test_last_round_does_not_fine_tune_and_a_resume_with_more_budget_does(tmp_path):
    from campaign_fakes import GreedyPlanner

    model = CountingModel()
    factory = _factory(tmp_path / "store", GreedyPlanner(), model)
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=12, batch_size=3), make_structures(8),
                           factory)
    summaries: list[dict] = []
    stages: list[str] = []
    out = camp.run(on_round=summaries.append, progress=lambda stage, done, total: stages.append(stage))
    assert out["finished"]
    finished = [r for r in camp.ledger.rounds() if r["state"] == "finished"]
    last = finished[-1]["round"]
    assert last >= 2
    assert model.fine_tuned_rounds == list(range(1, last))  # every round but the last
    assert last not in {m["round"] for m in camp.ledger.models()}
    assert finished[-1]["info"]["fine_tune"] == "deferred"
    assert len(camp.ledger.hull_snapshots("scan")) == len(finished)  # the last round still updated its hulls
    assert camp.ledger.rounds()[-1]["state"] == "empty"
    # progress stages carry their round (a bar per round), and the last round shows no fine-tuning stage
    assert {"round 1: calculations", "round 2: calculations"} <= set(stages)
    assert f"round {last}: fine-tuning" not in stages and "round 1: fine-tuning" in stages
    # one summary per finished round, its numbers from the ledger
    assert [s["round"] for s in summaries] == [r["round"] for r in finished]
    assert [s["fine_tuned"] for s in summaries] == [True] * (last - 1) + [False]
    assert summaries[-1]["budget_spent"] == pytest.approx(camp.ledger.budget().spent)
    assert sum(sum(s["bought"].values()) for s in summaries) == len(camp.ledger.jobs())
    camp.ledger.close()

    # a raised budget: the resume fine-tunes the deferred round first, then buys more
    with Ledger.in_dir(tmp_path / "c") as ledger:
        ledger.set_budget_total(40.0)  # what `screener budget` does: the empty last round plans again
    model2 = CountingModel()
    camp = Campaign.open(tmp_path / "c", _factory(tmp_path / "store", GreedyPlanner(), model2))
    camp.run(max_rounds=1)
    assert model2.fine_tuned_rounds[0] == last
    assert last in {m["round"] for m in camp.ledger.models()}
    assert len(camp.ledger.jobs()) > sum(sum(s["bought"].values()) for s in summaries)  # it bought more
    camp.ledger.close()


def test_old_ledger_gets_the_learning_curve_uncertainty_columns(tmp_path):
    import sqlite3

    with Ledger.in_dir(tmp_path, create=True):
        pass
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    for column in ("mae_se_ev_per_atom", "n_pbe_pretraining"):
        conn.execute(f"ALTER TABLE learning_curve DROP COLUMN {column}")  # a ledger written before they existed
    conn.execute("INSERT INTO learning_curve (round, fidelity, n_scan, n_pbe, mae_ev_per_atom, source, n_points) "
                 "VALUES (1, 'scan', 3, 4, 0.2, 'prospective', 3)")
    conn.commit()
    conn.close()
    with Ledger.in_dir(tmp_path) as ledger:
        (row,) = ledger.learning_curve()
        assert row["mae_se_ev_per_atom"] is None and row["n_pbe_pretraining"] is None
        ledger.add_learning_curve_point(round_number=2, fidelity="scan", n_scan=6, n_pbe=17_620, mae_ev_per_atom=0.1,
                                        source="prospective", n_points=4, mae_se_ev_per_atom=0.02,
                                        n_pbe_pretraining=17_616)
        points = learning_curve_points(ledger.learning_curve(), n_pbe_pretraining=17_616)
    assert [p.n_pbe for p in points] == [17_620, 17_620]  # the old row's campaign-only N_p gets the pre-training
    assert [p.weight for p in points] == pytest.approx([3.0, 25.0])


class PartialDataCalculator(FakeCalculator):
    """Like a replay data set that lacks some calculations: make_flow raises for the first ``n_missing`` structures
    it is asked to set up (the ones the planner likes best), at both fidelities."""

    def __init__(self, n_missing: int) -> None:
        super().__init__()
        self.n_missing, self.missing_ids = n_missing, []

    def make_flow(self, structure, fidelity, structure_id, **kw):
        from screener.errors import CalculationError

        if structure_id not in self.missing_ids and len(self.missing_ids) < self.n_missing:
            self.missing_ids.append(structure_id)
        if structure_id in self.missing_ids:
            raise CalculationError(f"the data set has no {fidelity} result for {structure_id}")
        return super().make_flow(structure, fidelity, structure_id, **kw)


def test_calculations_the_back_end_lacks_free_their_slots_and_never_end_the_campaign(tmp_path):
    structures = make_structures(10)
    calculator = PartialDataCalculator(n_missing=6)  # more than a whole batch cannot be set up

    def factory(config, campaign_dir, ledger):
        return Components(calculator, FakeExecutor(tmp_path / "store"), FakeModel(), FakeHulls(), RepeatingPlanner())

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=500, batch_size=4), structures, factory)
    summary = camp.run()
    missing = {(s, f) for s in calculator.missing_ids for f in ("pbe", "scan")}
    assert len(calculator.missing_ids) == 6
    # every calculation that can be set up was bought; the lacking ones neither stopped the campaign in round 1
    # (the planner's favourites all lack data) nor were tried again in later rounds
    bought = {(j.structure_id, j.fidelity) for j in camp.ledger.jobs()}
    assert bought == {(s, f) for s in structures for f in ("pbe", "scan")} - missing
    assert summary["finished"] and camp.ledger.jobs(round_number=1)
    assert {tuple(p) for p in camp.ledger.get_meta("unavailable_calculations")} <= missing
