"""Sharded graph store: millions of crystal graphs in a few large memory-mapped files, featurised once, resumable.

The per-structure ``.npz`` cache (:mod:`screener.graphs.cache`) costs one file (and one ``open``) per crystal: fine
for a campaign of a few thousand candidates, a wall for 4.5 M Alexandria entries. A store instead holds shards of
``shard_size`` input entries each::

    <store>/store.json                      StoreManifest: inputs, finished shards, skipped entries (atomic writes)
    <store>/shard_000000/graphs.npy         int32, the packed graphs (:func:`~screener.graphs.cache.pack_graph`)
                                            of the shard's *new* structures, concatenated
    <store>/shard_000000/offsets.npy        int64 (n_graphs + 1,): graph g is graphs[offsets[g]:offsets[g + 1]]
    <store>/shard_000000/keys.npy           uint8 (n_graphs, 32): content hash of each graph (graph_key)
    <store>/shard_000000/refs.npy           int32 (n_entries, 2): (shard, graph) of every entry's graph
    <store>/shard_000000/labels.npy         float64 (n_entries, n_targets): the requested labels, NaN if missing
    <store>/shard_000000/ids.json           the entries' structure ids
    <store>/shard_000000/sources.npy        int64 (n_entries, 2): (input file, item index) of every entry

Content addressing: the key of a structure is :func:`~screener.graphs.cache.graph_key` (geometry, elements,
``n_neighbors``, graph format). A structure whose key is already in the store is not featurised again; its entry
points (``refs``) at the existing graph, possibly in an earlier shard.

Shards are cut by *input position*: shard ``k`` holds the entries at stream positions ``[k S, (k + 1) S)`` (invalid
ones skipped), so the layout is a pure function of the inputs. A shard is written into a temporary folder, renamed
into place and only then listed in ``store.json`` (written through a temporary file and :func:`os.replace`): after a
kill, finished shards are kept, anything not listed is removed and redone, and input files wholly inside finished
shards are not even read again.

Invalid entries (an unreadable entry in shard 37) are reported with their input file, item index, id and shard;
with ``skip_invalid`` they are recorded in ``store.json`` and skipped, otherwise the first one stops the build (with
every finished shard kept).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from screener.errors import InvalidInputError, InvalidStructureError
from screener.graphs.cache import GRAPH_FORMAT_VERSION, graph_key, pack_graph, unpack_graph
from screener.graphs.graph import CrystalGraph

__all__ = [
    "STORE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "StoreManifest",
    "ShardInfo",
    "SkippedEntry",
    "GraphStore",
    "StoreShard",
    "build_store",
    "build_store_from_structures",
    "is_store",
]

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
_SHARD_DIR = re.compile(r"^shard_\d{6}(\.tmp)?$")
_CHUNK = 128  # entries per worker task

ProgressCallback = Callable[[int, int], None]


class InputFile(BaseModel):
    """One input file of a store (identity checked when a build resumes)."""

    path: str
    n_bytes: int
    format: str
    n_items: int | None = Field(None, description="Items in the file, once it has been read to its end.")


class ShardInfo(BaseModel):
    """A finished shard."""

    name: str
    index: int
    start: int = Field(..., description="First input position it covers.")
    stop: int = Field(..., description="One past its last input position.")
    n_entries: int
    n_graphs: int = Field(..., description="Graphs stored in it (entries whose structure was new).")
    n_bytes: int


class SkippedEntry(BaseModel):
    """An input entry left out of the store (``skip_invalid``)."""

    file: str
    index: int = Field(..., description="Item index in the file (-1: the whole file was unreadable).")
    structure_id: str
    shard: str
    reason: str


class StoreManifest(BaseModel):
    """``store.json``."""

    model_config = ConfigDict(extra="allow")

    format_version: int = STORE_FORMAT_VERSION
    graph_format_version: int = GRAPH_FORMAT_VERSION
    n_neighbors: int = 24
    targets: list[str] = Field(default_factory=list, description="Label columns of labels.npy.")
    shard_size: int = 10_000
    inputs: list[InputFile] = Field(default_factory=list)
    shards: list[ShardInfo] = Field(default_factory=list)
    skipped: list[SkippedEntry] = Field(default_factory=list)
    complete: bool = False

    @property
    def n_entries(self) -> int:
        return sum(s.n_entries for s in self.shards)

    @property
    def n_graphs(self) -> int:
        return sum(s.n_graphs for s in self.shards)


def is_store(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a graph-store folder (holds ``store.json``)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def _write_manifest(directory: Path, manifest: StoreManifest) -> None:
    tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=1))
    os.replace(tmp, directory / MANIFEST_NAME)


def _read_manifest(directory: Path) -> StoreManifest:
    path = directory / MANIFEST_NAME
    try:
        manifest = StoreManifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"{directory}: not a graph store (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: unreadable store manifest ({str(exc).splitlines()[0]})") from None
    if manifest.format_version != STORE_FORMAT_VERSION or manifest.graph_format_version != GRAPH_FORMAT_VERSION:
        raise InvalidInputError(
            f"{directory}: store format {manifest.format_version}/graph format {manifest.graph_format_version}, "
            f"this screener reads {STORE_FORMAT_VERSION}/{GRAPH_FORMAT_VERSION}; featurise again into a new folder"
        )
    return manifest


# ---- reading -----------------------------------------------------------------------------------------------------


class StoreShard:
    """One finished shard, memory-mapped (pages are read on access; nothing is loaded whole)."""

    def __init__(self, directory: Path, info: ShardInfo) -> None:
        self.directory = directory
        self.info = info
        try:
            self.graphs = np.load(directory / "graphs.npy", mmap_mode="r")
            self.offsets = np.load(directory / "offsets.npy", mmap_mode="r")
            self.refs = np.load(directory / "refs.npy", mmap_mode="r")
            self.labels = np.load(directory / "labels.npy", mmap_mode="r")
            self.sources = np.load(directory / "sources.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{directory}: unreadable shard ({str(exc).splitlines()[0]})") from None
        if self.refs.shape[0] != info.n_entries or self.offsets.shape[0] != info.n_graphs + 1:
            raise InvalidInputError(f"{directory}: shard does not match {MANIFEST_NAME} (damaged; featurise again)")

    def __len__(self) -> int:
        return self.info.n_entries

    @cached_property
    def ids(self) -> list[str]:
        try:
            ids = json.loads((self.directory / "ids.json").read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.directory / 'ids.json'}: unreadable ({exc})") from None
        if not isinstance(ids, list) or len(ids) != self.info.n_entries:
            raise InvalidInputError(f"{self.directory / 'ids.json'}: does not match the shard")
        return [str(i) for i in ids]

    def keys(self) -> NDArray[np.uint8]:
        return np.load(self.directory / "keys.npy")

    def packed(self, row: int) -> NDArray[np.int32]:
        """The packed graph stored at ``row`` of this shard."""
        return np.asarray(self.graphs[int(self.offsets[row]) : int(self.offsets[row + 1])])


class GraphStore:
    """A graph store folder opened for reading.

    Parameters
    ----------
    directory : path
        Folder written by :func:`build_store` (finished shards are readable while a build is still running).

    Examples
    --------
    >>> store = GraphStore("alexandria-store")  # doctest: +SKIP
    >>> for structure_id, graph, labels in store.iter_shard(0):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.manifest = _read_manifest(self.directory)
        self._shards: dict[int, StoreShard] = {}

    def __repr__(self) -> str:
        return f"GraphStore({str(self.directory)!r}, {len(self)} entries in {self.n_shards} shards)"

    def __len__(self) -> int:
        return self.manifest.n_entries

    @property
    def n_shards(self) -> int:
        return len(self.manifest.shards)

    @property
    def targets(self) -> list[str]:
        return list(self.manifest.targets)

    @property
    def n_neighbors(self) -> int:
        return self.manifest.n_neighbors

    def shard(self, k: int) -> StoreShard:
        """Shard ``k`` (opened once, memory-mapped)."""
        if k not in self._shards:
            info = self.manifest.shards[k]
            self._shards[k] = StoreShard(self.directory / info.name, info)
        return self._shards[k]

    def graph(self, k: int, row: int, structure_id: str = "") -> CrystalGraph:
        """Graph of entry ``row`` of shard ``k`` (following its reference to where the graph is stored)."""
        shard = self.shard(k)
        g_shard, g_row = (int(x) for x in shard.refs[row])
        where = f"{shard.directory} entry {row}"
        try:
            return unpack_graph(self.shard(g_shard).packed(g_row), structure_id=structure_id)
        except (ValueError, IndexError, KeyError) as exc:
            raise InvalidStructureError(f"{where} ({structure_id})", f"unreadable graph ({exc})") from None

    def label_column(self, target: str) -> int:
        try:
            return self.manifest.targets.index(target)
        except ValueError:
            raise InvalidInputError(
                f"{self.directory}: no label {target!r} in the store (has: {', '.join(self.targets) or 'none'}); "
                "featurise with --target"
            ) from None

    def labels(self, target: str) -> NDArray[np.float64]:
        """One label of every entry, in store order (8 bytes per entry: held in memory)."""
        col = self.label_column(target)
        return np.concatenate([np.asarray(self.shard(k).labels[:, col]) for k in range(self.n_shards)] or [np.zeros(0)])

    def iter_shard(
        self, k: int, rows: Sequence[int] | None = None, *, skip_invalid: bool = False,
        on_skip: Callable[[InvalidStructureError], None] | None = None,
    ) -> Iterator[tuple[str, CrystalGraph, NDArray[np.float64]]]:
        """``(structure_id, graph, labels)`` of the entries of shard ``k`` (all, or ``rows`` in that order).

        An unreadable graph raises :class:`InvalidStructureError` naming the shard and entry, or with
        ``skip_invalid`` is passed to ``on_skip`` (default: a warning) and left out.
        """
        shard = self.shard(k)
        ids = shard.ids
        for row in range(len(shard)) if rows is None else rows:
            try:
                graph = self.graph(k, int(row), ids[row])
            except InvalidStructureError as exc:
                if not skip_invalid:
                    raise
                (on_skip or (lambda e: logger.warning("skipping %s", e)))(exc)
                continue
            yield ids[row], graph, np.asarray(shard.labels[row])


