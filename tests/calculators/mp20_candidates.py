"""The 20 MP-20 candidate structures of the calculator/execution tests (tests/calculators/data/, MIT, see README)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

CSV_PATH = Path(__file__).parent / "data" / "mp20_candidates.csv"


def load_candidates(n: int = 20) -> list[tuple[str, object]]:
    """(material_id, Structure) of the first ``n`` rows."""
    from pymatgen.core import Structure

    csv.field_size_limit(10**8)
    out = []
    with open(CSV_PATH, newline="") as handle:
        for row in csv.DictReader(handle):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append((row["material_id"], Structure.from_str(row["cif"], fmt="cif")))
    return out[:n]


