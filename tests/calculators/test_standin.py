"""Stand-in back-end: CHGNet 0.3.0 / r2scan through atomate2 force-field makers, honest labels, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure

from screener.calculators import CalcResult, get_calculator
from screener.calculators.standin import StandinMaker, energies_batch


@pytest.fixture
def store():
    s = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    s.connect()
    return s


def _run(job, store) -> CalcResult:
    responses = run_locally(job, store=store, log=False, ensure_success=True)
    return responses[job.uuid][1].output


def test_static_both_fidelities_agree_with_direct_chgnet(chgnet_models, candidates, store):
    pbe_model, scan_model = chgnet_models
    sid, structure = candidates[1]
    calc = get_calculator("standin")
    for fidelity, model in (("pbe", pbe_model), ("scan", scan_model)):
        result = _run(calc.make_flow(structure, fidelity, sid), store)
        direct = float(model.predict_structure(structure, task="e")["e"])
        assert result.success and result.backend == "standin" and result.fidelity == fidelity
        assert result.energy_per_atom_ev == pytest.approx(direct, abs=1e-4)
        assert result.energy_ev == pytest.approx(direct * len(structure), abs=1e-3)
        assert "not DFT" in result.label and "stand-in" in result.label
        entry = result.to_entry()
        assert entry.data["apply_mp2020"] is False and entry.data["structure_id"] == sid
        assert entry.parameters["run_type"] not in ("GGA", "GGA+U")
        assert result.cost_cpu_hours == pytest.approx(calc.estimate_cost_cpu_hours(structure, fidelity))
        assert result.wall_time_s > 0
    assert "0.3.0" in calc.make_flow(structure, "pbe", sid).metadata["label"]
    assert "r2scan" in calc.make_flow(structure, "scan", sid).metadata["label"]


def test_relax_lowers_the_energy_of_a_strained_cell(chgnet_models, store):
    strained = Structure(Lattice.cubic(3.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    static = _run(get_calculator("standin").make_flow(strained, "pbe", "nacl"), store)
    relaxed = _run(get_calculator("standin", relax=True, relax_steps=100).make_flow(strained, "pbe", "nacl"), store)
    assert relaxed.success and relaxed.failure_reason is None
    assert relaxed.energy_ev < static.energy_ev - 0.01
    assert relaxed.structure().volume != pytest.approx(strained.volume, rel=1e-3)


def test_unconverged_relaxation_falls_back_to_static(chgnet_models, store):
    strained = Structure(Lattice.cubic(3.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    result = _run(get_calculator("standin", relax=True, relax_steps=1).make_flow(strained, "pbe", "nacl"), store)
    static = _run(get_calculator("standin").make_flow(strained, "pbe", "nacl"), store)
    assert result.success and result.attempts == 2
    assert "not converged" in result.failure_reason and "fallback" in result.failure_reason
    assert result.energy_ev == pytest.approx(static.energy_ev, abs=1e-5)


def test_crashing_calculator_gives_a_failed_result(chgnet_models, store, monkeypatch):
    import screener.calculators.chgnet_models as cm

    def broken(*args, **kwargs):
        raise RuntimeError("GPU fell off the bus")

    monkeypatch.setattr(cm, "cached_chgnet_calculator", broken)
    structure = Structure(Lattice.cubic(2.8), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    result = _run(get_calculator("standin", relax=True).make_flow(structure, "scan", "nacl"), store)
    assert not result.success and result.energy_ev is None
    assert "GPU fell off the bus" in result.failure_reason and result.attempts == 2
    assert result.cost_cpu_hours > 0


def test_job_uuid_is_deterministic(candidates):
    sid, structure = candidates[0]
    calc = get_calculator("standin")
    assert calc.make_flow(structure, "pbe", sid).uuid == calc.make_flow(structure.copy(), "pbe", sid).uuid
    assert calc.make_flow(structure, "pbe", sid).uuid != calc.make_flow(structure, "scan", sid).uuid
    assert calc.make_flow(structure, "pbe", sid).uuid != get_calculator("standin", relax=True).make_flow(
        structure, "pbe", sid).uuid


def test_maker_serialises_without_the_model():
    job = StandinMaker(fidelity="scan").make(Structure(Lattice.cubic(3), ["Si"], [[0, 0, 0]]), "si")
    text = str(job.as_dict())
    assert "CHGNet(" not in text and len(text) < 20000


def test_energies_batch_matches_single_predictions(chgnet_models, candidates):
    structures = [s for _, s in candidates[:5]]
    calls = []
    batch = energies_batch(structures, "scan", batch_size=2, progress=lambda done, total: calls.append(done))
    single = [float(chgnet_models[1].predict_structure(s, task="e")["e"]) for s in structures]
    np.testing.assert_allclose(batch, single, atol=1e-4)
    assert calls == [2, 4, 5]
