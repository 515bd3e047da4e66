"""Local executor: persistent store in the campaign folder, resume after SIGKILL, failures never block."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from screener.execution import get_executor, make_job_store

WORKER = Path(__file__).parent / "standin_worker.py"


def _stored(campaign: Path) -> dict[str, str]:
    """uuid -> completed_at of the outputs in the campaign's SQLite job store (read from disk, read-only)."""
    import sqlite3

    path = campaign / "jobstore" / "jobstore.sqlite"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT doc FROM outputs").fetchall()
    except sqlite3.OperationalError:  # the table is made on the worker's first connect
        return {}
    finally:
        conn.close()
    docs = [json.loads(text) for (text,) in rows]  # a torn row would fail here
    return {d["uuid"]: d["completed_at"] for d in docs if d.get("output") is not None}


def _worker(campaign: Path, n: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(campaign), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )


@pytest.mark.slow
def test_forty_standin_jobs_survive_sigkill(tmp_path):
    """20 candidates x {PBE, SCAN}: kill -9 mid-run, re-run, only the missing ones are computed."""
    campaign = tmp_path / "campaign"
    first = _worker(campaign, 20)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None and len(_stored(campaign)) < 5:
        time.sleep(0.02)
    assert first.poll() is None, "the first run finished before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    before = _stored(campaign)
    assert 5 <= len(before) < 40

    second = _worker(campaign, 20)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    after = _stored(campaign)
    assert len(report["uuids"]) == 40 and set(report["uuids"]) == set(after)
    assert report["calls"] == 40 - len(before)  # only the missing ones were computed
    assert all(after[u] == t for u, t in before.items())  # stored results were not recomputed

    executor = get_executor("local", campaign)
    results = executor.collect(report["uuids"])
    assert all(r is not None and r.success for r in results.values())
    assert {(r.structure_id, r.fidelity) for r in results.values()} == {
        (r.structure_id, f) for r in results.values() for f in ("pbe", "scan")
    }
    assert len({r.structure_id for r in results.values()}) == 20
    assert executor.describe() == {"executor": "local", "queued": 40, "done": 40, "pending": 0}


def test_submit_run_collect_and_failures(tmp_path, two_candidates):
    from screener.calculators import get_calculator
    from screener.calculators.replay import replay_job

    (sid, structure), _ = two_candidates
    executor = get_executor("local", tmp_path / "c", create_folders=False)
    calc = get_calculator("standin")
    good = calc.make_flow(structure, "pbe", sid)
    broken = replay_job("ghost", "scan", [str(tmp_path / "missing.json")])
    broken.metadata.update(structure_id="ghost", fidelity="scan", backend="replay", n_sites=3, cost_cpu_hours=0.0)
    uuids = executor.submit([good, broken])
    assert uuids == [good.uuid, broken.uuid]
    assert executor.submit(good) == [good.uuid]  # idempotent
    assert executor.collect(uuids) == {good.uuid: None, broken.uuid: None}
    seen = []
    assert executor.run(progress=lambda done, total: seen.append((done, total))) == 2
    assert seen == [(1, 2), (2, 2)]
    results = executor.collect(uuids)
    assert results[good.uuid].success and results[good.uuid].structure_id == sid
    failed = results[broken.uuid]
    assert failed is not None and not failed.success
    assert "missing.json" in failed.failure_reason and failed.structure_id == "ghost"
    assert executor.run() == 0  # nothing left: failures are results too


def test_results_persist_across_executors(tmp_path, two_candidates):
    from screener.calculators import get_calculator

    (sid, structure), _ = two_candidates
    job = get_calculator("standin").make_flow(structure, "scan", sid)
    first = get_executor("local", tmp_path, create_folders=False)
    first.submit(job)
    first.run()
    energy = first.collect([job.uuid])[job.uuid].energy_ev
    second = get_executor("local", tmp_path)
    assert second.pending() == []
    assert second.collect([job.uuid])[job.uuid].energy_ev == energy


def test_job_store_kinds(tmp_path):
    store = make_job_store("local", tmp_path)
    store.connect()
    assert "data" in store.additional_stores
    store.update({"uuid": "u1", "index": 1, "output": {"x": 1}, "completed_at": "now", "metadata": {}, "hosts": []})
    again = make_job_store("local", tmp_path)
    again.connect()
    assert again.get_output("u1") == {"x": 1}
    from screener.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        make_job_store("mongo", tmp_path)
    with pytest.raises(InvalidInputError):
        make_job_store("sqlite", tmp_path)
    mongo = make_job_store("mongo", "mongodb://localhost:27017/screener_test")
    assert mongo.docs_store.database == "screener_test" and "data" in mongo.additional_stores
