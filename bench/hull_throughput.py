"""Throughput of the per-functional hull (``screener.hull.FidelityHull``) on one CPU process.

Measures, on the 375 real MP entries of Li-Fe-O (tests/data/mp_entries) plus the shipped MP elemental references:

* building the hull and the E_hull of all 375 entries (cold: phase diagrams built on first use);
* ``hull_formation_energy_ev_per_atom`` for ``--n`` random compositions spread over ``--systems`` chemical
  systems (what the campaign does for every ranked candidate), cold (diagrams built) and warm (cached);
* ``e_above_hull_ev_per_atom`` of ``--n`` new entries not in the hull.

Examples
--------
    .venv/bin/python bench/hull_throughput.py
    .venv/bin/python bench/hull_throughput.py --n 20000 --systems 500

Prints ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="compositions / new entries to evaluate")
    parser.add_argument("--systems", type=int, default=200, help="distinct chemical systems they fall into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from monty.serialization import loadfn
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    from screener.hull import FidelityHull, reference_entries

    rng = np.random.default_rng(args.seed)
    entries = loadfn(ROOT / "tests" / "data" / "mp_entries" / "Li-Fe-O.json.gz")
    elements = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Ga", "Si", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni",
                "Cu", "Zn", "Zr", "Nb", "Mo", "Sn", "O", "S", "N", "F", "Cl"]
    refs = reference_entries("pbe", elements=elements)

    t0 = time.perf_counter()
    hull = FidelityHull("pbe", entries=entries, references=refs)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for entry in entries:
        hull.e_above_hull_ev_per_atom(entry)
    t_ehull_mp = time.perf_counter() - t0

    systems = set()
    while len(systems) < args.systems:
        k = int(rng.integers(2, 4))
        systems.add(tuple(sorted(rng.choice(elements, size=k, replace=False))))
    systems = sorted(systems)
    comps = []
    for i in range(args.n):
        system = systems[i % len(systems)]
        amounts = rng.integers(1, 5, size=len(system))
        comps.append(Composition(dict(zip(system, amounts.tolist()))))

    t0 = time.perf_counter()
    cold = [hull.hull_formation_energy_ev_per_atom(c) for c in comps]
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = [hull.hull_formation_energy_ev_per_atom(c) for c in comps]
    t_warm = time.perf_counter() - t0
    assert cold == warm

    new = [ComputedEntry(c, (hull.hull_energy_ev_per_atom(c) + float(rng.normal(0.05, 0.1))) * c.num_atoms,
                         data={"fidelity": "pbe", "structure_id": f"cand-{i}"}) for i, c in enumerate(comps)]
    t0 = time.perf_counter()
    for entry in new:
        hull.e_above_hull_ev_per_atom(entry)
    t_new = time.perf_counter() - t0

    result = {
        "benchmark": "hull_throughput",
        "command": " ".join(["python bench/hull_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "hardware": {"cpu": _cpu_model(), "processes": 1},
        "n_mp_entries": len(entries),
        "n_compositions": args.n,
        "n_chemical_systems": len(systems),
        "build_hull_s": round(t_build, 4),
        "e_hull_375_mp_entries_s": round(t_ehull_mp, 4),
        "hull_formation_energy_cold_per_s": round(args.n / t_cold, 1),
        "hull_formation_energy_warm_per_s": round(args.n / t_warm, 1),
        "e_hull_new_entries_per_s": round(args.n / t_new, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
