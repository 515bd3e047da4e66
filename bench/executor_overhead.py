"""Seconds per 1,000 jobs that screener's executors spend submitting and collecting (not running) calculations.

For each executor: ``submit`` N one-job calculations (screener's replay job, never run), mark them finished as a
worker would (their CalcResult documents written to the job store in one batch; FireWorks: the fireworks set
COMPLETED), then time ``states`` (engines only) and ``collect``. Local: the campaign folder's JSON job store and
queue files. FireWorks: a mongomock LaunchPad in this process (no MongoDB server here), the campaign's JSON job store.

    python bench/executor_overhead.py --n 1000 [--executors local fireworks] [--out bench/results/executor_overhead.json]

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


def _flows(n: int) -> list:
    from screener.calculators.replay import replay_job

    flows = []
    for i in range(n):
        job = replay_job(f"s{i:06d}", "pbe", ["never-read.json"])
        job.metadata.update(structure_id=f"s{i:06d}", fidelity="pbe", backend="replay", n_sites=4)
        flows.append(job)
    return flows


def _finish(store, flows) -> None:
    """What workers do: one CalcResult document per job in the job store."""
    from monty.json import jsanitize

    from screener.calculators.result import CalcResult

    docs = []
    for job in flows:
        result = CalcResult(structure_id=job.metadata["structure_id"], fidelity="pbe", backend="replay",
                            label="bench", success=True, energy_ev=-4.0, n_sites=4, cost_cpu_hours=1.0)
        docs.append({"uuid": job.uuid, "index": 1, "output": jsanitize(result, strict=True, enum_values=True),
                     "metadata": job.metadata, "name": job.name})
    store.docs_store.update(docs, key=["uuid", "index"])


def _launchpad():
    import fireworks.core.launchpad as lp_module
    from maggma.stores.mongolike import mongomock

    lp_module.MongoClient = mongomock.MongoClient
    lp_module.GRIDFS_FALLBACK_COLLECTION = None
    lp = lp_module.LaunchPad(name="bench_overhead", strm_lvl="ERROR")
    lp.reset("", require_password=False)
    return lp


def measure(name: str, n: int, folder: Path) -> dict:
    from screener.execution import get_executor

    kwargs = {"create_folders": False} if name == "local" else {"launchpad": _launchpad(), "launch_here": False}
    executor = get_executor(name, folder / name, **kwargs)
    flows = _flows(n)
    uuids = [f.uuid for f in flows]
    t0 = time.perf_counter()
    executor.submit(flows)
    submit_s = time.perf_counter() - t0
    _finish(executor.store, flows)
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
    return {"executor": name, "n_jobs": n, "submit_s_per_1000": round(submit_s * per_k, 3),
            "states_s_per_1000": None if states_s is None else round(states_s * per_k, 3),
            "collect_s_per_1000": round(collect_s * per_k, 3),
            "job_store_bytes": sum(p.stat().st_size for p in (folder / name / "jobstore").glob("*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--executors", nargs="+", default=["local", "fireworks"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, args.n, Path(tmp)) for name in args.executors]
    out = {"bench": "executor_overhead", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "load_average": os.getloadavg(), "results": rows}
    from screener.world.experiments import write_result

    write_result(out, args.out)


if __name__ == "__main__":
    main()
