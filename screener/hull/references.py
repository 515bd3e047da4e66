"""Reference phases: the elemental references shipped with screener and local entry files.

Shipped sources (``screener/data/elemental_refs/``, see the README there):

========================  ===========  =========================================================================
source                    functional   what
========================  ===========  =========================================================================
``"mp"``                  pbe          MP GGA lowest-energy elemental entries (2023-02-07, matbench-discovery),
                                       the references for MP-compatible (MPGGAStaticMaker, MP2020) energies
``"mp-polymorphs"``       pbe          MP GGA elemental polymorphs with structures; the lowest one per element
``"matpes"``              pbe, scan    MatPES PBE / r2SCAN elemental ground states (structures included), the
                                       references for energies from the MatPES static protocol
========================  ===========  =========================================================================
"""

from __future__ import annotations

import gzip
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.hull.corrections import normalise_fidelity

if TYPE_CHECKING:
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = [
    "REFERENCE_SOURCES",
    "reference_entries",
    "elemental_reference_structures",
    "make_reference_entries",
    "load_entries",
    "save_entries",
]

logger = logging.getLogger(__name__)

REFERENCE_SOURCES: dict[str, dict[str, str]] = {
    "mp": {"pbe": "2023-02-07-mp-elemental-reference-entries.json.gz"},
    "mp-polymorphs": {"pbe": "MP-PBE-Element-Refs.json.gz"},
    "matpes": {"pbe": "MatPES-PBE-Element-Refs.json.gz", "scan": "MatPES-r2SCAN-Element-Refs.json.gz"},
}
_DEFAULT_SOURCE = {"pbe": "mp", "scan": "matpes"}


@lru_cache(maxsize=8)
def _load_ref_file(name: str) -> dict[str, Any]:
    from screener.data import data_path

    with gzip.open(data_path(f"elemental_refs/{name}"), "rt") as fh:
        return json.load(fh)


def _check_source(source: str, fidelity: str) -> str:
    if source not in REFERENCE_SOURCES:
        raise InvalidInputError(f"unknown reference source {source!r}: choose from {sorted(REFERENCE_SOURCES)}")
    if fidelity not in REFERENCE_SOURCES[source]:
        have = [name for name, files in REFERENCE_SOURCES.items() if fidelity in files]
        raise InvalidInputError(f"reference source {source!r} has no {fidelity} energies; use one of {have}")
    return REFERENCE_SOURCES[source][fidelity]


def _select(data: dict[str, Any], elements: Iterable[str] | None) -> list[str]:
    if elements is None:
        return sorted(data)
    wanted = [str(el) for el in elements]
    missing = [el for el in wanted if el not in data]
    if missing:
        raise InvalidInputError(f"no shipped elemental reference for {', '.join(missing)}")
    return wanted


def reference_entries(
    fidelity: str,
    source: str | None = None,
    *,
    elements: Iterable[str] | None = None,
) -> list[ComputedEntry]:
    """Elemental reference entries shipped with screener.

    Parameters
    ----------
    fidelity : {"pbe", "scan"}
        Functional of the hull the references are for.
    source : {"mp", "mp-polymorphs", "matpes"}, optional
        Which shipped set (module docstring); default ``"mp"`` for PBE and ``"matpes"`` for r2SCAN.
    elements : iterable of str, optional
        Only these elements (default: every element of the set).

    Returns
    -------
    list of ComputedEntry
        One entry per element (``ComputedStructureEntry`` where the set holds structures), with
        ``data["fidelity"]``, ``data["structure_id"]`` (e.g. ``ref:matpes:Si``) and ``data["reference_source"]``.
    """
    fidelity = normalise_fidelity(fidelity)
    source = source or _DEFAULT_SOURCE[fidelity]
    data = _load_ref_file(_check_source(source, fidelity))
    with warnings.catch_warnings():
        # pymatgen warns that noble gases have no Pauling electronegativity when it names their formulas
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        return [_reference_entry(data, el, fidelity, source) for el in _select(data, elements)]


def _reference_entry(data: dict[str, Any], el: str, fidelity: str, source: str) -> ComputedEntry:
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    meta = {"fidelity": fidelity, "structure_id": f"ref:{source}:{el}", "reference_source": source}
    doc = data[el]
    if source == "mp":
        entry = ComputedEntry.from_dict(doc)
        entry.data.update(meta)
        return entry
    if source == "mp-polymorphs":
        k = min(range(len(doc["energy_per_atom"])), key=doc["energy_per_atom"].__getitem__)
        structure = Structure.from_dict(doc["structure"][k])
        return ComputedStructureEntry(
            structure,
            doc["energy_per_atom"][k] * len(structure),
            parameters={"run_type": "GGA"},
            data=meta,
            entry_id=f"ref-mp-polymorphs-{el}",
        )
    structure = Structure.from_dict(doc["structure"])  # matpes
    return ComputedStructureEntry(
        structure,
        float(doc["energy"]),
        parameters={"run_type": "r2SCAN" if fidelity == "scan" else "PBE"},
        data={**meta, "matpes_id": doc.get("matpes_id"), "functional": doc.get("functional")},
        entry_id=f"ref-matpes-{fidelity}-{el}",
    )


