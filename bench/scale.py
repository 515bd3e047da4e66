"""Scale benchmark: graph store, streaming pre-training, sharded ranking, and the paper-preset FLOPs.

Steps (each measured in a fresh subprocess, so its peak RSS is its own):

1. synthetic Alexandria-format PBE shards (:mod:`screener.world.synthetic`, random labels) of the largest size;
2. ``featurise``: ``build_store`` of the first N entries for each size -> crystals/s (wall) and crystals per CPU
   second (this process + its workers, ``getrusage``), bytes per crystal on disk;
3. ``load``: the resident memory of holding every graph of the store in memory (what in-memory training needs), for
   contrast;
4. ``train``: ``screener train --data STORE`` (streaming, small preset, 1 member, ``--epochs``) -> crystals/s and
   peak RSS for each size (the RSS must not grow with the dataset: same shard size, window of 2 shards and validation
   set at every size); ``loader``: the same stream with collation but
   no model (what one DataLoader worker must sustain to feed a GPU);
5. ``rank``: ``rank_candidates`` on the store (predict -> top-K) and on the json.bz2 files (read -> featurise ->
   predict -> top-K, end to end) with the shipped model -> crystals per CPU second and peak RSS;
6. ``flops``: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward+backward of the paper preset on a batch
   of 64 store graphs -> FLOPs per crystal, and the paper-preset cost of 4.5 M entries x 390 epochs;
7. optional ``--round-overhead N``: a campaign of ``--round-rounds`` rounds on N synthetic candidates, timing its stages (ranking =
   predictions + hull look-ups + planning + ledger writes, split into those parts; calculations and fine-tuning
   are timed apart), the ledger's size, and ``screener report`` on the finished campaign (write + mkdocs build).

Sizes beyond those run (100 k, 1 M) are EXTRAPOLATED linearly from the per-CPU-second figures and marked so.
Prints ONE JSON object on the last line of stdout; ``--out`` also writes it (with the command and the hardware).

Example
-------
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py --sizes 2000 20000 --n-jobs 2 --out bench/results/scale_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "pbe-e-form-small-world20k"


def _usage() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
        # Linux: kB; a child's maxrss starts at its parent's RSS at fork (kept small: the parent imports no pymatgen)
        "peak_rss_mb": max(own.ru_maxrss, kids.ru_maxrss) / 1024.0,
        "peak_rss_self_mb": own.ru_maxrss / 1024.0,
        "peak_rss_workers_mb": kids.ru_maxrss / 1024.0,
    }


def _timed(fn) -> dict:
    t0, u0 = time.perf_counter(), _usage()["cpu_s"]
    extra = fn() or {}
    u = _usage()
    return {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(u["cpu_s"] - u0, 3),
            "peak_rss_mb": round(u["peak_rss_mb"], 1), "peak_rss_self_mb": round(u["peak_rss_self_mb"], 1),
            "peak_rss_workers_mb": round(u["peak_rss_workers_mb"], 1), **extra}


# ---- child steps (run in fresh processes) ----------------------------------------------------------------------


def child(step: str, args: list[str]) -> dict:
    warnings.simplefilter("ignore")
    if step == "generate":
        from screener.world.synthetic import write_synthetic_alexandria

        paths = write_synthetic_alexandria(args[0], int(args[1]), per_file=int(args[2]), seed=0)
        return {"files": [str(p) for p in paths]}
    if step == "featurise":
        from screener.graphs.store import build_store

        store, n_jobs, shard_size, files = args[0], int(args[1]), int(args[2]), args[3:]

        def run():
            m = build_store(files, store, targets=["e_form"], shard_size=shard_size, n_jobs=n_jobs)
            n_bytes = sum(p.stat().st_size for p in Path(store).rglob("*") if p.is_file())
            return {"n_entries": m.n_entries, "n_graphs": m.n_graphs, "n_shards": len(m.shards), "n_bytes": n_bytes,
                    "n_skipped": len(m.skipped)}

        return _timed(run)
    if step == "load":
        from screener.graphs.store import GraphStore

        def rss_mb() -> float:  # current resident set (the peak is set by the imports, not by the graphs)
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        def run():
            store = GraphStore(args[0])
            before = rss_mb()
            graphs = [g for k in range(store.n_shards) for _, g, _ in store.iter_shard(k)]
            return {"n_graphs_in_memory": len(graphs), "rss_of_the_graphs_mb": round(rss_mb() - before, 1)}

        return _timed(run)
    if step == "train":
        import torch

        torch.set_num_threads(1)
        from screener.cgat.streaming import train_streaming_ensemble

        store, out, epochs, max_val = args[0], args[1], int(args[2]), int(args[3])

        def run():
            ens = train_streaming_ensemble([store], target="e_form", out_dir=out, preset="small", epochs=epochs,
                                           n_members=1, device="cpu", max_val=max_val, batch_size=64,
                                           buffer_shards=2)
            n_train = ens.info.split["n_train"][0]
            return {"n_train": n_train, "n_val": ens.info.split["n_val"][0], "epochs": epochs,
                    "n_structures_model_card": ens.info.n_structures}

        return _timed(run)
    if step == "loader":
        from screener.cgat.runtime import DistEnv
        from screener.cgat.streaming import first_pass, StreamingGraphs
        from screener.cgat.training import collate_with_targets

        def run():
            stream = StreamingGraphs(first_pass([args[0]], "e_form").parts)
            # a plain loop over one epoch with collation: what one DataLoader worker does for the GPU
            n, batch = 0, []
            from screener.cgat.streaming import _EpochStream

            for item in _EpochStream(stream, 0, 0, DistEnv(False), 64):
                batch.append(item)
                if len(batch) == 64:
                    collate_with_targets(batch)
                    n += len(batch)
                    batch = []
            return {"n_streamed": n}

        return _timed(run)
    if step == "rank":
        import torch

        torch.set_num_threads(1)
        from screener.cgat.rank import rank_candidates

        n_jobs, sources = int(args[0]), args[1:]

        def run():
            s = rank_candidates(sources, model_dir=MODEL, top_k=100, n_jobs=n_jobs)
            return {"n_ranked": s.n_ranked, "n_chunks": s.n_chunks, "n_skipped": s.n_skipped}

        return _timed(run)
    if step == "flops":
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        torch.set_num_threads(1)
        from screener.cgat.config import get_preset
        from screener.cgat.model import CGAT
        from screener.graphs.batch import collate_graphs
        from screener.graphs.store import GraphStore

        store = GraphStore(args[0])
        graphs = []
        for k in range(store.n_shards):
            graphs += [g for _, g, _ in store.iter_shard(k)][: 64 - len(graphs)]
            if len(graphs) == 64:
                break
        batch = collate_graphs(graphs)
        out = {"batch": len(graphs), "mean_atoms_per_crystal": float(sum(g.n_atoms for g in graphs) / len(graphs))}
        for preset in ("small", "paper"):
            torch.manual_seed(0)
            model = CGAT(get_preset(preset))
            with FlopCounterMode(display=False) as fwd:
                pred, _ = model(batch)
            with FlopCounterMode(display=False) as both:
                pred, log_std = model(batch)
                (pred.sum() + (0 if log_std is None else log_std.sum())).backward()
            out[preset] = {"n_parameters": sum(p.numel() for p in model.parameters()),
                           "forward_flop_per_crystal": fwd.get_total_flops() / len(graphs),
                           "train_step_flop_per_crystal": both.get_total_flops() / len(graphs)}
        return out
    if step == "round":
        import torch

        torch.set_num_threads(1)
        import screener.campaign.loop as loop
        from screener.campaign.api import run_campaign
        from screener.campaign.components import PolicyPlanner
        from screener.campaign.ensemble_model import EnsembleModel
        from screener.campaign.ledger import Ledger
        from screener.report.site import run_mkdocs_build, write_report
        from screener.world.synthetic import write_synthetic_alexandria

        n, folder = int(args[0]), Path(args[1])
        files = write_synthetic_alexandria(folder / "candidates", n, per_file=min(n, 10_000), seed=7)
        events: list[tuple[float, str, int, int]] = []
        parts: dict[str, float] = {}
        parts_cpu: dict[str, float] = {}

        def timed(owner, name: str, label: str) -> None:  # wall and CPU seconds in owner.name, summed per label
            original = getattr(owner, name)

            def wrapper(*a, **k):
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    return original(*a, **k)
                finally:
                    parts[label] = parts.get(label, 0.0) + time.perf_counter() - t0
                    parts_cpu[label] = parts_cpu.get(label, 0.0) + time.process_time() - c0

            setattr(owner, name, wrapper)

        timed(EnsembleModel, "_candidate_store", "featurise into the store (once)")
        timed(EnsembleModel, "predict_formation_energy", "predict (store featurisation included)")
        timed(loop, "predicted_e_hull", "hull look-ups")
        timed(Ledger, "record_predictions", "ledger: predictions")
        timed(Ledger, "commit_plan", "ledger: plan and jobs")
        timed(PolicyPlanner, "plan", "policy")
        timed(loop.Campaign, "_spread_calibration", "calibration (prospective errors)")
        stages: dict[str, float] = {}
        per_round: dict[str, dict[str, float]] = {}
        per_round_cpu: dict[str, dict[str, float]] = {}
        stage_cpu: dict[str, float] = {}
        cpu_start: dict[str, float] = {}

        def run():
            def progress(stage, done, total):
                events.append((time.perf_counter(), stage, done, total))
                if done == 0 and stage not in cpu_start:
                    cpu_start[stage] = time.process_time()
                if done == total and stage in cpu_start:
                    stage_cpu[stage] = round(time.process_time() - cpu_start[stage], 2)
                if stage.endswith("ranking") and done == 0:
                    parts.clear()
                    parts_cpu.clear()
                if stage.endswith("ranking") and done == total:
                    per_round[stage] = {k: round(v, 2) for k, v in parts.items()}
                    per_round_cpu[stage] = {k: round(v, 2) for k, v in parts_cpu.items()}

            run_campaign(folder / "campaign", candidates=files, budget=40.0, batch_size=4, rounds=n_rounds,
                         fine_tune_epochs=1, progress=progress)
            starts = {}
            for t, stage, done, total in events:
                if done == 0 and stage not in starts:
                    starts[stage] = t
                if done == total and stage in starts:
                    stages[stage] = round(t - starts.pop(stage), 2)
            with Ledger.in_dir(folder / "campaign", read_only=True) as ledger:
                n_pred = ledger._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
                n_jobs = len(ledger.jobs())
            t0, c0 = time.perf_counter(), time.process_time()
            rep = write_report(folder / "campaign", folder / "report")
            t1, c1 = time.perf_counter(), time.process_time()
            run_mkdocs_build(rep.project_dir)
            t2 = time.perf_counter()
            with Ledger.in_dir(folder / "campaign", read_only=True) as ledger:
                models = [(m["round"], m["fidelity"]) for m in ledger.models()]
            return {"n_candidates": n, "stage_wall_s": stages, "stage_cpu_s": stage_cpu,
                    "ranking_parts_wall_s": per_round, "ranking_parts_cpu_s": per_round_cpu,
                    "models_fine_tuned": [f"round {r} {f}" for r, f in models],
                    "ledger_prediction_rows": n_pred, "ledger_mb": round(
                        (folder / "campaign" / "ledger.sqlite").stat().st_size / 2**20, 1),
                    "jobs": n_jobs, "report": {"write_s": round(t1 - t0, 2), "write_cpu_s": round(c1 - c0, 2),
                                               "mkdocs_build_s": round(t2 - t1, 2),
                                               "candidate_pages": rep.n_candidates, "selected": rep.n_selected}}

        n_rounds = int(args[2]) if len(args) > 2 else 3
        return _timed(run)
    raise SystemExit(f"unknown step {step}")


def round_extrapolation(run: dict, n_target: int = 100_000) -> dict:
    """Round overhead at ``n_target`` candidates, EXTRAPOLATED linearly from a run's CPU seconds (one core):
    one prediction pass (one model folder over every candidate), and the rest of the last round's ranking."""
    last = sorted(run["ranking_parts_cpu_s"])[-1]
    parts = run["ranking_parts_cpu_s"][last]
    first = run["ranking_parts_cpu_s"][sorted(run["ranking_parts_cpu_s"])[0]]
    scale = n_target / run["n_candidates"]
    passes = 1 if not any(m.endswith("scan") for m in run.get("models_fine_tuned", [])) else 2
    pass_s = parts["predict (store featurisation included)"] / passes
    rest = sum(v for k, v in parts.items() if not k.startswith(("predict", "featurise")))
    return {
        "note": f"EXTRAPOLATED (not run) linearly from the {run['n_candidates']}-candidate run's CPU seconds of "
                f"'{last}' ({passes} prediction pass(es)); one core, one torch thread",
        "n_candidates": n_target,
        "featurise_once_cpu_s": round(first.get("featurise into the store (once)", 0.0) * scale, 1),
        "prediction_pass_cpu_s": round(pass_s * scale, 1),
        "hull_policy_ledger_calibration_cpu_s": round(rest * scale, 1),
        "round_cpu_s_one_model_changed": round((pass_s + rest) * scale, 1),
        "round_cpu_s_both_models_changed": round((2 * pass_s + rest) * scale, 1),
    }


