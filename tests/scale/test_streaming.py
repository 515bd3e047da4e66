"""Streaming pre-training: equal to in-memory training on one shard, every entry once per epoch, bounded windows,
disjoint equal-length DDP shares, N_p in the model card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screener.cgat import streaming
from screener.cgat.runtime import DistEnv
from screener.cgat.streaming import ShardPart, StreamingGraphs
from screener.graphs.store import GraphStore, build_store


@pytest.fixture(scope="module")
def stores(synthetic_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-stores")
    build_store(synthetic_files, root / "one", targets=["e_form"], shard_size=1000, n_jobs=1)
    build_store(synthetic_files, root / "many", targets=["e_form"], shard_size=7, n_jobs=1)
    return root / "one", root / "many"


def _parts(path) -> list[ShardPart]:
    store = GraphStore(path)
    return [ShardPart(str(path), k, np.arange(store.manifest.shards[k].n_entries),
                      np.asarray(store.shard(k).labels[:, 0])) for k in range(store.n_shards)]


def _train(graphs, targets, directory):
    from screener.cgat.api import train_config_for_preset
    from screener.cgat.checkpoint import ModelMeta, Normalization
    from screener.cgat.config import get_preset
    from screener.cgat.model import CGAT
    from screener.cgat.training import train_model

    config = train_config_for_preset("small", epochs=2, batch_size=8, device="cpu")
    torch.manual_seed(0)
    model = CGAT(get_preset("small"))
    meta = ModelMeta(architecture=get_preset("small"), normalization=Normalization.fit(targets), train_data_hash="t")
    train_model(model, graphs, targets, [], [], config, meta=meta, directory=directory)
    return model.state_dict()


def test_streaming_one_shard_equals_in_memory_training(stores, tmp_path):
    one, _ = stores
    store = GraphStore(one)
    graphs, targets = zip(*[(g, y[0]) for _, g, y in store.iter_shard(0)])
    targets = np.array(targets)
    in_memory = _train(list(graphs), targets, tmp_path / "a")
    stream = StreamingGraphs(_parts(one))
    streamed = _train(stream, stream.targets, tmp_path / "b")
    assert all(torch.equal(in_memory[k], streamed[k]) for k in in_memory)


def test_every_entry_once_per_epoch_in_bounded_windows(stores, monkeypatch):
    _, many = stores
    stream = StreamingGraphs(_parts(many), buffer_shards=2)
    assert len(stream.parts) == 9
    widest = []
    real = streaming._opened

    def counting(store, k, opened):
        shard = real(store, k, opened)
        widest.append(len(opened))
        return shard

    monkeypatch.setattr(streaming, "_opened", counting)
    all_ids = sorted(GraphStore(many).shard(k).ids[i] for k in range(9) for i in range(len(GraphStore(many).shard(k))))
    orders = []
    for epoch in range(2):
        ids = [g.structure_id for g, _ in streaming._EpochStream(stream, 0, epoch, DistEnv(False), 8)]
        assert sorted(ids) == all_ids
        orders.append(ids)
    assert orders[0] != orders[1]
    assert max(widest) <= 2  # never more than buffer_shards shards open
    # shuffled across shards: some window mixes entries of two shards in its first half
    shard_of = {sid: k for k in range(9) for sid in GraphStore(many).shard(k).ids}
    assert len({shard_of[sid] for sid in orders[0][:7]}) > 1


def test_ddp_ranks_read_disjoint_shards_with_equal_batch_counts(stores):
    _, many = stores
    stream = StreamingGraphs(_parts(many), buffer_shards=2)
    per_rank = []
    for rank in range(2):
        env = DistEnv(True, rank=rank, local_rank=rank, world_size=2)
        per_rank.append([g.structure_id for g, _ in streaming._EpochStream(stream, 0, 3, env, 8)])
        assert set(stream.rank_parts(0, 3, env)).isdisjoint(stream.rank_parts(0, 3, DistEnv(True, 1 - rank, 1 - rank, 2)))
    assert not set(per_rank[0]) & set(per_rank[1])
    assert [-(-len(ids) // 8) for ids in per_rank][0] == [-(-len(ids) // 8) for ids in per_rank][1]


def test_cli_train_on_a_store_records_n_p(stores, run_cli, tmp_path):
    import json

    _, many = stores
    code, out, err = run_cli(["train", "--data", many, "--target", "e_form", "--preset", "small", "--epochs", "1",
                              "--ensemble", "2", "--out", tmp_path / "m", "--device", "cpu"])
    assert code == 0, err
    info = json.loads((tmp_path / "m" / "ensemble.json").read_text())
    assert info["n_structures"] == 60 and info["split"]["n_test"] == 0 and info["split"]["streaming"]
    assert "Structures: 60" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    meta = json.loads((tmp_path / "m" / "member_0" / "config.json").read_text())
    assert meta["train_elements"] and meta["normalization"]["std"] > 0
    from screener.campaign.ensemble_model import pretraining_set_size

    assert pretraining_set_size(tmp_path / "m") == 60


def test_ddp_with_fewer_shards_than_ranks_is_refused(stores):
    from screener.errors import InvalidInputError

    one, _ = stores
    stream = StreamingGraphs(_parts(one))
    with pytest.raises(InvalidInputError, match="1 training shard"):
        stream.batches_per_rank(0, 0, 8, DistEnv(True, rank=0, local_rank=0, world_size=2))


def test_streaming_calibrates_on_its_validation_split_and_drops_a_stale_fit(stores, tmp_path):
    import json

    from screener.campaign.ensemble_model import CALIBRATION_FILENAME, read_spread_calibration

    _, many = stores
    out = tmp_path / "m"
    common = dict(target="e_form", out_dir=out, preset="small", epochs=1, n_members=2, device="cpu")
    streaming.train_streaming_ensemble([many], val_fraction=0.5, **common)  # 30 of 60 validate: enough to fit
    fit = json.loads((out / CALIBRATION_FILENAME).read_text())["fidelities"]["model"]
    assert fit["n_errors"] == 30 and "validation split" in fit["source"]
    assert read_spread_calibration(out)["pbe"] == pytest.approx(fit["scale"])
    assert "fitted on 30 errors" in (out / "MODEL_CARD.md").read_text()
    # a folder holding only a fit left from another model, trained with 3 validation structures (too few to fit):
    # the old fit does not describe the new ensemble and goes
    other = tmp_path / "other"
    other.mkdir()
    (other / CALIBRATION_FILENAME).write_text((out / CALIBRATION_FILENAME).read_text())
    streaming.train_streaming_ensemble([many], val_fraction=0.05, **{**common, "out_dir": other})
    assert not (other / CALIBRATION_FILENAME).exists()
    assert "Spread calibration" not in (other / "MODEL_CARD.md").read_text()
