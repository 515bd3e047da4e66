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


def _run_bench(script: str, args: list[str]) -> dict:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_transfer_and_scaling_benchmarks_run_end_to_end(small_world, tmp_path):
    """bench/transfer.py and bench/scaling.py on the 40-structure world: one JSON line, the fields the issue names."""
    import json

    out, _ = small_world
    common = ["--world", str(out), "--preset", "small", "--members", "1", "--work-dir", str(tmp_path), "--n-jobs", "1"]
    transfer = _run_bench("transfer.py", [*common, "--epochs-pbe", "2", "--epochs-scan", "2", "--epochs-transfer", "2",
                                          "--properties", "e_form", "--output", str(tmp_path / "t.json")])
    maes = transfer["results"]["e_form"]["test_mae_ev_per_atom"]
    assert transfer["mode"].startswith("custom (full preset with preset=small, members=1")  # never labelled "full"
    assert set(maes) == {"none", "head", "full"} and all(np.isfinite(v) for v in maes.values())
    assert json.loads((tmp_path / "t.json").read_text())["results"] == transfer["results"]

    scaling = _run_bench("scaling.py", [*common, "--epochs", "2", "--scan-sizes", "4,8,16", "--pbe-sizes", "8,16,30",
                                        "--fixed-scan", "8", "--output", str(tmp_path / "s.json"),
                                        "--plot", str(tmp_path / "s.png")])
    for name in ("none", "full_vs_scan", "full_vs_pbe", "joint_full_transfer"):
        fit = scaling["fits"][name]
        assert np.isfinite(fit["c"]) and np.isfinite(fit["c_std"]), name
    assert np.isfinite(scaling["fits"]["none"]["a"]) and np.isfinite(scaling["fits"]["full_vs_pbe"]["b"])
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_shipped_model_benchmark_reproduces_the_recorded_test_mae(small_world, tmp_path):
    """bench/shipped_model.py re-creates the ensemble's test split (it exits non-zero when the MAE does not match)."""
    from screener.cgat.api import train_from_files

    out, _ = small_world
    model = tmp_path / "model"
    summary = train_from_files([out / "pbe"], target="e_form", out_dir=model, preset="small", epochs=2, n_members=2,
                               batch_size=8, seed=5)
    result = _run_bench("shipped_model.py", ["--model", str(model), "--data", str(out / "pbe"),
                                             "--output", str(tmp_path / "m.json")])
    assert abs(result["reproduced_test_mae"] - summary.metrics["ensemble_test_mae"]) < 1e-4
    assert result["all"]["n"] == result["n_test"] == sum(g["n"] for g in result["by_origin"].values())
    assert set(result["by_origin"]) <= {"real", "substitution"}
    stability = result["all"]["stability"]
    assert stability["tp"] + stability["fn"] == round(stability["prevalence"] * stability["n"])
