"""`screener train` / `screener predict` end to end on 10 real structures, and their one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "cgat"))
from cgat_training_data import TARGET, write_subset  # noqa: E402

from screener.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    return write_subset(tmp_path_factory.mktemp("data") / "ten.csv", 10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ten):
    out = tmp_path_factory.mktemp("model") / "m"
    code = None
    try:
        main(["train", "--data", str(ten), "--target", TARGET, "--preset", "small", "--epochs", "2",
              "--ensemble", "2", "--out", str(out), "--seed", "3", "--batch-size", "4"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    return out


def _overlapping_poscar(path: Path) -> Path:
    path.write_text("bad\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa Cl\n1 1\ndirect\n0 0 0\n0.01 0 0\n")
    return path


def test_train_writes_ensemble_and_card(trained):
    info = json.loads((trained / "ensemble.json").read_text())
    assert info["members"] == ["member_0", "member_1"] and info["seeds"] == [3, 4]
    assert info["train_config"]["epochs"] == 2 and info["train_config"]["batch_size"] == 4
    assert info["command"].startswith("screener train --data") and "--ensemble 2" in info["command"]
    card = (trained / "MODEL_CARD.md").read_text()
    assert info["command"] in card and "eV/atom" in card


def test_predict_csv_columns_and_order(trained, ten, tmp_path, run_cli):
    out = tmp_path / "p" / "pred.csv"
    code, stdout, err = run_cli(["predict", "--model", trained, ten, "-o", out])
    assert code == 0, err
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    with ten.open() as fh:
        src = list(csv.DictReader(fh))
    # trained with the default L1 loss: no aleatoric column (the log-std output is trained only by --loss robust)
    # the unit is in every value column's name (formation_energy_per_atom is in eV/atom)
    assert list(rows[0]) == ["id", "formula", f"{TARGET}_mean_ev_per_atom", f"{TARGET}_std_ev_per_atom"]
    assert [r["id"] for r in rows] == [r["material_id"] for r in src]  # one row per structure, input order
    assert [r["formula"] for r in rows] == [r["pretty_formula"] for r in src]
    std = np.array([float(r[f"{TARGET}_std_ev_per_atom"]) for r in rows])
    assert np.all(np.isfinite([float(r[f"{TARGET}_mean_ev_per_atom"]) for r in rows])) and np.all(std > 0)
    assert "predicted 10 structures" in stdout


def test_predict_skip_invalid(trained, ten, tmp_path, run_cli):
    bad = _overlapping_poscar(tmp_path / "POSCAR_bad")
    code, _, err = run_cli(["predict", "--model", trained, bad, ten, "-o", tmp_path / "p.csv"])
    assert code == 2 and err.count("\n") == 1 and "POSCAR_bad" in err
    code, stdout, err = run_cli(["predict", "--model", trained, bad, ten, "-o", tmp_path / "p.csv", "--skip-invalid"])
    assert code == 0 and "(1 skipped)" in stdout
    with (tmp_path / "p.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}", "--target", TARGET], "nope.cif"),
        (["--data", "{ten}", "--target", "no_such_target"], "missing target 'no_such_target'"),
        (["--data", "{ten}", "--target", TARGET, "--transfer", "head"], "--transfer needs --init"),
        (["--data", "{ten}", "--target", TARGET, "--init", "{empty}", "--transfer", "full"], "not a screener model"),
        (["--data", "{ten}", "--target", TARGET, "--init", "{broken}", "--transfer", "head"],
         "do not match the stored architecture"),
        (["--data", "{ten}", "--target", TARGET, "--preset", "huge"], "unknown preset"),
    ],
)
def test_train_errors_are_one_line(args, message, ten, trained, tmp_path, run_cli):
    import shutil

    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(trained / "member_0", broken, ignore=shutil.ignore_patterns("last", "train_state.pt"))
    config = json.loads((broken / "config.json").read_text())
    config["architecture"]["atom_fea_len"] += 8  # an incompatible checkpoint
    (broken / "config.json").write_text(json.dumps(config))
    fill = {"{missing}": tmp_path / "nope.cif", "{ten}": ten, "{empty}": tmp_path / "empty", "{broken}": broken}
    argv = ["train", *[fill.get(a, a) for a in args], "--preset" if "--preset" not in args else "--seed",
            "small" if "--preset" not in args else "0", "--epochs", "1", "--out", tmp_path / "out"]
    code, _, err = run_cli(argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_predict_bad_model_folder(tmp_path, ten, run_cli):
    code, _, err = run_cli(["predict", "--model", tmp_path, ten, "-o", tmp_path / "p.csv"])
    assert code == 2 and err.count("\n") == 1 and "not a screener model" in err


def test_demo_trains_and_predicts_unseen_structures(tmp_path, run_cli):
    code, stdout, err = run_cli(["demo", "--out", tmp_path / "demo", "--epochs", "1", "--ensemble", "1"])
    assert code == 0, err
    with (tmp_path / "demo" / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and "mp-1114490" in stdout and "MAE" in stdout
    info = json.loads((tmp_path / "demo" / "model" / "ensemble.json").read_text())
    assert info["n_structures"] == 180 and info["command"].startswith("screener demo")


def test_predict_has_aleatoric_column_after_robust_training(ten, tmp_path, run_cli):
    model, out = tmp_path / "robust", tmp_path / "pred.csv"
    code, _, err = run_cli(["train", "--data", ten, "--target", TARGET, "--preset", "small", "--epochs", "1",
                            "--ensemble", "1", "--loss", "robust", "--out", model, "--batch-size", "4"])
    assert code == 0, err
    code, _, err = run_cli(["predict", "--model", model, ten, "-o", out])
    assert code == 0, err
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-1] == f"{TARGET}_aleatoric_std_ev_per_atom"
    assert all(float(r[f"{TARGET}_aleatoric_std_ev_per_atom"]) > 0 for r in rows)
