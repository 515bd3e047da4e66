"""Ledger at size: a large campaign records the best predictions and every planned one; an index for per-candidate
queries, added to old ledgers on open."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "campaign"))
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, make_structures  # noqa: E402

from screener.campaign import Campaign, CampaignConfig, Components, Ledger, Plan, PlanItem  # noqa: E402


class WorstPlanner:
    """Buys the highest predicted SCAN E_hull (PBE first): outside any top N of the ranking."""

    def plan(self, request):
        items = []
        for i in np.argsort(-np.asarray(request.e_hull_mean["scan"]), kind="stable"):
            sid = request.structure_ids[i]
            fidelity = "pbe" if (sid, "pbe") not in request.done else "scan"
            if (sid, fidelity) in request.done or len(items) >= request.batch_size:
                continue
            cost = float(request.cost[fidelity][i])
            if cost <= request.remaining_budget - sum(it.estimated_cost for it in items):
                items.append(PlanItem(sid, fidelity, "worst first", cost))
        return Plan(items, {})


def _factory(store):
    return lambda config, campaign_dir, ledger: Components(FakeCalculator(), FakeExecutor(store), FakeModel(),
                                                           FakeHulls(), WorstPlanner())


def test_large_campaign_records_top_n_and_every_planned_prediction(tmp_path, monkeypatch):
    import screener.campaign.ranking as ranking

    monkeypatch.setattr(ranking, "STORE_ALL_PREDICTIONS_UP_TO", 5)  # "large": more than 5 candidates
    monkeypatch.setattr(ranking, "STORED_TOP_N", 2)
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=40, batch_size=2), make_structures(12),
                           _factory(tmp_path / "store"))
    camp.run(max_rounds=2)
    assert camp.ledger.get_meta(ranking.PREDICTION_STORAGE_META)["top_n"] == 2
    for number in (1, 2):
        rows = camp.ledger.predictions(number)
        planned = {j.structure_id for j in camp.ledger.jobs(round_number=number)}
        assert planned and all(camp.ledger.predictions(number, structure_ids=[s]) for s in planned)
        for fidelity in ("pbe", "scan"):
            mine = {r["structure_id"]: r for r in rows if r["fidelity"] == fidelity}
            assert planned <= set(mine)  # the prediction made before each purchase is kept
            assert len(mine) <= 2 * 2 + len(planned) < 12
            best = min(mine.values(), key=lambda r: r["e_hull_mean_ev_per_atom"])
            assert best["structure_id"] not in planned  # the top rows are there too (the planner bought the worst)
    # the prospective error of round 1 was measured from the kept predictions
    assert any(p["round"] == 1 for p in camp.ledger.learning_curve())


def test_old_ledger_gets_the_prediction_index_on_open(tmp_path):
    ledger = Ledger.in_dir(tmp_path, create=True)
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:  # a ledger written before the index
        conn.execute("DROP INDEX predictions_by_structure")

    def indexes():
        with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
            return {r[1] for r in conn.execute("PRAGMA index_list(predictions)")}

    assert "predictions_by_structure" not in indexes()
    with Ledger.in_dir(tmp_path, read_only=True) as ro:  # a reader changes nothing (and still works)
        assert ro.predictions(1) == []
    assert "predictions_by_structure" not in indexes()
    Ledger.in_dir(tmp_path).close()
    assert "predictions_by_structure" in indexes()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM predictions WHERE structure_id = 'x' AND fidelity = 'scan'"))
    assert "predictions_by_structure" in plan
