"""FireWorks for real across processes: screener submits and returns, a separate worker (``rlaunch rapidfire``, what
``qlaunch`` starts on a node) runs the jobs later, a later ``screener collect`` / ``screener run`` collects them.

The LaunchPad is mongomock with persistence (FireWorks' ``MONGOMOCK_SERVERSTORE_FILE``; no MongoDB server here): each
process loads the file when it connects and writes it back when it exits, so the processes take turns, as here.
The campaign side is the real CLI with fast fakes for the model, hulls and planner (``fw_fakes.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fireworks")
pytest.importorskip("mongomock_persistence")

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path):
    """A persistent mongomock LaunchPad file, its launchpad.yaml, six candidates and the processes' environment."""
    sys.path.insert(0, str(HERE.parent / "campaign"))
    try:
        from campaign_fakes import make_structures
    finally:
        sys.path.pop(0)
    db = tmp_path / "launchpad_db.json"
    db.write_text("{}")
    lp = tmp_path / "launchpad.yaml"
    lp.write_text("host: localhost\nname: screener_fw_workers\n")
    cands = tmp_path / "candidates"
    cands.mkdir()
    for sid, structure in make_structures(6).items():
        structure.to(filename=str(cands / f"{sid}.cif"))
    env = {**os.environ, "MONGOMOCK_SERVERSTORE_FILE": str(db), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "campaign"), os.environ.get("PYTHONPATH", "")])}
    reset = "import sys; from fireworks import LaunchPad; LaunchPad.from_file(sys.argv[1]).reset('', require_password=False)"
    subprocess.run([sys.executable, "-c", reset, str(lp)], env=env, check=True, timeout=60, capture_output=True)
    return {"tmp": tmp_path, "lp": lp, "cands": cands, "env": env, "campaign": tmp_path / "campaign"}


