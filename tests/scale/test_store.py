"""Sharded graph store: same graphs as build_graph, content-addressed, resumable after a kill, bad entries located."""

from __future__ import annotations

import bz2
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from screener.errors import InvalidStructureError
from screener.graphs import store as store_mod
from screener.graphs.store import GraphStore, build_store


def _arrays(store: GraphStore) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    out = []
    for k in range(store.n_shards):
        for sid, graph, labels in store.iter_shard(k):
            out.append((sid, [np.asarray(a) for a in graph.to_arrays().values()], labels))
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and all(np.array_equal(u, v) for u, v in zip(x[1], y[1])) and np.array_equal(x[2], y[2])
        for x, y in zip(a, b)
    )


def test_store_holds_the_graphs_and_labels_of_the_reader(synthetic_files, tmp_path):
    from screener.graphs import build_graph
    from screener.structures import read_structures

    manifest = build_store(synthetic_files, tmp_path / "s", targets=["e_form"], shard_size=25, n_jobs=1)
    assert [s.n_entries for s in manifest.shards] == [25, 25, 10] and manifest.complete
    store = GraphStore(tmp_path / "s")
    records = read_structures(synthetic_files, target="e_form").records
    got = _arrays(store)
    assert [g[0] for g in got] == [r.structure_id for r in records]
    for (sid, arrays, labels), rec in zip(got, records):
        expected = build_graph(rec.structure).to_arrays().values()
        assert all(np.array_equal(a, b) for a, b in zip(arrays, expected))
        assert labels[0] == rec.targets["e_form"]


def test_parallel_build_equals_serial(synthetic_files, tmp_path):
    build_store(synthetic_files, tmp_path / "a", targets=["e_form"], shard_size=25, n_jobs=1)
    build_store(synthetic_files, tmp_path / "b", targets=["e_form"], shard_size=25, n_jobs=2)
    assert _same(_arrays(GraphStore(tmp_path / "a")), _arrays(GraphStore(tmp_path / "b")))


def test_a_structure_is_featurised_once(synthetic_files, tmp_path, monkeypatch):
    # the same file twice (renamed copy): the second copy's 20 structures point at the first copy's graphs
    copy = tmp_path / "copy.json.bz2"
    shutil.copy(synthetic_files[0], copy)
    built = []
    real = store_mod.pack_graph
    monkeypatch.setattr(store_mod, "pack_graph", lambda g: built.append(1) or real(g))
    manifest = build_store([synthetic_files[0], copy], tmp_path / "s", shard_size=15, n_jobs=1)
    assert manifest.n_entries == 40 and manifest.n_graphs == 20 and len(built) == 20
    store = GraphStore(tmp_path / "s")
    first = _arrays(store)
    assert all(_same([first[i][:2] + (first[i][2],)], [first[i + 20]]) for i in range(20))


