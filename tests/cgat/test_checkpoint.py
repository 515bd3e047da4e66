"""Checkpoints: safetensors + JSON round trip, no pickle needed, clear errors for broken or incompatible folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared data helper (importlib import mode)
from cgat_training_data import mp20_graphs  # noqa: E402

from screener.cgat.checkpoint import (
    ModelMeta,
    Normalization,
    load_meta,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from screener.cgat.config import get_preset
from screener.cgat.model import CGAT
from screener.cgat.training import predict_model
from screener.errors import CheckpointError


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(3)
    model = CGAT(get_preset("small"))
    meta = ModelMeta(
        architecture=get_preset("small"),
        normalization=Normalization(mean=-1.2, std=0.7),
        target="formation_energy_per_atom",
        target_unit="eV/atom",
        seed=3,
        metrics={"best_val_mae": 0.1},
    )
    save_model(model, meta, tmp_path / "m")
    return model, meta, tmp_path / "m"


def test_round_trip_gives_identical_predictions(saved):
    model, meta, path = saved
    graphs, _ = mp20_graphs()
    loaded, loaded_meta = load_model(path)
    a, sa = predict_model(model, graphs[:20], meta.normalization)
    b, sb = predict_model(loaded, graphs[:20], loaded_meta.normalization)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert loaded_meta.normalization == meta.normalization and loaded_meta.target_unit == "eV/atom"
    assert not loaded.training


def test_files_readable_without_pickle(saved):
    model, _, path = saved
    config = json.loads((path / "config.json").read_text())  # plain JSON
    assert config["architecture"]["atom_fea_len"] == get_preset("small").atom_fea_len
    assert config["normalization"] == {"mean": -1.2, "std": 0.7}
    assert {"screener", "torch", "python"} <= set(config["versions"])
    tensors = load_file(str(path / "model.safetensors"))  # safetensors: no code execution
    assert set(tensors) == set(model.state_dict())


def test_normalization_fit():
    n = Normalization.fit([1.0, 2.0, 3.0])
    assert n.mean == pytest.approx(2.0) and n.std == pytest.approx(np.std([1, 2, 3]))
    assert Normalization.fit([5.0]).std == 1.0  # a single value cannot set a scale


def test_missing_folder_and_files(tmp_path, saved):
    with pytest.raises(CheckpointError, match="not a screener model folder"):
        load_model(tmp_path / "nowhere")
    _, _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(path)


def test_incompatible_architecture_is_a_checkpoint_error(saved):
    _, _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["architecture"]["atom_fea_len"] = 48  # weights were saved for 32
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match the stored architecture"):
        load_model(path)
    config["architecture"]["no_such_option"] = 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="incompatible or corrupt"):
        load_meta(path)
    config["format_version"] = 99
    del config["architecture"]["no_such_option"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="newer"):
        load_meta(path)


def test_corrupt_weights(saved):
    _, _, path = saved
    (path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_model(path)


def test_training_state_weights_only(tmp_path):
    import random

    state = {"epoch": 3, "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}, "x": torch.ones(2)}
    save_training_state(state, tmp_path / "s.pt")
    back = load_training_state(tmp_path / "s.pt")
    assert back["epoch"] == 3 and torch.equal(back["x"], torch.ones(2))
    assert back["rng"]["python"] == random.getstate()
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_training_state(tmp_path / "bad.pt")


def test_saved_files_follow_the_umask_and_leave_no_temporary_file(saved, tmp_path):
    # a model folder is shared with colleagues and archived: its files are not private (tempfile.mkstemp made
    # them 0600 whatever the umask)
    import os

    model, meta, _ = saved
    old = os.umask(0o022)
    try:
        path = save_model(model, meta, tmp_path / "shared")
        save_training_state({"epoch": 1}, tmp_path / "shared" / "state.pt")
    finally:
        os.umask(old)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}
    assert not [p.name for p in files if p.name.startswith(".")]
