"""How right was P(SCAN-stable | PBE E_hull)? The PBE -> SCAN relation against outcomes, read from ledgers.

For each campaign folder, every accepted SCAN decision that the expected-value policy valued by the candidate's PBE
result (``p_scan_source: "pbe result"``) is put in a bin of the PBE E_hull it was valued at (0: on the PBE hull).
Per bin: the decisions, the mean ``q`` of the relation (``p_scan_stable / competitor_survival``), the mean
``p_scan_stable`` (``q`` times the competitor survival) and the share that is truly SCAN-stable on the world's own
SCAN hull. Beside them, the world's own labels in the same bins: P(SCAN-stable | PBE E_hull), both on the world's
full hulls (what the relation would see if every structure were computed).

Example
-------
    .venv/bin/python bench/relation_from_ledgers.py --world /tmp/worlds/LiMnFeCoNiO_2500 \\
        /tmp/hnew8/campaign_runs_LiMnFeCoNiO_2500/seed*/ev-requeue_flat_b300* \\
        --output bench/results/relation_from_ledgers_LiMnFeCoNiO.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import bisect
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _ledger_read import accepted_scan_decisions, open_ledger  # noqa: E402
from _output import emit  # noqa: E402

#: Upper edges of the PBE E_hull bins (eV/atom) after the on-hull bin; the last bin is open.
EDGES = (0.01, 0.02, 0.05, 0.1, 0.2)
ON_HULL = 1e-6


def _bin_names() -> list[str]:
    lows = (0.0,) + EDGES
    return ["0 (on the PBE hull)"] + [f"({lo:g}, {hi:g}]" for lo, hi in zip(lows, EDGES)] + [f"> {EDGES[-1]:g}"]


def _bin(x: float) -> int:
    return 0 if x <= ON_HULL else 1 + bisect.bisect_left(EDGES, x)


def decisions_by_bin(campaigns: list[Path], stable_true: dict[str, bool]) -> list[dict[str, Any]]:
    """Per bin of PBE E_hull: SCAN decisions valued on a PBE result, their mean q and P, and the truly stable share."""
    acc = [[0, 0.0, 0.0, 0] for _ in _bin_names()]
    for campaign in campaigns:
        db = open_ledger(campaign)
        for sid, n in accepted_scan_decisions(db):
            x, p = n.get("pbe_e_hull_ev_per_atom"), n.get("p_scan_stable")
            if n.get("p_scan_source") != "pbe result" or sid not in stable_true or not isinstance(x, (int, float)):
                continue
            survival = max(float(n.get("competitor_survival") or 1.0), 1e-9)
            a = acc[_bin(float(x))]
            a[0] += 1
            a[1] += float(p) / survival
            a[2] += float(p)
            a[3] += stable_true[sid]
        db.close()
    return [{"bin_pbe_e_hull_ev_per_atom": name, "decisions": a[0],
             "mean_q_relation": round(a[1] / a[0], 3) if a[0] else None,
             "mean_p_scan_stable": round(a[2] / a[0], 3) if a[0] else None,
             "truly_scan_stable_share": round(a[3] / a[0], 3) if a[0] else None}
            for name, a in zip(_bin_names(), acc)]


def world_by_bin(pbe_e_hull: np.ndarray, scan_stable: np.ndarray) -> list[dict[str, Any]]:
    """P(SCAN-stable | PBE E_hull bin) over every structure of the world, both on the world's own hulls."""
    bins = np.array([_bin(float(x)) for x in pbe_e_hull])
    return [{"bin_pbe_e_hull_ev_per_atom": name, "structures": int((bins == k).sum()),
             "scan_stable_share": round(float(scan_stable[bins == k].mean()), 3) if (bins == k).any() else None}
            for k, name in enumerate(_bin_names())]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--tol", type=float, default=1e-6, help="SCAN E_hull (eV/atom) counted as stable.")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment, load_world_data

    data = load_world_data(args.world, n_jobs=1)
    scan = np.asarray(data.labels[("scan", "e_above_hull")], float)
    stable_true = {s: bool(v <= args.tol) for s, v in zip(data.structure_ids, scan)}
    campaigns = [c for c in args.campaigns if (c / "ledger.sqlite").is_file()]
    out = {
        "benchmark": "relation_from_ledgers",
        "command": "python bench/relation_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "world": str(args.world),
        "campaigns": [str(c) for c in campaigns],
        "definitions": {"decisions": "accepted SCAN decisions valued on the candidate's PBE result, binned by the "
                                     "PBE E_hull (current campaign hull) they were valued at",
                        "mean_q_relation": "the PBE -> SCAN relation's P(SCAN-stable | PBE E_hull)",
                        "mean_p_scan_stable": "q times the competitor survival: the P the decision was bought on",
                        "truly_scan_stable_share": f"share with SCAN E_hull <= {args.tol} on the world's own hull",
                        "world": "every structure of the world, PBE E_hull and SCAN stability on the world's hulls"},
        "decisions_by_bin": decisions_by_bin(campaigns, stable_true),
        "world_by_bin": world_by_bin(np.asarray(data.labels[("pbe", "e_above_hull")], float), scan <= args.tol),
    }
    return emit(out, args.output)


if __name__ == "__main__":
    main()
