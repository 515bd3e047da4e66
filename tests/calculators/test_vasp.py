"""VASP back-end against atomate2's mock VASP: inputs checked against real reference runs, outputs parsed."""

from __future__ import annotations

import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from screener.calculators import CalcResult, get_calculator

GGA_REF = {"MP GGA static": "Si_mp_gga_relax/GGA_Static"}
SCAN_REF = {"MP meta-GGA static": "Si_mp_meta_gga_relax/r2scan_final_static"}


@pytest.fixture
def store():
    s = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    s.connect()
    return s


def _run(flow, store, tmp_path) -> CalcResult:
    responses = run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, ensure_success=False, log=False)
    assert flow.output.uuid in responses
    doc = store.get_output(flow.output.uuid, which="last")
    return CalcResult.model_validate({k: v for k, v in doc.items() if not k.startswith("@")})


def test_pbe_static_matches_reference(mock_vasp, si_structure, store, tmp_path):
    mock_vasp(GGA_REF)
    calc = get_calculator("vasp")
    flow = calc.make_flow(si_structure, "pbe", "mp-149")
    result = _run(flow, store, tmp_path)
    assert result.success and result.backend == "vasp" and result.fidelity == "pbe"
    assert result.energy_ev == pytest.approx(-10.84060922, abs=1e-6)
    assert result.energy_per_atom_ev == pytest.approx(-10.84060922 / 2, abs=1e-6)
    assert result.run_type == "GGA"
    assert result.band_gap_ev == pytest.approx(0.613, abs=2e-3)
    entry = result.to_entry()
    assert entry.parameters["run_type"] == "GGA"
    assert entry.data["apply_mp2020"] is True
    assert entry.data["structure_id"] == "mp-149" and entry.data["fidelity"] == "pbe"
    # MP2020 accepts it as a GGA entry (Si needs no correction, but the entry must be processed, not rejected)
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    assert MaterialsProject2020Compatibility(check_potcar=False).process_entries([entry]) != []


def test_r2scan_static_uses_pbe_gap_for_kspacing(mock_vasp, si_structure, store, tmp_path):
    mock_vasp(SCAN_REF)
    calc = get_calculator("vasp")
    result = _run(calc.make_flow(si_structure, "scan", "mp-149", pbe_band_gap_ev=0.8249), store, tmp_path)
    assert result.success and result.run_type == "r2SCAN"
    assert result.energy_ev == pytest.approx(-46.8613738, abs=1e-6)
    entry = result.to_entry()
    assert entry.data["apply_mp2020"] is False
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    # MP2020 must not touch r2SCAN entries: it rejects them
    assert MaterialsProject2020Compatibility(check_potcar=False).process_entries([entry]) == []


def test_r2scan_without_gap_fails_the_kpoints_check(mock_vasp, si_structure, store, tmp_path):
    """Without the PBE gap MP's KSPACING rule gives another mesh than the reference: the mock rejects the inputs."""
    mock_vasp(SCAN_REF)
    calc = get_calculator("vasp", retry_incar_settings={})
    flow = calc.make_flow(si_structure, "scan", "mp-149")
    result = _run(flow, store, tmp_path)
    assert not result.success
    assert "failed" in result.failure_reason
    assert result.cost_cpu_hours > 0


def test_user_incar_override_reaches_the_input_set(si_structure):
    calc = get_calculator("vasp", user_incar_settings={"ENCUT": 600}, user_kpoints_settings={"reciprocal_density": 50})
    maker = calc.make_maker("pbe")
    assert maker.input_set_generator.user_incar_settings["ENCUT"] == 600
    assert maker.input_set_generator.user_kpoints_settings["reciprocal_density"] == 50
    relax_calc = get_calculator("vasp", relax=True, user_incar_settings={"ENCUT": 600})
    relax = relax_calc.make_maker("scan", pbe_band_gap_ev=1.5)
    from screener.calculators.vasp import _vasp_makers

    makers = _vasp_makers(relax)
    assert len(makers) >= 3
    assert all(m.input_set_generator.user_incar_settings["ENCUT"] == 600 for m in makers)
    assert makers[0].input_set_generator.bandgap == 1.5
    static = calc.make_maker("scan", pbe_band_gap_ev=0.8249)
    assert static.input_set_generator.bandgap == 0.8249
    assert calc.make_maker("pbe", pbe_band_gap_ev=0.8249).input_set_generator.bandgap is None


def test_failed_vasp_job_is_retried_once_with_algo_all(si_structure):
    from jobflow import Response

    from screener.calculators.vasp import taskdoc_to_calc_result

    calc = get_calculator("vasp")
    maker = calc.make_maker("pbe")
    kwargs = dict(
        structure=si_structure,
        structure_id="x",
        fidelity="pbe",
        maker=maker,
        retry_incar_settings={"ALGO": "All", "NELM": 200},
        modelled_cost_cpu_hours=1.5,
    )
    first = taskdoc_to_calc_result.original(None, attempt=1, **kwargs)
    assert isinstance(first, Response) and first.replace is not None
    retry_job = first.replace.jobs[0]
    assert retry_job.maker.input_set_generator.user_incar_settings["ALGO"] == "All"
    assert retry_job.maker.input_set_generator.user_incar_settings["NELM"] == 200
    second = taskdoc_to_calc_result.original(None, attempt=2, **{**kwargs, "retry_incar_settings": {}})
    assert isinstance(second, CalcResult) and not second.success
    assert second.attempts == 2 and second.cost_cpu_hours == pytest.approx(3.0)


def test_failed_run_is_retried_through_the_executor(mock_vasp, si_structure, tmp_path):
    """A VASP job that fails (here: inputs the reference rejects) is retried once, then reported as a failure."""
    from screener.execution import get_executor

    mock_vasp(GGA_REF)
    bare = si_structure.copy()
    bare.remove_site_property("magmom")  # default MAGMOM 0.6 != reference 0.0: the mock VASP raises
    executor = get_executor("local", tmp_path / "campaign")
    (uuid,) = executor.submit(get_calculator("vasp").make_flow(bare, "pbe", "si-bare"))
    executor.run()
    result = executor.collect([uuid])[uuid]
    assert result is not None and not result.success
    assert result.attempts == 2
    assert "'ALGO': 'All'" in result.failure_reason and "'NELM': 200" in result.failure_reason


def test_resume_does_not_rerun_a_finished_vasp_job(mock_vasp, si_structure, tmp_path):
    """Kill after the VASP job but before its conversion job: the resumed run only converts (no second VASP run)."""
    from screener.execution import get_executor

    mock_vasp(GGA_REF)
    campaign = tmp_path / "campaign"
    executor = get_executor("local", campaign)
    (uuid,) = executor.submit(get_calculator("vasp").make_flow(si_structure, "pbe", "mp-149"))
    executor.run()
    energy = executor.collect([uuid])[uuid].energy_ev
    assert len(list((campaign / "runs").glob("job_*"))) == 2  # VASP + conversion
    executor.store.docs_store.remove_docs({"uuid": uuid})  # as if killed before the conversion was stored

    resumed = get_executor("local", campaign)
    assert resumed.pending() == [uuid]
    resumed.run()
    assert len(list((campaign / "runs").glob("job_*"))) == 3  # only the conversion ran again
    assert resumed.collect([uuid])[uuid].energy_ev == pytest.approx(energy)
