"""Fixtures of the execution tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HELPER = Path(__file__).parents[1] / "calculators" / "mp20_candidates.py"


def load_candidates(n: int):
    """(material_id, Structure) pairs from tests/calculators/data/mp20_candidates.csv."""
    spec = importlib.util.spec_from_file_location("screener_test_mp20_candidates", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_candidates(n)


@pytest.fixture(scope="session")
def two_candidates():
    """Two small MP-20 structures."""
    return load_candidates(2)
