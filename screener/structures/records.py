"""The record a structure file yields: a structure with its id, targets and provenance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from screener.errors import InvalidStructureError

__all__ = ["StructureRecord", "ReadResult"]

logger = logging.getLogger(__name__)


@dataclass
class StructureRecord:
    """One candidate structure as read from a file.

    Parameters
    ----------
    structure_id : str
        Stable, unique id: the entry id, Alexandria ``mat_id``, a ``material_id`` column, the file stem or
        ``<file name>:<index>`` for the n-th structure of a multi-structure file.
    structure : Structure
        The crystal (ordered, 3D periodic when validated).
    targets : dict of str to float
        Labels to learn, e.g. ``{"e_above_hull": 0.0}`` (units as in the source; eV/atom for Alexandria/MP).
    source : str
        Path of the file the structure came from.
    entry : ComputedStructureEntry or None
        The entry when the source held ``ComputedStructureEntry`` objects (MP, Alexandria), else None.
    data : dict
        ``entry.data``, the other columns of a table or the info keys of an extxyz frame.
    """

    structure_id: str
    structure: Structure
    targets: dict[str, float] = field(default_factory=dict)
    source: str = ""
    entry: ComputedStructureEntry | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def formula(self) -> str:
        """Reduced formula of the structure, e.g. ``"Fe2O3"``."""
        return self.structure.composition.reduced_formula

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (MSON dicts for the structure and entry)."""
        return {
            "structure_id": self.structure_id,
            "structure": self.structure.as_dict(),
            "targets": dict(self.targets),
            "source": self.source,
            "entry": None if self.entry is None else self.entry.as_dict(),
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, dct: dict[str, Any]) -> StructureRecord:
        """Inverse of :meth:`as_dict`."""
        from screener._safe_json import entry_from_dict, structure_from_dict

        entry = dct.get("entry")
        what = f"record {dct.get('structure_id')}"
        return cls(
            structure_id=dct["structure_id"],
            structure=structure_from_dict(dct["structure"], what),
            targets={k: float(v) for k, v in dct.get("targets", {}).items()},
            source=dct.get("source", ""),
            entry=None if entry is None else entry_from_dict(entry, what),
            data=dict(dct.get("data", {})),
        )


@dataclass
class ReadResult:
    """What :func:`~screener.structures.read_structures` returns.

    Parameters
    ----------
    records : list of StructureRecord
        The valid structures, in file order (files in the order given, folders sorted by path).
    skipped : list of InvalidStructureError
        Structures (or whole unreadable files) left out because ``skip_invalid=True``; each carries
        ``structure_id`` and ``reason``.
    """

    records: list[StructureRecord] = field(default_factory=list)
    skipped: list[InvalidStructureError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def structures(self) -> list[Structure]:
        """The structures of :attr:`records`."""
        return [r.structure for r in self.records]

    @property
    def structure_ids(self) -> list[str]:
        """The ids of :attr:`records`."""
        return [r.structure_id for r in self.records]

    def require_records(self) -> ReadResult:
        """Return self, or raise :class:`~screener.errors.InvalidInputError` when no structure was valid.

        For callers (CLI commands with ``--skip-invalid``) that cannot go on with an empty candidate set.
        """
        if not self.records:
            from screener.errors import InvalidInputError

            first = f"; first: {self.skipped[0]}" if self.skipped else ""
            raise InvalidInputError(f"no valid structures ({len(self.skipped)} skipped{first})")
        return self

    def summary(self, *, max_listed: int = 10) -> str:
        """A few lines for the user: how many were read, and which were skipped and why.

        Parameters
        ----------
        max_listed : int
            List at most this many skipped structures; the rest are counted.
        """
        lines = [f"read {len(self.records)} structures, skipped {len(self.skipped)}"]
        for err in self.skipped[:max_listed]:
            lines.append(f"  skipped {err.structure_id}: {err.reason}")
        if len(self.skipped) > max_listed:
            lines.append(f"  ... and {len(self.skipped) - max_listed} more")
        return "\n".join(lines)
