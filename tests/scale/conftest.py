"""Small synthetic Alexandria-format inputs for the scale tests (written once per session)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory) -> list[Path]:
    """Three json.bz2 files of 20 synthetic ComputedStructureEntry dicts each (60 distinct structures)."""
    from screener.world.synthetic import write_synthetic_alexandria

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_synthetic_alexandria(tmp_path_factory.mktemp("syn"), 60, per_file=20, seed=3, max_sites=8)
