"""Damaged and read-only ledgers, resume options, budget changes and standard JSON (ledger, status, CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_fakes import count_performed, fake_factory, make_structures

from screener.campaign import Ledger

HERE = Path(__file__).parent


@pytest.fixture
def fake_cli(run_cli, tmp_path, monkeypatch):
    """``screener`` in-process on the fake components (store: tmp_path/store; candidates: 8 fake structures)."""
    import screener.campaign.api as api
    import screener.campaign.components as components

    monkeypatch.setattr(components, "build_components", fake_factory(tmp_path / "store"))
    monkeypatch.setattr(api, "_read_candidates", lambda paths: make_structures(8))
    (tmp_path / "c.extxyz").touch()
    return run_cli


def _new(fake_cli, camp: Path, *extra: str) -> None:
    code, _, err = fake_cli(["run", "--campaign", camp, "--budget", "12", "--batch", "3",
                             "--candidates", camp.parent / "c.extxyz", *extra])
    assert code == 0, err


def _one_line_error(code: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its hash and mtime (ns)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _unchanged(before: dict, after: dict) -> bool:
    """No file changed; new files at most SQLite's side files, which a read-only connection may leave."""
    return ({k: v for k, v in after.items() if k in before} == before
            and set(after) - set(before) <= {"ledger.sqlite-wal", "ledger.sqlite-shm"})


