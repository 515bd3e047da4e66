"""How a pre-trained ensemble predicts a world's PBE formation energies before any transfer: a check for leaks.

``bench/campaign.py --transfer-from ENSEMBLE`` starts each campaign from an ensemble pre-trained elsewhere (the
shipped one saw a 19,573-structure world built by the same generator). Were this world's candidates in that training
set, their errors would sit far below its validation MAE. This script prints the ensemble's PBE E_form MAE on the
world's known set and pool (the benchmark's split), on its real MP-20 structures and on its generated
(hypothetical) ones, and the share of errors below 0.02 eV/atom.

Example::

    .venv/bin/python bench/pretrained_on_world.py --world /tmp/worlds/MgCaZnGeSnN_2500 \\
        --model models/pbe-e-form-small-world20k --output bench/results/pretrained_on_world_MgCaZnGeSnN.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model  # noqa: E402
from _output import emit  # noqa: E402


def errors_by_group(errors: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, Any]:
    """MAE, count and share below 0.02 eV/atom of ``errors`` (absolute) in each boolean mask of ``groups``."""
    out = {}
    for name, mask in groups.items():
        e = errors[mask]
        out[name] = {"n": int(mask.sum()), "mae_ev_per_atom": float(e.mean()) if len(e) else None,
                     "share_below_0.02": float((e < 0.02).mean()) if len(e) else None}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True, help="The pre-trained ensemble (PBE E_form).")
    p.add_argument("--pool-fraction", type=float, default=0.6, help="The benchmark's split (bench/campaign.py).")
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    import campaign as bench_campaign

    from screener.cgat import CGATEnsemble
    from screener.world.experiments import load_world_data

    data = load_world_data(args.world, n_jobs=1)
    ids = data.structure_ids
    known, pool = bench_campaign.split_pool(ids, args.pool_fraction, args.world_seed)
    target = np.asarray(data.labels[("pbe", "e_form")], float)
    ensemble = CGATEnsemble.load(str(args.model))
    predicted = np.asarray(ensemble.predict(list(data.graphs), batch_size=256).mean, float)
    errors = np.abs(predicted - target)
    real = np.array([s.startswith("mp20:") for s in ids])
    in_known = np.zeros(len(ids), bool)
    in_known[known] = True
    groups = {"all": np.ones(len(ids), bool), "known": in_known, "pool": ~in_known, "real_mp20": real,
              "generated": ~real}
    out = {"benchmark": "pretrained_on_world", "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
           "hardware": cpu_model(), "world": str(args.world), "model": str(args.model),
           "errors_pbe_e_form": errors_by_group(errors, groups)}
    return emit(out, args.output)


if __name__ == "__main__":
    main()
