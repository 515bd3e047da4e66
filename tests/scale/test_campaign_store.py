"""The campaign's model reads its candidates' graphs from a graph store: same predictions, featurised once."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from screener.campaign.ensemble_model import EnsembleModel

MODEL = Path(__file__).resolve().parents[2] / "models" / "pbe-e-form-small-world20k"


@pytest.fixture(scope="module")
def structures(synthetic_files):
    from screener.structures import read_structures

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {r.structure_id: r.structure for r in read_structures(synthetic_files)}


def test_store_predictions_equal_the_per_structure_path(structures, tmp_path, monkeypatch):
    reference = EnsembleModel(MODEL).predict_formation_energy(structures, "pbe")  # graphs built one by one
    model = EnsembleModel(MODEL, cache_dir=tmp_path / "graphs")
    monkeypatch.setattr(model, "_graphs_for", lambda *a: pytest.fail("built graphs outside the store"))
    mean, std = model.predict_formation_energy(structures, "pbe")
    np.testing.assert_allclose(mean, reference[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, reference[1], rtol=0, atol=1e-9)
    assert list(np.argsort(mean, kind="stable")) == list(np.argsort(reference[0], kind="stable"))  # same ranking
    from screener.graphs.store import GraphStore

    store = GraphStore(tmp_path / "graphs" / "store")
    assert len(store) == len(structures)
    # featurised once: a new model (a resumed campaign) reuses the store as it is
    stamp = (store.directory / "store.json").stat().st_mtime_ns
    again = EnsembleModel(MODEL, cache_dir=tmp_path / "graphs")
    monkeypatch.setattr(again, "_graphs_for", lambda *a: pytest.fail("built graphs outside the store"))
    np.testing.assert_array_equal(again.predict_formation_energy(structures, "pbe")[0], mean)
    assert (store.directory / "store.json").stat().st_mtime_ns == stamp


def test_ids_the_store_lacks_are_built_the_usual_way(structures, tmp_path):
    ids = list(structures)
    first = {s: structures[s] for s in ids[:20]}
    model = EnsembleModel(MODEL, cache_dir=tmp_path / "graphs")
    model.predict_formation_energy(first, "pbe")  # the store holds these 20
    reversed_all = {s: structures[s] for s in reversed(ids)}
    mean, std = model.predict_formation_energy(reversed_all, "pbe")
    ref_mean, ref_std = EnsembleModel(MODEL).predict_formation_energy(reversed_all, "pbe")
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=0, atol=1e-6)


def test_borrowed_scan_predictions_are_not_computed_twice(structures, tmp_path, monkeypatch):
    import screener.campaign.ranking as ranking

    calls = []
    real = ranking.predict_from_store
    monkeypatch.setattr(ranking, "predict_from_store", lambda *a: calls.append(1) or real(*a))
    model = EnsembleModel(MODEL, cache_dir=tmp_path / "graphs")
    pbe = model.predict_formation_energy(structures, "pbe")
    scan = model.predict_formation_energy(structures, "scan")  # no SCAN model yet: the PBE model's prediction
    assert len(calls) == 1
    np.testing.assert_array_equal(pbe[0], scan[0])
    scan[0][:] = 0  # the caller's copy: the kept prediction is not changed through it
    assert not np.array_equal(model.predict_formation_energy(structures, "pbe")[0], scan[0])