# ---- featurising -------------------------------------------------------------------------------------------------

# A payload is what a worker featurises: ("json", object, default_id) for JSON rows (decoded in the worker, which
# is the expensive part) or ("raw", RawItem) for the other formats (parsed by the reader in this process).
_Payload = tuple[Any, ...]
# Worker outcome: (structure_id, key bytes, packed graph or None when the key was known, labels) or (id, reason).
_Outcome = tuple[str, bytes, "NDArray[np.int32] | None", tuple[float, ...]] | tuple[str, str]

_KNOWN_KEYS: set[bytes] = set()


def _init_worker(known: set[bytes]) -> None:
    """Keys already stored; each worker adds the ones it builds (a duplicate is built at most once per worker)."""
    global _KNOWN_KEYS
    _KNOWN_KEYS = set(known)


def _featurise_one(
    payload: _Payload, n_neighbors: int, targets: Sequence[str], validate: bool, dedupe: bool = True
) -> _Outcome:
    from screener.graphs.build import graph_from_arrays, structure_arrays
    from screener.structures.reader import _target_value
    from screener.structures.validation import validate_structure

    if payload[0] == "json":
        from screener.structures.formats import _item_from_object

        item = _item_from_object(payload[1], payload[2])
    else:
        item = payload[1]
    if item.error is not None or item.structure is None:
        return item.structure_id, item.error or "no structure"
    try:
        if validate:
            validate_structure(item.structure, item.structure_id)
        arrays = structure_arrays(item.structure, item.structure_id)
        key = bytes.fromhex(
            graph_key(arrays.lattice_matrix, arrays.frac_coords, arrays.atomic_numbers, n_neighbors, arrays.pbc)
        )
        if dedupe and key in _KNOWN_KEYS:
            packed = None
        else:
            packed = pack_graph(graph_from_arrays(arrays, n_neighbors=n_neighbors))
            # outcomes are consumed in input order, so a later duplicate always finds this graph stored
            if dedupe:
                _KNOWN_KEYS.add(key)
    except InvalidStructureError as exc:
        return item.structure_id, exc.reason
    labels = []
    for target in targets:
        value, problem = _target_value(item, target)
        labels.append(math.nan if problem is not None else value)
    return item.structure_id, key, packed, tuple(labels)


