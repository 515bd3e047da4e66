"""Is a real edge update worth its cost? Train CGAT variants (edge_update = table / attention / none) on MP-20.

Small, fixed budget: same reduced architecture, same seed, same epochs, L1 loss on the standardised formation
energy, AdamW; reports test MAE (eV/atom), training CPU seconds and forward FLOPs per 10-atom crystal for each
variant. The data are the MP-20 subset CSVs (``cif`` and ``formation_energy_per_atom`` columns; shared data, see
tests/data/mp_20_subset/README.md for the source).

Example
-------
    .venv/bin/python bench/edge_update_ablation.py --train PATH/train.csv --test PATH/test.csv --epochs 30

Prints progress to stderr and ONE JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def load_graphs(path: str, limit: int | None = None):
    import pandas as pd
    from pymatgen.core import Structure

    from screener.graphs import build_graph

    df = pd.read_csv(path)
    if limit:
        df = df.iloc[:limit]
    graphs = [build_graph(Structure.from_str(cif, fmt="cif"), structure_id=str(mid)) for cif, mid in
              zip(df["cif"], df["material_id"])]
    return graphs, df["formation_energy_per_atom"].to_numpy(np.float32)


def train_variant(edge_update: str, train, test, args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from screener.cgat.config import CGATConfig
    from screener.cgat.model import CGAT
    from screener.graphs import collate_graphs

    config = CGATConfig(
        atom_fea_len=args.width, n_heads=3, n_steps=3, roost_steps=2, hyper_hidden=[args.width], hyper_rank=8,
        attention_hidden=args.width, out_hidden=[4 * args.width, 2 * args.width, args.width], robust=False,
        edge_update=edge_update,
    )
    torch.manual_seed(args.seed)
    model = CGAT(config)
    (g_train, y_train), (g_test, y_test) = train, test
    mean, std = float(y_train.mean()), float(y_train.std())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-6)
    rng = np.random.default_rng(args.seed)
    test_batches = [
        (collate_graphs(g_test[i : i + 256]), torch.from_numpy(y_test[i : i + 256])) for i in range(0, len(g_test), 256)
    ]

    def test_mae() -> float:
        model.eval()
        err = []
        with torch.no_grad():
            for batch, y in test_batches:
                pred, _ = model(batch)
                err.append((pred * std + mean - y).abs())
        model.train()
        return float(torch.cat(err).mean())

    c0 = time.process_time()
    curve = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(g_train))
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            batch = collate_graphs([g_train[k] for k in idx])
            target = (torch.from_numpy(y_train[idx]) - mean) / std
            pred, _ = model(batch)
            loss = (pred - target).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            curve.append((epoch + 1, round(test_mae(), 4)))
            print(edge_update, curve[-1], file=sys.stderr, flush=True)
    cpu = time.process_time() - c0
    one = collate_graphs([g for g in g_test if g.n_atoms == 10][:1] or g_test[:1])
    with FlopCounterMode(display=False) as fc:
        model(one)
    return {
        "edge_update": edge_update,
        "test_mae_ev_per_atom": curve[-1][1],
        "best_test_mae_ev_per_atom": min(m for _, m in curve),
        "curve_epoch_mae": curve,
        "train_cpu_s": round(cpu, 1),
        "n_parameters": model.n_parameters(),
        "forward_mflop_per_crystal": round(fc.get_total_flops() / 1e6, 2),
        "flop_crystal_n_atoms": one.atomic_numbers.shape[0],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["table", "attention", "none"])
    args = p.parse_args(argv)

    import torch

    from screener.cgat.perf import configure_cpu_allocator

    configure_cpu_allocator()
    torch.set_num_threads(args.threads)
    train, test = load_graphs(args.train), load_graphs(args.test)
    results = [train_variant(v, train, test, args) for v in args.variants]
    out = {
        "benchmark": "edge_update_ablation",
        "command": "python bench/edge_update_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_train": len(train[0]),
        "n_test": len(test[0]),
        "target": "formation_energy_per_atom (MP GGA/GGA+U), eV/atom",
        "threads": args.threads,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
