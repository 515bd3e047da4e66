"""Campaign speed (issue 12): fine-tunes sized to the new data, written once; no ranking for model-free policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, make_structures

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cgat"))  # shared MP-20 graphs of the CGAT tests
from cgat_training_data import mp20_graphs  # noqa: E402

from screener.campaign import Campaign, CampaignConfig, Components
from screener.campaign.components import PolicyPlanner
from screener.campaign.ensemble_model import TRAINED_IDS_FILENAME, EnsembleModel, campaign_training_ids
from screener.cgat import training
from screener.cgat.checkpoint import ModelMeta, Normalization, load_model
from screener.cgat.config import get_preset
from screener.cgat.model import CGAT
from screener.cgat.training import TrainConfig, epoch_order, epoch_sample, train_model
from screener.policies import load_policy

ARCH = get_preset("small")


# ---- epochs of a sized fine-tune ------------------------------------------------------------------------------------
def test_epoch_sample_holds_the_focus_and_a_seeded_draw_of_the_rest():
    focus = np.array([3, 17, 28])
    picks = [epoch_sample(5, epoch, 30, 8, focus) for epoch in range(6)]
    for epoch, pick in enumerate(picks):
        assert len(pick) == 8 and len(set(pick.tolist())) == 8
        assert set(focus.tolist()) <= set(pick.tolist())
        # in the epoch's own order (a pure function of (seed, epoch): a resumed run repeats it)
        order = epoch_order(5, epoch, 30).tolist()
        assert pick.tolist() == sorted(pick.tolist(), key=order.index)
        assert np.array_equal(pick, epoch_sample(5, epoch, 30, 8, focus))
    assert len({tuple(sorted(p.tolist())) for p in picks}) > 1  # the replayed rest changes from epoch to epoch
    # no limit, or a limit at or above the data: the whole permutation, as before
    assert np.array_equal(epoch_sample(5, 2, 30, None, focus), epoch_order(5, 2, 30))
    assert np.array_equal(epoch_sample(5, 2, 30, 30, focus), epoch_order(5, 2, 30))
    # more focus than room: the first of them in the epoch's order
    assert set(epoch_sample(1, 0, 30, 2, np.arange(10)).tolist()) <= set(range(10))


def _meta(y) -> ModelMeta:
    return ModelMeta(architecture=ARCH, normalization=Normalization.fit(y), target="formation_energy_per_atom",
                     target_unit="eV/atom")


def test_samples_per_epoch_trains_the_focus_every_epoch(tmp_path, monkeypatch):
    graphs, y = mp20_graphs()
    graphs, y = graphs[:20], y[:20]
    seen: list[set[str]] = []
    collate = training.collate_with_targets

    def spy(items):
        seen[-1].update(g.structure_id for g, _ in items)
        return collate(items)

    monkeypatch.setattr(training, "collate_with_targets", spy)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, val_every=10, seed=0, samples_per_epoch=6)
    torch.manual_seed(0)
    result = _run_epochs(train_model, CGAT(ARCH), graphs, y, cfg, tmp_path, seen, focus=[2, 11])
    assert [h["samples"] for h in result.history] == [6, 6, 6]
    for ids in seen:
        assert len(ids) == 6 and {graphs[2].structure_id, graphs[11].structure_id} <= ids


def _run_epochs(fn, model, graphs, y, cfg, directory, seen, focus):
    """Train, collecting the ids of each epoch in a new set of ``seen`` (the progress callback ends an epoch)."""
    seen.append(set())
    return fn(model, graphs, y, [], [], cfg, meta=_meta(y), directory=directory, focus_indices=focus,
              progress=lambda record: seen.append(set()) if record["epoch"] < cfg.epochs else None)


def test_best_weights_written_once_equal_those_written_every_epoch(tmp_path):
    graphs, y = mp20_graphs()
    tr, va = slice(0, 16), slice(16, 24)
    out = {}
    for every in (True, False):
        torch.manual_seed(3)
        cfg = TrainConfig(epochs=4, batch_size=4, lr=2e-3, lr_period_epochs=3, val_every=1, seed=7,
                          write_every_epoch=every)
        d = tmp_path / str(every)
        result = train_model(CGAT(ARCH), graphs[tr], y[tr], graphs[va], y[va], cfg, meta=_meta(y[tr]), directory=d)
        model, meta = load_model(d)
        out[every] = (result, model.state_dict(), meta)
        assert (d / "train_state.pt").is_file() == every and (d / "last").is_dir() == every
    (r1, w1, m1), (r2, w2, m2) = out[True], out[False]
    assert r1.best_epoch == r2.best_epoch and r1.history == r2.history
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=0)
    assert m1.metrics["best_val_mae"] == m2.metrics["best_val_mae"]


def test_resume_key_of_a_state_written_before_samples_per_epoch_existed():
    key = TrainConfig().resume_key()
    assert "samples_per_epoch" not in key and "write_every_epoch" not in key
    assert TrainConfig(samples_per_epoch=8).resume_key()["samples_per_epoch"] == 8


# ---- the campaign's fine-tune ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pbe_model(tmp_path_factory):
    """A 2-member small-preset PBE ensemble trained for one epoch on 12 MP-20 crystals (seconds)."""
    from screener.cgat.ensemble import train_ensemble

    graphs, y = mp20_graphs()
    d = tmp_path_factory.mktemp("pbe")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, val_every=1, seed=0)
    train_ensemble(graphs[:12], y[:12], directory=d, target="formation_energy_per_atom", target_unit="eV/atom",
                   architecture=ARCH, train_config=cfg, n_members=2, split=(0.8, 0.2, 0.0))
    return d


def test_fine_tune_is_sized_to_the_new_results(tmp_path, tiny_pbe_model):
    graphs, y = mp20_graphs()
    model = EnsembleModel(tiny_pbe_model, epochs=2, device="cpu")
    model._graphs.update({g.structure_id: g for g in graphs})  # graphs known: nothing to featurise
    ids = [g.structure_id for g in graphs]
    energy = dict(zip(ids, y.tolist(), strict=True))
    structures = {s: None for s in ids}

    def round_(number, n_pbe):
        return model.fine_tune({"pbe": {s: energy[s] for s in ids[12:12 + n_pbe]}}, structures,
                               out_dir=str(tmp_path / f"r{number}"), round_number=number, seed=number)

    first = round_(1, 20)  # everything is new to the initial model
    assert [v.fidelity for v in first] == ["pbe"]
    assert first[0].metrics["n_new"] == 20 and first[0].metrics["samples_per_epoch"] == 20
    assert campaign_training_ids(first[0].path, "pbe") == set(ids[12:32])
    assert campaign_training_ids(first[0].path, "scan") == set()  # a model of another fidelity: all new to it
    # no new result: the model stays (no fine-tune, its predictions stay valid)
    assert round_(2, 20) == [] and model.dirs["pbe"] == Path(first[0].path)
    # three new results: each epoch trains on them plus replayed earlier ones, one batch in all (not all 23)
    third = round_(3, 23)
    assert third[0].metrics["n_new"] == 3 and third[0].metrics["samples_per_epoch"] == 16
    info = json.loads((Path(third[0].path) / "ensemble.json").read_text())
    assert info["train_config"]["samples_per_epoch"] == 16
    assert json.loads((Path(third[0].path) / TRAINED_IDS_FILENAME).read_text())["structure_ids"] == sorted(
        ids[12:35])
    for member in ("member_0", "member_1"):  # written once: no per-epoch resume state
        assert not (Path(third[0].path) / member / "train_state.pt").exists()


# ---- no ranking and no fine-tune for a policy that does not use the model -------------------------------------------
class CountingModel(FakeModel):
    def __init__(self) -> None:
        super().__init__()
        self.n_predictions = 0

    def predict_formation_energy(self, structures, fidelity):
        self.n_predictions += 1
        return super().predict_formation_energy(structures, fidelity)


class RankingPlanner(PolicyPlanner):
    """The planner as it was: the campaign ranks and fine-tunes for every policy."""

    uses_model = True


def _random_campaign(directory: Path, planner_cls: type, seed: int) -> tuple[list[tuple], CountingModel, Campaign]:
    model = CountingModel()

    def factory(config, campaign_dir, ledger):
        planner = planner_cls(load_policy("random"), config, ledger=ledger, hulls=None)
        return Components(FakeCalculator(), FakeExecutor(directory / "store"), model, FakeHulls(), planner)

    config = CampaignConfig(budget_total=30, batch_size=3, policy="random", seed=seed)
    camp = Campaign.create(directory / "c", config, make_structures(14, seed=seed), factory)
    camp.run()
    jobs = [(j.round, j.structure_id, j.fidelity) for j in camp.ledger.jobs()]
    return jobs, model, camp


@pytest.mark.parametrize("seed", [0, 1])
def test_random_policy_decides_the_same_without_ranking_or_fine_tuning(tmp_path, seed):
    before, ranked, _ = _random_campaign(tmp_path / "before", RankingPlanner, seed)
    after, skipped, camp = _random_campaign(tmp_path / "after", PolicyPlanner, seed)
    assert len(before) >= 6 and after == before
    assert ranked.n_predictions > 0 and ranked.n_fine_tunes > 0  # the comparison is not vacuous
    assert skipped.n_predictions == 0 and skipped.n_fine_tunes == 0
    rounds = [r for r in camp.ledger.rounds() if r["state"] == "finished"]
    assert rounds and all(r["info"]["fine_tune"].startswith("skipped") for r in rounds)
    assert all(camp.ledger.predictions(r["round"]) == [] for r in rounds)
    assert camp.ledger.learning_curve() == []
    for r in rounds:  # the ledger says why no prediction is quoted, and quotes none
        for d in camp.ledger.decisions(r["round"]):
            assert "does not use the model" in d["reason"] and "P(stable)" not in d["reason"]
