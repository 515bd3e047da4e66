"""Training and inference throughput of the CGAT network (crystals/s), peak memory, parameters and FLOPs.

Synthetic but realistic inputs: crystals of 4-40 atoms (mean ~12), 24 outgoing edges per atom to atoms of the same
crystal (in-degree varies), shell ranks non-decreasing per centre, 1-4 elements per crystal. Training step =
forward, L1 loss, backward, AdamW step. Each (mode, precision) runs in a fresh process so peak memory is its own.

Examples
--------
    .venv/bin/python bench/train_throughput.py --preset paper --batch-size 32 --steps 3
    .venv/bin/python bench/train_throughput.py --device cuda --batch-size 256 --steps 20 --compile

Prints progress to stderr and ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import subprocess
import sys
import time

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model  # noqa: E402

#: Reference CGAT implementation, measured on the same 2-core CPU (issue anchors).
REFERENCE = {
    "train_crystals_per_s_2core_cpu": 1.7,
    "n_parameters": 62.3e6,
    "forward_gflop_per_10_atom_crystal": 7.3,
    "forward_backward_gflop_per_10_atom_crystal": 28.0,
}

ELEMENTS = np.array([1, 3, 8, 9, 11, 12, 13, 14, 15, 16, 19, 20, 22, 25, 26, 27, 28, 29, 30, 31, 33, 34, 38, 40, 47,
                     50, 52, 56, 57, 83])


def synthetic_graph(rng: np.random.Generator, n_atoms: int, n_neighbors: int = 24):
    """One random crystal graph with the layout of screener.graphs.build_graph output."""
    from screener.graphs.graph import CrystalGraph

    n_el = int(min(n_atoms, rng.integers(1, 5)))
    species = rng.choice(ELEMENTS, size=n_el, replace=False)
    z = np.concatenate([species, rng.choice(species, size=n_atoms - n_el)]).astype(np.int16)
    src = np.repeat(np.arange(n_atoms), n_neighbors)
    dst = rng.integers(0, n_atoms, size=n_atoms * n_neighbors)
    # shell ranks: non-decreasing per centre, shells of 1-8 neighbours
    steps = (rng.random((n_atoms, n_neighbors)) < 0.3).astype(np.int64)
    steps[:, 0] = 1
    ranks = np.cumsum(steps, axis=1)
    numbers, counts = np.unique(z, return_counts=True)
    return CrystalGraph(
        atomic_numbers=z,
        edge_src=src.astype(np.int32),
        edge_dst=dst.astype(np.int32),
        edge_rank=np.minimum(ranks, n_neighbors).reshape(-1).astype(np.int8),
        comp_numbers=numbers.astype(np.int16),
        comp_fractions=(counts / counts.sum()).astype(np.float32),
    )


def synthetic_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Atoms per crystal: 4 + a geometric tail, clipped to 40, mean ~12."""
    return np.clip(4 + rng.geometric(1 / 8.6, size=n) - 1, 4, 40)


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(args: dict) -> dict:
    """Time one (mode, precision) case; runs in its own process."""
    import torch

    from screener.cgat.config import PRESETS
    from screener.cgat.model import CGAT
    from screener.graphs.batch import collate_graphs

    if args["device"] == "cpu" and not args["no_malloc_tuning"]:
        from screener.cgat.perf import configure_cpu_allocator

        configure_cpu_allocator()
    torch.set_num_threads(args["threads"])
    if args["tf32"]:
        torch.set_float32_matmul_precision("high")  # fp32 matrix products on TF32 tensor cores (CUDA)
    torch.manual_seed(0)
    device = torch.device(args["device"])
    rng = np.random.default_rng(0)
    bs, steps, warmup = args["batch_size"], args["steps"], args["warmup"]
    batches = []
    n_atoms = 0
    for _ in range(steps + warmup):
        graphs = [synthetic_graph(rng, int(n)) for n in synthetic_sizes(rng, bs)]
        batches.append(collate_graphs(graphs).to(device))
    n_atoms = sum(int(b.atomic_numbers.shape[0]) for b in batches[warmup:])
    config = PRESETS[args["preset"]].model_copy(update=args["changes"])
    model = CGAT(config).to(device)
    run = torch.compile(model, dynamic=True) if args["compile"] else model
    opt = torch.optim.AdamW(model.parameters(), lr=1.25e-4, weight_decay=1e-6)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args["precision"]]
    targets = [torch.randn(b.n_crystals, device=device) for b in batches]

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if args["mode"] == "train":
                pred, _ = run(batches[i])
            else:
                with torch.inference_mode():
                    pred, _ = run(batches[i])
        if args["mode"] == "train":
            loss = (pred.float() - targets[i]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train(args["mode"] == "train")
    t_compile = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync()
    t_compile = time.perf_counter() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    step_s = []
    for i in range(warmup, warmup + steps):
        ts = time.perf_counter()
        step(i)
        sync()
        step_s.append(time.perf_counter() - ts)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "mode": args["mode"],
        "precision": args["precision"],
        "crystals_per_s": round(steps * bs / dt, 2),
        "atoms_per_s": round(n_atoms / dt, 1),
        "s_per_batch": round(dt / steps, 4),
        # fastest single step: the least disturbed by other jobs on a shared machine
        "crystals_per_s_best_step": round(bs / min(step_s), 2),
        "step_s": [round(x, 3) for x in step_s],
        # CPU seconds of this process (all threads): robust to other jobs sharing the cores
        "cpu_s_per_batch": round(cpu / steps, 4),
        "crystals_per_cpu_s": round(steps * bs / cpu, 2),
        "warmup_s": round(t_compile, 2),
        "peak_memory_mb": round(_peak_memory_mb(args["device"]), 1),
    }


