"""Stand-in throughput: CHGNet single-point energies per second, both checkpoints (PBE-level 0.3.0, r2scan).

Two paths are timed on the same structures (the 20 MP-20 cells of tests/calculators/data, 2-6 sites):
- ``batched``: ``screener.calculators.standin.energies_batch`` (CHGNet ``predict_structure`` in batches), what the
  world builder uses to label thousands of structures;
- ``jobs``: one jobflow job per structure through ``StandinCalculator.make_flow`` + ``run_locally`` into an
  in-memory store (atomate2 ForceFieldStaticMaker, TaskDoc, CalcResult): the per-calculation path of a campaign.
Model loading is excluded (done once before timing). On the CPU both paths are timed three times: with glibc's
allocator as it is (``results``), so again (``malloc_tuned.untuned_again``, as warm as what follows) and tuned as the
CLI tunes it for the commands that run CGAT (``malloc_tuned.results``, ``screener.cgat.perf.configure_cpu_allocator``),
with user and system seconds and the ratios tuned / untuned again: whether ``screener calc`` (the ``jobs`` path) and
``screener world build`` (``batched``) gain from it.
The last line printed is one JSON object.

Usage: python bench/standin_throughput.py [--device cpu|cuda] [--repeat 5] [--batch-size 64] [--threads N]
       [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _structures(n_repeat: int) -> list:
    import csv

    from pymatgen.core import Structure

    csv.field_size_limit(10**8)
    with open(ROOT / "tests" / "calculators" / "data" / "mp20_candidates.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = [Structure.from_str(r["cif"], fmt="cif") for r in rows]
    return base * n_repeat, [r["material_id"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5, help="copies of the 20 cells in the batched run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--jobs", type=int, default=20, help="structures run as jobflow jobs per checkpoint")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="On the CPU, time with glibc's allocator as it is only (by default: so, then again "
                             "after screener.cgat.perf.configure_cpu_allocator(), which cannot be undone)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    import torch
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from screener.calculators.chgnet_models import CHECKPOINTS, load_chgnet
    from screener.calculators.standin import StandinCalculator, energies_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    structures, ids = _structures(args.repeat)
    n_sites = sum(len(s) for s in structures[: len(ids)]) / len(ids)

    def time_paths() -> dict:
        figures: dict = {}
        for fidelity, checkpoint in CHECKPOINTS.items():
            t0 = time.perf_counter()
            load_chgnet(checkpoint, args.device)
            load_s = time.perf_counter() - t0
            energies_batch(structures[:4], fidelity, use_device=args.device)  # warm-up
            t0, cpu0 = time.perf_counter(), os.times()
            energies_batch(structures, fidelity, batch_size=args.batch_size, use_device=args.device)
            batched_s, cpu1 = time.perf_counter() - t0, os.times()

            calc = StandinCalculator(use_device=args.device)
            store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
            jobs = [calc.make_flow(s, fidelity, sid) for s, sid in zip(structures[: args.jobs], ids * args.repeat)]
            run_locally(calc.make_flow(structures[0], fidelity, "warm-up"), store=store, log=False)
            t0, cpu2 = time.perf_counter(), os.times()
            for job in jobs:
                run_locally(job, store=store, log=False)
            jobs_s, cpu3 = time.perf_counter() - t0, os.times()
            figures[checkpoint] = {
                "fidelity": fidelity,
                "model_load_s": round(load_s, 3),
                "batched_structures": len(structures),
                "batched_energies_per_s": round(len(structures) / batched_s, 2),
                "batched_user_s": round(cpu1.user - cpu0.user, 2),
                "batched_system_s": round(cpu1.system - cpu0.system, 2),
                "jobs": len(jobs),
                "jobs_energies_per_s": round(len(jobs) / jobs_s, 2),
                "jobs_ms_per_calculation": round(1000 * jobs_s / len(jobs), 1),
                "jobs_user_s": round(cpu3.user - cpu2.user, 2),
                "jobs_system_s": round(cpu3.system - cpu2.system, 2),
            }
            print(json.dumps({checkpoint: figures[checkpoint]}), file=sys.stderr, flush=True)
        return figures

    figures = time_paths()
    tuned: dict = {}
    if args.device == "cpu" and not args.no_malloc_tuning:
        # then as the CLI's model commands run (it cannot be untuned after)
        from screener.cgat.perf import configure_cpu_allocator

        # timed untuned a second time first: the ratio is then over a run as warm as the tuned one
        untuned_again = time_paths()
        tuned = {"untuned_again": untuned_again, "applied": configure_cpu_allocator(), "results": time_paths()}
        tuned["ratios_tuned_over_untuned_again"] = {
            checkpoint: {path: round(tuned["results"][checkpoint][f"{path}_energies_per_s"]
                                     / untuned_again[checkpoint][f"{path}_energies_per_s"], 2)
                         for path in ("batched", "jobs")}
            for checkpoint in figures}
    result = {
        "benchmark": "standin_throughput",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "mean_n_sites": round(n_sites, 2),
        "cpu_model": _cpu_model(),
        "n_cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": figures,
    }
    if tuned:
        result["malloc_tuned"] = tuned
    print(json.dumps(result))


if __name__ == "__main__":
    main()
