"""How correlated are the ensemble's errors of the structures a campaign computed in one round? Read from ledgers.

The competitor survival (``screener.policies.competitors``) draws every candidate's error independently by default;
``competitor_error_correlation`` adds a shared part. This measures what the campaigns say: each computed candidate's
standardized error ``z = (E_hull - mean) / sigma`` (its signed E_hull on the hull its purchase round saw, against
the ensemble's prediction for it in that round: :func:`_ledger_read.ensemble_errors`), and the Pearson
correlation of ``z`` over the pairs computed in the same round at the same fidelity, split into pairs of one formula
(polymorphs), of one chemical system and the rest. Also the share of the variance of ``z`` that round means explain
(a shared error of the whole round), corrected for the rounds' sizes.

Example
-------
    .venv/bin/python bench/error_correlation_from_ledgers.py \\
        /tmp/hm35/campaign_runs_MgCaZnGeSnN_2500/seed*/{expected-value,scan-only}_flat_b300* \\
        --output bench/results/error_correlation_MgCaZnGeSnN_machine2.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import ensemble_errors, open_ledger, references_and_results, require_finished  # noqa: E402
from _output import emit  # noqa: E402

KINDS = ("same_formula", "same_chemical_system", "other")


def pair_correlations(groups: list[list[tuple[str, str, float]]]) -> dict[str, dict[str, Any]]:
    """Pearson correlation of ``z`` over the pairs within each group (``(formula, chemical system, z)`` rows of one
    round and fidelity), per kind of pair."""
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    for rows in groups:
        for a, b in itertools.combinations(rows, 2):
            kind = KINDS[0] if a[0] == b[0] else KINDS[1] if a[1] == b[1] else KINDS[2]
            pairs[kind].append((a[2], b[2]))
    out = {}
    for kind, values in pairs.items():
        v = np.array(values, dtype=float).reshape(-1, 2)
        ok = len(v) > 2 and v[:, 0].std() > 0 and v[:, 1].std() > 0
        out[kind] = {"pairs": len(v), "correlation": round(float(np.corrcoef(v[:, 0], v[:, 1])[0, 1]), 3) if ok
                     else None}
    return out


def round_share(groups: list[list[tuple[str, str, float]]], min_size: int = 4) -> dict[str, Any]:
    """Share of the variance of ``z`` that a shared error per round explains: the variance of the round means less
    what their sizes alone give, over that plus the mean within-round variance (groups of ``min_size`` or more)."""
    z = [np.array([r[2] for r in rows]) for rows in groups if len(rows) >= min_size]
    if len(z) < 2:
        return {"groups": len(z), "shared_share": None}
    within = float(np.mean([g.var(ddof=1) for g in z]))
    between = float(np.var([g.mean() for g in z]) - np.mean([within / len(g) for g in z]))
    return {"groups": len(z), "within_variance": round(within, 3), "between_variance": round(between, 3),
            "shared_share": round(max(between, 0.0) / (max(between, 0.0) + within), 3),
            "mean_z": round(float(np.concatenate(z).mean()), 3)}


def campaign_groups(campaign: Path) -> list[list[tuple[str, str, float]]]:
    """The campaign's ``(formula, chemical system, z)`` rows, one list per (round, fidelity)."""
    db = open_ledger(campaign)
    references, results = references_and_results(campaign, db)
    groups: dict[tuple[int, str], list[tuple[str, str, float]]] = {}
    for number, _, fidelity, entry, error, sigma in ensemble_errors(db, references, results):
        if sigma > 0:
            comp = entry.composition
            groups.setdefault((number, fidelity), []).append((comp.reduced_formula, comp.chemical_system,
                                                              error / sigma))
    db.close()
    return list(groups.values())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("campaigns", type=Path, nargs="+", help="Finished campaign folders (each with its ledger).")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment

    require_finished(p, args.campaigns)
    groups = [g for c in args.campaigns for g in campaign_groups(c)]
    out = {"benchmark": "error_correlation_from_ledgers",
           "command": "python bench/error_correlation_from_ledgers.py " + " ".join(
               shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
           **bench_environment("cpu"),
           "definitions": {"z": "(E_hull on the purchase round's hull - the ensemble's mean that round) / its sigma",
                           "pairs": "two candidates computed in the same round at the same fidelity"},
           "n_campaigns": len(args.campaigns), "n_errors": sum(len(g) for g in groups),
           "pairs": pair_correlations(groups), "round": round_share(groups)}
    return emit(out, args.output)


if __name__ == "__main__":
    main()