def count_flops(preset: str, changes: dict, n_atoms: int = 10) -> dict:
    """Forward and forward+backward FLOPs of one crystal of ``n_atoms`` atoms (torch.utils.flop_counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from screener.cgat.config import PRESETS
    from screener.cgat.model import CGAT
    from screener.graphs.batch import collate_graphs

    torch.manual_seed(0)
    model = CGAT(PRESETS[preset].model_copy(update=changes))
    batch = collate_graphs([synthetic_graph(np.random.default_rng(1), n_atoms)])
    with FlopCounterMode(display=False) as fwd:
        model(batch)
    with FlopCounterMode(display=False) as both:
        pred, _ = model(batch)
        pred.sum().backward()
    return {
        "n_parameters": model.n_parameters(),
        "n_parameters_head": sum(p.numel() for p in model.head.parameters()),
        f"forward_gflop_per_{n_atoms}_atom_crystal": round(fwd.get_total_flops() / 1e9, 4),
        f"forward_backward_gflop_per_{n_atoms}_atom_crystal": round(both.get_total_flops() / 1e9, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["paper", "small"])
    p.add_argument("--edge-update", default=None, choices=["table", "attention", "none"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (the CPU heap grows during the first ones)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--compile", action="store_true", help="torch.compile(model, dynamic=True)")
    p.add_argument("--tf32", action="store_true", help="torch.set_float32_matmul_precision('high')")
    p.add_argument(
        "--no-malloc-tuning", action="store_true", help="skip screener.cgat.perf.configure_cpu_allocator() on CPU"
    )
    args = p.parse_args(argv)
    changes = {"edge_update": args.edge_update} if args.edge_update else {}

    import torch

    cases = []
    ctx = mp.get_context("spawn")
    for mode in args.modes:
        for precision in args.precision:
            case = dict(vars(args), mode=mode, precision=precision, changes=changes)
            with ctx.Pool(1) as pool:
                result = pool.apply(run_case, (case,))
            print(json.dumps(result), file=sys.stderr, flush=True)
            cases.append(result)
    torch.set_num_threads(args.threads)
    flops = count_flops(args.preset, changes)
    device_name = (
        torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else cpu_model()
    )
    result = {
        "benchmark": "train_throughput",
        "command": "python bench/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "hardware": device_name,
        "cpu_model": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "preset": args.preset,
        "edge_update": args.edge_update or "table",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "compile": args.compile,
        "tf32": args.tf32,
        "malloc_tuning": args.device == "cpu" and not args.no_malloc_tuning,
        "mean_atoms_per_crystal": round(float(synthetic_sizes(np.random.default_rng(0), 100000).mean()), 2),
        "load_average_1min_at_end": round(__import__("os").getloadavg()[0], 2),
        **flops,
        "cases": cases,
        "reference": REFERENCE,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
