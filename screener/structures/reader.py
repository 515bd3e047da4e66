"""``read_structures``: files and folders in, validated :class:`StructureRecord` objects out."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError, InvalidStructureError
from screener.structures.formats import RawItem, detect_format, parse_file
from screener.structures.records import ReadResult, StructureRecord
from screener.structures.validation import validate_structure

__all__ = ["read_structures", "collect_files", "ENTRY_ATTRIBUTE_TARGETS"]

logger = logging.getLogger(__name__)

# Targets that may be taken from a ComputedStructureEntry itself when entry.data lacks them (eV, eV/atom).
ENTRY_ATTRIBUTE_TARGETS = (
    "energy",
    "energy_per_atom",
    "uncorrected_energy",
    "uncorrected_energy_per_atom",
    "correction",
    "correction_per_atom",
)

PathLike = str | os.PathLike


def collect_files(paths: PathLike | Sequence[PathLike]) -> list[tuple[Path, str]]:
    """Expand files and folders into ``(file, format)`` pairs.

    Files given explicitly must have a known format; folders are searched recursively (sorted, hidden files
    left out) and files of unknown format in them are ignored (counted in the log).

    Raises
    ------
    InvalidInputError
        A path does not exist, a file has an unknown format, or a folder holds no structure files.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise InvalidInputError("no structure files given")
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            n_ignored = 0
            n_before = len(found)
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in file.relative_to(path).parts):
                    continue
                fmt = detect_format(file)
                if fmt is None:
                    n_ignored += 1
                else:
                    found.append((file, fmt))
            if len(found) == n_before:
                raise InvalidInputError(
                    f"{path}: folder holds no structure files (.cif, POSCAR/CONTCAR, .vasp, .extxyz, .xyz, .json, .csv)"
                )
            if n_ignored:
                logger.info("%s: ignored %d files of unknown format", path, n_ignored)
        elif path.is_file():
            fmt = detect_format(path)
            if fmt is None:
                raise InvalidInputError(
                    f"{path}: unknown structure file format (expected .cif, POSCAR/CONTCAR or .vasp, .extxyz/.xyz, "
                    ".json[.gz|.bz2] with pymatgen Structures/ComputedStructureEntries, or .csv with a 'cif' column)"
                )
            found.append((path, fmt))
        else:
            raise InvalidInputError(f"{path}: no such file or folder")
    return found


def read_structures(
    paths: PathLike | Sequence[PathLike],
    *,
    target: str | None = None,
    skip_invalid: bool = False,
    validate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ReadResult:
    """Read candidate structures from files and folders.

    Formats: CIF, POSCAR/CONTCAR (any name containing them, or ``*.vasp``), extxyz (ase), pymatgen ``Structure``
    or ``ComputedStructureEntry`` JSON (one object or a list), Alexandria dumps (``{"entries": [...]}`` or a list,
    ids from ``entry.data["mat_id"]``), pandas JSON tables with a ``structure`` column, and CSV files with a
    ``cif`` column (MP-20, perov-5). Any of them may be compressed (.gz, .bz2, .xz).

    Parameters
    ----------
    paths : path or sequence of paths
        Files and/or folders (searched recursively).
    target : str, optional
        Name of the label to attach, read from ``entry.data[target]``, a table column or an extxyz info key (for
        entries also the attributes ``energy_per_atom`` etc.); a structure without it is invalid.
    skip_invalid : bool
        Collect invalid structures (and unreadable files) in :attr:`ReadResult.skipped`, logging a warning for
        each, instead of raising on the first.
    validate : bool
        Run :func:`validate_structure` on every structure.
    progress : callable, optional
        Called as ``progress(n_files_done, n_files)`` after each file.

    Returns
    -------
    ReadResult

    Raises
    ------
    InvalidInputError
        Missing path, unknown format, or two structures with the same id.
    InvalidStructureError
        The first invalid structure or unreadable file, unless ``skip_invalid``.
    """
    files = collect_files(paths)
    result = ReadResult()
    seen: dict[str, str] = {}

    def reject(err: InvalidStructureError) -> None:
        if not skip_invalid:
            raise err
        logger.warning("skipping %s: %s", err.structure_id, err.reason)
        result.skipped.append(err)

    for n_done, (path, fmt) in enumerate(files, start=1):
        try:
            for item in parse_file(path, fmt):
                record = _to_record(item, path, target=target, validate=validate, reject=reject)
                if record is None:
                    continue
                if record.structure_id in seen:
                    raise InvalidInputError(
                        f"duplicate structure id {record.structure_id!r} (in {seen[record.structure_id]} and {path}); "
                        "ids must be unique: rename a file or give the structures distinct ids"
                    )
                seen[record.structure_id] = str(path)
                result.records.append(record)
        except InvalidStructureError as err:
            if err.structure_id != str(path):  # raised by reject(): re-raise as is
                raise
            reject(err)  # the whole file is unreadable
        if progress is not None:
            progress(n_done, len(files))

    logger.info(
        "read %d structures from %d files (%d skipped)", len(result.records), len(files), len(result.skipped)
    )
    return result


def _to_record(
    item: RawItem,
    path: Path,
    *,
    target: str | None,
    validate: bool,
    reject: Callable[[InvalidStructureError], None],
) -> StructureRecord | None:
    if item.error is not None or item.structure is None:
        reject(InvalidStructureError(item.structure_id, item.error or "no structure"))
        return None
    targets = dict(item.targets)
    if target is not None:
        value, problem = _target_value(item, target)
        if problem is not None:
            reject(InvalidStructureError(item.structure_id, problem))
            return None
        targets[target] = value
    if validate:
        try:
            validate_structure(item.structure, item.structure_id)
        except InvalidStructureError as err:
            reject(err)
            return None
    return StructureRecord(
        structure_id=item.structure_id,
        structure=item.structure,
        targets=targets,
        source=str(path),
        entry=item.entry,
        data=item.data,
    )


def _target_value(item: RawItem, target: str) -> tuple[float, str | None]:
    raw: Any = None
    if target in item.targets:
        raw = item.targets[target]
    elif target in item.data:
        raw = item.data[target]
    elif item.entry is not None and target in ENTRY_ATTRIBUTE_TARGETS:
        raw = getattr(item.entry, target)
    if raw is None:
        return math.nan, f"missing target {target!r} (available: {_available(item)})"
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return math.nan, f"target {target!r} is not a number ({raw!r:.60})"
    try:
        value = float(raw)
    except ValueError:
        return math.nan, f"target {target!r} is not a number ({raw!r:.60})"
    if not math.isfinite(value):
        return math.nan, f"target {target!r} is {value} (missing value)"
    return value, None


def _available(item: RawItem) -> str:
    names: Iterable[str] = [*item.targets, *(k for k, v in item.data.items() if isinstance(v, int | float))]
    names = list(dict.fromkeys(names))
    if item.entry is not None:
        names.extend(ENTRY_ATTRIBUTE_TARGETS)
    return ", ".join(names[:15]) + (", ..." if len(names) > 15 else "") if names else "none"
