"""One round of an ``expected-value`` campaign, recomputed from its ledger: the numbers behind docs/policy.md's worked
example, and a check that the recorded numbers explain the decisions.

For the chosen candidates of one round, the script reads what the ledger recorded when the round was planned (the
round's ``policy`` event: outcome calibration, composition-GP pool weight, PBE -> SCAN relation, ``lambda``; each
candidate's ``decisions.numbers_json``: competitor survival, GP predictions, rates; its ``predictions`` rows: the
ensemble's E_hull mean and calibrated sigma at both fidelities) and recomputes the candidate's ``p``, the PBE route's
``P(go)`` and expected finds ``F``, and both rates with the library's own functions
(:class:`~screener.policies.outcome_calibration.OutcomeCalibration`,
:func:`~screener.policies.composition_model.probit_pool`,
:class:`~screener.policies.expected_value.PbeScanRelation`, :func:`~screener.policies.expected_value.pbe_route`).
Each step's value is printed, with the largest difference between a recomputed and a recorded number
(``max_abs_difference``; rounding only, if the ledger explains the decision). What came of each candidate (its
calculations, each result's E_hull on the campaign's hull once its round was done, and with ``--world`` its E_hull on
the world's own hulls and whether it is truly SCAN-stable) is added.

It covers the default preset with equal costs (no cost classes, no cell-size term, no cost-blind share, the
learning value not added); a round that used any of those is refused rather than half explained.

Example (the worked example of docs/policy.md)::

    .venv/bin/python bench/worked_example.py /tmp/prof37/profile_runs_LiMnFeCoNiO_2500/expected-value_seed0_cprof \\
        --round 3 --ids hyp-67ffdc691aa7 hyp-86711c7b1132 hyp-0270272ad998 --world /tmp/worlds/LiMnFeCoNiO_2500 \\
        --campaign-command "..." --output bench/results/worked_example_LiMnFeCoNiO_flat_seed0_round3.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import decision_numbers, open_ledger, references_and_results  # noqa: E402
from _output import emit  # noqa: E402

#: decision numbers recomputed here, compared with the recorded ones
CHECKED = ("p_scan_stable", "p_go_scan_after_pbe", "q_pbe_route_finds", "rate_scan_per_cpu_hour",
           "rate_pbe_per_cpu_hour")
#: decision numbers shown as recorded
SHOWN = ("p_scan_source", "p_scan_model_raw", "competitor_survival", "pbe_e_hull_ev_per_atom", "lambda_per_cpu_hour",
         "cost_scan_cpu_hours", "cost_pbe_cpu_hours", "learning_value_scan", "learning_value_added",
         "composition_gp_scan_mean_ev_per_atom", "composition_gp_scan_std_ev_per_atom",
         "composition_gp_pbe_mean_ev_per_atom", "composition_gp_pbe_std_ev_per_atom")


def round_numbers(db: Any, round_number: int) -> dict[str, Any]:
    """The numbers the round's ``policy`` event recorded."""
    row = db.execute("SELECT data_json FROM events WHERE kind = 'policy' AND round = ?", (round_number,)).fetchone()
    if row is None:
        raise SystemExit(f"round {round_number}: no policy event in this ledger")
    return decision_numbers(row[0])


def stable_threshold(db: Any) -> float:
    """The campaign's stable threshold (eV/atom), from the ``config`` its ledger keeps: the planner's P(stable) are
    P(E_hull <= it). 0, the default, where the ledger has none."""
    row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    config = json.loads(row[0]) if row else {}
    return float(config.get("stable_threshold_ev_per_atom") or 0.0)


