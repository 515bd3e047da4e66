"""``write_structures``: records out as extended XYZ that :func:`read_structures` (and ase) read back."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import InvalidInputError
from screener.structures.formats import EXTXYZ_META_KEY, detect_format
from screener.structures.records import StructureRecord

__all__ = ["write_structures"]

logger = logging.getLogger(__name__)

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# info keys ase's extxyz reader treats specially (or we use ourselves): never written as plain target keys
_RESERVED_KEYS = {"lattice", "properties", "pbc", "stress", "virial", "energy", "free_energy", "forces", "uid",
                  "structure_id", EXTXYZ_META_KEY}


def write_structures(records: Iterable[StructureRecord], path: str | os.PathLike) -> Path:
    """Write records to an extended XYZ file (``.extxyz`` or ``.xyz``, optionally ``.gz``/``.bz2``).

    Each frame's comment line holds the lattice, ``pbc``, ``structure_id`` and every target as plain keys (so ase
    and other tools see them), plus a ``screener`` key with the exact id, targets and JSON-able data, which
    :func:`~screener.structures.read_structures` uses to restore the record. Site properties and the entry
    (energies) are not written.

    Parameters
    ----------
    records : iterable of StructureRecord
        What to write, in order.
    path : path
        Output file; its folder is created.

    Returns
    -------
    Path
        The file written.
    """
    from monty.io import zopen

    path = Path(path)
    if detect_format(path) != "extxyz":
        raise InvalidInputError(f"{path}: write_structures writes extended XYZ; use a .extxyz or .xyz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    n_written = 0
    # through a temporary file (same folder and suffixes, so zopen compresses alike) and os.replace: a reader, e.g.
    # another campaign started on the same candidate file, sees the old file or the new one, never a torn one, and
    # a record that cannot be written leaves the old file as it was
    # (named, not mkstemp: that makes the file private, and candidate files are shared)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{''.join(path.suffixes[-2:])}")
    try:
        with zopen(tmp, mode="wt", encoding="utf-8") as fh:
            for record in records:
                fh.write(_frame(record))
                n_written += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %d structures to %s", n_written, path)
    return path


def _frame(record: StructureRecord) -> str:
    structure = record.structure
    if not structure.is_ordered:
        raise InvalidInputError(f"{record.structure_id}: disordered structures cannot be written as extxyz")
    matrix = structure.lattice.matrix
    lattice = " ".join(repr(float(x)) for x in matrix.reshape(-1))
    parts = [
        f'Lattice="{lattice}"',
        "Properties=species:S:1:pos:R:3",
        'pbc="T T T"',
        f"structure_id={_quote(record.structure_id)}",
    ]
    for name, value in record.targets.items():
        if _PLAIN_KEY.match(name) and name.lower() not in _RESERVED_KEYS:
            parts.append(f"{name}={float(value)!r}")
    meta = {
        "structure_id": record.structure_id,
        "targets": {k: float(v) for k, v in record.targets.items()},
        "data": _jsonable(record.data),
    }
    parts.append(f"{EXTXYZ_META_KEY}={_quote('_JSON ' + json.dumps(meta, allow_nan=True))}")
    lines = [str(len(structure)), " ".join(parts)]
    for site in structure:
        x, y, z = (float(c) for c in site.coords)
        lines.append(f"{site.specie.symbol:<3s} {x!r} {y!r} {z!r}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """Quote a value for the extxyz comment line: ase's parser takes the character after a backslash verbatim."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _jsonable(value: Any) -> Any:
    """Data -> plain JSON types; values JSON cannot hold become their ``str``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    return str(value)
