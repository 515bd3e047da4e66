"""Nothing read from a campaign folder, a job store, a queue file or an entries file may name code that runs.

A hostile but fair collaborator hands over a campaign folder or an entries file. Whatever it names (``os.system`` as
a job function, a module that does something on import) must never run: open jobs are rebuilt from the ledger's data,
and everything else is checked against screener's allow-list before it is decoded (``screener/_safe_json.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "campaign"))
from campaign_fakes import (  # noqa: E402
    FakeHulls,
    FakeModel,
    GreedyPlanner,
    count_performed,
    fake_factory,
    make_structures,
    true_e_form,
)

from screener.campaign import Campaign, CampaignConfig, Components  # noqa: E402
from screener.errors import InvalidInputError  # noqa: E402

EVIL_MODULE = "screener_test_evil_import"


def _evil_job(pwned: Path, uuid: str | None = None):
    """The jobflow job the issue reports: ``os.system`` writing a file."""
    from jobflow import Job

    job = Job(function=os.system, function_args=(f"id > {pwned}",))
    if uuid:
        job.set_uuid(uuid)
    return job


def _replay_dataset(path: Path, structures: dict) -> Path:
    """A replay data set (ComputedStructureEntry dicts) of ``structures`` at both fidelities."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    mu = {"pbe": {"Li": -1.9, "Na": -1.3, "K": -1.1}, "scan": {"Li": -2.3, "Na": -1.6, "K": -1.4}}
    items = []
    for sid, s in structures.items():
        comp = s.composition
        for fidelity in ("pbe", "scan"):
            energy = (true_e_form(sid, fidelity) + sum(comp.get_atomic_fraction(el) * mu[fidelity][el.symbol]
                                                       for el in comp)) * comp.num_atoms
            entry = ComputedStructureEntry(s, energy, data={"structure_id": sid, "fidelity": fidelity})
            items.append(entry.as_dict())
    path.write_text(json.dumps(items))
    return path


def _replay_factory(dataset: Path):
    """Real jobflow jobs (the replay back-end, run by the local executor) with the fast fake model and hulls."""
    from screener.calculators.replay import ReplayCalculator
    from screener.execution.local import LocalExecutor

    def factory(config, campaign_dir, ledger):
        return Components(ReplayCalculator(path=str(dataset)), LocalExecutor(campaign_dir, create_folders=False),
                          FakeModel(), FakeHulls(), GreedyPlanner())

    return factory


def _campaign_with_planned_job(tmp_path: Path, monkeypatch, flow_json: str, uuid: str) -> tuple[Path, str]:
    """A replay campaign whose ledger holds one ``planned`` job of cand-00 (PBE) with ``flow_json``."""
    import screener.campaign.components as components

    structures = make_structures(3)
    dataset = _replay_dataset(tmp_path / "dataset.json", structures)
    factory = _replay_factory(dataset)
    monkeypatch.setattr(components, "build_components", factory)
    camp_dir = tmp_path / "camp"
    config = CampaignConfig(budget_total=4, batch_size=2, backend="replay", backend_options={"path": str(dataset)},
                            fine_tune_epochs=0)
    camp = Campaign.create(camp_dir, config, structures, factory)
    sid = "cand-00"
    camp.ledger.start_round(1)
    camp.ledger.commit_plan(
        1, decisions=[{"structure_id": sid, "fidelity": "pbe", "reason": "test", "estimated_cost": 0.5}],
        numbers={}, new_candidates=[],
        jobs=[{"uuid": uuid, "structure_id": sid, "fidelity": "pbe", "role": "candidate", "estimated_cost": 0.5,
               "estimated_cpu_hours": 0.5, "flow_json": flow_json}],
    )
    camp.ledger.close()
    return camp_dir, sid


def _one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


