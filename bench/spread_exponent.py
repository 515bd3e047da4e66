"""Which power of the ensemble std ranks best, and which one the errors say: read from campaign ledgers of a world.

The campaign calibrates the spread as ``sigma = scale * 0.1 * (std / 0.1)^exponent`` (``screener.policies.
calibration``). This benchmark measures two things on recorded predictions against the world's own labels (a world
built by ``screener world build``: every candidate's true SCAN E_hull is known):

* **ranking**: for every recorded round of every campaign given, the candidates not yet SCAN-computed are ranked by
  ``P(stable) = Phi(-mu / sigma)`` with the round's SCAN E_hull mean ``mu`` and ``sigma`` of each exponent (the scale
  does not change the order), and the truly SCAN-stable among the top 10, 20 and 40 are counted, summed over the
  rankings. Exponent 1 is one plain scale (what campaigns ranked with before), 0 ranks by the mean alone.
* **calibration over the std's range**: round 1's SCAN predictions of every candidate (the initial model, before any
  campaign data) against the true formation energies: the maximum-likelihood exponent of Gaussian errors, and the
  share of errors within 1 sigma per third of the std range for one plain conformal scale and for the fitted power
  law (a calibrated spread covers 68 % in each third, not only overall).

Example
-------
    .venv/bin/python bench/spread_exponent.py --world /tmp/worlds/LiMnFeCoNiO_2500 \\
        /tmp/hbench/campaign_runs_LiMnFeCoNiO_2500/seed*/camd-epsilon-greedy_flat_b300* \\
        --output bench/results/spread_exponent_LiMnFeCoNiO.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _output import emit  # noqa: E402

EXPONENTS = (0.0, 0.25, 0.35, 0.5, 0.75, 1.0)
TOP_K = (10, 20, 40)


def _labels(world: Path) -> tuple[dict[str, float], dict[str, float]]:
    from screener.world.experiments import load_world_data

    data = load_world_data(world, n_jobs=1)
    ids = data.structure_ids
    return (dict(zip(ids, (float(v) for v in data.labels[("scan", "e_above_hull")]))),
            dict(zip(ids, (float(v) for v in data.labels[("scan", "e_form")]))))


def ranking_counts(campaign: Path, e_hull_true: dict[str, float], tol: float = 1e-6) -> dict[float, list[list[int]]]:
    """Per exponent, one ``[stable in top k for k in TOP_K]`` per recorded round of ``campaign``."""
    from scipy.special import ndtr

    from screener.policies.calibration import power_std

    db = sqlite3.connect(f"file:{campaign / 'ledger.sqlite'}?mode=ro", uri=True)
    computed = {s: r for s, r in db.execute("SELECT structure_id, round FROM jobs WHERE fidelity = 'scan'")}
    out: dict[float, list[list[int]]] = {g: [] for g in EXPONENTS}
    rounds = [r for (r,) in db.execute("SELECT DISTINCT round FROM predictions ORDER BY round")]
    for number in rounds:
        rows = [(s, m, sd) for s, m, sd in db.execute(
            "SELECT structure_id, e_hull_mean_ev_per_atom, e_form_std_ev_per_atom FROM predictions "
            "WHERE round = ? AND fidelity = 'scan'", (number,))
            if m is not None and sd is not None and s in e_hull_true and computed.get(s, number) >= number]
        if not rows:
            continue
        mu = np.array([r[1] for r in rows])
        sd = np.maximum(np.array([r[2] for r in rows]), 1e-3)
        stable = np.array([e_hull_true[r[0]] <= tol for r in rows])
        for g in EXPONENTS:
            p = ndtr(-mu / power_std(sd, g))  # the campaign's sigma at scale 1
            order = np.argsort(-p, kind="stable")
            out[g].append([int(stable[order[:k]].sum()) for k in TOP_K])
    db.close()
    return out


def round1_calibration(campaign: Path, e_form_true: dict[str, float]) -> dict | None:
    """ML exponent and per-third coverage of round 1's SCAN predictions of every candidate."""
    from screener.policies.calibration import fit_spread_calibration, fit_spread_exponent

    db = sqlite3.connect(f"file:{campaign / 'ledger.sqlite'}?mode=ro", uri=True)
    rows = [(m - e_form_true[s], sd) for s, m, sd in db.execute(
        "SELECT structure_id, e_form_mean_ev_per_atom, e_form_std_ev_per_atom FROM predictions "
        "WHERE round = 1 AND fidelity = 'scan'") if m is not None and sd is not None and s in e_form_true]
    db.close()
    if len(rows) < 30:
        return None
    err = np.array([r[0] for r in rows])
    err = err - err.mean()  # the borrowed model's fidelity shift is not spread
    sd = np.maximum(np.array([r[1] for r in rows]), 1e-3)
    ml = fit_spread_exponent(err, sd, 0.5, prior_sd=100.0)
    thirds = np.array_split(np.argsort(sd), 3)
    out = {"n_errors": int(err.size), "ml_exponent": round(ml, 3),
           "std_thirds_ev_per_atom": [[round(float(sd[k].min()), 4), round(float(sd[k].max()), 4)] for k in thirds]}
    for name, prior in (("plain_scale", None), ("power_law", ml)):
        fit = fit_spread_calibration(err, sd, prior_weight=0.0, exponent_prior=prior)
        out[name] = {"scale": round(fit.scale, 3), "exponent": round(fit.exponent, 3),
                     "within_1_sigma": round(float(fit.within_1_sigma), 3),
                     "within_1_sigma_by_std_third": [round(float(np.mean(np.abs(err[k]) <= fit.calibrated_std(sd[k]))),
                                                           3) for k in thirds]}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True, help="The world the campaigns ran on (its true labels).")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment

    e_hull_true, e_form_true = _labels(args.world)
    campaigns = [c for c in args.campaigns if (c / "ledger.sqlite").is_file()]
    totals = {g: np.zeros(len(TOP_K), dtype=int) for g in EXPONENTS}
    n_rankings = 0
    per_campaign = {}
    for camp in campaigns:
        counts = ranking_counts(camp, e_hull_true)
        n_rankings += len(counts[1.0])
        for g in EXPONENTS:
            if counts[g]:
                totals[g] += np.sum(counts[g], axis=0)
        per_campaign[str(camp)] = {"rankings": len(counts[1.0]), "round1_calibration": round1_calibration(
            camp, e_form_true)}
    out = {
        "benchmark": "spread_exponent",
        "command": "python bench/spread_exponent.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "keys": "stable_in_top_k: truly SCAN-stable among the top k by P(stable) with sigma = 0.1 (std / 0.1)^exponent,"
                " summed over every recorded round of every campaign (candidates not yet SCAN-computed); "
                "round1_calibration: the initial model's SCAN predictions of every candidate against the truth",
        "n_campaigns": len(campaigns),
        "n_rankings": n_rankings,
        "top_k": list(TOP_K),
        "stable_in_top_k": {str(g): totals[g].tolist() for g in EXPONENTS},
        "stable_in_top_k_vs_exponent_1": {str(g): [round(a / b, 3) if b else None for a, b in zip(totals[g],
                                                                                                  totals[1.0])]
                                          for g in EXPONENTS},
        "campaigns": per_campaign,
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
