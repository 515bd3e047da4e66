"""Known phases: the competing phases a campaign's hulls start from, like Materials Project's GGA and r2SCAN sets.

A hull that holds only the elements calls nearly every compound stable. Before a campaign computes anything its PBE
and SCAN hulls therefore hold the *known* phases of every candidate's chemical system and its subsystems:

``standin`` back-end
    the shipped set ``screener/data/known_phases/standin_known_phases.json.gz``: real Materials Project structures
    labelled with the stand-in calculators themselves (CHGNet 0.3.0 for PBE, CHGNet r2scan for SCAN), built by
    ``bench/build_known_phases.py`` (see the README next to it);
``vasp``
    Materials Project entries (GGA/GGA+U with MP2020, and r2SCAN) from the mp-api cache (:mod:`screener.hull.mp_cache`)
    or a user entries file;
``replay``
    the labelled data set's (the world's) own entries of those systems.

Whatever the source, a known phase that IS a candidate (same id, or the same structure by pymatgen's
``StructureMatcher``) is that candidate's *twin* (:func:`candidate_twins`): it stays on the hulls, a real competitor
of every other candidate, and is left out only when that candidate itself is judged (its E_hull and stability), so
the candidate is measured against the hull without its twin and reported as a rediscovery of the known phase.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.hull.corrections import normalise_fidelity
from screener.hull.phase_diagram import chemsys_elements, entry_key

if TYPE_CHECKING:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

__all__ = [
    "KNOWN_PHASES_FORMAT",
    "STANDIN_KNOWN_PHASES",
    "standin_known_phases_path",
    "read_known_phases",
    "make_known_phase_entries",
    "standin_known_phases",
    "standin_elemental_references",
    "CandidateIndex",
    "candidate_matches",
    "exclude_candidates",
    "candidate_twins",
    "KNOWN_TWIN_PREFIX",
    "count_compounds",
    "subsystems",
]

logger = logging.getLogger(__name__)

KNOWN_PHASES_FORMAT = "screener-known-phases/1"
STANDIN_KNOWN_PHASES = "known_phases/standin_known_phases.json.gz"
_RUN_TYPES = {"pbe": "CHGNet-0.3.0 stand-in", "scan": "CHGNet-r2scan stand-in"}
_LABELS = {"pbe": "known phase, stand-in CHGNet 0.3.0 single point (not DFT)",
           "scan": "known phase, stand-in CHGNet r2scan single point (not DFT)"}


def standin_known_phases_path() -> Path:
    """The shipped known-phase set of the stand-in back-end."""
    from screener.data import data_path

    return Path(data_path(STANDIN_KNOWN_PHASES))


@lru_cache(maxsize=2)
def read_known_phases(path: str | None = None) -> dict[str, Any]:
    """The known-phase document (``{"format", "command", "sources", "phases": [...]}``), read once per process.

    Each phase is ``{"structure_id", "source", "structure" (Structure dict), "energy_ev": {"pbe": E, "scan": E}}``
    (total energies of the cell in eV) and, for elemental ground states, ``"element_reference": "Fe"``.
    """
    path = str(path or standin_known_phases_path())
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the known-phase set {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != KNOWN_PHASES_FORMAT:
        raise InvalidInputError(f"{path} is not a known-phase set (format {KNOWN_PHASES_FORMAT})")
    return doc


def _record_elements(record: Mapping[str, Any]) -> frozenset[str]:
    """Elements of a stored phase without building its Structure (species of each site)."""
    out = set()
    for site in record["structure"]["sites"]:
        for sp in site["species"]:
            out.add("".join(c for c in str(sp["element"]) if c.isalpha()))
    return frozenset(out)


def subsystems(systems: Iterable[Any]) -> set[frozenset[str]]:
    """Every subsystem (element set) of every chemical system: a phase belongs to them when its elements are one."""
    from itertools import combinations

    out: set[frozenset[str]] = set()
    for system in {chemsys_elements(s) for s in systems}:
        members = sorted(system)
        for k in range(1, len(members) + 1):
            out.update(frozenset(c) for c in combinations(members, k))
    return out


def make_known_phase_entries(
    records: Iterable[Mapping[str, Any]],
    fidelity: str,
    *,
    systems: Iterable[Any] | None = None,
) -> list[ComputedStructureEntry]:
    """Stand-in entries of one fidelity from stored phase records.

    Parameters
    ----------
    records : iterable of dict
        The ``phases`` of a known-phase document.
    fidelity : {"pbe", "scan"}
    systems : iterable of chemical systems, optional
        Keep only phases whose elements all belong to one of these systems (its subsystems included).

    Returns
    -------
    list of ComputedStructureEntry
        ``data["backend"] = "standin"`` (never MP2020-corrected), ``data["known_phase"] = True``; elemental ground
        states get the ids of :func:`screener.hull.make_reference_entries` (``ref:standin:<fidelity>:<El>``).
    """
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    fidelity = normalise_fidelity(fidelity)
    allowed = None if systems is None else subsystems(systems)
    entries = []
    for rec in records:
        if allowed is not None and _record_elements(rec) not in allowed:
            continue
        element = rec.get("element_reference")
        sid = f"ref:standin:{fidelity}:{element}" if element else str(rec["structure_id"])
        entries.append(ComputedStructureEntry(
            Structure.from_dict(rec["structure"]),
            float(rec["energy_ev"][fidelity]),
            parameters={"run_type": _RUN_TYPES[fidelity]},
            data={"fidelity": fidelity, "backend": "standin", "structure_id": sid, "apply_mp2020": False,
                  "known_phase": True, "source": rec.get("source", ""), "label": _LABELS[fidelity]},
            entry_id=sid,
        ))
    return entries


def standin_known_phases(systems: Iterable[Any], fidelity: str, path: str | Path | None = None
                         ) -> list[ComputedStructureEntry]:
    """Compounds of the shipped stand-in set in these chemical systems and their subsystems (no elements)."""
    doc = read_known_phases(str(path) if path else None)
    records = [r for r in doc["phases"] if not r.get("element_reference")]
    return make_known_phase_entries(records, fidelity, systems=list(systems))


def standin_elemental_references(elements: Iterable[str], fidelity: str, path: str | Path | None = None
                                 ) -> list[ComputedStructureEntry]:
    """Stand-in elemental ground states stored in the shipped set (those it has of ``elements``)."""
    doc = read_known_phases(str(path) if path else None)
    wanted = set(elements)
    records = [r for r in doc["phases"] if r.get("element_reference") in wanted]
    return make_known_phase_entries(records, fidelity)


class CandidateIndex:
    """The candidates, ready to be compared with many known phases (each structure reduced once).

    ``StructureMatcher.fit`` reduces both structures (Niggli, primitive cell) on every call; with hundreds of known
    polymorphs of a candidate's formula that dominates a campaign's start, so the candidates are reduced here once
    and each known structure once per :meth:`match`, and results are remembered by id (the PBE and SCAN entries of
    a known phase share their structure).
    """

    def __init__(self, candidates: Mapping[str, Structure], matcher: StructureMatcher | None = None) -> None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        self.ids = {str(k) for k in candidates}
        self.matcher = matcher or StructureMatcher()
        self._by_formula: dict[str, list[tuple[str, Any]]] = {}
        for cid, s in candidates.items():
            self._by_formula.setdefault(s.composition.reduced_formula, []).append((str(cid), s))
        self._reduced: dict[str, Any] = {}
        self._memo: dict[str, str | None] = {}

    def _reduce(self, structure: Structure) -> Any:
        return self.matcher._get_reduced_structure(structure, self.matcher._primitive_cell, True)

    def _sizes_can_match(self, reduced: Any, other: Any) -> bool:
        """False when the two reduced cells cannot fit for their site counts alone (a matcher that tries
        supercells, subsets or ignores species decides for itself)."""
        m = self.matcher
        if m._supercell or m._subset or m._ignored_species:
            return True
        return len(reduced) == len(other)

    def match(self, structure_id: str | None, structure: Structure | None, *, material_id: str | None = None
              ) -> str | None:
        """The id of the candidate this phase is (same id or material id, or a StructureMatcher match), else None."""
        for key in (structure_id, material_id):
            if key is not None and str(key) in self.ids:
                return str(key)
        if structure is None:
            return None
        same = self._by_formula.get(structure.composition.reduced_formula)
        if not same:
            return None
        if structure_id is not None and str(structure_id) in self._memo:
            return self._memo[str(structure_id)]
        reduced = self._reduce(structure)
        found = None
        for cid, cand in same:
            if cid not in self._reduced:
                self._reduced[cid] = self._reduce(cand)
            # reduced cells of the same formula with different site counts never fit (without supercells or
            # subsets the matcher needs a one-to-one site map): skip the copies and the mask fit would make first
            if not self._sizes_can_match(reduced, self._reduced[cid]):
                continue
            if self.matcher.fit(reduced, self._reduced[cid], skip_structure_reduction=True):
                found = cid
                break
        if structure_id is not None:
            self._memo[str(structure_id)] = found
        return found


def candidate_matches(
    structure_id: str | None,
    structure: Structure | None,
    candidates: Mapping[str, Structure] | CandidateIndex,
    matcher: StructureMatcher | None = None,
    *,
    material_id: str | None = None,
) -> str | None:
    """The id of the candidate a known phase is (same id or material id, or a StructureMatcher match), else None."""
    index = candidates if isinstance(candidates, CandidateIndex) else CandidateIndex(candidates, matcher)
    return index.match(structure_id, structure, material_id=material_id)


def exclude_candidates(
    entries: Sequence[Any], candidates: Mapping[str, Structure] | CandidateIndex
) -> tuple[list[Any], dict[str, str]]:
    """Drop known phases that are candidates; return ``(kept, {dropped entry key: candidate id})``."""
    index = candidates if isinstance(candidates, CandidateIndex) else CandidateIndex(candidates)
    kept, dropped = [], {}
    for entry in entries:
        if len(entry.composition.elements) == 1 and str(entry_key(entry) or "").startswith("ref:"):
            kept.append(entry)  # an elemental reference is never a candidate's stand-in
            continue
        mid = (entry.data or {}).get("material_id")
        match = index.match(entry_key(entry), getattr(entry, "structure", None), material_id=str(mid) if mid else None)
        if match is None:
            kept.append(entry)
        else:
            dropped[str(entry_key(entry))] = match
    return kept, dropped


#: Prefix given to a known phase whose id is also a candidate's id (e.g. both ``mp-123``), so the candidate's own
#: result never replaces the known entry in a hull.
KNOWN_TWIN_PREFIX = "known:"


def candidate_twins(
    entries: Sequence[Any], candidates: Mapping[str, Structure] | CandidateIndex
) -> tuple[list[Any], dict[str, list[str]]]:
    """Find the known phases that ARE candidates, keeping them all; return ``(entries, {candidate id: [keys]})``.

    A twin stays a competing phase of every other candidate. An entry whose key equals a candidate id is returned
    as a copy re-keyed ``known:<id>`` (``structure_id`` and ``entry_id``), since a hull files entries by key and the
    candidate's own result would otherwise replace it. Elemental references (``ref:...``) are never twins.
    """
    import copy

    index = candidates if isinstance(candidates, CandidateIndex) else CandidateIndex(candidates)
    out, twins = [], {}
    for entry in entries:
        key = entry_key(entry)
        if len(entry.composition.elements) == 1 and str(key or "").startswith("ref:"):
            out.append(entry)
            continue
        mid = (entry.data or {}).get("material_id")
        match = index.match(key, getattr(entry, "structure", None), material_id=str(mid) if mid else None)
        if match is not None:
            if key is None or str(key) in index.ids:
                entry = copy.deepcopy(entry)
                new_key = f"{KNOWN_TWIN_PREFIX}{key if key is not None else match}"
                entry.entry_id = new_key
                entry.data = {**(entry.data or {}), "structure_id": new_key}
                key = new_key
            twins.setdefault(match, [])
            if str(key) not in twins[match]:
                twins[match].append(str(key))
        out.append(entry)
    return out, twins


def count_compounds(entries: Iterable[Any], chemsys: Any, *, exclude: Iterable[str] = ()) -> int:
    """Entries with two or more elements, all in ``chemsys``: the competing phases beyond the elements."""
    elements = chemsys_elements(chemsys)
    skip = set(exclude)
    return sum(
        1 for e in entries
        if len(e.composition.elements) > 1 and entry_key(e) not in skip
        and {str(el) for el in e.composition.elements} <= elements
    )
