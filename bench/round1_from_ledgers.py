"""How well does round 1's P(stable) say which candidates are stable? Read from campaign ledgers of a labelled world.

Round 1 ranks with the initial model before any purchase has calibrated it. For each campaign folder this groups the
round's recorded SCAN predictions (``predictions`` of round 1: calibrated E_hull mean, sigma and P(stable) as the
round ranked with them) by predicted E_hull and counts how many of each group are truly stable on the world's own
SCAN hull.

Example
-------
    .venv/bin/python bench/round1_from_ledgers.py --world /tmp/worlds/NaTiVCrCuO_2500 \\
        /tmp/hbench3/campaign_runs_NaTiVCrCuO_2500/seed0/ev-nojoint-nolv_flat_b300 \\
        --output bench/results/round1_from_ledgers_NaTiVCrCuO.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import open_ledger  # noqa: E402
from _output import emit  # noqa: E402

BINS = ((-9.0, -0.5), (-0.5, -0.25), (-0.25, -0.1), (-0.1, 0.0), (0.0, 0.1), (0.1, 0.25), (0.25, 99.0))


def round_one(campaign: Path, stable_true: dict[str, bool], rnd: int = 1) -> dict:
    """Round ``rnd``'s SCAN predictions of one campaign, grouped by predicted E_hull (eV/atom)."""
    db = open_ledger(campaign)
    rows = [(m, s, p, stable_true[sid]) for sid, m, s, p in db.execute(
        "SELECT structure_id, e_hull_mean_ev_per_atom, e_hull_std_ev_per_atom, p_stable FROM predictions "
        "WHERE round = ? AND fidelity = 'scan'", (rnd,)) if sid in stable_true and m is not None]
    db.close()
    a = np.array(rows, dtype=float).reshape(-1, 4)
    groups = []
    for lo, hi in BINS:
        k = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if k.any():
            groups.append({"predicted_e_hull": [lo, hi], "n": int(k.sum()), "mean_p": round(float(a[k, 2].mean()), 3),
                           "mean_sigma": round(float(a[k, 1].mean()), 3),
                           "truly_stable_share": round(float(a[k, 3].mean()), 3)})
    return {"campaign": str(campaign), "n": int(len(a)), "truly_stable": int(a[:, 3].sum()), "groups": groups}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment, load_world_data

    data = load_world_data(args.world, n_jobs=1)
    stable_true = {s: bool(v <= 1e-6) for s, v in zip(data.structure_ids, data.labels[("scan", "e_above_hull")])}
    out = {
        "benchmark": "round1_from_ledgers",
        "command": "python bench/round1_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "round": args.round,
        "campaigns": [round_one(c, stable_true, args.round) for c in args.campaigns
                      if (c / "ledger.sqlite").is_file()],
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
