"""CalcResult: JSON round trip, failures, the hull entry and MP2020's view of it."""

from __future__ import annotations

import math

import pytest
from pymatgen.core import Lattice, Structure

from screener.calculators.result import CalcResult, make_entry_dict


@pytest.fixture
def nacl() -> Structure:
    return Structure(Lattice.cubic(2.8), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _result(nacl: Structure, backend: str = "standin", run_type: str = "CHGNet-0.3.0 stand-in") -> CalcResult:
    entry = make_entry_dict(nacl, -7.0, structure_id="nacl", fidelity="pbe", backend=backend, run_type=run_type)
    return CalcResult(
        structure_id="nacl",
        fidelity="pbe",
        backend=backend,
        label="stand-in: test",
        success=True,
        energy_ev=-7.0,
        energy_per_atom_ev=-3.5,
        n_sites=2,
        final_structure=nacl.as_dict(),
        run_type=run_type,
        wall_time_s=0.1,
        cost_cpu_hours=0.16,
        entry=entry,
    )


def test_json_round_trip(nacl):
    result = _result(nacl)
    again = CalcResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.structure() == nacl
    entry = again.to_entry()
    assert entry.energy == pytest.approx(-7.0)
    assert entry.data["structure_id"] == "nacl" and entry.data["fidelity"] == "pbe"
    assert entry.data["backend"] == "standin"


def test_jobflow_serialisation_round_trip(nacl):
    from monty.json import MontyDecoder, jsanitize

    result = _result(nacl)
    decoded = MontyDecoder().process_decoded(jsanitize(result, strict=True, enum_values=True))
    assert isinstance(decoded, CalcResult) and decoded == result


def test_failed_result_has_no_energy_but_a_reason_and_cost():
    failed = CalcResult.failed(
        structure_id="x", fidelity="scan", backend="vasp", label="VASP", reason="SCF not converged", n_sites=4,
        cost_cpu_hours=3.0,
    )
    assert not failed.success and failed.energy_ev is None and failed.entry is None
    assert failed.failure_reason == "SCF not converged" and failed.cost_cpu_hours == 3.0
    assert CalcResult.model_validate_json(failed.model_dump_json()) == failed


def test_fidelity_and_backend_are_checked(nacl):
    with pytest.raises(ValueError):
        CalcResult.failed(structure_id="x", fidelity="hse", backend="vasp", label="", reason="", n_sites=1)
    with pytest.raises(ValueError):
        CalcResult.failed(structure_id="x", fidelity="pbe", backend="gaussian", label="", reason="", n_sites=1)


def test_mp2020_leaves_standin_entries_alone_and_corrects_vasp_gga(nacl):
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    standin = _result(nacl).to_entry()
    assert standin.data["apply_mp2020"] is False
    # MP2020 does not recognise the run type: the stand-in entry is not processed as GGA
    assert MaterialsProject2020Compatibility(check_potcar=False).process_entries([standin]) == []
    gga = make_entry_dict(nacl, -7.0, structure_id="nacl", fidelity="pbe", backend="vasp", run_type="GGA",
                          parameters={"hubbards": {}, "is_hubbard": False})
    assert gga["data"]["apply_mp2020"] is True
    assert gga["parameters"]["run_type"] == "GGA"


def test_non_finite_energy_is_refused(nacl):
    with pytest.raises(ValueError, match="not finite"):
        make_entry_dict(nacl, math.nan, structure_id="x", fidelity="pbe", backend="standin", run_type="x")
