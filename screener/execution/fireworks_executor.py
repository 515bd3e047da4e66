"""FireWorks executor: calculations become FireWorks workflows (``jobflow.managers.fireworks.flow_to_workflow``).

Each job's ``JobFiretask`` carries the job store it writes to, so results land in the same store whichever worker
(``rlaunch`` / ``qlaunch`` on a cluster) ran them; ``collect`` reads them back from that store, and reports a
FIZZLED firework as a failed CalcResult with FireWorks' exception. With workers on other machines use a MongoDB job
store (``store_kind="mongo"``, ``store_uri="mongodb://..."``); the campaign's JSON store only suits rockets
launched from this process (``run()``, e.g. tests and demos).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.execution.base import check_stored_inputs, is_done, read_result, refresh_store, split_units

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

    from screener.calculators.result import CalcResult

__all__ = ["FireWorksExecutor"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "the fireworks executor needs FireWorks: pip install 'screener[fireworks]'"
_JOB_TASK = "{{jobflow.managers.fireworks.JobFiretask}}"


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
    """

    name = "fireworks"
    #: ``run()`` launches rockets in this process (``rapidfire``); on a cluster, workers run them instead
    runs_locally = True

    def __init__(
        self,
        campaign_dir: str | Path,
        *,
        launchpad: Any = None,
        store: JobStore | None = None,
        store_kind: str = "local",
        store_uri: str | None = None,
        fworker: Any = None,
    ) -> None:
        try:
            from fireworks import LaunchPad
        except ImportError as exc:  # pragma: no cover - fireworks is a test dependency
            raise InvalidInputError(_INSTALL_HINT) from exc
        from screener.execution.stores import make_job_store

        self.campaign_dir = Path(campaign_dir)
        self.campaign_dir.mkdir(parents=True, exist_ok=True)
        if launchpad is None:
            launchpad = LaunchPad.auto_load()
        elif isinstance(launchpad, str | Path):
            launchpad = LaunchPad.from_file(str(launchpad))
        self.launchpad = launchpad
        self.fworker = fworker
        self.store = store if store is not None else make_job_store(store_kind, store_uri or self.campaign_dir)
        self.store.connect()

    def _fw_of(self, uuid: str) -> dict | None:
        return self.launchpad.fireworks.find_one(
            {"spec._tasks.job.uuid": uuid}, {"fw_id": 1, "state": 1}, sort=[("fw_id", -1)]
        )

    def submit(self, flow: Job | Flow | list) -> list[str]:
        """Add one workflow per calculation to the LaunchPad (skipping stored or already queued ones)."""
        from jobflow.managers.fireworks import flow_to_workflow

        uuids = []
        for uuid, unit in split_units(flow):
            uuids.append(uuid)
            if is_done(self.store, uuid) or self._fw_of(uuid) is not None:
                continue
            workflow = flow_to_workflow(unit, store=self.store, name=getattr(unit, "name", uuid))
            self.launchpad.add_wf(workflow)
        return uuids

    def run(self, *, nlaunches: int = 0) -> int:
        """Launch rockets in this process until no firework is ready (``rapidfire``); returns fireworks run.

        On a cluster, run ``rlaunch``/``qlaunch`` instead and only ``collect`` here. Only screener's own jobs are
        launched: any waiting firework with other tasks or other code stops this before anything runs.
        """
        from fireworks import FWorker
        from fireworks.core.rocket_launcher import rapidfire

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

    def collect(self, uuids: list[str]) -> dict[str, CalcResult | None]:
        """Results from the job store; a FIZZLED firework gives a failed CalcResult with its exception."""
        from screener.calculators.result import CalcResult

        refresh_store(self.store)  # workers wrote to it
        out: dict[str, CalcResult | None] = {}
        for uuid in uuids:
            result = read_result(self.store, uuid)
            if result is None:
                result = self._fizzled_result(uuid, CalcResult)
            out[uuid] = result
        return out

    def _fizzled_result(self, uuid: str, result_cls: type) -> Any:
        fw = self.launchpad.fireworks.find_one({"spec._tasks.job.uuid": uuid}, sort=[("fw_id", -1)])
        if fw is None or fw.get("state") != "FIZZLED":
            return None
        reason = "FireWorks reports the firework FIZZLED"
        launch_ids = fw.get("launches") or []
        if launch_ids:
            launch = self.launchpad.launches.find_one({"launch_id": launch_ids[-1]})
            stored = ((launch or {}).get("action") or {}).get("stored_data") or {}
            exc = stored.get("_exception") or {}
            trace = exc.get("_stacktrace") if isinstance(exc, dict) else None
            if trace:
                reason += ": " + trace.strip().splitlines()[-1]
        spec = fw.get("spec", {})
        return result_cls.failed(
            structure_id=str(spec.get("structure_id", uuid)),
            fidelity=spec.get("fidelity", "pbe"),
            backend=spec.get("backend", "standin"),
            label=str(spec.get("label", fw.get("name", ""))),
            reason=reason,
            n_sites=int(spec.get("n_sites", 0)),
            cost_cpu_hours=float(spec.get("cost_cpu_hours", 0.0)),
        )
