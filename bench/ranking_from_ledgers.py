"""How well the ensemble and the composition GP rank a campaign's open candidates, round by round (its ledger).

At each asked round ``R`` of a finished campaign, the candidates not yet computed at either fidelity are ranked by

* ``ensemble``: the round's SCAN P(stable) in the ledger (the CGAT ensemble, fine-tuned up to that round);
* ``gp_p`` / ``gp_lcb``: the composition GP of :mod:`screener.policies.composition_model` (CAMD GP-LCB's model),
  trained as the planner trains it: every reference phase of the campaign's known hulls and every result computed
  before round ``R``, each E_hull on the hull of that fidelity they make together; ``gp_lcb`` is CAMD's
  ``mean - std`` order;
* ``blend_w``: the ensemble's Gaussian times the GP's with the GP's precision times ``w``
  (``composition_gp_weight``);
* ``pool_a``: the probit pool of the ensemble's P and the GP's, ``Phi((1 - a) z_m + a z_g)`` at a fixed ``a``
  (today's default learns ``a`` per campaign);
* ``residual_gp`` / ``residual_gp_var``: the ensemble's round mean plus a composition GP's prediction of the
  ensemble's error, learned from the campaign's own results before round ``R`` only (each result's E_hull on the
  hull its purchase round saw, minus the mean the ensemble gave it that round: an out-of-sample error; the known
  set trained the ensemble, so its errors would read as none); ``residual_gp`` keeps the ensemble's spread,
  ``residual_gp_var`` adds the GP's latent variance to it,

and each ranking is scored against the world's truth (SCAN E_hull on the world's own SCAN hull <= 1e-6): truly
stable among the top 20 and top 50, and the AUC. Ties (the GP sees compositions only) go to the ensemble's mean.

Example
-------
    .venv/bin/python bench/ranking_from_ledgers.py --world /tmp/worlds/MgCaZnGeSnN_2500 \\
        /tmp/hm/campaign_runs_MgCaZnGeSnN_2500/seed*/expected-value_flat_b300{,_ms?} --rounds 1 2 3 5 \\
        --output bench/results/ranking_from_ledgers_MgCaZnGeSnN.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import ensemble_errors, open_ledger, references_and_results, require_finished  # noqa: E402
from _output import emit  # noqa: E402

STABLE = 1e-6
BLEND_WEIGHTS = (0.5, 1.0)
POOL_WEIGHTS = (0.25, 0.5, 0.75)
SUM_WEIGHTS = (1.0, 3.0, 10.0)
TOP = (20, 50)


def auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None without both classes."""
    from scipy.stats import rankdata

    n1 = int(truth.sum())
    n0 = truth.size - n1
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(score)
    return float((r[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def scores(truth: np.ndarray, score: np.ndarray, tie: np.ndarray) -> dict[str, Any]:
    order = np.lexsort((tie, -score))
    out: dict[str, Any] = {f"top_{k}": int(truth[order[:k]].sum()) for k in TOP}
    a = auc(truth, score)
    out["auc"] = round(a, 3) if a is not None else None
    return out


def seed_rows(references: dict[str, list[Any]], done: list[tuple[str, str, Any]]) -> list[tuple[str, str, float]]:
    """(formula, fidelity, E_hull) of the campaign's results, then of the reference phases: on the hull of each
    fidelity that both make together (the planner's ``_camd_seed``)."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    own: list[tuple[str, str, float]] = []
    known: list[tuple[str, str, float]] = []
    for fidelity, refs in references.items():
        mine = [entry for _, fid, entry in done if fid == fidelity]
        diagram = PhaseDiagram(refs + mine)
        own += [(e.composition.reduced_formula, fidelity, float(diagram.get_e_above_hull(e))) for e in mine]
        known += [(e.composition.reduced_formula, fidelity, float(diagram.get_e_above_hull(e))) for e in refs]
    return own + known


def residual_rows(errors: list[tuple[int, str, str, Any, float, float]], before: int) -> list[tuple[str, str, float]]:
    """(formula, fidelity, ensemble error) of each campaign result computed before round ``before``, from the
    campaign's :func:`_ledger_read.ensemble_errors` (computed once for all the asked rounds)."""
    return [(entry.composition.reduced_formula, fidelity, error)
            for number, _, fidelity, entry, error, _ in errors if number < before]


def campaign_rounds(campaign: Path, truth: dict[str, bool], rounds: list[int]) -> dict[str, Any]:
    from scipy.special import ndtr, ndtri

    from screener.policies import load_policy
    from screener.policies.composition_model import composition_gp_predictions, precision_blend

    db = open_ledger(campaign)
    references, jobs = references_and_results(campaign, db)
    all_errors = ensemble_errors(db, references, jobs)  # each result's error, on the hull of its own round
    formula = dict(db.execute("SELECT structure_id, formula FROM candidates WHERE role = 'candidate'"))
    policy = load_policy("expected-value")
    out: dict[str, Any] = {}
    for number in rounds:
        rows = db.execute("SELECT structure_id, e_hull_mean_ev_per_atom, e_hull_std_ev_per_atom, p_stable "
                          "FROM predictions WHERE round = ? AND fidelity = 'scan'", (number,)).fetchall()
        if not rows:
            continue
        done = [(sid, fid, entry) for r, sid, fid, entry in jobs if r < number]
        computed = {sid for sid, _, _ in done}
        rows = [r for r in rows if r[0] in formula and r[0] not in computed and r[0] in truth]
        ids = [r[0] for r in rows]
        mean = np.array([r[1] for r in rows], dtype=float)
        std = np.maximum(np.array([r[2] for r in rows], dtype=float), policy.acquisition.std_floor_ev_per_atom)
        p_model = np.array([r[3] for r in rows], dtype=float)
        state = SimpleNamespace(formulas=[formula[s] for s in ids], seed_rows=seed_rows(references, done),
                                n_campaign_seed_rows=len(done), round_index=number)
        gp, numbers = composition_gp_predictions(policy, state)
        gp_mean, gp_std = gp["scan"]
        thr = policy.acquisition.threshold_ev_per_atom
        y = np.array([truth[s] for s in ids])
        entry: dict[str, Any] = {"n_open": len(ids), "n_truly_stable_open": int(y.sum()),
                                 "n_computed_before": len(computed), **numbers,
                                 "ensemble": scores(y, p_model, mean),
                                 "gp_p": scores(y, ndtr((thr - gp_mean) / gp_std), mean),
                                 "gp_lcb": scores(y, -(gp_mean - gp_std), mean)}
        for w in BLEND_WEIGHTS:
            bm, bs = precision_blend(mean, std, gp_mean, gp_std, w)
            entry[f"blend_{w:g}"] = scores(y, ndtr((thr - bm) / bs), mean)
        z_m = ndtri(np.clip(p_model, 1e-9, 1 - 1e-9))
        z_g = (thr - gp_mean) / gp_std
        for a in POOL_WEIGHTS:
            entry[f"pool_{a:g}"] = scores(y, (1 - a) * z_m + a * z_g, mean)
        for k in SUM_WEIGHTS:
            entry[f"zsum_{k:g}"] = scores(y, z_m + k * z_g, mean)
        # the GP's latent (noise-free) sigma: its probits then say how sure it is of the composition's mean
        latent = np.sqrt(np.maximum(gp_std**2 - numbers["composition_gp_noise_variance"], 1e-12))
        for a in POOL_WEIGHTS:
            entry[f"pool_latent_{a:g}"] = scores(y, (1 - a) * z_m + a * (thr - gp_mean) / latent, mean)
        errors = residual_rows(all_errors, number)
        rstate = SimpleNamespace(formulas=state.formulas, seed_rows=errors, n_campaign_seed_rows=len(errors),
                                 round_index=number)
        resid, rnumbers = composition_gp_predictions(policy, rstate)
        if resid:
            r_mean, r_std = resid["scan"]
            noise = rnumbers["composition_gp_noise_variance"]
            r_latent = np.maximum(r_std**2 - noise, 0.0)
            entry["residual_gp_n_train"] = rnumbers["composition_gp_n_train"]
            entry["residual_gp_noise_sd"] = float(np.sqrt(noise))
            entry["residual_gp_mean_abs_shift"] = float(np.mean(np.abs(r_mean)))
            entry["residual_gp"] = scores(y, ndtr((thr - mean - r_mean) / std), mean)
            entry["residual_gp_var"] = scores(y, ndtr((thr - mean - r_mean) / np.sqrt(std**2 + r_latent)), mean)
        else:
            entry["residual_gp"] = entry["residual_gp_var"] = entry["ensemble"]
        out[str(number)] = entry
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("campaigns", type=Path, nargs="+", help="Finished campaign folders (each with its ledger).")
    p.add_argument("--rounds", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment
    from screener.world.io import read_world

    require_finished(p, args.campaigns)
    t0 = time.perf_counter()
    world = read_world(args.world)
    truth = {e.data["structure_id"]: float(e.data["e_above_hull"]) <= STABLE for e in world.entries["scan"]}
    per_campaign = {str(c): campaign_rounds(c, truth, args.rounds) for c in args.campaigns}
    methods = ["ensemble", "gp_p", "gp_lcb", *(f"blend_{w:g}" for w in BLEND_WEIGHTS),
               *(f"pool_{a:g}" for a in POOL_WEIGHTS), *(f"zsum_{k:g}" for k in SUM_WEIGHTS),
               *(f"pool_latent_{a:g}" for a in POOL_WEIGHTS), "residual_gp",
               "residual_gp_var"]
    totals: dict[str, Any] = {}
    for number in map(str, args.rounds):
        got = [v[number] for v in per_campaign.values() if number in v]
        if got:
            totals[number] = {"n_campaigns": len(got), **{m: {f"top_{k}": sum(g[m][f"top_{k}"] for g in got)
                                                             for k in TOP} for m in methods}}
    out = {"benchmark": "ranking_from_ledgers",
           "command": "python bench/ranking_from_ledgers.py " + " ".join(
               shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
           **bench_environment("cpu"),
           "world": {"dir": str(args.world), "elements": world.manifest.elements,
                     "label": "CHGNet stand-in labels, not DFT"},
           "definitions": {"open": "pool candidates with no result at either fidelity before the round",
                           "top_k": "truly SCAN-stable among the first k of the ranking",
                           "truth": "SCAN E_hull <= 1e-6 eV/atom on the world's own SCAN hull"},
           "totals_by_round": totals, "campaigns": per_campaign,
           "wall_s": round(time.perf_counter() - t0, 1)}
    return emit(out, args.output)


if __name__ == "__main__":
    main()
