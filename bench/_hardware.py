"""Hardware description shared by the benchmarks (results record the machine that produced them)."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """CPU model name from ``lscpu`` (best effort: ``platform.processor()`` or ``"unknown"`` elsewhere)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - best effort
        return platform.processor() or "unknown"
