"""The real crystals shipped with screener: the prototypes a simulated world starts from.

Three sets live in ``screener/data/structures/`` (sources and licences in the README there):

============  =====  ====================================================================================
source        rows   what
============  =====  ====================================================================================
``mp20``      1112   MP-20 subset (MP/ICSD crystals with at most 20 atoms; cdvae's train/val/test CSVs)
``perov5``    400    ABX3 cubic perovskites of Castelli et al. 2012 (first 400 rows of cdvae's perov_5 val)
``aviary``    68     (Hf,Ti,Zr)-Zn-N prototypes and elements of aviary's ``examples.json``
============  =====  ====================================================================================

Parsing thousands of CIFs is slow, so :func:`load_prototypes` reads only ids and compositions; the structure of a
:class:`Prototype` is parsed the first time it is needed (and then kept).
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Prototype", "PROTOTYPE_SOURCES", "DEFAULT_SOURCES", "load_prototypes", "prototypes_from_records"]

logger = logging.getLogger(__name__)

#: source name -> files under ``screener/data/structures``.
PROTOTYPE_SOURCES: dict[str, tuple[str, ...]] = {
    "mp20": ("mp_20_subset/train.csv", "mp_20_subset/val.csv", "mp_20_subset/test.csv"),
    "perov5": ("perov_5/val_400.csv",),
    "aviary": ("aviary/examples.json",),
}
DEFAULT_SOURCES: tuple[str, ...] = ("mp20", "perov5", "aviary")


@dataclass
class Prototype:
    """A real crystal that can enter a world as it is or be decorated with other elements.

    Parameters
    ----------
    prototype_id : str
        ``<source>:<id in the source>``, e.g. ``mp20:mp-1234``.
    elements : tuple of str
        Element symbols, sorted.
    formula : str
        Reduced formula.
    source : str
        ``mp20``, ``perov5``, ``aviary`` or ``file``.
    raw : str or dict
        CIF text or a pymatgen Structure dict; parsed by :meth:`structure`.
    """

    prototype_id: str
    elements: tuple[str, ...]
    formula: str
    source: str
    raw: Any = field(repr=False, default=None)
    _structure: Structure | None = field(default=None, repr=False, compare=False)

    def structure(self) -> Structure:
        """The crystal (parsed once, then cached; a copy is returned so callers may modify it)."""
        if self._structure is None:
            from pymatgen.core import Structure

            if isinstance(self.raw, str):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # CIF parser chatter (rounded occupancies, primitive=...)
                    self._structure = Structure.from_str(self.raw, fmt="cif")
            elif isinstance(self.raw, dict):
                self._structure = Structure.from_dict(self.raw)
            else:
                self._structure = self.raw
        return self._structure.copy()


def _data_file(relative: str) -> Path:
    from screener.data import data_path

    return Path(data_path(f"structures/{relative}"))


def _elements_of(formula: str) -> tuple[str, ...]:
    from pymatgen.core import Composition

    return tuple(sorted(str(el) for el in Composition(formula).elements))


def _reduced(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


def _read_csv(path: Path, source: str) -> list[Prototype]:
    csv.field_size_limit(1 << 28)
    out = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            formula = row.get("pretty_formula") or row.get("formula")
            if not formula:  # fall back to the CIF's own formula line
                lines = [ln for ln in row["cif"].splitlines() if "_chemical_formula_sum" in ln]
                formula = lines[0].split(None, 1)[1].strip("'\" ") if lines else ""
            out.append(
                Prototype(
                    prototype_id=f"{source}:{row['material_id']}",
                    elements=_elements_of(formula),
                    formula=_reduced(formula),
                    source=source,
                    raw=row["cif"],
                )
            )
    return out


def _read_aviary(path: Path, source: str) -> list[Prototype]:
    with open(path, encoding="utf-8") as handle:
        table = json.load(handle)
    out = []
    for key in sorted(table["material_id"], key=int):
        formula = table["composition"][key]
        out.append(
            Prototype(
                prototype_id=f"{source}:{table['material_id'][key]}",
                elements=_elements_of(formula),
                formula=_reduced(formula),
                source=source,
                raw=table["structure"][key],
            )
        )
    return out


@lru_cache(maxsize=8)
def _load_source(source: str) -> tuple[Prototype, ...]:
    rows: list[Prototype] = []
    for relative in PROTOTYPE_SOURCES[source]:
        path = _data_file(relative)
        reader = _read_aviary if path.suffix == ".json" else _read_csv
        rows.extend(reader(path, source))
    logger.debug("prototype source %s: %d crystals", source, len(rows))
    return tuple(rows)


def load_prototypes(
    sources: Sequence[str] = DEFAULT_SOURCES,
    *,
    elements: Iterable[str] | None = None,
) -> list[Prototype]:
    """The shipped real crystals, optionally only those made of some elements.

    Parameters
    ----------
    sources : sequence of str
        Keys of :data:`PROTOTYPE_SOURCES`.
    elements : iterable of str, optional
        Keep only crystals whose elements are all in this set.

    Returns
    -------
    list of Prototype
        In source order, then file order (ids unique).
    """
    unknown = [s for s in sources if s not in PROTOTYPE_SOURCES]
    if unknown:
        raise InvalidInputError(f"unknown prototype source(s) {unknown}; choose from {sorted(PROTOTYPE_SOURCES)}")
    allowed = None if elements is None else frozenset(elements)
    out: list[Prototype] = []
    seen: set[str] = set()
    for source in sources:
        for proto in _load_source(source):
            if proto.prototype_id in seen:
                continue
            if allowed is None or set(proto.elements) <= allowed:
                seen.add(proto.prototype_id)
                out.append(proto)
    return out


def prototypes_from_records(records: Iterable[Any], source: str = "file") -> list[Prototype]:
    """Wrap :class:`~screener.structures.StructureRecord` objects (user prototype files) as prototypes."""
    out = []
    for record in records:
        structure = record.structure
        out.append(
            Prototype(
                prototype_id=f"{source}:{record.structure_id}",
                elements=tuple(sorted(str(el) for el in structure.composition.elements)),
                formula=structure.composition.reduced_formula,
                source=source,
                raw=structure,
            )
        )
    return out
