"""The convex hull of one functional: :class:`FidelityHull`.

A ``FidelityHull`` holds the entries of ONE functional (``"pbe"`` or ``"scan"``) and builds pymatgen
:class:`~pymatgen.analysis.phase_diagram.PhaseDiagram` objects per chemical system on demand: the hull of Li-Fe-O is
built from every entry whose elements are a subset of {Li, Fe, O}, once, and cached until an entry of that system (or
a subsystem) is added. Entries of the other functional are refused (:class:`FidelityMismatchError`); energies are put
on the hull's scale by :func:`screener.hull.corrections.prepare_entries` (MP2020 for real GGA/GGA+U entries only).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from monty.json import MSONable

from screener.errors import InvalidInputError, ScreenerError
from screener.hull.corrections import as_entry, entry_backend, normalise_fidelity, prepare_entries

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition, Structure
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["FidelityHull", "CompetingPhase", "MissingReferenceError", "chemsys_elements", "entry_key",
           "hull_formation_energy_per_atom"]

logger = logging.getLogger(__name__)


class MissingReferenceError(ScreenerError):
    """A chemical system lacks an entry for one of its elements, so no hull can be built."""


def chemsys_elements(chemsys: Any) -> frozenset[str]:
    """Element symbols of a chemical system given as ``"Li-Fe-O"``, a list of symbols, a formula, a Composition
    or an entry."""
    from pymatgen.core import Composition

    if hasattr(chemsys, "composition"):
        chemsys = chemsys.composition
    if isinstance(chemsys, Composition):
        return frozenset(str(el) for el in chemsys.elements)
    if isinstance(chemsys, str):
        if "-" in chemsys or chemsys.isalpha() and chemsys[:1].isupper() and len(chemsys) <= 2:
            parts = [p.strip() for p in chemsys.split("-") if p.strip()]
        else:
            return frozenset(str(el) for el in Composition(chemsys).elements)
    else:
        parts = [str(p) for p in chemsys]
    try:
        from pymatgen.core import Element

        return frozenset(str(Element(p)) for p in parts)
    except ValueError as exc:
        raise InvalidInputError(f"not a chemical system: {chemsys!r} ({exc})") from exc


def entry_key(entry: ComputedEntry) -> str | None:
    """The id a hull files an entry under: ``data["structure_id"]``, else ``entry_id`` (None when neither is set)."""
    sid = (entry.data or {}).get("structure_id") or entry.entry_id
    return str(sid) if sid is not None else None


def _material_id(entry: ComputedEntry) -> str | None:
    mid = (entry.data or {}).get("material_id")
    return str(mid) if mid else None


def hull_formation_energy_per_atom(diagram: PhaseDiagram, composition: Composition) -> float:
    """Formation energy per atom of a pymatgen PhaseDiagram's hull at a composition (against its elemental
    references)."""
    refs = sum(
        composition.get_atomic_fraction(el) * diagram.el_refs[el].energy_per_atom for el in composition.elements
    )
    return float(diagram.get_hull_energy_per_atom(composition) - refs)


@dataclass
class CompetingPhase(MSONable):
    """A phase known at a lower fidelity, on or near that hull, that the higher-fidelity hull still lacks.

    Attributes
    ----------
    structure_id : str
        Id of the lower-fidelity entry (``data["structure_id"]`` or ``entry_id``): compute this structure.
    formula : str
        Reduced formula.
    chemsys : str
        Its chemical system, e.g. ``"Fe-O"``.
    e_hull_ev_per_atom : float
        Its energy above the lower-fidelity hull (0 for stable phases).
    known_fidelity : str
        The functional it is known at (``"pbe"``).
    structure : Structure or None
        The structure to compute (None when the entry holds no structure).
    """

    structure_id: str
    formula: str
    chemsys: str
    e_hull_ev_per_atom: float
    known_fidelity: str
    structure: Structure | None = field(default=None, repr=False)


class FidelityHull(MSONable):
    """Convex hulls of ONE functional, built per chemical system on demand.

    Parameters
    ----------
    fidelity : {"pbe", "scan"}
        The functional; entries of the other one are refused.
    entries : iterable of ComputedEntry
        Computed phases (candidates, competing phases).
    references : iterable of ComputedEntry
        Elemental (or any) reference phases, e.g. :func:`screener.hull.reference_entries`; they join the hull like
        any entry and are remembered as references.
    on_incompatible : {"raise", "warn", "skip"}
        What to do with a GGA/GGA+U entry that MP2020 rejects.
    check_potcar : bool
        POTCAR check of MP2020 (turn off for GGA entries that carry no POTCAR information).
    on_mixed_backends : {"raise", "warn", "ignore"}
        What to do when stand-in (ML) energies and DFT energies meet in one hull. They are nominally on the same
        (MP2020-compatible) scale but a stand-in hull should use references computed with the same calculator.
    known_hull : FidelityHull, optional
        The hull of the other functional that :meth:`missing_competing_phases` consults by default (e.g. the PBE
        hull for a SCAN hull). Not serialised: :class:`~screener.hull.HullSet` keeps both hulls together.

    Examples
    --------
    >>> from screener.hull import FidelityHull, reference_entries
    >>> hull = FidelityHull("pbe", references=reference_entries("pbe", elements=["Li", "O"]))
    >>> abs(hull.hull_formation_energy_ev_per_atom("Li2O")) < 1e-9  # only the elements so far
    True
    >>> round(hull.e_above_hull_from_formation_energy("Li2O", -2.0), 6)  # a predicted E_form of -2 eV/atom
    -2.0
    """

    STABLE_TOL_EV_PER_ATOM: ClassVar[float] = 1e-6
    NEAR_HULL_TOL_EV_PER_ATOM: ClassVar[float] = 0.025
    MAX_CACHED_DIAGRAMS: ClassVar[int] = 1024

    def __init__(
        self,
        fidelity: str,
        entries: Iterable[ComputedEntry] = (),
        references: Iterable[ComputedEntry] = (),
        *,
        on_incompatible: Literal["raise", "warn", "skip"] = "raise",
        check_potcar: bool = True,
        on_mixed_backends: Literal["raise", "warn", "ignore"] = "warn",
        known_hull: FidelityHull | None = None,
    ) -> None:
        self.fidelity = normalise_fidelity(fidelity)
        self.known_hull = known_hull
        self.on_incompatible = on_incompatible
        self.check_potcar = check_potcar
        self.on_mixed_backends = on_mixed_backends
        self._entries: dict[str, ComputedEntry] = {}
        self._reference_keys: set[str] = set()
        self._by_elements: dict[frozenset[str], set[str]] = defaultdict(set)
        # keyed by (element set, keys left out): a candidate judged without its known twin gets its own diagram
        self._cache: OrderedDict[tuple[frozenset[str], frozenset[str]], PhaseDiagram] = OrderedDict()
        self._scales: set[str] = set()
        self._n_anonymous = 0
        self.add_entries(references, reference=True)
        self.add_entries(entries)

    # ---- contents -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        if hasattr(key, "composition"):
            key = entry_key(key)  # type: ignore[arg-type]
        return key in self._entries

    def __repr__(self) -> str:
        return f"FidelityHull({self.fidelity!r}, {len(self._entries)} entries, {len(self._by_elements)} element sets)"

    @property
    def entries(self) -> list[ComputedEntry]:
        """All entries (with the corrections the hull applied), references included."""
        return list(self._entries.values())

    @property
    def references(self) -> list[ComputedEntry]:
        """The entries added as references."""
        return [self._entries[k] for k in sorted(self._reference_keys) if k in self._entries]

    def get_entry(self, key: str) -> ComputedEntry:
        """The stored entry filed under ``key`` (its structure_id or entry_id)."""
        try:
            return self._entries[key]
        except KeyError:
            raise InvalidInputError(f"no entry {key!r} in the {self.fidelity} hull") from None

    def _scale(self, entry: ComputedEntry) -> str | None:
        backend = entry_backend(entry)
        if backend == "standin":
            return "standin"
        if backend in (None, "vasp", "mp", "mp-api"):
            return "dft"
        return None  # replay and others: energies of unknown origin, checked where they were made

    def add_entries(self, entries: Iterable[ComputedEntry | dict], *, reference: bool = False) -> list[str]:
        """Add entries of this functional; returns the keys they are filed under.

        An entry whose key (``data["structure_id"]`` or ``entry_id``) is already present replaces the old one (a
        recomputation). Cached phase diagrams of every chemical system containing the new entries are dropped.

        Raises
        ------
        FidelityMismatchError
            An entry of another functional.
        """
        prepared = prepare_entries(
            entries, self.fidelity, on_incompatible=self.on_incompatible, check_potcar=self.check_potcar
        )
        keys: list[str] = []
        for entry in prepared:
            scale = self._scale(entry)
            if scale is not None and self._scales and scale not in self._scales:
                message = (
                    f"{self.fidelity} hull: entry {entry.entry_id} is a {scale} energy but the hull holds "
                    f"{'/'.join(sorted(self._scales))} energies; stand-in hulls need references computed with the "
                    "same calculator"
                )
                if self.on_mixed_backends == "raise":
                    raise ScreenerError(message)
                if self.on_mixed_backends == "warn":
                    logger.warning(message)
            if scale is not None:
                self._scales.add(scale)
            key = entry_key(entry)
            if key is None:
                self._n_anonymous += 1
                key = f"{entry.composition.reduced_formula}#{self._n_anonymous}"
            if entry.entry_id is None:
                import copy

                entry = copy.copy(entry)
                entry.entry_id = key
            elements = frozenset(str(el) for el in entry.composition.elements)
            old = self._entries.get(key)
            if old is not None:
                logger.debug("%s hull: %s replaced", self.fidelity, key)
                self._by_elements[frozenset(str(el) for el in old.composition.elements)].discard(key)
                self._invalidate(frozenset(str(el) for el in old.composition.elements))
            self._entries[key] = entry
            self._by_elements[elements].add(key)
            if reference:
                self._reference_keys.add(key)
            self._invalidate(elements)
            keys.append(key)
        return keys

    def _invalidate(self, elements: frozenset[str]) -> None:
        for cached in [k for k in self._cache if elements <= k[0]]:
            del self._cache[cached]

    # ---- phase diagrams -------------------------------------------------------------------------------------------
    def add_entry(self, entry: ComputedEntry | dict, *, reference: bool = False) -> str:
        """Add one entry (or its ``as_dict()``, e.g. ``CalcResult.entry``); returns its key."""
        keys = self.add_entries([entry], reference=reference)
        if not keys:
            raise InvalidInputError(f"entry {as_entry(entry).entry_id} was not added (MP2020-incompatible)")
        return keys[0]

    def entries_in_chemsys(self, chemsys: Any) -> list[ComputedEntry]:
        """Entries whose elements all belong to ``chemsys`` (its subsystems included)."""
        elements = chemsys_elements(chemsys)
        keys = [k for els, ks in self._by_elements.items() if els <= elements for k in ks]
        return [self._entries[k] for k in sorted(keys)]

    def phase_diagram(self, chemsys: Any, *, exclude: Iterable[str] = ()) -> PhaseDiagram:
        """The pymatgen PhaseDiagram of a chemical system (cached until entries of that system are added).

        Parameters
        ----------
        chemsys : str or sequence of str or Composition
        exclude : iterable of str
            Keys of entries to leave out (e.g. the known phase a candidate IS, when that candidate is judged: a
            crystal is never its own competing phase). Elemental references are never left out.

        Raises
        ------
        MissingReferenceError
            No entry of this functional for some element of the system.
        """
        elements = chemsys_elements(chemsys)
        entries = None
        skip: frozenset[str] = frozenset()
        if exclude:
            entries = self.entries_in_chemsys(elements)
            skip = frozenset(str(k) for k in exclude) & {entry_key(e) for e in entries
                                                          if len(e.composition.elements) > 1}
        key = (elements, skip)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if entries is None:
            entries = self.entries_in_chemsys(elements)
        if skip:
            entries = [e for e in entries if entry_key(e) not in skip]
        have = {str(e.composition.elements[0]) for e in entries if len(e.composition.elements) == 1}
        missing = sorted(elements - have)
        if missing:
            raise MissingReferenceError(
                f"the {self.fidelity} hull has no entry for element(s) {', '.join(missing)} "
                f"(chemical system {'-'.join(sorted(elements))}): add elemental references "
                "(screener.hull.reference_entries, --references FILE or --mp)"
            )
        from pymatgen.analysis.phase_diagram import PhaseDiagram
        from pymatgen.core import Element

        diagram = PhaseDiagram(entries, elements=[Element(el) for el in sorted(elements)])
        self._cache[key] = diagram
        if len(self._cache) > self.MAX_CACHED_DIAGRAMS:
            self._cache.popitem(last=False)
        return diagram

    def _on_scale(self, entry: ComputedEntry | dict) -> ComputedEntry:
        """The entry as the hull sees it: the stored copy if it is in the hull, else a corrected copy."""
        entry = as_entry(entry)
        key = entry_key(entry)
        stored = self._entries.get(key) if key is not None else None
        if (
            stored is not None
            and abs(stored.uncorrected_energy - entry.uncorrected_energy) < 1e-9
            and stored.composition == entry.composition
        ):
            return stored
        prepared = prepare_entries([entry], self.fidelity, on_incompatible="raise", check_potcar=self.check_potcar)
        return prepared[0]

    # ---- energies -------------------------------------------------------------------------------------------------
    def e_form_ev_per_atom(self, entry: ComputedEntry | dict) -> float:
        """Formation energy per atom of an entry (in the hull or not) against this hull's elemental references."""
        entry = self._on_scale(entry)
        return float(self.phase_diagram(entry).get_form_energy_per_atom(entry))

    def e_above_hull_ev_per_atom(self, entry: ComputedEntry | dict, *, exclude: Iterable[str] = ()) -> float:
        """Energy above the hull per atom; negative for an entry not in the hull that lies below it (a new stable
        phase: the distance to the current hull). ``exclude``: keys of entries the hull is built without (the
        known phase this entry IS; see :meth:`phase_diagram`)."""
        entry = self._on_scale(entry)
        diagram = self.phase_diagram(entry, exclude=exclude)
        _, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
        return float(e_hull)

    def is_stable(self, entry: ComputedEntry | dict, *, threshold_ev_per_atom: float = 0.0,
                  exclude: Iterable[str] = ()) -> bool:
        """True when the entry is on the hull, below it or at most ``threshold_ev_per_atom`` above it
        (``e_above_hull <= threshold + STABLE_TOL_EV_PER_ATOM``)."""
        e_hull = self.e_above_hull_ev_per_atom(entry, exclude=exclude)
        return e_hull <= float(threshold_ev_per_atom) + self.STABLE_TOL_EV_PER_ATOM

    def decomposition(self, entry: ComputedEntry | dict) -> dict[str, float]:
        """The hull phases an entry decomposes into: key (structure_id / entry_id) -> fraction of atoms."""
        entry = self._on_scale(entry)
        decomp, _ = self.phase_diagram(entry).get_decomp_and_e_above_hull(entry, allow_negative=True)
        return {str(entry_key(e)): float(x) for e, x in decomp.items()}

    def hull_energy_ev_per_atom(self, composition: Composition | str, *, exclude: Iterable[str] = ()) -> float:
        """Total energy per atom of the hull at a composition (eV/atom, on the hull's energy scale)."""
        from pymatgen.core import Composition

        composition = Composition(composition)
        return float(self.phase_diagram(composition, exclude=exclude).get_hull_energy_per_atom(composition))

    def hull_formation_energy_ev_per_atom(self, composition: Composition | str, *, exclude: Iterable[str] = ()
                                          ) -> float:
        """Formation energy per atom of the hull at a composition (<= 0): what a predicted formation energy is
        measured against. ``exclude``: keys of entries left out (see :meth:`phase_diagram`)."""
        from pymatgen.core import Composition

        composition = Composition(composition)
        return hull_formation_energy_per_atom(self.phase_diagram(composition, exclude=exclude), composition)

    def e_above_hull_from_formation_energy(self, composition: Composition | str, e_form_ev_per_atom: float, *,
                                           exclude: Iterable[str] = ()) -> float:
        """E_hull of a (predicted) formation energy at a composition: ``e_form - hull formation energy``."""
        return float(e_form_ev_per_atom) - self.hull_formation_energy_ev_per_atom(composition, exclude=exclude)

    def stable_entries(self, chemsys: Any = None) -> list[ComputedEntry]:
        """Stable entries of one chemical system (its subsystems included), or of every system in the hull."""
        if chemsys is not None:
            return sorted(self.phase_diagram(chemsys).stable_entries, key=lambda e: str(entry_key(e)))
        sets = [s for s, keys in self._by_elements.items() if keys]
        maximal = [s for s in sets if not any(s < other for other in sets)]
        stable: dict[str, ComputedEntry] = {}
        for elements in maximal:
            for entry in self.phase_diagram(elements).stable_entries:
                stable[str(entry_key(entry))] = entry
        return [stable[k] for k in sorted(stable)]

    # ---- what a higher-fidelity hull still needs ------------------------------------------------------------------
    def missing_competing_phases(
        self,
        chemsys: Any,
        known: FidelityHull | None = None,
        *,
        e_hull_tol_ev_per_atom: float | None = None,
    ) -> list[CompetingPhase]:
        """Phases on or near the ``known`` (e.g. PBE) hull of a chemical system that lack an energy in this hull.

        A SCAN E_hull is only meaningful when the competing phases have SCAN energies too; this lists what must be
        computed (the campaign schedules and pays for them). Elements count as present when this hull has any entry
        of that element (its reference). A compound counts as present when this hull holds an entry with the same
        structure_id, the same ``data["material_id"]``, or (both having structures) a matching structure.

        Parameters
        ----------
        chemsys : str or sequence of str or Composition
            The chemical system of a candidate (its subsystems are included).
        known : FidelityHull, optional
            The hull of the other functional where the phases are known (default: ``known_hull`` given at
            construction).
        e_hull_tol_ev_per_atom : float, optional
            Phases up to this far above the ``known`` hull count (default ``NEAR_HULL_TOL_EV_PER_ATOM``, 25 meV).

        Returns
        -------
        list of CompetingPhase
            Sorted by energy above the known hull, then formula.
        """
        known = known if known is not None else self.known_hull
        if known is None:
            raise InvalidInputError(
                f"which phases the {self.fidelity} hull lacks is judged against the hull of the other functional: "
                "pass known=<pbe hull>, construct with known_hull=, or use HullSet"
            )
        if known.fidelity == self.fidelity:
            raise InvalidInputError(
                f"missing_competing_phases needs the hull of another functional, not {self.fidelity}"
            )
        tol = self.NEAR_HULL_TOL_EV_PER_ATOM if e_hull_tol_ev_per_atom is None else float(e_hull_tol_ev_per_atom)
        elements = chemsys_elements(chemsys)
        diagram = known.phase_diagram(elements)
        mine = self.entries_in_chemsys(elements)
        my_keys = {entry_key(e) for e in mine} | {mid for e in mine if (mid := _material_id(e))}
        my_elements = {str(e.composition.elements[0]) for e in mine if len(e.composition.elements) == 1}
        by_formula: dict[str, list[ComputedEntry]] = defaultdict(list)
        for e in mine:
            by_formula[e.composition.reduced_formula].append(e)
        matcher = None
        missing: list[CompetingPhase] = []
        for entry in diagram.all_entries:
            if len(entry.composition.elements) == 1 and str(entry.composition.elements[0]) in my_elements:
                continue
            e_hull = float(diagram.get_e_above_hull(entry, allow_negative=True))
            if e_hull > tol:
                continue
            if entry_key(entry) in my_keys or (_material_id(entry) or "\0") in my_keys:
                continue
            structure = getattr(entry, "structure", None)
            same_formula = by_formula.get(entry.composition.reduced_formula, [])
            if structure is not None and same_formula:
                if matcher is None:
                    from pymatgen.analysis.structure_matcher import StructureMatcher

                    matcher = StructureMatcher()
                if any(
                    getattr(other, "structure", None) is not None and matcher.fit(structure, other.structure)
                    for other in same_formula
                ):
                    continue
            missing.append(
                CompetingPhase(
                    structure_id=str(entry_key(entry)),
                    formula=entry.composition.reduced_formula,
                    chemsys="-".join(sorted(str(el) for el in entry.composition.elements)),
                    e_hull_ev_per_atom=e_hull,
                    known_fidelity=known.fidelity,
                    structure=structure,
                )
            )
        missing.sort(key=lambda p: (p.e_hull_ev_per_atom, p.formula, p.structure_id))
        return missing

    # ---- persistence ----------------------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (entries stored with the corrections already applied)."""
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "fidelity": self.fidelity,
            "entries": [e.as_dict() for k, e in self._entries.items() if k not in self._reference_keys],
            "references": [e.as_dict() for k, e in self._entries.items() if k in self._reference_keys],
            "on_incompatible": self.on_incompatible,
            "check_potcar": self.check_potcar,
            "on_mixed_backends": self.on_mixed_backends,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FidelityHull:
        """Rebuild a hull from :meth:`as_dict` (MP2020 is not re-applied: the stored adjustments are recognised).

        The entries are checked against :mod:`screener._safe_json`'s allow-list before they are decoded.
        """
        from screener._safe_json import entry_from_dict

        what = f"{d.get('fidelity', '?')} hull"
        return cls(
            d["fidelity"],
            entries=[entry_from_dict(e, what) for e in d.get("entries", [])],
            references=[entry_from_dict(e, what) for e in d.get("references", [])],
            on_incompatible=d.get("on_incompatible", "raise"),
            check_potcar=d.get("check_potcar", True),
            on_mixed_backends=d.get("on_mixed_backends", "warn"),
        )

    def save(self, path: str | Path) -> Path:
        """Write the hull as JSON (``.json.gz`` / ``.json.bz2`` compress)."""
        from monty.serialization import dumpfn

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        dumpfn(self.as_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FidelityHull:
        """Read a hull written by :meth:`save`."""
        import json

        from monty.io import zopen

        with zopen(str(path), "rt") as fh:
            return cls.from_dict(json.load(fh))
