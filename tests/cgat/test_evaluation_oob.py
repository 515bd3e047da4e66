"""ensemble_metrics: no out-of-bag estimate when every member trained on every validation structure (no nan)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np

from screener.cgat.evaluation import ensemble_metrics


class _Stub:
    """Two members predicting 0.1 and 0.3 for everything."""

    def __len__(self) -> int:
        return 2

    def predict(self, graphs, batch_size=256):
        members = np.array([[0.1] * len(graphs), [0.3] * len(graphs)])
        return SimpleNamespace(members=members, mean=members.mean(0), std=members.std(0))


def _results():
    return {k: SimpleNamespace(best_val_mae=0.1, best_epoch=1, epochs_run=1, wall_time_s=0.0) for k in range(2)}


def test_no_out_of_bag_member_gives_no_metric_and_no_warning():
    y = np.zeros(4)
    everything = np.arange(4)
    splits = [(everything, everything), (everything, everything)]  # validation = training data (n < 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ensemble_metrics(_Stub(), [None] * 4, y, np.zeros(0, dtype=int), splits, _results(), 16)
    assert "ensemble_val_mae_oob" not in m


def test_out_of_bag_uses_only_members_that_did_not_train_on_it():
    y = np.zeros(4)
    splits = [(np.array([0, 1]), np.array([2, 3])), (np.arange(4), np.array([2, 3]))]
    m = ensemble_metrics(_Stub(), [None] * 4, y, np.zeros(0, dtype=int), splits, _results(), 16)
    assert m["ensemble_val_mae_oob"] == 0.1  # member 0 only
