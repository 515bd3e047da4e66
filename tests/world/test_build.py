"""A small world end to end: reproducible, replay-readable, both fidelities, hull-consistent labels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from screener.errors import InvalidInputError
from screener.world import build_world, read_world, world_files

from .conftest import SEED, SIZE


def test_same_seed_gives_byte_identical_files(small_world, tmp_path):
    out, manifest = small_world
    again = build_world(tmp_path / "again", size=SIZE, seed=SEED, n_jobs=1, shard_size=25)  # serial graphs this time
    assert {k: v.sha256 for k, v in again.files.items()} == {k: v.sha256 for k, v in manifest.files.items()}
    assert again.counts == manifest.counts


def test_manifest_counts_files_and_statistics(small_world):
    out, manifest = small_world
    c = manifest.counts
    assert c["n_generated"] == SIZE and c["n_structures"] == SIZE - c["n_dropped"]
    assert c["n_entries"] == 2 * c["n_structures"] and c["n_real"] + c["n_hypothetical"] == c["n_structures"]
    assert manifest.entry_files("pbe") == ["pbe/part_000.json.bz2", "pbe/part_001.json.bz2"]  # 25 per shard
    assert sum(manifest.files[p].n_entries for p in manifest.entry_files()) == c["n_entries"]
    for fidelity in ("pbe", "scan"):
        stats = manifest.statistics["e_above_hull"][fidelity]
        assert stats["n"] == c["n_structures"] and 0 <= stats["fraction_stable"] <= 1 and stats["min"] >= 0
    assert -1 <= manifest.statistics["pbe_vs_scan"]["e_above_hull_pearson"] <= 1
    assert manifest.seed == SEED and manifest.versions["chgnet"] and manifest.throughput_entries_per_s > 0
    assert manifest.labels["protocol"] == "static" and manifest.labels["checkpoints"] == {"pbe": "0.3.0", "scan": "r2scan"}


def test_every_structure_has_both_fidelities_and_is_replayable(small_world):
    from jobflow import run_locally

    from screener.calculators import get_calculator
    from screener.structures import read_structures

    out, manifest = small_world
    world = read_world(out)
    ids = world.structure_ids("pbe")
    assert ids == world.structure_ids("scan") and len(set(ids)) == manifest.counts["n_structures"]
    assert not set(ids) & set(manifest.dropped)
    inputs = read_structures([out / "structures.extxyz"]).records
    assert [r.structure_id for r in inputs] == ids
    calc = get_calculator("replay", path=[str(p) for p in world_files(out)])
    assert len(calc.dataset) == 2 * len(ids)
    entry = world.entries["scan"][3]
    job = calc.make_flow(inputs[3].structure, "scan", ids[3])
    responses = run_locally(job, ensure_success=True, log=False)
    result = responses[job.uuid][1].output
    assert result.success and result.energy_ev == pytest.approx(entry.uncorrected_energy)
    assert result.entry["data"]["e_above_hull"] == pytest.approx(entry.data["e_above_hull"])


def test_labels_are_the_stand_in_energies_of_the_stored_structures(small_world):
    from screener.calculators.standin import energies_batch

    out, _ = small_world
    world = read_world(out)
    for fidelity in ("pbe", "scan"):
        entries = world.entries[fidelity][:8]
        direct = energies_batch([e.structure for e in entries], fidelity)  # CHGNet predict_structure path
        stored = np.array([e.uncorrected_energy_per_atom for e in entries])
        assert np.allclose(stored, direct, atol=1e-5)
        assert all(e.data["fidelity"] == fidelity and e.data["backend"] == "standin" for e in entries)
    scan = world.references["scan"]
    pbe = {e.composition.reduced_formula: e.energy_per_atom for e in world.references["pbe"]}
    assert len(scan) == len(pbe) and any(abs(e.energy_per_atom - pbe[e.composition.reduced_formula]) > 0.1 for e in scan)


def test_hull_labels_agree_with_an_independent_phase_diagram(small_world):
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    out, _ = small_world
    world = read_world(out)
    tol = 1e-6
    for fidelity in ("pbe", "scan"):
        entries, refs = world.entries[fidelity], world.references[fidelity]
        hull = world.hull(fidelity)
        for entry in entries:
            e_hull = entry.data["e_above_hull"]
            assert e_hull >= -tol  # every entry is on or above the hull of its own world
            assert e_hull == pytest.approx(hull.e_above_hull_ev_per_atom(entry), abs=1e-8)
        for entry in entries[:12]:  # pymatgen directly, from the files alone
            elements = set(entry.composition.elements)
            pool = [e for e in [*entries, *refs] if set(e.composition.elements) <= elements]
            diagram = PhaseDiagram(pool)
            assert entry.data["e_above_hull"] == pytest.approx(diagram.get_e_above_hull(entry), abs=1e-6)
            assert entry.data["e_form"] == pytest.approx(diagram.get_form_energy_per_atom(entry), abs=1e-6)


def test_read_world_detects_a_changed_file(small_world, tmp_path):
    out, _ = small_world
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / "scan" / "part_001.json.bz2"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(InvalidInputError, match="sha256"):
        read_world(copy)
    assert read_world(copy, verify=False, fidelities=["pbe"]).entries.keys() == {"pbe"}
    with pytest.raises(InvalidInputError, match="not a world"):
        read_world(tmp_path)


def test_build_refuses_to_overwrite_without_permission(small_world):
    out, _ = small_world
    with pytest.raises(InvalidInputError, match="--overwrite"):
        build_world(out, size=3, seed=0)
