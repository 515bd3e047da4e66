"""Local executor: ``jobflow.run_locally`` over a persistent job store in the campaign folder, resumable.

``submit`` writes each calculation (a Job or Flow with a deterministic uuid) to ``<campaign>/queue/<uuid>.json``;
``run`` executes, one calculation at a time, every queued job whose output is not yet in the store (so a process
killed at any point loses at most the calculation it was running, and a re-run recomputes nothing that was stored).
Jobs of a calculation already stored (e.g. a finished VASP run whose conversion job was killed) are not rerun:
references to them are resolved from the store. Queue files may come with a copied campaign: each is checked
against the allow-list of screener's own jobs (:mod:`screener._safe_json`) before anything in it is decoded, and one
that names other code stops ``run`` before any job runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.execution.base import (
    check_stored_inputs,
    is_done,
    iter_jobs,
    read_results,
    set_failure_reason,
    split_units,
    write_failure,
)
from screener.execution.custodian_log import custodian_reason

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

    from screener.calculators.result import CalcResult

__all__ = ["LocalExecutor"]

logger = logging.getLogger(__name__)


class _FailureCapture(logging.Handler):
    """Collects the "<job> failed with exception" records that ``run_locally`` logs instead of raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.messages.append(message)


class LocalExecutor:
    """Run calculations in this process with ``jobflow.run_locally`` (``ensure_success=False``).

    Parameters
    ----------
    campaign_dir : str or Path
        Campaign folder: ``jobstore/`` (results), ``queue/`` (submitted calculations), ``runs/`` (job folders).
    store : JobStore, optional
        Job store to use instead of the campaign's JSON store.
    store_kind : {"local", "mongo"}
        Kind of store to make when ``store`` is not given.
    store_uri : str, optional
        MongoDB URI for ``store_kind="mongo"``.
    create_folders : bool
        Run each job in its own folder under ``runs/`` (needed for VASP).
    """

    name = "local"
    #: ``run()`` executes the jobs in this process (a job without output after ``run()`` has failed)
    runs_locally = True

    def __init__(
        self,
        campaign_dir: str | Path,
        *,
        store: JobStore | None = None,
        store_kind: str = "local",
        store_uri: str | None = None,
        create_folders: bool = True,
    ) -> None:
        from screener.execution.stores import make_job_store

        self.campaign_dir = Path(campaign_dir).resolve()  # jobs chdir into their run folders
        self.campaign_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir = self.campaign_dir / "queue"
        self.queue_dir.mkdir(exist_ok=True)
        self.runs_dir = self.campaign_dir / "runs"
        self.create_folders = create_folders
        self.store = store if store is not None else make_job_store(store_kind, store_uri or self.campaign_dir)
        self.store.connect()

    # -- submission ---------------------------------------------------------------------------------------------
    def submit(self, flow: Job | Flow | list) -> list[str]:
        """Queue calculations; return the uuids of the jobs whose outputs are their CalcResults.

        Submitting the same calculation again (same deterministic uuid) is harmless: it is queued once and, if its
        result is stored, never rerun.
        """
        from monty.json import jsanitize

        uuids = []
        for uuid, unit in split_units(flow):
            path = self.queue_dir / f"{uuid}.json"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(jsanitize(unit.as_dict(), strict=True, enum_values=True)))
                tmp.replace(path)
            uuids.append(uuid)
        return uuids

    def pending(self) -> list[str]:
        """Uuids of queued calculations without a stored result."""
        return [p.stem for p in sorted(self.queue_dir.glob("*.json")) if not is_done(self.store, p.stem)]

    # -- running ------------------------------------------------------------------------------------------------
    def run(self, uuids: list[str] | None = None, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Run every queued calculation (or those in ``uuids``) that has no stored result yet.

        Parameters
        ----------
        uuids : list of str, optional
            Restrict to these calculations.
        progress : callable, optional
            Called as ``progress(n_done, n_total)`` after each calculation.

        Returns
        -------
        int
            Number of calculations run in this call.
        """
        from jobflow import Flow, run_locally

        todo = self.pending() if uuids is None else [u for u in uuids if not is_done(self.store, u)]
        units = {uuid: self._load_queued(uuid) for uuid in todo}  # all checked before any runs
        capture = _FailureCapture()
        jf_logger = logging.getLogger("jobflow.managers.local")
        old_level = jf_logger.level
        jf_logger.addHandler(capture)
        jf_logger.setLevel(logging.INFO)
        try:
            for i, uuid in enumerate(todo):
                unit = units[uuid]
                if unit is None:
                    logger.warning("calculation %s was never submitted here; skipped", uuid)
                    continue
                jobs = [job for job in iter_jobs(unit) if not is_done(self.store, job.uuid)]
                for job in jobs:
                    job.hosts = []
                capture.messages.clear()
                started = time.time()
                if jobs:
                    run_locally(
                        Flow(jobs) if len(jobs) > 1 else jobs[0],
                        store=self.store,
                        log=False,
                        create_folders=self.create_folders,
                        root_dir=self.runs_dir,
                        ensure_success=False,
                        allow_external_references=True,
                    )
                if not is_done(self.store, uuid):
                    final = next((j for j in iter_jobs(unit) if j.uuid == uuid), iter_jobs(unit)[-1])
                    reason = capture.messages[-1].splitlines()[-1] if capture.messages else "job produced no output"
                    vasp_reason = self._custodian_reason(started, capture.messages) if jobs else None
                    write_failure(self.store, final, vasp_reason or f"job {final.name!r} crashed: {reason}")
                    logger.warning("calculation %s failed: %s", uuid, vasp_reason or reason)
                elif jobs and capture.messages and self._stored_failure(uuid):
                    # a job of it failed and its final job recorded a failure: custodian's reason, if it was VASP's
                    vasp_reason = self._custodian_reason(started, capture.messages)
                    if vasp_reason:
                        set_failure_reason(self.store, uuid, vasp_reason)
                if progress is not None:
                    progress(i + 1, len(todo))
        finally:
            jf_logger.removeHandler(capture)
            jf_logger.setLevel(old_level)
        return len(todo)

    def _stored_failure(self, uuid: str) -> bool:
        """Whether the result stored for ``uuid`` is a failure."""
        result = read_results(self.store, [uuid])[uuid]
        return result is not None and not result.success

    def _custodian_reason(self, started: float, messages: list[str]) -> str | None:
        """custodian's reason for a VASP run that gave up, from the run logs in the job folders made since
        ``started`` (jobflow names folders by time, not by job; one calculation runs at a time, so they are its
        own), else from custodian's exception in ``messages``; None if custodian was not involved."""
        folders = []
        if self.create_folders and self.runs_dir.is_dir():
            folders = sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and p.stat().st_mtime >= started - 1)
        return custodian_reason(folders, "\n".join(messages))

    def _load_queued(self, uuid: str) -> Job | Flow | None:
        """The calculation queued as ``queue/<uuid>.json`` (None if there is none), checked before it is decoded.

        A queue file may come with a copied campaign: it must hold screener's own jobs only (the allow-list of
        :mod:`screener._safe_json`), with ``uuid`` among its jobs, or :class:`InvalidInputError` names the file.
        """
        from monty.json import MontyDecoder

        from screener._safe_json import check

        path = self.queue_dir / f"{uuid}.json"
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"queue file {path}: cannot read it ({exc})") from exc
        check(raw, f"queue file {path}", jobs=True)
        if not isinstance(raw, dict) or raw.get("@class") not in ("Job", "Flow"):
            raise InvalidInputError(f"queue file {path}: not a jobflow Job or Flow")
        check_stored_inputs(self.store, raw, f"queue file {path}")
        unit = MontyDecoder().process_decoded(raw)
        if uuid not in {job.uuid for job in iter_jobs(unit)}:
            raise InvalidInputError(f"queue file {path}: holds no job with uuid {uuid}")
        return unit

    # -- results ------------------------------------------------------------------------------------------------
    def collect(self, uuids: list[str]) -> dict[str, CalcResult | None]:
        """Stored results by uuid (None where the calculation has not finished)."""
        return read_results(self.store, list(uuids))

    def describe(self) -> dict[str, Any]:
        """Counts of queued and finished calculations."""
        queued = [p.stem for p in self.queue_dir.glob("*.json")]
        done = sum(is_done(self.store, u) for u in queued)
        return {"executor": self.name, "queued": len(queued), "done": done, "pending": len(queued) - done}
