"""Where one retrospective campaign spends its time: exclusive CPU time per stage, on one core.

Runs ONE campaign of ``bench/campaign.py`` (same world, pool split, initial model, references and options) with
``torch.set_num_threads(1)`` and times it per stage. Each stage is a set of functions; time is charged to the
innermost stage running (a stack of timers around those functions), so the stages sum to the campaign's time. Times
are the process's CPU seconds (``time.process_time``; one torch thread, so one core's work): on a machine shared with
other jobs the wall time also counts their turns on the core, and is recorded apart (``campaign_wall_s``):

- ``graphs``: graph construction / graph-cache reads (``EnsembleModel._graphs_for``);
- ``prediction``: ensemble inference (``EnsembleModel.predict_formation_energy`` minus graphs);
- ``e_hull``: predicted E_hull look-ups on the hulls (``ranking.predicted_e_hull``);
- ``calibration``: the per-round spread refit (``Campaign._spread_calibration``);
- ``policy``: planning (``PolicyPlanner.plan``, competing phases);
- ``jobs``: setting up, running and collecting the replayed calculations (``make_flow``, ``_execute_open_jobs``);
- ``hulls``: hull updates, snapshots and formation energies of results (``_update_hulls``, ``snapshot``,
  ``_targets``);
- ``fine_tune``: each round's fine-tune (``EnsembleModel.fine_tune`` minus graphs);
- ``ledger``: every public ``Ledger`` method (SQLite reads and writes) not inside another stage;
- ``setup``: creating the campaign folder, reading candidates and references, building components;
- ``other``: the rest of the loop.

Also records cProfile's 25 most expensive functions by cumulative time (``--cprofile``; it slows Python-heavy
stages, so stage times are measured without it unless asked).

Example (the figures in ``bench/results/campaign_profile_cpu.json``)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/campaign_profile.py --world /tmp/worlds/LiMnFeCoNiO_2500 \\
        --policy expected-value --seed 0 --budget 300 --cost flat --label after

Prints progress to stderr and ONE JSON object on the last line of stdout; with ``--output`` the record is added to
that file under ``--label`` (other labels kept), so "before" and "after" sit side by side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import campaign as bench_campaign  # noqa: E402  (bench/campaign.py: world, split, model, scoring)


class StageTimer:
    """Exclusive CPU time per stage: time goes to the innermost stage on the stack."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[str] = ["other"]
        self.mark = time.process_time()

    def _charge(self) -> None:
        now = time.process_time()
        self.seconds[self.stack[-1]] += now - self.mark
        self.mark = now

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        """Replace ``owner.name`` (a class or module attribute) by a timed version charged to ``stage``."""
        original = getattr(owner, name, None)
        if original is None or getattr(original, "_stage_timed", False):
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._charge()
            self.stack.append(stage)
            self.calls[stage] += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._charge()
                self.stack.pop()

        timed._stage_timed = True  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def result(self) -> dict[str, Any]:
        self._charge()
        total = sum(self.seconds.values())
        return {stage: {"s": round(s, 2), "share": round(s / total, 3) if total else None, "calls": self.calls[stage]}
                for stage, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


def instrument(timer: StageTimer) -> None:
    """Wrap the campaign's stage functions (whatever of them exists in this version of the code)."""
    from screener.calculators.replay import ReplayCalculator
    from screener.campaign import api, components, hulls, loop, ranking
    from screener.campaign.ensemble_model import EnsembleModel
    from screener.campaign.ledger import Ledger

    for name in dir(Ledger):
        if not name.startswith("_") and callable(getattr(Ledger, name)) and name not in ("in_dir",):
            timer.wrap(Ledger, name, "ledger")
    timer.wrap(api, "_read_candidates", "setup")
    timer.wrap(loop.Campaign, "_create", "setup")
    timer.wrap(components, "build_components", "setup")
    timer.wrap(loop.Campaign, "_load_candidates", "setup")
    timer.wrap(EnsembleModel, "_graphs_for", "graphs")
    timer.wrap(EnsembleModel, "predict_formation_energy", "prediction")
    timer.wrap(EnsembleModel, "_ensemble", "prediction")  # checkpoint loads
    timer.wrap(EnsembleModel, "fine_tune", "fine_tune")
    timer.wrap(loop, "predicted_e_hull", "e_hull")
    timer.wrap(ranking, "predicted_e_hull", "e_hull")
    timer.wrap(loop.Campaign, "_spread_calibration", "calibration")
    timer.wrap(components.PolicyPlanner, "plan", "policy")
    timer.wrap(loop.Campaign, "_competing_items", "policy")
    timer.wrap(ReplayCalculator, "make_flow", "jobs")
    timer.wrap(loop.Campaign, "_execute_open_jobs", "jobs")
    timer.wrap(loop.Campaign, "_update_hulls", "hulls")
    timer.wrap(loop.Campaign, "_targets", "hulls")
    timer.wrap(hulls.CampaignHulls, "snapshot", "hulls")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, help="World folder (screener world build).")
    p.add_argument("--policy", default="expected-value", help="Policy preset or YAML.")
    p.add_argument("--seed", type=int, default=0, help="Campaign seed.")
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--cost", choices=["size", "flat"], default="flat")
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--pool-fraction", type=float, default=0.6, help="Share of the world in the candidate pool.")
    p.add_argument("--preset", default="small")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--pretrain-epochs", type=int, default=60)
    p.add_argument("--model", type=Path, help="Initial PBE ensemble (default: pre-trained on the known set, cached).")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/screener-bench"))
    p.add_argument("--fine-tune", choices=["sized", "legacy"], default="sized",
                   help="sized: the campaign's fine-tune as shipped; legacy: every result every epoch, every round "
                        "(screener.campaign.ensemble_model.SIZED_FINE_TUNE False), to compare decisions.")
    p.add_argument("--cprofile", action="store_true", help="Also record cProfile's top functions.")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="Leave glibc's allocator untuned (the profiles before 2026-12-05 were taken so; `screener "
                        "run` tunes it).")
    p.add_argument("--label", default="run", help="Key of this record in --output (e.g. before, after).")
    p.add_argument("--output", type=Path, help="JSON file to add the record to.")
    p.add_argument("--summarize", nargs="+", metavar="LABEL",
                   help="Run nothing: add to --output a summary of its records BEFORE AFTER [A/B pairs as "
                        "SIZED:LEGACY ...]: CPU and wall per campaign and stage, and the finds of each pair.")
    args = p.parse_args(argv)
    if args.summarize is None and args.world is None:
        p.error("--world is required (unless --summarize)")
    if args.summarize is not None and (args.output is None or len(args.summarize) < 2):
        p.error("--summarize needs --output and at least the labels BEFORE AFTER")
    return args