def _featurise_chunk(
    payloads: list[_Payload], n_neighbors: int, targets: Sequence[str], validate: bool, dedupe: bool = True
) -> list[_Outcome]:
    """Worker: outcomes of ``payloads`` in order (``dedupe=False``: always build, for ranking)."""
    out = []
    for payload in payloads:
        try:
            out.append(_featurise_one(payload, n_neighbors, targets, validate, dedupe))
        except Exception as exc:  # noqa: BLE001 - one bad entry must not end hours of work; it is reported
            from screener.structures.formats import short_message

            sid = payload[2] if payload[0] == "json" else payload[1].structure_id
            out.append((sid, f"unreadable entry ({short_message(exc)})"))
    return out


def _iter_payloads(path: Path, fmt: str) -> Iterator[_Payload]:
    """The items of one file as worker payloads; an unreadable file raises InvalidStructureError(str(path), ...)."""
    from screener.structures.formats import file_stem, parse_file

    if fmt == "json":
        from screener.structures.formats import _is_single_object, _json_rows, _read_text, _unreadable

        try:
            obj = json.loads(_read_text(path))
        except Exception as exc:  # noqa: BLE001 - reported as an unreadable file
            raise _unreadable(path, "JSON", exc) from exc
        if isinstance(obj, dict) and _is_single_object(obj):
            yield ("json", obj, file_stem(path))
            return
        rows = _json_rows(obj)
        if rows is None:
            raise InvalidStructureError(str(path), "JSON holds no structures")
        for label, row in rows:
            yield ("json", row, f"{path.name}:{label}")
        return
    for item in parse_file(path, fmt):
        yield ("raw", item)


