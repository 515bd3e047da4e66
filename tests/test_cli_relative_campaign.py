"""`screener run --campaign DIR` with a relative DIR on the real components: jobflow runs each job inside its own
folder (chdir), so every path the job store uses must be absolute. Regression test of a failure seen in `make demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_relative_campaign_folder_runs_real_jobs(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCREENER_CACHE_DIR": str(tmp_path / "cache")}
    # the defaults of `make demo` (shipped model and candidates), a relative folder and a small budget
    run = [sys.executable, "-m", "screener.cli", "run", "--budget", "10", "--batch", "4", "--rounds", "1",
           "--campaign", "camp"]
    proc = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # before the fix every job's first store write failed (and was redone from the parent's folder)
    assert "failed with exception" not in proc.stderr + proc.stdout
    from screener.campaign import Ledger

    with Ledger.in_dir(tmp_path / "camp") as ledger:
        jobs = ledger.jobs()
    assert jobs and all(j.state == "done" for j in jobs), [j.failure_reason for j in jobs]
