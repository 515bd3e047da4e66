"""Parsers for the structure file formats; each turns one file into :class:`RawItem` objects.

A parser raises :class:`~screener.errors.InvalidStructureError` (id = the file path) when the whole file cannot
be read or holds no structures, and yields a ``RawItem`` with ``error`` set when one structure inside a readable
file is broken, so the caller can skip just that one.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screener.errors import InvalidStructureError

if TYPE_CHECKING:
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

__all__ = ["RawItem", "FORMATS", "detect_format", "file_stem", "parse_file", "EXTXYZ_META_KEY", "ID_KEYS"]

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".lzma")
FORMATS = ("cif", "poscar", "extxyz", "json", "csv")
ID_KEYS = ("structure_id", "material_id", "mat_id", "id")  # columns / info keys / properties holding an id
EXTXYZ_META_KEY = "screener"  # info key under which write_structures stores id, targets and data as JSON
_MAX_MESSAGE = 200


@dataclass
class RawItem:
    """One structure (or the reason it could not be read) as found in a file."""

    structure_id: str
    structure: Structure | None = None
    data: dict[str, Any] = field(default_factory=dict)
    entry: ComputedStructureEntry | None = None
    targets: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(path: Path) -> str | None:
    """Format of a structure file from its name (``cif``, ``poscar``, ``extxyz``, ``json``, ``csv``), or None.

    Compression suffixes (.gz, .bz2, .xz) are ignored. POSCAR/CONTCAR: any name containing them, or ``*.vasp``.
    """
    base = _strip_compression(path.name).lower()
    if base.endswith(".cif"):
        return "cif"
    if base.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if base.endswith(".json"):
        return "json"
    if base.endswith(".csv"):
        return "csv"
    if base.endswith(".vasp") or "poscar" in base or "contcar" in base:
        return "poscar"
    return None


def file_stem(path: Path) -> str:
    """Id of the single structure in ``path``: the name without compression and format suffixes.

    A file named exactly POSCAR or CONTCAR gets its folder in front (``mp-149/POSCAR``) so a tree of calculation
    folders gives unique ids.
    """
    base = _strip_compression(path.name)
    if base.upper() in ("POSCAR", "CONTCAR"):
        return f"{path.parent.name}/{base}" if path.parent.name else base
    for ext in (".cif", ".extxyz", ".xyz", ".json", ".csv", ".vasp"):
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


class ParseError(ValueError):
    """A parser failed; the message already says how (no type name is added)."""


def short_message(exc: BaseException) -> str:
    """First line of an exception message, at most ~200 characters, with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    if isinstance(exc, ParseError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_text(path: Path) -> str:
    from monty.io import zopen

    with zopen(path, mode="rt", encoding="utf-8") as fh:
        return fh.read()


def _unreadable(path: Path, fmt: str, exc: BaseException) -> InvalidStructureError:
    return InvalidStructureError(str(path), f"unreadable {fmt} file ({short_message(exc)})")


def _python_value(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists so data stays JSON-friendly."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _id_from(mapping: dict[str, Any]) -> str | None:
    for key in ID_KEYS:
        value = mapping.get(key)
        if value is not None and str(value).strip() != "" and not (isinstance(value, float) and math.isnan(value)):
            return str(value).strip()
    return None


def parse_file(path: Path, fmt: str) -> Iterator[RawItem]:
    """Yield the structures of ``path`` read as ``fmt`` (one of :data:`FORMATS`)."""
    parser = {
        "cif": _parse_cif_file,
        "poscar": _parse_poscar,
        "extxyz": _parse_extxyz,
        "json": _parse_json,
        "csv": _parse_csv,
    }[fmt]
    yield from parser(path)


# ---- CIF and POSCAR ----------------------------------------------------------------------------------------------


def _structures_from_cif(text: str) -> list[Structure]:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            hint = f" ({caught[-1].message})" if caught else ""
            raise ParseError(f"{short_message(exc)}{hint}") from exc
    if not structures:
        raise ParseError("no structure found in CIF")
    return structures


def _parse_cif_file(path: Path) -> Iterator[RawItem]:
    try:
        structures = _structures_from_cif(_read_text(path))
    except Exception as exc:
        raise _unreadable(path, "CIF", exc) from exc
    if len(structures) == 1:
        yield RawItem(file_stem(path), structures[0])
        return
    for index, structure in enumerate(structures):
        yield RawItem(f"{path.name}:{index}", structure)


def _parse_poscar(path: Path) -> Iterator[RawItem]:
    from pymatgen.io.vasp import Poscar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poscar = Poscar.from_str(_read_text(path), read_velocities=False)
    except Exception as exc:
        raise _unreadable(path, "POSCAR", exc) from exc
    yield RawItem(file_stem(path), poscar.structure, data={"comment": poscar.comment})


# ---- extxyz ------------------------------------------------------------------------------------------------------


def _parse_extxyz(path: Path) -> Iterator[RawItem]:
    from ase.io import read
    from monty.io import zopen

    try:
        with zopen(path, mode="rt", encoding="utf-8") as fh:
            frames = read(fh, index=":", format="extxyz")
    except Exception as exc:
        raise _unreadable(path, "extxyz", exc) from exc
    for index, atoms in enumerate(frames):
        yield _item_from_atoms(atoms, f"{path.name}:{index}")


def _item_from_atoms(atoms: Any, default_id: str) -> RawItem:
    from pymatgen.core import Lattice, Structure

    from screener.structures.validation import check_cell

    info = {k: _python_value(v) for k, v in atoms.info.items()}
    meta = info.pop(EXTXYZ_META_KEY, None)
    if isinstance(meta, dict) and "structure_id" in meta:
        structure_id = str(meta["structure_id"])
        targets = {str(k): float(v) for k, v in (meta.get("targets") or {}).items()}
        data = dict(meta.get("data") or {})
    else:
        structure_id = _id_from(info) or default_id
        targets = {}
        data = info
        calc = getattr(atoms, "calc", None)
        for key, value in (getattr(calc, "results", None) or {}).items():
            value = _python_value(value)
            if isinstance(value, int | float) and key not in data:
                data[key] = value
    cell_problem = check_cell(atoms.cell.array, atoms.pbc)
    if cell_problem is not None:
        return RawItem(structure_id, data=data, targets=targets, error=cell_problem)
    try:
        structure = Structure(
            Lattice(atoms.cell.array, pbc=tuple(bool(p) for p in atoms.pbc)),
            atoms.get_chemical_symbols(),
            atoms.positions,
            coords_are_cartesian=True,
        )
    except Exception as exc:
        reason = f"could not build structure ({short_message(exc)})"
        return RawItem(structure_id, data=data, targets=targets, error=reason)
    return RawItem(structure_id, structure, data=data, targets=targets)


# ---- JSON (pymatgen Structure / ComputedStructureEntry, Alexandria, pandas tables) -------------------------------


def _parse_json(path: Path) -> Iterator[RawItem]:
    try:
        obj = json.loads(_read_text(path))
    except Exception as exc:
        raise _unreadable(path, "JSON", exc) from exc

    if isinstance(obj, dict) and _is_single_object(obj):
        yield _item_from_object(obj, file_stem(path))
        return
    rows = _json_rows(obj)
    if rows is None:
        raise InvalidStructureError(
            str(path),
            "JSON holds no structures; expected a pymatgen Structure or ComputedStructureEntry (or a list of them), "
            "Alexandria {'entries': [...]}, or a table with a 'structure' column",
        )
    for label, row in rows:
        yield _item_from_object(row, f"{path.name}:{label}")


def _is_single_object(obj: dict[str, Any]) -> bool:
    cls = obj.get("@class", "")
    return cls.endswith("Entry") or cls in ("Structure", "IStructure") or {"lattice", "sites"} <= obj.keys()


def _json_rows(obj: Any) -> list[tuple[str, Any]] | None:
    if isinstance(obj, list):
        return [(str(i), row) for i, row in enumerate(obj)]
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("entries"), list):  # Alexandria dump
        return [(str(i), row) for i, row in enumerate(obj["entries"])]
    if {"columns", "data"} <= obj.keys() and "structure" in obj["columns"]:  # pandas orient="split"
        columns, index = obj["columns"], obj.get("index") or list(range(len(obj["data"])))
        return [(str(label), dict(zip(columns, values))) for label, values in zip(index, obj["data"])]
    if isinstance(obj.get("structure"), dict) and all(isinstance(v, dict) for v in obj.values()):  # orient="columns"
        labels = list(obj["structure"])
        return [(label, {col: values.get(label) for col, values in obj.items()}) for label in labels]
    return None


def _item_from_object(obj: Any, default_id: str) -> RawItem:
    # checked against the allow-list before pymatgen decodes anything (site properties, entry data): data, not code
    from screener._safe_json import entry_from_dict, structure_from_dict

    if not isinstance(obj, dict):
        return RawItem(default_id, error=f"expected a JSON object, got {type(obj).__name__}")
    cls = obj.get("@class", "")
    try:
        if cls == "ComputedStructureEntry" or (cls == "" and {"structure", "energy", "composition"} <= obj.keys()):
            guess_id = obj.get("entry_id") or _id_from(obj.get("data") or {}) or default_id
            try:
                entry = entry_from_dict(obj, str(guess_id))
            except Exception as exc:
                return RawItem(str(guess_id), error=f"unreadable ComputedStructureEntry ({short_message(exc)})")
            structure_id = str(entry.entry_id) if entry.entry_id else _id_from(entry.data) or default_id
            return RawItem(structure_id, entry.structure, data=dict(entry.data), entry=entry)
        if cls.endswith("Entry"):
            return RawItem(
                str(obj.get("entry_id") or default_id),
                error=f"{cls} has no structure; give ComputedStructureEntry objects",
            )
        if cls in ("Structure", "IStructure") or {"lattice", "sites"} <= obj.keys():
            structure = structure_from_dict(obj, default_id)
            props = dict(structure.properties or {})
            return RawItem(_id_from(props) or default_id, structure, data=props)
        if "structure" in obj:  # a table row: structure plus other columns
            data = {k: v for k, v in obj.items() if k != "structure"}
            structure_id = _id_from(data) or default_id
            value = obj["structure"]
            try:
                if isinstance(value, str):
                    structure = _structures_from_cif(value)[0]
                else:
                    structure = structure_from_dict(value, structure_id)
            except Exception as exc:
                return RawItem(structure_id, data=data, error=f"unreadable structure ({short_message(exc)})")
            return RawItem(structure_id, structure, data=data)
    except Exception as exc:
        return RawItem(default_id, error=f"unreadable structure ({short_message(exc)})")
    return RawItem(default_id, error="JSON object is neither a Structure nor a ComputedStructureEntry")


# ---- CSV with a CIF column (MP-20, perov-5) ----------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _csv_value(text: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    if _NUMBER.match(text):
        number = float(text)
        return int(number) if re.fullmatch(r"[+-]?\d+", text) else number
    if text.lower() in ("nan", "inf", "-inf"):
        return float(text)
    return text


def _parse_csv(path: Path) -> Iterator[RawItem]:
    csv.field_size_limit(2**31 - 1)
    try:
        text = _read_text(path)
        rows = list(csv.DictReader(text.splitlines(keepends=True)))
    except Exception as exc:
        raise _unreadable(path, "CSV", exc) from exc
    columns = list(rows[0].keys()) if rows else []
    cif_column = next((c for c in columns if c and c.strip().lower() == "cif"), None)
    if cif_column is None:
        names = ", ".join(c for c in columns if c)
        raise InvalidStructureError(str(path), f"CSV has no 'cif' column (columns: {names})")
    for index, row in enumerate(rows):
        data = {
            k: _csv_value(v or "")
            for k, v in row.items()
            if k and k != cif_column and not k.startswith("Unnamed:") and k is not None
        }
        raw_ids = {k: (row.get(k) or "").strip() or None for k in ID_KEYS}
        structure_id = _id_from(raw_ids) or f"{path.name}:{index}"
        try:
            structures = _structures_from_cif(row[cif_column] or "")
        except Exception as exc:
            yield RawItem(structure_id, data=data, error=f"unreadable CIF in row {index} ({short_message(exc)})")
            continue
        yield RawItem(structure_id, structures[0], data=data)
