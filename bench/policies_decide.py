"""Time of one policy round (``screener.policies.decide``) against the number of candidates.

Builds a synthetic state (random predicted E_hull, costs, chemical systems, a 9-point learning curve and competing
phases), validates it into a ``PolicyState`` once, then times ``decide`` for each preset (best of ``--repeat``).

Examples
--------
    .venv/bin/python bench/policies_decide.py
    .venv/bin/python bench/policies_decide.py --sizes 1000 100000 --repeat 3

Prints ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402


def _state(n: int, seed: int = 0):
    from screener.policies import PolicyState

    rng = np.random.default_rng(seed)
    elements = ["Li", "Na", "K", "Mg", "Ca", "Fe", "Mn", "Co", "Ni", "Cu", "Zn", "Al", "Si", "Ti", "V", "Cr"]
    systems = ["-".join(sorted({"O", *rng.choice(elements, size=rng.integers(1, 3), replace=False)}))
               for _ in range(200)]
    chemsys = [systems[i] for i in rng.integers(0, len(systems), n)]
    curve = [dict(n_scan=ns, n_pbe=npb, mae_ev_per_atom=math.exp(0.5 - 0.3 * math.log(ns) - 0.24 * math.log(npb)))
             for ns in (250, 500, 1000) for npb in (1000, 2000, 4000)]
    phases = [dict(job_id=f"ref-{s}", chemsys=s, cost_cpu_hours=3.0) for s in systems[:50]]
    return PolicyState(
        candidate_ids=[f"c{i}" for i in range(n)],
        chemsys=chemsys,
        scan_mean_ev_per_atom=rng.normal(0.08, 0.1, n).tolist(),
        scan_std_ev_per_atom=rng.uniform(0.01, 0.06, n).tolist(),
        cost_scan_cpu_hours=rng.uniform(3.0, 8.0, n).tolist(),
        cost_pbe_cpu_hours=rng.uniform(0.6, 1.6, n).tolist(),
        n_scan=1000,
        n_pbe=4000,
        learning_curve=curve,
        budget_cpu_hours=1e4,
        required_phases=phases,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args(argv)

    from screener.policies import BUILTIN_POLICIES, decide

    results = []
    for n in args.sizes:
        t0 = time.perf_counter()
        state = _state(n)
        t_state = time.perf_counter() - t0
        row = {"n_candidates": n, "state_validation_s": round(t_state, 4)}
        for name, pol in BUILTIN_POLICIES.items():
            pol = pol.model_copy(update={"batch_size": args.batch_size})
            best = math.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                plan = decide(pol, state)
                best = min(best, time.perf_counter() - t0)
            row[f"{name}_s"] = round(best, 4)
            row[f"{name}_n_planned"] = len(plan.items)
        print(row, file=sys.stderr)
        results.append(row)
    print(json.dumps({
        "benchmark": "policies_decide",
        "command": "python bench/policies_decide.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": {"cpu": _cpu_model(), "cores_used": 1},
        "repeat": args.repeat,
        "batch_size": args.batch_size,
        "results": results,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
