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


def test_a_small_campaign_ranks_as_before(tmp_path):
    """The campaign's recorded ranking with the store equals the one of the per-structure path (no cache folder)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "campaign"))
    from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, GreedyPlanner, make_structures

    from screener.campaign import Campaign, CampaignConfig, Components

    def factory_with(cache):
        def factory(config, campaign_dir, ledger):
            model = EnsembleModel(MODEL, cache_dir=(campaign_dir / "graphs") if cache else None)
            return Components(FakeCalculator(), FakeExecutor(tmp_path / f"store-{cache}"), model, FakeHulls(),
                              GreedyPlanner())
        return factory

    rankings = {}
    for cache in (True, False):
        camp = Campaign.create(tmp_path / f"c-{cache}", CampaignConfig(budget_total=6, batch_size=2,
                                                                        fine_tune_epochs=0),
                               make_structures(16), factory_with(cache))
        camp.run(max_rounds=1)
        rankings[cache] = camp.ledger.predictions(1)
        assert (tmp_path / f"c-{cache}" / "graphs" / "store" / "store.json").is_file() is cache
        camp.close()
    with_store, before = rankings[True], rankings[False]
    assert [(p["structure_id"], p["fidelity"]) for p in with_store] == [(p["structure_id"], p["fidelity"])
                                                                        for p in before]
    for column in ("e_form_mean_ev_per_atom", "e_form_std_ev_per_atom", "e_hull_mean_ev_per_atom", "p_stable"):
        np.testing.assert_allclose([p[column] for p in with_store], [p[column] for p in before], rtol=0, atol=1e-9)
    for fidelity in ("pbe", "scan"):
        order = [sorted((p for p in r if p["fidelity"] == fidelity),
                        key=lambda p: (p["e_hull_mean_ev_per_atom"], p["structure_id"])) for r in (with_store, before)]
        assert [p["structure_id"] for p in order[0]] == [p["structure_id"] for p in order[1]]
