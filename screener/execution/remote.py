"""jobflow-remote executor: submit calculations to a configured jobflow-remote project, collect from its store.

jobflow-remote is an optional extra (``pip install 'screener[remote]'``); it is imported only when this executor is
made. Its runner daemon (``jf runner start``) executes the jobs on the project's workers; ``run()`` here does
nothing but say so. Results are read from the project's job store (``jobflow_remote.get_jobstore``); jobs that
jobflow-remote marks FAILED or REMOTE_ERROR are reported as failed CalcResults with its error message (custodian's
reason when a VASP run gave up under it and its run folder is readable here: a local worker or a shared file system).

Failures of the queue rather than of the calculation, a submission refused over the queue's job limit (REMOTE_ERROR
"submission failed ... QOSMaxSubmitJobPerUserLimit") or a job killed at its walltime, are run again up to
``max_retries`` times (``--executor-option max_retries=N``, default 3): ``retry_job`` redoes a failed submission,
``rerun_job`` starts a killed job afresh. Each retry is a ``retry`` event in the campaign's ledger, and the count
continues across ``screener run`` invocations; past it the job is failed with the cause in its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.execution.base import (
    check_max_retries,
    is_done,
    read_result,
    refresh_store,
    retry_cause,
    split_units,
)
from screener.execution.custodian_log import custodian_reason

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

    from screener.calculators.result import CalcResult

__all__ = ["JobflowRemoteExecutor"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "the jobflow-remote executor needs jobflow-remote: pip install 'screener[remote]' "
    "(then configure a project: jf project generate NAME; see docs/calculations.md)"
)
# jobflow-remote's JobState -> screener's; a state not listed (a newer jobflow-remote) counts as pending
_STATES = {"WAITING": "pending", "READY": "pending", "CHECKED_OUT": "pending", "UPLOADED": "pending",
           "SUBMITTED": "pending", "BATCH_SUBMITTED": "pending", "PAUSED": "pending",
           "RUNNING": "running", "BATCH_RUNNING": "running", "RUN_FINISHED": "running", "TERMINATED": "running",
           "DOWNLOADED": "running", "COMPLETED": "done", "FAILED": "failed", "REMOTE_ERROR": "failed",
           "STOPPED": "failed", "USER_STOPPED": "failed"}  # STOPPED: a parent failed, it will not run


def _jobflow_remote() -> Any:
    try:
        import jobflow_remote
    except ImportError as exc:
        raise InvalidInputError(_INSTALL_HINT) from exc
    return jobflow_remote


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _error_text(info: Any) -> str:
    """jobflow-remote's error of a job: the job's own (FAILED) and the runner's (REMOTE_ERROR)."""
    remote = getattr(info, "remote", None)
    parts = [getattr(info, "error", None), getattr(remote, "error", None)]
    return "\n".join(str(p) for p in parts if p)