@dataclass
class _ShardBuffer:
    index: int
    start: int
    stop: int
    ids: list[str]
    refs: list[tuple[int, int]]
    labels: list[tuple[float, ...]]
    sources: list[tuple[int, int]]
    graphs: list[NDArray[np.int32]]
    keys: list[bytes]

    @classmethod
    def empty(cls, index: int, shard_size: int) -> _ShardBuffer:
        return cls(index, index * shard_size, (index + 1) * shard_size, [], [], [], [], [], [])


def _write_shard(directory: Path, buf: _ShardBuffer, n_targets: int, stop: int) -> ShardInfo:
    name = f"shard_{buf.index:06d}"
    tmp = directory / f"{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    lengths = np.array([g.shape[0] for g in buf.graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    graphs = np.concatenate(buf.graphs).astype(np.int32) if buf.graphs else np.zeros(0, dtype=np.int32)
    np.save(tmp / "graphs.npy", graphs)
    np.save(tmp / "offsets.npy", offsets)
    keys = np.frombuffer(b"".join(buf.keys), dtype=np.uint8).reshape(len(buf.keys), 32)
    np.save(tmp / "keys.npy", keys)
    np.save(tmp / "refs.npy", np.array(buf.refs, dtype=np.int32).reshape(len(buf.refs), 2))
    np.save(tmp / "labels.npy", np.array(buf.labels, dtype=np.float64).reshape(len(buf.labels), n_targets))
    np.save(tmp / "sources.npy", np.array(buf.sources, dtype=np.int64).reshape(len(buf.sources), 2))
    (tmp / "ids.json").write_text(json.dumps(buf.ids))
    n_bytes = sum(p.stat().st_size for p in tmp.iterdir())
    os.replace(tmp, directory / name)
    return ShardInfo(
        name=name, index=buf.index, start=buf.start, stop=stop, n_entries=len(buf.ids), n_graphs=len(buf.graphs),
        n_bytes=n_bytes,
    )


