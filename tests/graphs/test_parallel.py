"""Tests of screener/graphs/parallel.py: build_graphs order, workers, cache, invalid structures, progress."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screener.errors import InvalidStructureError
from screener.graphs import GraphCache, build_graph, build_graphs
from screener.graphs import parallel as parallel_module


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    from pathlib import Path

    path = Path(__file__).parents[1] / "data" / "mp_20_subset" / "test.csv"
    with open(path, newline="") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(row["cif"], fmt="cif") for row, _ in zip(csv.DictReader(fh), range(12))]


def bad_structure() -> Structure:
    return Structure(Lattice.cubic(4.0), ["Rf"], [[0, 0, 0]])


def same(a, b) -> bool:
    return all(
        np.array_equal(getattr(a, n), getattr(b, n))
        for n in ("atomic_numbers", "edge_src", "edge_dst", "edge_rank", "comp_numbers", "comp_fractions")
    )


def test_serial_matches_build_graph_in_order(structures):
    ids = [f"s{i}" for i in range(len(structures))]
    graphs = build_graphs(structures, n_jobs=1, structure_ids=ids)
    assert [g.structure_id for g in graphs] == ids
    assert all(same(g, build_graph(s)) for g, s in zip(graphs, structures))


def test_workers_match_serial(structures, monkeypatch, tmp_path):
    monkeypatch.setattr(parallel_module, "SERIAL_THRESHOLD", 0)
    calls = []
    graphs = build_graphs(
        structures, n_jobs=2, chunk_size=5, progress=lambda done, total: calls.append((done, total)),
        cache_dir=tmp_path, mp_context="fork",
    )
    serial = build_graphs(structures, n_jobs=1)
    assert [g.structure_id for g in graphs] == [str(i) for i in range(len(structures))]
    assert all(same(a, b) for a, b in zip(graphs, serial))
    # chunks of 5, 5 and 2 finish in any order: three calls, n_done increasing to 12
    assert len(calls) == 3 and calls[-1] == (12, 12) and all(t == 12 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(GraphCache(tmp_path)) == len({GraphCache.key(s) for s in structures})


def test_cache_is_used(structures, tmp_path, monkeypatch):
    first = build_graphs(structures, n_jobs=1, cache_dir=tmp_path)
    assert len(GraphCache(tmp_path)) > 0

    def no_build(*args, **kwargs):
        raise AssertionError("graph rebuilt despite cache")

    monkeypatch.setattr(parallel_module, "graph_from_arrays", no_build)
    second = build_graphs(structures, n_jobs=1, cache_dir=tmp_path, structure_ids=[f"x{i}" for i in range(12)])
    assert all(same(a, b) for a, b in zip(first, second))
    assert second[3].structure_id == "x3"


def test_invalid_raises_or_is_skipped(structures, caplog):
    batch = [structures[0], bad_structure(), structures[1]]
    with pytest.raises(InvalidStructureError) as info:
        build_graphs(batch, n_jobs=1, structure_ids=["a", "bad", "c"])
    assert info.value.structure_id == "bad"
    graphs = build_graphs(batch, n_jobs=1, structure_ids=["a", "bad", "c"], skip_invalid=True)
    assert graphs[1] is None and graphs[0].structure_id == "a" and graphs[2].structure_id == "c"
    assert "bad" in caplog.text
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    assert build_graphs([disordered, structures[0]], skip_invalid=True)[0] is None
    calls = []
    assert build_graphs([disordered], skip_invalid=True, progress=lambda *a: calls.append(a)) == [None]
    assert calls == [(1, 1)]


def test_invalid_in_worker_is_skipped(structures, monkeypatch):
    monkeypatch.setattr(parallel_module, "SERIAL_THRESHOLD", 0)
    batch = [*structures[:4], bad_structure(), *structures[4:8]]
    graphs = build_graphs(batch, n_jobs=2, chunk_size=3, skip_invalid=True, mp_context="fork")
    assert [g is None for g in graphs] == [False] * 4 + [True] + [False] * 4
    with pytest.raises(InvalidStructureError):
        build_graphs(batch, n_jobs=2, chunk_size=3, mp_context="fork")


def test_argument_checks(structures):
    with pytest.raises(ValueError, match="structure_ids"):
        build_graphs(structures[:2], structure_ids=["a"])
    with pytest.raises(ValueError, match="n_jobs"):
        build_graphs(structures[:2], n_jobs=0)
    assert build_graphs([]) == []


def test_dead_worker_loses_no_graph(structures, monkeypatch):
    """A worker that dies (BrokenProcessPool) does not lose its chunk: the parent builds it."""
    import os

    monkeypatch.setattr(parallel_module, "SERIAL_THRESHOLD", 0)
    parent = os.getpid()
    real_graph_from_arrays = parallel_module.graph_from_arrays

    def dying_in_workers(*args, **kwargs):  # forked workers inherit the patched module global
        if os.getpid() != parent:
            os._exit(1)
        return real_graph_from_arrays(*args, **kwargs)

    monkeypatch.setattr(parallel_module, "graph_from_arrays", dying_in_workers)
    ids = [f"s{i}" for i in range(len(structures))]
    graphs = build_graphs(structures, n_jobs=2, structure_ids=ids, chunk_size=3, mp_context="fork")
    expected = [build_graph(s, structure_id=i) for s, i in zip(structures, ids)]
    assert all(same(g, e) for g, e in zip(graphs, expected, strict=True))
