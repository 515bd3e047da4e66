"""Does a screened candidate's PBE result, read on the campaign's SCAN hull, say whether its SCAN follow-up finds?

For every SCAN follow-up in `expected-value` ledgers (a SCAN run of a pool candidate whose PBE result came in an
earlier round), this reads what the campaign knew when it bought it: the PBE E_hull ``x_pbe`` on its PBE hull then
(the known phases and the PBE results of earlier rounds), the P it was bought on (``p_scan_stable``), and ``x_s``, the
PBE formation energy carried to SCAN by the fidelity shift (:func:`screener.policies.scan_hull_map.fit_fidelity_shift`
on the known set's pairs and the campaign's pairs of earlier rounds) measured against its SCAN hull then (the known
phases and the SCAN results of earlier rounds), as ``scan_hull_map`` reads it. It then counts, per bin of ``x_s``,
the follow-ups and how many are truly SCAN-stable on the world's own hull, for those on the PBE hull
(``x_pbe <= 1 meV/atom``: the relation gives them all one ``q``) and for all, and fits the map
``Phi(a + Phi^-1(p) - k x_s)`` on the truth (:func:`screener.policies.scan_hull_map.fit_scan_hull_map`, its prior).

Example
-------
    .venv/bin/python bench/scan_hull_from_ledgers.py --world /tmp/worlds/MgMnFeCrVS_2500 \\
        /tmp/hmm35/campaign_runs_MgMnFeCrVS_2500/seed*/ev-nosurv38_flat_b300* \\
        --output bench/results/scan_hull_from_ledgers_MgMnFeCrVS.json

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

BINS = ((-np.inf, -0.1), (-0.1, -0.05), (-0.05, 0.0), (0.0, 0.05), (0.05, 0.1), (0.1, np.inf))
ON_PBE_HULL = 1e-3


def follow_ups(campaign: Path, truth: dict[str, bool]) -> list[dict[str, Any]]:
    """``x_pbe``, ``x_s``, ``p`` and truly stable of each SCAN follow-up of a PBE screen in one campaign."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from screener.hull.phase_diagram import hull_formation_energy_per_atom
    from screener.policies.scan_hull_map import atomic_fractions as fractions
    from screener.policies.scan_hull_map import fit_fidelity_shift

    db = open_ledger(campaign)
    references, results = references_and_results(campaign, db)
    ref_pd = {f: PhaseDiagram(references[f]) for f in ("pbe", "scan")}
    pbe_ref = {e.data.get("structure_id"): e for e in references["pbe"] if len(e.composition.elements) > 1}
    known = [(fractions(p.composition), ref_pd["scan"].get_form_energy_per_atom(s)
              - ref_pd["pbe"].get_form_energy_per_atom(p))
             for s in references["scan"] if (p := pbe_ref.get(s.data.get("structure_id"))) is not None]
    first = {}  # (structure, fidelity) -> (round, entry)
    for number, sid, fidelity, entry in results:
        first.setdefault((sid, fidelity), (number, entry))
    decisions = {sid: decision_numbers(raw) for sid, raw in db.execute(
        "SELECT structure_id, numbers_json FROM decisions WHERE accepted = 1 AND fidelity = 'scan'")}
    out, diagrams = [], {}
    for (sid, fidelity), (number, _) in sorted(first.items(), key=lambda kv: kv[1][0]):
        screen = first.get((sid, "pbe"))
        if fidelity != "scan" or sid not in truth or screen is None or screen[0] >= number:
            continue
        if number not in diagrams:
            before = {f: [e for r, _, g, e in results if g == f and r < number] for f in ("pbe", "scan")}
            pds = {f: PhaseDiagram(references[f] + before[f]) for f in ("pbe", "scan")}
            own = [(fractions(first[(s, "pbe")][1].composition),
                    pds["scan"].get_form_energy_per_atom(e) - pds["pbe"].get_form_energy_per_atom(first[(s, "pbe")][1]))
                   for r, s, g, e in results if g == "scan" and r < number and (s, "pbe") in first
                   and first[(s, "pbe")][0] < number]
            shift = fit_fidelity_shift([f for f, _ in known + own], [d for _, d in known + own])
            diagrams[number] = (pds, shift)
        pds, shift = diagrams[number]
        pbe = screen[1]
        e_form = pds["pbe"].get_form_energy_per_atom(pbe) + shift(fractions(pbe.composition))
        x_pbe = float(pds["pbe"].get_e_above_hull(pbe, allow_negative=True))
        x_s = e_form - hull_formation_energy_per_atom(pds["scan"], pbe.composition)
        out.append({"x_pbe": max(x_pbe, 0.0), "x_s": x_s,
                    "p": float(decisions.get(sid, {}).get("p_scan_stable", np.nan)), "stable": truth[sid]})
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per bin of ``x_s``: follow-ups, truly stable and the mean P they were bought on; the map fitted on the truth;
    and the area under the ROC curve of ``-x_s`` and of ``p`` (0.5: no better than chance)."""
    from scipy.stats import mannwhitneyu

    from screener.policies.scan_hull_map import fit_scan_hull_map

    x = np.array([r["x_s"] for r in rows], float)
    p = np.array([r["p"] for r in rows], float)
    y = np.array([r["stable"] for r in rows], bool)
    bins = []
    for lo, hi in BINS:
        m = (x > lo) & (x <= hi)
        bins.append({"x_s_ev_per_atom": [None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi],
                     "n": int(m.sum()), "truly_stable": int(y[m].sum()),
                     "mean_p_at_purchase": float(np.nanmean(p[m])) if m.any() else None})

    def auc(score: np.ndarray) -> float | None:
        ok = np.isfinite(score)
        if y[ok].all() or not y[ok].any():
            return None
        return float(mannwhitneyu(score[ok & y], score[ok & ~y]).statistic / ((ok & y).sum() * (ok & ~y).sum()))

    fitted = fit_scan_hull_map(np.where(np.isfinite(p), p, 0.5), x, y, fit_level=True)
    return {"n": len(rows), "truly_stable": int(y.sum()), "bins": bins, "auc_minus_x_s": auc(-x),
            "auc_p_at_purchase": auc(p), "map_on_truth": fitted.numbers()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--tol", type=float, default=1e-6, help="SCAN E_hull (eV/atom) counted as stable.")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    campaigns = [c for c in args.campaigns if c.is_dir()]  # a glob of campaign folders also matches their score files
    require_finished(p, campaigns)
    from screener.world.experiments import bench_environment, load_world_data

    data = load_world_data(args.world, n_jobs=1)
    truth = {s: float(v) <= args.tol for s, v in zip(data.structure_ids, data.labels[("scan", "e_above_hull")])}
    rows = [r for c in campaigns for r in follow_ups(c, truth)]
    on_hull = [r for r in rows if r["x_pbe"] <= ON_PBE_HULL]
    out = {
        "benchmark": "scan_hull_from_ledgers",
        "command": "python bench/scan_hull_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "campaigns": [str(c) for c in campaigns],
        "n_campaigns": len(campaigns),
        "definitions": {
            "follow-up": "SCAN run of a pool candidate whose PBE result came in an earlier round",
            "x_s": "PBE E_form + fitted SCAN - PBE shift, minus the SCAN hull's E_form, on the hulls of the round "
                   "it was bought in (eV/atom)",
            "on_pbe_hull": f"x_pbe <= {ON_PBE_HULL} eV/atom (the relation gives all of them one q)",
            "truly stable": f"SCAN E_hull <= {args.tol} eV/atom on the world's own SCAN hull",
            "map_on_truth": "Phi(a + Phi^-1(p) - k (x_s - x_ref)) fitted on the truly stable, level a too (prior "
                            "as scan_hull_map)"},
        "on_pbe_hull": summarise(on_hull) if on_hull else {"n": 0},
        "all": summarise(rows) if rows else {"n": 0},
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
