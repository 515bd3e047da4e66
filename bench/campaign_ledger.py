"""Throughput of the campaign ledger (SQLite, WAL, synchronous=FULL): what the loop's book-keeping costs per round.

Measures, in a temporary campaign folder: writing one round's predictions for N candidates x 2 fidelities; reserving
(write-ahead, one transaction per round plan) and finishing M jobs (one transaction each, as the loop does); and the
budget query with M jobs in the table. Prints one JSON object on its last line.

    .venv/bin/python bench/campaign_ledger.py --candidates 20000 --jobs 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from screener.campaign.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.in_dir(Path(tmp) / "camp", create=True)
        ledger.set_meta("budget_total", 1e12)
        ledger.start_round(1)
        rows = [
            {"structure_id": f"c{i}", "fidelity": f, "e_form_mean_ev_per_atom": -0.1, "e_form_std_ev_per_atom": 0.05,
             "hull_e_form_ev_per_atom": -0.2, "e_hull_mean_ev_per_atom": 0.1, "e_hull_std_ev_per_atom": 0.05,
             "p_stable": 0.02, "hull_fidelity": f}
            for i in range(args.candidates) for f in ("pbe", "scan")
        ]
        t0 = time.perf_counter()
        ledger.record_predictions(1, rows)
        t_pred = time.perf_counter() - t0

        t_plan = t_finish = 0.0
        n = 0
        for start in range(0, args.jobs, args.batch):
            jobs = [{"uuid": f"u{j}", "structure_id": f"c{j}", "fidelity": "pbe", "estimated_cost": 1.0,
                     "flow_json": "{}"} for j in range(start, min(start + args.batch, args.jobs))]
            t0 = time.perf_counter()
            ledger.commit_plan(1, decisions=jobs, numbers={}, jobs=jobs)
            t_plan += time.perf_counter() - t0
            t0 = time.perf_counter()
            for job in jobs:
                ledger.finish_job(job["uuid"], success=True, result_json='{"success": true}', actual_cost=1.0,
                                  actual_cpu_hours=4.0)
            t_finish += time.perf_counter() - t0
            n += len(jobs)
        t0 = time.perf_counter()
        for _ in range(100):
            ledger.budget()
        t_budget = (time.perf_counter() - t0) / 100
        ledger.close()

    result = {
        "benchmark": "campaign_ledger",
        "command": f"python bench/campaign_ledger.py --candidates {args.candidates} --jobs {args.jobs} "
                   f"--batch {args.batch}",
        "hardware": f"{_cpu_model()} (2-core CPU)",
        "prediction_rows_per_s": round(2 * args.candidates / t_pred, 1),
        "round_plans_per_s": round(n / args.batch / t_plan, 1),
        "job_results_per_s": round(n / t_finish, 1),
        "budget_query_ms_at_n_jobs": round(1e3 * t_budget, 3),
        "n_jobs": n,
        "n_prediction_rows": 2 * args.candidates,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
