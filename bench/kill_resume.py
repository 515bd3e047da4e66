"""SIGKILL a small real campaign at random times over its whole run (creation included), resume after each kill.

The campaign runs on the real components (CHGNet stand-in calculators, local jobflow executor with its JSON job
store, a tiny CGAT ensemble, the scaling-law policy) in a subprocess. First one uninterrupted run gives the reference
(its ledger events measure progress); then a campaign is started, killed with SIGKILL at a random point (during its
creation, a restart's start-up, or a random point of the work left: after a random number of the reference's
ledger events plus a random part of the time the reference took to its next event) and started again with the same
options (a resume) until it finishes; campaigns are run this way until at least ``--kills`` kills were made. Each finished campaign is compared with the reference: jobs, results, the SCAN-stable set and the budget spent.

Counts (the JSON object printed last; also written to ``--out``):

``kills``
    SIGKILLs sent to a live campaign process (``kill_stages``: where each landed, read from the folder afterwards).
``resumed``
    restarts after a kill that exited 0.
``identical_final_result``
    finished campaigns whose final ledger outcome equals the uninterrupted run's (of ``campaigns``).
``duplicates``
    calculations bought twice: more than one ledger job, or more than one job-store output, for one (structure,
    fidelity).
``lost``
    calculations whose result is in the job store but not in the ledger, ledger results without a store output, and
    jobs left open at the end.
``overspent``
    finished campaigns whose spent budget exceeds the total.
``recomputed``
    calculations the calculator ran more than once (a kill between the calculator returning and the job-store write
    loses that calculation's result: it is run again and charged once; see docs/reliability.md).

    .venv/bin/python bench/kill_resume.py --kills 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "campaign" / "data"

# The campaign process: counts every calculation the stand-in runs (one line, fsynced, after the calculator
# returns), then runs or resumes the campaign through the Python API with the options given as JSON.
WORKER = """
import hashlib, json, os, sys
log_path, options = sys.argv[1], json.loads(sys.argv[2])
import screener.calculators.standin as standin
_run = standin._run_maker
def _counted(maker, structure):
    doc = _run(maker, structure)
    key = hashlib.sha1(json.dumps(structure.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    with open(log_path, "a") as fh:
        fh.write(key + " " + str(maker.calculator_kwargs.get("checkpoint")) + "\\n")
        fh.flush()
        os.fsync(fh.fileno())
    return doc
standin._run_maker = _counted
from screener.campaign.api import run_campaign
folder, summary = run_campaign(**options)
print("SUMMARY " + json.dumps(summary), flush=True)
"""


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SCREENER_CACHE_DIR": str(work / "cache")}


def _start(work: Path, options: dict[str, Any], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(log), json.dumps(options)], env=_env(work),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work)


def _start_to_files(work: Path, options: dict[str, Any], log: Path, out: Path) -> subprocess.Popen:
    """A campaign process writing its stdout and stderr to ``out`` (polled, never read while it runs)."""
    with open(out, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", WORKER, str(log), json.dumps(options)], env=_env(work),
                                stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=work)


def _progress(campaign: Path) -> int:
    """How far a campaign got: the number of events in its ledger (0 before its creation is complete)."""
    from screener.campaign.ledger import Ledger

    if not (campaign / "ledger.sqlite").exists():
        return 0
    try:
        with Ledger.in_dir(campaign, read_only=True) as ledger:
            return len(ledger.events())
    except Exception:  # noqa: BLE001 - being written at this instant: ask again
        return -1


def _train_model(work: Path) -> Path:
    model = work / "model"
    if not (model / "MODEL_CARD.md").exists():
        from screener.cgat.api import train_from_files

        train_from_files([DATA / "mp20_train_24.csv"], target="formation_energy_per_atom", out_dir=model,
                         preset="small", epochs=2, n_members=2, seed=0)
    return model


def outcome(campaign: Path) -> dict[str, Any]:
    """What a finished campaign bought and found, from its ledger and job store (read only)."""
    from screener.campaign.ledger import Ledger
    from screener.campaign.status import campaign_status

    with Ledger.in_dir(campaign, read_only=True) as ledger:
        jobs = ledger.jobs()
        budget = ledger.budget()
        rounds = [(r["round"], r["state"]) for r in ledger.rounds()]
    results = sorted(
        (j.structure_id, j.fidelity, j.state, j.round,
         round(float((j.result or {}).get("energy_per_atom_ev") or math.nan), 6))
        for j in jobs
    )
    status = campaign_status(campaign)
    store_uuids: Counter[str] = Counter()
    for path in (campaign / "jobstore").glob("*.json"):
        try:
            docs = json.loads(path.read_text())
        except ValueError:
            continue
        for doc in docs if isinstance(docs, list) else []:
            if isinstance(doc, dict) and doc.get("uuid") and "output" in doc:
                store_uuids[doc["uuid"]] += 1
    sqlite_store = campaign / "jobstore" / "jobstore.sqlite"  # the local job store of campaigns made since the JSON one
    if sqlite_store.exists():
        import sqlite3

        conn = sqlite3.connect(f"file:{sqlite_store}?mode=ro", uri=True)
        try:
            for (text,) in conn.execute("SELECT doc FROM outputs"):
                doc = json.loads(text)
                if doc.get("uuid") and "output" in doc:
                    store_uuids[doc["uuid"]] += 1
        finally:
            conn.close()
    by_key = Counter((j.structure_id, j.fidelity) for j in jobs)
    finished_uuids = {j.uuid for j in jobs if j.state in ("done", "failed")}
    ledger_uuids = {j.uuid for j in jobs}
    return {
        "results": [list(r) for r in results],
        "stable_scan": sorted(status["stable_found"]),
        "spent": round(budget.spent, 9),
        "total": budget.total,
        "rounds": rounds,
        "duplicates": sum(n - 1 for n in by_key.values() if n > 1) + sum(n - 1 for n in store_uuids.values() if n > 1),
        "lost": (len({u for u in store_uuids if u in ledger_uuids} - finished_uuids)
                 + len({j.uuid for j in jobs if j.state == "done"} - set(store_uuids))
                 + sum(1 for j in jobs if j.state in ("planned", "submitted"))),
        "overspent": int(budget.spent > budget.total + 1e-9),
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("results", "stable_scan", "spent", "rounds"))


def _stage(campaign: Path) -> str:
    """Where a kill landed, read from the folder it left."""
    from screener.campaign.ledger import Ledger

    if not (campaign / "ledger.sqlite").exists():
        creating = list(campaign.parent.glob(f".{campaign.name}.creating-*"))
        return "creation" if creating else "start-up"
    with Ledger.in_dir(campaign, read_only=True) as ledger:
        current = ledger.current_round()
        jobs = ledger.jobs()
    if current is None:
        return "created"
    open_jobs = sum(1 for j in jobs if j.state in ("planned", "submitted"))
    return f"round {current['round']} {current['state']}" + (f" ({open_jobs} open jobs)" if open_jobs else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to make (at least).")
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill times.")
    parser.add_argument("--references", default="auto", help="Hull references of the campaign (screener run's).")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kill_resume_cpu.json")
    args = parser.parse_args()

    from screener.world.experiments import write_result

    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    model = _train_model(work)
    options = {"candidates": [str(DATA / "mp20_train_24.csv"), str(DATA / "mp20_val_6.csv")],
               "budget": args.budget, "model": str(model),
               "batch_size": args.batch, "fine_tune_epochs": 1, "seed": 0, "references": args.references}

    # the reference: one uninterrupted run
    reference_dir = work / "reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    t0, started_at = time.perf_counter(), time.time()
    proc = _start(work, {**options, "campaign_dir": str(reference_dir)}, work / "reference.log")
    out, err = proc.communicate()
    serial_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed: {err[-2000:]}")
    reference = outcome(reference_dir)
    n_events = _progress(reference_dir)
    from screener.campaign.ledger import Ledger

    with Ledger.in_dir(reference_dir, read_only=True) as ledger:
        times = [e["time"] for e in ledger.events()]
    creation_s = times[0] - started_at  # start-up and creation: the first event is its end
    # the reference's time from its k-th event to the next one (k = 1..n), what a kill after the k-th falls into
    gaps = [0.0] + [b - a for a, b in zip(times, times[1:])] + [1.0]

    rng = random.Random(args.seed)
    counts = Counter()
    stages: Counter[str] = Counter()
    campaigns: list[dict[str, Any]] = []
    k = 0
    while counts["kills"] < args.kills:
        k += 1
        camp = work / f"killed-{k:02d}"
        log = work / f"killed-{k:02d}.log"
        shutil.rmtree(camp, ignore_errors=True)
        log.unlink(missing_ok=True)
        starts = kills = 0
        while True:
            starts += 1
            output = work / f"killed-{k:02d}-start{starts:02d}.txt"
            done_events = max(0, _progress(camp))
            proc = _start_to_files(work, {**options, "campaign_dir": str(camp)}, log, output)
            t_proc = time.perf_counter()
            counts["resumed"] += int(starts > 1)  # a restart after a kill (one that fails stops the benchmark)
            if counts["kills"] < args.kills and done_events < n_events:
                # where to kill: during start-up and creation (the first start of the first two campaigns, then
                # 30 % of first starts), during a restart's start-up (10 %), or at a random point of the work still
                # to do: once the campaign has logged a random number of the reference's ledger events, a random
                # part of the time the reference spent before its next event
                u = rng.random()
                if starts == 1 and (k <= 2 or u < 0.3):
                    target, extra = 0, rng.uniform(0.5, 1.0) * creation_s
                elif starts > 1 and u < 0.1:
                    target, extra = 0, rng.uniform(0.5, 5.0)
                else:
                    # (the last events come within milliseconds of each other, at the end of the run: not a target)
                    target = rng.randrange(done_events + 1, max(n_events - 2, done_events + 2))
                    extra = rng.uniform(0.0, gaps[min(target, len(gaps) - 1)])
                while proc.poll() is None and target and _progress(camp) < target:
                    time.sleep(0.1)
                deadline = (time.perf_counter() if target else t_proc) + extra
                while proc.poll() is None and time.perf_counter() < deadline:
                    time.sleep(0.05)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    counts["kills"] += 1
                    stages[_stage(camp)] += 1
                    continue
            proc.wait()
            text = output.read_text()
            if proc.returncode != 0:
                raise SystemExit(f"campaign {camp} exited {proc.returncode} after {kills} kills: {text[-2000:]}")
            if "SUMMARY" in text and json.loads(text.split("SUMMARY ", 1)[1].splitlines()[0])["finished"]:
                break
        result = outcome(camp)
        performed = Counter(line.strip() for line in log.read_text().splitlines() if line.strip())
        campaigns.append({"campaign": camp.name, "starts": starts, "kills": kills, "identical": _same(result, reference),
                          "recomputed": sum(n - 1 for n in performed.values() if n > 1)})
        for key in ("duplicates", "lost", "overspent"):
            counts[key] += result[key]
        counts["identical_final_result"] += int(_same(result, reference))
        counts["recomputed"] += campaigns[-1]["recomputed"]

    out = {
        "benchmark": "kill_resume",
        "command": "python bench/kill_resume.py " + " ".join(sys.argv[1:]),
        "hardware": f"{cpu_model()} ({os.cpu_count()} logical CPUs)",
        "kills": counts["kills"], "resumed": counts["resumed"], "campaigns": len(campaigns),
        "identical_final_result": counts["identical_final_result"], "duplicates": counts["duplicates"],
        "lost": counts["lost"], "overspent": counts["overspent"], "recomputed": counts["recomputed"],
        "kill_stages": dict(sorted(stages.items())), "per_campaign": campaigns,
        "reference": {"wall_s": round(serial_s, 1), "creation_s": round(creation_s, 1), "ledger_events": n_events,
                      "calculations": len(reference["results"]),
                      "rounds": len(reference["rounds"]), "stable_scan": reference["stable_scan"],
                      "spent": reference["spent"], "total": reference["total"]},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    write_result(out, args.out)


if __name__ == "__main__":
    main()
