"""bench/campaign_merge.py: a rerun policy beside the other policies' earlier runs, summarised again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from campaign_merge import MergeError, main, merge  # noqa: E402


def _run(found: int, mae: float, seed: int) -> dict:
    return {"found": found, "found_per_unit": found / 300, "fraction_of_oracle": found / 39, "selected": 50,
            "precision": found / 50, "daf": found / 50 / 0.027, "n_pbe": 60, "n_scan": 50, "wall_s": 100.0,
            "initial_model": {"pool_pbe_e_form_mae_ev_per_atom": mae, "training_seed": seed}}


def _result(runs: dict[str, dict[int, int]], command: str) -> dict:
    mae = {0: 0.357, 1: 0.356, 2: 0.351}
    return {"command": command, "hardware": "cpu x2", "cost_model": "flat", "world": {"n_structures": 2439},
            "pool": {"n_truly_stable": 39},
            "settings": {"budget_pbe_equivalent": 300.0, "batch": 20, "seeds": [0, 1, 2], "policies": list(runs)},
            "runs": {p: {str(s): _run(f, mae[s], s) for s, f in by_seed.items()} for p, by_seed in runs.items()}}


BASE = _result({"expected-value": {0: 18, 1: 13, 2: 21}, "scan-only": {0: 12, 1: 13, 2: 16},
                "random": {0: 0, 1: 2, 2: 0}}, "base")


def test_the_rerun_policy_replaces_its_runs_and_the_ratio_is_recomputed(tmp_path):
    new = _result({"expected-value": {0: 17, 1: 17, 2: 17}}, "rerun")
    out = merge(BASE, [new])
    assert {s: r["found"] for s, r in out["runs"]["expected-value"].items()} == {"0": 17, "1": 17, "2": 17}
    assert out["runs"]["scan-only"] == BASE["runs"]["scan-only"]
    ratio = out["summary"]["expected-value"]["found_per_unit_vs_best_baseline"]
    assert ratio["mean"] == pytest.approx((17 / 12 + 17 / 13 + 17 / 16) / 3, abs=1e-4)
    assert out["merged_from"]["policy_source"] == {"expected-value": "new[0] seeds 0,1,2", "scan-only": "base",
                                                  "random": "base"}
    assert out["complete"]
    # a variant file's runs can stand in for a policy under its name
    # a variant file's runs can stand in for a policy under its name, seed by seed (the other seeds stay)
    renamed = merge(BASE, [_result({"ev-variant": {0: 19}}, "variant")], {"ev-variant": "expected-value"})
    assert {s: r["found"] for s, r in renamed["runs"]["expected-value"].items()} == {"0": 19, "1": 13, "2": 21}
    assert renamed["merged_from"]["policy_source"]["expected-value"] == "base; new[0] (ev-variant) seeds 0"
    # the command line writes the same and says where each policy came from
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    (tmp_path / "n.json").write_text(json.dumps(new))
    written = main(["--base", str(tmp_path / "b.json"), "--new", str(tmp_path / "n.json"),
                    "--output", str(tmp_path / "o.json")])
    assert json.loads((tmp_path / "o.json").read_text())["summary"] == written["summary"] == out["summary"]


def test_runs_from_another_initial_model_or_budget_are_refused(tmp_path, capsys):
    other_model = _result({"expected-value": {0: 17}}, "rerun")
    other_model["runs"]["expected-value"]["0"]["initial_model"]["pool_pbe_e_form_mae_ev_per_atom"] = 0.363
    with pytest.raises(MergeError, match="another initial model"):
        merge(BASE, [other_model])
    other_budget = _result({"expected-value": {0: 17}}, "rerun")
    other_budget["settings"]["budget_pbe_equivalent"] = 1000.0
    with pytest.raises(MergeError, match="budget_pbe_equivalent"):
        merge(BASE, [other_budget])
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    (tmp_path / "n.json").write_text(json.dumps(other_model))
    with pytest.raises(SystemExit) as exc:
        main(["--base", str(tmp_path / "b.json"), "--new", str(tmp_path / "n.json")])
    assert str(exc.value).startswith("error: cannot merge: seed 0")


def test_a_new_default_rerun_on_some_seeds_stands_alone_once_the_old_one_is_renamed(tmp_path, capsys):
    new = _result({"ev-new": {0: 20}}, "rerun seed 0")
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    (tmp_path / "n.json").write_text(json.dumps(new))
    out = main(["--base", str(tmp_path / "b.json"), "--new", str(tmp_path / "n.json"),
                "--base-rename", "expected-value=ev-old", "--rename", "ev-new=expected-value"])
    assert {s: r["found"] for s, r in out["runs"]["expected-value"].items()} == {"0": 20}  # not the old seeds 1-2
    assert {s: r["found"] for s, r in out["runs"]["ev-old"].items()} == {"0": 18, "1": 13, "2": 21}
    assert out["summary"]["expected-value"]["found"]["n"] == 1
    for bad in (["expected-vale=x"], ["expected-value=scan-only"]):
        with pytest.raises(SystemExit, match="cannot merge"):
            main(["--base", str(tmp_path / "b.json"), "--new", str(tmp_path / "n.json"), "--base-rename", *bad])
