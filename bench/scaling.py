"""Scaling of the SCAN model's test error with the SCAN and PBE training-set sizes on a simulated world.

Learning curves (Hoffmann et al., Digital Discovery 2023, Figs. 4-5) on one fixed SCAN test set:

- test MAE vs the number of SCAN training points N_s, without transfer and with full transfer from a PBE ensemble
  pre-trained on every non-test structure (N_p fixed);
- test MAE vs the number of PBE pre-training points N_p at a fixed N_s (full transfer).

Training subsets are nested (the 80-point set contains the 40-point set). Each curve and the joint set of
full-transfer points are fitted with ``screener.policies.fit_scaling_law`` (``log MAE = c + a log N_s + b log N_p``,
data only: slopes, intercept and standard errors). ``--write-priors`` writes the joint fit as the ``priors:`` block
of a policy YAML (default ``policies/scaling-law.yaml``), keeping the rest of the file and checking it loads.

Examples
--------
    .venv/bin/python bench/scaling.py --quick                    # CPU, a few minutes, small preset
    python bench/scaling.py --size 20000 --preset paper --members 5 --device cuda --write-priors   # GPU

Prints progress to stderr and ONE JSON object on the last line of stdout; writes it to --output and the plot to
--plot.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

QUICK = dict(size=800, preset="small", members=1, epochs=40, scan_sizes="40,80,160,320", pbe_sizes="80,160,320,640",
             fixed_scan=160)
FULL = dict(size=20000, preset="paper", members=5, epochs=390, scan_sizes="250,500,1000,2000,4000,8000",
            pbe_sizes="1000,2000,4000,8000,16000", fixed_scan=1000)
ROOT = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from screener.world.experiments import add_experiment_arguments, apply_mode_defaults

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p)
    p.add_argument("--epochs", type=int, help="Epochs of every training run.")
    p.add_argument("--scan-sizes", help="Comma-separated N_s values.")
    p.add_argument("--pbe-sizes", help="Comma-separated N_p values.")
    p.add_argument("--fixed-scan", type=int, help="N_s of the N_p curve.")
    p.add_argument("--property", default="e_form", choices=["e_form", "e_above_hull"], help="Label to learn.")
    p.add_argument("--plot", type=Path, help="PNG (default bench/results/scaling[_quick|_custom].png).")
    p.add_argument("--refit", type=Path, help="Re-fit and re-plot the curves of an earlier result JSON (no training).")
    p.add_argument("--write-priors", nargs="?", const=str(ROOT.parent / "policies" / "scaling-law.yaml"),
                   help="Write the joint fit as the priors block of this policy YAML (default policies/scaling-law.yaml).")
    args = p.parse_args(argv)
    apply_mode_defaults(args, QUICK, FULL)
    stem = f"scaling{args.result_suffix}"
    args.output = args.output or ROOT / "results" / f"{stem}.json"
    args.plot = args.plot or ROOT / "results" / f"{stem}.png"
    return args


def fit_summary(ns, npbe, mae) -> dict:
    """Data-only scaling-law fit with slopes, intercept and standard errors."""
    from screener.policies import fit_scaling_law

    fit = fit_scaling_law(ns, npbe, mae)
    return {
        "a": fit.a_data, "a_std": fit.a_data_std, "b": fit.b_data, "b_std": fit.b_data_std,
        "c": fit.c, "c_std": fit.c_std, "residual_std_log": fit.residual_std_log, "n_points": fit.n_points,
        "source": fit.source,
        # slopes the intercept belongs to (a slope the data cannot fix, e.g. b at one N_p, comes from the default prior)
        "a_used": fit.a, "b_used": fit.b,
    }


def write_priors(path: Path, fit: dict, note: str) -> dict:
    """Replace the ``priors:`` block of a policy YAML (other lines untouched) and check that the policy loads."""
    from screener.policies import ScalingLawPrior, load_policy

    prior = ScalingLawPrior(
        a=round(fit["a"], 4), a_std=round(max(fit["a_std"], 0.02), 4), b=round(fit["b"], 4),
        b_std=round(max(fit["b_std"], 0.02), 4), c=round(fit["c"], 4), source=note,
    )
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("priors:")), None)
    block = ["priors:                           # measured by bench/scaling.py; see bench/results/\n"]
    block += [f"  {k}: {json.dumps(v)}\n" for k, v in prior.model_dump().items()]
    if start is None:
        lines += block
    else:
        end = start + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        lines[start:end] = block
    path.write_text("".join(lines), encoding="utf-8")
    loaded = load_policy(path).priors
    if loaded != prior:
        raise RuntimeError(f"{path}: priors did not round-trip ({loaded} != {prior})")
    return prior.model_dump()


def plot(path: Path, curves: dict, fits: dict, n_pbe_max: int, fixed_scan: int, prop: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("none", "o-"), ("full_vs_scan", "s-")):
        pts = curves[name]
        x = np.array([p["n_scan"] for p in pts]); y = np.array([p["test_mae_ev_per_atom"] for p in pts])
        f = fits[name]
        ax1.loglog(x, y, style, label=f"{'no transfer' if name == 'none' else f'full transfer (N_p={n_pbe_max})'}: "
                                       f"a = {f['a']:.2f} ± {f['a_std']:.2f}")
        npb = 1 if name == "none" else n_pbe_max
        ax1.loglog(x, np.exp(f["c"] + f["a_used"] * np.log(x) + f["b_used"] * np.log(npb)), "k:", lw=0.8)
    ax1.set_xlabel("N_s (SCAN training points)"); ax1.set_ylabel(f"SCAN {prop} test MAE (eV/atom)"); ax1.legend(fontsize=8)
    pts = curves["full_vs_pbe"]
    x = np.array([p["n_pbe"] for p in pts]); y = np.array([p["test_mae_ev_per_atom"] for p in pts])
    f = fits["full_vs_pbe"]
    ax2.loglog(x, y, "s-", color="C1", label=f"full transfer (N_s={fixed_scan}): b = {f['b']:.2f} ± {f['b_std']:.2f}")
    ax2.loglog(x, np.exp(f["c"] + f["a_used"] * np.log(fixed_scan) + f["b_used"] * np.log(x)), "k:", lw=0.8)
    ax2.set_xlabel("N_p (PBE pre-training points)"); ax2.legend(fontsize=8)
    for ax in (ax1, ax2):  # minor log ticks (3x10^2, 4x10^2, ...) overlap on short axes
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(textwrap.fill(label, 140), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit_all(curves: dict) -> dict:
    """Fits of the three curves and of the joint set of full-transfer points."""

    def arrays(points):
        return ([p["n_scan"] for p in points], [max(p["n_pbe"], 1) for p in points],
                [p["test_mae_ev_per_atom"] for p in points])

    fits = {name: fit_summary(*arrays(points)) for name, points in curves.items()}
    joint = {(p["n_scan"], p["n_pbe"]): p for p in curves["full_vs_scan"] + curves["full_vs_pbe"]}
    fits["joint_full_transfer"] = fit_summary(*arrays(list(joint.values())))
    return fits


def refit(args: argparse.Namespace) -> dict:
    """``--refit``: fits and plot again from the curves stored in a result JSON (updated in place)."""
    out = json.loads(args.refit.read_text())
    out["fits"] = fit_all(out["curves"])
    s = out["settings"]
    n_pbe_max = max(p["n_pbe"] for p in out["curves"]["full_vs_scan"])
    label = f"screener world {Path(out['world']['dir']).name}, SCAN {s['property']}, {s['preset']} preset, " \
            f"{s['members']} member(s), {out['mode']}"
    plot(ROOT.parent / out["plot"], out["curves"], out["fits"], n_pbe_max, s["fixed_scan"], s["property"], label)
    if args.write_priors:
        note = f"bench/scaling.py {out['mode']}: joint fit of full-transfer points ({out['command']})"
        out["priors_written"] = {"path": args.write_priors,
                                 "prior": write_priors(Path(args.write_priors), out["fits"]["joint_full_transfer"], note)}
    from screener.world.experiments import write_result

    return write_result(out, args.refit)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from screener.world.experiments import configure_run

    configure_run(args.threads)
    from screener.world.experiments import (
        bench_environment, ensure_world, load_world_data, nested_subsets, split_indices, train_and_test, write_result,
    )

    if args.refit is not None:
        return refit(args)
    t_start = time.perf_counter()
    world_dir, world_build_s = ensure_world(args.world, args.work_dir, args.size, args.seed, args.n_jobs)
    data = load_world_data(world_dir, n_jobs=args.n_jobs)
    n = len(data)
    (test_idx,) = split_indices(n, [args.test_fraction], seed=args.seed)
    pool = np.setdiff1d(np.arange(n), test_idx)
    scan_sizes = [int(s) for s in args.scan_sizes.split(",") if int(s) <= len(pool)]
    pbe_sizes = [int(s) for s in args.pbe_sizes.split(",") if int(s) <= len(pool)]
    if len(pool) not in pbe_sizes and len(pool) > max(pbe_sizes):
        pbe_sizes.append(len(pool))  # the N_s curve's PBE model uses every non-test structure
    scan_sets = nested_subsets(pool, sorted(set(scan_sizes + [args.fixed_scan])), seed=args.seed + 1)
    pbe_sets = nested_subsets(pool, pbe_sizes, seed=args.seed + 2)
    n_pbe_max = max(pbe_sets)
    key = args.property
    run_dir = args.work_dir / f"scaling_{world_dir.name}_{args.preset}_m{args.members}_{key}"
    common = dict(preset=args.preset, n_members=args.members, seed=args.seed, device=args.device, epochs=args.epochs)
    log(f"world {world_dir}: {n} structures, test {len(test_idx)}; N_s {scan_sizes}, N_p {sorted(pbe_sets)}")

    pbe_models = {}
    for n_p in sorted(pbe_sets):
        log(f"PBE pre-training N_p={n_p}")
        r = train_and_test(data, "pbe", key, pbe_sets[n_p], test_idx, directory=run_dir / f"pbe_{n_p}", **common)
        pbe_models[n_p] = {"dir": run_dir / f"pbe_{n_p}", **r}
    curves: dict[str, list] = {"none": [], "full_vs_scan": [], "full_vs_pbe": []}
    for n_s in scan_sizes:
        log(f"no transfer N_s={n_s}")
        r = train_and_test(data, "scan", key, scan_sets[n_s], test_idx, directory=run_dir / f"none_{n_s}", **common)
        curves["none"].append({"n_scan": n_s, "n_pbe": 0, **r})
    full_cache: dict[tuple[int, int], dict] = {}

    def full(n_s: int, n_p: int) -> dict:
        if (n_s, n_p) not in full_cache:
            log(f"full transfer N_s={n_s}, N_p={n_p}")
            full_cache[(n_s, n_p)] = train_and_test(
                data, "scan", key, scan_sets[n_s], test_idx, directory=run_dir / f"full_{n_s}_{n_p}",
                init=pbe_models[n_p]["dir"], transfer="full", **common)
        return full_cache[(n_s, n_p)]

    for n_s in scan_sizes:
        curves["full_vs_scan"].append({"n_scan": n_s, "n_pbe": n_pbe_max, **full(n_s, n_pbe_max)})
    for n_p in sorted(pbe_sets):
        curves["full_vs_pbe"].append({"n_scan": args.fixed_scan, "n_pbe": n_p, **full(args.fixed_scan, n_p)})

    fits = fit_all(curves)
    mode = args.mode
    label = f"screener world {world_dir.name}, SCAN {key}, {args.preset} preset, {args.members} member(s), {mode}"
    plot(args.plot, curves, fits, n_pbe_max, args.fixed_scan, key, label)
    out = {
        "benchmark": "scaling",
        "mode": mode,
        "command": "python bench/scaling.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment(args.device),
        "world": {"dir": str(world_dir), "n_structures": n, "seed": args.seed, "build_s": world_build_s},
        "settings": {"torch_threads": args.threads, "preset": args.preset, "members": args.members, "epochs": args.epochs, "property": key,
                     "n_test": int(len(test_idx)), "scan_sizes": scan_sizes, "pbe_sizes": sorted(pbe_sets),
                     "fixed_scan": args.fixed_scan},
        "curves": {name: [{k: v for k, v in p.items() if k != "directory"} for p in pts] for name, pts in curves.items()},
        "fits": fits,
        "paper": "Hoffmann et al. 2023: straight lines in log-log; default prior a = -0.3 ± 0.1, b = -0.24 ± 0.1",
        "plot": str(args.plot.relative_to(ROOT.parent) if args.plot.is_relative_to(ROOT.parent) else args.plot),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if args.write_priors:
        note = (f"bench/scaling.py {mode}: joint fit of full-transfer points on world {world_dir.name} "
                f"({key}, {args.preset} preset); {out['date_utc']}")
        out["priors_written"] = {"path": args.write_priors,
                                 "prior": write_priors(Path(args.write_priors), fits["joint_full_transfer"], note)}
    return write_result(out, args.output)


if __name__ == "__main__":
    main()
