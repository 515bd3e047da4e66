"""jobflow-remote executor: submit calculations to a configured jobflow-remote project, collect from its store.

jobflow-remote is an optional extra (``pip install 'screener[remote]'``); it is imported only when this executor is
made. Its runner daemon (``jf runner start``) executes the jobs on the project's workers; ``run()`` here does
nothing but say so. Results are read from the project's job store (``jobflow_remote.get_jobstore``); jobs that
jobflow-remote marks FAILED or REMOTE_ERROR are reported as failed CalcResults with its error message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.execution.base import is_done, read_result, refresh_store, split_units

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
    ) -> None:
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
        return out

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

    @staticmethod
    def _failed_from_info(controller: Any, uuid: str, result_cls: type) -> Any:
        info = controller.get_job_info(job_id=uuid)
        if info is None:
            return None
        state = getattr(info.state, "name", str(info.state))
        if _STATES.get(state) != "failed":
            return None
        remote = getattr(info, "remote", None)
        error = getattr(info, "error", None) or getattr(remote, "error", None) or "no message"
        meta = getattr(info, "metadata", None) or {}
        return result_cls.failed(
            structure_id=str(meta.get("structure_id", uuid)),
            fidelity=meta.get("fidelity", "pbe"),
            backend=meta.get("backend", "standin"),
            label=str(meta.get("label", getattr(info, "name", ""))),
            reason=f"jobflow-remote state {state}: {str(error).strip().splitlines()[-1] if error else ''}",
            n_sites=int(meta.get("n_sites", 0)),
            cost_cpu_hours=float(meta.get("cost_cpu_hours", 0.0)),
        )
