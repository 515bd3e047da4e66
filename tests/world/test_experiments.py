from __future__ import annotations

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.world.experiments import load_world_data, nested_subsets, split_indices, train_and_test


def test_split_indices_are_disjoint_seeded_and_sized():
    test, scan = split_indices(100, [0.2, 0.3], seed=4)
    assert len(test) == 20 and len(scan) == 30 and not set(test) & set(scan)
    assert np.array_equal(test, split_indices(100, [0.2, 0.3], seed=4)[0])
    assert not np.array_equal(test, split_indices(100, [0.2, 0.3], seed=5)[0])
    with pytest.raises(InvalidInputError):
        split_indices(10, [0.6, 0.6], seed=0)


def test_nested_subsets_are_nested():
    subsets = nested_subsets(np.arange(50, 150), [10, 40, 80, 500], seed=1)
    assert sorted(subsets) == [10, 40, 80]  # larger than the pool: left out
    assert set(subsets[10]) <= set(subsets[40]) <= set(subsets[80]) <= set(range(50, 150))


def test_world_data_and_a_transfer_run(small_world, tmp_path):
    out, manifest = small_world
    data = load_world_data(out, n_jobs=1)
    n = manifest.counts["n_structures"]
    assert len(data) == n and len(data.graphs) == n
    assert data.labels[("scan", "e_above_hull")].shape == (n,) and np.all(data.labels[("pbe", "e_above_hull")] >= 0)
    test, train = split_indices(n, [0.25, 0.75], seed=0)
    pbe = train_and_test(data, "pbe", "e_form", train, test, directory=tmp_path / "pbe", epochs=2, batch_size=8)
    full = train_and_test(data, "scan", "e_form", train[:12], test, directory=tmp_path / "full", epochs=2,
                          batch_size=8, init=tmp_path / "pbe", transfer="full")
    for result in (pbe, full):
        assert result["n_test"] == len(test) and np.isfinite(result["test_mae_ev_per_atom"])
    assert full["n_train"] == 12
