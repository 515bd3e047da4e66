"""Tests of screener/graphs/cache.py: content keys, hits and misses, atomic writes, unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screener.graphs import GraphCache, build_graph
from screener.graphs.cache import GRAPH_FORMAT_VERSION, pack_graph, unpack_graph

ARRAYS = ("atomic_numbers", "edge_src", "edge_dst", "edge_rank", "comp_numbers", "comp_fractions")


@pytest.fixture
def structure() -> Structure:
    lattice = Lattice.from_parameters(4.1, 4.3, 5.2, 88.0, 95.0, 101.0)
    return Structure(lattice, ["Li", "Fe", "O", "O"], [[0, 0, 0], [0.5, 0.4, 0.5], [0.25, 0.2, 0.3], [0.7, 0.8, 0.75]])


def assert_same_graph(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_hit_returns_identical_arrays(tmp_path, structure):
    cache = GraphCache(tmp_path / "graphs")
    assert cache.get(structure) is None
    graph = build_graph(structure, structure_id="a")
    path = cache.put(structure, graph)
    assert path.is_file() and path.suffix == ".npz" and path.parent.parent == tmp_path / "graphs"
    hit = cache.get(structure, structure_id="b")
    assert hit is not None and hit.structure_id == "b"
    assert_same_graph(hit, graph)
    assert len(cache) == 1 and GraphCache.key(structure) in cache
    # a fresh cache object on the same folder (another process, a later run) sees it too
    assert_same_graph(GraphCache(tmp_path / "graphs").get(structure.copy()), graph)


def test_changed_structure_misses(tmp_path, structure):
    cache = GraphCache(tmp_path)
    cache.put(structure, build_graph(structure))
    moved = structure.copy()
    moved.translate_sites([2], [0.01, 0, 0])
    assert cache.get(moved) is None
    strained = structure.copy()
    strained.scale_lattice(structure.volume * 1.01)
    assert cache.get(strained) is None
    substituted = structure.copy()
    substituted.replace(0, "Na")
    assert cache.get(substituted) is None
    assert cache.get(structure, n_neighbors=12) is None  # n_neighbors is part of the key


def test_key_rounding(structure):
    key = GraphCache.key(structure)
    assert len(key) == 64 and key == GraphCache.key(structure.copy())
    noisy = Structure(structure.lattice, structure.species, structure.frac_coords + 1e-11)
    assert GraphCache.key(noisy) == key  # below the 1e-8 rounding
    shifted = Structure(structure.lattice, structure.species, structure.frac_coords + 1e-6)
    assert GraphCache.key(shifted) != key
    neg = Structure(Lattice.cubic(3.0), ["Cu"], [[-0.0, 0.0, 0.0]])
    pos = Structure(Lattice.cubic(3.0), ["Cu"], [[0.0, 0.0, 0.0]])
    assert GraphCache.key(neg) == GraphCache.key(pos)


def test_pack_roundtrip_and_version(structure):
    graph = build_graph(structure)
    packed = pack_graph(graph)
    assert packed.dtype == np.int32 and packed[0] == GRAPH_FORMAT_VERSION
    assert_same_graph(unpack_graph(packed), graph)
    stale = packed.copy()
    stale[0] = GRAPH_FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        unpack_graph(stale)
    with pytest.raises(ValueError, match="length"):
        unpack_graph(packed[:-1])


def test_unreadable_file_is_a_miss_and_is_overwritten(tmp_path, structure, caplog):
    cache = GraphCache(tmp_path)
    graph = build_graph(structure)
    path = cache.put(structure, graph)
    path.write_bytes(b"not a zip file")
    assert cache.get(structure) is None
    assert "unreadable" in caplog.text
    cache.put(structure, graph)
    assert_same_graph(cache.get(structure), graph)


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, structure, monkeypatch):
    cache = GraphCache(tmp_path)
    graph = build_graph(structure)
    key = cache.key(structure)
    cache.put_by_key(key, graph)
    before = cache.path_for(key).read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        cache.put_by_key(key, graph)
    monkeypatch.undo()
    assert cache.path_for(key).read_bytes() == before  # the old file was never touched
    assert [p.name for p in cache.path_for(key).parent.iterdir()] == [f"{key}.npz"]  # temp file removed


def test_concurrent_writers_and_readers(tmp_path, structure, caplog):
    import threading

    cache = GraphCache(tmp_path)
    graph = build_graph(structure)
    key = cache.key(structure)
    cache.put_by_key(key, graph)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            GraphCache(tmp_path).put_by_key(key, graph)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        reads = [cache.get_by_key(key) for _ in range(200)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(r is not None for r in reads)  # never a partial or missing file
    assert_same_graph(reads[-1], graph)
    assert "unreadable" not in caplog.text
    assert [p.name for p in cache.path_for(key).parent.iterdir()] == [f"{key}.npz"]


def test_reads_other_npz_layouts_and_rejects_truncated_files(tmp_path, structure, caplog):
    cache = GraphCache(tmp_path)
    graph = build_graph(structure)
    key = cache.key(structure)
    path = cache.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, graph=pack_graph(graph))  # compressed: not the fast path, np.load reads it
    assert_same_graph(cache.get_by_key(key), graph)
    cache.put_by_key(key, graph)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cache.get_by_key(key) is None
    assert "unreadable" in caplog.text
