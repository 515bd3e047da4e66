"""Run or submit calculation jobs (local ``run_locally`` with a persistent store, FireWorks, jobflow-remote) and
collect their :class:`~screener.calculators.CalcResult` outputs. Names resolve lazily (no jobflow on import).
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


_LAZY = {
    "get_executor": "screener.execution.base",
    "make_job_store": "screener.execution.stores",
    "LocalExecutor": "screener.execution.local",
    "FireWorksExecutor": "screener.execution.fireworks_executor",
    "JobflowRemoteExecutor": "screener.execution.remote",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
