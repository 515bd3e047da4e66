"""Ensembles: seeds and splits per member, uncertainty, save/load, model card, resume, parallel members."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared data helper (importlib import mode)
from cgat_training_data import DATA, TARGET, mp20_graphs  # noqa: E402

from screener.cgat.config import get_preset
from screener.cgat.ensemble import CGATEnsemble, make_splits, train_ensemble
from screener.cgat.training import TrainConfig
from screener.errors import InvalidInputError

CFG = TrainConfig(epochs=2, batch_size=8, lr=2e-3, lr_period_epochs=2, val_every=1, seed=11)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    graphs, y = mp20_graphs()
    directory = tmp_path_factory.mktemp("ens") / "model"
    ens = train_ensemble(graphs[:20], y[:20], directory=directory, target=TARGET, target_unit="eV/atom",
                         architecture=get_preset("small"), train_config=CFG, n_members=3)
    return ens, directory


def test_make_splits_disjoint_and_member_specific():
    test, members = make_splits(50, 3, fractions=(0.8, 0.1, 0.1), seed=4)
    assert len(test) == 5
    for train, val in members:
        assert len(train) == 40 and len(val) == 5
        assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
        assert len(set(train) | set(val) | set(test)) == 50
    assert len({tuple(v) for _, v in members}) == 3  # each member its own validation set
    again, members2 = make_splits(50, 3, fractions=(0.8, 0.1, 0.1), seed=4)
    assert np.array_equal(again, test) and all(np.array_equal(a[0], b[0]) for a, b in zip(members, members2))
    with pytest.raises(InvalidInputError):
        make_splits(2, 1, fractions=(0.0, 0.5, 0.5))


def test_members_differ_and_std_positive(trained):
    ens, directory = trained
    graphs, _ = mp20_graphs()
    assert [m.seed for m in ens.metas] == [11, 12, 13]
    first = [p for p in ens.models[0].parameters()]
    for other in ens.models[1:]:
        assert any(not torch.equal(a, b) for a, b in zip(first, other.parameters()))
    pred = ens.predict(graphs[40:50])
    assert pred.mean.shape == pred.std.shape == (10,)
    assert np.all(pred.std > 0)
    assert np.allclose(pred.mean, pred.members.mean(0)) and np.allclose(pred.std, pred.members.std(0))
    assert pred.aleatoric_std is None  # trained with plain L1: the log-std output never learned anything


def test_aleatoric_std_only_from_the_robust_loss(tmp_path):
    graphs, y = mp20_graphs()
    robust = train_ensemble(graphs[:20], y[:20], directory=tmp_path / "robust", target=TARGET, target_unit="eV/atom",
                            architecture=get_preset("small"), train_config=CFG.model_copy(update={"loss": "robust"}),
                            n_members=2)
    pred = robust.predict(graphs[40:45])
    assert pred.aleatoric_std is not None and pred.aleatoric_std.shape == (5,) and np.all(pred.aleatoric_std > 0)


def test_ensemble_folder_index_and_card(trained):
    ens, directory = trained
    info = json.loads((directory / "ensemble.json").read_text())
    assert info["members"] == ["member_0", "member_1", "member_2"] and info["target_unit"] == "eV/atom"
    assert info["split"]["n_test"] == 2 and info["split"]["n_train"] == [16, 16, 16]
    assert len(info["metrics"]["member_val_mae"]) == 3 and info["metrics"]["ensemble_test_mae"] > 0
    card = (directory / "MODEL_CARD.md").read_text()
    for text in ("formation_energy_per_atom", "member_2", "| 13 |", "Test MAE of the ensemble mean", "AdamW"):
        assert text in card


def test_save_load_round_trip(trained, tmp_path):
    ens, directory = trained
    graphs, _ = mp20_graphs()
    a = ens.predict(graphs[:8])
    loaded = CGATEnsemble.load(directory)
    b = loaded.predict(graphs[:8])
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
    ens.save(tmp_path / "copy")
    c = CGATEnsemble.load(tmp_path / "copy").predict(graphs[:8])
    assert np.array_equal(a.mean, c.mean)
    single = CGATEnsemble.load(directory / "member_1")  # one model folder is a one-member ensemble
    assert len(single) == 1 and np.allclose(single.predict(graphs[:8]).mean, a.members[1])


def test_predict_structures_equals_graphs(trained):
    import csv
    import warnings

    from pymatgen.core import Structure

    ens, _ = trained
    graphs, _ = mp20_graphs()
    csv.field_size_limit(10**8)
    with DATA.open(newline="") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(r["cif"], fmt="cif") for _, r in zip(range(4), csv.DictReader(fh))]
    assert np.allclose(ens.predict(structures).mean, ens.predict(graphs[:4]).mean, atol=1e-6)


def test_rerun_skips_finished_members(trained):
    ens, directory = trained
    graphs, y = mp20_graphs()
    calls = []
    again = train_ensemble(graphs[:20], y[:20], directory=directory, target=TARGET, target_unit="eV/atom",
                           architecture=get_preset("small"), train_config=CFG, n_members=3,
                           progress=lambda k, r: calls.append(k))
    assert calls == []
    assert np.array_equal(again.predict(graphs[:4]).mean, ens.predict(graphs[:4]).mean)


def test_transfer_from_ensemble_and_parallel_members(trained, tmp_path):
    _, directory = trained
    graphs, y = mp20_graphs()
    done = []
    ens = train_ensemble(graphs[20:36], y[20:36], directory=tmp_path / "ft", target=TARGET, target_unit="eV/atom",
                         train_config=CFG.model_copy(update={"epochs": 1}), n_members=2, init=directory,
                         transfer="head", n_jobs=2, progress=lambda k, r: done.append(k))
    assert sorted(done) == [0, 1]
    assert [m.init_from for m in ens.metas] == [str(directory / "member_0"), str(directory / "member_1")]
    assert ens.metas[0].architecture == get_preset("small")  # from the checkpoint, not the default
    base = CGATEnsemble.load(directory)
    for k in range(2):  # head transfer: bodies equal to their init members
        for name, v in ens.models[k].state_dict().items():
            if not name.startswith("head."):
                assert torch.equal(v, base.models[k].state_dict()[name]), name


def test_bad_arguments():
    graphs, y = mp20_graphs()
    with pytest.raises(InvalidInputError, match="transfer"):
        train_ensemble(graphs[:5], y[:5], directory="unused", target=TARGET, transfer="head")
    with pytest.raises(InvalidInputError, match="non-finite"):
        train_ensemble(graphs[:5], [np.nan] * 5, directory="unused", target=TARGET)


def test_training_writes_a_held_out_calibration(tmp_path, trained):
    """With a test split of >= 20 structures, training fits the power-law spread on it (the errors of the saved
    ensemble, recomputed here) and the card shows it; a smaller split writes none."""
    from screener.campaign.ensemble_model import read_spread_calibration, read_spread_exponents
    from screener.policies.calibration import fit_spread_calibration

    assert not (trained[1] / "calibration.json").exists()  # 2 test structures: too few
    graphs, y = mp20_graphs()
    split = (0.5, 0.1, 0.4)
    ens = train_ensemble(graphs, y, directory=tmp_path / "m", target=TARGET, target_unit="eV/atom",
                         architecture=get_preset("small"), train_config=CFG, n_members=2, split=split)
    test, _ = make_splits(len(graphs), 2, fractions=split, seed=CFG.seed)
    assert len(test) >= 20
    pred = ens.predict([graphs[i] for i in test])
    expected = fit_spread_calibration(pred.mean - y[test], pred.std, prior_weight=0.0, exponent_prior=0.35)
    fit = json.loads((tmp_path / "m" / "calibration.json").read_text())["fidelities"]["model"]
    assert fit["n_errors"] == len(test)
    # (float32 sums differ in the last digits with the batch size of the prediction)
    assert fit["scale"] == pytest.approx(expected.scale, rel=1e-4)
    assert fit["exponent"] == pytest.approx(expected.exponent, abs=1e-3)
    assert 0.0 <= fit["within_1_sigma"] <= 1.0 and fit["within_1_sigma"] <= fit["within_2_sigma"]
    assert "cross-fitted" in fit["source"]
    assert read_spread_calibration(tmp_path / "m")["pbe"] == pytest.approx(expected.scale, rel=1e-4)
    assert read_spread_exponents(tmp_path / "m")["scan"] == pytest.approx(expected.exponent, abs=1e-3)
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "## Spread calibration" in card and f"{fit['scale']:.4f}" in card