def _run_child(step: str, *args: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"[scale] {step} {' '.join(map(str, args))[:120]}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[scale]   -> {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-file", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=1000,
                        help="Store shard size: the same for every size, so the streaming window (2 shards) is too.")
    parser.add_argument("--max-val", type=int, default=100,
                        help="Validation entries held in memory (the same for every size).")
    parser.add_argument("--rank-files-size", type=int, default=4000,
                        help="Entries ranked end to end from the json.bz2 files (the slow path).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/screener-scale-bench"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--round-overhead", type=int, nargs="*", default=[],
                        help="Also run a 2-round campaign on this many synthetic candidates (each size) and time its "
                             "stages; with --only-round-overhead the other steps are skipped and the result is merged "
                             "into --out.")
    parser.add_argument("--only-round-overhead", action="store_true")
    parser.add_argument("--round-rounds", type=int, default=3,
                        help="Rounds of the --round-overhead campaign (round 2 on ranks with fine-tuned models).")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return
    if args.round_overhead:
        runs = []
        for n in args.round_overhead:
            r = _run_child("round", n, args.workdir / f"round_{n}", args.round_rounds)
            r["rounds"] = args.round_rounds
            runs.append(r)
        overhead = {
            "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py "
                       + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "hardware": f"{os.cpu_count()}-core CPU, {cpu_model()}",
            "note": "campaign of --round-rounds rounds (standin back-end, budget 40, batch 4, fine_tune_epochs 1, one "
                    "torch thread) on "
                    "synthetic candidates of random chemistry (every candidate its own chemical system: the worst "
                    "case for hull look-ups); 'round N: ranking' = prediction of every candidate at PBE and SCAN "
                    "(from the campaign's graph store; round 1 also featurises the candidates into it, once) + hull "
                    "look-ups + planning + ledger writes; ranking_parts_wall_s / _cpu_s split it (CPU: this "
                    "process, one torch thread, so the CPU seconds are what a free core would take). A model folder "
                    "not fine-tuned since the last round is not predicted again (round 1: SCAN borrows the PBE model). "
                    "report: screener report's write and mkdocs build (top 200 candidate pages). Wall seconds on "
                    "the shared 2-core CPU; cpu_s covers the whole run (campaign creation included).",
            "runs": runs,
        }
        if args.only_round_overhead:
            previous = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
            if "round_overhead" in previous and previous["round_overhead"].get("note") != overhead["note"]:
                # measured with another set-up (before the campaign used the graph store): kept for comparison
                previous["round_overhead_before"] = previous.pop("round_overhead")
            if "round_overhead" in previous:  # keep the runs of other sizes, each with its command
                old = previous["round_overhead"]
                kept = [{**r, "command": r.get("command", old["command"])} for r in old["runs"]
                        if r["n_candidates"] not in args.round_overhead]
                overhead["runs"] = sorted(kept + [{**r, "command": overhead["command"]} for r in runs],
                                          key=lambda r: r["n_candidates"])
            biggest = max(overhead["runs"], key=lambda r: r["n_candidates"])
            if "ranking_parts_cpu_s" in biggest:
                overhead["extrapolated_100k"] = round_extrapolation(biggest)
            previous["round_overhead"] = overhead
            if args.out:
                args.out.write_text(json.dumps(previous, indent=1) + "\n")
            print(json.dumps(previous))
            return

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    t0 = time.perf_counter()
    # generated in a child: this process stays small, so the children's peak RSS (which starts at the parent's RSS
    # at fork) is their own
    files = [Path(p) for p in _run_child("generate", work / "shards", sizes[-1], args.per_file)["files"]]
    gen_s = time.perf_counter() - t0
    result: dict = {
        "benchmark": "scale",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "hardware": f"{os.cpu_count()}-core CPU, {cpu_model()}",
        "cpu_model": cpu_model(),
        "n_jobs": args.n_jobs,
        "load_average_1min_at_start": os.getloadavg()[0],
        "inputs": {"kind": "synthetic Alexandria-format json.bz2 (screener.world.synthetic, random labels)",
                   "files": len(files), "per_file": args.per_file, "generate_s": round(gen_s, 1)},
        "featurise": [], "load_all_graphs": [], "train_streaming": [], "loader_only": [], "rank": [],
    }
    for n in sizes:
        n_files = -(-n // args.per_file)
        store = work / f"store_{n}"
        if store.exists():
            import shutil

            shutil.rmtree(store)
        f = _run_child("featurise", store, args.n_jobs, args.shard_size, *files[:n_files])
        f.update(size=n, crystals_per_s_wall=round(f["n_entries"] / f["wall_s"], 1),
                 crystals_per_cpu_s=round(f["n_entries"] / f["cpu_s"], 1),
                 bytes_per_crystal=round(f["n_bytes"] / f["n_entries"], 1))
        result["featurise"].append(f)
        load = _run_child("load", store)
        load.update(size=n)
        result["load_all_graphs"].append(load)
        tr = _run_child("train", store, work / f"model_{n}", args.epochs, args.max_val)
        tr.update(size=n, crystals_per_s_wall=round(tr["n_train"] * tr["epochs"] / tr["wall_s"], 1),
                  crystals_per_cpu_s=round(tr["n_train"] * tr["epochs"] / tr["cpu_s"], 1))
        result["train_streaming"].append(tr)
        ld = _run_child("loader", store)
        ld.update(size=n, crystals_per_cpu_s=round(ld["n_streamed"] / ld["cpu_s"], 1))
        result["loader_only"].append(ld)
    big = work / f"store_{sizes[-1]}"
    for mode, sources in (("store (predict -> top-K)", [big]), ("json.bz2 end to end", files[: -(-args.rank_files_size // args.per_file)])):
        r = _run_child("rank", args.n_jobs, *sources)
        r.update(mode=mode, crystals_per_s_wall=round(r["n_ranked"] / r["wall_s"], 1),
                 crystals_per_cpu_s=round(r["n_ranked"] / r["cpu_s"], 1))
        result["rank"].append(r)
    result["flops"] = _run_child("flops", big)

    # ---- extrapolations (linear in the per-CPU-second figures) --------------------------------------------------
    feat = result["featurise"][-1]
    e2e = result["rank"][-1]
    paper = result["flops"]["paper"]["train_step_flop_per_crystal"]
    total_flop = 4.5e6 * 390 * paper
    result["extrapolated"] = {
        "note": "EXTRAPOLATED linearly from the measured per-CPU-second rates of the largest size; not run",
        "featurise_core_hours_100k": round(1e5 / feat["crystals_per_cpu_s"] / 3600, 2),
        "featurise_core_hours_1M": round(1e6 / feat["crystals_per_cpu_s"] / 3600, 2),
        "featurise_core_hours_4p5M": round(4.5e6 / feat["crystals_per_cpu_s"] / 3600, 2),
        "store_gb_1M": round(1e6 * feat["bytes_per_crystal"] / 1e9, 2),
        "store_gb_4p5M": round(4.5e6 * feat["bytes_per_crystal"] / 1e9, 2),
        "streaming_train_small_epoch_core_hours_1M": round(
            1e6 / result["train_streaming"][-1]["crystals_per_cpu_s"] / 3600, 2),
        "rank_end_to_end_candidates_per_hour_16_cores": round(e2e["crystals_per_cpu_s"] * 16 * 3600),
        "rank_end_to_end_core_hours_1M": round(1e6 / e2e["crystals_per_cpu_s"] / 3600, 2),
        "rank_end_to_end_core_hours_1B": round(1e9 / e2e["crystals_per_cpu_s"] / 3600),
        "paper_preset_pretrain_4p5M_x_390_epochs_pflop": round(total_flop / 1e15, 1),
        "paper_preset_gpu_hours_at_100_tflops_sustained": round(total_flop / 100e12 / 3600, 1),
    }
    if args.round_overhead:
        result["round_overhead"] = overhead
    elif args.out and args.out.is_file() and "round_overhead" in json.loads(args.out.read_text()):
        result["round_overhead"] = json.loads(args.out.read_text())["round_overhead"]  # kept from an earlier run
    if args.out and args.out.is_file() and "round_overhead_before" in json.loads(args.out.read_text()):
        result["round_overhead_before"] = json.loads(args.out.read_text())["round_overhead_before"]
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    result["wall_s_total"] = round(time.perf_counter() - t0, 1)
    from screener.world.experiments import write_result

    write_result(result, args.out)


if __name__ == "__main__":
    main()
