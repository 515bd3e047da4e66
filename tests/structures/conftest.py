"""Fixtures for the structure tests: the real files in tests/data/structures and small structures built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

STRUCTURES_DIR = Path(__file__).parents[1] / "data" / "structures"


@pytest.fixture
def structures_dir() -> Path:
    """tests/data/structures (see its README.md for sources and licences)."""
    return STRUCTURES_DIR


@pytest.fixture
def gate():
    """GaTe (mp-10009, 8 sites) from the MP-20 CIF."""
    import warnings

    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fractional coordinates rounded to ideal values"
        return Structure.from_file(STRUCTURES_DIR / "mp-10009.cif")


@pytest.fixture
def si():
    """2-atom Si from the real VASP POSCAR."""
    from pymatgen.io.vasp import Poscar

    return Poscar.from_file(STRUCTURES_DIR / "vasp" / "GGA_Relax_1" / "POSCAR.gz").structure