def build_store(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    directory: str | os.PathLike[str],
    *,
    targets: Sequence[str] = (),
    n_neighbors: int = 24,
    shard_size: int = 10_000,
    n_jobs: int | None = None,
    skip_invalid: bool = False,
    validate: bool = True,
    progress: ProgressCallback | None = None,
    mp_context: str | None = None,
) -> StoreManifest:
    """Featurise a stream of structure files into a sharded graph store (or finish an interrupted build).

    Parameters
    ----------
    inputs : path or sequence of paths
        Files/folders in any format of :func:`screener.structures.read_structures` (Alexandria ``json.bz2``
        shards included), read in order, one file at a time.
    directory : path
        Store folder. An existing store is resumed (same inputs in the same order, same settings) or, when
        complete, returned as it is.
    targets : sequence of str
        Labels to keep (``entry.data`` keys, table columns, ...); a missing one is stored as NaN.
    n_neighbors : int
        Neighbours per site of the graphs (the model's).
    shard_size : int
        Input entries per shard (10,000 small crystals is ~10-20 MB).
    n_jobs : int or None
        Worker processes (None or -1: all cores; 1: this process only).
    skip_invalid : bool
        Record invalid entries in ``store.json`` (file, index, id, shard, reason) and go on; otherwise the first one
        raises (finished shards are kept and a re-run resumes after them).
    validate : bool
        Run :func:`~screener.structures.validate_structure` on every structure (as the readers do).
    progress : callable(n_done, n_total), optional
        Called after each input file (n_total = number of files).
    mp_context : str, optional
        Multiprocessing start method.

    Returns
    -------
    StoreManifest

    Raises
    ------
    InvalidStructureError
        An invalid entry without ``skip_invalid`` (message: ``<file> entry <i> (<id>) in shard_<k>: <reason>``).
    InvalidInputError
        Missing inputs, or a store folder built from other inputs or settings.
    """
    from screener.structures import collect_files

    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}")
    files = collect_files(inputs)
    directory = Path(directory)
    wanted = [InputFile(path=str(p.resolve()), n_bytes=p.stat().st_size, format=fmt) for p, fmt in files]
    manifest = _open_manifest(directory, wanted, list(targets), n_neighbors, shard_size)
    if manifest.complete:
        return manifest

    def items(done_pos: int, end: list[int]) -> Iterator[tuple[int, int, int, Any]]:
        pos = 0
        for file_idx, ((path, fmt), record) in enumerate(zip(files, manifest.inputs, strict=True)):
            if record.n_items is not None and pos + record.n_items <= done_pos:
                pos += record.n_items  # wholly inside finished shards: not read again
            else:
                n_items = 0
                try:
                    for item_idx, payload in enumerate(_iter_payloads(path, fmt)):
                        n_items += 1
                        if pos >= done_pos:
                            yield pos, file_idx, item_idx, payload
                        pos += 1
                except InvalidStructureError as exc:
                    if exc.structure_id != str(path):
                        raise
                    yield pos, file_idx, -1, exc  # the whole file is unreadable
                record.n_items = n_items
            end[0] = pos
            if progress is not None:
                progress(file_idx + 1, len(files))

    return _fill_store(directory, manifest, [Path(p).name for p, _ in files], items, n_jobs=n_jobs,
                       skip_invalid=skip_invalid, validate=validate, mp_context=mp_context)