def screener(cluster, *args, timeout=60):
    """The real CLI (with fast fakes) in its own process; returns (exit code, stdout+stderr)."""
    proc = subprocess.run([sys.executable, str(HERE / "fw_fakes.py"), *args], env=cluster["env"], cwd=cluster["tmp"],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def worker(cluster, timeout=60):
    """``rlaunch rapidfire`` against the same LaunchPad, as a node would run it."""
    runs = cluster["tmp"] / "node"
    runs.mkdir(exist_ok=True)
    proc = subprocess.run([str(BIN / "rlaunch"), "-l", str(cluster["lp"]), "rapidfire"], env=cluster["env"],
                          cwd=runs, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def start(cluster):
    return screener(cluster, "run", "--campaign", str(cluster["campaign"]), "--candidates", str(cluster["cands"]),
                    "--budget", "8", "--batch", "4", "--executor", "fireworks", "--executor-option",
                    f"launchpad={cluster['lp']}", "--executor-option", "launch_here=false", "--no-wait")


def jobs(cluster):
    from screener.campaign.ledger import Ledger

    with Ledger.in_dir(cluster["campaign"], read_only=True) as ledger:
        return ledger.jobs(), ledger.rounds(), ledger.budget()


def test_submit_return_then_a_late_worker_then_collect(cluster):
    code, out = start(cluster)
    assert code == 0, out
    assert "4 calculation(s) with the executor (4 pending)" in out and "screener collect" in out
    submitted, rounds, budget = jobs(cluster)
    assert [j.state for j in submitted] == ["submitted"] * 4 and budget.reserved > 0 and budget.spent == 0
    assert [r["state"] for r in rounds] == ["planned"]

    # polled again before any worker ran: still pending, nothing charged, nothing resubmitted
    code, out = screener(cluster, "collect", str(cluster["campaign"]))
    assert code == 0 and "4 pending" in out, out
    again, _, budget2 = jobs(cluster)
    assert [j.state for j in again] == ["submitted"] * 4 and budget2.spent == 0 and budget2.reserved == budget.reserved

    proc = worker(cluster)  # late, in its own process; screener is not running
    assert proc.stdout.count("fake_dft") == 0 and "Rocket finished" in proc.stdout + proc.stderr

    code, out = screener(cluster, "collect", str(cluster["campaign"]))
    assert code == 0, out
    assert "1 round(s) run" in out and "pending" in out  # round 1 collected and learned, round 2 submitted
    after, rounds, budget3 = jobs(cluster)
    first = [j for j in after if j.round == 1]
    assert [j.state for j in first] == ["done"] * 4 and all(j.result["label"] == "fake DFT" for j in first)
    assert [r["state"] for r in rounds] == ["finished", "planned"]
    assert {j.state for j in after if j.round == 2} == {"submitted"}
    assert budget3.spent == pytest.approx(sum(j.actual_cost for j in first))


def test_worker_started_after_run_returned_completes_the_round_on_the_next_run(cluster):
    code, out = start(cluster)
    assert code == 0 and "pending" in out, out
    worker(cluster)
    code, out = screener(cluster, "run", "--campaign", str(cluster["campaign"]), "--poll-interval", "0.1")
    assert code == 0, out
    after, rounds, _ = jobs(cluster)
    assert rounds[0]["state"] == "finished" and all(j.state == "done" for j in after if j.round == 1)
    assert "round 1" in out.lower() or "1 round(s) run" in out


def test_a_job_deleted_from_the_launchpad_is_charged_by_the_rule_not_bought_again(cluster):
    code, out = start(cluster)
    assert code == 0, out
    submitted, _, budget = jobs(cluster)
    victim = submitted[0]
    script = ("import sys; from fireworks import LaunchPad; lp = LaunchPad.from_file(sys.argv[1]); "
              "fw = lp.fireworks.find_one({'spec._tasks.job.uuid': sys.argv[2]}); lp.delete_wf(fw['fw_id'])")
    subprocess.run([sys.executable, "-c", script, str(cluster["lp"]), victim.uuid], env=cluster["env"], check=True,
                   timeout=60)
    worker(cluster)
    code, out = screener(cluster, "collect", str(cluster["campaign"]))
    assert code == 0, out
    after, _, _ = jobs(cluster)
    lost = next(j for j in after if j.uuid == victim.uuid)
    assert lost.state == "failed" and "lost" in lost.failure_reason and "charged" in lost.failure_reason
    assert lost.actual_cost is None  # the ledger charges its reserved estimate
    again = [j for j in after if (j.structure_id, j.fidelity) == (victim.structure_id, victim.fidelity)]
    assert len(again) == 1  # never re-bought


def test_bad_launchpad_input_is_one_line_and_leaves_the_campaign_untouched(cluster):
    code, out = start(cluster)
    assert code == 0, out
    before = json.dumps([(j.uuid, j.state) for j in jobs(cluster)[0]])
    missing = cluster["tmp"] / "nope.yaml"
    code, out = screener(cluster, "run", "--campaign", str(cluster["tmp"] / "new"), "--candidates",
                         str(cluster["cands"]), "--budget", "8", "--executor", "fireworks", "--executor-option",
                         f"launchpad={missing}", "--no-wait")
    assert code == 2 and out.strip().count("\n") == 0 and "does not exist" in out, out
    assert not (cluster["tmp"] / "new").exists()
    unreachable = cluster["tmp"] / "far.yaml"
    unreachable.write_text("host: mongodb://127.0.0.1:9/fw\nuri_mode: true\nname: fw\n"
                           "mongoclient_kwargs:\n  serverSelectionTimeoutMS: 300\n")
    env = {k: v for k, v in cluster["env"].items() if k != "MONGOMOCK_SERVERSTORE_FILE"}
    proc = subprocess.run([sys.executable, str(HERE / "fw_fakes.py"), "run", "--campaign", str(cluster["tmp"] / "new"),
                           "--candidates", str(cluster["cands"]), "--budget", "8", "--executor", "fireworks",
                           "--executor-option", f"launchpad={unreachable}", "--no-wait"], env=env,
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and out.strip().count("\n") == 0 and "cannot reach the LaunchPad" in out, out
    assert not (cluster["tmp"] / "new").exists()
    assert json.dumps([(j.uuid, j.state) for j in jobs(cluster)[0]]) == before


def test_a_worker_killed_mid_job_loses_nothing_the_job_is_retried(cluster):
    """SIGKILL a worker inside a job: the next worker runs it again and the round completes, nothing failed.

    (With this file LaunchPad the killed worker's claim never reaches the file, so the firework is READY again; on
    MongoDB it stays RUNNING until ``lost_run_timeout_s`` reruns it: test_fireworks_executor.py.)
    """
    import time

    code, out = start(cluster)
    assert code == 0, out
    runs = cluster["tmp"] / "node"
    runs.mkdir()
    slow = subprocess.Popen([str(BIN / "rlaunch"), "-l", str(cluster["lp"]), "rapidfire"], cwd=runs,
                            env={**cluster["env"], "FAKE_DFT_SLEEP_S": "60"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not list(runs.glob("launcher_*")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(runs.glob("launcher_*")), "the worker never started a job"
        time.sleep(1.0)  # inside fake_dft's sleep
    finally:
        slow.kill()
        slow.wait()
    worker(cluster)
    code, out = screener(cluster, "collect", str(cluster["campaign"]))
    assert code == 0, out
    after, rounds, _ = jobs(cluster)
    assert rounds[0]["state"] == "finished"
    assert [j.state for j in after if j.round == 1] == ["done"] * 4
