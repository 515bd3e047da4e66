"""CLI tests of `screener run` and `screener status` (bad inputs, --json, run + resume with fake components)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "campaign"))
from campaign_fakes import count_performed, fake_factory, make_structures  # noqa: E402


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--budget", "5", "--candidates", "missing.extxyz"], "candidates file missing.extxyz does not exist"),
        (["run", "--budget", "0"], "--budget must be > 0"),
        (["run", "--budget", "-3"], "--budget must be > 0"),
        (["run", "--budget", "5", "--backend", "gaussian"], "unknown backend 'gaussian'"),
        (["run", "--budget", "5", "--executor", "slurm"], "unknown executor 'slurm'"),
        (["run", "--budget", "5", "--budget-unit", "dollars"], "unknown budget unit 'dollars'"),
        (["run", "--budget", "5", "--policy", "no-such-policy"], "no-such-policy"),
        (["run"], "a new campaign needs --budget"),
        (["status", "nowhere"], "campaign folder nowhere does not exist"),
        (["run", "--budget", "5", "--backend-option", "path"], "--backend-option 'path': expected KEY=VALUE"),
        (["run", "--budget", "5", "--references", "nope.json"], "references 'nope.json'"),
        (["run", "--budget", "5", "--scan-model", "nowhere"], "--scan-model nowhere: no such folder"),
        (["run", "--budget", "5", "--scan-model", "."], "not a screener ensemble (no ensemble.json in it"),
    ],
)
def test_bad_inputs_one_line_errors(args, message, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not any(p.name.startswith("campaign-") for p in tmp_path.iterdir())  # nothing half-made left behind


def test_scan_model_is_stored_and_a_resume_with_another_is_refused(run_cli, tmp_path, monkeypatch):
    import screener.campaign.api as api
    import screener.campaign.components as components
    from screener.campaign.ledger import Ledger

    monkeypatch.setattr(components, "build_components", fake_factory(tmp_path / "store"))
    monkeypatch.setattr(api, "_read_candidates", lambda paths: make_structures(6))
    cands = tmp_path / "cands.extxyz"
    cands.write_text("")
    scan_models = []
    for name in ("scan-a", "scan-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ensemble.json").write_text("{}")
        scan_models.append(tmp_path / name)
    camp = tmp_path / "camp"
    code, _, err = run_cli(["run", "--budget", "6", "--candidates", cands, "--campaign", camp, "--batch", "2",
                            "--rounds", "1", "--scan-model", scan_models[0]])
    assert code == 0, err
    with Ledger.in_dir(camp, read_only=True) as ledger:
        assert ledger.get_meta("config")["scan_model"] == str(scan_models[0].resolve())
    code, _, err = run_cli(["run", "--campaign", camp, "--scan-model", scan_models[1]])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--scan-model {scan_models[1].resolve()} (campaign: {scan_models[0].resolve()})" in err
    code, _, err = run_cli(["run", "--campaign", camp, "--scan-model", scan_models[0]])  # the same one: resumes
    assert code == 0, err


def test_not_a_campaign_folder(run_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(["status", tmp_path])
    assert code == 2 and "is not a screener campaign" in err
    code, _, err = run_cli(["run", "--campaign", tmp_path, "--budget", "3"])
    assert code == 2 and "is not a screener campaign" in err and len(err.strip().splitlines()) == 1


def test_run_resume_and_status_json(run_cli, tmp_path, monkeypatch):
    import screener.campaign.api as api
    import screener.campaign.components as components

    store = tmp_path / "store"
    monkeypatch.setattr(components, "build_components", fake_factory(store))
    monkeypatch.setattr(api, "_read_candidates", lambda paths: make_structures(8))
    cands = tmp_path / "cands.extxyz"
    cands.write_text("")  # exists; the fake reader ignores it
    camp = tmp_path / "camp"
    code, out, err = run_cli(["run", "--budget", "12", "--candidates", cands, "--campaign", camp, "--batch", "3",
                              "--rounds", "1"])
    assert code == 0, err
    assert "1 round(s) run" in out and f"screener run --campaign {camp}" in out
    code, out, err = run_cli(["run", "--campaign", camp])  # resume: config from the ledger
    assert code == 0, err
    code, out, err = run_cli(["status", camp, "--json"])
    assert code == 0, err
    status = json.loads(out.strip().splitlines()[-1])
    for key in ("budget_total", "budget_spent", "calculations", "stable_found", "rounds"):
        assert key in status
    assert status["budget_total"] == 12.0
    assert 0 < status["budget_spent"] <= 12.0
    assert status["finished"] is True
    n_jobs = sum(n for counts in status["calculations"].values() for n in counts.values())
    assert n_jobs == len(count_performed(store)) and set(count_performed(store).values()) == {1}
    assert status["calculations"]["pbe"]["done"] >= 1
    assert [r["round"] for r in status["rounds"]][:2] == [1, 2]
    assert set(status["stable_found"]) <= set(make_structures(8))
    code, out, err = run_cli(["status", camp])  # the rich tables
    assert code == 0 and "calculations" in out and "rounds" in out and "budget" in out
    # the finished campaign's marker round (state "empty", nothing bought) is not listed as a round that ran
    assert status["rounds"][-1]["state"] == "empty" and "(finished)" in out and " empty " not in out