# ---- (a) a crafted flow_json in the ledger -------------------------------------------------------------------------
def test_crafted_flow_json_is_never_run(run_cli, tmp_path, monkeypatch):
    """The issue's attack: a planned job whose stored flow is ``os.system(...)``; ``screener run`` must not run it."""
    from screener.campaign import Ledger
    from screener.campaign.loop import dump_flow

    pwned = tmp_path / "pwned.txt"
    evil = _evil_job(pwned)
    camp_dir, sid = _campaign_with_planned_job(tmp_path, monkeypatch, dump_flow(evil), evil.uuid)
    code, out, err = run_cli(["run", "--campaign", camp_dir])
    assert not pwned.exists(), "the campaign folder ran a command named in its ledger"
    if code == 2:  # refusing is fine too, in one line
        _one_line_error(code, err)
        return
    assert code == 0, err
    with Ledger.in_dir(camp_dir) as ledger:  # the legitimate job was rebuilt from data, under the recorded uuid
        job = next(j for j in ledger.jobs() if j.uuid == evil.uuid)
        assert job.state == "done" and job.structure_id == sid and job.fidelity == "pbe"
        assert job.result["structure_id"] == sid and job.result["backend"] == "replay"


# ---- (b) a crafted queue file ----------------------------------------------------------------------------------------
def _queue_evil(executor, job) -> Path:
    from monty.json import jsanitize

    path = executor.queue_dir / f"{job.uuid}.json"
    path.write_text(json.dumps(jsanitize(job.as_dict(), strict=True, enum_values=True)))  # what submit writes
    return path


def test_crafted_queue_file_refused_before_anything_runs(tmp_path):
    from screener.calculators.replay import ReplayCalculator
    from screener.execution.local import LocalExecutor

    structures = make_structures(2)
    dataset = _replay_dataset(tmp_path / "dataset.json", structures)
    executor = LocalExecutor(tmp_path / "camp")
    legit = executor.submit(ReplayCalculator(path=str(dataset)).make_flow(structures["cand-00"], "pbe", "cand-00"))
    pwned = tmp_path / "pwned.txt"
    path = _queue_evil(executor, _evil_job(pwned))
    with pytest.raises(InvalidInputError) as info:
        executor.run()
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "system" in message
    assert not pwned.exists()
    assert not (executor.campaign_dir / "runs").exists()  # nothing ran, not even the legitimate job
    assert executor.collect(legit) == {legit[0]: None}


def _set_key(obj, key, value) -> int:
    """Set ``key`` to ``value`` in every dict of a nested JSON structure that has it; return how many."""
    n = 0
    if isinstance(obj, dict):
        if key in obj:
            obj[key], n = value, 1
        return n + sum(_set_key(v, key, value) for v in obj.values())
    if isinstance(obj, list):
        return sum(_set_key(v, key, value) for v in obj)
    return 0


@pytest.mark.parametrize("where", ["argument", "vasp_cmd"])
def test_queue_file_hiding_code_inside_an_allowed_job_is_refused(tmp_path, where):
    """Code may hide deeper than the job function: in its arguments, or as the command of an atomate2 VASP maker."""
    from screener.calculators.replay import ReplayCalculator
    from screener.calculators.vasp import VaspCalculator
    from screener.execution.local import LocalExecutor

    executor = LocalExecutor(tmp_path / "camp")
    structures = make_structures(1)
    if where == "argument":
        dataset = _replay_dataset(tmp_path / "dataset.json", structures)
        flow = ReplayCalculator(path=str(dataset)).make_flow(structures["cand-00"], "pbe", "cand-00")
    else:
        flow = VaspCalculator().make_flow(structures["cand-00"], "pbe", "cand-00")
    (uuid,) = executor.submit(flow)
    path = executor.queue_dir / f"{uuid}.json"
    raw = json.loads(path.read_text())
    if where == "argument":
        raw["function_args"][4] = {"@module": "os", "@callable": "system"}
        expected = "os.system"
    else:
        assert _set_key(raw, "run_vasp_kwargs", {"vasp_cmd": f"touch {tmp_path / 'pwned'}"}) >= 1
        expected = "vasp_cmd"
    path.write_text(json.dumps(raw))
    with pytest.raises(InvalidInputError, match=expected):
        executor.run()
    assert not (executor.campaign_dir / "runs").exists() and not (tmp_path / "pwned").exists()


