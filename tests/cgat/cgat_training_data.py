"""Real MP-20 structures and graphs shared by the training-side tests (tests/data/cgat, see README there)."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "cgat" / "mp20_train_60.csv"
TARGET = "formation_energy_per_atom"


@lru_cache(maxsize=1)
def mp20_graphs() -> tuple[list, np.ndarray]:
    """Graphs (24 neighbours) and formation energies (eV/atom) of the 60 test structures, in file order."""
    import warnings

    from pymatgen.core import Structure

    from screener.graphs import build_graph

    csv.field_size_limit(10**8)
    with DATA.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's "fractional coordinates rounded" notes
        for row in rows:
            structure = Structure.from_str(row["cif"], fmt="cif")
            graphs.append(build_graph(structure, structure_id=row["material_id"]))
    y = np.array([float(r[TARGET]) for r in rows])
    return graphs, y


def write_subset(path: Path, n: int, start: int = 0) -> Path:
    """Write rows ``start..start+n`` of the test CSV (header kept) to ``path``."""
    csv.field_size_limit(10**8)
    with DATA.open(newline="") as fh:
        rows = list(csv.reader(fh))
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *rows[1 + start : 1 + start + n]])
    return path
