"""Run or submit calculation jobs (local ``run_locally`` with a persistent store, FireWorks, jobflow-remote) and
collect their :class:`~screener.calculators.CalcResult` outputs. Names resolve lazily (no jobflow on import).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "get_executor": "screener.execution.base",
    "make_job_store": "screener.execution.stores",
    "LocalExecutor": "screener.execution.local",
    "FireWorksExecutor": "screener.execution.fireworks_executor",
    "JobflowRemoteExecutor": "screener.execution.remote",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'screener.execution' has no attribute {name!r}")
