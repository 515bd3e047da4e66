"""Put a rerun of some policies beside the other policies' runs of an earlier ``bench/campaign.py`` result.

A change to the default policy leaves the baselines' campaigns as they were, and rerunning them costs CPU time
that says nothing new. This reads an earlier result (``--base``, all policies) and newer ones (``--new``, e.g. a
``--finished-only`` pass over the rerun policy), takes each policy's run of each seed from the newest file that has
it (a newer file can also add seeds), and
writes the summary again with ``bench/campaign.py``'s own ``summarise`` (per seed found per unit over the best
baseline of that seed, mean and t-interval over seeds).

It refuses to merge runs of one seed that started from different initial models (the pre-trained ensemble's pool
MAE and training seed must agree to the last digit: the same model on the same machine), or that ran on different
hardware, world or budget, so the merged file compares like with like. Every run keeps its own ``command`` and
``code``; the merged file lists the inputs.

Example
-------
    .venv/bin/python bench/campaign_merge.py --base bench/results/campaign_policies_NaTiVCrCuO_300_flat_X.json \\
        --new /tmp/nati_ev_rerun.json --output bench/results/campaign_policies_NaTiVCrCuO_300_flat_Y.json

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _output import emit  # noqa: E402
from campaign import summarise  # noqa: E402

#: what must agree between the files for their runs to sit in one table
SAME = ("hardware", "cost_model")
SAME_SETTINGS = ("budget_pbe_equivalent", "batch", "fine_tune_epochs", "pool_fraction", "preset", "members",
                 "pretrain_epochs", "calibration_split", "model_per_seed")


class MergeError(ValueError):
    """The files do not describe the same experiment."""


def _model_key(run: dict[str, Any]) -> tuple[Any, Any]:
    model = run.get("initial_model") or {}
    return model.get("pool_pbe_e_form_mae_ev_per_atom"), model.get("training_seed")


def _describe(origin: dict[str, str]) -> str:
    """Where a policy's runs came from, e.g. ``base; new[0] (ev-variant) seeds 3,4``, from each seed's source."""
    labels = sorted(set(origin.values()), key=lambda label: (label != "base", label))
    return "; ".join(label if label == "base" else
                     f"{label} seeds {','.join(sorted((s for s, x in origin.items() if x == label), key=int))}"
                     for label in labels)


def rename_base(base: dict[str, Any], rename: dict[str, str]) -> dict[str, Any]:
    """``base`` with its runs named OLD renamed NEW (``rename``: OLD -> NEW); NEW must not be a run already there."""
    out = json.loads(json.dumps(base))
    for old, new in rename.items():
        if old not in out["runs"]:
            raise MergeError(f"the base has no runs named {old!r}")
        if new in out["runs"]:
            raise MergeError(f"the base already has runs named {new!r}")
        out["runs"][new] = out["runs"].pop(old)
    return out


def merge(base: dict[str, Any], newer: list[dict[str, Any]], rename: dict[str, str] | None = None) -> dict[str, Any]:
    """``base`` with each policy's runs taken from the last of ``newer`` that has that policy (module docstring);
    ``rename`` maps a newer file's run name (a variant file's stem) to the name it takes here."""
    rename = rename or {}
    out = json.loads(json.dumps(base))
    origin = {policy: {seed: "base" for seed in by_seed} for policy, by_seed in out["runs"].items()}  # per seed
    for k, new in enumerate(newer):
        for key in SAME:
            if new.get(key) != base.get(key):
                raise MergeError(f"{key} differs: {new.get(key)!r} against {base.get(key)!r}")
        for key in SAME_SETTINGS:
            if new["settings"].get(key) != base["settings"].get(key):
                raise MergeError(f"setting {key} differs: {new['settings'].get(key)!r} against "
                                 f"{base['settings'].get(key)!r}")
        if new["world"].get("n_structures") != base["world"].get("n_structures") or \
                new["pool"].get("n_truly_stable") != base["pool"].get("n_truly_stable"):
            raise MergeError("the worlds or pools differ")
        for name, by_seed in new["runs"].items():
            policy = rename.get(name, name)
            for seed, run in by_seed.items():
                for other, other_runs in base["runs"].items():
                    if seed in other_runs and _model_key(other_runs[seed]) != _model_key(run):
                        raise MergeError(f"seed {seed}: {policy} started from another initial model than {other} "
                                         f"({_model_key(run)} against {_model_key(other_runs[seed])})")
            out["runs"].setdefault(policy, {}).update(by_seed)  # seed by seed: the others stay as they were
            label = f"new[{k}]" + (f" ({name})" if name != policy else "")
            origin.setdefault(policy, {}).update({seed: label for seed in by_seed})
    seeds = sorted({int(s) for by_seed in out["runs"].values() for s in by_seed})
    out["summary"] = summarise(out["runs"], seeds, out["settings"].get("budget_pbe_equivalent"))
    out["complete"] = all(str(s) in by_seed for by_seed in out["runs"].values() for s in seeds)
    out["settings"] = {**out["settings"], "seeds": seeds, "policies": list(out["runs"])}
    out["merged_from"] = {"base": base.get("command"), "new": [n.get("command") for n in newer],
                          "policy_source": {policy: _describe(per_seed) for policy, per_seed in origin.items()}}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="An earlier bench/campaign.py result (all policies).")
    p.add_argument("--new", type=Path, nargs="+", required=True, help="Newer results whose policies replace the "
                   "base's (the last file wins).")
    p.add_argument("--rename", nargs="*", default=[], metavar="NEW=OLD",
                   help="Runs named NEW in the newer files take the name OLD (e.g. ev-oldsurvival=expected-value).")
    p.add_argument("--base-rename", nargs="*", default=[], metavar="OLD=NEW",
                   help="Runs named OLD in the base file take the name NEW first (e.g. expected-value=ev-before-pool, "
                   "so that a new default rerun on some seeds only does not sit beside the old one's other seeds).")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    try:
        rename = dict(r.split("=", 1) for r in args.rename)
        base = rename_base(json.loads(args.base.read_text()), dict(r.split("=", 1) for r in args.base_rename))
        out = merge(base, [json.loads(f.read_text()) for f in args.new], rename)
    except (ValueError, KeyError, OSError) as exc:  # MergeError, a bad --rename, a missing field or file, not JSON
        sys.exit(f"error: cannot merge: {exc}")
    out["command"] = "python bench/campaign_merge.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return emit(out, args.output)


if __name__ == "__main__":
    main()
