"""Does the competitor survival say which purchases stay stable? Read from `expected-value` ledgers of a world.

Every SCAN candidate an `expected-value` campaign bought on the model's prediction records, in its decision's
numbers, ``competitor_survival`` ``S`` (P(still SCAN-stable once the pool's other candidates are computed | stable on
today's hull), :mod:`screener.policies.competitors`) and ``p_scan_stable`` (the P it was ranked by: outcome-calibrated
P times ``S``). Grouped by ``S``, this benchmark sets the mean P before ``S`` (``p_scan_stable / S``), the mean P
after it, and the share of those purchases that are truly stable on the world's own SCAN hull (every structure of
the world computed: exactly what ``S`` predicts) side by side. If ``S`` carries information, the stable share
falls with ``S`` at equal P before it.

Example
-------
    .venv/bin/python bench/survival_from_ledgers.py --world /tmp/worlds/LiMnFeCoNiO_2500 \\
        /tmp/hbench/campaign_runs_LiMnFeCoNiO_2500/seed*/expected-value_* \\
        --output bench/results/survival_from_ledgers_LiMnFeCoNiO.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import accepted_scan_decisions, open_ledger  # noqa: E402
from _output import emit  # noqa: E402

BINS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def purchases(campaign: Path, stable_true: dict[str, bool]) -> list[tuple[float, float, bool]]:
    """``(S, P after S, truly stable)`` of each SCAN candidate bought on the model's prediction."""
    db = open_ledger(campaign)
    done = {s for (s,) in db.execute("SELECT structure_id FROM jobs WHERE fidelity = 'scan' AND state = 'done'")}
    out = []
    for sid, n in accepted_scan_decisions(db):
        s, p = n.get("competitor_survival"), n.get("p_scan_stable")
        if (n.get("kind") != "candidate" or n.get("p_scan_source") != "model" or sid not in done
                or not isinstance(s, (int, float)) or not isinstance(p, (int, float)) or s <= 0
                or sid not in stable_true):
            continue
        out.append((float(s), float(p), stable_true[sid]))
    db.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment, load_world_data

    data = load_world_data(args.world, n_jobs=1)
    stable_true = {s: bool(v <= 1e-6) for s, v in zip(data.structure_ids, data.labels[("scan", "e_above_hull")])}
    campaigns = [c for c in args.campaigns if (c / "ledger.sqlite").is_file()]
    rows = np.array([r for c in campaigns for r in purchases(c, stable_true)], dtype=float).reshape(-1, 3)
    table = []
    for lo, hi in BINS:
        k = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if k.any():
            table.append({"survival": [lo, min(hi, 1.0)], "n": int(k.sum()),
                          "mean_p_before_survival": round(float(np.mean(rows[k, 1] / rows[k, 0])), 3),
                          "mean_p_after_survival": round(float(np.mean(rows[k, 1])), 3),
                          "truly_stable_share": round(float(np.mean(rows[k, 2])), 3)})
    out = {
        "benchmark": "survival_from_ledgers",
        "command": "python bench/survival_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "campaigns": [str(c) for c in campaigns],
        "n_purchases": int(len(rows)),
        "by_survival": table,
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
