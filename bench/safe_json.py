"""Cost of checking JSON before decoding it (``screener._safe_json``) against pymatgen's own ``from_dict``.

On the 375 real MP entries of Li-Fe-O (tests/data/mp_entries, ComputedStructureEntry dicts with MP2020 energy
adjustments): the allow-list walk per entry, ``entry_from_dict`` (walk + decode) and the bare
``ComputedStructureEntry.from_dict``, each repeated ``--repeat`` times, one CPU process.

Examples
--------
    .venv/bin/python bench/safe_json.py

Prints ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _per_entry_us(fn, items: list, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.perf_counter() - t0) / (repeat * len(items)) * 1e6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from screener._safe_json import check, entry_from_dict, read_json

    items = read_json(ROOT / "tests" / "data" / "mp_entries" / "Li-Fe-O.json.gz")
    items = [d for d in items if "structure" in d]
    check_us = _per_entry_us(lambda d: check(d, "bench"), items, args.repeat)
    safe_us = _per_entry_us(lambda d: entry_from_dict(d, "bench"), items, args.repeat)
    bare_us = _per_entry_us(lambda d: ComputedStructureEntry.from_dict(dict(d)), items, args.repeat)
    result = {
        "benchmark": "safe_json",
        "command": "python bench/safe_json.py" + (f" --repeat {args.repeat}" if args.repeat != 5 else ""),
        "hardware": {"cpu": _cpu_model(), "processes": 1, "cores": os.cpu_count()},
        "n_entries": len(items),
        "mean_sites": round(sum(len(d["structure"]["sites"]) for d in items) / len(items), 1),
        "check_us_per_entry": round(check_us, 1),
        "entry_from_dict_us_per_entry": round(safe_us, 1),
        "bare_from_dict_us_per_entry": round(bare_us, 1),
        "overhead_percent": round(100.0 * (safe_us - bare_us) / bare_us, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
