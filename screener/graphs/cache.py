"""On-disk cache of crystal graphs: one ``.npz`` file per graph, keyed by a content hash of the structure.

Key
---
``sha256`` over: the graph-format version (:data:`GRAPH_FORMAT_VERSION`), ``n_neighbors``, the pbc flags, the
lattice matrix and the fractional coordinates (both rounded to 1e-8, ``-0.0`` folded into ``0.0``, float64
little-endian) and the atomic numbers (int16). The graph depends on nothing else, so two structures with the same
key have the same graph. The structure id is *not* part of the key (the caller's id is set on the returned graph).

File layout
-----------
``<directory>/<key[:2]>/<key>.npz`` holding one int32 array ``graph``: a 4-number header
``(GRAPH_FORMAT_VERSION, n_atoms, n_edges, n_elements)`` followed by ``atomic_numbers``, ``edge_src``,
``edge_dst``, ``edge_rank``, ``comp_numbers`` and ``comp_fractions`` (float32 bits viewed as int32). One member
instead of six keeps reads cheap; the reader parses this plain layout straight from the bytes (falling back to
``np.load`` for anything else), because ``np.load`` costs about as much as building a small graph.

Concurrency: a writer writes a temporary file (unique per process, thread and call) in the same folder and renames it
with :func:`os.replace` (atomic on POSIX and Windows), so readers see either no file or a complete one, and
concurrent writers of the same key are harmless (they write identical bytes). Unreadable files are treated as misses
and overwritten on the next put.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from screener.graphs.graph import CrystalGraph

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["GraphCache", "GRAPH_FORMAT_VERSION", "graph_key", "pack_graph", "unpack_graph"]

logger = logging.getLogger(__name__)

#: Bump when the graph construction or the file layout changes; old entries then simply miss.
GRAPH_FORMAT_VERSION: int = 1
_HEADER = 4
_ROUND_DECIMALS = 8  # coordinates and lattice rounded to 1e-8 before hashing


def _rounded_bytes(values: NDArray[np.floating]) -> bytes:
    rounded = np.round(np.asarray(values, dtype=np.float64), _ROUND_DECIMALS) + 0.0  # + 0.0 folds -0.0 into 0.0
    return np.ascontiguousarray(rounded, dtype="<f8").tobytes()


def graph_key(
    lattice_matrix: NDArray[np.floating],
    frac_coords: NDArray[np.floating],
    atomic_numbers: NDArray[np.integer],
    n_neighbors: int,
    pbc: tuple[bool, bool, bool] | NDArray[np.bool_] = (True, True, True),
) -> str:
    """Content hash (hex sha256) of a structure's geometry and elements for the graph cache.

    Parameters
    ----------
    lattice_matrix : ndarray, shape (3, 3)
        Lattice vectors as rows, Angstrom.
    frac_coords : ndarray, shape (n_sites, 3)
    atomic_numbers : ndarray, shape (n_sites,)
    n_neighbors : int
    pbc : 3 bools

    Returns
    -------
    str
        64 hex characters.
    """
    h = hashlib.sha256()
    h.update(f"screener-graph-v{GRAPH_FORMAT_VERSION};k={int(n_neighbors)};".encode())
    h.update(np.asarray(pbc, dtype=np.uint8).tobytes())
    h.update(_rounded_bytes(lattice_matrix))
    h.update(np.ascontiguousarray(atomic_numbers, dtype="<i2").tobytes())
    h.update(_rounded_bytes(frac_coords))
    return h.hexdigest()


def pack_graph(graph: CrystalGraph) -> NDArray[np.int32]:
    """One int32 array holding the whole graph (see the module docstring for the layout)."""
    header = np.array(
        [GRAPH_FORMAT_VERSION, graph.n_atoms, graph.n_edges, len(graph.comp_numbers)], dtype=np.int32
    )
    return np.concatenate(
        [
            header,
            graph.atomic_numbers.astype(np.int32),
            graph.edge_src.astype(np.int32),
            graph.edge_dst.astype(np.int32),
            graph.edge_rank.astype(np.int32),
            graph.comp_numbers.astype(np.int32),
            np.ascontiguousarray(graph.comp_fractions, dtype=np.float32).view(np.int32),
        ]
    )


def unpack_graph(packed: NDArray[np.int32], structure_id: str = "") -> CrystalGraph:
    """Inverse of :func:`pack_graph`; raises ValueError on a wrong version or length."""
    packed = np.asarray(packed)
    if packed.dtype != np.int32 or packed.ndim != 1 or packed.shape[0] < _HEADER:
        raise ValueError("not a packed crystal graph")
    version, n_atoms, n_edges, n_comp = (int(x) for x in packed[:_HEADER])
    if version != GRAPH_FORMAT_VERSION:
        raise ValueError(f"graph format version {version}, expected {GRAPH_FORMAT_VERSION}")
    if packed.shape[0] != _HEADER + n_atoms + 3 * n_edges + 2 * n_comp:
        raise ValueError("packed crystal graph has the wrong length")
    bounds = np.cumsum([_HEADER, n_atoms, n_edges, n_edges, n_edges, n_comp, n_comp])
    z, src, dst, rank, comp, frac = (packed[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
    return CrystalGraph(
        atomic_numbers=z.astype(np.int16),
        edge_src=src.copy(),
        edge_dst=dst.copy(),
        edge_rank=rank.astype(np.int8),
        comp_numbers=comp.astype(np.int16),
        comp_fractions=frac.view(np.float32).copy(),
        structure_id=structure_id,
    )


_TMP_COUNTER = itertools.count()
_NPY_HEADER = re.compile(rb"\{'descr': '<i4', 'fortran_order': False, 'shape': \((\d+),\), \}")


class _NotFastPath(Exception):
    """The file is not the plain layout :func:`_read_stored_npz` reads; use ``np.load``."""


def _read_stored_npz(data: bytes) -> NDArray[np.int32]:
    """Read the ``graph`` member of an ``np.savez`` file from its bytes, without ``zipfile`` (about 5x faster).

    Handles exactly what :meth:`GraphCache.put_by_key` writes (first member ``graph.npy``, stored uncompressed, a
    version 1 .npy header for a 1-d little-endian int32 array); anything else raises :class:`_NotFastPath` and the
    caller falls back to ``np.load``. A file cut short raises ValueError.
    """
    if data[:4] != b"PK\x03\x04" or int.from_bytes(data[8:10], "little") != 0:  # local header, stored
        raise _NotFastPath
    name_len = int.from_bytes(data[26:28], "little")
    extra_len = int.from_bytes(data[28:30], "little")
    if data[30 : 30 + name_len] != b"graph.npy":
        raise _NotFastPath
    start = 30 + name_len + extra_len
    if data[start : start + 8] != b"\x93NUMPY\x01\x00":
        raise _NotFastPath
    header_len = int.from_bytes(data[start + 8 : start + 10], "little")
    match = _NPY_HEADER.match(data, start + 10, start + 10 + header_len)
    if match is None:
        raise _NotFastPath
    count = int(match.group(1))
    offset = start + 10 + header_len
    if offset + 4 * count > len(data):
        raise ValueError("graph cache file is truncated")
    return np.frombuffer(data, dtype="<i4", count=count, offset=offset).astype(np.int32)


class GraphCache:
    """Folder of cached crystal graphs keyed by structure content.

    Parameters
    ----------
    directory : str or Path
        Created if missing. Safe to share between processes and runs.

    Examples
    --------
    >>> import tempfile
    >>> from pymatgen.core import Lattice, Structure
    >>> from screener.graphs import build_graph
    >>> cache = GraphCache(tempfile.mkdtemp())
    >>> s = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    >>> cache.get(s) is None
    True
    >>> _ = cache.put(s, build_graph(s))
    >>> cache.get(s, structure_id="Po").n_edges
    24
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()  # shard folders known to exist

    def __repr__(self) -> str:
        return f"GraphCache({str(self.directory)!r})"

    # ---- keys -------------------------------------------------------------------------------------------------
    @staticmethod
    def key(structure: Structure, n_neighbors: int = 24) -> str:
        """Content hash of ``structure`` for ``n_neighbors`` (see :func:`graph_key`).

        Raises InvalidStructureError for structures without a graph (disordered sites, non-elements).
        """
        from screener.graphs.build import structure_arrays

        arrays = structure_arrays(structure)
        return graph_key(arrays.lattice_matrix, arrays.frac_coords, arrays.atomic_numbers, n_neighbors, arrays.pbc)

    def path_for(self, key: str) -> Path:
        """File that holds (or would hold) the graph with this key."""
        return self.directory / key[:2] / f"{key}.npz"

    # ---- by key -----------------------------------------------------------------------------------------------
    def get_by_key(self, key: str, structure_id: str = "") -> CrystalGraph | None:
        """The cached graph with this key, or None (missing or unreadable file)."""
        path = self.path_for(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("ignoring unreadable graph cache file %s (%s)", path, exc)
            return None
        try:
            try:
                packed = _read_stored_npz(data)
            except _NotFastPath:
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    packed = npz["graph"]
            return unpack_graph(packed, structure_id=structure_id)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning("ignoring unreadable graph cache file %s (%s)", path, exc)
            return None

    def put_by_key(self, key: str, graph: CrystalGraph) -> Path:
        """Store ``graph`` under ``key`` atomically (temporary file + :func:`os.replace`); returns the file path."""
        path = self.path_for(key)
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        buffer = io.BytesIO()
        np.savez(buffer, graph=pack_graph(graph))
        # unique per process, thread and call: concurrent writers never share a temporary file
        tmp = folder / f".{key}.{os.getpid()}-{threading.get_ident()}-{next(_TMP_COUNTER)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getbuffer())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return path

    # ---- by structure -----------------------------------------------------------------------------------------
    def get(self, structure: Structure, n_neighbors: int = 24, structure_id: str = "") -> CrystalGraph | None:
        """The cached graph of ``structure``, or None."""
        return self.get_by_key(self.key(structure, n_neighbors), structure_id=structure_id)

    def put(self, structure: Structure, graph: CrystalGraph, n_neighbors: int = 24) -> Path:
        """Store the graph of ``structure`` (built with ``n_neighbors``)."""
        return self.put_by_key(self.key(structure, n_neighbors), graph)

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.npz"))
