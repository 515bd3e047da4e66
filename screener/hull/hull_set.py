"""The PBE and SCAN hulls side by side: completeness checks and the explicitly flagged mixing fallback.

A SCAN E_hull is ``complete`` only when every phase on or near the PBE hull of the candidate's chemical system has a
SCAN energy too. Otherwise :meth:`HullSet.evaluate` either raises (listing what to compute), computes the E_hull from
the SCAN phases that exist and flags it ``incomplete``, or - only when asked - places the SCAN energies on the PBE hull
with pymatgen's ``MaterialsProjectDFTMixingScheme`` and flags it ``mixed``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from monty.json import MSONable

from screener.errors import InvalidInputError, ScreenerError
from screener.hull.corrections import FIDELITIES, as_entry, entry_fidelity, normalise_fidelity
from screener.hull.phase_diagram import (
    CompetingPhase,
    FidelityHull,
    MissingReferenceError,
    chemsys_elements,
    entry_key,
)

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["HullSet", "HullEvaluation", "IncompleteHullError"]

logger = logging.getLogger(__name__)

Status = Literal["complete", "incomplete", "mixed", "unchecked"]


class IncompleteHullError(ScreenerError):
    """A SCAN E_hull was asked for but competing phases lack SCAN energies."""

    def __init__(self, chemsys: str, missing: list[CompetingPhase]) -> None:
        self.chemsys = chemsys
        self.missing = missing
        names = ", ".join(f"{p.formula} ({p.structure_id})" for p in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        super().__init__(f"SCAN hull of {chemsys} is incomplete: compute {names}{more} at SCAN level first")


@dataclass
class HullEvaluation(MSONable):
    """Where one entry stands against the hull of its functional.

    Attributes
    ----------
    structure_id : str
    formula : str
        Reduced formula.
    fidelity : str
        ``"pbe"`` or ``"scan"``.
    e_form_ev_per_atom : float
        Formation energy against the elemental references of that functional.
    e_hull_ev_per_atom : float
        Energy above the hull (negative: below the current hull, a new stable phase).
    stable : bool
        ``e_hull_ev_per_atom <= FidelityHull.STABLE_TOL_EV_PER_ATOM``.
    status : {"complete", "incomplete", "mixed", "unchecked"}
        ``complete``: all competing phases known at this functional. ``incomplete``: some SCAN competing phases are
        missing (listed in ``missing``) and the value uses only the SCAN phases that exist. ``mixed``: the value
        comes from MaterialsProjectDFTMixingScheme (SCAN energies placed on the PBE hull), not from a pure SCAN hull.
        ``unchecked``: the PBE hull has no data for this chemical system, so completeness cannot be judged.
    missing : list of str
        structure_ids of the competing phases that still need an energy at this functional.
    """

    structure_id: str
    formula: str
    fidelity: str
    e_form_ev_per_atom: float
    e_hull_ev_per_atom: float
    stable: bool
    status: str = "complete"
    missing: list[str] = field(default_factory=list)


class HullSet(MSONable):
    """One :class:`FidelityHull` per functional.

    Parameters
    ----------
    hulls : dict of str to FidelityHull, optional
        ``{"pbe": ..., "scan": ...}``; missing functionals get an empty hull.
    """

    def __init__(self, hulls: dict[str, FidelityHull] | None = None) -> None:
        self.hulls: dict[str, FidelityHull] = {}
        for name, hull in (hulls or {}).items():
            name = normalise_fidelity(name)
            if hull.fidelity != name:
                raise InvalidInputError(f"the {name!r} slot holds a {hull.fidelity} hull")
            self.hulls[name] = hull
        for name in FIDELITIES:
            self.hulls.setdefault(name, FidelityHull(name))

    @classmethod
    def from_references(
        cls, *, pbe_source: str | None = None, scan_source: str | None = None, elements: Iterable[str] | None = None
    ) -> HullSet:
        """Both hulls seeded with shipped elemental references (see :func:`screener.hull.reference_entries`)."""
        from screener.hull.references import reference_entries

        elements = list(elements) if elements is not None else None
        return cls(
            {
                "pbe": FidelityHull("pbe", references=reference_entries("pbe", pbe_source, elements=elements)),
                "scan": FidelityHull("scan", references=reference_entries("scan", scan_source, elements=elements)),
            }
        )

    def __getitem__(self, fidelity: str) -> FidelityHull:
        return self.hulls[normalise_fidelity(fidelity)]

    def __repr__(self) -> str:
        return f"HullSet(pbe={len(self.hulls['pbe'])} entries, scan={len(self.hulls['scan'])} entries)"

    def add_entries(self, entries: Iterable[ComputedEntry]) -> dict[str, list[str]]:
        """Route each entry to the hull of its functional (``data["fidelity"]`` or run type)."""
        groups: dict[str, list[ComputedEntry]] = {name: [] for name in FIDELITIES}
        for entry in map(as_entry, entries):
            fidelity = entry_fidelity(entry)
            if fidelity is None:
                raise InvalidInputError(f"entry {entry.entry_id}: cannot tell its functional; set data['fidelity']")
            groups[fidelity].append(entry)
        return {name: self.hulls[name].add_entries(group) for name, group in groups.items() if group}

    def missing_competing_phases(
        self, chemsys: Any, *, fidelity: str = "scan", e_hull_tol_ev_per_atom: float | None = None
    ) -> list[CompetingPhase]:
        """Phases on or near the other functional's hull of ``chemsys`` that the ``fidelity`` hull lacks."""
        fidelity = normalise_fidelity(fidelity)
        other = "pbe" if fidelity == "scan" else "scan"
        return self.hulls[fidelity].missing_competing_phases(
            chemsys, self.hulls[other], e_hull_tol_ev_per_atom=e_hull_tol_ev_per_atom
        )

    def evaluate(
        self,
        entry: ComputedEntry,
        *,
        on_missing: Literal["raise", "flag", "mix"] = "flag",
        e_hull_tol_ev_per_atom: float | None = None,
    ) -> HullEvaluation:
        """Formation energy and E_hull of an entry on the hull of its own functional, with an honest status.

        Parameters
        ----------
        entry : ComputedEntry
            A PBE or SCAN entry (in the hull or not).
        on_missing : {"raise", "flag", "mix"}
            For a SCAN entry whose competing phases lack SCAN energies: raise :class:`IncompleteHullError`, compute
            from the SCAN phases that exist and flag ``incomplete``, or use MaterialsProjectDFTMixingScheme and flag
            ``mixed``. PBE entries are always ``complete`` (PBE is the base level).
        """
        entry = as_entry(entry)
        fidelity = entry_fidelity(entry)
        if fidelity is None:
            raise InvalidInputError(f"entry {entry.entry_id}: cannot tell its functional; set data['fidelity']")
        hull = self.hulls[fidelity]
        missing: list[CompetingPhase] = []
        checked = True
        if fidelity == "scan":
            try:
                missing = self.missing_competing_phases(entry, e_hull_tol_ev_per_atom=e_hull_tol_ev_per_atom)
            except MissingReferenceError:
                checked = False  # the PBE hull knows nothing of this system: completeness cannot be judged
            missing = [p for p in missing if p.structure_id != entry_key(entry)]
        chemsys = "-".join(sorted(chemsys_elements(entry)))
        if missing and on_missing == "raise":
            raise IncompleteHullError(chemsys, missing)
        if missing and on_missing == "mix":
            e_form, e_hull = self._mixed_energies(entry)
            status: Status = "mixed"
        else:
            e_form, e_hull = hull.e_form_ev_per_atom(entry), hull.e_above_hull_ev_per_atom(entry)
            status = "incomplete" if missing else "complete" if checked else "unchecked"
        return HullEvaluation(
            structure_id=str(entry_key(entry)),
            formula=entry.composition.reduced_formula,
            fidelity=fidelity,
            e_form_ev_per_atom=float(e_form),
            e_hull_ev_per_atom=float(e_hull),
            stable=bool(e_hull <= FidelityHull.STABLE_TOL_EV_PER_ATOM),
            status=status,
            missing=[p.structure_id for p in missing],
        )

    def _mixed_energies(self, entry: ComputedEntry) -> tuple[float, float]:
        """E_form and E_hull of a SCAN entry on the GGA(+U)/r2SCAN mixed hull of MaterialsProjectDFTMixingScheme.

        PBE entries already carry their corrections (or are stand-in energies that must not be corrected), so the
        scheme runs with ``compat_1=None``. All entries need structures (the scheme matches polymorphs).
        """
        from pymatgen.analysis.phase_diagram import PhaseDiagram
        try:  # pymatgen >= 2025 moved it; the old path is a deprecated stub
            from pymatgen.analysis.compatibility.mixing_scheme import MaterialsProjectDFTMixingScheme
        except ImportError:  # pragma: no cover - older pymatgen
            from pymatgen.entries.mixing_scheme import MaterialsProjectDFTMixingScheme

        elements = chemsys_elements(entry)
        pbe = self.hulls["pbe"].entries_in_chemsys(elements)
        scan = [e for e in self.hulls["scan"].entries_in_chemsys(elements) if entry_key(e) != entry_key(entry)]
        query = copy.deepcopy(entry)
        query.entry_id = f"__query__{entry_key(entry)}"
        work = []
        for e in pbe:
            e = copy.deepcopy(e)
            hubbard = bool((e.parameters or {}).get("is_hubbard")) or str(e.parameters.get("run_type")).endswith("+U")
            e.parameters = {**(e.parameters or {}), "run_type": "GGA+U" if hubbard else "GGA"}
            e.entry_id = f"pbe::{entry_key(e)}"
            work.append(e)
        for e in [*scan, query]:
            e = e if e is query else copy.deepcopy(e)
            e.parameters = {**(e.parameters or {}), "run_type": "R2SCAN"}
            if e is not query:
                e.entry_id = f"scan::{entry_key(e)}"
            work.append(e)
        without_structure = [e.entry_id for e in work if not hasattr(e, "structure")]
        if without_structure:
            raise InvalidInputError(
                "the mixing scheme needs structures; these entries have none: " + ", ".join(without_structure[:5])
            )
        scheme = MaterialsProjectDFTMixingScheme(compat_1=None, compat_2=None, check_potcar=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mixed = scheme.process_entries(work, inplace=True)
        for item in caught:
            logger.debug("mixing scheme: %s", item.message)
        mixed_query = [e for e in mixed if e.entry_id == query.entry_id]
        if not mixed_query:
            raise ScreenerError(
                f"MaterialsProjectDFTMixingScheme could not place {entry.composition.reduced_formula} "
                f"({entry_key(entry)}) on the PBE hull; compute its competing phases at SCAN level"
            )
        diagram = PhaseDiagram(mixed)
        q = mixed_query[0]
        _, e_hull = diagram.get_decomp_and_e_above_hull(q, allow_negative=True)
        logger.warning(
            "%s: E_hull from MaterialsProjectDFTMixingScheme (flagged 'mixed'), not a pure SCAN hull",
            entry_key(entry),
        )
        return float(diagram.get_form_energy_per_atom(q)), float(e_hull)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of both hulls."""
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "hulls": {name: hull.as_dict() for name, hull in self.hulls.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HullSet:
        """Rebuild from :meth:`as_dict`."""
        return cls({name: FidelityHull.from_dict(h) for name, h in d["hulls"].items()})
