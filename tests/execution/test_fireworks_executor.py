"""FireWorks executor end-to-end on a mongomock LaunchPad (no MongoDB server)."""

from __future__ import annotations

import pytest

fireworks = pytest.importorskip("fireworks")


@pytest.fixture
def launchpad(monkeypatch):
    """A LaunchPad whose MongoClient is mongomock's (what FW_CONFIG's MONGOMOCK_SERVERSTORE_FILE option does)."""
    import fireworks.core.launchpad as lp_module
    from maggma.stores.mongolike import mongomock  # the mongomock flavour that matches the installed pymongo

    monkeypatch.setattr(lp_module, "MongoClient", mongomock.MongoClient)
    # GridFS (fallback store for oversized launch data) does not accept mongomock databases; not needed here
    monkeypatch.setattr(lp_module, "GRIDFS_FALLBACK_COLLECTION", None)
    lp = lp_module.LaunchPad(name="screener_fw_test")
    lp.reset("", require_password=False)
    return lp


def test_small_flow_end_to_end(tmp_path, launchpad, two_candidates):
    from screener.calculators import get_calculator
    from screener.calculators.replay import replay_job
    from screener.execution import get_executor

    executor = get_executor("fireworks", tmp_path / "fw", launchpad=launchpad)
    calc = get_calculator("standin")
    flows = [calc.make_flow(s, f, sid) for sid, s in two_candidates for f in ("pbe", "scan")]
    broken = replay_job("ghost", "pbe", [str(tmp_path / "missing.json")])
    broken.metadata.update(structure_id="ghost", fidelity="pbe", backend="replay", n_sites=2)
    uuids = executor.submit([*flows, broken])
    assert len(uuids) == 5 and launchpad.fireworks.count_documents({}) == 5
    assert executor.submit(flows) == uuids[:4] and launchpad.fireworks.count_documents({}) == 5  # no duplicates
    assert all(v is None for v in executor.collect(uuids).values())

    assert executor.run() == 5
    results = executor.collect(uuids)
    good = [results[u] for u in uuids[:4]]
    assert all(r is not None and r.success for r in good)
    expected = {(sid, f) for sid, _ in two_candidates for f in ("pbe", "scan")}
    assert {(r.structure_id, r.fidelity) for r in good} == expected
    failed = results[uuids[4]]
    assert failed is not None and not failed.success and "FIZZLED" in failed.failure_reason
    assert failed.structure_id == "ghost"
    states = {fw["state"] for fw in launchpad.fireworks.find({}, {"state": 1})}
    assert states == {"COMPLETED", "FIZZLED"}

    # the same energies as a local run: FireWorks only changes where jobs run
    local = get_executor("local", tmp_path / "local", create_folders=False)
    local.submit(flows[0])
    local.run()
    assert local.collect([uuids[0]])[uuids[0]].energy_ev == pytest.approx(good[0].energy_ev, abs=1e-6)


def test_states_follow_the_engine_and_lost_runs_are_rerun_then_failed(tmp_path, launchpad, two_candidates):
    """READY -> pending, RUNNING -> running; a run whose worker stopped pinging is rerun once, then failed."""
    import time

    from fireworks import FWorker

    from screener.calculators import get_calculator
    from screener.execution import get_executor

    executor = get_executor("fireworks", tmp_path / "fw", launchpad=launchpad, launch_here=False,
                            lost_run_timeout_s=0.05, max_reruns=1)
    (sid, structure), _ = two_candidates
    uuid = executor.submit(get_calculator("standin").make_flow(structure, "pbe", sid))[0]
    assert executor.states([uuid, "not-a-job"]) == {uuid: "pending", "not-a-job": "unknown"}
    assert executor.run() == 0 and executor.collect([uuid]) == {uuid: None}  # workers elsewhere run it

    for expected in ("pending", "failed"):  # a worker takes it and dies (no pings): rerun, then failed
        launchpad.checkout_fw(FWorker(), str(tmp_path))
        assert executor.states([uuid]) == {uuid: "running"}
        time.sleep(0.1)
        assert executor.states([uuid]) == {uuid: expected}
    result = executor.collect([uuid])[uuid]
    assert result is not None and not result.success and "stopped reporting" in result.failure_reason
    assert result.structure_id == sid and result.cost_cpu_hours > 0  # from the job's metadata: charged its estimate


def test_a_calculation_listed_twice_is_added_once(tmp_path, launchpad, two_candidates, capfd):
    """Workflows go in as one bulk insert: a repeated calculation in the same submission is not added twice."""
    import sys

    from screener.calculators import get_calculator
    from screener.execution import get_executor

    executor = get_executor("fireworks", tmp_path / "fw", launchpad=launchpad, launch_here=False)
    (sid, structure), _ = two_candidates
    flow = get_calculator("standin").make_flow(structure, "pbe", sid)
    again = get_calculator("standin").make_flow(structure, "pbe", sid, uuid=flow.uuid)
    assert executor.submit([flow, again]) == [flow.uuid, flow.uuid]
    assert launchpad.fireworks.count_documents({}) == 1
    assert executor.states([flow.uuid]) == {flow.uuid: "pending"}  # READY, as add_wf leaves it
    # FireWorks' own tqdm bar is not drawn, but stderr itself is not swallowed while submitting
    err = capfd.readouterr().err
    assert "it/s" not in err and "100%|" not in err
    from screener.execution import fireworks_executor

    with fireworks_executor._quiet_tqdm():
        print("still here", file=sys.stderr)
    assert "still here" in capfd.readouterr().err