def test_crafted_queue_file_in_a_campaign_gives_one_line(run_cli, tmp_path, monkeypatch):
    """A copied campaign whose queue holds code under a planned job's uuid: exit 2, one line naming the file."""
    from screener.campaign.loop import dump_flow
    from screener.execution.local import LocalExecutor

    pwned = tmp_path / "pwned.txt"
    evil = _evil_job(pwned)
    camp_dir, _ = _campaign_with_planned_job(tmp_path, monkeypatch, dump_flow(evil), evil.uuid)
    path = _queue_evil(LocalExecutor(camp_dir), evil)
    code, _, err = run_cli(["run", "--campaign", camp_dir])
    line = _one_line_error(code, err)
    assert path.name in line and "refused" in line
    assert not pwned.exists()


@pytest.fixture
def launchpad(monkeypatch):
    """A mongomock LaunchPad (as in tests/execution/test_fireworks_executor.py)."""
    pytest.importorskip("fireworks")
    import fireworks.core.launchpad as lp_module
    from maggma.stores.mongolike import mongomock

    monkeypatch.setattr(lp_module, "MongoClient", mongomock.MongoClient)
    monkeypatch.setattr(lp_module, "GRIDFS_FALLBACK_COLLECTION", None)
    lp = lp_module.LaunchPad(name="screener_no_code_test")
    lp.reset("", require_password=False)
    return lp


@pytest.mark.parametrize("task", ["pytask", "job", "store"])
def test_fireworks_run_refuses_foreign_fireworks_before_launching(tmp_path, launchpad, task):
    """``FireWorksExecutor.run`` launches rockets in this process: a waiting firework naming other code stops it."""
    from fireworks import Firework, Workflow
    from fireworks.user_objects.firetasks.script_task import PyTask
    from jobflow.managers.fireworks import flow_to_workflow

    from screener.calculators.replay import ReplayCalculator
    from screener.execution.fireworks_executor import FireWorksExecutor

    structures = make_structures(1)
    dataset = _replay_dataset(tmp_path / "dataset.json", structures)
    executor = FireWorksExecutor(tmp_path / "fw", launchpad=launchpad)
    (legit,) = executor.submit(ReplayCalculator(path=str(dataset)).make_flow(structures["cand-00"], "pbe", "cand-00"))
    pwned = tmp_path / "pwned.txt"
    if task == "pytask":
        launchpad.add_wf(Workflow([Firework(PyTask(func="os.system", args=[f"id > {pwned}"]), name="evil")]))
        expected = "PyTask"
    elif task == "job":
        launchpad.add_wf(flow_to_workflow(_evil_job(pwned), store=executor.store))
        expected = "system"
    else:  # our own job, but writing its output wherever the firework says
        from screener.execution.stores import make_job_store

        elsewhere = make_job_store("local", tmp_path / "elsewhere")
        job = ReplayCalculator(path=str(dataset)).make_flow(structures["cand-00"], "scan", "cand-00")
        launchpad.add_wf(flow_to_workflow(job, store=elsewhere))
        expected = "another job store"
    with pytest.raises(InvalidInputError, match=expected):
        executor.run()
    assert not pwned.exists()
    assert executor.collect([legit]) == {legit: None}  # nothing was launched
    assert launchpad.fireworks.count_documents({"state": {"$in": ["COMPLETED", "FIZZLED", "RUNNING"]}}) == 0


def test_allow_list_covers_every_job_screener_builds(tmp_path):
    """Every flow the calculators make (and the VASP retry) passes the job check as the local queue stores it: a new
    atomate2 or pymatgen class in them fails here, not in a user's campaign."""
    from atomate2.vasp.powerups import update_user_incar_settings
    from monty.json import jsanitize

    from screener._safe_json import check
    from screener.calculators.replay import ReplayCalculator
    from screener.calculators.standin import StandinCalculator
    from screener.calculators.vasp import DEFAULT_RETRY_INCAR, VaspCalculator

    structures = make_structures(1)
    s = structures["cand-00"]
    dataset = _replay_dataset(tmp_path / "dataset.json", structures)
    flows = [ReplayCalculator(path=str(dataset)).make_flow(s, f, "cand-00") for f in ("pbe", "scan")]
    for relax in (False, True):
        flows += [StandinCalculator(relax=relax).make_flow(s, f, "cand-00") for f in ("pbe", "scan")]
        vasp = VaspCalculator(relax=relax, user_incar_settings={"KPAR": 4})
        flows += [vasp.make_flow(s, "pbe", "cand-00"), vasp.make_flow(s, "scan", "cand-00", pbe_band_gap_ev=0.5)]
        flows += [update_user_incar_settings(vasp.make_maker(f), dict(DEFAULT_RETRY_INCAR)).make(s)
                  for f in ("pbe", "scan")]
    for flow in flows:
        check(jsanitize(flow.as_dict(), strict=True, enum_values=True), f"{flow.name}", jobs=True)