def build_store_from_structures(
    structures: Sequence[tuple[str, Any]],
    directory: str | os.PathLike[str],
    *,
    n_neighbors: int = 24,
    shard_size: int = 10_000,
    n_jobs: int | None = 1,
    validate: bool = False,
    progress: ProgressCallback | None = None,
) -> StoreManifest:
    """Featurise structures held in memory (a campaign's candidates) into a graph store, or finish/reuse one.

    The store's single input is the list of ids (its SHA-256 is recorded), so the same structures in the same order
    resume an interrupted build or return the finished store; other ids are refused. A structure that cannot be
    featurised is recorded in ``store.json`` as skipped (the caller builds it the usual way and reports its error).

    Parameters
    ----------
    structures : sequence of (structure_id, Structure)
    directory : path
        Store folder (e.g. ``<campaign>/graphs/store``).
    n_neighbors, shard_size, n_jobs, validate, progress
        As in :func:`build_store` (``progress(shards done, shards total)``).

    Returns
    -------
    StoreManifest
    """
    import hashlib

    from screener.structures.formats import RawItem

    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}")
    directory = Path(directory)
    digest = hashlib.sha256("\n".join(sid for sid, _ in structures).encode()).hexdigest()
    wanted = [InputFile(path=f"structures:sha256:{digest}", n_bytes=len(structures), format="structures",
                        n_items=len(structures))]
    manifest = _open_manifest(directory, wanted, [], n_neighbors, shard_size)
    if manifest.complete:
        return manifest
    n_shards = max(1, math.ceil(len(structures) / shard_size))

    def items(done_pos: int, end: list[int]) -> Iterator[tuple[int, int, int, Any]]:
        for pos in range(done_pos, len(structures)):
            sid, structure = structures[pos]
            yield pos, 0, pos, ("raw", RawItem(str(sid), structure))
            if progress is not None and (pos + 1) % shard_size == 0:
                progress((pos + 1) // shard_size, n_shards)
        end[0] = len(structures)

    out = _fill_store(directory, manifest, ["structures"], items, n_jobs=n_jobs, skip_invalid=True, validate=validate,
                      mp_context=None)
    if progress is not None:
        progress(n_shards, n_shards)
    return out


def _open_manifest(directory: Path, wanted: list[InputFile], targets: list[str], n_neighbors: int,
                   shard_size: int) -> StoreManifest:
    """The manifest of the store at ``directory`` (checked against the inputs and settings), or a new one."""
    if is_store(directory):
        manifest = _read_manifest(directory)
        old = [(f.path, f.n_bytes) for f in manifest.inputs]
        if old != [(f.path, f.n_bytes) for f in wanted]:
            raise InvalidInputError(
                f"{directory}: this store was built from other input files ({len(old)} files, first "
                f"{old[0][0] if old else '-'}); use a new folder"
            )
        settings = (manifest.n_neighbors, manifest.targets, manifest.shard_size)
        if settings != (n_neighbors, targets, shard_size):
            raise InvalidInputError(
                f"{directory}: built with n_neighbors={manifest.n_neighbors}, targets={manifest.targets}, "
                f"shard_size={manifest.shard_size}; use the same or a new folder"
            )
        return manifest
    directory.mkdir(parents=True, exist_ok=True)
    manifest = StoreManifest(n_neighbors=n_neighbors, targets=targets, shard_size=shard_size, inputs=wanted)
    _write_manifest(directory, manifest)
    return manifest


def _fill_store(
    directory: Path,
    manifest: StoreManifest,
    names: list[str],
    items: Callable[[int, list[int]], Iterator[tuple[int, int, int, Any]]],
    *,
    n_jobs: int | None,
    skip_invalid: bool,
    validate: bool,
    mp_context: str | None,
) -> StoreManifest:
    """Featurise ``items(done_pos, end)`` (``(position, input index, item index, payload or the error of a wholly
    unreadable input)``, from ``done_pos`` on; ``end[0]``: positions in all) into the shards after the finished ones.
    """
    from screener.graphs.parallel import available_cpus

    n_neighbors, targets, shard_size = manifest.n_neighbors, list(manifest.targets), manifest.shard_size
    # Anything not listed in the manifest is an interrupted shard: redone.
    listed = {s.name for s in manifest.shards}
    for child in directory.iterdir():
        if child.is_dir() and _SHARD_DIR.match(child.name) and child.name not in listed:
            shutil.rmtree(child)
    done_pos = manifest.shards[-1].stop if manifest.shards else 0
    manifest.skipped = [s for s in manifest.skipped if _skip_position(manifest, s) < done_pos]

    # content index of what is stored: key -> (shard, graph row)
    index: dict[bytes, tuple[int, int]] = {}
    for info in manifest.shards:
        keys = StoreShard(directory / info.name, info).keys()
        for row, key in enumerate(keys):
            index.setdefault(key.tobytes(), (info.index, row))

    n_workers = available_cpus() if n_jobs in (None, -1) else int(n_jobs)
    if n_workers < 1:
        raise ValueError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
    pool = None
    if n_workers > 1:
        # imported once here so forked workers inherit them instead of each importing pymatgen's entry machinery
        import pymatgen.entries.computed_entries  # noqa: F401

        import screener.graphs.build  # noqa: F401
        import screener.structures.validation  # noqa: F401

        context = multiprocessing.get_context(mp_context) if mp_context else None
        pool = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(set(index),))
    else:
        _init_worker(set(index))

    n_targets = len(targets)
    buf = _ShardBuffer.empty(done_pos // shard_size, shard_size)
    in_flight: deque[tuple[Future | list[_Outcome], list[tuple[int, int, int]]]] = deque()

    def flush(stop: int) -> None:
        nonlocal buf
        info = _write_shard(directory, buf, n_targets, stop)
        manifest.shards.append(info)
        _write_manifest(directory, manifest)
        logger.info("wrote %s (%d entries, %d new graphs)", info.name, info.n_entries, info.n_graphs)
        buf = _ShardBuffer.empty(buf.index + 1, shard_size)

    def consume(outcomes: list[_Outcome], where: list[tuple[int, int, int]]) -> None:
        for outcome, (pos, file_idx, item_idx) in zip(outcomes, where, strict=True):
            while pos >= buf.stop:
                flush(buf.stop)
            if len(outcome) == 2:
                sid, reason = outcome  # type: ignore[misc]
                invalid(file_idx, item_idx, str(sid), str(reason))
                continue
            sid, key, packed, labels = outcome  # type: ignore[misc]
            ref = index.get(key)
            if ref is None:
                if packed is None:  # pragma: no cover - workers only skip keys that are stored
                    raise RuntimeError("worker skipped a graph that is not stored")
                ref = (buf.index, len(buf.graphs))
                index[key] = ref
                buf.graphs.append(packed)
                buf.keys.append(key)
            buf.ids.append(str(sid))
            buf.refs.append(ref)
            buf.labels.append(labels)
            buf.sources.append((file_idx, item_idx))

    def invalid(file_idx: int, item_idx: int, sid: str, reason: str) -> None:
        name = names[file_idx]
        shard = f"shard_{buf.index:06d}"
        where = f"{name} entry {item_idx} ({sid}) in {shard}" if item_idx >= 0 else f"{name} in {shard}"
        if not skip_invalid:
            raise InvalidStructureError(where, reason)
        logger.warning("skipping %s: %s", where, reason)
        manifest.skipped.append(SkippedEntry(file=name, index=item_idx, structure_id=sid, shard=shard, reason=reason))

    def drain(limit: int) -> None:
        while len(in_flight) > limit:
            work, where = in_flight.popleft()
            consume(work.result() if isinstance(work, Future) else work, where)

    def submit(payloads: list[_Payload], where: list[tuple[int, int, int]]) -> None:
        if pool is None:
            in_flight.append((_featurise_chunk(payloads, n_neighbors, targets, validate), where))
        else:
            in_flight.append((pool.submit(_featurise_chunk, payloads, n_neighbors, targets, validate), where))
        drain(2 * n_workers)  # bounded memory: a few chunks per worker in flight, consumed in input order

    try:
        end = [done_pos]
        payloads: list[_Payload] = []
        where: list[tuple[int, int, int]] = []
        for pos, file_idx, item_idx, payload in items(done_pos, end):
            if isinstance(payload, InvalidStructureError):  # a whole input unreadable: reported in input order
                if payloads:
                    submit(payloads, where)
                    payloads, where = [], []
                drain(0)
                invalid(file_idx, -1, payload.structure_id, payload.reason)
                continue
            payloads.append(payload)
            where.append((pos, file_idx, item_idx))
            if len(payloads) >= _CHUNK:
                submit(payloads, where)
                payloads, where = [], []
        if payloads:
            submit(payloads, where)
        drain(0)
        pos = end[0]
        if buf.ids or not manifest.shards or pos > buf.start:
            flush(max(pos, buf.start))  # the last (possibly short) shard
        manifest.complete = True
        _write_manifest(directory, manifest)
    finally:
        if pool is not None:
            for work, _ in in_flight:
                if isinstance(work, Future):
                    work.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
    logger.info(
        "graph store %s: %d entries, %d graphs, %d shards, %d skipped", directory, manifest.n_entries,
        manifest.n_graphs, len(manifest.shards), len(manifest.skipped),
    )
    return manifest


def _skip_position(manifest: StoreManifest, skipped: SkippedEntry) -> int:
    """Input position of a skipped entry (from its shard), so a resumed build keeps only those of finished shards."""
    k = int(skipped.shard.rsplit("_", 1)[-1])
    return k * manifest.shard_size
