"""The campaign's SQLite job store: maggma semantics, incremental writes, kill safety, old JSON campaigns."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from screener.execution.sqlite_store import SQLiteStore


def _docs():
    return [
        {"uuid": "a", "index": 1, "output": {"e": 1.0}, "name": "x"},
        {"uuid": "a", "index": 2, "output": {"e": 2.0}, "name": "x"},
        {"uuid": "b", "index": 1, "output": None, "name": "y", "metadata": {"fidelity": "scan"}},
        {"uuid": "c", "index": 1, "output": {"e": -3.0}, "name": "y", "metadata": {"fidelity": "pbe"}},
    ]


def test_same_answers_as_maggma_memory_store(tmp_path):
    """Every call jobflow makes gives what maggma's own (mongomock) store gives."""
    from maggma.stores import MemoryStore

    ours = SQLiteStore(str(tmp_path / "s.sqlite"), table="outputs", key="uuid")
    ref = MemoryStore(key="uuid")
    for store in (ours, ref):
        store.connect()
        store.update(_docs(), key=["uuid", "index"])
        store.update({"uuid": "c", "index": 1, "output": {"e": -4.0}, "name": "z"}, key=["uuid", "index"])

    def strip(docs):
        return [{k: v for k, v in d.items() if k != "_id"} for d in docs]

    calls = [
        dict(criteria={"uuid": "a"}, properties=["uuid", "index", "output"], sort={"index": -1}, limit=1),
        dict(criteria={"uuid": {"$in": ["a", "c", "zz"]}}, properties=["uuid", "index", "output"]),
        dict(criteria={"uuid": "c", "index": 1}),
        dict(criteria={"name": "y"}, properties={"uuid": 1, "metadata.fidelity": 1}),
        dict(criteria={"output.e": {"$gt": 0}}, sort={"index": 1}),
        dict(criteria={}, sort={"uuid": -1, "index": 1}, skip=1, limit=2),
    ]
    for call in calls:
        got, want = strip(ours.query(**call)), strip(ref.query(**call))
        if "sort" not in call:
            got, want = sorted(got, key=json.dumps), sorted(want, key=json.dumps)
        assert got == want, call
    assert ours.count() == ref.count() == 4
    assert ours.count({"uuid": "a"}) == ref.count({"uuid": "a"}) == 2
    assert sorted(ours.distinct("name")) == sorted(ref.distinct("name")) == ["x", "y", "z"]
    for store in (ours, ref):
        store.remove_docs({"uuid": "a", "index": 1})
    assert strip(ours.query({}, sort={"uuid": 1})) == strip(ref.query({}, sort={"uuid": 1}))


def test_updates_are_incremental_and_persist(tmp_path):
    """An update writes its rows only (the JSON store rewrote every document); a new connection sees them all."""
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(str(path), table="outputs", key="uuid")
    store.connect()
    statements: list[str] = []
    store._collection.set_trace_callback(statements.append)
    for i in range(200):
        store.update({"uuid": f"u{i}", "index": 1, "output": {"i": i}}, key=["uuid", "index"])
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 200  # one row per document written, never the 199 already there
    store.close()
    again = SQLiteStore(str(path), table="outputs", key="uuid")
    again.connect()
    assert again.count() == 200
    assert next(again.query({"uuid": "u7"}))["output"] == {"i": 7}


def test_documents_are_plain_json_never_decoded(tmp_path):
    """A stored document naming a class comes back as the dict it is: nothing is imported or built."""
    store = SQLiteStore(str(tmp_path / "s.sqlite"), table="outputs", key="uuid")
    store.connect()
    evil = {"@module": "os", "@class": "system", "args": ["echo no"]}
    store.update({"uuid": "u", "index": 1, "output": evil}, key=["uuid", "index"])
    assert next(store.query({"uuid": "u"}))["output"] == evil


