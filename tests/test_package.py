"""The top-level package: lazy public API, no heavy imports or side effects at import time."""

from __future__ import annotations

import subprocess
import sys

import screener


def test_every_public_name_resolves() -> None:
    for name in screener.__all__:
        assert getattr(screener, name) is not None, name


def test_import_has_no_heavy_imports() -> None:
    code = "import sys, screener, screener.cli; print(sorted(m for m in ('torch', 'jobflow', 'pymatgen', 'chgnet') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError):
        screener.no_such_thing  # noqa: B018


def test_every_subpackage_public_name_resolves() -> None:
    import importlib

    for package in ("structures", "graphs", "cgat", "calculators", "execution", "hull", "policies", "campaign",
                    "report", "world"):
        module = importlib.import_module(f"screener.{package}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"screener.{package}.{name}"
