"""One writer per campaign, and creation that is all or nothing (screener/campaign/folder.py).

Writers are real subprocesses (a flock is per process), running the CLI or the loop on the fake components.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from campaign_fakes import count_performed, make_structures

from screener.campaign import Campaign, CampaignConfig, Ledger
from screener.campaign.folder import CampaignBusyError, acquire_lock, lock_holder

HERE = Path(__file__).parent

# `screener run` on the fake components; argv: store, then the CLI arguments. With GATE=<file> the process waits
# until that file exists: at its first calculation, or (GATE_AT=creation) while building the campaign.
CLI_WORKER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {here!r})
    from campaign_fakes import fake_factory, make_structures
    import screener.campaign.api as api
    import screener.campaign.components as components

    def wait_for_gate(where):
        if os.environ.get("GATE") and os.environ.get("GATE_AT", "compute") == where:
            deadline = time.time() + 120
            while not os.path.exists(os.environ["GATE"]) and time.time() < deadline:
                time.sleep(0.02)

    base = fake_factory(sys.argv[1], on_compute=lambda flow: wait_for_gate("compute"))

    def factory(config, campaign_dir, ledger):
        if campaign_dir.name.startswith("."):  # creation: the components are built in the hidden creation folder
            wait_for_gate("creation")
        return base(config, campaign_dir, ledger)

    components.build_components = factory
    api._read_candidates = lambda paths: make_structures(10)
    from screener.cli import main
    main(sys.argv[2:])
    """
)


