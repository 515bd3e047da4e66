"""FireWorks executor: calculations become FireWorks workflows (``jobflow.managers.fireworks.flow_to_workflow``).

Each job's ``JobFiretask`` carries the job store it writes to, so results land in the same store whichever worker
(``rlaunch`` / ``qlaunch`` on a cluster) ran them; ``collect`` reads them back from that store, and reports a
FIZZLED or DEFUSED firework as a failed CalcResult with FireWorks' reason. ``states`` maps FireWorks' states to
screener's (READY, WAITING, RESERVED, PAUSED -> pending; RUNNING -> running; COMPLETED -> done; FIZZLED, DEFUSED ->
failed; a firework missing from the LaunchPad -> unknown), so jobs picked up late by workers elsewhere are polled
again, never charged as failures. With workers on other machines use a MongoDB job store (``store_kind="mongo"``,
``store_uri="mongodb://..."``); the campaign's JSON store suits one worker at a time on a shared file system
(tests, demos). See docs/cluster.md.

A firework FIZZLED by a queue failure (its exception names a walltime kill or a submission limit) is rerun up to
``max_retries`` times, each rerun a ``retry`` event in the ledger; a VASP firework that custodian gave up on is
failed with custodian's reason, read from ``custodian.json`` in its launch folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.execution.base import (
    check_max_retries,
    check_stored_inputs,
    is_done,
    read_results,
    refresh_store,
    retry_cause,
    split_units,
)
from screener.execution.custodian_log import custodian_reason

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

    from screener.calculators.result import CalcResult

__all__ = ["FireWorksExecutor"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "the fireworks executor needs FireWorks: pip install 'screener[fireworks]'"
_JOB_TASK = "{{jobflow.managers.fireworks.JobFiretask}}"
_STATES = {"READY": "pending", "WAITING": "pending", "RESERVED": "pending", "PAUSED": "pending",
           "RUNNING": "running", "COMPLETED": "done", "FIZZLED": "failed", "DEFUSED": "failed",
           "ARCHIVED": "failed"}
_UNREACHABLE_MS = 10_000  # how long a LaunchPad read from a file may take to answer before it counts as unreachable


_LAUNCHPADS: dict[tuple[str, str], Any] = {}


@contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """Without the tqdm progress bar ``LaunchPad.bulk_add_wfs`` draws on ``sys.stderr`` (screener reports its own
    progress). Only that bar goes: stderr itself is left alone, so warnings and errors raised meanwhile still show."""
    from unittest import mock

    # create=True: a FireWorks that no longer imports tqdm there just draws no bar, instead of failing the submission
    with mock.patch("fireworks.core.launchpad.tqdm", lambda iterable, *args, **kwargs: iterable, create=True):
        yield


def load_launchpad(path: str | Path) -> Any:
    """A LaunchPad from a ``launchpad.yaml``, checked to answer; a missing file or an unreachable server is one
    :class:`InvalidInputError` (no MongoDB default wait of 30 s: ``serverSelectionTimeoutMS`` 10 s unless set).

    One LaunchPad (one client) per file and content in a process: a campaign builds its executor more than once,
    and with FireWorks' mongomock persistence each client would write its own snapshot of the file at exit.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"LaunchPad file {path} does not exist (make one with `lpad init`; see docs/cluster.md)")
    key = (str(path.resolve()), path.read_text(errors="replace"))
    if key not in _LAUNCHPADS:
        _LAUNCHPADS[key] = _read_launchpad(path)
    return _LAUNCHPADS[key]


def _read_launchpad(path: Path) -> Any:
    from fireworks import LaunchPad
    from ruamel.yaml import YAML

    try:
        spec = YAML(typ="safe").load(path.read_text())  # plain YAML: no @module/@class decoded (not monty's loadfn)
    except Exception as exc:  # noqa: BLE001 - any YAML error is the user's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"LaunchPad file {path}: cannot read it ({first})") from exc
    if not isinstance(spec, dict):
        raise InvalidInputError(f"LaunchPad file {path}: expected a mapping (host, name, ...)")
    spec.setdefault("mongoclient_kwargs", {}).setdefault("serverSelectionTimeoutMS", _UNREACHABLE_MS)
    try:
        launchpad = LaunchPad.from_dict(spec)
    except Exception as exc:  # noqa: BLE001
        raise InvalidInputError(f"LaunchPad file {path}: {(str(exc).strip().splitlines() or [''])[0]}") from exc
    check_reachable(launchpad, str(path))
    return launchpad


