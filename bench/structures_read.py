"""Throughput of reading, validating and de-duplicating candidate structures (structures/s, one process).

Reads the given files (default: the small real files in tests/data/structures), times
``read_structures(..., validate=False)`` (parsing only), ``read_structures(...)`` (parsing + validation),
``validate_structure`` alone, ``write_structures`` + read back (extxyz) and ``deduplicate``.

Examples
--------
    .venv/bin/python bench/structures_read.py
    .venv/bin/python bench/structures_read.py path/to/perov_5/val.csv path/to/mp_20/train.csv --repeat 1

Prints ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

DEFAULT_FILES = [
    "alexandria_part_1.json.bz2",
    "aviary_examples_subset.json",
    "mp_Li-Fe-O_subset.json.gz",
    "mp_20_test_first12.csv",
    "perov_5_val_first6.csv",
    "vasp",
]


def _best_of(repeat: int, fn):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="structure files/folders (default: tests/data/structures files)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)

    from screener.structures import deduplicate, read_structures, validate_structure, write_structures

    root = Path(__file__).resolve().parents[1]
    paths = args.paths or [str(root / "tests" / "data" / "structures" / f) for f in DEFAULT_FILES]

    t_parse_s, parsed = _best_of(args.repeat, lambda: read_structures(paths, validate=False))
    t_read_s, result = _best_of(args.repeat, lambda: read_structures(paths, skip_invalid=True))
    records = result.records
    n = len(parsed.records)

    def validate_all():
        for record in records:
            validate_structure(record.structure, record.structure_id)

    t_validate_s, _ = _best_of(args.repeat, validate_all)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cands.extxyz"
        t_write_s, _ = _best_of(args.repeat, lambda: write_structures(records, out))
        t_reread_s, _ = _best_of(args.repeat, lambda: read_structures(out))
    t_dedup_s, kept = _best_of(args.repeat, lambda: deduplicate(records))

    figures = {
        "benchmark": "structures_read",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "hardware": f"{_cpu_model()} (2-core CPU)",
        "python": platform.python_version(),
        "paths": [str(Path(p).name) for p in paths],
        "n_structures": n,
        "n_valid": len(records),
        "n_skipped": len(result.skipped),
        "parse_structures_per_s": round(n / t_parse_s, 1),
        "read_and_validate_structures_per_s": round(n / t_read_s, 1),
        "validate_only_structures_per_s": round(len(records) / t_validate_s, 1),
        "write_extxyz_structures_per_s": round(len(records) / t_write_s, 1),
        "read_extxyz_structures_per_s": round(len(records) / t_reread_s, 1),
        "deduplicate_structures_per_s": round(len(records) / t_dedup_s, 1),
        "n_after_dedup": len(kept),
        "repeat": args.repeat,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
