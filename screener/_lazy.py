"""Lazy attribute resolution shared by the package ``__init__`` modules (PEP 562).

Importing a sub-package must not import torch, jobflow or pymatgen: each ``__init__`` maps its public names to the
modules that define them, and a name's module is imported on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """Module ``__getattr__`` resolving ``name`` from ``table[name]`` (a module path) on first access."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
