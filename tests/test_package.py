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


def test_cpu_model_reads_proc_cpuinfo_or_falls_back(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    import screener._hardware as hw

    real = Path("/proc/cpuinfo")
    if real.is_file() and "model name" in real.read_text():
        expected = next(l.split(":", 1)[1].strip() for l in real.read_text().splitlines() if l.startswith("model name"))
        assert hw.cpu_model() == expected
    monkeypatch.setattr(hw, "Path", lambda _: tmp_path / "missing")
    monkeypatch.setattr(hw.platform, "processor", lambda: "")
    assert hw.cpu_model() == "unknown CPU"
