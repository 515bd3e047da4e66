from __future__ import annotations

import pytest

from screener.errors import InvalidInputError
from screener.structures import StructureRecord, group_duplicates
from screener.world.generate import GeneratorConfig, generate_candidates, generate_world_structures, parse_elements


@pytest.fixture(scope="module")
def drawn():
    return generate_world_structures(GeneratorConfig(size=60, seed=11))


def test_world_structures_are_reproducible_distinct_and_mixed(drawn):
    again = generate_world_structures(GeneratorConfig(size=60, seed=11))
    assert [r.structure_id for r in drawn] == [r.structure_id for r in again]
    assert all(a.structure == b.structure for a, b in zip(drawn, again))
    other = generate_world_structures(GeneratorConfig(size=60, seed=12))
    assert [r.structure_id for r in other] != [r.structure_id for r in drawn]
    assert len(drawn) == 60
    assert all(len(g) == 1 for g in group_duplicates(drawn))  # StructureMatcher finds no two equivalent
    origins = [r.data["origin"] for r in drawn]
    # 30 % real crystals drawn (18), fewer if two of them are the same crystal (then a hypothetical fills in)
    assert 15 <= origins.count("real") <= 18 and origins.count("substitution") == 60 - origins.count("real")
    for record in drawn:
        if record.data["origin"] == "substitution":
            swaps = dict(s.split(">") for s in record.data["substitution"].split(","))
            elements = {str(el) for el in record.structure.composition.elements}
            assert set(swaps.values()) <= elements and not set(swaps) & elements - set(swaps.values())


def test_world_restricted_to_a_chemical_space():
    records = generate_world_structures(GeneratorConfig(size=15, seed=0, elements=("Zn", "Ti", "Zr", "N")))
    assert len(records) == 15
    assert all({str(el) for el in r.structure.composition.elements} <= {"Zn", "Ti", "Zr", "N"} for r in records)


def test_candidates_stay_in_the_space_and_are_unique():
    cands = generate_candidates("Li,Fe,O", max_candidates=25)
    assert len(cands) == 25
    assert all({str(el) for el in c.structure.composition.elements} <= {"Li", "Fe", "O"} for c in cands)
    assert all(len(c.structure.composition.elements) >= 2 for c in cands)
    assert all(len(g) == 1 for g in group_duplicates(cands))
    scores = [c.data["score"] for c in cands]
    assert scores == sorted(scores, reverse=True)


def test_candidates_equivalent_to_known_structures_are_dropped():
    cands = generate_candidates("Li,Fe,O", max_candidates=10)
    # a "known" phase: the 3rd candidate, expanded to a supercell and strained 5 % (StructureMatcher still matches)
    known_structure = cands[2].structure * (1, 1, 2)
    known_structure.scale_lattice(known_structure.volume * 1.05)
    known = [StructureRecord("mp-known", known_structure)]
    again = generate_candidates("Li,Fe,O", known=known, max_candidates=10)
    ids = [c.structure_id for c in again]
    assert cands[2].structure_id not in ids
    assert ids[:2] == [c.structure_id for c in cands[:2]] and len(ids) == 10


def test_parse_elements():
    assert parse_elements("Li,Fe,O") == ["Fe", "Li", "O"]
    assert parse_elements(["Li-Fe", "O"]) == ["Fe", "Li", "O"]
    with pytest.raises(InvalidInputError, match="not an element"):
        parse_elements("Li,Qq")
    with pytest.raises(InvalidInputError):
        GeneratorConfig(size=0)
