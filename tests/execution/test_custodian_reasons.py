"""A VASP job that exhausts custodian's handlers is failed with the handlers' reason (real custodian, fake VASP)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import custodian_fakes  # noqa: E402
from test_remote import _State, fake_jfr  # noqa: E402,F401 - the fake jobflow_remote module fixture

from screener.execution.custodian_log import custodian_reason, read_run_log  # noqa: E402

REASON = "VASP failed after custodian corrections: ZbrentBrmixHandler (zbrent, brmix); max errors per job reached"


@pytest.fixture
def allow_fakes(monkeypatch):
    """Let the fake jobs through screener's allow-list of job functions (queue files, fireworks)."""
    import screener._safe_json as safe_json

    monkeypatch.setattr(safe_json, "JOB_CALLABLES", safe_json.JOB_CALLABLES | custodian_fakes.CALLABLES)


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder where real custodian gave up: its custodian.json, written by custodian itself."""
    from custodian.custodian import MaxCorrectionsPerJobError

    folder = tmp_path / "launcher_1"
    folder.mkdir()
    with pytest.raises(MaxCorrectionsPerJobError):
        custodian_fakes.run_failing_custodian(folder)
    return folder


def test_reason_from_a_real_custodian_log(run_folder, tmp_path):
    log = read_run_log(run_folder)
    assert log and log[-1]["max_errors_per_job"] and log[-1]["corrections"][0]["handler"]["@class"]
    assert custodian_reason([run_folder]) == REASON
    # no log, but custodian's exception in a stack trace; neither: not custodian's failure
    trace = "Traceback ...\ncustodian.custodian.MaxCorrectionsPerJobError: Max errors per job reached: 5."
    expected = "VASP failed under custodian: Max errors per job reached: 5"
    assert custodian_reason([tmp_path / "nowhere"], trace) == expected
    assert custodian_reason([tmp_path / "nowhere"], "ValueError: something else") is None


def test_a_hostile_log_stays_one_short_line(tmp_path):
    """Names and labels from the file are reduced to words: no markup, no newlines, bounded length."""
    (tmp_path / "custodian.json").write_text(json.dumps([{"corrections": [
        {"errors": ["<script>alert(1)</script>\nsecond line" * 20], "actions": [],
         "handler": {"@module": "os", "@class": "<b>Evil</b>Handler"}}] * 3, "max_errors": True}]))
    reason = custodian_reason([tmp_path])
    assert reason.startswith("VASP failed after custodian corrections: bEvilbHandler (")
    assert "<" not in reason and "\n" not in reason and len(reason) <= 300
    (tmp_path / "custodian.json").write_text("{not json")
    assert custodian_reason([tmp_path]) is None


def _vasp_like_flow():
    """[fake VASP job, conversion job]: the shape of the VASP back-end's flow (conversion sees None on failure)."""
    from jobflow import Flow

    vasp = custodian_fakes.fake_vasp("mp-1")
    final = custodian_fakes.convert(vasp.output, "mp-1")
    final.metadata.update(structure_id="mp-1", fidelity="pbe", backend="vasp", n_sites=2, cost_cpu_hours=1.0)
    return Flow([vasp, final], output=final.output), final.uuid


def test_local_executor_records_custodians_reason(tmp_path, allow_fakes):
    from screener.execution import get_executor

    executor = get_executor("local", tmp_path / "c")  # run folders: custodian writes its log there
    flow, uuid = _vasp_like_flow()
    executor.submit(flow)
    executor.run()
    result = executor.collect([uuid])[uuid]
    assert not result.success and result.failure_reason == REASON

    lone = custodian_fakes.fake_vasp("mp-2")  # no conversion job: the crash itself is recorded with the reason
    lone.metadata.update(structure_id="mp-2", fidelity="pbe", backend="vasp", n_sites=2)
    executor.submit(lone)
    executor.run()
    assert executor.collect([lone.uuid])[lone.uuid].failure_reason == REASON