def test_vasp_commands_never_come_from_campaign_options():
    from screener.calculators.vasp import VaspCalculator

    with pytest.raises(InvalidInputError, match="vasp_cmd"):
        VaspCalculator(run_vasp_kwargs={"vasp_cmd": "rm -rf ~", "max_errors": 5})
    VaspCalculator(run_vasp_kwargs={"max_errors": 5})  # plain options are fine


# ---- (c) crafted entries: references.json, entries files, hulls, replay data, job store -------------------------------
@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """An importable module that leaves a file behind when imported: proof that a decoder imported it."""
    marker = tmp_path / "imported.txt"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{EVIL_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(EVIL_MODULE, None)
    yield marker
    sys.modules.pop(EVIL_MODULE, None)


def _entry_dict(evil_at: str) -> dict:
    from pymatgen.core import Lattice, Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    s = Structure(Lattice.cubic(3.0), ["Li", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    d = ComputedStructureEntry(s, -5.0, data={"structure_id": "x", "fidelity": "pbe"}, entry_id="x").as_dict()
    thing = {"@module": EVIL_MODULE, "@class": "Thing"}
    if evil_at == "top":
        d["@module"] = EVIL_MODULE
    elif evil_at == "data":
        d["data"]["note"] = thing
    elif evil_at == "site":
        d["structure"]["sites"][0]["properties"] = {"magmom": thing}
    return d


def _load_entries_file(tmp_path, d):
    from screener.hull import load_entries

    path = tmp_path / "entries.json"
    path.write_text(json.dumps([d]))
    return load_entries([path])


def _load_references(tmp_path, d):
    from screener.campaign.hulls import CampaignHulls

    path = tmp_path / "references.json"
    path.write_text(json.dumps({"pbe": [d], "scan": []}))
    return CampaignHulls.from_file(path)


def _load_hull(tmp_path, d):
    from screener.hull import FidelityHull

    return FidelityHull.from_dict({"fidelity": "pbe", "entries": [d], "references": []})


def _load_replay(tmp_path, d):
    from screener.calculators.replay import ReplayDataset

    path = tmp_path / "dataset.json"
    path.write_text(json.dumps([d]))
    return ReplayDataset.from_files(path)


def _load_store_result(tmp_path, d):
    from screener.execution.base import read_result
    from screener.execution.stores import make_job_store

    store = make_job_store("local", tmp_path)
    store.connect()
    output = {"@module": "screener.calculators.result", "@class": "CalcResult", "structure_id": "x",
              "fidelity": "pbe", "backend": "standin", "label": "x", "success": True, "energy_ev": -5.0,
              "n_sites": 2, "cost_cpu_hours": 1.0, "entry": d, "final_structure": d["structure"]}
    store.docs_store.update({"uuid": "u1", "index": 1, "output": output}, key=["uuid", "index"])
    return read_result(store, "u1").to_entry()


LOADERS = [_load_entries_file, _load_references, _load_hull, _load_replay, _load_store_result]


@pytest.mark.parametrize("evil_at", ["top", "data", "site"])
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__.removeprefix("_load_"))
def test_entry_naming_a_module_is_refused_before_import(tmp_path, evil_module, loader, evil_at):
    with pytest.raises(InvalidInputError) as info:
        loader(tmp_path, _entry_dict(evil_at))
    assert EVIL_MODULE in str(info.value) and "\n" not in str(info.value)
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules, "the module named by the data was imported"


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__.removeprefix("_load_"))
def test_legitimate_entries_still_load(tmp_path, loader):
    assert loader(tmp_path, _entry_dict("nowhere")) is not None


def test_crafted_references_json_stops_a_campaign_in_one_line(run_cli, tmp_path, evil_module):
    """``references.json`` in a copied campaign is read by the real components: one line, exit 2, no import."""
    from screener.campaign import Ledger

    camp_dir = tmp_path / "camp"
    Campaign.create(camp_dir, CampaignConfig(budget_total=4, batch_size=2, fine_tune_epochs=0), make_structures(2),
                    fake_factory(tmp_path / "store")).ledger.close()
    (camp_dir / "references.json").write_text(json.dumps({"pbe": [_entry_dict("data")], "scan": []}))
    code, _, err = run_cli(["run", "--campaign", camp_dir])
    line = _one_line_error(code, err)
    assert "references.json" in line and EVIL_MODULE in line
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    with Ledger.in_dir(camp_dir) as ledger:
        assert not ledger.jobs()


def test_crafted_stored_output_a_job_depends_on_is_refused(tmp_path, evil_module):
    """A VASP calculation whose VASP run is "already stored" in a copied job store: the conversion job would get that
    output decoded for it, so it is checked first."""
    from screener.calculators.vasp import VaspCalculator
    from screener.execution.local import LocalExecutor

    structures = make_structures(1)
    executor = LocalExecutor(tmp_path / "camp")
    flow = VaspCalculator().make_flow(structures["cand-00"], "pbe", "cand-00")
    executor.submit(flow)
    vasp_uuid = flow.jobs[0].uuid
    executor.store.docs_store.update(
        {"uuid": vasp_uuid, "index": 1, "output": {"@module": EVIL_MODULE, "@class": "Thing"}}, key=["uuid", "index"])
    with pytest.raises(InvalidInputError, match=f"stored output of job {vasp_uuid}"):
        executor.run()
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    assert not (executor.campaign_dir / "runs").exists()


# ---- (d) a legitimate resume after a kill --------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so no handler catches it)."""


def test_resume_after_kill_rebuilds_jobs_under_their_recorded_uuids(tmp_path):
    """Killed mid-round: the resumed run rebuilds each open job with the uuid the ledger recorded, finds the ones
    already in the store by it, and computes every calculation exactly once."""
    from screener.campaign import Ledger

    store, camp_dir = tmp_path / "store", tmp_path / "camp"
    calls = {"n": 0}

    def kill_on_third(flow):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed

    camp = Campaign.create(camp_dir, CampaignConfig(budget_total=20, batch_size=4), make_structures(8),
                           fake_factory(store, on_compute=kill_on_third))
    with pytest.raises(Killed):
        camp.run()
    open_uuids = {j.uuid for j in camp.ledger.jobs(states=["planned", "submitted"])}
    camp.ledger.close()
    computed_before = {p.name.split("__")[0] for p in store.glob("*__*.json")}
    assert len(computed_before) == 2 and computed_before <= open_uuids  # stored, not yet in the ledger

    resumed = Campaign.open(camp_dir, fake_factory(store))
    assert resumed.run()["finished"]
    resumed.ledger.close()
    performed = count_performed(store)
    assert set(performed.values()) == {1}, "a calculation was computed twice"
    stored_uuids = {p.name.split("__")[0] for p in store.glob("*__*.json")}
    with Ledger.in_dir(camp_dir) as ledger:
        jobs = ledger.jobs()
        assert all(j.state == "done" for j in jobs), [(j.structure_id, j.failure_reason) for j in jobs]
        assert {j.uuid for j in jobs} == stored_uuids  # every result found under the uuid the ledger recorded
        assert open_uuids <= stored_uuids


def test_an_allowed_callable_cannot_smuggle_a_class_beside_it(tmp_path):
    """MontyDecoder builds the ``@class`` of a dict that names both: an allowed ``@callable`` must not let it pass."""
    from screener._safe_json import check, decode

    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    smuggled = {"@module": "screener.calculators.replay", "@callable": "replay_job", "@class": "ReplayCalculator",
                "path": str(secret)}
    with pytest.raises(InvalidInputError, match="ReplayCalculator"):
        check({"function_args": [smuggled]}, "job x", jobs=True)
    with pytest.raises(InvalidInputError, match="ReplayCalculator"):
        decode(smuggled, "job x", jobs=True)
    check({"@module": "screener.calculators.replay", "@callable": "replay_job"}, "job x", jobs=True)  # still fine
