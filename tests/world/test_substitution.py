from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition, Element, Lattice, Structure

from screener.world.substitution import (
    apply_substitution,
    oxidation_states,
    propose_substitution,
    substitution_elements,
    swap_candidates,
)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("LiFeO2", {"Li": 1, "Fe": 3, "O": -2}),
        ("SrTiO3", {"Sr": 2, "Ti": 4, "O": -2}),
        ("NaCl", {"Na": 1, "Cl": -1}),
        ("CuZn", None),  # intermetallic
        ("Fe3O4", None),  # mixed valence
        ("Si", None),
    ],
)
def test_oxidation_states(formula, expected):
    assert oxidation_states(formula) == expected


def test_ionic_swaps_keep_the_charge_and_same_group_swaps_exist():
    cands = swap_candidates("Na", 1)
    assert {"K", "Li"} <= set(cands)
    assert all(w > 0 for w in cands.values())
    assert "O" not in cands and "Mg" not in swap_candidates("Na", 1, allowed=["Mg", "K"])
    assert set(swap_candidates("Cu", None)) >= {"Ag", "Au"}  # group 11, no charge given


def test_propose_substitution_is_injective_charge_preserving_and_reproducible():
    charges = {"Sr": 2, "Ti": 4, "O": -2}
    maps = [propose_substitution(charges, charges, np.random.default_rng(s)) for s in range(30)]
    again = [propose_substitution(charges, charges, np.random.default_rng(s)) for s in range(30)]
    assert maps == again
    for mapping in maps:
        assert mapping
        new = {mapping.get(el, el) for el in charges}
        assert len(new) == 3
        for old, sub in mapping.items():  # every substitute can carry the replaced ion's charge ...
            el = Element(sub)
            states = set(el.icsd_oxidation_states or ()) | set(el.common_oxidation_states or ())
            assert charges[old] in states or el.group == Element(old).group
            assert sub in substitution_elements()
        formula = Composition({mapping.get(el, el): n for el, n in {"Sr": 1, "Ti": 1, "O": 3}.items()})
        if all(Element(s).group != Element(o).group for o, s in mapping.items()):
            assert oxidation_states(formula) is not None  # ... so the composition stays charge balanced


def test_propose_substitution_replaces_every_element_outside_the_allowed_set():
    allowed = {"Li", "Na", "K", "Cl", "Br"}
    rng = np.random.default_rng(0)
    for _ in range(20):
        mapping = propose_substitution(["Cs", "I"], {"Cs": 1, "I": -1}, rng, allowed=allowed)
        assert mapping is not None and set(mapping) == {"Cs", "I"} and set(mapping.values()) <= allowed


def test_apply_substitution_rescales_by_radii():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    kcl = apply_substitution(nacl, {"Na": "K"}, charges={"Na": 1, "Cl": -1})
    licl = apply_substitution(nacl, {"Na": "Li"}, charges={"Na": 1, "Cl": -1})
    assert kcl.composition.reduced_formula == "KCl" and licl.composition.reduced_formula == "LiCl"
    assert licl.volume < nacl.volume < kcl.volume
    same = apply_substitution(nacl, {"Na": "K"}, rescale=False)
    assert same.volume == pytest.approx(nacl.volume)
    assert all(not hasattr(sp, "oxi_state") or sp.oxi_state in (None, 0) for sp in kcl.composition)
