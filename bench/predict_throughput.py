"""Throughput of ``screener predict``: end to end (the CLI in a fresh process) and split into its stages.

Reads MP-20-style CSV files (a ``cif`` and a ``material_id`` column; default: the repo copy
``tests/data/mp_20_subset/test.csv``), writes them ``--repeat`` times into one CSV with distinct ids (``<id>-r<k>``),
then measures, in this order:

- ``cli``: ``screener predict <file> --device D --batch-size B`` in a fresh process (import, model load, CIF
  parsing, graph building on all cores, the ensemble's forward passes, CSV writing) -> crystals/s, wall;
- the same stages in this process, each timed on its own: ``read`` (CIF parsing), ``graphs`` (``build_graphs`` on
  ``--n-jobs`` processes), and ``forward`` (``CGATEnsemble.predict`` on the built graphs, for each of
  ``--batch-sizes``, after one untimed warm-up pass; peak GPU memory on CUDA; user and system CPU seconds). On the
  CPU the forward passes are timed twice, with glibc's allocator as it is (``forward``) and then tuned as the CLI
  tunes it (``forward_malloc_tuned``, ``screener.cgat.perf.configure_cpu_allocator``), with the ratios.

The ensemble is the shipped one unless ``--model`` names another. Prints ONE JSON object on the last line of stdout.

Examples
--------
    .venv/bin/python bench/predict_throughput.py --repeat 4 --device cpu --n-jobs 2
    python bench/predict_throughput.py --data train.csv --repeat 20 --device cuda --n-jobs 16 \\
        --batch-sizes 64 256 1024 4096
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_repeated(sources: list[Path], repeat: int, out: Path) -> int:
    """Concatenate the CSV rows of ``sources`` ``repeat`` times with distinct ids; returns the row count."""
    rows = []
    for src in sources:
        with src.open(newline="") as fh:
            rows.extend(csv.DictReader(fh))
    fields = ["material_id", "cif"]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for k in range(repeat):
            for row in rows:
                writer.writerow({"material_id": f"{row['material_id']}-r{k}", "cif": row["cif"]})
    return repeat * len(rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", type=Path, default=[REPO / "tests/data/mp_20_subset/test.csv"])
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--model", type=Path, default=None, help="ensemble folder (default: the shipped one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-jobs", type=int, default=os.cpu_count())
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[256])
    p.add_argument("--cli-batch-size", type=int, default=256)
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="On the CPU, time the forward passes with glibc's allocator as it is only (by default they "
                        "are timed so, then again after screener.cgat.perf.configure_cpu_allocator(), as the CLI runs "
                        "them)")
    args = p.parse_args(argv)

    import torch

    from screener.campaign.ensemble_model import DEFAULT_PBE_MODEL, shipped_models_dir
    from screener.cgat.ensemble import CGATEnsemble
    from screener.graphs import build_graphs
    from screener.structures import read_structures

    model = args.model or shipped_models_dir() / DEFAULT_PBE_MODEL
    result: dict = {
        "benchmark": "predict_throughput",
        "command": "python bench/predict_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "hardware": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "model": str(Path(model).relative_to(REPO)) if Path(model).is_relative_to(REPO) else str(model),
        "n_jobs": args.n_jobs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "structures.csv"
        n = write_repeated(args.data, args.repeat, data)
        result["n_structures"] = n
        if not args.skip_cli:
            out_csv = Path(tmp) / "predictions.csv"
            cmd = [sys.executable, "-c", "import sys; from screener.cli import app; sys.argv[0] = 'screener'; app()",
                   "predict", str(data), "--model", str(model), "--device", args.device,
                   "--batch-size", str(args.cli_batch_size), "-o", str(out_csv)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"screener predict failed: {proc.stderr.strip().splitlines()[-1:]}")
            with out_csv.open() as fh:
                n_rows = sum(1 for _ in fh) - 1
            result["cli"] = {"batch_size": args.cli_batch_size, "wall_s": round(wall, 2), "rows": n_rows,
                             "crystals_per_s": round(n_rows / wall, 1)}
            print(json.dumps({"cli": result["cli"]}), file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        records = read_structures([data]).records
        t_read = time.perf_counter() - t0
        ensemble = CGATEnsemble.load(model, device=args.device)
        t0 = time.perf_counter()
        graphs = build_graphs([r.structure for r in records], n_neighbors=ensemble.n_neighbors, n_jobs=args.n_jobs)
        t_graphs = time.perf_counter() - t0
    n_atoms = sum(len(r.structure) for r in records)
    result["mean_atoms_per_crystal"] = round(n_atoms / n, 2)
    result["n_members"] = len(ensemble.models)
    result["read"] = {"wall_s": round(t_read, 2), "crystals_per_s": round(n / t_read, 1)}
    result["graphs"] = {"wall_s": round(t_graphs, 2), "crystals_per_s": round(n / t_graphs, 1)}
    print(json.dumps({"read": result["read"], "graphs": result["graphs"]}), file=sys.stderr, flush=True)

    cuda = args.device.startswith("cuda")

    def forward_passes(label: str) -> list[dict]:
        rows = []
        for bs in args.batch_sizes:
            ensemble.predict(graphs[: min(n, 4 * bs)], batch_size=bs)  # warm-up: kernels, allocator
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0, cpu0 = time.perf_counter(), os.times()
            pred = ensemble.predict(graphs, batch_size=bs)  # returns numpy: the GPU work is finished
            dt, cpu1 = time.perf_counter() - t0, os.times()
            row = {"batch_size": bs, "wall_s": round(dt, 3), "crystals_per_s": round(n / dt, 1),
                   "crystal_members_per_s": round(n * len(ensemble.models) / dt, 1),
                   "user_s": round(cpu1.user - cpu0.user, 2), "system_s": round(cpu1.system - cpu0.system, 2)}
            if cuda:
                row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            assert len(pred.mean) == n
            rows.append(row)
            print(json.dumps({label: row}), file=sys.stderr, flush=True)
        return rows

    forward = forward_passes("forward")
    if not cuda and not args.no_malloc_tuning:
        # then as `screener predict` runs them: its CLI tunes glibc's allocator (it cannot be untuned after)
        from screener.cgat.perf import configure_cpu_allocator

        result["malloc_tuning_applied"] = configure_cpu_allocator()
        result["forward_malloc_tuned"] = tuned = forward_passes("forward_malloc_tuned")
        result["ratios_malloc_tuned_over_untuned"] = {
            str(a["batch_size"]): round(b["crystals_per_s"] / a["crystals_per_s"], 2) for a, b in zip(forward, tuned)}
    result["forward"] = forward
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
