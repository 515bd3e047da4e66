"""Seconds per 1,000 jobs that screener's executors spend submitting and collecting (not running) calculations.

For each executor: ``submit`` N one-job calculations (screener's replay job, never run), mark them finished as a
worker would, then time ``states`` (engines only) and ``collect``. Workers write one result per update: the last
``--finish-one-by-one`` results (default 100) are written one update each and timed (``finish_s_per_1000``: the
job store's cost per 1,000 finished jobs once it holds ~N documents), the others in one batch (FireWorks: the
fireworks set COMPLETED). Executors:

- ``local``: the campaign folder's SQLite job store (``jobstore/jobstore.sqlite``, new campaigns) and queue files;
- ``local-json``: the same with the JSON-file store of campaigns made before it (rewrites its file each update);
- ``fireworks``: a mongomock LaunchPad in this process (no MongoDB server here), the campaign's SQLite job store.

The ledger's growth: N jobs planned (1,000 a round, with the stand-in flow JSON the loop stores), submitted and
finished with a CalcResult (structure and entry) as ``screener run`` records them; bytes of ``ledger.sqlite`` per
1,000 jobs and seconds per 1,000 jobs of ledger writes.

    python bench/executor_overhead.py --n 10000 [--executors local local-json fireworks] [--fireworks-n 5000]
        [--out bench/results/executor_overhead.json]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


NOTES = [
    "finish_s_per_1000: seconds for 1,000 results written one update each (as jobflow writes a finished job) into a "
    "job store already holding ~n_jobs documents; the JSON store rewrites its whole file on each",
    "fireworks: a mongomock LaunchPad in this process (no MongoDB server here); mongomock has no indexes, so its "
    "scans make submit and polls grow with the LaunchPad's size; a MongoDB server indexes fw_id and state",
    "ledger: ledger.sqlite after n_jobs stand-in calculations planned, submitted and finished; result_json (structure "
    "and entry, ~2.6 kB) and flow_json (~2.3 kB) are most of it",
]


def _flows(n: int) -> list:
    from screener.calculators.replay import replay_job

    flows = []
    for i in range(n):
        job = replay_job(f"s{i:06d}", "pbe", ["never-read.json"])
        job.metadata.update(structure_id=f"s{i:06d}", fidelity="pbe", backend="replay", n_sites=4)
        flows.append(job)
    return flows


def _finish(store, flows, one_by_one: int) -> float:
    """What workers do: one CalcResult document per job in the job store. The last ``one_by_one`` are written one
    update each (as jobflow writes a finished job), timed; returns seconds per 1,000 of those."""
    from monty.json import jsanitize

    from screener.calculators.result import CalcResult

    docs = []
    for job in flows:
        result = CalcResult(structure_id=job.metadata["structure_id"], fidelity="pbe", backend="replay",
                            label="bench", success=True, energy_ev=-4.0, n_sites=4, cost_cpu_hours=1.0)
        docs.append({"uuid": job.uuid, "index": 1, "output": jsanitize(result, strict=True, enum_values=True),
                     "metadata": job.metadata, "name": job.name})
    one_by_one = min(one_by_one, len(docs))
    first = docs[:len(docs) - one_by_one]
    if hasattr(store.docs_store, "update_json_file"):  # JSON store: filled in one write (not what is timed)
        if first:
            store.docs_store._collection.insert_many([dict(d) for d in first])
        store.docs_store.update_json_file()
    else:
        store.docs_store.update(first, key=["uuid", "index"])
    t0 = time.perf_counter()
    for doc in docs[len(docs) - one_by_one:]:
        store.docs_store.update(doc, key=["uuid", "index"])
    return (time.perf_counter() - t0) * 1000.0 / max(one_by_one, 1)


def _launchpad():
    import fireworks.core.launchpad as lp_module
    from maggma.stores.mongolike import mongomock

    lp_module.MongoClient = mongomock.MongoClient
    lp_module.GRIDFS_FALLBACK_COLLECTION = None
    lp = lp_module.LaunchPad(name="bench_overhead", strm_lvl="ERROR")
    lp.reset("", require_password=False)
    return lp


def _json_store(campaign: Path):
    """The JSON-file job store of campaigns made before the SQLite one."""
    from jobflow import JobStore

    from screener.execution.stores import AtomicJSONStore

    folder = campaign / "jobstore"
    return JobStore(AtomicJSONStore(str(folder / "outputs.json"), read_only=False, key="uuid"),
                    additional_stores={"data": AtomicJSONStore(str(folder / "data.json"), read_only=False,
                                                               key="blob_uuid")})


def measure(name: str, n: int, folder: Path, one_by_one: int) -> dict:
    from screener.execution import get_executor

    campaign = folder / name
    if name == "local":
        executor = get_executor("local", campaign, create_folders=False)
    elif name == "local-json":
        executor = get_executor("local", campaign, create_folders=False, store=_json_store(campaign))
    else:
        executor = get_executor(name, campaign, launchpad=_launchpad(), launch_here=False)
    flows = _flows(n)
    uuids = [f.uuid for f in flows]
    t0 = time.perf_counter()
    executor.submit(flows)
    submit_s = time.perf_counter() - t0
    finish_s_per_1000 = _finish(executor.store, flows, one_by_one)
    if name == "fireworks":
        executor.launchpad.fireworks.update_many({}, {"$set": {"state": "COMPLETED"}})
    states_s = None
    if hasattr(executor, "states"):
        t0 = time.perf_counter()
        states = executor.states(uuids)
        states_s = time.perf_counter() - t0
        assert set(states.values()) == {"done"}, set(states.values())
    t0 = time.perf_counter()
    results = executor.collect(uuids)
    collect_s = time.perf_counter() - t0
    assert all(r is not None and r.success for r in results.values())
    per_k = 1000.0 / n
    executor.store.close()  # SQLite: the write-ahead log checkpointed into the file, as after a run
    store_bytes = sum(p.stat().st_size for p in (campaign / "jobstore").iterdir() if p.is_file())
    return {"executor": name, "job_store": type(executor.store.docs_store).__name__, "n_jobs": n,
            "submit_s_per_1000": round(submit_s * per_k, 3),
            "finish_s_per_1000": round(finish_s_per_1000, 3), "finish_timed_jobs": min(one_by_one, n),
            "states_s_per_1000": None if states_s is None else round(states_s * per_k, 3),
            "collect_s_per_1000": round(collect_s * per_k, 3),
            "job_store_bytes": store_bytes, "job_store_bytes_per_1000": round(store_bytes * per_k)}


def ledger_growth(n: int, folder: Path) -> dict:
    """Bytes of ledger.sqlite per 1,000 jobs planned, submitted and finished as ``screener run`` records them."""
    import json

    from pymatgen.core import Lattice, Structure

    from screener.calculators import get_calculator
    from screener.calculators.result import CalcResult, make_entry_dict
    from screener.campaign.ledger import Ledger
    from screener.campaign.loop import _result_dict, dump_flow

    structure = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                          [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    calc = get_calculator("standin")
    campaign = folder / "ledger"
    ledger = Ledger.in_dir(campaign, create=True)
    ledger.set_meta("budget_total", 1e12)
    empty = ledger.path.stat().st_size
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        number = start // 1000 + 1
        ledger.start_round(number)
        jobs, results = [], {}
        for i in range(start, min(n, start + 1000)):
            sid = f"s{i:06d}"
            flow = calc.make_flow(structure, "pbe", sid)
            jobs.append({"uuid": flow.uuid, "structure_id": sid, "fidelity": "pbe", "estimated_cost": 1.0,
                         "estimated_cpu_hours": 1.0, "flow_json": dump_flow(flow)})
            entry = make_entry_dict(structure, -40.0, structure_id=sid, fidelity="pbe", backend="standin",
                                    run_type="GGA", parameters={}, data={"label": "bench"})
            results[flow.uuid] = CalcResult(structure_id=sid, fidelity="pbe", backend="standin", label="bench",
                                            success=True, energy_ev=-40.0, energy_per_atom_ev=-8.0, n_sites=5,
                                            final_structure=structure.as_dict(), cost_cpu_hours=1.0, entry=entry)
        decisions = [{"structure_id": j["structure_id"], "fidelity": "pbe", "estimated_cost": 1.0, "reason": "bench"}
                     for j in jobs]
        ledger.commit_plan(number, decisions=decisions, numbers={}, jobs=jobs)
        ledger.mark_submitted([j["uuid"] for j in jobs])
        for uuid, result in results.items():
            ledger.finish_job(uuid, success=True, result_json=json.dumps(_result_dict(result), default=str),
                              actual_cost=1.0, actual_cpu_hours=1.0)
    seconds = time.perf_counter() - t0
    ledger.close()  # checkpoints the write-ahead log into the file
    size = sum(p.stat().st_size for p in campaign.iterdir() if p.name.startswith("ledger.sqlite"))
    return {"n_jobs": n, "ledger_bytes": size, "ledger_bytes_empty": empty,
            "ledger_bytes_per_1000": round((size - empty) * 1000.0 / n),
            "ledger_write_s_per_1000": round(seconds * 1000.0 / n, 3),
            "what": "plan (decision + job with its flow JSON), submit, finish (CalcResult with structure and entry)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--executors", nargs="+", default=["local", "local-json", "fireworks"])
    parser.add_argument("--fireworks-n", type=int, help="jobs for FireWorks (default --n); smaller on a slow machine")
    parser.add_argument("--finish-one-by-one", type=int, default=100, help="results written one update each, timed")
    parser.add_argument("--no-ledger", action="store_true", help="skip the ledger's growth")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.executors:
            n = args.fireworks_n if name == "fireworks" and args.fireworks_n else args.n
            t0 = time.perf_counter()
            rows.append({**measure(name, n, Path(tmp), args.finish_one_by_one),
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(rows[-1], file=sys.stderr, flush=True)
        ledger = None if args.no_ledger else ledger_growth(args.n, Path(tmp))
    out = {"bench": "executor_overhead", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "load_average": os.getloadavg(), "results": rows, "ledger": ledger, "notes": NOTES}
    from screener.world.experiments import write_result

    write_result(out, args.out)


if __name__ == "__main__":
    main()