def test_killed_build_resumes_keeping_finished_shards(synthetic_files, tmp_path, monkeypatch):
    reference = _arrays(GraphStore(tmp_path / "ref") if build_store(
        synthetic_files, tmp_path / "ref", targets=["e_form"], shard_size=15, n_jobs=1) else None)
    real_write = store_mod._write_shard
    calls = {"n": 0}

    def dying_write(directory, buf, n_targets, stop):
        calls["n"] += 1
        if calls["n"] == 3:  # killed after the third shard was renamed into place, before store.json listed it
            real_write(directory, buf, n_targets, stop)
            (directory / f"shard_{buf.index + 1:06d}.tmp").mkdir()  # and a partial next one
            raise KeyboardInterrupt
        return real_write(directory, buf, n_targets, stop)

    monkeypatch.setattr(store_mod, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build_store(synthetic_files, tmp_path / "s", targets=["e_form"], shard_size=15, n_jobs=1)
    partial = GraphStore(tmp_path / "s")
    assert [s.name for s in partial.manifest.shards] == ["shard_000000", "shard_000001"]
    assert not partial.manifest.complete and (tmp_path / "s" / "shard_000002").is_dir()
    kept = (tmp_path / "s" / "shard_000000" / "graphs.npy").stat().st_mtime_ns

    monkeypatch.setattr(store_mod, "_write_shard", real_write)
    read = []
    real_iter = store_mod._iter_payloads
    monkeypatch.setattr(store_mod, "_iter_payloads", lambda p, f: read.append(Path(p).name) or real_iter(p, f))
    manifest = build_store(synthetic_files, tmp_path / "s", targets=["e_form"], shard_size=15, n_jobs=1)
    assert manifest.complete and len(manifest.shards) == 4
    assert read == [p.name for p in synthetic_files[1:]]  # file 0 (positions 0-19) lies inside shards 0-1
    assert (tmp_path / "s" / "shard_000000" / "graphs.npy").stat().st_mtime_ns == kept
    assert not list((tmp_path / "s").glob("*.tmp"))
    assert _same(_arrays(GraphStore(tmp_path / "s")), reference)


def _with_bad_entry(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = [shutil.copy(f, folder / f.name) for f in files]
    entries = json.loads(bz2.decompress(Path(out[1]).read_bytes()))
    entries[7]["structure"]["lattice"] = "not a lattice"
    Path(out[1]).write_bytes(bz2.compress(json.dumps(entries).encode()))
    return [Path(p) for p in out]


def test_bad_entry_is_reported_with_file_index_and_shard(synthetic_files, tmp_path):
    files = _with_bad_entry(synthetic_files, tmp_path / "in")
    with pytest.raises(InvalidStructureError) as info:
        build_store(files, tmp_path / "s", shard_size=10, n_jobs=1)
    message = str(info.value)
    assert files[1].name in message and "entry 7" in message and "shard_000002" in message
    assert len(GraphStore(tmp_path / "s").manifest.shards) == 2  # finished shards kept

    manifest = build_store(files, tmp_path / "s", shard_size=10, n_jobs=1, skip_invalid=True)
    assert manifest.complete and manifest.n_entries == 59
    (skipped,) = manifest.skipped
    assert (skipped.file, skipped.index, skipped.shard) == (files[1].name, 7, "shard_000002")


def test_resume_refuses_other_inputs(synthetic_files, tmp_path):
    from screener.errors import InvalidInputError

    build_store(synthetic_files[:1], tmp_path / "s", n_jobs=1)
    with pytest.raises(InvalidInputError, match="other input files"):
        build_store(synthetic_files, tmp_path / "s", n_jobs=1)


def test_cli_featurize_bad_entry_one_line_then_skip(synthetic_files, tmp_path, run_cli):
    files = _with_bad_entry(synthetic_files, tmp_path / "in")
    code, out, err = run_cli(["featurize", *files, "--store", tmp_path / "s", "--shard-size", "10", "--n-jobs", "1"])
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and f"{files[1].name} entry 7" in err and "shard_000002" in err
    code, out, err = run_cli(["featurize", *files, "--store", tmp_path / "s", "--shard-size", "10", "--n-jobs", "1",
                              "--skip-invalid"])
    assert code == 0, err
    assert "59 entries" in out and "1 invalid skipped" in out


def test_real_alexandria_shard_and_synthetic_shards_share_the_format(data_dir, synthetic_files, tmp_path):
    from screener.structures import read_structures

    real = data_dir / "structures" / "alexandria_part_1.json.bz2"
    manifest = build_store([real, synthetic_files[0]], tmp_path / "s", targets=["e_form", "e_above_hull"], n_jobs=1)
    records = read_structures([real, synthetic_files[0]]).records
    store = GraphStore(tmp_path / "s")
    rows = list(store.iter_shard(0))
    assert manifest.n_entries == len(records) == 30 and [r[0] for r in rows] == [r.structure_id for r in records]
    assert rows[0][0].startswith("agm") and rows[-1][0].startswith("syn3-")
    for (_, _, labels), rec in zip(rows, records):  # e_form and e_above_hull read from entry.data of both kinds
        assert labels.tolist() == [rec.data["e_form"], rec.data["e_above_hull"]]
