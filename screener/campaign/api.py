"""One-call entry points of the campaign (what ``screener run`` and ``screener status`` do)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from screener.campaign.config import BACKENDS, BUDGET_UNITS, EXECUTORS, CampaignConfig
from screener.campaign.ledger import LEDGER_FILENAME
from screener.campaign.loop import Campaign, ComponentsFactory, Progress
from screener.errors import InvalidInputError

__all__ = ["run_campaign", "default_candidates_path", "new_campaign_dir", "parse_options"]

logger = logging.getLogger(__name__)


def default_candidates_path() -> Path:
    """The shipped demo candidates: 40 MP-20 test-split structures (screener/data/demo_candidates)."""
    from screener.data import data_path

    return Path(data_path("demo_candidates")) / "mp20_test_40.csv"


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


def run_campaign(
    campaign_dir: str | Path | None = None,
    *,
    candidates: Sequence[str | Path] | None = None,
    budget: float | None = None,
    model: str | Path | None = None,
    backend: str = "standin",
    executor: str = "local",
    policy: str = "scaling-law",
    batch_size: int = 16,
    budget_unit: str = "pbe-equivalent",
    rounds: int | None = None,
    seed: int = 0,
    references: str = "auto",
    backend_options: dict[str, Any] | None = None,
    executor_options: dict[str, Any] | None = None,
    fine_tune_epochs: int = 20,
    progress: Progress | None = None,
    factory: ComponentsFactory | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Create and run a campaign, or resume one.

    ``campaign_dir`` holding a ledger: the campaign resumes with the configuration stored in it (only ``rounds``
    applies; other options are ignored with a warning when they differ). Otherwise a new campaign is created there
    (default: ``./campaign-<date-time>``) from ``candidates`` (default: the shipped demo set) with ``budget``.

    Returns
    -------
    campaign_dir, summary : Path, dict
        The folder and ``{"rounds_run", "finished", "reason"}``.
    """
    if factory is None:
        from screener.campaign.components import build_components as factory
    if campaign_dir is not None and (Path(campaign_dir) / LEDGER_FILENAME).exists():
        camp = Campaign.open(campaign_dir, factory)
        given = {"budget_total": budget, "backend": backend if backend != "standin" else None,
                 "policy": policy if policy != "scaling-law" else None}
        for key, value in given.items():
            if value is not None and value != getattr(camp.config, key):
                logger.warning("resuming %s: --%s ignored (the campaign keeps %r)", campaign_dir, key.split("_")[0],
                               getattr(camp.config, key))
    else:
        if campaign_dir is not None and Path(campaign_dir).is_dir() and any(Path(campaign_dir).iterdir()):
            raise InvalidInputError(f"{campaign_dir} is not a screener campaign (no {LEDGER_FILENAME}) and not empty")
        if budget is None:
            raise InvalidInputError("a new campaign needs --budget")
        if not budget > 0:
            raise InvalidInputError(f"--budget must be > 0, got {budget:g}")
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if executor not in EXECUTORS:
            raise InvalidInputError(f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
        if budget_unit not in BUDGET_UNITS:
            raise InvalidInputError(f"unknown budget unit {budget_unit!r}; choose one of {list(BUDGET_UNITS)}")
        if model is not None and not Path(model).is_dir():
            raise InvalidInputError(f"model folder {model} does not exist")
        from screener.policies import load_policy

        load_policy(policy)  # unknown preset or bad YAML: one clear error before anything is written
        paths = list(candidates) if candidates else [default_candidates_path()]
        structures = _read_candidates(paths)
        if Path(policy).is_file():  # a YAML file: stored absolute so a resume from elsewhere finds it
            policy = str(Path(policy).resolve())
        if references not in ("auto", "shipped", "standin"):
            if not Path(references).is_file():
                raise InvalidInputError(f"references {references!r}: not auto, shipped, standin or an entries file")
            references = str(Path(references).resolve())
        config = CampaignConfig(
            budget_total=budget, budget_unit=budget_unit, candidates=[str(Path(p).resolve()) for p in paths],
            model=str(Path(model).resolve()) if model else None, backend=backend, executor=executor, policy=str(policy),
            backend_options=dict(backend_options or {}), executor_options=dict(executor_options or {}),
            batch_size=batch_size, max_rounds=None, seed=seed, references=references,
            fine_tune_epochs=fine_tune_epochs,
        )
        campaign_dir = Path(campaign_dir) if campaign_dir is not None else new_campaign_dir()
        camp = Campaign.create(campaign_dir, config, structures, factory)
    try:
        summary = camp.run(max_rounds=rounds, progress=progress)
    finally:
        camp.ledger.close()
    return Path(campaign_dir), summary
