"""Which route found the stable crystals: PBE screen then SCAN, or SCAN directly? Read from campaign ledgers.

For each campaign folder (a ``ledger.sqlite`` of a labelled world), every successful SCAN calculation of a pool
candidate is put on one of two routes: **screened** (the candidate had a successful PBE calculation in an earlier or
the same round) or **direct**. Per route it counts the SCAN runs and how many are truly SCAN-stable on the world's own
SCAN hull, and it counts the PBE screens, how many of them hold a truly SCAN-stable candidate and how many went on to
SCAN. The direct runs are also split by round (round 1 is bought on the initial model before any calibration data).
For ``expected-value`` ledgers the SCAN runs are also split by the decision's own route (``decisions.numbers_json``):
``cost_blind`` (the cost-blind share), ``after_pbe_screen`` (P from the PBE result) and ``per_unit_model`` (P from the
model, bought on finds per unit cost), each with its runs, truly stable, the actual cost spent and the mean P it was
bought on (``p_scan_stable``). With ``--by-candidate`` it also counts, per truly stable pool candidate, the
campaigns of each policy that found it or only screened it. With ``--site-classes 8,12,16`` every campaign (of any
policy) is also split by the cell size of its candidates: candidates, truly stable ones, SCAN runs and finds, and the
budget spent at each fidelity per class, which shows where a size-dependent cost sent the money.

Example
-------
    .venv/bin/python bench/routes_from_ledgers.py --world /tmp/worlds/NaTiVCrCuO_2500 \\
        /tmp/hbench3/campaign_runs_NaTiVCrCuO_2500/seed*/ev-nojoint-nolv_flat_b300 \\
        --output bench/results/routes_from_ledgers_NaTiVCrCuO.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import accepted_scan_decisions, decision_numbers, open_ledger  # noqa: E402
from _output import emit  # noqa: E402


def direct_runs_beside_capped_screens(db: Any, chemsys: dict[str, str], stable_true: dict[str, bool],
                                      cap: int) -> dict[str, int]:
    """Direct SCAN runs bought on the model's P (``per_unit_model``) in a round whose accepted PBE screens of the same
    chemical system had already reached ``cap`` (the preset's ``max_per_chemsys``) before them, and how many are truly
    stable: until 2026-12-03 the planner bought the SCAN option in place of a screen the cap stopped."""
    rows = db.execute("SELECT round, position, structure_id, fidelity, numbers_json FROM decisions WHERE accepted = 1 "
                      "ORDER BY round, position").fetchall()
    screens: Counter = Counter()
    current, runs, stable = None, 0, 0
    for number, _, sid, fidelity, raw in rows:
        if number != current:
            current, screens = number, Counter()
        key = chemsys.get(sid)
        if fidelity == "pbe":
            screens[key] += 1
            continue
        numbers = decision_numbers(raw)
        if (key is not None and screens[key] >= cap and numbers.get("p_scan_source") == "model"
                and numbers.get("route") != "cost_blind" and sid in stable_true):
            runs += 1
            stable += stable_true[sid]
    return {"runs": runs, "truly_stable": stable}


def site_class_labels(edges: list[int]) -> list[str]:
    """Labels of the cell-size classes cut at ``edges`` (upper bounds, sites): ``[8, 12]`` -> ``1-8, 9-12, 13+``."""
    lows = [1] + [e + 1 for e in edges]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"{lows[-1]}+"]


def by_cell_size(db: Any, stable_true: dict[str, bool], edges: list[int]) -> dict[str, dict[str, Any]]:
    """Per class of cell size (the ledger's ``n_sites`` of each pool candidate, classes cut at ``edges``): the
    candidates and how many are truly stable, the SCAN runs and how many are truly stable, and the budget spent
    on each fidelity. Under a size-dependent cost this says where a campaign's money and finds went."""
    import bisect

    labels = site_class_labels(edges)
    out = {k: {"candidates": 0, "truly_stable": 0, "scan_runs": 0, "scan_truly_stable": 0, "scan_cost": 0.0,
               "pbe_cost": 0.0} for k in labels}
    size = {}
    for sid, n_sites in db.execute("SELECT structure_id, n_sites FROM candidates WHERE role = 'candidate'"):
        size[sid] = labels[bisect.bisect_left(edges, int(n_sites))]
        out[size[sid]]["candidates"] += 1
        out[size[sid]]["truly_stable"] += bool(stable_true.get(sid))
    route = {sid: ("cost_blind" if n.get("route") == "cost_blind" else
                   "after_pbe_screen" if n.get("p_scan_source") == "pbe result" else "per_unit_model")
             for sid, n in accepted_scan_decisions(db) if "p_scan_stable" in n}
    for sid, fidelity, cost in db.execute("SELECT structure_id, fidelity, actual_cost FROM jobs WHERE state = 'done'"):
        if sid not in size:
            continue
        row = out[size[sid]]
        row[f"{fidelity}_cost"] = round(row[f"{fidelity}_cost"] + float(cost or 0.0), 6)
        if fidelity == "scan":
            row["scan_runs"] += 1
            row["scan_truly_stable"] += bool(stable_true.get(sid))
            if sid in route:  # expected-value ledgers: the SCAN runs by the route of the decision that bought them
                acc = row.setdefault("scan_by_route", {}).setdefault(route[sid], {"runs": 0, "truly_stable": 0,
                                                                                  "cost": 0.0})
                acc["runs"] += 1
                acc["truly_stable"] += bool(stable_true.get(sid))
                acc["cost"] = round(acc["cost"] + float(cost or 0.0), 6)
    return out


def cell_size_total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One class's :func:`by_cell_size` figures summed over campaigns (``scan_by_route`` route by route)."""
    out: dict[str, Any] = {f: round(sum(r[f] for r in rows), 6) for f in rows[0] if f != "scan_by_route"}
    for r in rows:
        for name, acc in r.get("scan_by_route", {}).items():
            total = out.setdefault("scan_by_route", {}).setdefault(name, {"runs": 0, "truly_stable": 0, "cost": 0.0})
            for f in total:
                total[f] = round(total[f] + acc[f], 6)
    return out


def routes(campaign: Path, stable_true: dict[str, bool], chemsys: dict[str, str] | None = None,
           cap: int = 3, site_edges: list[int] | None = None) -> dict[str, Any]:
    """Screens, follow-ups and direct SCAN runs of one campaign, with their truly stable counts (and, with
    ``site_edges``, its candidates, SCAN runs, finds and spend per class of cell size: :func:`by_cell_size`)."""
    db = open_ledger(campaign)
    beside_cap = direct_runs_beside_capped_screens(db, chemsys, stable_true, cap) if chemsys else None
    sizes = by_cell_size(db, stable_true, site_edges) if site_edges else None
    done = db.execute("SELECT structure_id, fidelity, round FROM jobs WHERE state = 'done'").fetchall()
    cost = {(s, f): c for s, f, c in db.execute("SELECT structure_id, fidelity, actual_cost FROM jobs "
                                                "WHERE state = 'done'")}
    by_route: dict[str, list[float]] = {}
    for sid, n in accepted_scan_decisions(db):
        p = n.get("p_scan_stable")
        if (sid, "scan") not in cost or sid not in stable_true or not isinstance(p, (int, float)):
            continue  # a competing phase, or a decision without expected-value numbers
        route = ("cost_blind" if n.get("route") == "cost_blind" else
                 "after_pbe_screen" if n.get("p_scan_source") == "pbe result" else "per_unit_model")
        acc = by_route.setdefault(route, [0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += stable_true[sid]
        acc[2] += float(cost[(sid, "scan")] or 0.0)
        acc[3] += float(p)
    pool = pool_candidates(db)
    db.close()
    pbe = {s: r for s, f, r in done if f == "pbe" and s in stable_true}
    scan = {s: r for s, f, r in done if f == "scan" and s in stable_true}
    followed = [s for s in scan if s in pbe and pbe[s] <= scan[s]]
    last_round = max([r for _, _, r in done], default=0)
    direct = [s for s in scan if s not in followed]
    by_round = Counter(scan[s] for s in direct)
    stable_by_round = Counter(scan[s] for s in direct if stable_true[s])
    return {
        "campaign": str(campaign),
        "pbe_screens": len(pbe),
        "pbe_screens_truly_scan_stable": sum(stable_true[s] for s in pbe),
        "screens_followed_by_scan": len(followed),
        "screened_scan_truly_stable": sum(stable_true[s] for s in followed),
        "screened_truly_scan_stable_never_scan": sum(stable_true[s] for s in pbe if s not in scan),
        "rounds": last_round,
        "pbe_screens_in_last_round": sum(1 for s in pbe if pbe[s] == last_round),
        "direct_scan": len(direct),
        "direct_scan_truly_stable": sum(stable_true[s] for s in direct),
        "direct_scan_by_round": {str(r): [by_round[r], stable_by_round[r]] for r in sorted(by_round)},
        "scan_by_decision_route": {r: {"runs": v[0], "truly_stable": v[1], "cost": round(v[2], 2),
                                       "mean_p_at_purchase": round(v[3] / v[0], 3)} for r, v in by_route.items()},
        **({"direct_scan_beside_capped_screens": beside_cap} if beside_cap is not None else {}),
        **({"by_cell_size": sizes} if sizes is not None else {}),
        "found_truly_stable": sorted(s for s in scan if stable_true[s]),
        "screened_truly_stable_not_found": sorted(s for s in pbe if stable_true[s] and s not in scan),
        **({"pool_truly_stable": sorted(s for s in pool if stable_true.get(s))} if pool is not None else {}),
    }


def pool_candidates(db: Any) -> list[str] | None:
    """The campaign's pool candidates (None for a ledger without a candidates table)."""
    try:
        return [s for (s,) in db.execute("SELECT structure_id FROM candidates WHERE role = 'candidate'")]
    except Exception:  # noqa: BLE001 - a hand-built ledger of jobs and decisions only
        return None


def by_candidate(campaigns: list[Path], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per truly stable pool candidate, in how many campaigns of each policy (a campaign folder's name up to its
    first ``_``) it was found (SCAN-computed) and in how many only screened: which finds every policy makes, and
    which none does."""
    policy = [c.name.split("_")[0] for c in campaigns]
    n = Counter(policy)
    ids = sorted({s for r in rows for key in ("pool_truly_stable", "found_truly_stable",
                                               "screened_truly_stable_not_found") for s in r.get(key, [])})
    out = {}
    for sid in ids:
        found = Counter(p for p, r in zip(policy, rows) if sid in r["found_truly_stable"])
        screened = Counter(p for p, r in zip(policy, rows) if sid in r["screened_truly_stable_not_found"])
        out[sid] = {"found": {p: found[p] for p in sorted(n)},
                    "screened_not_found": {p: screened[p] for p in sorted(n)}}
    return {"campaigns_per_policy": dict(sorted(n.items())), "candidates": out}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--tol", type=float, default=1e-6, help="SCAN E_hull (eV/atom) counted as stable.")
    p.add_argument("--max-per-chemsys", type=int, default=3,
                   help="The presets' PBE diversity cap per chemical system and round (for "
                        "direct_scan_beside_capped_screens).")
    p.add_argument("--site-classes", metavar="N,N,...",
                   help="Upper bounds (sites) of cell-size classes, e.g. 8,12,16: adds each campaign's candidates, "
                        "SCAN runs, finds and spend per class (by_cell_size) and their sum over the campaigns.")
    p.add_argument("--by-candidate", action="store_true",
                   help="Add, per truly stable pool candidate, in how many campaigns of each policy it was found "
                        "or only screened (by_candidate; the policy is the folder name up to its first '_').")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment, load_world_data
    from screener.world.io import read_world

    data = load_world_data(args.world, n_jobs=1)
    stable_true = {s: bool(v <= args.tol) for s, v in zip(data.structure_ids, data.labels[("scan", "e_above_hull")])}
    chemsys = {e.data["structure_id"]: e.structure.composition.chemical_system
               for e in read_world(args.world, fidelities=["pbe"]).entries["pbe"]}
    edges = sorted({int(v) for v in args.site_classes.split(",")}) if args.site_classes else None
    campaigns = [c for c in args.campaigns if (c / "ledger.sqlite").is_file()]
    rows = [routes(c, stable_true, chemsys, args.max_per_chemsys, edges) for c in campaigns]

    def share(found: str, n: str) -> float | None:
        total = sum(r[n] for r in rows)
        return round(sum(r[found] for r in rows) / total, 3) if total else None

    out = {
        "benchmark": "routes_from_ledgers",
        "command": "python bench/routes_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "definitions": {"screened": "SCAN run of a candidate with a PBE result from the same or an earlier round",
                        "direct": "any other SCAN run of a pool candidate",
                        "truly stable": f"SCAN E_hull <= {args.tol} on the world's own SCAN hull",
                        "direct_scan_by_round": "round: [direct SCAN runs, truly stable]",
                        "screened_truly_scan_stable_never_scan": "PBE-screened, truly SCAN-stable, never SCAN-computed",
                        "pbe_screens_in_last_round": "screens of the campaign's last round (no SCAN can follow them)",
                        "scan_by_decision_route": "expected-value only: SCAN runs by the route of the decision that "
                                                  "bought them; cost in the campaign's budget unit",
                        "by_cell_size": "per class of cell size (pool candidates' sites): candidates, truly "
                                        "stable ones, SCAN runs, truly stable SCAN runs, budget spent per fidelity",
                        "direct_scan_beside_capped_screens": "expected-value only: SCAN runs bought on the model's P "
                                                             "in a round whose PBE screens of the same chemical "
                                                             "system had reached --max-per-chemsys before them"},
        "campaigns": rows,
        **({"by_cell_size_total": {k: cell_size_total([r["by_cell_size"][k] for r in rows])
                                   for k in site_class_labels(edges)}} if edges and rows else {}),
        **({"by_candidate": by_candidate(campaigns, rows)} if args.by_candidate else {}),
        "screened_scan_stable_share": share("screened_scan_truly_stable", "screens_followed_by_scan"),
        "direct_scan_stable_share": share("direct_scan_truly_stable", "direct_scan"),
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