def _cli(tmp_path: Path, store: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "cli_worker.py"
    if not script.exists():
        script.write_text(CLI_WORKER.format(here=str(HERE)))
    (tmp_path / "c.extxyz").touch()
    return subprocess.Popen([sys.executable, str(script), str(store), *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _run_args(camp: Path, tmp_path: Path) -> list[str]:
    return ["run", "--campaign", str(camp), "--budget", "20", "--batch", "3", "--candidates", str(tmp_path / "c.extxyz")]


def _outcome(camp: Path) -> tuple:
    with Ledger.in_dir(camp, read_only=True) as ledger:
        jobs = sorted((j.structure_id, j.fidelity, j.state, j.round) for j in ledger.jobs())
        return jobs, round(ledger.budget().spent, 9), [(r["round"], r["state"]) for r in ledger.rounds()]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_lock_is_exclusive_between_processes_and_dies_with_its_holder(tmp_path):
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=5), make_structures(3),
                           _factory(tmp_path / "s"))
    camp.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from screener.campaign.folder import acquire_lock; "
         "acquire_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path / "c")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CampaignBusyError, match=rf"is being run by process {holder.pid} on host \S+ since"):
            Ledger.in_dir(tmp_path / "c")
        with pytest.raises(CampaignBusyError, match=f"process {holder.pid}"):
            Campaign.open(tmp_path / "c", _factory(tmp_path / "s"))
        assert lock_holder(tmp_path / "c")["pid"] == holder.pid
        with Ledger.in_dir(tmp_path / "c", read_only=True) as ledger:  # readers need no lock
            assert len(ledger.candidates()) == 3
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_holder(tmp_path / "c") is None  # released by the kernel when its holder died
    lock = acquire_lock(tmp_path / "c")
    lock.release()


def _factory(store: Path):
    from campaign_fakes import fake_factory

    return fake_factory(store)


def _serial_cli(tmp_path: Path, run_cli, monkeypatch) -> None:
    """The same `screener run` in this process, uninterrupted and alone: the reference."""
    import screener.campaign.api as api
    import screener.campaign.components as components
    from campaign_fakes import fake_factory

    with monkeypatch.context() as m:
        m.setattr(components, "build_components", fake_factory(tmp_path / "serial-store"))
        m.setattr(api, "_read_candidates", lambda paths: make_structures(10))
        code, _, err = run_cli(_run_args(tmp_path / "serial", tmp_path))
    assert code == 0, err


def test_second_run_is_refused_and_the_first_finishes_like_a_serial_run(tmp_path, run_cli, monkeypatch):

    store, camp = tmp_path / "store", tmp_path / "camp"
    gate = tmp_path / "gate"
    first = _cli(tmp_path, store, *_run_args(camp, tmp_path), env={"GATE": str(gate)})
    _wait_for(lambda: lock_holder(camp) is not None or first.poll() is not None)  # running, held at its first calc
    assert first.poll() is None, first.stderr.read()
    second = _cli(tmp_path, store, *_run_args(camp, tmp_path))
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"is being run by process {first.pid} on host" in lines[0], err
    code, out, err = run_cli(["status", camp, "--json"])  # a reader while the run writes
    assert code == 0, err
    assert json.loads(out)["running"]["pid"] == first.pid
    gate.touch()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    _serial_cli(tmp_path, run_cli, monkeypatch)
    assert _outcome(camp) == _outcome(tmp_path / "serial")
    assert set(count_performed(store).values()) == {1}  # nothing computed twice


def test_second_run_during_creation_is_refused(tmp_path):
    store, camp = tmp_path / "store", tmp_path / "camp"
    gate = tmp_path / "gate"
    first = _cli(tmp_path, store, *_run_args(camp, tmp_path), "--rounds", "1",
                 env={"GATE": str(gate), "GATE_AT": "creation"})
    _wait_for(lambda: list(tmp_path.glob(".camp.creating-*/run.lock")) and lock_holder(
        next(tmp_path.glob(".camp.creating-*"))) is not None)
    second = _cli(tmp_path, store, *_run_args(camp, tmp_path))
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and f"campaign {camp} is being created by process {first.pid}" in err, err
    assert "delete" not in err
    gate.touch()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert not list(tmp_path.glob(".camp.creating-*"))


# Campaign.create killed (os._exit, no clean-up runs) at one stage; argv: campaign, store, stage ("" = no kill).
CREATE_WORKER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {here!r})
    from campaign_fakes import fake_factory, make_structures
    import screener.campaign.folder as folder
    from screener.campaign import Campaign, CampaignConfig, Ledger

    camp, store, stage = sys.argv[1], sys.argv[2], sys.argv[3]
    base = fake_factory(store)

    def factory(config, campaign_dir, ledger):
        components = base(config, campaign_dir, ledger)
        (campaign_dir / "references.json").write_text("{{}}")  # what build_components prepares in the folder
        if stage == "components":
            os._exit(9)
        return components

    def after(obj, name, when=lambda *a, **k: True):
        original = getattr(obj, name)
        def wrapped(*args, **kwargs):
            out = original(*args, **kwargs)
            if when(*args, **kwargs):
                os._exit(9)
            return out
        setattr(obj, name, wrapped)

    if stage == "candidates":
        after(Ledger, "add_candidates")
    elif stage == "config":
        after(Ledger, "set_meta", lambda self, key, value: key == "config")
    elif stage == "rename":
        folder.publish_campaign = lambda *a: os._exit(9)
    elif stage == "opened":
        after(Campaign, "open")
    Campaign.create(camp, CampaignConfig(budget_total=12, batch_size=3), make_structures(6), factory).run()
    """
)


def _create_and_run(camp: Path, store: Path) -> None:
    """What the worker does, here, without a kill: create the campaign (or resume it) and run it to the end."""
    from campaign_fakes import fake_factory

    if (camp / "ledger.sqlite").exists():
        campaign = Campaign.open(camp, fake_factory(store))
    else:
        campaign = Campaign.create(camp, CampaignConfig(budget_total=12, batch_size=3), make_structures(6),
                                   fake_factory(store))
    campaign.run()
    campaign.close()


@pytest.mark.parametrize("stage", ["candidates", "components", "config", "rename", "opened"])
def test_kill_during_creation_leaves_nothing_or_a_complete_campaign(tmp_path, stage, run_cli):
    script = tmp_path / "create_worker.py"
    script.write_text(CREATE_WORKER.format(here=str(HERE)))
    camp, store = tmp_path / "camp", tmp_path / "store"
    killed = subprocess.run([sys.executable, str(script), str(camp), str(store), stage], text=True,
                            capture_output=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == 9, killed.stderr
    if stage == "opened":  # killed after the rename: the campaign is complete and resumes
        code, out, err = run_cli(["status", camp, "--json"])
        assert code == 0 and json.loads(out)["n_candidates"] == 6, err
    else:  # killed before: the target does not exist; the hidden creation folder is left for the next creation
        assert not camp.exists()
        assert len(list(tmp_path.glob(".camp.creating-*"))) == 1
        code, _, err = run_cli(["status", camp])
        assert code == 2 and "does not exist" in err
    _create_and_run(camp, store)
    assert not list(tmp_path.glob(".camp.creating-*")), "a killed creation's folder was left behind"
    _create_and_run(tmp_path / "serial", tmp_path / "serial-store")
    assert _outcome(camp) == _outcome(tmp_path / "serial")


def test_a_new_campaign_folder_follows_the_umask_like_any_folder(tmp_path):
    # campaign folders are shared with colleagues and archived: not private (tempfile.mkdtemp made them 0700)
    from screener.campaign.folder import creation_folder, publish_campaign

    old = os.umask(0o022)
    try:
        target = tmp_path / "camp"
        with creation_folder(target) as tmp:
            (tmp / "ledger.sqlite").touch()
            publish_campaign(tmp, target, "ledger.sqlite")
    finally:
        os.umask(old)
    assert (target / "ledger.sqlite").is_file()
    assert target.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["camp"]