def elemental_reference_structures(
    elements: Iterable[str] | None = None,
    source: str = "mp-polymorphs",
) -> dict[str, Structure]:
    """The lowest-energy elemental structure per element, for references computed with the SAME calculator.

    The stand-in calculators (CHGNet) must compute their own elemental references: give these structures to the
    calculator, then build the reference entries with :func:`make_reference_entries`.

    Parameters
    ----------
    elements : iterable of str, optional
        Element symbols (default: all elements of the source).
    source : {"mp-polymorphs", "matpes"}
        ``"mp-polymorphs"``: lowest-energy MP GGA polymorph; ``"matpes"``: the MatPES ground state.

    Returns
    -------
    dict of str to Structure
    """
    from pymatgen.core import Structure

    if source not in ("mp-polymorphs", "matpes"):
        raise InvalidInputError(f"reference structures come from 'mp-polymorphs' or 'matpes', not {source!r}")
    data = _load_ref_file(REFERENCE_SOURCES[source]["pbe"])
    out: dict[str, Structure] = {}
    for el in _select(data, elements):
        doc = data[el]
        if source == "matpes":
            out[el] = Structure.from_dict(doc["structure"])
        else:
            k = min(range(len(doc["energy_per_atom"])), key=doc["energy_per_atom"].__getitem__)
            out[el] = Structure.from_dict(doc["structure"][k])
    return out


def make_reference_entries(
    structures: dict[str, Structure],
    energies_ev: dict[str, float],
    fidelity: str,
    *,
    backend: str = "standin",
    label: str = "",
) -> list[ComputedEntry]:
    """Wrap elemental energies computed by one calculator as reference entries of one hull.

    Parameters
    ----------
    structures : dict of str to Structure
        Element -> structure that was computed (e.g. from :func:`elemental_reference_structures`).
    energies_ev : dict of str to float
        Element -> total energy of that cell in eV (not per atom).
    fidelity : {"pbe", "scan"}
    backend : str
        Recorded in ``data["backend"]``; ``"standin"`` entries are never MP2020-corrected.
    label : str
        Free text kept in ``data["label"]`` (e.g. the calculator and version).

    Returns
    -------
    list of ComputedStructureEntry
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    fidelity = normalise_fidelity(fidelity)
    missing = sorted(set(structures) - set(energies_ev))
    if missing:
        raise InvalidInputError(f"no energy for reference structure(s) {', '.join(missing)}")
    entries = []
    for el, structure in structures.items():
        sid = f"ref:{backend}:{fidelity}:{el}"
        entries.append(
            ComputedStructureEntry(
                structure,
                float(energies_ev[el]),
                parameters={"run_type": backend},
                data={"fidelity": fidelity, "backend": backend, "structure_id": sid, "label": label},
                entry_id=sid,
            )
        )
    return entries


def _entries_from_object(obj: Any, source: str) -> list[ComputedEntry]:
    from pymatgen.entries.computed_entries import ComputedEntry

    from screener._safe_json import entry_from_dict

    if isinstance(obj, ComputedEntry):
        return [obj]
    if isinstance(obj, dict):
        if "@class" in obj:
            return [entry_from_dict(obj, source)]
        if "entries" in obj:
            return _entries_from_object(obj["entries"], source)
        items: Sequence[Any] = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = obj
    else:
        raise InvalidInputError(f"{source}: expected ComputedEntry objects, found {type(obj).__name__}")
    entries: list[ComputedEntry] = []
    for item in items:
        if isinstance(item, ComputedEntry):
            entries.append(item)
        elif isinstance(item, dict) and "energy" in item and "composition" in item:
            # Alexandria-style dumps carry no @class; a structure key means ComputedStructureEntry.
            entries.append(entry_from_dict(item, source))
        else:
            raise InvalidInputError(f"{source}: item of type {type(item).__name__} is not a computed entry")
    return entries


def load_entries(paths: Iterable[str | Path]) -> list[ComputedEntry]:
    """Read computed entries from JSON files (``.json``, ``.json.gz``, ``.json.bz2``): a local entry database.

    A file may hold one entry, a list of entries, a dict ``{"entries": [...]}`` or a dict of entries (e.g. element ->
    entry). Entries without ``entry_id`` get ``data["structure_id"]`` (Alexandria's ``mat_id`` when present) or
    ``<file name>:<index>`` as their id, so every row can be traced back to its file. The file is read as plain JSON
    and every dict in it that names a class must be an entry, structure or energy adjustment
    (:mod:`screener._safe_json`): an entries file cannot name code to run.
    """
    from screener._safe_json import read_json

    entries: list[ComputedEntry] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"{path}: no such file")
        obj = read_json(path)
        file_entries = _entries_from_object(obj, str(path))
        for i, entry in enumerate(file_entries):
            if entry.data is None:
                entry.data = {}
            sid = entry.data.get("structure_id") or entry.entry_id or entry.data.get("mat_id") or f"{path.name}:{i}"
            entry.data.setdefault("structure_id", str(sid))
            if entry.entry_id is None:
                entry.entry_id = str(sid)
        logger.info("%s: %d entries", path, len(file_entries))
        entries.extend(file_entries)
    return entries


def save_entries(entries: Iterable[ComputedEntry], path: str | Path) -> Path:
    """Write entries as a JSON list (gzip/bz2 by the file extension) readable by :func:`load_entries`."""
    from monty.serialization import dumpfn

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumpfn([entry.as_dict() for entry in entries], path)
    return path