def check_reachable(launchpad: Any, what: str) -> None:
    """One cheap read: an unreachable or refusing MongoDB, or a LaunchPad never reset, is one line, not a traceback."""
    try:
        initialized = launchpad.fw_id_assigner.find_one({}, {"_id": 1}) is not None
    except Exception as exc:  # noqa: BLE001 - pymongo's errors (timeouts, auth) all mean the same to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"cannot reach the LaunchPad of {what} (host {getattr(launchpad, 'host', '?')}): "
                                f"{first[:200]}") from exc
    if not initialized:
        raise InvalidInputError(f"the LaunchPad of {what} is not initialized: run `lpad -l FILE reset` once")


class FireWorksExecutor:
    """Submit calculations to a FireWorks LaunchPad and collect their results from the job store.

    Parameters
    ----------
    campaign_dir : str or Path
        Campaign folder (local job store, ``runs/`` for rockets launched by :meth:`run`).
    launchpad : LaunchPad or str or Path, optional
        A LaunchPad, or the path of a ``my_launchpad.yaml``; default ``LaunchPad.auto_load()`` (FW_CONFIG).
    store : JobStore, optional
        Job store the jobs write to (default: the campaign's, or MongoDB with ``store_kind="mongo"``).
    store_kind, store_uri : str
        See :func:`~screener.execution.stores.make_job_store`.
    fworker : FWorker, optional
        Worker used by :meth:`run`.
    launch_here : bool
        Whether :meth:`run` launches rockets in this process (``rapidfire``); ``False``: workers elsewhere
        (``qlaunch``/``rlaunch``) run every job and :meth:`run` only waits for them.
    lost_run_timeout_s : float, optional
        A RUNNING firework whose worker has not pinged the LaunchPad for this long (a node that died, a walltime
        kill) is a lost run (``LaunchPad.detect_lostruns``): it is rerun up to ``max_reruns`` times, then FIZZLED
        (failed, with the reason). Default: never (FireWorks pings hourly, so use more than 3600 s).
    max_reruns : int
        Reruns of a lost run before it is failed.
    max_retries : int
        Reruns of a firework FIZZLED by a walltime kill or a submission limit before it counts as failed.
    """

    name = "fireworks"

    def __init__(
        self,
        campaign_dir: str | Path,
        *,
        launchpad: Any = None,
        store: JobStore | None = None,
        store_kind: str = "local",
        store_uri: str | None = None,
        fworker: Any = None,
        launch_here: bool = True,
        lost_run_timeout_s: float | None = None,
        max_reruns: int = 1,
        max_retries: int = 3,
    ) -> None:
        try:
            from fireworks import LaunchPad
        except ImportError as exc:  # pragma: no cover - fireworks is a test dependency
            raise InvalidInputError(_INSTALL_HINT) from exc
        from screener.execution.stores import make_job_store

        if lost_run_timeout_s is not None and not float(lost_run_timeout_s) > 0:
            raise InvalidInputError(f"lost_run_timeout_s must be > 0 seconds, got {lost_run_timeout_s!r}")
        if launchpad is None:
            launchpad = LaunchPad.auto_load()
            check_reachable(launchpad, "FW_CONFIG (LaunchPad.auto_load)")
        elif isinstance(launchpad, str | Path):
            launchpad = load_launchpad(launchpad)
        self.campaign_dir = Path(campaign_dir)
        self.campaign_dir.mkdir(parents=True, exist_ok=True)
        self.launchpad = launchpad
        self.fworker = fworker
        self.launch_here = bool(launch_here)
        self.lost_run_timeout_s = None if lost_run_timeout_s is None else float(lost_run_timeout_s)
        self.max_reruns = int(max_reruns)
        self.max_retries = check_max_retries(max_retries)
        self._retries: dict[str, int] = {}  # retries so far per job, as the ledger counts them (retry_failed)
        self.store = store if store is not None else make_job_store(store_kind, store_uri or self.campaign_dir)
        self.store.connect()

    @property
    def runs_locally(self) -> bool:
        """Whether :meth:`run` executes the jobs in this process (else workers elsewhere do)."""
        return self.launch_here

    def _fws_of(self, uuids: list[str]) -> dict[str, dict | None]:
        """The newest firework of each job in one query (``$in``): one scan of the LaunchPad per poll, not one a job."""
        out: dict[str, dict | None] = {uuid: None for uuid in uuids}
        for start in range(0, len(uuids), 5000):
            chunk = uuids[start:start + 5000]
            for fw in self.launchpad.fireworks.find({"spec._tasks.job.uuid": {"$in": chunk}},
                                                    {"fw_id": 1, "state": 1, "spec._tasks.job.uuid": 1}):
                for task in (fw.get("spec") or {}).get("_tasks") or []:
                    uuid = ((task or {}).get("job") or {}).get("uuid")
                    if uuid in out and (out[uuid] is None or fw["fw_id"] > out[uuid]["fw_id"]):
                        out[uuid] = {"fw_id": fw["fw_id"], "state": fw.get("state")}
        return out

    def submit(self, flow: Job | Flow | list) -> list[str]:
        """Add one workflow per calculation to the LaunchPad (skipping stored or already queued ones).

        Workflows go in with ``LaunchPad.bulk_add_wfs`` (two ``insert_many`` per 1,000 calculations) rather than one
        ``add_wf`` each, which costs several round trips to MongoDB per workflow.
        """
        from jobflow.managers.fireworks import flow_to_workflow

        units = split_units(flow)
        uuids = [uuid for uuid, _ in units]
        queued = self._fws_of(uuids)  # one query for all, not two a job
        workflows, seen = [], set()
        for uuid, unit in units:
            if queued[uuid] is not None or uuid in seen or is_done(self.store, uuid):
                continue
            seen.add(uuid)
            workflows.append(flow_to_workflow(unit, store=self.store, name=getattr(unit, "name", uuid)))
        with _quiet_tqdm():
            for start in range(0, len(workflows), 1000):
                self.launchpad.bulk_add_wfs(workflows[start:start + 1000])
        return uuids

    def run(self, *, nlaunches: int = 0) -> int:
        """Launch rockets in this process until no firework is ready (``rapidfire``); returns fireworks run.

        On a cluster, run ``rlaunch``/``qlaunch`` instead and only ``collect`` here (``launch_here=False``: this
        does nothing). Only screener's own jobs are launched: any waiting firework with other tasks or other code
        stops this before anything runs.
        """
        from fireworks import FWorker
        from fireworks.core.rocket_launcher import rapidfire

        if not self.launch_here:
            return 0

        self._check_waiting()
        before = self.launchpad.fireworks.count_documents({"state": {"$in": ["COMPLETED", "FIZZLED"]}})
        runs = self.campaign_dir / "runs"
        runs.mkdir(exist_ok=True)
        rapidfire(self.launchpad, self.fworker or FWorker(), m_dir=str(runs), nlaunches=nlaunches, sleep_time=0,
                  strm_lvl="WARNING")
        return self.launchpad.fireworks.count_documents({"state": {"$in": ["COMPLETED", "FIZZLED"]}}) - before

    def _check_waiting(self) -> None:
        """Check every firework ``run`` could launch against screener's allow-list, on the raw LaunchPad documents.

        FireWorks decodes a task by its ``_fw_name`` and jobflow runs the function a job names, so both are checked
        before ``rapidfire`` reads them (:mod:`screener._safe_json`).
        """
        from monty.json import jsanitize

        from screener._safe_json import check

        def plain(obj: Any) -> Any:  # JSON without @version (a package upgrade between submit and run is fine)
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items() if k != "@version"}
            return [plain(v) for v in obj] if isinstance(obj, list) else obj

        own_store = plain(jsanitize(self.store.as_dict(), strict=True, enum_values=True))
        waiting = self.launchpad.fireworks.find({"state": {"$in": ["READY", "WAITING", "RESERVED"]}},
                                                {"fw_id": 1, "name": 1, "spec": 1})
        for fw in waiting:
            what = f"firework {fw.get('fw_id')} ({fw.get('name')})"
            for task in (fw.get("spec") or {}).get("_tasks") or []:
                name = task.get("_fw_name") if isinstance(task, dict) else None
                if name != _JOB_TASK:
                    raise InvalidInputError(f"{what}: refused to run task {name!r}: screener launches only its own "
                                            "jobflow jobs; launch other workflows with rlaunch")
                check(task.get("job"), f"{what}, job {(task.get('job') or {}).get('uuid')}", jobs=True)
                check_stored_inputs(self.store, task.get("job"), what)
                if plain(task.get("store")) != own_store:  # a store decides where files are written
                    raise InvalidInputError(f"{what}: refused to run a job that writes to another job store; "
                                            "launch other campaigns' workflows with rlaunch")

    def states(self, uuids: list[str]) -> dict[str, str]:
        """Each job's state as FireWorks reports it: pending / running / done / failed / unknown (not on the
        LaunchPad). Lost runs past ``lost_run_timeout_s`` are rerun or failed first (``detect_lostruns``)."""
        self._handle_lost_runs()
        out = {}
        for uuid, fw in self._fws_of(list(uuids)).items():
            out[uuid] = self._state_of(fw)
            if out[uuid] == "failed" and self._retry_left(uuid, fw):
                out[uuid] = "pending"  # a queue failure with retries left: retry_failed reruns it
        return out

    def _retry_left(self, uuid: str, brief: dict | None) -> bool:
        """A FIZZLED firework whose exception names a queue failure, with retries left: not final yet."""
        if (brief or {}).get("state") != "FIZZLED" or self._retries.get(uuid, 0) >= self.max_retries:
            return False
        return retry_cause(self._exception_of(brief["fw_id"])[0]) is not None

    @staticmethod
    def _state_of(fw: dict | None) -> str:
        return "unknown" if fw is None else _STATES.get(str(fw.get("state")), "pending")

    def _handle_lost_runs(self) -> None:
        """Rerun (up to ``max_reruns``) or fizzle the RUNNING fireworks whose worker stopped pinging."""
        if self.lost_run_timeout_s is None:
            return
        _, lost_fw_ids, _ = self.launchpad.detect_lostruns(expiration_secs=self.lost_run_timeout_s)
        for fw_id in lost_fw_ids:
            fw = self.launchpad.fireworks.find_one({"fw_id": fw_id}, {"launches": 1, "archived_launches": 1}) or {}
            if len(fw.get("launches") or []) + len(fw.get("archived_launches") or []) <= self.max_reruns:
                logger.warning("firework %s lost its worker: rerun", fw_id)
                self.launchpad.rerun_fw(fw_id)
            else:
                logger.warning("firework %s lost its worker again: failed", fw_id)
                self.launchpad.mark_fizzled(self._last_launch_id(fw_id))

    def retry_failed(self, uuids: list[str], attempts: dict[str, int]) -> list[dict]:
        """Rerun the FIZZLED fireworks whose exception names a walltime kill or a submission limit, while their
        retries so far (``attempts``, counted by the caller from the ledger) are below ``max_retries``; one note
        per firework rerun (``uuid``, ``attempt``, ``max_retries``, ``cause``, ``state``, ``message``)."""
        self._retries.update({u: int(attempts.get(u, 0)) for u in uuids})
        notes = []
        for uuid, brief in self._fws_of(list(uuids)).items():
            if (brief or {}).get("state") != "FIZZLED" or self._retries[uuid] >= self.max_retries:
                continue
            trace = self._exception_of(brief["fw_id"])[0]
            cause = retry_cause(trace)
            if cause is None:
                continue
            self.launchpad.rerun_fw(brief["fw_id"])
            self._retries[uuid] += 1
            lines = [line.strip() for line in (trace or "").splitlines() if line.strip()]
            notes.append({"uuid": uuid, "attempt": self._retries[uuid], "max_retries": self.max_retries,
                          "cause": cause, "state": "FIZZLED", "message": (lines[-1] if lines else "")[:200]})
        return notes

    def _exception_of(self, fw_id: int) -> tuple[str | None, str | None]:
        """The stack trace stored by the firework's last launch (``action.stored_data._exception``) and its folder."""
        fw = self.launchpad.fireworks.find_one({"fw_id": fw_id}, {"launches": 1}) or {}
        launch_ids = fw.get("launches") or []
        if not launch_ids:
            return None, None
        launch = self.launchpad.launches.find_one({"launch_id": launch_ids[-1]}) or {}
        stored = (launch.get("action") or {}).get("stored_data") or {}
        exc = stored.get("_exception") or {}
        trace = exc.get("_stacktrace") if isinstance(exc, dict) else None
        return (str(trace) if trace else None), launch.get("launch_dir")

    def _custodian_reason_of_workflow(self, fw_id: int) -> str | None:
        """custodian's reason for the FIZZLED fireworks of ``fw_id``'s workflow (a VASP job whose conversion job
        then recorded a generic failure), read from their launch folders."""
        wf = self.launchpad.workflows.find_one({"nodes": fw_id}, {"nodes": 1}) or {}
        fizzled = self.launchpad.fireworks.find({"fw_id": {"$in": wf.get("nodes") or []}, "state": "FIZZLED"},
                                                {"fw_id": 1})
        folders, traces = [], []
        for fw in fizzled:
            trace, folder = self._exception_of(fw["fw_id"])
            folders.append(folder)
            traces.append(trace or "")
        return custodian_reason(folders, "\n".join(traces)) if folders else None

    def _last_launch_id(self, fw_id: int) -> int:
        fw = self.launchpad.fireworks.find_one({"fw_id": fw_id}, {"launches": 1}) or {}
        return (fw.get("launches") or [None])[-1]

    def collect(self, uuids: list[str]) -> dict[str, CalcResult | None]:
        """Results from the job store (None: still pending or running). A FIZZLED or DEFUSED firework, or a
        COMPLETED one whose result is not in the job store, gives a failed CalcResult with the reason."""
        from screener.calculators.result import CalcResult

        # the engine's state first, then the store: a firework COMPLETED before this read has its output stored
        fws = self._fws_of(list(uuids))
        refresh_store(self.store)  # workers wrote to it
        out = read_results(self.store, list(uuids))
        for uuid, result in out.items():
            if result is None:
                out[uuid] = self._failed_result(uuid, fws[uuid], CalcResult)
            elif not result.success and fws[uuid] is not None:
                vasp = self._custodian_reason_of_workflow(fws[uuid]["fw_id"])
                if vasp:
                    attempts = f" ({result.attempts} attempts)" if result.attempts > 1 else ""
                    out[uuid] = result.model_copy(update={"failure_reason": vasp + attempts})
        return out

    def _failed_result(self, uuid: str, brief: dict | None, result_cls: type) -> Any:
        state = (brief or {}).get("state")
        if state not in ("FIZZLED", "DEFUSED", "ARCHIVED", "COMPLETED") or self._retry_left(uuid, brief):
            return None
        fw = self.launchpad.fireworks.find_one({"fw_id": brief["fw_id"]}) or {}
        if state == "COMPLETED":
            reason = ("FireWorks reports the firework COMPLETED but its result is not in the job store "
                      "(do the workers write to the store this campaign reads?)")
        elif state == "FIZZLED":
            reason = "FireWorks reports the firework FIZZLED"
        else:
            reason = f"FireWorks reports the firework {state} (stopped by a user)"
        launch_ids = fw.get("launches") or []
        if state == "FIZZLED" and launch_ids:
            trace, folder = self._exception_of(brief["fw_id"])
            vasp = custodian_reason([folder] if folder else [], trace)
            cause = retry_cause(trace)
            if vasp:
                reason = f"{vasp} (FireWorks: FIZZLED)"
            elif trace:
                reason += ": " + trace.strip().splitlines()[-1][:200]
                if cause:
                    n = self._retries.get(uuid, 0)
                    reason += (f"; {cause} failure, not retried again after {n} retr{'y' if n == 1 else 'ies'} "
                               f"(max_retries={self.max_retries})")
            else:
                n = len(launch_ids) + len(fw.get("archived_launches") or [])
                reason += f": its worker stopped reporting ({n} launch(es), lost runs past lost_run_timeout_s)"
        spec = dict(fw.get("spec", {}))
        for task in spec.get("_tasks") or []:  # the job's own metadata (make_flow: ids, estimated cost) first
            job = task.get("job") if isinstance(task, dict) else None
            if isinstance(job, dict) and job.get("uuid") == uuid and isinstance(job.get("metadata"), dict):
                spec = {**spec, **job["metadata"]}
        return result_cls.failed(
            structure_id=str(spec.get("structure_id", uuid)),
            fidelity=spec.get("fidelity", "pbe"),
            backend=spec.get("backend", "standin"),
            label=str(spec.get("label", fw.get("name", ""))),
            reason=reason,
            n_sites=int(spec.get("n_sites", 0)),
            cost_cpu_hours=float(spec.get("cost_cpu_hours", 0.0)),
        )
