"""jobflow-remote executor with a fake ``jobflow_remote`` module (the real one is an optional extra)."""

from __future__ import annotations

import sys
import types
from enum import Enum

import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from screener.errors import InvalidInputError
from screener.execution import get_executor


class _State(Enum):
    WAITING = "WAITING"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    REMOTE_ERROR = "REMOTE_ERROR"


@pytest.fixture
def fake_jfr(monkeypatch):
    """A stand-in for jobflow_remote: records submit_flow calls; get_jobstore/JobController are in-memory."""
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    module = types.ModuleType("jobflow_remote")
    module.submitted = []
    module.infos = {}
    module.projects = []

    def submit_flow(flow, worker=None, project=None, exec_config=None, resources=None, allow_external_references=False):
        module.submitted.append({"flow": flow, "worker": worker, "project": project, "exec_config": exec_config,
                                 "resources": resources})
        return [len(module.submitted)]

    def get_jobstore(project_name=None):
        module.projects.append(project_name)
        return store

    class JobController:
        @classmethod
        def from_project_name(cls, project_name=None):
            return cls()

        def get_job_info(self, job_id=None, job_index=None, db_id=None):
            return module.infos.get(job_id)

    module.submit_flow, module.get_jobstore, module.JobController = submit_flow, get_jobstore, JobController
    module.store = store
    monkeypatch.setitem(sys.modules, "jobflow_remote", module)
    return module


def test_missing_package_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "jobflow_remote", None)  # import raises ImportError
    with pytest.raises(InvalidInputError, match="pip install 'screener\\[remote\\]'"):
        get_executor("jobflow-remote", tmp_path)


def test_submit_and_collect(fake_jfr, tmp_path, two_candidates):
    from screener.calculators import get_calculator

    executor = get_executor(
        "jobflow-remote", tmp_path, project="dft", worker="cluster", exec_config="vasp6",
        resources={"nodes": 1, "time": "04:00:00"},
    )
    assert fake_jfr.projects == ["dft"]
    calc = get_calculator("standin")
    (sid, structure), (sid2, structure2) = two_candidates
    good = calc.make_flow(structure, "pbe", sid)
    bad = calc.make_flow(structure2, "scan", sid2)
    uuids = executor.submit([good, bad])
    assert uuids == [good.uuid, bad.uuid]
    assert [s["flow"].uuid for s in fake_jfr.submitted] == uuids
    assert all(s["worker"] == "cluster" and s["project"] == "dft" and s["exec_config"] == "vasp6"
               for s in fake_jfr.submitted)
    assert fake_jfr.submitted[0]["resources"] == {"nodes": 1, "time": "04:00:00"}
    assert executor.run() == 0

    fake_jfr.infos[good.uuid] = types.SimpleNamespace(state=_State.WAITING, metadata=good.metadata)
    fake_jfr.infos[bad.uuid] = types.SimpleNamespace(
        state=_State.REMOTE_ERROR, error="Traceback ...\nssh: connection refused", metadata=bad.metadata, name="x"
    )
    pending = executor.collect(uuids)
    assert pending[good.uuid] is None
    assert not pending[bad.uuid].success and "REMOTE_ERROR: ssh: connection refused" in pending[bad.uuid].failure_reason
    assert pending[bad.uuid].structure_id == sid2 and pending[bad.uuid].fidelity == "scan"

    run_locally(fake_jfr.submitted[0]["flow"], store=fake_jfr.store, log=False)  # what the runner would do
    done = executor.collect([good.uuid])[good.uuid]
    assert done.success and done.structure_id == sid
    executor.submit(good)
    assert len(fake_jfr.submitted) == 2  # stored results are not submitted again


def test_resubmission_of_a_queued_calculation_is_skipped(fake_jfr, tmp_path, two_candidates):
    """A resumed campaign rebuilds open jobs from its ledger and submits them again: a uuid jobflow-remote already
    queued is not added a second time."""
    from screener.calculators import get_calculator

    executor = get_executor("jobflow-remote", tmp_path)
    (sid, structure), _ = two_candidates
    flow = get_calculator("standin").make_flow(structure, "pbe", sid)
    assert executor.submit(flow) == [flow.uuid]
    fake_jfr.infos[flow.uuid] = types.SimpleNamespace(state=_State.WAITING)
    rebuilt = get_calculator("standin").make_flow(structure, "pbe", sid, uuid=flow.uuid)
    assert executor.submit(rebuilt) == [flow.uuid]
    assert len(fake_jfr.submitted) == 1


def test_states_are_jobflow_remotes_own(fake_jfr, tmp_path):
    executor = get_executor("jobflow-remote", tmp_path, project="dft")
    for uuid, state in [("a", _State.WAITING), ("b", _State.SUBMITTED), ("c", _State.RUNNING),
                        ("d", _State.COMPLETED), ("e", _State.REMOTE_ERROR)]:
        fake_jfr.infos[uuid] = types.SimpleNamespace(state=state)
    assert executor.states(["a", "b", "c", "d", "e", "f"]) == {
        "a": "pending", "b": "pending", "c": "running", "d": "done", "e": "failed", "f": "unknown"}


def test_a_wrong_project_name_is_one_line(fake_jfr, monkeypatch, tmp_path):
    class ConfigError(Exception):  # what jobflow_remote raises for a project it has no file for
        pass

    def get_jobstore(project_name=None):
        raise ConfigError(f"The selected project {project_name} is not among the defined projects")

    monkeypatch.setattr(fake_jfr, "get_jobstore", get_jobstore)
    with pytest.raises(InvalidInputError, match="jobflow-remote project 'nope': The selected project nope") as info:
        get_executor("jobflow-remote", tmp_path, project="nope")
    assert "\n" not in str(info.value)
