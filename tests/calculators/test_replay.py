"""Replay back-end: results read from a labelled data set, never made up."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest
from jobflow import run_locally

from screener.calculators import get_calculator
from screener.errors import CalculationError, InvalidInputError

DATA = Path(__file__).parent / "data"


@pytest.fixture
def two_fidelity_set(tmp_path, candidates):
    """A small json.gz data set of 3 candidates at PBE and 2 of them at SCAN."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    items = []
    for i, (sid, structure) in enumerate(candidates[:3]):
        for fidelity, energy in (("pbe", -3.0 - i), ("scan", -6.0 - i)):
            if fidelity == "scan" and i == 2:
                continue
            entry = ComputedStructureEntry(
                structure, energy * len(structure), data={"structure_id": sid, "fidelity": fidelity, "e_form": -0.1 * i}
            )
            items.append(entry.as_dict())
    path = tmp_path / "labels.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump(items, handle)
    return path


def test_replays_both_fidelities(two_fidelity_set, candidates):
    calc = get_calculator("replay", path=two_fidelity_set)
    for fidelity, expected in (("pbe", -3.0), ("scan", -6.0)):
        sid, structure = candidates[0]
        job = calc.make_flow(structure, fidelity, sid)
        result = run_locally(job, log=False, ensure_success=True)[job.uuid][1].output
        assert result.success and result.backend == "replay" and "replay" in result.label
        assert result.energy_per_atom_ev == pytest.approx(expected)
        assert result.to_entry().data["e_form"] == 0.0
        assert result.to_entry().data["apply_mp2020"] is False
        assert result.cost_cpu_hours == pytest.approx(calc.estimate_cost_cpu_hours(structure, fidelity))


def test_missing_result_is_a_clear_error(two_fidelity_set, candidates):
    calc = get_calculator("replay", path=two_fidelity_set)
    sid, structure = candidates[2]
    with pytest.raises(CalculationError, match="no scan result.*it has \\['pbe'\\]"):
        calc.make_flow(structure, "scan", sid)
    with pytest.raises(CalculationError, match="no entry at all"):
        calc.make_flow(structure, "pbe", "mp-does-not-exist")


def test_alexandria_dump_with_id_key(tmp_path):
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    path = DATA / "alexandria_part_1.json.bz2"
    raw = json.load(bz2.open(path))[0]
    calc = get_calculator("replay", path=path, id_key="mat_id", default_fidelity="pbe")
    structure = ComputedStructureEntry.from_dict(raw).structure
    job = calc.make_flow(structure, "pbe", raw["data"]["mat_id"])
    result = run_locally(job, log=False, ensure_success=True)[job.uuid][1].output
    assert result.energy_ev == pytest.approx(raw["energy"])
    assert result.to_entry().data["e_above_hull"] == raw["data"]["e_above_hull"]


def test_bad_data_sets_are_refused(tmp_path):
    with pytest.raises(InvalidInputError):
        get_calculator("replay")
    with pytest.raises(InvalidInputError, match="does not exist"):
        get_calculator("replay", path=tmp_path / "nope.json")
    with pytest.raises(InvalidInputError, match="no data"):
        get_calculator("replay", path=DATA / "alexandria_part_1.json.bz2")  # needs id_key/default_fidelity
