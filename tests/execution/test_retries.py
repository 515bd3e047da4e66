"""Bounded retries of queue failures (submission limit, walltime): jobflow-remote (fake module) and the loop."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "campaign"))
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, GreedyPlanner, make_structures  # noqa: E402
from test_remote import _State, fake_jfr  # noqa: E402,F401 - the fake jobflow_remote module fixture

from screener.campaign import Campaign, CampaignConfig, Components  # noqa: E402
from screener.errors import InvalidInputError  # noqa: E402
from screener.execution import get_executor  # noqa: E402
from screener.execution.base import JobsPending, retry_cause  # noqa: E402

# what users of Slurm/PBS/LSF clusters see, as jobflow-remote records it
SLURM_LIMIT = ("Traceback (most recent call last):\n  ...\njobflow_remote.jobs.data.RemoteError: submission failed. "
               "SubmissionResult(job_id=None, stderr='sbatch: error: QOSMaxSubmitJobPerUserLimit\\nsbatch: error: "
               "Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or "
               "time limits)')")
PBS_LIMIT = "qsub: would exceed queue generic's per-user limit of jobs in 'Q' state"
SLURM_WALLTIME = "slurmstepd: error: *** JOB 4242 ON nid001 CANCELLED AT 2026-01-01T10:00:00 DUE TO TIME LIMIT ***"
PBS_WALLTIME = "=>> PBS: job killed: walltime 14432 exceeded limit 14400"


@pytest.mark.parametrize("text, cause", [
    (SLURM_LIMIT, "submission limit"), (PBS_LIMIT, "submission limit"),
    (SLURM_WALLTIME, "walltime"), (PBS_WALLTIME, "walltime"), ("LSF: TERM_RUNLIMIT: job killed", "walltime"),
    ("Traceback ...\nssh: connection refused", None), ("ValueError: bad INCAR tag", None), (None, None),
])
def test_queue_failures_are_recognised(text, cause):
    assert retry_cause(text) == cause


def _controller_with_retries(fake_jfr):
    """Give the fake JobController jobflow-remote's retry_job / rerun_job: they put the job back in the queue."""
    calls = []

    def retry_job(self, job_id=None, db_id=None, job_index=None, wait=None, break_lock=False):
        calls.append(("retry_job", job_id))
        fake_jfr.infos[job_id] = types.SimpleNamespace(state=_State.SUBMITTED, metadata=fake_jfr.infos[job_id].metadata)

    def rerun_job(self, job_id=None, db_id=None, job_index=None, force=False, wait=None, break_lock=False,
                  delete_files=True):
        assert not force  # FAILED and REMOTE_ERROR jobs need no force (which would skip the checks on children)
        calls.append(("rerun_job", job_id))
        fake_jfr.infos[job_id] = types.SimpleNamespace(state=_State.WAITING, metadata=fake_jfr.infos[job_id].metadata)

    fake_jfr.JobController.retry_job = retry_job
    fake_jfr.JobController.rerun_job = rerun_job
    return calls