# ---- integrity ------------------------------------------------------------------------------------------------------
def test_garbage_in_the_middle_of_the_ledger_stops_every_command_before_any_work(fake_cli, tmp_path):
    camp = tmp_path / "camp"
    _new(fake_cli, camp, "--rounds", "1")
    ledger_file = camp / "ledger.sqlite"
    size = ledger_file.stat().st_size
    assert size >= 8 * 4096, "the ledger is too small to damage in the middle"
    with open(ledger_file, "r+b") as fh:  # 4 KiB of garbage over the middle page
        fh.seek((size // 2) // 4096 * 4096)
        fh.write(random.Random(11).randbytes(4096))
    before = _snapshot(camp)
    performed = count_performed(tmp_path / "store")
    for args in (["run", "--campaign", camp], ["status", camp], ["status", camp, "--json"],
                 ["report", camp, "--output", tmp_path / "report", "--no-build"], ["budget", camp, "--total", "20"]):
        code, out, err = fake_cli(args)
        line = _one_line_error(code, err, "ledger.sqlite is damaged", ".recover")
        assert "nothing left to buy" not in out + line
    assert count_performed(tmp_path / "store") == performed  # nothing was computed
    assert _snapshot(camp) == before  # nor written
    assert not (tmp_path / "report").exists()


def test_a_damaged_read_is_one_line_too(fake_cli, tmp_path, monkeypatch):
    """Damage quick_check does not see, met while reading, is screener's one line with exit 2 (not sqlite's)."""
    camp = tmp_path / "camp"
    _new(fake_cli, camp, "--rounds", "1")

    def malformed(self, *args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Ledger, "rounds", malformed)
    for args in (["status", camp], ["report", camp, "--output", tmp_path / "r", "--no-build"]):
        code, _, err = fake_cli(args)
        _one_line_error(code, err, "is damaged", "malformed")


# ---- read-only ------------------------------------------------------------------------------------------------------
def test_status_and_report_open_the_ledger_read_only_and_change_nothing(fake_cli, tmp_path, monkeypatch):
    camp = tmp_path / "camp"
    _new(fake_cli, camp, "--rounds", "1")
    before = _snapshot(camp)
    uris: list[str] = []
    connect = sqlite3.connect

    def spy(database, *args, **kwargs):
        uris.append(str(database))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    code, out, err = fake_cli(["status", camp, "--json"])
    assert code == 0, err
    code, _, err = fake_cli(["report", camp, "--output", tmp_path / "report", "--no-build"])
    assert code == 0, err
    assert uris and all(u.startswith("file:") and "mode=ro" in u for u in uris), uris
    assert _unchanged(before, _snapshot(camp))


def _readonly_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod((mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (0o555 if p.is_dir() else 0)) & ~0o222)


def test_read_only_folder_gives_status_and_a_report_elsewhere(fake_cli, tmp_path):
    """A truly read-only folder (as root: the commands run as user nobody, for whom chmod a-w holds)."""
    shared = Path(os.environ.get("TMPDIR", "/tmp"))
    base = Path(__import__("tempfile").mkdtemp(dir=shared, prefix="screener-ro-"))
    try:
        base.chmod(0o755)
        camp = base / "camp"
        _new(fake_cli, camp, "--rounds", "1")
        assert not (camp / "ledger.sqlite-wal").exists()  # a closed campaign: only the ledger file
        _readonly_tree(camp)
        out_dir = base / "out"
        out_dir.mkdir()
        out_dir.chmod(0o777)
        before = _snapshot(camp)
        prefix: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: a read-only folder cannot be made")
            prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        code = "import sys; from screener.cli import main; main(sys.argv[1:])"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(out_dir)}
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(camp / 'x')!r}, 'w')"], capture_output=True,
                               env=env, cwd=out_dir)
        if probe.returncode == 0:
            pytest.skip("this user can write into a chmod a-w folder")
        status = subprocess.run([*prefix, sys.executable, "-c", code, "status", str(camp), "--json"],
                                capture_output=True, text=True, env=env, cwd=out_dir)
        if "ModuleNotFoundError" in status.stderr or "Permission denied" in status.stderr and "screener" not in (
                status.stderr.splitlines() or [""])[-1]:
            pytest.skip(f"screener cannot be imported as user nobody here: {status.stderr[-300:]}")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["n_candidates"] == 8
        report = subprocess.run([*prefix, sys.executable, "-c", code, "report", str(camp), "--output",
                                 str(out_dir / "report"), "--no-build"], capture_output=True, text=True, env=env,
                                cwd=out_dir)
        assert report.returncode == 0, report.stderr
        assert (out_dir / "report" / "mkdocs.yml").exists()
        run = subprocess.run([*prefix, sys.executable, "-c", code, "run", "--campaign", str(camp)],
                             capture_output=True, text=True, env=env, cwd=out_dir)
        assert run.returncode == 2 and "is read-only" in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert _snapshot(camp) == before and not (camp / "ledger.sqlite-wal").exists()
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# ---- resume options and the budget ----------------------------------------------------------------------------------
def test_changed_resume_options_are_listed_and_refused(fake_cli, tmp_path):
    camp = tmp_path / "camp"
    _new(fake_cli, camp, "--rounds", "1")
    (tmp_path / "other.extxyz").touch()
    before = _snapshot(camp)
    code, _, err = fake_cli(["run", "--campaign", camp, "--batch", "5", "--seed", "2", "--budget", "30",
                             "--budget-unit", "core-hours", "--backend", "vasp", "--candidates",
                             tmp_path / "other.extxyz", "--policy", "greedy", "--require-competing-phases"])
    line = _one_line_error(code, err, "--batch 5 (campaign: 3)", "--seed 2 (campaign: 0)", "--budget 30 (campaign: 12)",
                           "--budget-unit core-hours", "--backend vasp", "--candidates", "--policy greedy",
                           "--require-competing-phases True (campaign: False)", f"screener budget {camp} --total")
    assert "--executor" not in line  # not given: not listed
    assert _unchanged(before, _snapshot(camp))
    code, _, err = fake_cli(["run", "--campaign", camp, "--batch", "3", "--seed", "0", "--budget", "12",
                             "--candidates", tmp_path / "c.extxyz", "--rounds", "1"])  # the same values resume
    assert code == 0, err


