"""What the shipped PBE ensemble gets right on its own held-out test set: the figures for its model card.

Re-reads the training data exactly as ``screener train`` did, re-creates the ensemble's common test split from
``ensemble.json`` (and checks that it reproduces the recorded test MAE), predicts the test structures and reports

- the E_form test MAE overall, for real (MP-20 / perovskite / Zn-N) and for substituted (hypothetical) crystals, and
  by number of elements;
- screening quality: each test structure's predicted E_hull is its true E_hull plus the E_form error against the
  fixed world hull (the Matbench Discovery convention), and a structure counts as stable at E_hull <= 0; precision,
  recall, F1 and the discovery acceleration factor (precision / prevalence);
- the ensemble's calibration: the share of test errors inside 1 and 2 predicted standard deviations and the Spearman
  correlation of |error| with the std, for the ensemble spread alone (what the campaign ranks with) and combined with
  the members' predicted aleatoric std.

Example
-------
    .venv/bin/python bench/shipped_model.py --model models/pbe-e-form-small-world20k --data worlds/w20000/pbe

Prints ONE JSON object on the last line of stdout and writes it to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
STABLE_EV_PER_ATOM = 0.0


def classification(true_stable: np.ndarray, pred_stable: np.ndarray) -> dict:
    """Precision, recall, F1 and the discovery acceleration factor of a stable/unstable call."""
    tp = int(np.sum(true_stable & pred_stable))
    fp = int(np.sum(~true_stable & pred_stable))
    fn = int(np.sum(true_stable & ~pred_stable))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    prevalence = float(np.mean(true_stable)) if len(true_stable) else float("nan")
    return {
        "n": int(len(true_stable)), "prevalence": round(prevalence, 4), "tp": tp, "fp": fp, "fn": fn,
        "precision": round(precision, 4), "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
        "daf": round(precision / prevalence, 3) if prevalence and tp + fp else float("nan"),
    }


def calibration(err: np.ndarray, std: np.ndarray) -> dict:
    """Share of errors within 1 and 2 std (0.68 and 0.95 for a calibrated Gaussian) and the rank correlation."""
    from scipy.stats import spearmanr

    z = np.abs(err) / np.maximum(std, 1e-9)
    return {
        "mean_std": round(float(np.mean(std)), 4),
        "within_1_std": round(float(np.mean(z <= 1)), 3),
        "within_2_std": round(float(np.mean(z <= 2)), 3),
        "spearman_abs_error_vs_std": round(float(spearmanr(np.abs(err), std).statistic), 3) if len(err) > 2 else None,
    }


def group_metrics(err: np.ndarray, stds: dict[str, np.ndarray], e_hull: np.ndarray, e_hull_pred: np.ndarray) -> dict:
    return {
        "n": int(len(err)),
        "e_form_mae_ev_per_atom": round(float(np.mean(np.abs(err))), 4),
        "e_form_rmse_ev_per_atom": round(float(np.sqrt(np.mean(err**2))), 4),
        "e_form_median_abs_error_ev_per_atom": round(float(np.median(np.abs(err))), 4),
        "calibration": {name: calibration(err, std) for name, std in stds.items()},
        "stability": classification(e_hull <= STABLE_EV_PER_ATOM + 1e-6, e_hull_pred <= STABLE_EV_PER_ATOM),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="Ensemble folder (ensemble.json).")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="The training data, as given to screener train.")
    p.add_argument("--output", type=Path, default=ROOT / "results" / "shipped_model_cpu.json")
    p.add_argument("--write-calibration", action="store_true",
                   help="Fit the spread scale on the held-out split and write <model>/calibration.json (weights "
                        "untouched); the campaign reads it as the prior scale of its PBE predictions.")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from screener.cgat import CGATEnsemble
    from screener.cgat.api import _graphs_for, _read_labelled
    from screener.cgat.evaluation import make_splits
    from screener.world.experiments import bench_environment, write_result

    t0 = time.perf_counter()
    ensemble = CGATEnsemble.load(args.model)
    info = ensemble.info
    target = info.target
    records = _read_labelled([str(d) for d in args.data], target, skip_invalid=False).records
    records, graphs, _ = _graphs_for(records, ensemble.n_neighbors, False, None, None)
    y = np.array([r.targets[target] for r in records])
    split = info.split
    test, _ = make_splits(len(graphs), len(ensemble), fractions=tuple(split["fractions"]), seed=split["test_seed"])
    pred = ensemble.predict([graphs[i] for i in test])
    mean = np.asarray(pred.mean, dtype=float)
    err = mean - y[test]
    recorded = float(info.metrics["ensemble_test_mae"])
    reproduced = float(np.mean(np.abs(err)))
    if abs(reproduced - recorded) > 1e-4:
        raise SystemExit(f"test split not reproduced: MAE {reproduced:.6f} vs recorded {recorded:.6f} (other data?)")
    # the campaign ranks with the ensemble spread (epistemic); "total" adds the members' predicted aleatoric std
    stds = {"epistemic": np.asarray(pred.std, dtype=float)}
    if pred.aleatoric_std is not None:
        stds["total"] = np.sqrt(stds["epistemic"] ** 2 + np.asarray(pred.aleatoric_std, dtype=float) ** 2)
    e_hull = np.array([records[i].data["e_above_hull"] for i in test], dtype=float)
    e_hull_pred = e_hull + err  # fixed world hull: the E_form error moves the structure by the same amount
    origin = np.array([records[i].data.get("origin", "unknown") for i in test])
    n_elements = np.array([len(records[i].structure.composition.elements) for i in test])

    def metrics(mask: np.ndarray) -> dict:
        return group_metrics(err[mask], {k: v[mask] for k, v in stds.items()}, e_hull[mask], e_hull_pred[mask])

    out = {
        "benchmark": "shipped_model",
        "command": "python bench/shipped_model.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        **bench_environment("cpu"),
        "model": str(args.model), "target": target, "n_structures": len(graphs), "n_test": int(len(test)),
        "recorded_test_mae": round(recorded, 6), "reproduced_test_mae": round(reproduced, 6),
        "test_target_std": round(float(np.std(y[test])), 4),
        "stable_threshold_ev_per_atom": STABLE_EV_PER_ATOM,
        "all": metrics(np.ones(len(test), dtype=bool)),
        "by_origin": {o: metrics(origin == o) for o in sorted(set(origin))},
        "by_n_elements": {int(k): metrics(n_elements == k) for k in sorted(set(n_elements)) if np.sum(n_elements == k) >= 20},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    from screener.campaign.ensemble_model import write_spread_calibration
    from screener.policies.calibration import fit_held_out_calibration

    # the power-law spread on the held-out split, as `screener train` fits it (coverage cross-fitted on halves);
    # the plain scale beside it for comparison
    fit = fit_held_out_calibration(err, stds["epistemic"],
                                   source=f"held-out split of {args.model.name} ({len(test)} structures), "
                                          "bench/shipped_model.py")
    out["spread_calibration_plain_scale"] = fit_held_out_calibration(
        err, stds["epistemic"], exponent_prior=None).model_dump(mode="json")
    out["spread_calibration"] = fit.model_dump(mode="json")
    if args.write_calibration:
        write_spread_calibration(args.model, {"pbe": fit}, command=out["command"])
    return write_result(out, args.output)


if __name__ == "__main__":
    main()
