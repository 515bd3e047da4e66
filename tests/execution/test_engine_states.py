"""The campaign loop with an engine that reports job states: pending jobs are polled, never charged; no-wait returns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "campaign"))
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, GreedyPlanner, make_structures  # noqa: E402

from screener.campaign import Campaign, CampaignConfig, Components  # noqa: E402
from screener.execution.base import JobsPending  # noqa: E402


class SlowEngine(FakeExecutor):
    """Workers elsewhere: jobs are 'pending' for ``delay`` polls, then run; ``run()`` here does nothing."""

    runs_locally = False

    def __init__(self, store_dir, delay=2):
        super().__init__(store_dir)
        self.delay, self.polls, self.submitted = delay, 0, []

    def submit(self, flow):
        self.submitted.append(flow.uuid)
        return super().submit(flow)

    def run(self):
        pass

    def states(self, uuids):
        self.polls += 1
        if self.polls > self.delay:
            FakeExecutor.run(self)  # the workers finished them
        return {u: ("done" if self._stored(u) else "pending" if u in self.submitted else "unknown") for u in uuids}


def _campaign(tmp_path, engine):
    config = CampaignConfig(budget_total=10, batch_size=3, poll_interval_s=0.001, executor="fireworks")
    factory = lambda c, d, l: Components(FakeCalculator(), engine, FakeModel(), FakeHulls(), GreedyPlanner())  # noqa: E731
    return Campaign.create(tmp_path / "c", config, make_structures(6), factory)


def test_pending_jobs_are_polled_never_charged(tmp_path):
    engine = SlowEngine(tmp_path / "store", delay=3)
    camp = _campaign(tmp_path, engine)
    camp.run(max_rounds=1)
    jobs = camp.ledger.jobs()
    assert jobs and all(j.state == "done" for j in jobs) and engine.polls > 3
    assert len(engine.submitted) == len(set(engine.submitted)) == len(jobs)  # each submitted once
    camp.close()


def test_no_wait_submits_and_returns_then_a_later_run_collects(tmp_path):
    engine = SlowEngine(tmp_path / "store", delay=10**6)
    camp = _campaign(tmp_path, engine)
    camp.wait = False
    with pytest.raises(JobsPending) as info:
        camp.run(max_rounds=1)
    assert info.value.counts["pending"] == len(camp.ledger.jobs()) > 0
    assert {j.state for j in camp.ledger.jobs()} == {"submitted"} and camp.ledger.budget().spent == 0
    with pytest.raises(JobsPending):  # polled again: still pending, not resubmitted, not charged
        camp.run(max_rounds=1)
    assert len(engine.submitted) == len(camp.ledger.jobs()) and camp.ledger.budget().spent == 0
    engine.delay = 0
    camp.run(max_rounds=1)
    assert camp.ledger.rounds()[0]["state"] == "finished"
    assert all(j.state == "done" for j in camp.ledger.jobs(round_number=1))
    camp.close()


@pytest.mark.parametrize("args, message", [
    (["--no-wait"], "--no-wait needs an executor whose jobs run elsewhere"),
    (["--poll-interval", "0"], "--poll-interval must be a finite number"),
])
def test_bad_wait_options_are_one_line(args, message, run_cli, tmp_path):
    code, _, err = run_cli(["run", "--budget", "3", "--campaign", tmp_path / "c", *args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_collect_needs_a_campaign(run_cli, tmp_path):
    code, _, err = run_cli(["collect", tmp_path])
    assert code == 2 and "holds no campaign" in err
