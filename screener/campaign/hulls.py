"""The campaign's hulls: two :class:`screener.hull.FidelityHull` (PBE, SCAN) behind the loop's ``Hulls`` interface.

Reference phases (what formation energies are measured from) come, per ``references``:

``shipped``
    the elemental references shipped with screener: MP GGA entries for PBE (MP2020 scale), MatPES r2SCAN for SCAN;
    right for real VASP results.
``standin``
    elemental ground states (MP lowest-energy polymorphs) computed with the stand-in calculator itself (CHGNet 0.3.0
    for PBE, CHGNet r2scan for SCAN): a stand-in hull must use references from the same calculator. These set-up
    energies are computed once when the campaign is created, stored in ``<campaign>/references.json`` and not
    charged to the budget (a DFT campaign downloads its references; the stand-in computes the equivalent).
a file
    ComputedEntry JSON with ``data["fidelity"]`` on each entry (``screener.hull.load_entries``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError

__all__ = ["CampaignHulls", "prepare_references", "REFERENCES_FILENAME"]

logger = logging.getLogger(__name__)

REFERENCES_FILENAME = "references.json"


def prepare_references(campaign_dir: Path, mode: str, elements: Iterable[str], backend: str) -> Path:
    """Write ``<campaign>/references.json`` (once) with reference entries of both fidelities; return its path."""
    path = Path(campaign_dir) / REFERENCES_FILENAME
    if path.exists():
        return path
    from monty.json import MontyEncoder

    elements = sorted(set(elements))
    if mode == "auto":
        mode = "standin" if backend == "standin" else "shipped"
    entries: dict[str, list[Any]] = {}
    if mode == "shipped":
        from screener.hull import reference_entries

        entries = {f: reference_entries(f, elements=elements) for f in ("pbe", "scan")}
    elif mode == "standin":
        from screener.calculators.standin import energies_batch
        from screener.hull import elemental_reference_structures, make_reference_entries

        structures = {}
        for el in elements:  # MP's lowest-energy polymorph; MatPES's ground state where MP's file lacks the element
            try:
                structures.update(elemental_reference_structures([el], source="mp-polymorphs"))
            except InvalidInputError:
                structures.update(elemental_reference_structures([el], source="matpes"))
        for fidelity in ("pbe", "scan"):
            e_per_atom = energies_batch(list(structures.values()), fidelity)
            energies = {el: float(e) * len(s) for (el, s), e in zip(structures.items(), e_per_atom, strict=True)}
            entries[fidelity] = make_reference_entries(structures, energies, fidelity, backend="standin",
                                                       label="stand-in elemental reference (CHGNet)")
    else:
        from screener.hull import load_entries
        from screener.hull.corrections import entry_fidelity

        if not Path(mode).is_file():
            raise InvalidInputError(f"references {mode!r}: not 'auto', 'shipped', 'standin' or an entries file")
        loaded = load_entries([mode])
        entries = {f: [e for e in loaded if entry_fidelity(e) == f] for f in ("pbe", "scan")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({f: [e.as_dict() for e in es] for f, es in entries.items()}, cls=MontyEncoder))
    tmp.replace(path)
    return path


def _entry(entry: Mapping[str, Any] | Any) -> Any:
    if not isinstance(entry, Mapping):
        return entry
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(dict(entry))


class CampaignHulls:
    """PBE and SCAN hulls of one campaign, fed with its results.

    Parameters
    ----------
    references : mapping fidelity -> list of ComputedEntry (or dicts)
        Reference phases of each hull.
    """

    def __init__(self, references: Mapping[str, list[Any]]) -> None:
        from screener.hull import FidelityHull

        self.hulls = {
            f: FidelityHull(f, references=[_entry(e) for e in references.get(f, [])], on_mixed_backends="warn")
            for f in ("pbe", "scan")
        }

    @classmethod
    def from_file(cls, path: str | Path) -> CampaignHulls:
        """Hulls over the references stored by :func:`prepare_references`."""
        return cls(json.loads(Path(path).read_text()))

    def add_result(self, fidelity: str, entry: Mapping[str, Any]) -> None:
        self.hulls[fidelity].add_entries([_entry(entry)])

    def hull_formation_energy_ev_per_atom(self, fidelity: str, composition: Any) -> float:
        from screener.hull import MissingReferenceError

        try:
            return self.hulls[fidelity].hull_formation_energy_ev_per_atom(composition)
        except MissingReferenceError:
            return math.nan

    def e_form_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float:
        from screener.hull import MissingReferenceError

        try:
            return self.hulls[fidelity].e_form_ev_per_atom(_entry(entry))
        except MissingReferenceError:
            return math.nan

    def e_above_hull_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float:
        from screener.hull import MissingReferenceError

        try:
            return self.hulls[fidelity].e_above_hull_ev_per_atom(_entry(entry))
        except MissingReferenceError:
            return math.nan

    def missing_competing_phases(self, fidelity: str, chemsys: str) -> list[tuple[str, Any]]:
        """SCAN: phases on/near the PBE hull of ``chemsys`` without a SCAN energy. PBE: none (nothing is known
        below PBE)."""
        if fidelity != "scan":
            return []
        from screener.hull import MissingReferenceError

        try:
            phases = self.hulls["scan"].missing_competing_phases(chemsys, self.hulls["pbe"])
        except MissingReferenceError:
            return []
        return [(p.structure_id, p.structure) for p in phases if p.structure is not None]

    def snapshot(self, fidelity: str) -> dict[str, Any]:
        from screener.hull.phase_diagram import entry_key

        from screener.hull import MissingReferenceError

        hull = self.hulls[fidelity]
        refs = {entry_key(e) for e in hull.references}
        try:
            stable = sorted(str(entry_key(e)) for e in hull.stable_entries() if entry_key(e) not in refs)
        except MissingReferenceError as exc:  # an element without reference: nothing there can be called stable
            logger.warning("%s", exc)
            stable = []
        return {"n_entries": len(hull) - len(refs), "n_stable": len(stable), "stable_ids": stable,
                "json": hull.as_dict()}