def test_serialises_for_fireworks_tasks(tmp_path):
    """FireWorks stores the job store in each task: the dict rebuilds an equal store (allow-listed class)."""
    from screener._safe_json import check
    from screener.execution.stores import make_job_store

    store = make_job_store("local", tmp_path)
    d = store.as_dict()
    check(json.loads(json.dumps(d)), "job store", jobs=True)
    from jobflow import JobStore

    rebuilt = JobStore.from_dict(d)
    assert rebuilt.docs_store == store.docs_store
    assert rebuilt.additional_stores["data"] == store.additional_stores["data"]


_WRITER = textwrap.dedent(
    """
    import sys
    from screener.execution.sqlite_store import SQLiteStore
    store = SQLiteStore(sys.argv[1], table="outputs", key="uuid")
    store.connect()
    blob = "x" * 20000  # big rows: a kill lands mid-write
    i = 0
    while True:
        store.update([{"uuid": f"u{i}-{j}", "index": 1, "output": {"i": i, "blob": blob}} for j in range(5)],
                     key=["uuid", "index"])
        i += 1
        if i == 20:
            print("ready", flush=True)
    """
)


def test_kill_mid_write_leaves_a_consistent_store(tmp_path):
    """SIGKILL a process writing batches of five documents: every batch is there whole or not at all."""
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store = SQLiteStore(str(path), table="outputs", key="uuid")
    store.connect()
    batches: dict[int, int] = {}
    for doc in store.query({}):
        batches[doc["output"]["i"]] = batches.get(doc["output"]["i"], 0) + 1
    assert len(batches) >= 20 and set(batches.values()) == {5}
    assert sorted(batches) == list(range(len(batches)))


def test_old_json_campaign_opens_and_resumes(tmp_path, two_candidates):
    """A campaign folder written by the JSON store keeps it: its results are read and only the rest is run."""
    from screener.calculators import get_calculator
    from screener.execution import get_executor, make_job_store
    from screener.execution.stores import AtomicJSONStore, local_store_format

    campaign = tmp_path / "old"
    folder = campaign / "jobstore"
    from jobflow import JobStore

    old_store = JobStore(AtomicJSONStore(str(folder / "outputs.json"), read_only=False, key="uuid"),
                         additional_stores={"data": AtomicJSONStore(str(folder / "data.json"), read_only=False,
                                                                    key="blob_uuid")})
    calc = get_calculator("standin")
    (sid, structure), (sid2, structure2) = two_candidates
    first, second = calc.make_flow(structure, "pbe", sid), calc.make_flow(structure2, "pbe", sid2)
    old = get_executor("local", campaign, store=old_store, create_folders=False)
    old.submit([first, second])
    old.run([first.uuid])  # the old version stopped here (killed, or ran out of time)
    stored_at = json.loads((folder / "outputs.json").read_text())[0]["completed_at"]

    assert local_store_format(campaign) == "json"
    assert local_store_format(tmp_path / "new") == "sqlite"
    resumed = get_executor("local", campaign, create_folders=False)
    assert isinstance(resumed.store.docs_store, AtomicJSONStore)
    assert resumed.pending() == [second.uuid]
    assert resumed.run() == 1
    results = resumed.collect([first.uuid, second.uuid])
    assert all(r is not None and r.success for r in results.values())
    docs = {d["uuid"]: d for d in json.loads((folder / "outputs.json").read_text())}
    assert docs[first.uuid]["completed_at"] == stored_at and second.uuid in docs
    assert not (folder / "jobstore.sqlite").exists()
    new = make_job_store("local", tmp_path / "new")
    assert isinstance(new.docs_store, SQLiteStore)


def test_new_campaign_uses_sqlite(tmp_path, two_candidates):
    """A new campaign's executor writes jobstore.sqlite and no JSON store."""
    from screener.calculators import get_calculator
    from screener.execution import get_executor

    (sid, structure), _ = two_candidates
    flow = get_calculator("standin").make_flow(structure, "scan", sid)
    executor = get_executor("local", tmp_path, create_folders=False)
    executor.submit(flow)
    executor.run()
    assert executor.collect([flow.uuid])[flow.uuid].success
    assert (tmp_path / "jobstore" / "jobstore.sqlite").exists()
    assert not (tmp_path / "jobstore" / "outputs.json").exists()
