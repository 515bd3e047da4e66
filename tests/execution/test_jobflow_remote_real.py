"""jobflow-remote's real package (skipped when it is not installed): submit, its Runner with a ``local`` worker
(``shell`` scheduler: each job runs as ``jf execution run`` in its own process), states and results through
screener's executor.

Not exercised: MongoDB. The project's queue database is a maggma MemoryStore (mongomock) shared by the objects of
this one process, so the Runner runs here, not as ``jf runner start`` daemon; remote (SSH) workers are not run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

jfr = pytest.importorskip("jobflow_remote")

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A jobflow-remote project with a local worker; its queue and job stores swapped for shared MemoryStores."""
    from jobflow import JobStore
    from jobflow_remote.config.base import Project
    from maggma.stores import MemoryStore

    folder = tmp_path / "projects"
    folder.mkdir()
    paths = os.pathsep.join([str(HERE), str(HERE.parent / "campaign"), *sys.path])
    (folder / "screener_test.yaml").write_text(f"""name: screener_test
base_dir: {tmp_path / 'base'}
workers:
  local_w:
    type: local
    scheduler_type: shell
    work_dir: {tmp_path / 'work'}
    pre_run: "export PYTHONPATH={paths}; export PATH={BIN}:$PATH"
queue:
  store:
    type: MemoryStore
    collection_name: jobs
runner:
  delay_checkout: 0.2
  delay_check_run_status: 0.2
  delay_advance_status: 0.2
jobstore:
  docs_store:
    type: MemoryStore
    collection_name: outputs
""")
    monkeypatch.setenv("JFREMOTE_PROJECTS_FOLDER", str(folder))  # for the `jf` processes of the worker
    monkeypatch.setenv("JFREMOTE_PROJECT", "screener_test")
    monkeypatch.setattr(jfr.SETTINGS, "projects_folder", str(folder))  # read at import in this process
    monkeypatch.setattr(jfr.SETTINGS, "project", "screener_test")
    monkeypatch.syspath_prepend(str(HERE.parent / "campaign"))
    monkeypatch.syspath_prepend(str(HERE))
    queue, store = MemoryStore(collection_name="jobs"), JobStore(MemoryStore(collection_name="outputs"))
    for s in (queue, store, store.docs_store):
        monkeypatch.setattr(s, "close", lambda: None)  # one in-memory database for every controller of the test
    monkeypatch.setattr(Project, "get_queue_store", lambda self: queue)
    monkeypatch.setattr(Project, "get_jobstore", lambda self, name=None: store)
    controller = jfr.JobController.from_project_name("screener_test")
    controller.reset(reset_output=True, max_limit=0)
    return controller


def test_submit_run_collect_through_the_real_package(project, tmp_path):
    import fw_fakes
    from campaign_fakes import make_structures
    from jobflow_remote.jobs.runner import Runner

    from screener.execution import get_executor

    executor = get_executor("jobflow-remote", tmp_path / "camp", project="screener_test", worker="local_w")
    flows = [fw_fakes.JobCalculator().make_flow(s, "pbe", sid) for sid, s in make_structures(2).items()]
    uuids = executor.submit(flows)
    assert executor.states(uuids) == {u: "pending" for u in uuids}  # READY in jobflow-remote
    assert executor.collect(uuids) == {u: None for u in uuids}
    assert executor.submit(flows) == uuids and len(list(project.get_jobs_info())) == 2  # not queued twice

    Runner(project_name="screener_test").run_all_jobs(max_seconds=60)
    assert executor.states(uuids) == {u: "done" for u in uuids}
    results = executor.collect(uuids)
    assert all(r.success and r.label == "fake DFT" for r in results.values())
    assert executor.states(["no-such-job"]) == {"no-such-job": "unknown"}


def test_a_wrong_project_is_one_line(project, tmp_path):
    from screener.errors import InvalidInputError
    from screener.execution import get_executor

    with pytest.raises(InvalidInputError, match="jobflow-remote project 'nope'") as info:
        get_executor("jobflow-remote", tmp_path, project="nope").states(["x"])
    assert "\n" not in str(info.value)