def summarize(path: Path, before: str, after: str, pairs: list[str]) -> dict[str, Any]:
    """Before/after figures of two records of ``path`` and the finds of SIZED:LEGACY pairs (same code, same seed)."""
    out = json.loads(path.read_text())
    runs = out["runs"]
    b, a = runs[before], runs[after]
    stages = sorted(set(b["stages"]) | set(a["stages"]), key=lambda k: -b["stages"].get(k, {}).get("s", 0.0))
    summary: dict[str, Any] = {
        "before": before, "after": after,
        "campaign_cpu_s": {"before": b.get("campaign_cpu_s"), "after": a.get("campaign_cpu_s")},
        "campaign_wall_s": {"before": b["campaign_wall_s"], "after": a["campaign_wall_s"]},
        "stage_cpu_s": {k: {"before": b["stages"].get(k, {}).get("s"), "after": a["stages"].get(k, {}).get("s")}
                        for k in stages},
        "figures": {"before": b["figures"], "after": a["figures"]},
        "same_decisions": b.get("decisions") == a.get("decisions"),
        "note": "before and after differ by every commit between their git_commit values, not only by the speed "
                "changes; the pairs compare decisions with the sized and the legacy fine-tune on the same code",
    }
    comparisons = []
    for pair in pairs:
        sized, legacy = pair.split(":")
        if sized not in runs or legacy not in runs:
            continue
        rs, rl = runs[sized], runs[legacy]
        same = [x == y for x, y in zip(rs["decisions"], rl["decisions"], strict=False)]
        comparisons.append({
            "sized": sized, "legacy": legacy, "world": rs["world"], "seed": rs["seed"],
            "found": {"sized": rs["figures"]["found"], "legacy": rl["figures"]["found"]},
            "precision": {"sized": rs["figures"]["precision"], "legacy": rl["figures"]["precision"]},
            "selected": {"sized": rs["figures"]["selected"], "legacy": rl["figures"]["selected"]},
            "fine_tune_cpu_s": {"sized": rs["stages"].get("fine_tune", {}).get("s"),
                                "legacy": rl["stages"].get("fine_tune", {}).get("s")},
            "campaign_cpu_s": {"sized": rs.get("campaign_cpu_s"), "legacy": rl.get("campaign_cpu_s")},
            "same_decisions_in_order": sum(same), "n_decisions": [len(rs["decisions"]), len(rl["decisions"])],
        })
    summary["fine_tune_ab"] = comparisons
    out["summary"] = summary
    path.write_text(json.dumps(out, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.summarize is not None:
        summary = summarize(args.output, args.summarize[0], args.summarize[1], args.summarize[2:])
        print(json.dumps(summary))
        return summary
    import torch

    torch.set_num_threads(1)
    malloc_tuning = bench_campaign.tune_allocator(args)
    from screener.world.experiments import bench_environment, load_world_data
    from screener.world.io import read_world

    campaign_args = bench_campaign.parse_args([
        "--world", str(args.world), "--pool-fraction", str(args.pool_fraction), "--preset", args.preset,
        "--members", str(args.members), "--pretrain-epochs", str(args.pretrain_epochs), "--budget", str(args.budget),
        "--batch", str(args.batch), "--fine-tune-epochs", str(args.fine_tune_epochs), "--seeds", str(args.seed),
        "--policies", args.policy, "--cost", args.cost, "--work-dir", str(args.work_dir), "--device", "cpu",
        "--threads", "1", "--world-seed", "0", *(["--model", str(args.model)] if args.model else [])])
    world = read_world(args.world)
    data = load_world_data(args.world, n_jobs=1)
    ids = data.structure_ids
    known, pool = bench_campaign.split_pool(ids, args.pool_fraction, 0)
    pool_ids = [ids[i] for i in pool]
    model, model_info = bench_campaign.initial_model(campaign_args, data, known, pool)
    run_root = args.work_dir / f"profile_runs_{args.world.name}"
    pool_file = bench_campaign.write_pool(run_root / "pool.extxyz", world, pool_ids)
    references = bench_campaign.write_references(run_root / "references_pbe+scan.json", world,
                                                 [ids[i] for i in known], "pbe+scan")
    e_hull_scan = data.labels[("scan", "e_above_hull")]
    truth = {ids[i]: bool(e_hull_scan[i] <= 1e-6) for i in pool}
    prevalence = sum(truth.values()) / len(pool_ids)

    if args.fine_tune == "legacy":
        from screener.campaign import ensemble_model

        if not hasattr(ensemble_model, "SIZED_FINE_TUNE"):
            raise SystemExit("this version of screener has no sized fine-tune to switch off")
        ensemble_model.SIZED_FINE_TUNE = False
    timer = StageTimer()
    instrument(timer)
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    name = bench_campaign.policy_name(args.policy)
    campaign_dir = run_root / f"{name}_seed{args.seed}_{args.label}"
    bench_campaign.log(f"profiling {name} seed {args.seed}: {len(pool_ids)} candidates, budget {args.budget:g}")
    timer.mark = time.process_time()
    cpu0 = os.times()
    run = bench_campaign.run_one(campaign_args, policy=args.policy, seed=args.seed, campaign_dir=campaign_dir,
                                 pool_file=pool_file, model=model, world=world, references=references)
    stages = timer.result()
    cpu1 = os.times()
    # the process and any child it waited for (a local executor's subprocesses)
    cpu_s = sum(getattr(cpu1, k) - getattr(cpu0, k) for k in ("user", "system", "children_user", "children_system"))
    top: list[dict[str, Any]] = []
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])[:25]  # type: ignore[attr-defined]
        top = [{"function": f"{Path(f).name}:{line}({fn})", "calls": nc, "cumulative_s": round(ct, 2),
                "own_s": round(tt, 2)} for (f, line, fn), (_, nc, tt, ct, _) in rows]
    figures = bench_campaign.score(run, truth, prevalence)
    record = {
        "command": "python bench/campaign_profile.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "torch_threads": torch.get_num_threads(),
        "malloc_tuning": malloc_tuning,
        "world": str(args.world), "n_candidates": len(pool_ids), "policy": name, "seed": args.seed,
        "budget": args.budget, "batch": args.batch, "cost": args.cost, "fine_tune_epochs": args.fine_tune_epochs,
        "fine_tune": args.fine_tune, "git_commit": _git_commit(),
        "initial_model": model_info,
        "campaign_wall_s": run["wall_s"],
        "campaign_cpu_s": round(cpu_s, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "stages": stages,
        "figures": {k: figures[k] for k in ("found", "selected", "precision", "n_pbe", "n_scan", "rounds",
                                            "budget_spent")},
        "decisions": decisions_of(campaign_dir),
        "cprofile_top": top,
    }
    if args.output is not None:
        out = json.loads(args.output.read_text()) if args.output.is_file() else {"benchmark": "campaign_profile"}
        out.setdefault("runs", {})[args.label] = record
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(record))
    return record


def _git_commit() -> str | None:
    """Commit of the screener package that ran (its checkout's HEAD), or None outside a git checkout."""
    import subprocess

    import screener

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(screener.__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def decisions_of(campaign_dir: Path) -> list[list[Any]]:
    """``[round, structure_id, fidelity]`` of every job the campaign bought, in order (to compare before/after)."""
    from screener.campaign.ledger import Ledger

    with Ledger.in_dir(campaign_dir, read_only=True) as ledger:
        return [[j.round, j.structure_id, j.fidelity] for j in ledger.jobs()]


if __name__ == "__main__":
    main()