def test_jobflow_remote_retries_queue_failures_within_bounds(fake_jfr, tmp_path, two_candidates):
    from screener.calculators import get_calculator

    calls = _controller_with_retries(fake_jfr)
    executor = get_executor("jobflow-remote", tmp_path, max_retries=2)
    calc = get_calculator("standin")
    (sid, structure), (sid2, structure2) = two_candidates
    limited, killed = calc.make_flow(structure, "pbe", sid), calc.make_flow(structure2, "scan", sid2)
    uuids = executor.submit([limited, killed])
    fake_jfr.infos[limited.uuid] = types.SimpleNamespace(state=_State.REMOTE_ERROR, error=None,
                                                         metadata=limited.metadata,
                                                         remote=types.SimpleNamespace(error=SLURM_LIMIT))
    fake_jfr.infos[killed.uuid] = types.SimpleNamespace(state=_State.REMOTE_ERROR, error=SLURM_WALLTIME,
                                                        metadata=killed.metadata)
    assert executor.states(uuids) == {limited.uuid: "pending", killed.uuid: "pending"}  # retries left: not final
    assert executor.collect(uuids) == {limited.uuid: None, killed.uuid: None} and calls == []
    notes = executor.retry_failed(uuids, {})
    assert calls == [("retry_job", limited.uuid), ("rerun_job", killed.uuid)]  # resubmit vs run afresh
    assert [(n["uuid"], n["cause"], n["attempt"], n["max_retries"]) for n in notes] == [
        (limited.uuid, "submission limit", 1, 2), (killed.uuid, "walltime", 1, 2)]
    assert "QOSMaxSubmitJobPerUserLimit" in notes[0]["message"] and "\n" not in notes[0]["message"]
    assert executor.states(uuids) == {limited.uuid: "pending", killed.uuid: "pending"}
    assert executor.collect(uuids) == {limited.uuid: None, killed.uuid: None}  # back in the queue: not failed

    # the limit again, with the retries spent: left failed, with the cause and the count in its reason
    fake_jfr.infos[limited.uuid] = types.SimpleNamespace(state=_State.REMOTE_ERROR, error=SLURM_LIMIT,
                                                         metadata=limited.metadata)
    assert executor.retry_failed([limited.uuid], {limited.uuid: 2}) == []
    assert executor.states([limited.uuid]) == {limited.uuid: "failed"}
    failed = executor.collect([limited.uuid])[limited.uuid]
    assert not failed.success and failed.structure_id == sid
    assert "submission limit failure, not retried again after 2 retries (max_retries=2)" in failed.failure_reason
    assert "\n" not in failed.failure_reason

    # other errors are the calculation's own: never retried
    fake_jfr.infos[killed.uuid] = types.SimpleNamespace(state=_State.REMOTE_ERROR, error="ValueError: bad INCAR tag",
                                                        metadata=killed.metadata)
    assert executor.retry_failed([killed.uuid], {}) == [] and len(calls) == 2


@pytest.mark.parametrize("bad", [-1, "three", 1.5, True])
def test_max_retries_must_be_a_count(fake_jfr, tmp_path, bad):
    with pytest.raises(InvalidInputError, match="max_retries must be a whole number >= 0"):
        get_executor("jobflow-remote", tmp_path, max_retries=bad)


class QueueLimitedEngine(FakeExecutor):
    """An engine whose queue refuses the first ``refusals`` submissions of each job ("submission limit"); it follows
    the executors' contract: a refused job with retries left reads ``pending``, ``retry_failed`` puts it back in the
    queue (the runner tries it at the next poll), and only past ``max_retries`` is it failed."""

    runs_locally = False

    def __init__(self, store_dir, refusals, max_retries=3):
        super().__init__(store_dir)
        self.refusals, self.max_retries = refusals, max_retries
        self.flows, self.tries, self.status, self.retries = {}, {}, {}, {}

    def submit(self, flow):
        self.flows[flow.uuid] = flow
        self.tries.setdefault(flow.uuid, 0)
        self.status[flow.uuid] = "waiting"
        return [flow.uuid]

    def run(self):
        pass

    def _runner(self):  # what the engine's runner does between polls
        for uuid, status in self.status.items():
            if status == "waiting":
                self.tries[uuid] += 1
                if self.tries[uuid] <= self.refusals:
                    self.status[uuid] = "refused"
                else:
                    self.status[uuid] = "queued"
                    self.queue.append(self.flows[uuid])
        FakeExecutor.run(self)

    def _final(self, uuid):
        return self.status.get(uuid) == "refused" and self.retries.get(uuid, 0) >= self.max_retries

    def states(self, uuids):
        self.polls = getattr(self, "polls", 0) + 1
        assert self.polls < 200, "polled forever: the refused jobs were never retried"
        self._runner()
        return {u: "unknown" if u not in self.status else "done" if self._stored(u) else
                "failed" if self._final(u) else "pending" for u in uuids}

    def retry_failed(self, uuids, attempts):
        self.retries.update({u: attempts.get(u, 0) for u in uuids})  # the count is the ledger's, not ours
        notes = []
        for u in uuids:
            if self.status.get(u) == "refused" and self.retries[u] < self.max_retries:
                self.retries[u] += 1
                self.status[u] = "waiting"
                notes.append({"uuid": u, "attempt": self.retries[u], "max_retries": self.max_retries,
                              "cause": "submission limit", "state": "REMOTE_ERROR",
                              "message": "sbatch: error: QOSMaxSubmitJobPerUserLimit"})
        return notes

    def collect(self, uuids):
        out = super().collect(uuids)
        for u in uuids:
            if out.get(u) is None and self._final(u):
                flow = self.flows[u]
                out[u] = {"success": False, "structure_id": flow.structure_id, "fidelity": flow.fidelity,
                          "cost_cpu_hours": 0.0, "failure_reason": "jobflow-remote state REMOTE_ERROR: submission "
                          f"limit failure, not retried again after {self.retries[u]} retries"}
        return out


