"""Table 1 analogue (Hoffmann et al., Digital Discovery 2023): PBE -> SCAN transfer learning on a simulated world.

For SCAN-level E_hull and E_form on one fixed SCAN test set, compare

- ``none``: a CGAT ensemble trained on the SCAN training set only;
- ``head``: a PBE-pretrained ensemble whose output network alone is retrained on the SCAN set;
- ``full``: a PBE-pretrained ensemble fine-tuned entirely on the SCAN set;

and report test MAEs and their change relative to ``none`` (paper: full 27-35 % better, head 8-16 %). Two reference
numbers come with them: the PBE ensemble's own prediction of the SCAN label (no SCAN data at all) and the MAE of the
PBE *label* as a guess of the SCAN label (how far apart the two functionals are in this world).

Splits (seeded): ``test`` = a fixed share of the structures (SCAN labels); ``scan train`` = a share of the rest;
``pbe train`` = every non-test structure (the SCAN structures are a subset of the PBE ones, as in the paper).

Examples
--------
    .venv/bin/python bench/transfer.py --quick                       # CPU, a few minutes, small preset
    python bench/transfer.py --size 20000 --preset paper --members 5 --device cuda   # GPU run (bench/README.md)

Prints progress to stderr and ONE JSON object on the last line of stdout; writes it to --output too.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

PAPER = {
    "e_hull": {"full_rel_change_pct": [27, 35], "head_rel_change_pct": [8, 16]},
    "e_form": {"full_rel_change_pct": [27, 35], "head_rel_change_pct": [8, 16]},
    "source": "Hoffmann et al., Digital Discovery 2023, Table 1 (range over the SCAN properties)",
}
QUICK = dict(size=800, preset="small", members=1, epochs_pbe=40, epochs_scan=40, epochs_transfer=40)
FULL = dict(size=20000, preset="paper", members=5, epochs_pbe=390, epochs_scan=390, epochs_transfer=210)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from screener.world.experiments import add_experiment_arguments, apply_mode_defaults

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p)
    p.add_argument("--epochs-pbe", type=int, help="Epochs of PBE pre-training.")
    p.add_argument("--epochs-scan", type=int, help="Epochs of SCAN training from scratch.")
    p.add_argument("--epochs-transfer", type=int, help="Epochs of SCAN fine-tuning (head and full).")
    p.add_argument("--scan-fraction", type=float, default=0.3, help="Share of structures with SCAN training labels.")
    p.add_argument("--properties", default="e_above_hull,e_form", help="Labels to learn (entry.data keys).")
    args = p.parse_args(argv)
    apply_mode_defaults(args, QUICK, FULL)
    if args.output is None:
        args.output = Path(__file__).parent / "results" / f"transfer{args.result_suffix}.json"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from screener.world.experiments import configure_run

    configure_run(args.threads)
    from screener.cgat import CGATEnsemble
    from screener.world.experiments import (
        PROPERTIES, bench_environment, ensure_world, load_world_data, split_indices, train_and_test, write_result,
    )

    t_start = time.perf_counter()
    world_dir, world_build_s = ensure_world(args.world, args.work_dir, args.size, args.seed, args.n_jobs)
    data = load_world_data(world_dir, n_jobs=args.n_jobs)
    n = len(data)
    test_idx, scan_idx = split_indices(n, [args.test_fraction, args.scan_fraction], seed=args.seed)
    pbe_idx = np.setdiff1d(np.arange(n), test_idx)
    log(f"world {world_dir}: {n} structures; test {len(test_idx)}, SCAN train {len(scan_idx)}, PBE train {len(pbe_idx)}")
    run_dir = args.work_dir / f"transfer_{world_dir.name}_{args.preset}_m{args.members}"
    common = dict(preset=args.preset, n_members=args.members, seed=args.seed, device=args.device)
    results: dict[str, dict] = {}
    for key in [k.strip() for k in args.properties.split(",") if k.strip()]:
        name = PROPERTIES[key]
        log(f"[{name}] PBE pre-training on {len(pbe_idx)} structures")
        pbe = train_and_test(data, "pbe", key, pbe_idx, test_idx, directory=run_dir / f"{name}_pbe",
                             epochs=args.epochs_pbe, **common)
        y_scan = data.labels[("scan", key)]
        pbe_model = CGATEnsemble.load(run_dir / f"{name}_pbe")
        zero_shot = pbe_model.predict([data.graphs[i] for i in test_idx]).mean
        log(f"[{name}] SCAN from scratch on {len(scan_idx)}")
        none = train_and_test(data, "scan", key, scan_idx, test_idx, directory=run_dir / f"{name}_none",
                              epochs=args.epochs_scan, **common)
        runs = {"none": none}
        for mode in ("head", "full"):
            log(f"[{name}] {mode} transfer on {len(scan_idx)}")
            runs[mode] = train_and_test(data, "scan", key, scan_idx, test_idx, directory=run_dir / f"{name}_{mode}",
                                        epochs=args.epochs_transfer, init=run_dir / f"{name}_pbe", transfer=mode,
                                        **common)
        mae = {m: r["test_mae_ev_per_atom"] for m, r in runs.items()}
        results[name] = {
            "test_mae_ev_per_atom": mae,
            "rel_change_vs_none_pct": {m: round(100 * (mae["none"] - mae[m]) / mae["none"], 2) for m in ("head", "full")},
            "pbe_model_on_scan_test_mae_ev_per_atom": float(np.mean(np.abs(zero_shot - y_scan[test_idx]))),
            "pbe_label_as_scan_guess_mae_ev_per_atom": float(
                np.mean(np.abs(data.labels[("pbe", key)][test_idx] - y_scan[test_idx]))
            ),
            "pbe_model_on_pbe_test_mae_ev_per_atom": pbe["test_mae_ev_per_atom"],
            "scan_test_label_std_ev_per_atom": float(np.std(y_scan[test_idx])),
            "member_test_mae": {m: r["member_test_mae"] for m, r in runs.items()},
            "train_wall_s": {"pbe": pbe["wall_s"], **{m: r["wall_s"] for m, r in runs.items()}},
        }
        log(f"[{name}] test MAE none {mae['none']:.4f}, head {mae['head']:.4f}, full {mae['full']:.4f} eV/atom")

    out = {
        "benchmark": "transfer",
        "mode": args.mode,
        "command": "python bench/transfer.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment(args.device),
        "world": {"dir": str(world_dir), "n_structures": n, "seed": args.seed,
                  "build_s": world_build_s, "statistics": data.manifest.statistics["pbe_vs_scan"]},
        "settings": {"torch_threads": args.threads, "preset": args.preset, "members": args.members, "epochs_pbe": args.epochs_pbe,
                     "epochs_scan": args.epochs_scan, "epochs_transfer": args.epochs_transfer,
                     "n_test": int(len(test_idx)), "n_scan_train": int(len(scan_idx)), "n_pbe_train": int(len(pbe_idx)),
                     "split_seed": args.seed},
        "results": results,
        "paper": PAPER,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    return write_result(out, args.output)


if __name__ == "__main__":
    main()
