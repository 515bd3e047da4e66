"""Calibration of campaigns' predictions, read from their ledgers: share of prospective errors within 1 and 2 sigma.

For every campaign folder given (or found under ``--root``), each finished round's ``info`` holds the shares of that
round's new prospective errors (predictions recorded before the purchase, against the results) within 1 and 2 of the
raw ensemble sigma and of the calibrated sigma the round ranked with (``within_1_sigma_raw_scan``,
``within_1_sigma_calibrated_scan``, ...) and how many errors there were (``n_scan_measured``). Pooled over rounds and
campaigns, weighted by those counts. Round 1 ranks with the initial model's scale only (no campaign errors yet).

With ``--replay`` the calibration is also recomputed as the CURRENT code would fit it before each round
(:func:`replayed_calibration`: the same refit on the ledger's prospective errors of earlier rounds, priors and
borrowed-SCAN shift), and each round's errors are measured against it: only the calibration is replayed (the models'
predictions are the ledger's; the policy's choices, which depend on the calibrated sigma, are the recorded ones).

Example
-------
    .venv/bin/python bench/calibration_from_ledgers.py --root /tmp/h12/bench --output bench/results/x.json
    .venv/bin/python bench/calibration_from_ledgers.py --root /tmp/h12/bench --replay --output bench/results/y.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _output import emit  # noqa: E402


def pooled(campaigns: list[Path]) -> dict:
    from screener.campaign.ledger import Ledger

    out: dict = {}
    for fidelity in ("pbe", "scan"):
        sums = {"n": 0, "raw1": 0.0, "raw2": 0.0, "cal1": 0.0, "cal2": 0.0}
        after_round1 = dict(sums)
        for camp in campaigns:
            with Ledger.in_dir(camp, read_only=True) as ledger:
                for row in ledger.rounds():
                    info = row.get("info") or {}
                    n = info.get(f"n_{fidelity}_measured") or 0
                    if not n or info.get(f"within_1_sigma_raw_{fidelity}") is None:
                        continue
                    for acc in (sums, after_round1) if row["round"] > 1 else (sums,):
                        acc["n"] += n
                        acc["raw1"] += n * info[f"within_1_sigma_raw_{fidelity}"]
                        acc["raw2"] += n * info[f"within_2_sigma_raw_{fidelity}"]
                        acc["cal1"] += n * info[f"within_1_sigma_calibrated_{fidelity}"]
                        acc["cal2"] += n * info[f"within_2_sigma_calibrated_{fidelity}"]

        def shares(acc: dict) -> dict:
            n = acc["n"]
            return {"n_errors": n, **({k: round(acc[k] / n, 3) for k in ("raw1", "raw2", "cal1", "cal2")} if n else {})}

        out[fidelity] = {"all_rounds": shares(sums), "rounds_2_on": shares(after_round1)}
    return out


def replayed_calibration(campaign: Path) -> dict:
    """Per fidelity and round: the errors of that round against the sigma the current code would rank with.

    Returns ``{fidelity: [(round, n, within_1, within_2), ...]}``.
    """
    import numpy as np

    from screener.campaign.config import CampaignConfig
    from screener.campaign.ensemble_model import read_spread_calibration
    from screener.campaign.hulls import CampaignHulls
    from screener.campaign.ledger import Ledger
    from screener.campaign.ranking import prospective_errors, spread_calibration
    from screener.policies.calibration import coverage

    hulls = CampaignHulls.from_file(campaign / "references.json")
    out: dict = {"pbe": [], "scan": []}
    with Ledger.in_dir(campaign, read_only=True) as ledger:
        config = ledger.get_meta("config", {}) or {}
        prior = read_spread_calibration(config.get("model")).get("pbe", 1.0)
        # the current code's exponent prior: the ledger's, else today's default (older ledgers have none)
        exponent = config.get("spread_exponent_prior", CampaignConfig.model_fields["spread_exponent_prior"].default)
        targets: dict = {"pbe": {}, "scan": {}}
        for job in ledger.jobs(states=["done"]):
            entry = (job.result or {}).get("entry")
            if entry and job.fidelity in targets:
                value = hulls.e_form_ev_per_atom(job.fidelity, entry)
                if np.isfinite(value):
                    targets[job.fidelity][job.structure_id] = float(value)
        models = ledger.models()
        for row in ledger.rounds():
            number = row["round"]
            # as Campaign._spread_calibration does before ranking round `number`
            pbe = spread_calibration(ledger, targets, "pbe", number, prior_scale=prior, exponent_prior=exponent)
            borrowed = not any(m["fidelity"] == "scan" and m["round"] < number for m in models)
            cal = {"pbe": pbe, "scan": spread_calibration(
                ledger, targets, "scan", number, prior_scale=pbe.scale, debias=borrowed,
                exponent_prior=None if exponent is None else pbe.exponent)}
            for fidelity in ("pbe", "scan"):
                err, raw, _ = prospective_errors(ledger, targets, fidelity, [number])
                if err.size == 0:
                    continue
                shifted = borrowed and fidelity == "scan"
                shift = cal[fidelity].bias_ev_per_atom if shifted else 0.0
                w1, w2 = coverage(err - shift, cal[fidelity].calibrated_std(np.maximum(raw, 1e-3), shifted=shifted))
                out[fidelity].append((number, int(err.size), w1, w2))
    return out


def pooled_replay(campaigns: list[Path]) -> dict:
    """:func:`replayed_calibration` pooled over campaigns (shares weighted by the number of errors)."""
    per = {c: replayed_calibration(c) for c in campaigns}
    out: dict = {}
    for fidelity in ("pbe", "scan"):
        res = {}
        for name, first in (("all_rounds", 1), ("rounds_2_on", 2)):
            rows = [r for c in campaigns for r in per[c][fidelity] if r[0] >= first]
            n = sum(r[1] for r in rows)
            res[name] = {"n_errors": n, **({"cal1": round(sum(r[1] * r[2] for r in rows) / n, 3),
                                             "cal2": round(sum(r[1] * r[3] for r in rows) / n, 3)} if n else {})}
        out[fidelity] = res
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="*", type=Path)
    p.add_argument("--root", type=Path, help="Find every ledger.sqlite below this folder.")
    p.add_argument("--output", type=Path)
    p.add_argument("--replay", action="store_true",
                   help="Also recompute each round's calibration with the current code (replayed_calibration).")
    args = p.parse_args(argv)
    from screener.world.experiments import bench_environment

    campaigns = list(args.campaigns)
    if args.root:
        campaigns += sorted(d.parent for d in args.root.rglob("ledger.sqlite"))
    by_policy: dict[str, list[Path]] = {}
    for c in campaigns:
        by_policy.setdefault(c.name.split("_")[0], []).append(c)
    out = {
        "benchmark": "calibration_from_ledgers",
        "command": "python bench/calibration_from_ledgers.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "keys": "raw1/raw2: share of |error| within 1/2 raw ensemble std; cal1/cal2: within 1/2 calibrated std "
                "(the sigma the round ranked with); target for cal1: 0.60-0.75",
        "campaigns": [str(c) for c in campaigns],
        "all": pooled(campaigns),
        "by_policy": {k: pooled(v) for k, v in sorted(by_policy.items())},
    }
    if args.replay:
        out["replayed_keys"] = ("cal1/cal2: the same errors within 1/2 sigma of the calibration the CURRENT code fits "
                                "before each round (recorded predictions; only the calibration is recomputed)")
        out["replayed_all"] = pooled_replay(campaigns)
        out["replayed_by_policy"] = {k: pooled_replay(v) for k, v in sorted(by_policy.items())}
    return emit(out, args.output)


if __name__ == "__main__":
    main()
