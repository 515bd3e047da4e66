"""Fixtures of the calculator tests: mock VASP (atomate2's own monkeypatch), the 20 MP-20 candidates, CHGNet."""

from __future__ import annotations

from pathlib import Path

import pytest

CALC_DATA = Path(__file__).parent / "data"
VASP_REFERENCE = Path(__file__).parents[1] / "data" / "vasp_reference"


@pytest.fixture
def vasp_test_dir() -> Path:
    """atomate2-style mock-VASP reference folders (copied from atomate2's tests, see tests/data/vasp_reference)."""
    return VASP_REFERENCE


@pytest.fixture
def mock_vasp(monkeypatch, vasp_test_dir):
    """As atomate2's tests/vasp/conftest.py: fake run_vasp by copying reference outputs, check the inputs."""
    from atomate2.utils.testing.vasp import monkeypatch_vasp

    yield from monkeypatch_vasp(monkeypatch, vasp_test_dir)


@pytest.fixture
def si_structure(vasp_test_dir):
    """The 2-atom Si cell of the reference calculations (their input POSCAR).

    The references ran on the output of a PBE relaxation, whose structure carries ``magmom = 0`` on each site
    (so MAGMOM = 0 0 in their INCAR); the site property reproduces that.
    """
    from pymatgen.core import Structure

    structure = Structure.from_file(vasp_test_dir / "Si_mp_gga_relax" / "GGA_Static" / "inputs" / "POSCAR.gz")
    structure.add_site_property("magmom", [0.0] * len(structure))
    return structure


def load_candidates(n: int = 20) -> list[tuple[str, object]]:
    """(material_id, Structure) of the MP-20 rows in tests/calculators/data/mp20_candidates.csv."""
    return _helper().load_candidates(n)


def _helper():
    import importlib.util

    helper = CALC_DATA.parent / "mp20_candidates.py"
    spec = importlib.util.spec_from_file_location("screener_test_mp20_candidates", helper)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def candidates():
    """20 small real MP structures (2-6 sites)."""
    return load_candidates(20)


@pytest.fixture(scope="session")
def chgnet_models():
    """Load both CHGNet checkpoints once per test session (seconds each)."""
    from screener.calculators.chgnet_models import load_chgnet

    return load_chgnet("0.3.0"), load_chgnet("r2scan")
