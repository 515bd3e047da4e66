"""Transfer learning: head-only keeps the body bit-identical, full trains everything, normalisation handling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared data helper (importlib import mode)
from cgat_training_data import mp20_graphs  # noqa: E402

from screener.cgat.checkpoint import ModelMeta, Normalization, load_model, save_model
from screener.cgat.config import get_preset
from screener.cgat.model import CGAT
from screener.cgat.training import TrainConfig, train_model
from screener.cgat.transfer import freeze_for_transfer, load_for_transfer, resolve_init_dirs
from screener.errors import CheckpointError, InvalidInputError

ARCH = get_preset("small").model_copy(update={"atom_fea_len": 24})  # not a preset: must come from the checkpoint


@pytest.fixture
def pretrained(tmp_path):
    torch.manual_seed(0)
    model = CGAT(ARCH)
    meta = ModelMeta(architecture=ARCH, normalization=Normalization(mean=-1.0, std=1.0), target="e_form",
                     target_unit="eV/atom")
    return save_model(model, meta, tmp_path / "pbe")


def _fine_tune(init_dir, mode, directory, epochs=3):
    graphs, y = mp20_graphs()
    model, meta, params = load_for_transfer(init_dir, mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=3e-3, val_every=1, seed=5)
    new_meta = meta.model_copy(update={"normalization": Normalization.fit(y[20:32])})
    train_model(model, graphs[20:32], y[20:32], graphs[32:36], y[32:36], cfg, meta=new_meta, directory=directory,
                parameters=params)
    return model, before


def test_head_transfer_leaves_frozen_weights_bit_identical(pretrained, tmp_path):
    model, before = _fine_tune(pretrained, "head", tmp_path / "head")
    head = {f"head.{k}" for k in model.head.state_dict()}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "the head did not train"
    assert changed <= head, f"frozen weights changed: {sorted(changed - head)[:5]}"
    assert all(p.grad is None for p in model.body_parameters())  # no backward through the body
    # the saved checkpoint keeps the checkpoint's architecture and the frozen body
    saved, meta = load_model(tmp_path / "head" / "last")
    assert meta.architecture == ARCH
    for k in set(before) - head:
        assert torch.equal(saved.state_dict()[k], before[k]), k


def test_full_transfer_trains_the_body(pretrained, tmp_path):
    model, before = _fine_tune(pretrained, "full", tmp_path / "full")
    body_changed = [k for k, v in model.state_dict().items() if not k.startswith("head.") and not torch.equal(v, before[k])]
    assert body_changed


def test_freeze_for_transfer_parameter_sets():
    model = CGAT(ARCH)
    head = freeze_for_transfer(model, "head")
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    assert not any(p.requires_grad for p in model.body_parameters())
    full = freeze_for_transfer(model, "full")
    assert len(full) == len(list(model.parameters())) and all(p.requires_grad for p in full)
    with pytest.raises(InvalidInputError, match="unknown transfer mode"):
        freeze_for_transfer(model, "partial")


def test_keep_normalization_checks_units(pretrained):
    with pytest.raises(CheckpointError, match="same target unit"):
        load_for_transfer(pretrained, "full", target_unit="eV", keep_normalization=True)
    _, meta, _ = load_for_transfer(pretrained, "full", target_unit="eV/atom", keep_normalization=True)
    assert meta.normalization.mean == -1.0


def test_resolve_init_dirs(pretrained, tmp_path):
    assert resolve_init_dirs(pretrained) == [pretrained]
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_init_dirs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a screener model or ensemble folder"):
        resolve_init_dirs(tmp_path / "empty")