def _error_line(info: Any) -> str:
    """The last non-empty line of the error (a traceback's exception line), at most 200 characters."""
    lines = [line.strip() for line in _error_text(info).splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


class JobflowRemoteExecutor:
    """Submit through ``jobflow_remote.submit_flow``; collect from the project's job store.

    Parameters
    ----------
    campaign_dir : str or Path
        Campaign folder (kept for symmetry; the results live in the project's store).
    project : str, optional
        jobflow-remote project name (default: the project jobflow-remote selects).
    worker : str, optional
        Worker of the project that runs the jobs (default: the project's first worker).
    exec_config : str, optional
        Name of an execution config of the project (modules, environment, pre-run commands).
    resources : dict, optional
        Queue resources (e.g. ``{"nodes": 1, "ntasks": 64, "time": "04:00:00"}``).
    store : JobStore, optional
        Override the project's job store (tests).
    max_retries : int
        Times a job failed by a submission limit or a walltime kill is run again before it counts as failed.
    """

    name = "jobflow-remote"
    #: jobs run on the project's workers, driven by the jobflow-remote runner
    runs_locally = False

    def __init__(
        self,
        campaign_dir: str | Path,
        *,
        project: str | None = None,
        worker: str | None = None,
        exec_config: str | None = None,
        resources: dict | None = None,
        store: JobStore | None = None,
        max_retries: int = 3,
    ) -> None:
        self.max_retries = check_max_retries(max_retries)
        self._retries: dict[str, int] = {}  # retries so far per job, as the ledger counts them (retry_failed)
        self.jfr = _jobflow_remote()
        self.campaign_dir = Path(campaign_dir)
        self.project = project
        self.worker = worker
        self.exec_config = exec_config
        self.resources = resources
        try:
            self.store = store if store is not None else self.jfr.get_jobstore(project_name=project)
            self.store.connect()
        except Exception as exc:  # noqa: BLE001 - a wrong project name or an unreachable store: the user's config
            raise InvalidInputError(f"jobflow-remote project {project or '(default)'!r}: "
                                    f"{_first_line(exc)} (list projects with `jf project list`)") from exc
        self._controller: Any = None

    def _jc(self) -> Any:
        """The project's JobController (made once); a wrong project is one InvalidInputError."""
        if self._controller is None:
            try:
                self._controller = self.jfr.JobController.from_project_name(self.project)
            except Exception as exc:  # noqa: BLE001
                raise InvalidInputError(f"jobflow-remote project {self.project or '(default)'!r}: "
                                        f"{_first_line(exc)} (list projects with `jf project list`)") from exc
        return self._controller

    def states(self, uuids: list[str]) -> dict[str, str]:
        """Each job's state as jobflow-remote reports it: pending / running / done / failed / unknown."""
        out = {}
        for uuid in uuids:
            info = self._jc().get_job_info(job_id=uuid)
            if info is None:
                out[uuid] = "unknown"
            else:
                out[uuid] = _STATES.get(getattr(info.state, "name", str(info.state)), "pending")
                if out[uuid] == "failed" and self._retry_left(uuid, info):
                    out[uuid] = "pending"  # a queue failure with retries left: retry_failed runs it again
        return out

    def _retry_left(self, uuid: str, info: Any) -> bool:
        """A queue failure (submission limit, walltime) with retries left: not final, the next poll retries it."""
        return retry_cause(_error_text(info)) is not None and self._retries.get(uuid, 0) < self.max_retries

    def retry_failed(self, uuids: list[str], attempts: dict[str, int]) -> list[dict]:
        """Run again the jobs jobflow-remote failed for a submission limit or a walltime kill, while their retries
        so far (``attempts``, counted by the caller from the ledger) are below ``max_retries``.

        Returns one note per job retried: ``uuid``, ``attempt`` (1-based), ``max_retries``, ``cause``, ``state``
        (jobflow-remote's, before the retry) and ``message`` (its error, one line).
        """
        self._retries.update({u: int(attempts.get(u, 0)) for u in uuids})
        notes = []
        for uuid in uuids:
            info = self._jc().get_job_info(job_id=uuid)
            state = getattr(getattr(info, "state", None), "name", str(getattr(info, "state", "")))
            if info is None or _STATES.get(state) != "failed":
                continue
            message = _error_line(info)
            cause = retry_cause(_error_text(info))
            if cause is None or self._retries[uuid] >= self.max_retries:
                continue
            try:
                if cause == "submission limit" and state == "REMOTE_ERROR":
                    self._jc().retry_job(job_id=uuid)  # redo the submission step
                else:
                    self._jc().rerun_job(job_id=uuid)  # killed at walltime: start afresh (no force needed)
            except Exception as exc:  # noqa: BLE001 - jobflow-remote refusing (a lock, a state): fail as reported
                logger.warning("jobflow-remote would not retry job %s: %s", uuid, _first_line(exc))
                self._retries[uuid] = self.max_retries  # no retry left: reported failed, with its cause
                continue
            self._retries[uuid] += 1
            notes.append({"uuid": uuid, "attempt": self._retries[uuid], "max_retries": self.max_retries,
                          "cause": cause, "state": state, "message": message})
        return notes

    def submit(self, flow: Job | Flow | list) -> list[str]:
        """Add each calculation to the project's queue database unless it is stored or queued; returns result uuids.

        A resumed campaign resubmits its open jobs rebuilt from the ledger (same result uuid, new uuids for atomate2's
        inner jobs), so a uuid jobflow-remote already knows is not added twice.
        """
        uuids = []
        for uuid, unit in split_units(flow):
            uuids.append(uuid)
            if is_done(self.store, uuid):
                continue
            if self._jc().get_job_info(job_id=uuid) is not None:
                continue
            self.jfr.submit_flow(
                unit,
                worker=self.worker,
                project=self.project,
                exec_config=self.exec_config,
                resources=self.resources,
            )
        return uuids

    def run(self) -> int:
        """Nothing to do here: jobflow-remote's runner (``jf runner start``) executes submitted jobs."""
        logger.info("jobflow-remote executes jobs through its runner; start it with `jf runner start`")
        return 0

    def collect(self, uuids: list[str]) -> dict[str, CalcResult | None]:
        """Stored results; jobs jobflow-remote reports as FAILED/REMOTE_ERROR become failed CalcResults."""
        from screener.calculators.result import CalcResult

        refresh_store(self.store)
        out: dict[str, CalcResult | None] = {}
        for uuid in uuids:
            result = read_result(self.store, uuid)
            if result is None:
                result = self._failed_from_info(self._jc(), uuid, CalcResult)
            out[uuid] = result
        return out

    def _failed_from_info(self, controller: Any, uuid: str, result_cls: type) -> Any:
        info = controller.get_job_info(job_id=uuid)
        if info is None:
            return None
        state = getattr(info.state, "name", str(info.state))
        if _STATES.get(state) != "failed" or self._retry_left(uuid, info):
            return None
        reason = f"jobflow-remote state {state}: {_error_line(info)}"
        cause = retry_cause(_error_text(info))
        run_dir = getattr(info, "run_dir", None)
        vasp = custodian_reason([run_dir] if run_dir else [], _error_text(info))
        if vasp:
            reason = f"{vasp} (jobflow-remote state {state})"
        elif cause:
            n = self._retries.get(uuid, 0)
            reason += f"; {cause} failure, not retried again after {n} retr{'y' if n == 1 else 'ies'} " \
                      f"(max_retries={self.max_retries})"
        meta = getattr(info, "metadata", None) or {}
        return result_cls.failed(
            structure_id=str(meta.get("structure_id", uuid)),
            fidelity=meta.get("fidelity", "pbe"),
            backend=meta.get("backend", "standin"),
            label=str(meta.get("label", getattr(info, "name", ""))),
            reason=reason,
            n_sites=int(meta.get("n_sites", 0)),
            cost_cpu_hours=float(meta.get("cost_cpu_hours", 0.0)),
        )
