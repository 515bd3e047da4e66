"""The world folder on disk: Alexandria-style ``json.bz2`` shards of ComputedStructureEntry dicts and a manifest.

Layout::

    <world>/manifest.json              counts, seeds, versions, statistics, sha256 of every file below
    <world>/pbe/part_000.json.bz2      JSON list of ComputedStructureEntry dicts (as Alexandria's dumps)
    <world>/scan/part_000.json.bz2     the same structures at the SCAN level
    <world>/references.json.bz2        elemental reference entries of both fidelities (same calculators)
    <world>/structures.extxyz          the model inputs (unlabelled), ids = structure_id: the candidate set

Every entry's ``data`` holds ``structure_id`` (links the fidelities), ``fidelity``, ``e_form`` and
``e_above_hull`` (eV/atom), which is what :class:`screener.calculators.ReplayDataset` reads.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from screener.errors import InvalidInputError
from screener.world.manifest import WORLD_FORMAT, FileRecord, WorldManifest

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedStructureEntry

__all__ = [
    "MANIFEST_NAME",
    "REFERENCES_NAME",
    "STRUCTURES_NAME",
    "file_sha256",
    "write_shards",
    "write_json_bz2",
    "read_json_bz2",
    "World",
    "read_world",
    "world_files",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
REFERENCES_NAME = "references.json.bz2"
STRUCTURES_NAME = "structures.extxyz"


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_bz2(items: Sequence[dict], path: str | Path) -> Path:
    """Write a JSON list to ``path`` with bz2 (deterministic bytes: sorted keys, no timestamps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(list(items), sort_keys=True, separators=(",", ":"), allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bz2.compress(text.encode("utf-8"), compresslevel=9))
    tmp.replace(path)
    return path


def read_json_bz2(path: str | Path) -> list[dict]:
    """Inverse of :func:`write_json_bz2`."""
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def write_shards(
    entries: Sequence[dict], directory: str | Path, fidelity: str, *, shard_size: int = 1000
) -> dict[str, FileRecord]:
    """Write entry dicts of one fidelity as ``<directory>/<fidelity>/part_<k>.json.bz2`` shards.

    Returns
    -------
    dict of str to FileRecord
        Relative path -> record.
    """
    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}")
    directory = Path(directory)
    records: dict[str, FileRecord] = {}
    for k, start in enumerate(range(0, max(len(entries), 1), shard_size)):
        chunk = entries[start : start + shard_size]
        relative = f"{fidelity}/part_{k:03d}.json.bz2"
        path = write_json_bz2(chunk, directory / relative)
        records[relative] = FileRecord(
            sha256=file_sha256(path), n_bytes=path.stat().st_size, n_entries=len(chunk), fidelity=fidelity,
            kind="entries",
        )
    return records


@dataclass
class World:
    """A world read back from disk.

    Attributes
    ----------
    directory : Path
    manifest : WorldManifest
    entries : dict of str to list of ComputedStructureEntry
        Per fidelity, in file order.
    references : dict of str to list of ComputedStructureEntry
        Elemental references per fidelity.
    """

    directory: Path
    manifest: WorldManifest
    entries: dict[str, list[ComputedStructureEntry]] = field(default_factory=dict)
    references: dict[str, list[ComputedStructureEntry]] = field(default_factory=dict)

    def structure_ids(self, fidelity: str = "pbe") -> list[str]:
        """Structure ids of the entries of one fidelity, in file order."""
        return [e.data["structure_id"] for e in self.entries.get(fidelity, [])]

    def labels(self, fidelity: str, key: str) -> dict[str, float]:
        """``structure_id -> entry.data[key]`` (e.g. ``"e_above_hull"`` or ``"e_form"``) for one fidelity."""
        return {e.data["structure_id"]: float(e.data[key]) for e in self.entries.get(fidelity, [])}

    def replay_paths(self) -> list[str]:
        """Entry shards of every fidelity: ``get_calculator("replay", path=world.replay_paths())``."""
        return [str(self.directory / p) for p in self.manifest.entry_files()]

    def hull(self, fidelity: str):
        """A :class:`~screener.hull.FidelityHull` of one fidelity with this world's entries and references."""
        from screener.hull import FidelityHull

        return FidelityHull(fidelity, self.entries[fidelity], self.references[fidelity])


def _load_manifest(directory: Path) -> WorldManifest:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise InvalidInputError(f"{directory} is not a world folder (no {MANIFEST_NAME})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidInputError(f"{path}: not JSON ({exc})") from exc
    if raw.get("format") != WORLD_FORMAT:
        raise InvalidInputError(f"{path}: format {raw.get('format')!r} is not {WORLD_FORMAT!r}")
    try:
        return WorldManifest.model_validate(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{path}: invalid manifest ({str(exc).splitlines()[0]})") from exc


def world_files(directory: str | Path, fidelity: str | None = None) -> list[Path]:
    """Entry shards of a world (of one fidelity or all), e.g. for the replay back-end."""
    directory = Path(directory)
    return [directory / p for p in _load_manifest(directory).entry_files(fidelity)]


def read_world(directory: str | Path, *, verify: bool = True, fidelities: Sequence[str] | None = None) -> World:
    """Read a world folder.

    Parameters
    ----------
    directory : path
        Folder written by :func:`screener.world.build_world`.
    verify : bool
        Check every file against the sha256 in the manifest (InvalidInputError on a mismatch).
    fidelities : sequence of str, optional
        Read only these fidelities' entries.
    """
    from screener._safe_json import entry_from_dict

    directory = Path(directory)
    manifest = _load_manifest(directory)
    if verify:
        for relative, record in manifest.files.items():
            path = directory / relative
            if not path.is_file():
                raise InvalidInputError(f"world {directory}: {relative} is missing")
            if file_sha256(path) != record.sha256:
                raise InvalidInputError(f"world {directory}: {relative} does not match its sha256 in the manifest")
    world = World(directory=directory, manifest=manifest)
    for relative in manifest.entry_files():
        fidelity = manifest.files[relative].fidelity or "pbe"
        if fidelities is not None and fidelity not in fidelities:
            continue
        items = read_json_bz2(directory / relative)
        world.entries.setdefault(fidelity, []).extend(entry_from_dict(d, f"world {relative}") for d in items)
    refs_path = directory / REFERENCES_NAME
    if refs_path.is_file():
        for item in read_json_bz2(refs_path):
            entry = entry_from_dict(item, f"world {REFERENCES_NAME}")
            world.references.setdefault(entry.data["fidelity"], []).append(entry)
    return world
