"""Data splits of an ensemble and its held-out metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from screener.errors import InvalidInputError
from screener.graphs.graph import CrystalGraph

if TYPE_CHECKING:
    from screener.cgat.ensemble import CGATEnsemble
    from screener.cgat.training import TrainResult

__all__ = ["make_splits", "ensemble_metrics", "evaluated_indices"]


def make_splits(
    n: int,
    n_members: int,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Common test indices and one (train, val) index pair per member.

    Parameters
    ----------
    n : int
        Number of structures.
    n_members : int
        Ensemble size.
    fractions : (train, val, test)
        Fractions of ``n`` (normalised to sum 1). The test set is shared; train/val differ per member.
    seed : int
        Base seed: the test set uses ``seed``, member ``k`` its split with ``seed + k``.

    Returns
    -------
    test, members : ndarray, list of (train, val) ndarrays (sorted indices)
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or f[0] <= 0:
        raise InvalidInputError(f"split fractions must be (train>0, val>=0, test>=0), got {fractions}")
    f = f / f.sum()
    n_test = int(round(f[2] * n)) if n >= 3 else 0
    n_val = int(round(f[1] * n)) if n >= 3 else 0
    if n - n_test - n_val < 1:
        raise InvalidInputError(f"{n} structures are too few for the split {tuple(fractions)}")
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    test, rest = np.sort(perm[:n_test]), perm[n_test:]
    members = []
    for k in range(n_members):
        p = np.random.default_rng([seed + k, 104729]).permutation(rest)
        members.append((np.sort(p[n_val:]), np.sort(p[:n_val])))
    return test, members


def evaluated_indices(test: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The structures :func:`ensemble_metrics` predicts, sorted: every member's validation split and the test split."""
    val_union = np.unique(np.concatenate([s[1] for s in splits])) if splits else np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([val_union, np.asarray(test, dtype=np.int64)])).astype(np.int64)


def ensemble_metrics(
    ensemble: CGATEnsemble,
    graphs: Sequence[CrystalGraph],
    y: np.ndarray,
    test: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    results: dict[int, TrainResult],
    batch_size: int,
    pred: Any = None,
) -> dict[str, Any]:
    """Member val MAEs, out-of-bag ensemble val MAE, member and ensemble test MAE (target units). ``pred``: the
    ensemble's prediction of :func:`evaluated_indices` when the caller has it (else it is made here)."""
    val_union = np.unique(np.concatenate([s[1] for s in splits])) if splits else np.zeros(0, dtype=np.int64)
    idx = evaluated_indices(test, splits)
    metrics: dict[str, Any] = {
        "member_val_mae": [results[k].best_val_mae for k in range(len(ensemble))],
        "member_best_epoch": [results[k].best_epoch for k in range(len(ensemble))],
        "member_epochs_run": [results[k].epochs_run for k in range(len(ensemble))],
        "member_train_time_s": [round(results[k].wall_time_s, 3) for k in range(len(ensemble))],
    }
    if len(idx) == 0:
        return metrics
    if pred is None:
        pred = ensemble.predict([graphs[i] for i in idx], batch_size=batch_size)
    pos = {int(i): j for j, i in enumerate(idx)}
    if len(val_union):
        # out-of-bag: each validation structure is predicted by the members that did not train on it
        train_sets = [set(tr.tolist()) for tr, _ in splits]
        errs = []
        for i in val_union:
            ks = [k for k, tr in enumerate(train_sets) if int(i) not in tr]
            if ks:  # a structure every member trained on (a small fine-tune validates on its training data) has none
                errs.append(abs(pred.members[ks, pos[int(i)]].mean() - y[i]))
        if errs:  # else no out-of-bag estimate exists: the metric is left out (the card says n/a), never nan
            metrics["ensemble_val_mae_oob"] = float(np.mean(errs))
    if len(test):
        cols = [pos[int(i)] for i in test]
        metrics["ensemble_test_mae"] = float(np.mean(np.abs(pred.mean[cols] - y[test])))
        metrics["member_test_mae"] = [float(np.mean(np.abs(pred.members[k, cols] - y[test]))) for k in range(len(ensemble))]
        metrics["ensemble_test_mean_std"] = float(np.mean(pred.std[cols]))
        metrics["test_target_std"] = float(np.std(y[test]))
    return metrics