def explain_candidate(db: Any, round_number: int, sid: str, rn: dict[str, Any], thr: float = 0.0
                      ) -> dict[str, Any]:
    """Recompute one candidate's options from the recorded inputs (module docstring); ``thr``: the campaign's
    stable threshold (:func:`stable_threshold`)."""
    from screener.policies.composition_model import probit_pool
    from screener.policies.expected_value import PbeScanRelation, pbe_route
    from screener.policies.outcome_calibration import OutcomeCalibration

    row = db.execute("SELECT fidelity, reason, accepted, numbers_json FROM decisions WHERE round = ? AND "
                     "structure_id = ? ORDER BY position LIMIT 1", (round_number, sid)).fetchone()
    if row is None:
        raise SystemExit(f"round {round_number}: no decision on {sid}")
    fidelity, reason, accepted, raw = row
    nums = decision_numbers(raw)
    pred = {f: (m, s) for f, m, s in db.execute(
        "SELECT fidelity, e_hull_mean_ev_per_atom, e_hull_std_ev_per_atom FROM predictions WHERE round = ? AND "
        "structure_id = ?", (round_number, sid))}
    steps: dict[str, Any] = {"ensemble_scan_e_hull": pred.get("scan"), "ensemble_pbe_e_hull": pred.get("pbe"),
                             "p_scan_model_raw_recomputed": float(ndtr((thr - pred["scan"][0]) / pred["scan"][1]))}
    # the outcome maps (one per fidelity), then the composition-GP pool: the Gaussians the options are valued with
    mu, sd = {}, {}
    weight = float(rn.get("composition_pool_weight") or 0.0)
    for f in ("scan", "pbe"):
        cal = OutcomeCalibration(a=rn[f"outcome_calibration_{f}_a"], b=rn[f"outcome_calibration_{f}_b"])
        m, s = cal.calibrate_gaussian(np.array([pred[f][0]]), np.array([pred[f][1]]))
        steps[f"p_{f}_after_outcome_map"] = float(ndtr((thr - m[0]) / s[0]))
        gp_mean = nums.get(f"composition_gp_{f}_mean_ev_per_atom")
        gp_std = nums.get(f"composition_gp_{f}_std_ev_per_atom")
        if gp_mean is not None:
            steps[f"p_{f}_composition_gp"] = float(ndtr((thr - gp_mean) / gp_std))
            m, s = probit_pool(m, s, np.array([gp_mean]), np.array([gp_std]), weight, thr)
        steps[f"p_{f}_pooled"] = float(ndtr((thr - m[0]) / s[0]))
        mu[f], sd[f] = m, s
    relation = PbeScanRelation(rn["pbe_scan_c0"], rn["pbe_scan_c1_per_ev_per_atom"], int(rn["pbe_scan_n_pairs"]),
                               "recorded", c_hull=rn["pbe_scan_c_hull"],
                               c_below=rn.get("pbe_scan_c_below_per_ev_per_atom", 0.0),
                               signed=bool(rn.get("pbe_scan_signed_depth")))
    survival = 1.0 if nums.get("competitor_survival") is None else float(nums["competitor_survival"])  # None: off
    c_s, c_p = float(nums["cost_scan_cpu_hours"]), float(nums["cost_pbe_cpu_hours"])
    lam = float(nums["lambda_per_cpu_hour"])
    pbe_x = nums.get("pbe_e_hull_ev_per_atom")
    if pbe_x is not None:  # screened: the relation on its PBE result; SCAN is its only option
        steps["q_of_pbe_result"] = float(relation.p_scan_stable(np.array([pbe_x]))[0])
        p = steps["q_of_pbe_result"] * survival
        recomputed = {"p_scan_stable": p, "rate_scan_per_cpu_hour": p / c_s}
    else:  # the model's P, at most the PBE view (what the screen would find were SCAN always to follow); the route
        steps["p_model_times_survival"] = steps["p_scan_pooled"] * survival
        steps["pbe_view"] = float(pbe_route(relation, mu["pbe"], sd["pbe"], np.zeros(1))[1][0]) * survival
        p = min(steps["p_model_times_survival"], steps["pbe_view"])
        steps["go_threshold_on_q"] = lam * c_s / max(survival, 1e-9)
        p_go, finds = pbe_route(relation, mu["pbe"], sd["pbe"], np.array([steps["go_threshold_on_q"]]))
        p_go, finds = float(p_go[0]), float(finds[0]) * survival
        recomputed = {"p_scan_stable": p, "p_go_scan_after_pbe": p_go, "q_pbe_route_finds": finds,
                      "rate_scan_per_cpu_hour": p / c_s, "rate_pbe_per_cpu_hour": finds / (c_p + c_s * p_go)}
    diffs = {k: abs(recomputed[k] - float(nums[k])) for k in recomputed if k in nums}
    later = [{"round": r, "fidelity": f, "state": st} for r, f, st in db.execute(
        "SELECT round, fidelity, state FROM jobs WHERE structure_id = ? AND role = 'candidate' ORDER BY round", (sid,))]
    return {"structure_id": sid, "decision": fidelity, "accepted": bool(accepted), "reason": reason,
            "recorded": {k: nums[k] for k in (*CHECKED, *SHOWN) if k in nums},
            "steps": steps, "recomputed": recomputed, "max_abs_difference": max(diffs.values()) if diffs else None,
            "calculations": later}


