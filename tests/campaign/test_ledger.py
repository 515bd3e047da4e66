"""Tests of screener/campaign/ledger.py: write-ahead reservations, the budget invariant, states, errors."""

from __future__ import annotations

import sqlite3

import pytest

from screener.campaign.ledger import Ledger
from screener.errors import BudgetError, InvalidInputError


@pytest.fixture
def ledger(tmp_path):
    led = Ledger.in_dir(tmp_path / "camp", create=True)
    led.set_meta("budget_total", 10.0)
    led.start_round(1)
    yield led
    led.close()


def _job(uuid, sid, fidelity="pbe", cost=1.0):
    return {"uuid": uuid, "structure_id": sid, "fidelity": fidelity, "estimated_cost": cost, "flow_json": "{}"}


def test_wal_mode_and_tables(ledger):
    mode = ledger._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    names = {r[0] for r in ledger._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "candidates", "rounds", "predictions", "decisions", "jobs", "models", "hulls", "events"} <= names


def test_commit_plan_stops_at_first_job_over_budget(ledger):
    jobs = [_job("u1", "a", cost=4), _job("u2", "b", cost=5), _job("u3", "c", cost=3), _job("u4", "d", cost=0.5)]
    decisions = [{**j, "reason": "test"} for j in jobs]
    accepted = ledger.commit_plan(1, decisions=decisions, numbers={"x": 1}, jobs=jobs)
    assert accepted == ["u1", "u2"]  # u3 does not fit; the campaign stops there (u4 is not squeezed in)
    b = ledger.budget()
    assert b.reserved == pytest.approx(9.0) and b.spent == 0.0 and b.remaining == pytest.approx(1.0)
    assert [d["accepted"] for d in ledger.decisions(1)] == [1, 1, 0, 0]
    assert ledger.current_round()["state"] == "planned"


def test_reserve_job_refuses_overspend_and_repeats(ledger):
    ledger.reserve_job(uuid="u1", round_number=1, structure_id="a", fidelity="pbe", role="candidate",
                       estimated_cost=6.0)
    with pytest.raises(BudgetError, match="only 4"):
        ledger.reserve_job(uuid="u2", round_number=1, structure_id="b", fidelity="pbe", role="candidate",
                           estimated_cost=5.0)
    with pytest.raises(BudgetError, match="twice"):
        ledger.reserve_job(uuid="u3", round_number=1, structure_id="a", fidelity="pbe", role="candidate",
                           estimated_cost=1.0)
    # the failed reservations left nothing behind (each was one transaction)
    assert [j.uuid for j in ledger.jobs()] == ["u1"]


def test_finish_job_turns_reservation_into_charge(ledger):
    ledger.commit_plan(1, decisions=[], numbers={}, jobs=[_job("u1", "a", cost=4), _job("u2", "b", "scan", 5)])
    ledger.mark_submitted(["u1", "u2"])
    ledger.finish_job("u1", success=True, result_json='{"success": true}', actual_cost=3.0, actual_cpu_hours=0.3)
    ledger.finish_job("u2", success=False, result_json=None, actual_cost=None, actual_cpu_hours=None,
                      failure_reason="SCF")
    b = ledger.budget()
    assert b.spent == pytest.approx(3.0 + 5.0)  # failed job without an actual cost is charged its estimate
    assert b.reserved == 0.0
    assert ledger.job_counts() == {"pbe": {"done": 1}, "scan": {"failed": 1}}
    # finishing twice changes nothing
    ledger.finish_job("u1", success=True, result_json=None, actual_cost=99.0, actual_cpu_hours=9.9)
    assert ledger.budget().spent == pytest.approx(8.0)


def test_done_calculations_are_the_finished_jobs_keys(ledger):
    ledger.commit_plan(1, decisions=[], numbers={}, jobs=[_job("u1", "a"), _job("u2", "b", "scan", 5),
                                                          _job("u3", "c", "scan", 1)])
    ledger.mark_submitted(["u1", "u2", "u3"])
    for uuid in ("u2", "u1"):
        ledger.finish_job(uuid, success=True, result_json='{"success": true}', actual_cost=1.0, actual_cpu_hours=0.1)
    ledger.finish_job("u3", success=False, result_json=None, actual_cost=None, actual_cpu_hours=None)
    full = [(j.round, j.structure_id, j.fidelity) for j in ledger.jobs(states=["done"])]
    assert ledger.done_calculations() == full == [(1, "a", "pbe"), (1, "b", "scan")]
    assert ledger.done_calculations("scan") == [(1, "b", "scan")]


def test_not_a_campaign(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        Ledger.in_dir(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="not a screener campaign"):
        Ledger.in_dir(tmp_path)
    (tmp_path / "ledger.sqlite").write_text("this is not sqlite at all, just text" * 100)
    with pytest.raises(InvalidInputError, match="not a valid campaign ledger"):
        Ledger.in_dir(tmp_path)


def test_rollback_on_error(ledger):
    with pytest.raises(RuntimeError):
        with ledger.transaction() as cur:
            cur.execute("INSERT INTO events (time, kind, message) VALUES (0, 'x', 'y')")
            raise RuntimeError("boom")
    assert not [e for e in ledger.events() if e["kind"] == "x"]
    assert isinstance(ledger._conn, sqlite3.Connection)


def test_older_ledger_is_migrated(tmp_path):
    led = Ledger.in_dir(tmp_path, create=True)
    led._conn.execute("ALTER TABLE predictions DROP COLUMN hull_fidelity")  # as written by screener before it
    led.close()
    led = Ledger.in_dir(tmp_path)
    cols = {r["name"] for r in led._conn.execute("PRAGMA table_info(predictions)")}
    assert "hull_fidelity" in cols
    led.close()
