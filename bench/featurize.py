"""Throughput of crystal-graph construction (crystals/s), on 1 core and on all cores, cached and uncached.

Reads MP-20-style CSV files (a ``cif`` column; default: the repo copy ``tests/data/mp_20_subset/test.csv``, 142
crystals of 1-20 sites), parses them once (not timed), repeats the list ``--repeat`` times and times:

- ``build_graph`` in a loop (1 core, uncached) -> ``crystals_per_s_per_core`` (the headline figure);
- ``build_graphs(n_jobs=1)`` and ``build_graphs(n_jobs=all cores)``, uncached;
- ``build_graphs`` with a graph cache on the distinct structures: cold (build + write) and warm (read), 1 core and
  all cores;
- a breakdown of one serial pass: array extraction from the Structure, the neighbour search
  (``find_points_in_spheres``), and the rest (sorting, shells, graph assembly, Python overhead).

Every figure is the best of ``--trials`` runs. ``*_per_core`` figures divide by CPU seconds (this process and its
worker processes, from ``getrusage``), so they hold on a busy shared machine; ``*_wall`` figures divide by wall-clock
seconds. Prints ONE JSON object on the last line of stdout.

Examples
--------
    .venv/bin/python bench/featurize.py
    .venv/bin/python bench/featurize.py /path/to/mp_20/train.csv --repeat 4 --trials 3
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO / "tests" / "data" / "mp_20_subset" / "test.csv"


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its reaped children (pool workers are reaped on shutdown)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best_of(trials: int, fn) -> tuple[float, float]:
    """Best wall-clock seconds and best CPU seconds over ``trials`` calls of ``fn``."""
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(trials):
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, _cpu_seconds() - cpu0)
    return best_wall, best_cpu


def _read(paths: list[Path]):
    from pymatgen.core import Structure

    structures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            with open(path, newline="") as fh:
                structures.extend(Structure.from_str(row["cif"], fmt="cif") for row in csv.DictReader(fh))
    return structures


def _breakdown(structures, n_neighbors: int) -> dict[str, float]:
    """CPU microseconds per crystal in array extraction, neighbour search and the rest (one serial pass)."""
    import numpy as np
    from pymatgen.optimization.neighbors import find_points_in_spheres

    from screener.graphs.build import graph_from_arrays, neighbor_shells, structure_arrays

    n = len(structures)
    t0 = time.process_time()
    arrays = [structure_arrays(s) for s in structures]
    t_extract = time.process_time() - t0
    t0 = time.process_time()
    for a in arrays:
        graph_from_arrays(a, n_neighbors=n_neighbors)
    t_graph = time.process_time() - t0
    radii = [neighbor_shells(a, n_neighbors=n_neighbors)[4] for a in arrays]
    inputs = []
    for a, r in zip(arrays, radii):
        m = np.ascontiguousarray(a.lattice_matrix)
        inputs.append((np.ascontiguousarray(a.frac_coords @ m), r, np.ascontiguousarray(a.pbc, dtype=np.int64), m))
    t0 = time.process_time()
    for cart, r, pbc, m in inputs:
        find_points_in_spheres(cart, cart, r=r, pbc=pbc, lattice=m, tol=1e-8)
    t_search = time.process_time() - t0
    return {
        "extract_us_per_crystal": 1e6 * t_extract / n,
        "neighbor_search_us_per_crystal": 1e6 * t_search / n,
        "sort_shells_assembly_us_per_crystal": 1e6 * (t_graph - t_search) / n,
        "total_us_per_crystal": 1e6 * (t_extract + t_graph) / n,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[DEFAULT_FILE], help="MP-20-style CSV files")
    parser.add_argument("--repeat", type=int, default=8, help="repeat the structure list this many times")
    parser.add_argument("--trials", type=int, default=3, help="best of this many runs per figure")
    parser.add_argument("--n-neighbors", type=int, default=24)
    parser.add_argument("--n-jobs", type=int, default=None, help="workers for the all-cores runs (default: all)")
    parser.add_argument(
        "--supercell", type=int, default=1, help="use a x N supercells (N=2 takes MP-20's 1-20 sites to 2-40)"
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the cache runs write (default: system temp)")
    args = parser.parse_args(argv)

    import numpy as np

    from screener.graphs import build_graph, build_graphs
    from screener.graphs.parallel import available_cpus

    base = _read(args.paths)
    if args.supercell > 1:
        base = [s * (args.supercell, 1, 1) for s in base]
    structures = base * args.repeat
    n = len(structures)
    n_sites = np.array([len(s) for s in base])
    n_cores = args.n_jobs or available_cpus()
    k = args.n_neighbors
    print(f"{len(base)} structures x {args.repeat} = {n}; sites {n_sites.min()}-{n_sites.max()} "
          f"(mean {n_sites.mean():.1f}); {n_cores} cores", file=sys.stderr)

    figures: dict[str, float] = {}
    wall, cpu = _best_of(args.trials, lambda: [build_graph(s, n_neighbors=k) for s in structures])
    figures["crystals_per_s_per_core"] = n / cpu
    figures["crystals_per_s_1_core_wall"] = n / wall
    wall, cpu = _best_of(args.trials, lambda: build_graphs(structures, n_neighbors=k, n_jobs=1))
    figures["build_graphs_1_core_crystals_per_s_per_core"] = n / cpu
    figures["build_graphs_1_core_crystals_per_s_wall"] = n / wall
    wall, cpu = _best_of(args.trials, lambda: build_graphs(structures, n_neighbors=k, n_jobs=n_cores))
    figures["build_graphs_all_cores_crystals_per_s_wall"] = n / wall
    figures["build_graphs_all_cores_crystals_per_s_per_core"] = n / cpu  # includes worker start-up

    tmp = Path(tempfile.mkdtemp(prefix="featurize-bench-", dir=args.tmp_dir))
    try:
        for jobs, name in ((1, "1_core"), (n_cores, "all_cores")):
            dirs = iter(tmp / f"{name}-{trial}" for trial in range(args.trials))
            state: dict[str, Path] = {}

            def cold() -> None:
                state["dir"] = next(dirs)
                build_graphs(base, n_neighbors=k, n_jobs=jobs, cache_dir=state["dir"])

            cold_wall, cold_cpu = _best_of(args.trials, cold)
            warm_wall, warm_cpu = _best_of(
                args.trials, lambda: build_graphs(base, n_neighbors=k, n_jobs=jobs, cache_dir=state["dir"])
            )
            figures[f"cache_cold_{name}_crystals_per_s_wall"] = len(base) / cold_wall
            figures[f"cache_warm_{name}_crystals_per_s_wall"] = len(base) / warm_wall
            figures[f"cache_cold_{name}_crystals_per_s_per_core"] = len(base) / cold_cpu
            figures[f"cache_warm_{name}_crystals_per_s_per_core"] = len(base) / warm_cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        **{key: round(value, 1) for key, value in figures.items()},
        **{key: round(value, 1) for key, value in _breakdown(structures, k).items()},
        "target_crystals_per_s_per_core": 2000,
        "n_crystals": n,
        "n_distinct_structures": len(base),
        "sites_min": int(n_sites.min()),
        "sites_max": int(n_sites.max()),
        "sites_mean": round(float(n_sites.mean()), 2),
        "n_neighbors": k,
        "supercell": args.supercell,
        "n_cores": n_cores,
        "cache_dir_parent": str(tmp.parent),
        "trials": args.trials,
        "inputs": [str(p) for p in args.paths],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "note": "uncached figures use the list repeated --repeat times; cache figures use each distinct "
        "structure once (cold = build + write, warm = read); fewer than 1000 structures run serially "
        "(SERIAL_THRESHOLD)",
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
