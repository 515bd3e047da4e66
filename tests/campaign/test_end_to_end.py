"""End to end on the real components (CGAT ensemble, CHGNet stand-in, local jobflow executor, FidelityHull, the
scaling-law policy) with a tiny model and a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.mark.slow
def test_tiny_campaign_on_real_components(tmp_path, monkeypatch):
    monkeypatch.setenv("SCREENER_CACHE_DIR", str(tmp_path / "cache"))
    from screener.campaign import Ledger, campaign_status
    from screener.campaign.api import run_campaign
    from screener.cgat.api import train_from_files

    train_from_files([DATA / "mp20_train_24.csv"], target="formation_energy_per_atom", out_dir=tmp_path / "model",
                     preset="small", epochs=2, n_members=2, seed=0)
    folder, summary = run_campaign(tmp_path / "camp", candidates=[DATA / "mp20_val_6.csv"], budget=8,
                                   model=tmp_path / "model", batch_size=3, rounds=1, fine_tune_epochs=1)
    assert summary["rounds_run"] == 1
    status = campaign_status(folder)
    assert 0 < status["budget_spent"] <= 8
    with Ledger.in_dir(folder) as ledger:
        jobs = ledger.jobs()
        assert jobs and all(j.state in ("done", "failed") for j in jobs)
        done = [j for j in jobs if j.state == "done"]
        assert done
        for job in done:
            result = json.loads(job.result_json)
            assert result["backend"] == "standin" and "stand-in" in result["label"]
            assert result["entry"]["data"]["fidelity"] == job.fidelity
        preds = ledger.predictions(1)
        assert len(preds) == 2 * 6 and all(p["e_hull_mean_ev_per_atom"] is not None for p in preds)
        assert len(ledger.hull_snapshots()) == 2
        decisions = ledger.decisions(1)
        assert decisions and all(d["reason"] for d in decisions)
        config = json.loads(ledger.get_meta("config") and json.dumps(ledger.get_meta("config")))
        assert config["model"] == str(tmp_path / "model") and config["unit_cpu_hours"] > 0
    # the second invocation resumes the same campaign with its stored config and never re-buys a calculation
    folder2, summary2 = run_campaign(folder, rounds=1)
    assert folder2 == folder
    with Ledger.in_dir(folder) as ledger:
        keys = [(j.structure_id, j.fidelity) for j in ledger.jobs()]
        assert len(keys) == len(set(keys)) and len(keys) >= len(jobs)
        assert ledger.budget().spent <= 8 + 1e-9
