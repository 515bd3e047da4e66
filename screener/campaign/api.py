"""One-call entry points of the campaign (what ``screener run`` and ``screener status`` do)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from screener.campaign.config import BACKENDS, BUDGET_UNITS, EXECUTORS, CampaignConfig
from screener.campaign.ledger import LEDGER_FILENAME, Ledger
from screener.campaign.loop import Campaign, ComponentsFactory, Progress
from screener.errors import InvalidInputError

__all__ = ["run_campaign", "set_budget", "check_budget", "resume_differences", "default_candidates_path",
           "new_campaign_dir", "parse_options"]

logger = logging.getLogger(__name__)


def default_candidates_path() -> Path:
    """The shipped demo candidates: 40 Materials Project structures of Li-Fe-O (screener/data/demo_candidates)."""
    from screener.data import data_path

    return Path(data_path("demo_candidates")) / "mp_li_fe_o_40.csv"


def new_campaign_dir(base: str | Path = ".") -> Path:
    """A fresh ``campaign-<UTC date-time>`` folder name under ``base``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(base) / f"campaign-{stamp}"
    k = 1
    while path.exists():
        k += 1
        path = Path(base) / f"campaign-{stamp}-{k}"
    return path


def parse_options(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are JSON when they parse (numbers, true, lists), else strings."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _read_candidates(paths: Sequence[str | Path]) -> dict[str, Any]:
    from screener.structures import read_structures

    for p in paths:
        if not Path(p).exists():
            raise InvalidInputError(f"candidates file {p} does not exist")
    result = read_structures(list(paths), skip_invalid=True)
    for bad in result.skipped:
        logger.warning("candidate skipped: %s", bad)
    structures: dict[str, Any] = {}
    for rec in result.records:
        if rec.structure_id in structures:
            raise InvalidInputError(f"candidate id {rec.structure_id!r} appears twice; ids must be unique")
        structures[rec.structure_id] = rec.structure
    if not structures:
        raise InvalidInputError(f"no valid candidate structure in {', '.join(map(str, paths))}")
    return structures


# Options of a new campaign when not given (None means "not given": on a resume only given options are compared).
DEFAULTS: dict[str, Any] = {
    "backend": "standin", "executor": "local", "policy": "expected-value", "batch_size": 16,
    "budget_unit": "pbe-equivalent", "seed": 0, "references": "auto", "fine_tune_epochs": 20,
    "require_competing_phases": False,
}
# The command-line flag of each CampaignConfig field, for messages.
FLAGS: dict[str, str] = {
    "budget_total": "--budget", "candidates": "--candidates", "model": "--model", "scan_model": "--scan-model",
    "backend": "--backend",
    "executor": "--executor", "policy": "--policy", "batch_size": "--batch", "budget_unit": "--budget-unit",
    "seed": "--seed", "references": "--references", "backend_options": "--backend-option",
    "executor_options": "--executor-option", "fine_tune_epochs": "fine_tune_epochs",
    "require_competing_phases": "--require-competing-phases",
}


def check_budget(budget: float, flag: str = "--budget") -> float:
    """``budget`` as a float when it is a finite number > 0; else a one-line :class:`InvalidInputError`."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{flag} must be a number > 0, got {budget!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{flag} must be > 0 and finite, got {value:g}")
    return value


def check_ensemble_folder(path: str | Path, flag: str) -> None:
    """One-line :class:`InvalidInputError` unless ``path`` is a CGAT ensemble folder (``ensemble.json`` in it): checked
    before anything is written or loaded."""
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidInputError(f"{flag} {path}: no such folder")
    if not (folder / "ensemble.json").is_file():
        raise InvalidInputError(f"{flag} {path}: not a screener ensemble (no ensemble.json in it; train one with "
                                "`screener train --ensemble N`)")


def _resolved(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _preset_or_file(value: str | None) -> str | None:
    """A policy or references value as stored: a file becomes its absolute path, a preset name stays."""
    return str(Path(value).resolve()) if value is not None and Path(value).is_file() else value


def resume_differences(stored: dict[str, Any], budget_total: float | None, given: dict[str, Any]) -> list[str]:
    """``--flag value (campaign: stored)`` for each given option that differs from a campaign's stored config.

    Parameters
    ----------
    stored : dict
        The campaign's config (``meta.config``).
    budget_total : float or None
        The campaign's current total budget (it may have been changed since creation).
    given : dict
        Options given now, by config field; None = not given.
    """
    wanted = dict(given)
    wanted["candidates"] = [_resolved(p) for p in given["candidates"]] if given.get("candidates") else None
    wanted["model"] = _resolved(given.get("model"))
    wanted["scan_model"] = _resolved(given.get("scan_model"))
    wanted["policy"] = _preset_or_file(given.get("policy"))
    wanted["references"] = _preset_or_file(given.get("references"))
    current = {**stored, "budget_total": budget_total if budget_total is not None else stored.get("budget_total")}
    out = []
    for key, value in wanted.items():
        if value is None:
            continue
        have = current.get(key)
        same = (math.isclose(float(value), float(have), rel_tol=1e-12) if key == "budget_total" and have is not None
                else value == have)
        if not same:
            out.append(f"{FLAGS.get(key, key)} {_show(value)} (campaign: {_show(have)})")
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def set_budget(campaign_dir: str | Path, total: float) -> tuple[float, float, str]:
    """Change a campaign's total budget (``screener budget``); returns ``(old, new, unit)``.

    Takes the writer lock, so it is refused while the campaign runs; the change and its event are one transaction.
    """
    total = check_budget(total, "--total")
    with Ledger.in_dir(campaign_dir) as ledger:
        if ledger.get_meta("config") is None:
            raise InvalidInputError(f"{campaign_dir} holds no complete campaign (no configuration in its ledger)")
        old, new = ledger.set_budget_total(total)
        return old, new, ledger.budget().unit


def run_campaign(
    campaign_dir: str | Path | None = None,
    *,
    candidates: Sequence[str | Path] | None = None,
    budget: float | None = None,
    model: str | Path | None = None,
    scan_model: str | Path | None = None,
    backend: str | None = None,
    executor: str | None = None,
    policy: str | None = None,
    batch_size: int | None = None,
    budget_unit: str | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    references: str | None = None,
    require_competing_phases: bool | None = None,
    backend_options: dict[str, Any] | None = None,
    executor_options: dict[str, Any] | None = None,
    fine_tune_epochs: int | None = None,
    wait: bool | None = None,
    poll_interval_s: float | None = None,
    progress: Progress | None = None,
    factory: ComponentsFactory | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_created: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Create and run a campaign, or resume one.

    ``on_round`` is called with :meth:`Campaign.round_summary` after each finished round (the console's round line);
    ``on_created`` once, before round 1 of a new campaign, with the competing phases each hull holds per chemical system
    (the ledger's ``competing_phases`` record, :func:`screener.campaign.hulls.record_competing_phases`).

    ``campaign_dir`` holding a ledger: the campaign resumes with the configuration stored in it. Only ``rounds``
    applies to a resume; any other option given (not None) that differs from the stored configuration is refused,
    with all of them listed in one :class:`~screener.errors.InvalidInputError` (the budget is changed with
    :func:`set_budget`). Otherwise a new campaign is created there (default: ``./campaign-<date-time>``) from
    ``candidates`` (default: the shipped demo set) with ``budget``; options not given take :data:`DEFAULTS`.

    The process holds the campaign's writer lock from start to end: a second writer gets
    :class:`~screener.campaign.folder.CampaignBusyError`.

    ``wait`` (default: True for the ``local`` executor, False for ``fireworks`` and ``jobflow-remote``): poll the
    executor every ``poll_interval_s`` (this run only; default: the campaign's ``poll_interval_s``) until the round's
    jobs are back. False: submit the round's jobs and return with ``summary["pending"]`` (``{"pending": n,
    "running": n}``); a later call collects them. Neither option is compared with the stored configuration.

    Returns
    -------
    campaign_dir, summary : Path, dict
        The folder and ``{"rounds_run", "finished", "reason"}``.
    """
    if factory is None:
        from screener.campaign.components import build_components as factory
    if budget is not None:
        budget = check_budget(budget)
    given = {"budget_total": budget, "candidates": list(candidates) if candidates else None, "model": model,
             "scan_model": scan_model,
             "backend": backend, "executor": executor, "policy": policy, "batch_size": batch_size,
             "budget_unit": budget_unit, "seed": seed, "references": references, "backend_options": backend_options,
             "executor_options": executor_options, "fine_tune_epochs": fine_tune_epochs,
             "require_competing_phases": require_competing_phases}
    if campaign_dir is not None and (Path(campaign_dir) / LEDGER_FILENAME).exists():
        with Ledger.in_dir(campaign_dir, read_only=True) as ledger:  # damage is found here, before any work
            stored = ledger.get_meta("config") or {}
            total = ledger.get_meta("budget_total")
        _check_wait(wait, poll_interval_s, stored.get("executor", "local"))
        differing = resume_differences(stored, total, given) if stored else []
        if differing:
            hint = (f"; change the budget with `screener budget {campaign_dir} --total X`"
                    if any(d.startswith("--budget ") for d in differing) else "")
            raise InvalidInputError(
                f"resuming {campaign_dir}: {', '.join(differing)} differ from the campaign's stored configuration; "
                f"resume without them or create a new campaign in another folder{hint}"
            )
        camp = Campaign.open(campaign_dir, factory)
    else:
        if campaign_dir is not None and Path(campaign_dir).is_dir() and any(Path(campaign_dir).iterdir()):
            raise InvalidInputError(f"{campaign_dir} is not a screener campaign (no {LEDGER_FILENAME}) and not empty")
        if budget is None:
            raise InvalidInputError("a new campaign needs --budget")
        opts = {k: (v if v is not None else DEFAULTS[k]) for k, v in given.items() if k in DEFAULTS}
        backend, executor, policy = opts["backend"], opts["executor"], opts["policy"]
        budget_unit, references = opts["budget_unit"], opts["references"]
        _check_wait(wait, poll_interval_s, executor)
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if executor not in EXECUTORS:
            raise InvalidInputError(f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
        if budget_unit not in BUDGET_UNITS:
            raise InvalidInputError(f"unknown budget unit {budget_unit!r}; choose one of {list(BUDGET_UNITS)}")
        if model is not None and not Path(model).is_dir():
            raise InvalidInputError(f"model folder {model} does not exist")
        if scan_model is not None:
            check_ensemble_folder(scan_model, "--scan-model")
        from screener.policies import load_policy

        load_policy(policy)  # unknown preset or bad YAML: one clear error before anything is written
        paths = list(candidates) if candidates else [default_candidates_path()]
        structures = _read_candidates(paths)
        if Path(policy).is_file():  # a YAML file: stored absolute so a resume from elsewhere finds it
            policy = str(Path(policy).resolve())
        from screener.campaign.hulls import REFERENCE_MODES

        if references not in REFERENCE_MODES:
            if not Path(references).is_file():
                raise InvalidInputError(
                    f"references {references!r}: not one of {', '.join(REFERENCE_MODES)} or an entries file")
            references = str(Path(references).resolve())
        config = CampaignConfig(
            budget_total=budget, budget_unit=budget_unit, candidates=[str(Path(p).resolve()) for p in paths],
            model=str(Path(model).resolve()) if model else None,
            scan_model=str(Path(scan_model).resolve()) if scan_model else None, backend=backend, executor=executor,
            policy=str(policy),
            backend_options=dict(backend_options or {}), executor_options=dict(executor_options or {}),
            batch_size=opts["batch_size"], max_rounds=None, seed=opts["seed"], references=references,
            fine_tune_epochs=opts["fine_tune_epochs"], require_competing_phases=opts["require_competing_phases"],
        )
        campaign_dir = Path(campaign_dir) if campaign_dir is not None else new_campaign_dir()
        camp = Campaign.create(campaign_dir, config, structures, factory)
        if on_created:
            from screener.campaign.hulls import COMPETING_PHASES_META

            on_created(camp.ledger.get_meta(COMPETING_PHASES_META) or {})
    from screener.execution.base import JobsPending

    if poll_interval_s is not None:  # this run's polling only: not stored, never compared on a resume
        camp.config = camp.config.model_copy(update={"poll_interval_s": float(poll_interval_s)})
    camp.wait = (camp.config.executor == "local") if wait is None else bool(wait)
    finished_rounds = []

    def counted(summary: dict[str, Any]) -> None:
        finished_rounds.append(summary["round"])
        if on_round:
            on_round(summary)

    try:
        summary = camp.run(max_rounds=rounds, progress=progress, on_round=counted)
    except JobsPending as pending:  # submitted; the engine runs them: a later run (or `screener collect`) collects
        summary = {"rounds_run": len(finished_rounds), "finished": False, "pending": pending.counts,
                   "reason": f"{pending} submitted and reserved; collect them later"}
    finally:
        camp.close()
    return Path(campaign_dir), summary


def _check_wait(wait: bool | None, poll_interval_s: float | None, executor: str) -> None:
    """``--no-wait`` needs an executor whose jobs run elsewhere; ``--poll-interval`` a finite number > 0."""
    if wait is False and executor == "local":
        raise InvalidInputError("--no-wait needs an executor whose jobs run elsewhere (fireworks, jobflow-remote); "
                                "the local executor runs them in this process")
    if poll_interval_s is not None and not (math.isfinite(poll_interval_s) and poll_interval_s > 0):
        raise InvalidInputError(f"--poll-interval must be a finite number of seconds > 0, got {poll_interval_s}")
