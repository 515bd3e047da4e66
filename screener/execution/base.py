"""What every executor shares: splitting submissions into calculations, reading results back, and the registry."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

    from screener.calculators.result import CalcResult

__all__ = [
    "EXECUTORS",
    "get_executor",
    "split_units",
    "read_result",
    "read_results",
    "write_failure",
    "set_failure_reason",
    "iter_jobs",
    "refresh_store",
    "check_stored_inputs",
    "is_done",
    "JOB_STATES",
    "JobsPending",
    "RETRY_CAUSES",
    "retry_cause",
    "check_max_retries",
    "retry_engine_failures",
]

logger = logging.getLogger(__name__)

#: What an executor's ``states(uuids)`` reports per job, mapped from the engine's own states: ``pending`` (queued,
#: waiting, reserved), ``running``, ``done``, ``failed`` (the engine's failure states, or a user-set timeout) and
#: ``unknown`` (the engine has no such job: never submitted, or deleted from it).
JOB_STATES = ("pending", "running", "done", "failed", "unknown")


class JobsPending(Exception):  # noqa: N818 - not an error: the campaign waits for its engine
    """Raised by a campaign run without waiting (``--no-wait``) while the engine still has its jobs.

    Nothing is wrong: the jobs are submitted and reserved in the ledger; a later ``screener run`` (or
    ``screener collect``) collects them. ``counts`` maps ``pending``/``running`` to numbers of jobs.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = dict(counts)
        parts = [f"{n} {state}" for state, n in self.counts.items() if n]
        super().__init__(f"{sum(self.counts.values())} calculation(s) with the executor ({', '.join(parts)})")


#: Failures of the queue, not of the calculation, recognised in an engine's error text: worth running again. Slurm
#: (``sbatch: error: QOSMaxSubmitJobPerUserLimit``, ``CANCELLED ... DUE TO TIME LIMIT``), PBS/Torque (``would exceed
#: queue's per-user limit``, ``walltime 3610 exceeded limit 3600``), LSF (``TERM_RUNLIMIT``), SGE (``h_rt``) and
#: the words jobflow-remote and qtoolkit use around them.
RETRY_CAUSES: dict[str, re.Pattern[str]] = {
    "submission limit": re.compile(
        r"MaxSubmitJob|AssocMaxSubmit|submit(?:ted)?[ _-]?jobs?[ _-]?(?:per[ _-]user[ _-]?)?limit|submission limit|"
        r"would exceed[^\n]*limit|maximum number of (?:queued |submitted )?jobs|too many (?:queued |submitted )?jobs|"
        r"job submit limit|QOSMaxJobsPerUser|job limit reached",
        re.IGNORECASE),
    "walltime": re.compile(
        r"DUE TO TIME LIMIT|walltime[^\n]*exceed|exceeded[^\n]*walltime|wall[ -]?time limit|TERM_RUNLIMIT|"
        r"h_rt limit|time limit (?:was )?(?:exceeded|reached)|killed[^\n]*(?:walltime|time limit)",
        re.IGNORECASE),
}


def retry_cause(text: str | None) -> str | None:
    """``"submission limit"`` or ``"walltime"`` when an engine's error text names one (see :data:`RETRY_CAUSES`)."""
    if not text:
        return None
    for cause, pattern in RETRY_CAUSES.items():
        if pattern.search(str(text)):
            return cause
    return None


