"""The command line's paper cuts and console: help types, variadic --candidates, predict defaults and errors, train
preset, hull input errors, quiet third-party logs, one line per round, progress bars that restart per round."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from screener import cli

STRUCTURE = Path(__file__).parent / "data" / "structures" / "mp-10009.cif"


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):  # a sub-group (typer vendors its own click)
            yield from _commands(command, (*prefix, name))


def test_help_shows_no_type_for_flags_and_no_list_types(run_cli):
    names = list(_commands(typer.main.get_command(cli.app)))
    assert {("run",), ("status",), ("predict",), ("world", "build")} <= set(names)
    for name in [(), *names]:
        code, out, err = run_cli([*name, "--help"])
        assert code == 0, (name, err)
        assert "<bool>" not in out and "<list[" not in out, (name, out)
    code, out, _ = run_cli(["status", "--help"])
    assert "--json" in out
    code, out, _ = run_cli(["run", "--help"])
    assert "<path> ..." in out and "<float>" in out  # value options keep their type


def test_candidates_take_several_files_after_one_flag(monkeypatch, tmp_path, run_cli):
    import screener.campaign.api as api

    seen = {}

    def fake_run_campaign(campaign, **kw):
        seen.update(kw)
        return tmp_path, {"rounds_run": 0, "finished": True, "reason": "test"}

    monkeypatch.setattr(api, "run_campaign", fake_run_campaign)
    a, b, c = (tmp_path / f"{n}.cif" for n in "abc")
    for p in (a, b, c):
        p.write_text(STRUCTURE.read_text())
    code, _, err = run_cli(["run", "--candidates", a, b, "--budget", "5", "--candidates", c])
    assert code == 0, err
    assert seen["candidates"] == [a, b, c] and seen["budget"] == 5
    code, _, err = run_cli(["run", "--candidates", str(tmp_path / "*.cif"), "--budget", "5"])  # a quoted glob
    assert code == 0, err
    assert seen["candidates"] == [a, b, c]
    code, _, err = run_cli(["run", "--candidates", str(tmp_path / "nothing*.cif"), "--budget", "5"])
    assert code == 2 and err.count("\n") == 1 and "no file matches" in err


def test_spread_variadic_options_only_touches_the_variadic_flag():
    spread = cli._spread_variadic_options
    assert spread(["run", "--candidates=a", "b", "--batch", "8", "--policy", "p"]) == [
        "run", "--candidates=a", "--candidates", "b", "--batch", "8", "--policy", "p"]
    assert spread(["predict", "--model", "m", "a", "b"]) == ["predict", "--model", "m", "a", "b"]


def test_predict_with_a_missing_model_fails_fast_before_torch(tmp_path):
    script = (
        "import sys\n"
        "from screener.cli import main\n"
        "try:\n"
        f"    main(['predict', '--model', {str(tmp_path / 'nope')!r}, {str(STRUCTURE)!r}])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'torch' in sys.modules)\n"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < 30
    assert proc.stdout.strip().endswith("exit 2 False"), proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "no such folder" in proc.stderr


def test_predict_defaults_to_the_shipped_model(monkeypatch, tmp_path, run_cli):
    import screener.cgat.api as cgat_api
    from screener.campaign.ensemble_model import default_model_dir

    seen = {}

    def fake_predict_files(model, files, output, **kw):
        seen["model"] = Path(model)
        raise SystemExit(3)  # far enough: the model was chosen

    monkeypatch.setattr(cgat_api, "predict_files", fake_predict_files)
    run_cli(["predict", STRUCTURE, "-o", tmp_path / "p.csv"])
    assert seen["model"].resolve() == default_model_dir().resolve()
    code, out, _ = run_cli(["predict", "--help"])
    assert "pbe-e-form-small-world20k" in out.replace("\n", "").replace("│", "").replace(" ", "")


def test_train_preset_auto():
    assert cli._auto_preset("cpu") == "small"
    assert cli._auto_preset("cuda:1") == "paper"
    import torch

    assert cli._auto_preset("auto") == ("paper" if torch.cuda.is_available() else "small")


def test_unit_suffix_of_prediction_columns():
    from screener.cgat.api import unit_suffix

    assert unit_suffix("eV/atom") == "_ev_per_atom"
    assert unit_suffix("") == ""


def test_hull_of_a_structure_file_says_what_it_expects(run_cli):
    code, _, err = run_cli(["hull", STRUCTURE])
    assert code == 2 and err.count("\n") == 1
    assert "reads computed entries" in err and "screener calc" in err


_LOG_SCRIPT = """
import logging, sys, warnings
from types import SimpleNamespace
from screener import cli
cli._main_options(SimpleNamespace(invoked_subcommand="status"), debug=False, verbose={verbose})
jf = logging.getLogger("jobflow.managers.local")
jf.setLevel(logging.INFO)  # what the local executor does to capture failures
jf.info("Started executing jobs locally")
warnings.warn_explicit("cd is deprecated", FutureWarning, "local.py", 168, module="jobflow.managers.local")
logging.getLogger("screener.campaign").warning("our own warning")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_info_and_known_warnings_only_with_verbose(verbose):
    proc = subprocess.run([sys.executable, "-c", _LOG_SCRIPT.format(verbose=verbose)], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", **__import__("os").environ})
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "our own warning" in text
    assert ("Started executing jobs locally" in text) is verbose
    assert ("cd is deprecated" in text) is verbose


def test_stage_progress_restarts_per_round_and_clears():
    bars, callback = cli._stage_progress()
    callback("calculations", 2, 2)
    callback("calculations", 0, 3)  # the next round under the same name starts again
    task = bars.tasks[0]
    assert (task.completed, task.total) == (0, 3) and task.finished_time is None  # a new count and a new clock
    callback("calculations", 3, 3)
    callback("round 2: ranking", 0, 1)
    callback.clear()  # finished bars go once their round's line is printed
    assert [t.description for t in bars.tasks] == ["round 2: ranking"]


def test_round_line_carries_every_number():
    line = cli._round_line({
        "round": 2, "bought": {"pbe": 3, "scan": 1}, "failed": {"pbe": 0, "scan": 1}, "n_stable_found": 4,
        "budget_spent": 12.0, "budget_left": 8.0, "budget_total": 20.0, "budget_unit": "pbe-equivalent",
        "model_error": {"scan": {"mae_ev_per_atom": 0.217, "mae_se_ev_per_atom": 0.116, "n_points": 8}},
        "fine_tuned": False,
    })
    assert line.startswith("round 2 | bought 3 PBE + 1 SCAN (1 failed) | 4 stable at SCAN so far")
    assert "spent 12 of 20 pbe-equivalent, 8 left" in line
    assert "SCAN 217 ± 116 meV/atom (n=8)" in line and "no fine-tune" in line


def test_commands_that_run_the_network_tune_the_allocator(monkeypatch, tmp_path, run_cli):
    # `collect` predicts, fine-tunes and plans as `run` does: untuned, glibc page-faults every forward pass's
    # activations afresh (bench/README.md, "Campaign profile"); `status` runs no network and leaves the allocator
    import screener.cgat.perf as perf

    calls = []
    monkeypatch.setattr(perf, "configure_cpu_allocator", lambda *a, **k: calls.append(1) or True)
    code, _, err = run_cli(["collect", tmp_path])  # no campaign there: a clear error, after the switch
    assert code != 0 and "holds no campaign" in err
    assert calls == [1]
    code, _, _ = run_cli(["status", tmp_path])
    assert code != 0 and calls == [1]