def result_e_hull(references: dict[str, list[Any]], results: list[tuple[int, str, str, Any]], sid: str
                  ) -> dict[str, float]:
    """E_hull of each of the candidate's results on the campaign's hull of that fidelity once its round was done
    (the references and the results of that round and the earlier ones, :func:`references_and_results`), eV/atom."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    out = {}
    for number, s, fidelity, entry in results:
        if s != sid:
            continue
        elements = set(entry.composition.elements)
        known = [e for e in references[fidelity] if set(e.composition.elements) <= elements]
        done = [e for r, _, f, e in results
                if f == fidelity and r <= number and set(e.composition.elements) <= elements]
        out[fidelity] = float(PhaseDiagram(known + done).get_e_above_hull(entry, allow_negative=True))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaign", type=Path, help="Campaign folder (its ledger.sqlite) of an expected-value campaign.")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--ids", nargs="+", required=True, help="Candidates decided on in that round.")
    p.add_argument("--world", type=Path, help="The labelled world: say which of them are truly SCAN-stable.")
    p.add_argument("--tol", type=float, default=1e-6, help="SCAN E_hull (eV/atom) counted as stable.")
    p.add_argument("--campaign-command", help="How the campaign was made (recorded as given).")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    db = open_ledger(args.campaign)
    rn = round_numbers(db, args.round)
    if rn.get("kind") != "expected-value":
        raise SystemExit(f"round {args.round} was planned by {rn.get('kind')!r}, not expected-value")
    unexplained = [k for k in ("ev_cost_blind_share", "pbe_scan_c_sites_per_ln_sites",
                               "outcome_calibration_cost_classes") if rn.get(k)]
    if rn.get("ev_learning_value_added"):
        unexplained.append("the learning value added to the rates")
    if unexplained:
        raise SystemExit(f"round {args.round} used {', '.join(unexplained)}: not covered by this script")
    keys = ("round_budget_cpu_hours", "ev_lambda_per_cpu_hour", "ev_n_scan_chosen", "ev_n_pbe_chosen", "ev_picks_left",
            "ev_learning_value_scan", "ev_learning_value_added", "ev_follow_ups_reserved_cpu_hours", "n_scan_planned",
            "n_pbe_planned", "pbe_scan_n_pairs", "pbe_scan_c_hull", "pbe_scan_p_stable_if_pbe_stable", "pbe_scan_c0",
            "pbe_scan_c1_per_ev_per_atom", "pbe_scan_p_stable_just_above_hull", "outcome_calibration_scan_a",
            "outcome_calibration_scan_b", "outcome_calibration_scan_n_purchases", "outcome_calibration_pbe_a",
            "outcome_calibration_pbe_b", "outcome_calibration_pbe_n_purchases", "outcome_calibration_pbe_n_stable",
            "composition_pool_weight", "composition_pool_n", "composition_pool_loglik_gain", "composition_gp_n_train",
            "competitor_plausible", "competitor_overall_survival", "competitor_from_pbe_results", "calibration")
    thr = stable_threshold(db)
    out: dict[str, Any] = {
        "benchmark": "worked_example",
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "campaign": str(args.campaign), "campaign_command": args.campaign_command, "round": args.round,
        "stable_threshold_ev_per_atom": thr,
        "round_numbers": {k: rn[k] for k in keys if k in rn},
        "candidates": [explain_candidate(db, args.round, sid, rn, thr) for sid in args.ids],
    }
    references, results = references_and_results(args.campaign, db)  # read once for every candidate
    for c in out["candidates"]:
        c["result_e_hull_on_campaign_hull_ev_per_atom"] = result_e_hull(references, results, c["structure_id"])
    if args.world:
        from screener.world.experiments import load_world_data

        data = load_world_data(args.world, n_jobs=1)
        scan_e_hull = dict(zip(data.structure_ids, data.labels[("scan", "e_above_hull")]))
        pbe_e_hull = dict(zip(data.structure_ids, data.labels[("pbe", "e_above_hull")]))
        for c in out["candidates"]:
            sid = c["structure_id"]
            c["world"] = {"scan_e_hull_ev_per_atom": float(scan_e_hull[sid]), "pbe_e_hull_ev_per_atom":
                          float(pbe_e_hull[sid]), "truly_scan_stable": bool(scan_e_hull[sid] <= args.tol)}
    out["max_abs_difference"] = max((c["max_abs_difference"] or 0.0) for c in out["candidates"])
    return emit(out, args.output)


if __name__ == "__main__":
    main()