def check_max_retries(value: Any) -> int:
    """``max_retries`` of an executor option: an integer >= 0, else one InvalidInputError."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < 0 or (isinstance(value, float) and value != number):
        raise InvalidInputError(f"max_retries must be a whole number >= 0, got {value!r}")
    return number


def retry_engine_failures(executor: Any, ledger: Any, uuids: list[str]) -> list[str]:
    """Resubmit the jobs an engine failed for the queue's reasons (submission limit, walltime), within bounds.

    The executor's ``retry_failed(uuids, attempts)`` asks its engine to run each such job again while
    ``attempts[uuid]`` (retries so far, counted from the ledger's ``retry`` events, so a later ``screener run``
    continues the count) is below its ``max_retries``; each retry is written to the ledger as a ``retry`` event
    with the cause and the engine's message. Returns the uuids retried. Executors without ``retry_failed`` (local)
    do nothing here.
    """
    retry = getattr(executor, "retry_failed", None)
    if retry is None or not uuids:
        return []
    attempts: dict[str, int] = {}
    for event in ledger.events(kind="retry"):
        uuid = (json.loads(event.get("data_json") or "{}") or {}).get("uuid")
        if uuid:
            attempts[uuid] = attempts.get(uuid, 0) + 1
    done = retry(list(uuids), attempts)
    for note in done:
        ledger.log_event(
            "retry",
            f"job {note['uuid']}: {note['cause']} failure, resubmitted (retry {note['attempt']} of "
            f"{note['max_retries']}): {note['message']}",
            data=note,
        )
    return [note["uuid"] for note in done]


EXECUTORS = {
    "local": "screener.execution.local:LocalExecutor",
    "fireworks": "screener.execution.fireworks_executor:FireWorksExecutor",
    "jobflow-remote": "screener.execution.remote:JobflowRemoteExecutor",
}


def get_executor(name: str = "local", campaign_dir: str | Path = ".", **options: Any) -> Any:
    """Build an executor: ``submit(flow) -> uuids``, ``run()``, ``collect(uuids) -> {uuid: CalcResult | None}``.

    Parameters
    ----------
    name : {"local", "fireworks", "jobflow-remote"}
        Where jobs run.
    campaign_dir : str or Path
        Campaign folder (the local job store and the submission queue live in it).
    **options
        Passed to the executor (``store=`` a JobStore, ``store_kind="mongo"`` + ``store_uri=``, ...).
    """
    import importlib

    try:
        target = EXECUTORS[name]
    except KeyError:
        raise InvalidInputError(f"unknown executor {name!r}; choose one of {sorted(EXECUTORS)}") from None
    import inspect

    module, cls = target.split(":")
    factory = getattr(importlib.import_module(module), cls)
    accepted = [p for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - {p.name for p in accepted})
    if unknown:  # one line, not a TypeError traceback (e.g. max_retries given to the local executor)
        raise InvalidInputError(f"the {name} executor has no option {', '.join(map(repr, unknown))}; its options: "
                                f"{', '.join(p.name for p in accepted)}")
    return factory(campaign_dir, **options)


def split_units(obj: Job | Flow | list) -> list[tuple[str, Job | Flow]]:
    """Split a submission into calculations: ``[(result_uuid, job_or_flow), ...]``.

    A Job is one calculation; a Flow whose output is one reference (what ``make_flow`` returns) is one calculation
    whose result is that reference's job; any other Flow (or a list) is a container of calculations.
    """
    from jobflow import Flow, Job
    from jobflow.core.reference import OutputReference

    if isinstance(obj, list | tuple):
        return [unit for item in obj for unit in split_units(item)]
    if isinstance(obj, Job):
        return [(obj.uuid, obj)]
    if isinstance(obj, Flow):
        if isinstance(obj.output, OutputReference):
            return [(obj.output.uuid, obj)]
        return [unit for item in obj.jobs for unit in split_units(item)]
    raise InvalidInputError(f"cannot submit a {type(obj).__name__}; expected a jobflow Job, Flow or list of them")


def iter_jobs(obj: Job | Flow) -> list[Job]:
    """All jobs of a Job or (nested) Flow, in order."""
    from jobflow import Flow

    if isinstance(obj, Flow):
        return [job for item in obj.jobs for job in iter_jobs(item)]
    return [obj]


def _output_doc(store: JobStore, uuid: str, _depth: int = 0, *, load: bool = False) -> dict | None:
    """Last stored document of ``uuid``; an output that is a reference (a job replaced by a flow) is followed.

    Plain JSON (``load=True`` inserts blobs of the additional stores as stored): nothing is decoded here.
    """
    docs = list(store.query({"uuid": uuid}, properties=["uuid", "index", "output"], sort={"index": -1}, limit=1,
                            load=load))
    if not docs:
        return None
    doc = docs[0]
    output = doc.get("output")
    if isinstance(output, dict) and output.get("@class") == "OutputReference" and _depth < 20:
        target = _output_doc(store, str(output.get("uuid")), _depth + 1, load=load)
        return {**doc, "output": None if target is None else target.get("output")}
    return doc


def read_result(store: JobStore, uuid: str) -> CalcResult | None:
    """The CalcResult stored for ``uuid`` (its last index), or None if there is none yet.

    The stored JSON is checked against screener's allow-list (:mod:`screener._safe_json`) and validated as a
    CalcResult; nothing it names is imported.
    """
    doc = _output_doc(store, uuid)
    if doc is None or doc.get("output") is None:
        return None
    return _to_result(store, uuid, doc["output"])


def read_results(store: JobStore, uuids: list[str]) -> dict[str, CalcResult | None]:
    """:func:`read_result` of many jobs, with one ``$in`` query per 5,000 jobs instead of one query a job."""
    latest: dict[str, dict] = {}
    for start in range(0, len(uuids), 5000):
        chunk = list(uuids[start:start + 5000])
        for doc in store.query({"uuid": {"$in": chunk}}, properties=["uuid", "index", "output"], load=False):
            uuid = doc.get("uuid")
            if uuid not in latest or (doc.get("index") or 0) > (latest[uuid].get("index") or 0):
                latest[uuid] = doc
    out: dict[str, CalcResult | None] = {}
    for uuid in uuids:
        output = (latest.get(uuid) or {}).get("output")
        if isinstance(output, dict) and output.get("@class") == "OutputReference":
            out[uuid] = read_result(store, uuid)  # a job replaced by a flow: follow the reference
        else:
            out[uuid] = None if output is None else _to_result(store, uuid, output)
    return out


def _to_result(store: JobStore, uuid: str, output: Any) -> CalcResult:
    """A stored output checked against the allow-list and validated as a CalcResult (nothing it names imported)."""
    from screener._safe_json import check
    from screener.calculators.result import CalcResult

    if not isinstance(output, dict) or ("@class" in output and output.get("@class") != "CalcResult"):
        named = output.get("@class") if isinstance(output, dict) else type(output).__name__
        raise InvalidInputError(f"job {uuid} did not produce a CalcResult but a {named}")
    if any(isinstance(v, dict) and "blob_uuid" in v for v in output.values()):
        output = (_output_doc(store, uuid, load=True) or {}).get("output") or {}
    check(output, f"job {uuid} in the job store")
    return CalcResult.model_validate({k: v for k, v in output.items() if not k.startswith("@")})


def check_stored_inputs(store: JobStore, job_dict: Any, what: str) -> None:
    """Check the stored outputs a job's inputs refer to before jobflow resolves (decodes) them for it to run.

    A job whose inputs reference an output already in the store (a VASP run finished before a kill) gets that
    output decoded by jobflow; in a copied campaign it is data from someone else, so its raw JSON must pass
    :func:`screener._safe_json.check` (task documents allowed) first.
    """
    from screener._safe_json import check

    refs: set[str] = set()
    stack = [job_dict]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("@class") == "OutputReference" and isinstance(node.get("uuid"), str):
                refs.add(node["uuid"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for uuid in sorted(refs):
        doc = _output_doc(store, uuid, load=True)
        if doc is not None and doc.get("output") is not None:
            check(doc["output"], f"{what}: stored output of job {uuid}", task_docs=True)


def refresh_store(store: JobStore) -> None:
    """Re-read a file-backed store that other processes (workers) may have written; other stores stay as they are."""
    from maggma.stores import JSONStore

    for sub in [store.docs_store, *store.additional_stores.values()]:
        if isinstance(sub, JSONStore):
            sub.connect(force_reset=True)
        else:
            sub.connect()


def is_done(store: JobStore, uuid: str) -> bool:
    """Whether ``uuid`` has a stored, non-empty output (a job replaced by a retry is not done yet)."""
    doc = _output_doc(store, uuid)
    return doc is not None and doc.get("output") is not None


def write_failure(store: JobStore, job: Job, reason: str) -> CalcResult:
    """Store a failed CalcResult under ``job``'s uuid, for a job that crashed without writing one.

    ``job.metadata`` must hold structure_id, fidelity, backend and n_sites (``make_flow`` sets them).
    """
    from monty.json import jsanitize

    from screener.calculators.result import CalcResult

    meta = job.metadata or {}
    result = CalcResult.failed(
        structure_id=str(meta.get("structure_id", job.uuid)),
        fidelity=meta.get("fidelity", "pbe"),
        backend=meta.get("backend", "standin"),
        label=str(meta.get("label", job.name)),
        reason=reason,
        n_sites=int(meta.get("n_sites", 0)),
        cost_cpu_hours=float(meta.get("cost_cpu_hours", 0.0)),
    )
    doc = {
        "uuid": job.uuid,
        "index": job.index,
        "output": jsanitize(result, strict=True, enum_values=True, allow_bson=True),
        "completed_at": datetime.now(timezone.utc).isoformat(),
        "metadata": meta,
        "hosts": job.hosts,
        "name": job.name,
    }
    store.docs_store.update(doc, key=["uuid", "index"])
    return result


def set_failure_reason(store: JobStore, uuid: str, reason: str) -> bool:
    """Replace the failure reason of the failed CalcResult stored for ``uuid`` (its last index) with ``reason``
    (custodian's, found after the job wrote a generic one); the attempts it took are kept. Returns whether it did."""
    for _ in range(20):  # a job replaced by a flow (the VASP retry): its output refers to the final job's
        docs = list(store.docs_store.query({"uuid": uuid}, sort={"index": -1}, limit=1))
        if not docs:
            return False
        doc = {k: v for k, v in docs[0].items() if k != "_id"}
        output = doc.get("output")
        if not (isinstance(output, dict) and output.get("@class") == "OutputReference"):
            break
        uuid = str(output.get("uuid"))
    if not isinstance(output, dict) or output.get("success", True) or "blob_uuid" in json.dumps(output):
        return False
    attempts = output.get("attempts")
    suffix = f" ({attempts} attempts)" if isinstance(attempts, int) and attempts > 1 else ""
    doc["output"] = {**output, "failure_reason": reason + suffix}
    store.docs_store.update(doc, key=["uuid", "index"])
    return True
