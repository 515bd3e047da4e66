"""Shared test set-up: one torch thread per test process (CI has 2 cores), deterministic seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def data_dir() -> Path:
    """Folder of the test data files (copied from shared/data with their licences)."""
    return DATA_DIR


@pytest.fixture
def run_cli(capsys):
    """Run the ``screener`` entry point in-process: ``run_cli(argv) -> (exit code, stdout, stderr)``."""
    from screener.cli import main

    def run(argv) -> tuple[int, str, str]:
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
