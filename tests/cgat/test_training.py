"""Training one CGAT model: overfitting real data, exact resume, early stopping, losses, DDP smoke test."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared data helper (importlib import mode)
from cgat_training_data import mp20_graphs  # noqa: E402

from screener.cgat.checkpoint import ModelMeta, Normalization, load_model, load_training_state
from screener.cgat.config import get_preset
from screener.cgat.model import CGAT
from screener.cgat.training import (
    TrainConfig,
    collate_with_targets,
    epoch_order,
    GraphDataset,
    predict_model,
    robust_l1_loss,
    train_model,
)
from screener.errors import CheckpointError, InvalidInputError

ARCH = get_preset("small")


def _model(seed: int) -> CGAT:
    torch.manual_seed(seed)
    return CGAT(ARCH)


def _meta(y) -> ModelMeta:
    return ModelMeta(architecture=ARCH, normalization=Normalization.fit(y), target="formation_energy_per_atom",
                     target_unit="eV/atom")


def test_overfits_50_real_structures(tmp_path):
    graphs, y = mp20_graphs()
    graphs, y = graphs[:50], y[:50]
    model = _model(0)
    cfg = TrainConfig(epochs=40, batch_size=25, lr=3e-3, lr_min_factor=1.0, val_every=1000, seed=0)
    result = train_model(model, graphs, y, [], [], cfg, meta=_meta(y), directory=tmp_path)
    pred, aleatoric = predict_model(model, graphs, Normalization.fit(y))
    mae = float(np.mean(np.abs(pred - y)))
    assert mae < 0.3 * y.std(), (mae, y.std())
    assert result.history[-1]["train_mae"] < result.history[0]["train_mae"] / 3
    assert aleatoric is not None and np.all(aleatoric > 0)
    # no validation data: the last weights are saved as the best checkpoint
    saved, meta = load_model(tmp_path)
    assert meta.metrics["best_epoch"] == 40 and meta.n_train == 50
    torch.testing.assert_close(predict_model(saved, graphs, meta.normalization)[0], pred, rtol=0, atol=0)


def _small_run(directory, progress=None, epochs=4, seed_model=0, **kw):
    graphs, y = mp20_graphs()
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=2e-3, lr_period_epochs=3, val_every=1, seed=7, **kw)
    model = _model(seed_model)
    result = train_model(
        model, graphs[:12], y[:12], graphs[12:16], y[12:16], cfg, meta=_meta(y[:12]), directory=directory,
        progress=progress,
    )
    return model, result


def test_resume_after_kill_is_bit_identical(tmp_path):
    full_model, full = _small_run(tmp_path / "full")

    def kill_after_two(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # what a Ctrl-C / SIGINT does between epochs

    with pytest.raises(KeyboardInterrupt):
        _small_run(tmp_path / "killed", progress=kill_after_two)
    state = load_training_state(tmp_path / "killed" / "train_state.pt")
    assert state["epoch"] == 2 and not state["finished"]
    assert np.array_equal(state["data_order"].numpy(), epoch_order(7, 2, 12))

    seen = []
    # a different initial model: the state file, not the seed, must decide the result
    resumed_model, resumed = _small_run(tmp_path / "killed", progress=lambda r: seen.append(r["epoch"]), seed_model=99)
    assert seen == [3, 4]  # only the missing epochs ran
    assert resumed.epochs_run == full.epochs_run == 4
    for (k, a), (k2, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert k == k2
        assert torch.equal(a, b), k
    assert [h["val_mae"] for h in resumed.history] == [h["val_mae"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch
    for sub in ("", "last"):
        a, _ = load_model(tmp_path / "full" / sub)
        b, _ = load_model(tmp_path / "killed" / sub)
        for (k, x), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, z), (sub, k)


def test_resume_refuses_other_settings(tmp_path):
    _small_run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="different training settings"):
        _small_run(tmp_path, epochs=2, loss="robust")


def test_best_checkpoint_and_early_stopping(tmp_path):
    graphs, y = mp20_graphs()
    # a learning rate far too high makes validation worse quickly: patience must stop the run
    cfg = TrainConfig(epochs=30, batch_size=4, lr=0.5, lr_min_factor=1.0, val_every=1, patience=3, seed=1)
    result = train_model(_model(1), graphs[:12], y[:12], graphs[12:16], y[12:16], cfg, meta=_meta(y[:12]),
                         directory=tmp_path)
    assert result.stopped_early and result.epochs_run < 30
    assert result.epochs_run - result.best_epoch >= 3
    vals = [h["val_mae"] for h in result.history]
    assert result.best_val_mae == pytest.approx(min(vals))
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["metrics"]["best_epoch"] == result.best_epoch
    last = json.loads((tmp_path / "last" / "config.json").read_text())
    assert last["metrics"]["epoch"] == result.epochs_run
    # a resumed run that had stopped early does not train again
    again = train_model(_model(1), graphs[:12], y[:12], graphs[12:16], y[12:16], cfg, meta=_meta(y[:12]),
                        directory=tmp_path)
    assert again.epochs_run == result.epochs_run and again.stopped_early


def test_robust_loss_matches_formula_and_trains(tmp_path):
    pred, log_std, y = torch.tensor([0.0, 1.0]), torch.tensor([0.0, np.log(2.0)]), torch.tensor([1.0, 1.0])
    expected = (2**0.5 + np.log(2.0)) / 2  # sqrt(2)|1-0|e^0 + 0 and sqrt(2)*0 + log 2
    assert float(robust_l1_loss(pred, log_std, y)) == pytest.approx(expected)
    _, result = _small_run(tmp_path, epochs=3, loss="robust")
    assert np.isfinite([h["train_loss"] for h in result.history]).all()


def test_robust_loss_needs_log_std_output(tmp_path):
    graphs, y = mp20_graphs()
    arch = ARCH.model_copy(update={"robust": False})
    meta = _meta(y[:4]).model_copy(update={"architecture": arch})
    with pytest.raises(InvalidInputError, match="log-std"):
        train_model(CGAT(arch), graphs[:4], y[:4], [], [], TrainConfig(epochs=1, loss="robust"), meta=meta,
                    directory=tmp_path)


def test_collate_with_targets_keeps_order():
    graphs, y = mp20_graphs()
    batch, t = collate_with_targets([GraphDataset(graphs[:3], y[:3])[i] for i in (2, 0, 1)])
    assert batch.n_crystals == 3
    assert torch.equal(t, torch.tensor([y[2], y[0], y[1]], dtype=torch.float32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_world_size_one_gloo_smoke(tmp_path, monkeypatch):
    import torch.distributed as dist

    for key, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    try:
        model, result = _small_run(tmp_path, epochs=2, device="cpu")
        assert dist.is_initialized() and dist.get_backend() == "gloo" and dist.get_world_size() == 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert result.epochs_run == 2
    saved, meta = load_model(tmp_path / "last")
    for k, v in model.state_dict().items():  # the unwrapped module was saved (no "module." prefix)
        assert torch.equal(saved.state_dict()[k], v)