def test_budget_is_raised_in_one_transaction_and_a_finished_campaign_goes_on(fake_cli, tmp_path):
    camp = tmp_path / "camp"
    _new(fake_cli, camp)
    with Ledger.in_dir(camp, read_only=True) as ledger:
        n_jobs, spent = len(ledger.jobs()), ledger.budget().spent
    code, out, err = fake_cli(["status", camp, "--json"])
    assert json.loads(out)["finished"] is True
    code, _, err = fake_cli(["budget", camp, "--total", str(spent / 2)])
    _one_line_error(code, err, "less than")
    for bad in ("inf", "nan", "0", "-1"):
        code, _, err = fake_cli(["budget", camp, "--total", bad])
        _one_line_error(code, err, "--total must be")
    code, out, err = fake_cli(["budget", camp, "--total", "30"])
    assert code == 0 and "budget 12 -> 30" in out, err
    with Ledger.in_dir(camp, read_only=True) as ledger:
        assert ledger.get_meta("budget_total") == 30 and ledger.get_meta("config")["budget_total"] == 30
        assert any(e["kind"] == "budget" and "from 12 to 30" in e["message"] for e in ledger.events())
    code, out, err = fake_cli(["run", "--campaign", camp])
    assert code == 0, err
    with Ledger.in_dir(camp, read_only=True) as ledger:
        assert len(ledger.jobs()) > n_jobs and spent < ledger.budget().spent <= 30 + 1e-9


def test_budget_change_is_all_or_nothing(tmp_path):
    ledger = Ledger.in_dir(tmp_path / "c", create=True)
    ledger.set_meta("budget_total", 10.0)
    ledger.set_meta("config", {"budget_total": 10.0})
    original = json.dumps

    def failing_dumps(obj, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("budget_total") == 25.0:
            raise RuntimeError("killed while writing the config")
        return original(obj, *args, **kwargs)

    import screener.campaign.ledger as ledger_module

    ledger_module.json.dumps = failing_dumps
    try:
        with pytest.raises(RuntimeError):
            ledger.set_budget_total(25.0)
    finally:
        ledger_module.json.dumps = original
    assert ledger.get_meta("budget_total") == 10.0 and ledger.get_meta("config")["budget_total"] == 10.0
    ledger.close()


@pytest.mark.parametrize("bad", ["inf", "nan", "-inf", "0", "-2"])
def test_budget_must_be_finite_and_positive(fake_cli, tmp_path, bad):
    code, _, err = fake_cli(["run", "--campaign", tmp_path / "camp", "--budget", bad])
    _one_line_error(code, err, "--budget must be > 0 and finite")
    assert not (tmp_path / "camp").exists()


# ---- standard JSON --------------------------------------------------------------------------------------------------
def _strict_loads(text: str):
    def refuse(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_status_json_and_ledger_json_are_standard_json(fake_cli, tmp_path):
    camp = tmp_path / "camp"
    _new(fake_cli, camp, "--rounds", "1")
    with Ledger.in_dir(camp) as ledger:  # numbers a calculator or a fit may produce, written through the ledger
        ledger.set_round_state(1, "finished", info={"mae_scan_ev_per_atom": float("nan"), "x": float("inf")})
        ledger.log_event("test", "non-finite numbers", data={"value": float("-inf")})
        ledger.set_meta("odd", {"v": float("nan")})
    conn = sqlite3.connect(camp / "ledger.sqlite")
    stored = [r[0] for r in conn.execute("SELECT info_json FROM rounds UNION ALL SELECT data_json FROM events "
                                         "UNION ALL SELECT value FROM meta") if r[0]]
    conn.execute("UPDATE rounds SET info_json = '{\"mae_pbe_ev_per_atom\": NaN}' WHERE round = 1")  # an old ledger
    conn.commit()
    conn.close()
    for text in stored:
        _strict_loads(text)
    code, out, err = fake_cli(["status", camp, "--json"])
    assert code == 0, err
    status = _strict_loads(out)
    assert status["rounds"][0]["mae_pbe_ev_per_atom"] is None
