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
