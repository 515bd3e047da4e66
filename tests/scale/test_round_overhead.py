"""What keeps a large campaign's round cheap gives the same numbers as the plain path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from screener.campaign.hulls import CampaignHulls
from screener.campaign.ranking import predicted_e_hull

MU = {"pbe": {"Li": -1.9, "Na": -1.3, "K": -1.0, "Cs": -0.8}, "scan": {"Li": -2.3, "Na": -1.6, "K": -1.2}}


def _entry(sid, species, fidelity, e_form):
    n = len(species)
    s = Structure(Lattice.orthorhombic(3.0 * n, 3.0, 3.0), species, [[i / n, 0, 0] for i in range(n)])
    energy = sum(MU[fidelity][str(sp)] for sp in s.species) + e_form * n
    return ComputedStructureEntry(s, energy, parameters={"run_type": "standin"}, entry_id=sid,
                                  data={"structure_id": sid, "fidelity": fidelity, "backend": "standin"})


class _PlainHulls:
    """The same hulls without the ``hulls`` attribute: every look-up builds the phase diagram."""

    def __init__(self, hulls):
        self._h = hulls

    def hull_formation_energy_ev_per_atom(self, fidelity, composition):
        return self._h.hull_formation_energy_ev_per_atom(fidelity, composition)


def test_elements_only_shortcut_equals_the_phase_diagram(monkeypatch):
    refs = {f: [_entry(f"ref:{f}:{el}", [el], f, 0.0) for el in MU[f]] for f in ("pbe", "scan")}
    refs["pbe"].append(_entry("Li3Na", ["Li", "Li", "Li", "Na"], "pbe", -0.3))
    refs["pbe"].append(_entry("KNa", ["K", "Na"], "pbe", 0.2))  # above the hull: K-Na still needs the diagram
    hulls = CampaignHulls({f: [e.as_dict() for e in es] for f, es in refs.items()})
    comps = [Composition(c) for c in ("LiNa", "LiK", "NaK2", "LiNaK", "LiCs", "K", "CsK")]
    mean, std = np.linspace(-0.2, 0.2, len(comps)), np.full(len(comps), 0.05)
    built = []
    real = hulls.hulls["pbe"].phase_diagram
    monkeypatch.setattr(hulls.hulls["pbe"], "phase_diagram", lambda c, **k: built.append(str(c)) or real(c, **k))
    fast = predicted_e_hull(mean, std, comps, hulls, "scan", fallback_fidelity="pbe")
    # Cs: only the PBE hull has it; Li-Cs and Cs-K hold only elements there, so no PBE diagram is built
    assert list(fast[3]) == [False, False, False, False, True, False, True] and built == []
    plain = predicted_e_hull(mean, std, comps, _PlainHulls(hulls), "scan", fallback_fidelity="pbe")
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=1e-12)
    built.clear()
    fast = predicted_e_hull(mean, std, comps, hulls, "pbe")
    assert sorted({"-".join(sorted(Composition(c).chemical_system.split("-"))) for c in built}) == [
        "K-Li-Na", "K-Na", "Li-Na"]  # only the systems holding a compound
    plain = predicted_e_hull(mean, std, comps, _PlainHulls(hulls), "pbe")
    assert math.isclose(plain[2][0], -0.2, abs_tol=1e-9)  # LiNa on the Li3Na - Na tie line
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=1e-12)


def test_hull_values_are_kept_between_rounds_until_their_system_changes(monkeypatch):
    refs = {f: [_entry(f"ref:{f}:{el}", [el], f, 0.0) for el in MU[f]] for f in ("pbe", "scan")}
    refs["pbe"] += [_entry("Li3Na", ["Li", "Li", "Li", "Na"], "pbe", -0.3), _entry("KNa", ["K", "Na"], "pbe", -0.1)]
    hulls = CampaignHulls({f: [e.as_dict() for e in es] for f, es in refs.items()})
    comps = [Composition(c) for c in ("LiNa", "LiNa3", "NaK", "NaK3", "LiNaK2")]
    mean, std = np.zeros(len(comps)), np.full(len(comps), 0.05)
    built = []
    real = hulls.hulls["pbe"].phase_diagram
    monkeypatch.setattr(hulls.hulls["pbe"], "phase_diagram", lambda c, **k: built.append(str(c)) or real(c, **k))
    first = predicted_e_hull(mean, std, comps, hulls, "pbe")
    assert len(built) == len(comps)
    built.clear()
    again = predicted_e_hull(mean, std, comps, hulls, "pbe")  # the next round, nothing added: no diagram
    assert built == [] and np.array_equal(again[2], first[2])
    # a result in Li-Na: only the systems holding Li-Na are measured again, and the new values are right
    hulls.add_result("pbe", _entry("LiNa", ["Li", "Na"], "pbe", -0.4).as_dict())
    after = predicted_e_hull(mean, std, comps, hulls, "pbe")
    assert sorted(Composition(c).reduced_formula for c in built) == ["K2NaLi", "Na3Li", "NaLi"]
    plain = predicted_e_hull(mean, std, comps, _PlainHulls(hulls), "pbe")
    np.testing.assert_allclose(after[2], plain[2], rtol=0, atol=1e-12)
    assert after[2][0] == pytest.approx(-0.4) and after[2][2] == first[2][2]
