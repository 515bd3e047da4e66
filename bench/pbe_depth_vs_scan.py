"""How often a PBE-stable structure is SCAN-stable, by how far below the PBE hull it lies and by its cell size.

The PBE -> SCAN relation of the expected-value policy reads a PBE-stable result's E_hull as 0 (censored) or, with
``pbe_scan_signed_depth``, as its depth below the hull of the other phases. This measures, on a world built by
``screener world build``, whether that depth says anything, split as ``bench/campaign.py`` splits the world
(``--pool-fraction``, seeded): P(SCAN-stable) per bin of the signed PBE E_hull for

* ``known``: the known set's structures, each against the known set's hulls without itself (how the relation's
  known pairs are judged; SCAN-stable on the known SCAN hull);
* ``pool_vs_known``: each pool candidate against the known PBE hull, SCAN-stable on the known SCAN hull (what a
  campaign's first pairs see, before competitors from the pool are computed);
* ``pool_vs_all``: the same, SCAN-stable on the hull of the whole world (the truth a campaign is scored on).

Each also gives P(SCAN-stable | PBE-stable) per class of cell size (``by_cell_size``, classes cut at
``--site-classes``): the question behind the relation's optional cell-size term (``pbe_scan_size_slope_sd``).

Example
-------
    .venv/bin/python bench/pbe_depth_vs_scan.py --world /tmp/worlds/MgMnFeCrVS_2500 \\
        --output bench/results/pbe_depth_vs_scan_MgMnFeCrVS.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _output import emit  # noqa: E402
from campaign import split_pool  # noqa: E402

#: bin edges of the signed PBE E_hull (eV/atom); negative: below the hull of the other phases
EDGES = (-np.inf, -0.1, -0.05, -0.02, -0.01, -0.005, 1e-6, 0.01, 0.03, 0.1, np.inf)
STABLE = 1e-6


def bins(x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        sel = (x > lo) & (x <= hi)
        if sel.any():
            out.append({"pbe_e_hull_from": None if np.isinf(lo) else round(float(lo), 6),
                        "pbe_e_hull_to": None if np.isinf(hi) else round(float(hi), 6),
                        "n": int(sel.sum()), "p_scan_stable": round(float(y[sel].mean()), 3)})
    return out


def by_cell_size(x: np.ndarray, y: np.ndarray, sites: np.ndarray, edges: list[int]) -> dict[str, Any]:
    """P(SCAN-stable | PBE-stable) per class of cell size (classes cut at ``edges``, upper bounds in sites)."""
    out = {}
    lows = [1] + [e + 1 for e in edges]
    for lo, hi in zip(lows, list(edges) + [None]):
        sel = (x <= STABLE) & (sites >= lo) & ((sites <= hi) if hi is not None else True)
        out[f"{lo}-{hi}" if hi is not None else f"{lo}+"] = {
            "n_pbe_stable": int(sel.sum()),
            "p_scan_stable_if_pbe_stable": round(float(y[sel].mean()), 3) if sel.any() else None}
    return out


def summary(x: np.ndarray, y: np.ndarray, sites: np.ndarray | None = None,
            edges: list[int] | None = None) -> dict[str, Any]:
    on = x <= STABLE
    deep, shallow = x <= -0.05, on & (x > -0.01)
    return {"n": int(x.size), "n_pbe_stable": int(on.sum()),
            "p_scan_stable_if_pbe_stable": round(float(y[on].mean()), 3) if on.any() else None,
            "p_scan_stable_if_50_mev_or_deeper": round(float(y[deep].mean()), 3) if deep.any() else None,
            "n_50_mev_or_deeper": int(deep.sum()),
            "p_scan_stable_if_within_10_mev_below": round(float(y[shallow].mean()), 3) if shallow.any() else None,
            "n_within_10_mev_below": int(shallow.sum()), "bins": bins(x, y),
            **({"by_cell_size": by_cell_size(x, y, sites, edges)} if edges and sites is not None else {})}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--pool-fraction", type=float, default=0.6)
    p.add_argument("--world-seed", type=int, default=0, help="Seed of the known/pool split (bench/campaign.py's).")
    p.add_argument("--site-classes", default="8,12,16", metavar="N,N,...",
                   help="Upper bounds (sites) of the cell-size classes of by_cell_size ('' for none).")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    edges = sorted({int(v) for v in args.site_classes.split(",") if v.strip()})
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.entries.computed_entries import ComputedEntry

    from screener.world.experiments import bench_environment
    from screener.world.io import read_world

    t0 = time.perf_counter()
    world = read_world(args.world)
    ids = world.structure_ids("pbe")
    known_idx, pool_idx = split_pool(ids, args.pool_fraction, args.world_seed)
    entries = {f: {e.data["structure_id"]: ComputedEntry(e.composition, e.energy, entry_id=e.data["structure_id"])
                   for e in world.entries[f]} for f in ("pbe", "scan")}
    refs = {f: [ComputedEntry(e.composition, e.energy, entry_id=f"ref-{i}") for i, e in enumerate(world.references[f])]
            for f in ("pbe", "scan")}
    known, pool = [ids[i] for i in known_idx], [ids[i] for i in pool_idx]
    known_hull = {f: refs[f] + [entries[f][s] for s in known] for f in ("pbe", "scan")}
    pd_known = {f: PhaseDiagram(v) for f, v in known_hull.items()}
    pd_all_scan = PhaseDiagram(known_hull["scan"] + [entries["scan"][s] for s in pool])

    def e_hull(diagram: Any, entry: Any) -> float:
        return float(diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)[1])

    n_sites = {e.data["structure_id"]: len(e.structure) for e in world.entries["pbe"]}
    xk, yk, sk = [], [], []
    for s in known:
        entry = entries["pbe"][s]
        if len(entry.composition.elements) < 2:
            continue
        sk.append(n_sites[s])
        x = e_hull(pd_known["pbe"], entry)
        if x <= STABLE:  # on the known hull: its depth below the others
            x = e_hull(PhaseDiagram([e for e in known_hull["pbe"] if e.entry_id != s]), entry)
        xk.append(x)
        yk.append(e_hull(pd_known["scan"], entries["scan"][s]) <= STABLE)
    xp = np.array([e_hull(pd_known["pbe"], entries["pbe"][s]) for s in pool])
    y_known_hull = np.array([e_hull(pd_known["scan"], entries["scan"][s]) <= STABLE for s in pool])
    y_all = np.array([e_hull(pd_all_scan, entries["scan"][s]) <= STABLE for s in pool])
    sp = np.array([n_sites[s] for s in pool])
    out = {"benchmark": "pbe_depth_vs_scan",
           "command": "python bench/pbe_depth_vs_scan.py " + " ".join(
               shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
           **bench_environment("cpu"),
           "world": {"dir": str(args.world), "elements": world.manifest.elements, "n_structures": len(ids),
                     "label": "CHGNet stand-in labels, not DFT"},
           "split": {"pool_fraction": args.pool_fraction, "world_seed": args.world_seed, "n_known": len(known),
                     "n_pool": len(pool)},
           "stable_tol_ev_per_atom": STABLE,
           "known": summary(np.array(xk), np.array(yk), np.array(sk), edges),
           "pool_vs_known": summary(xp, y_known_hull, sp, edges),
           "pool_vs_all": summary(xp, y_all, sp, edges),
           "wall_s": round(time.perf_counter() - t0, 1)}
    return emit(out, args.output)


if __name__ == "__main__":
    main()