def test_fireworks_executor_records_custodians_reason(tmp_path, allow_fakes, monkeypatch):
    pytest.importorskip("fireworks")
    import fireworks.core.launchpad as lp_module
    from maggma.stores.mongolike import mongomock

    from screener.execution import get_executor

    monkeypatch.setattr(lp_module, "MongoClient", mongomock.MongoClient)
    monkeypatch.setattr(lp_module, "GRIDFS_FALLBACK_COLLECTION", None)
    launchpad = lp_module.LaunchPad(name="screener_custodian_test", strm_lvl="ERROR")
    launchpad.reset("", require_password=False)
    executor = get_executor("fireworks", tmp_path / "fw", launchpad=launchpad)
    flow, uuid = _vasp_like_flow()
    lone = custodian_fakes.fake_vasp("mp-2")
    lone.metadata.update(structure_id="mp-2", fidelity="pbe", backend="vasp", n_sites=2)
    executor.submit([flow, lone])
    executor.run()
    results = executor.collect([uuid, lone.uuid])
    assert results[uuid].failure_reason == REASON  # the conversion firework COMPLETED with a generic failure
    assert results[lone.uuid].failure_reason == REASON + " (FireWorks: FIZZLED)"

    # a walltime kill is a queue failure: rerun (bounded), then the job finishes
    marker = tmp_path / "killed"
    once = custodian_fakes.walltime_once("mp-3", str(marker))
    once.metadata.update(structure_id="mp-3", fidelity="pbe", backend="standin", n_sites=2)
    executor.submit(once)
    executor.run()
    assert executor.states([once.uuid]) == {once.uuid: "pending"}  # retries left: not final
    assert executor.collect([once.uuid]) == {once.uuid: None}
    notes = executor.retry_failed([once.uuid], {})
    assert [(n["cause"], n["attempt"]) for n in notes] == [("walltime", 1)]
    executor.run()
    assert executor.collect([once.uuid])[once.uuid].success


def test_jobflow_remote_records_custodians_reason(fake_jfr, tmp_path, run_folder):
    from screener.execution import get_executor

    executor = get_executor("jobflow-remote", tmp_path)
    fake_jfr.infos["u1"] = types.SimpleNamespace(
        state=_State.REMOTE_ERROR, run_dir=str(run_folder), metadata={"structure_id": "mp-1", "fidelity": "pbe"},
        error="Traceback ...\ncustodian.custodian.MaxCorrectionsPerJobError: Max errors per job reached: 2.")
    result = executor.collect(["u1"])["u1"]
    assert result.failure_reason == REASON + " (jobflow-remote state REMOTE_ERROR)"


def test_vasp_conversion_names_custodians_handlers_for_an_unsuccessful_run(run_folder):
    """An unsuccessful TaskDoc (custodian let VASP finish unconverged): its folder's custodian.json gives the reason."""
    from pymatgen.core import Lattice, Structure

    from screener.calculators.vasp import taskdoc_to_calc_result

    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    task_doc = types.SimpleNamespace(state="failed", output=None, dir_name=f"node042.cluster:{run_folder}",
                                     run_stats=None)
    result = taskdoc_to_calc_result.original(task_doc, structure=si, structure_id="si", fidelity="pbe", maker=None,
                                             retry_incar_settings={}, modelled_cost_cpu_hours=1.0, attempt=1)
    assert not result.success and result.failure_reason == REASON + " (attempt 1, state=failed)"


def test_a_malformed_log_is_no_reason_rather_than_a_crash(tmp_path):
    """Wrong types or a pathologically nested file read as "no usable log", never a traceback during collection."""
    (tmp_path / "custodian.json").write_text(json.dumps([{"corrections": 5, "max_errors": True}]))
    assert custodian_reason([tmp_path]) is None or "\n" not in custodian_reason([tmp_path])
    (tmp_path / "custodian.json").write_text("[" * 100_000 + "]" * 100_000)
    assert read_run_log(tmp_path) is None