def _campaign(tmp_path, engine):
    config = CampaignConfig(budget_total=10, batch_size=3, poll_interval_s=0.001, executor="jobflow-remote")
    factory = lambda c, d, l: Components(FakeCalculator(), engine, FakeModel(), FakeHulls(), GreedyPlanner())  # noqa: E731
    return Campaign.create(tmp_path / "c", config, make_structures(6), factory)


def _retry_events(camp):
    return [json.loads(e["data_json"]) for e in camp.ledger.events(kind="retry")]


def test_loop_retries_within_bounds_and_records_each_retry(tmp_path):
    """Refused twice, retried twice (two ledger events per job), then computed: the round completes."""
    engine = QueueLimitedEngine(tmp_path / "store", refusals=2, max_retries=3)
    camp = _campaign(tmp_path, engine)
    camp.run(max_rounds=1)
    jobs = camp.ledger.jobs(round_number=1)
    assert jobs and all(j.state == "done" for j in jobs)
    events = _retry_events(camp)
    assert sorted((e["uuid"], e["attempt"]) for e in events) == sorted((j.uuid, a) for j in jobs for a in (1, 2))
    assert all("submission limit" in e["message"] or e["cause"] == "submission limit" for e in events)
    camp.close()


def test_loop_stops_retrying_at_the_bound_across_runs(tmp_path):
    """With --no-wait each run retries once; the count continues from the ledger; past the bound the job fails."""
    engine = QueueLimitedEngine(tmp_path / "store", refusals=10**6, max_retries=2)
    camp = _campaign(tmp_path, engine)
    camp.wait = False
    for expected in (0, 0, 1):  # submitted; refused (retries left: pending); retried once
        with pytest.raises(JobsPending):
            camp.run(max_rounds=1)
        assert {e["attempt"] for e in _retry_events(camp)} == set(range(1, expected + 1))
    n_jobs = len(camp.ledger.jobs(round_number=1))
    camp.wait = True
    camp.run(max_rounds=1)
    events = _retry_events(camp)
    assert len(events) == 2 * n_jobs and {e["attempt"] for e in events} == {1, 2}  # never a third
    jobs = camp.ledger.jobs(round_number=1)
    assert all(j.state == "failed" and "not retried again after 2 retries" in j.failure_reason for j in jobs)
    assert all(j.actual_cost == 0.0 for j in jobs)  # charged what the engine reports (nothing ran)
    camp.close()


def test_an_option_the_executor_lacks_is_one_line(tmp_path):
    with pytest.raises(InvalidInputError, match="the local executor has no option 'max_retries'; its options: store"):
        get_executor("local", tmp_path, max_retries=2)
