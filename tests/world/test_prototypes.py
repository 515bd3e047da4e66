from __future__ import annotations

import pytest

from screener.errors import InvalidInputError
from screener.world.prototypes import PROTOTYPE_SOURCES, load_prototypes


def test_shipped_sources_have_the_documented_sizes():
    counts = {source: len(load_prototypes([source])) for source in PROTOTYPE_SOURCES}
    assert counts == {"mp20": 1112, "perov5": 400, "aviary": 68}


def test_ids_are_unique_and_prefixed():
    protos = load_prototypes()
    ids = [p.prototype_id for p in protos]
    assert len(ids) == len(set(ids))
    assert all(i.split(":", 1)[0] in PROTOTYPE_SOURCES for i in ids)


def test_element_filter_and_lazy_structures_agree_with_the_formula():
    protos = load_prototypes(elements=["Zn", "N", "Ti"])
    assert protos and all(set(p.elements) <= {"Zn", "N", "Ti"} for p in protos)
    for proto in protos[:5]:
        structure = proto.structure()
        assert structure.composition.reduced_formula == proto.formula
        structure.scale_lattice(2 * structure.volume)  # a copy: the cached one is untouched
        assert proto.structure().volume != pytest.approx(structure.volume)


def test_unknown_source_is_an_input_error():
    with pytest.raises(InvalidInputError, match="unknown prototype source"):
        load_prototypes(["nope"])
