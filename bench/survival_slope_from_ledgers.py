"""Can a campaign learn from its own purchases how much the competitor survival matters? Read from ledgers.

Every purchase an `expected-value` campaign made on the model's prediction (a PBE screen, or a SCAN run of a candidate
without an earlier PBE result) with the competitor survival estimated records ``competitor_survival`` ``S`` in its
decision's numbers, and the ledger holds the model's P(stable) at its fidelity in that round. This benchmark fits the
probit ``stable ~ a + a_pbe [PBE] + b Phi^-1(P) + g ln S`` by maximum likelihood twice over the same purchases:

* **campaign**: stable on the campaign's own final hull at the purchase's fidelity (the known phases and every
  result of the campaign): what ``competitor_survival_fitted`` can learn from;
* **truth**: stable on the world's own hull (every structure computed): what the survival is meant to predict.

It reports ``g`` and the likelihood-ratio statistic of adding it (chi-squared, 1 degree of freedom: 3.84 at 5 %). If
the campaign's ``g`` follows the truth's across worlds, a campaign can fit the survival's weight itself.

Example
-------
    .venv/bin/python bench/survival_slope_from_ledgers.py --world /tmp/worlds/KCuZnSnSSe_2500 \\
        /tmp/hk39/campaign_runs_KCuZnSnSSe_2500/seed*/ev-survival_flat_b300* \\
        --output bench/results/survival_slope_from_ledgers_KCuZnSnSSe.json

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
from _ledger_read import decision_numbers, open_ledger, references_and_results, require_finished  # noqa: E402
from _output import emit  # noqa: E402


def purchases(campaign: Path, truth: dict[str, dict[str, float]], tol: float) -> list[dict[str, Any]]:
    """Each purchase on the model's prediction with ``S`` recorded: fidelity, P, S, stable on the campaign's final
    hull and on the world's."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    db = open_ledger(campaign)
    references, results = references_and_results(campaign, db)
    e_hull: dict[tuple[str, str], tuple[int, float]] = {}
    for fidelity in ("pbe", "scan"):
        mine = [(r, s, e) for r, s, f, e in results if f == fidelity]
        diagram = PhaseDiagram(references[fidelity] + [e for _, _, e in mine])
        for number, sid, entry in mine:
            e_hull[(sid, fidelity)] = (number, float(diagram.get_e_above_hull(entry, allow_negative=True)))
    screened_in = {sid: number for (sid, f), (number, _) in e_hull.items() if f == "pbe"}
    out = []
    for number, sid, fidelity, raw in db.execute(
            "SELECT round, structure_id, fidelity, numbers_json FROM decisions WHERE accepted = 1"):
        numbers = decision_numbers(raw)
        s = numbers.get("competitor_survival")
        if numbers.get("kind") != "candidate" or (sid, fidelity) not in e_hull or not isinstance(s, (int, float)):
            continue
        if fidelity == "scan" and screened_in.get(sid, number) < number:  # bought on its PBE result
            continue
        row = db.execute("SELECT p_stable FROM predictions WHERE round = ? AND structure_id = ? AND fidelity = ?",
                         (number, sid, fidelity)).fetchone()
        if row is None or row[0] is None or sid not in truth[fidelity]:
            continue
        out.append({"fidelity": fidelity, "p": float(row[0]), "s": float(s),
                    "campaign": e_hull[(sid, fidelity)][1] <= tol, "truth": truth[fidelity][sid] <= tol})
    return out


def fit_slope(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Maximum-likelihood probit with and without ``g ln S``; ``g``, the other coefficients and the LR statistic."""
    from scipy.optimize import minimize
    from scipy.special import log_ndtr, ndtri

    z = ndtri(np.clip([r["p"] for r in rows], 1e-6, 1 - 1e-6))
    log_s = np.log(np.clip([r["s"] for r in rows], 1e-3, 1.0))
    is_pbe = np.array([r["fidelity"] == "pbe" for r in rows], dtype=float)
    y = np.array([r[label] for r in rows], dtype=bool)

    def fit(with_g: bool) -> tuple[np.ndarray, float]:
        def loss(c: np.ndarray) -> float:
            u = c[0] + c[1] * is_pbe + c[2] * z + (c[3] * log_s if with_g else 0.0)
            return float(-np.sum(np.where(y, log_ndtr(u), log_ndtr(-u))))
        res = minimize(loss, np.array([0.0, 0.0, 1.0, 0.0]), method="L-BFGS-B")
        return res.x, float(res.fun)

    (_, nll0), (c, nll1) = fit(False), fit(True)
    return {"g": round(float(c[3]), 3), "lr_chi2": round(2.0 * (nll0 - nll1), 2), "a": round(float(c[0]), 3),
            "a_pbe": round(float(c[1]), 3), "b": round(float(c[2]), 3), "n_stable": int(y.sum())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--tol", type=float, default=1e-6, help="E_hull (eV/atom) counted as stable.")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    campaigns = [c for c in args.campaigns if c.is_dir()]  # a glob of campaign folders also matches their score files
    require_finished(p, campaigns)
    from screener.world.experiments import bench_environment, load_world_data

    data = load_world_data(args.world, n_jobs=1)
    truth = {f: {s: float(v) for s, v in zip(data.structure_ids, data.labels[(f, "e_above_hull")])}
             for f in ("pbe", "scan")}
    rows = [r for c in campaigns for r in purchases(c, truth, args.tol)]
    out = {
        "benchmark": "survival_slope_from_ledgers",
        "command": "python bench/survival_slope_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "campaigns": [str(c) for c in campaigns],
        "definitions": {"model": "P(stable) = Phi(a + a_pbe [PBE purchase] + b Phi^-1(P at purchase) + g ln S)",
                        "campaign": "stable on the campaign's final hull at the purchase's fidelity",
                        "truth": "stable on the world's own hull at the purchase's fidelity",
                        "lr_chi2": "2 x log-likelihood gain of adding g (3.84: 5 % level, 1 degree of freedom)"},
        "n_purchases": len(rows),
        "n_pbe": sum(r["fidelity"] == "pbe" for r in rows),
        **({label: fit_slope(rows, label) for label in ("campaign", "truth")} if rows else {}),
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
