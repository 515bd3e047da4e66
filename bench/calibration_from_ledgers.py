"""Calibration of campaigns' predictions, read from their ledgers: share of prospective errors within 1 and 2 sigma.

For every campaign folder given (or found under ``--root``), each finished round's ``info`` holds the shares of that
round's new prospective errors (predictions recorded before the purchase, against the results) within 1 and 2 of the
raw ensemble sigma and of the calibrated sigma the round ranked with (``within_1_sigma_raw_scan``,
``within_1_sigma_calibrated_scan``, ...) and how many errors there were (``n_scan_measured``). Pooled over rounds and
campaigns, weighted by those counts. Round 1 ranks with the initial model's scale only (no campaign errors yet).

Example
-------
    .venv/bin/python bench/calibration_from_ledgers.py --root /tmp/h12/bench --output bench/results/x.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def pooled(campaigns: list[Path]) -> dict:
    from screener.campaign.ledger import Ledger

    out: dict = {}
    for fidelity in ("pbe", "scan"):
        sums = {"n": 0, "raw1": 0.0, "raw2": 0.0, "cal1": 0.0, "cal2": 0.0}
        after_round1 = dict(sums)
        for camp in campaigns:
            with Ledger.in_dir(camp, read_only=True) as ledger:
                for row in ledger.rounds():
                    info = row.get("info") or {}
                    n = info.get(f"n_{fidelity}_measured") or 0
                    if not n or info.get(f"within_1_sigma_raw_{fidelity}") is None:
                        continue
                    for acc in (sums, after_round1) if row["round"] > 1 else (sums,):
                        acc["n"] += n
                        acc["raw1"] += n * info[f"within_1_sigma_raw_{fidelity}"]
                        acc["raw2"] += n * info[f"within_2_sigma_raw_{fidelity}"]
                        acc["cal1"] += n * info[f"within_1_sigma_calibrated_{fidelity}"]
                        acc["cal2"] += n * info[f"within_2_sigma_calibrated_{fidelity}"]

        def shares(acc: dict) -> dict:
            n = acc["n"]
            return {"n_errors": n, **({k: round(acc[k] / n, 3) for k in ("raw1", "raw2", "cal1", "cal2")} if n else {})}

        out[fidelity] = {"all_rounds": shares(sums), "rounds_2_on": shares(after_round1)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="*", type=Path)
    p.add_argument("--root", type=Path, help="Find every ledger.sqlite below this folder.")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment

    campaigns = list(args.campaigns)
    if args.root:
        campaigns += sorted(d.parent for d in args.root.rglob("ledger.sqlite"))
    by_policy: dict[str, list[Path]] = {}
    for c in campaigns:
        by_policy.setdefault(c.name.split("_")[0], []).append(c)
    out = {
        "benchmark": "calibration_from_ledgers",
        "command": "python bench/calibration_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "keys": "raw1/raw2: share of |error| within 1/2 raw ensemble std; cal1/cal2: within 1/2 calibrated std "
                "(the sigma the round ranked with); target for cal1: 0.60-0.75",
        "campaigns": [str(c) for c in campaigns],
        "all": pooled(campaigns),
        "by_policy": {k: pooled(v) for k, v in sorted(by_policy.items())},
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
