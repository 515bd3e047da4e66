"""A campaign killed with SIGKILL at random points resumes without repeating or losing a calculation.

The worker is a real subprocess running the loop with the fake components; the fake executor leaves one file per
calculation it performs, so repeats and losses are counted from the files, not from the ledger's own account.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from campaign_fakes import count_performed

from screener.campaign import Ledger

HERE = Path(__file__).parent

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from campaign_fakes import fake_factory, make_structures
    from screener.campaign import Campaign, CampaignConfig

    camp_dir, store = Path(sys.argv[1]), Path(sys.argv[2])
    factory = fake_factory(store, on_compute=lambda flow: time.sleep(0.03))
    if (camp_dir / "ledger.sqlite").exists():
        camp = Campaign.open(camp_dir, factory)
    else:
        camp = Campaign.create(camp_dir, CampaignConfig(budget_total=30, batch_size=4), make_structures(12), factory)
    print("RUNNING", flush=True)
    print(camp.run(), flush=True)
    """
)


def _start(script: Path, camp: Path, store: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(camp), str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_at_random_points_then_resume(tmp_path):
    rng = random.Random(20261125)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    camp, store = tmp_path / "camp", tmp_path / "store"
    kills = 0
    for _ in range(2):
        proc = _start(script, camp, store)
        target = len(list(store.glob("*__*.json"))) + rng.randint(1, 5)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list(store.glob("*__*.json"))) >= target:
                time.sleep(rng.uniform(0.0, 0.15))  # land anywhere: mid-calculation, ledger write, training
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills == 2, "the campaign finished before it could be killed; make it longer"
    final = _start(script, camp, store)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]
    assert "'finished': True" in out

    performed = count_performed(store)
    with Ledger.in_dir(camp) as ledger:
        jobs = ledger.jobs()
        assert set(performed.values()) == {1}, f"repeated: {[k for k, v in performed.items() if v > 1]}"
        assert set(performed) == {(j.structure_id, j.fidelity) for j in jobs}, "a calculation was lost"
        assert all(j.state == "done" and json.loads(j.result_json)["success"] for j in jobs)
        budget = ledger.budget()
        assert budget.reserved == 0.0 and budget.spent <= 30 + 1e-9
        assert budget.spent > 20  # it really spent the budget across the kills
        states = [r["state"] for r in ledger.rounds()]
        assert states[-1] == "empty" and set(states[:-1]) == {"finished"}
