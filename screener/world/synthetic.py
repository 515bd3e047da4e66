"""Synthetic Alexandria-format PBE shards of any size, for throughput benchmarks (no download, no labels worth learning).

Each entry is a shipped prototype (:func:`~screener.world.prototypes.load_prototypes`) with its elements mapped at
random onto other elements that have an embedding and an elemental reference, its lattice strained by a few percent
and its sites jiggled by ~0.01 A, so every entry is a distinct structure (distinct graph-store key). Labels
(``e_form``, ``e_above_hull``, energies) are random numbers: these files measure throughput, not accuracy; use
``screener world build`` for labelled worlds.

The files have the layout of the Alexandria PBE dumps (``alexandria_sample/part_1.json.bz2``): a JSON list of
``ComputedStructureEntry`` dicts with ``data.mat_id``, ``data.e_form``, ``data.e_above_hull``, ... compressed with bz2.

Command line::

    python -m screener.world.synthetic OUT_DIR --entries 100000 --per-file 10000 --seed 0
"""

from __future__ import annotations

import argparse
import bz2
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import InvalidInputError

__all__ = ["synthetic_alexandria_entries", "write_synthetic_alexandria"]


def synthetic_alexandria_entries(
    n_entries: int, *, seed: int = 0, max_sites: int = 16, start: int = 0
) -> Iterator[dict[str, Any]]:
    """Yield ``n_entries`` Alexandria-style ComputedStructureEntry dicts (entry ``start + i`` of the seed's sequence).

    Parameters
    ----------
    n_entries : int
    seed : int
        Entries are a pure function of ``(seed, index)``.
    max_sites : int
        Largest prototype used (sites per cell).
    start : int
        Index of the first entry (so files can be written independently).
    """
    from screener.world.generate import _usable_elements
    from screener.world.prototypes import load_prototypes

    usable = sorted(_usable_elements())
    protos = []
    for proto in load_prototypes():
        if not set(proto.elements) <= set(usable):
            continue
        try:
            structure = proto.structure()
        except Exception:  # noqa: BLE001 - a prototype pymatgen cannot parse is simply not used
            continue
        if len(structure) <= max_sites and structure.is_ordered:
            protos.append(structure)
    if not protos:  # pragma: no cover - the shipped prototypes always give some
        raise InvalidInputError("no usable prototypes")
    for i in range(start, start + n_entries):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen: no electronegativity for noble gases (formula ordering)
            yield _entry(protos, usable, seed, i)


def _entry(protos: list, usable: list[str], seed: int, i: int) -> dict[str, Any]:
    """Entry ``i``: a pure function of ``(seed, i)``."""
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng([seed, i])
    base = protos[int(rng.integers(len(protos)))]
    elements = sorted({site.specie.symbol for site in base})
    targets = rng.choice(len(usable), size=len(elements), replace=False)
    mapping = {el: usable[int(t)] for el, t in zip(elements, targets)}
    species = [mapping[site.specie.symbol] for site in base]
    matrix = base.lattice.matrix @ (np.eye(3) + rng.normal(0.0, 0.02, (3, 3)) * np.eye(3))
    frac = (base.frac_coords + rng.normal(0.0, 0.002, base.frac_coords.shape)) % 1.0
    structure = Structure(Lattice(matrix), species, frac)
    n_sites = len(structure)
    e_form = float(rng.normal(-1.0, 0.8))
    e_hull = float(abs(rng.normal(0.0, 0.15)))
    energy = float(rng.normal(-5.0, 1.5)) * n_sites
    return {
        "@module": "pymatgen.entries.computed_entries",
        "@class": "ComputedStructureEntry",
        "energy": energy,
        "composition": structure.composition.as_dict(),
        "entry_id": None,
        "correction": 0.0,
        "energy_adjustments": [],
        "parameters": {},
        "data": {
            "mat_id": f"syn{seed}-{i:010d}",
            "formula": structure.composition.reduced_formula,
            "elements": sorted(mapping.values()),
            "nsites": n_sites,
            "energy_total": energy,
            "energy_corrected": energy,
            "e_above_hull": e_hull,
            "e_form": e_form,
            "synthetic": True,
        },
        "structure": structure.as_dict(),
    }


def write_synthetic_alexandria(
    out_dir: str | Path, n_entries: int, *, per_file: int = 10_000, seed: int = 0, max_sites: int = 16,
    compresslevel: int = 1,
) -> list[Path]:
    """Write ``n_entries`` synthetic entries as ``out_dir/part_<k>.json.bz2`` files of ``per_file`` entries.

    Returns
    -------
    list of Path
        The files, in order. Existing complete files are kept (the call resumes).
    """
    if n_entries < 1 or per_file < 1:
        raise InvalidInputError("n_entries and per_file must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, n_entries, per_file)):
        path = out / f"part_{k:05d}.json.bz2"
        paths.append(path)
        if path.is_file():
            continue
        entries = list(synthetic_alexandria_entries(min(per_file, n_entries - start), seed=seed, max_sites=max_sites,
                                                    start=start))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(bz2.compress(json.dumps(entries).encode(), compresslevel=compresslevel))
        tmp.replace(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sites", type=int, default=16)
    args = parser.parse_args(argv)
    paths = write_synthetic_alexandria(args.out_dir, args.entries, per_file=args.per_file, seed=args.seed,
                                       max_sites=args.max_sites)
    print(f"{args.entries} entries in {len(paths)} files -> {args.out_dir}")


if __name__ == "__main__":
    main()
