"""Streaming pre-training: train on graph stores far larger than memory, shard by shard.

:class:`StreamingGraphs` is what :func:`screener.cgat.training.train_model` receives instead of a list of graphs:
it knows which store entries belong to the training set (and their targets: 8 bytes each, held in memory) but reads
graphs only while an epoch streams past them. Each epoch:

1. the training shards are put in a random order (a pure function of ``(seed, epoch)``, so resume stays exact);
2. under DDP, rank ``r`` of ``W`` takes shards ``r, r + W, ...`` of that order ("each rank its shards") and every
   rank stops after the same number of batches (the smallest rank's count), because DDP needs equal step counts;
3. the shards are read ``buffer_shards`` at a time (a *window*, memory-mapped and released afterwards) and the
   window's entries are shuffled together: shuffled within and across shards, with resident memory bounded by
   ``buffer_shards`` shards whatever the dataset's size;
4. DataLoader workers (``num_workers``) take whole windows in turn.

With one shard and ``buffer_shards >= 1`` the order of an epoch is exactly the in-memory order
(:func:`~screener.cgat.runtime.epoch_order`), so streaming and in-memory training give the same weights; with several
shards the order differs (a window cannot shuffle with a shard it has not read) and the two trainings are equal in
distribution, not in bits.

:func:`train_streaming_ensemble` is the ``screener train --data STORE`` entry point: a first pass over the stores
collects the targets, the element set and the sizes (normalisation from the training targets, recorded in every
member's ``config.json`` with the elements seen), then trains K members and writes ``ensemble.json`` and the model
card, whose ``n_structures`` is the pre-training set size N_p the policy reads.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from screener.cgat.runtime import DistEnv, epoch_order
from screener.errors import InvalidInputError
from screener.graphs.graph import CrystalGraph
from screener.graphs.store import GraphStore, StoreShard

__all__ = ["ShardPart", "StreamingGraphs", "StreamPass", "first_pass", "train_streaming_ensemble"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardPart:
    """The training entries of one store shard: ``rows`` of shard ``shard`` of ``store``, targets ``y``."""

    store: str
    shard: int
    rows: np.ndarray  # int64
    y: np.ndarray  # float64, target units


class StreamingGraphs:
    """Training graphs streamed from graph stores (see the module docstring).

    Parameters
    ----------
    parts : sequence of ShardPart
        Training entries per shard; shards with no entry are left out.
    buffer_shards : int
        Shards read (and shuffled) together.
    seed_offset : int
        Added to the seed of the shard order (members of an ensemble may share it; their seeds differ anyway).
    """

    def __init__(self, parts: Sequence[ShardPart], *, buffer_shards: int = 2, normalization: Any = None) -> None:
        self.parts = [p for p in parts if len(p.rows)]
        if buffer_shards < 1:
            raise ValueError("buffer_shards must be >= 1")
        self.buffer_shards = int(buffer_shards)
        self.normalization = normalization

    def __len__(self) -> int:
        return sum(len(p.rows) for p in self.parts)

    @property
    def targets(self) -> np.ndarray:
        """Targets in stream-definition order (target units)."""
        return np.concatenate([p.y for p in self.parts]) if self.parts else np.zeros(0)

    def normalised(self, normalization: Any) -> StreamingGraphs:
        """The same stream yielding ``(y - mean) / std`` as float32 (what :func:`train_model` feeds the network)."""
        return StreamingGraphs(self.parts, buffer_shards=self.buffer_shards, normalization=normalization)

    # ---- order ------------------------------------------------------------------------------------------------
    def rank_parts(self, seed: int, epoch: int, env: DistEnv | None = None) -> list[int]:
        """Indices of the parts this rank reads in ``epoch``, in reading order."""
        order = self.shard_order(seed, epoch)
        if env is not None and env.enabled:
            order = order[env.rank :: env.world_size]
        return order

    def shard_order(self, seed: int, epoch: int) -> list[int]:
        if len(self.parts) == 1:
            return [0]
        return np.random.default_rng([seed, epoch, 1]).permutation(len(self.parts)).tolist()

    def batches_per_rank(self, seed: int, epoch: int, batch_size: int, env: DistEnv) -> int | None:
        """Under DDP, the batch count every rank stops at (the smallest rank's); None without DDP."""
        if not env.enabled:
            return None
        if len(self.parts) < env.world_size:
            raise InvalidInputError(
                f"{len(self.parts)} training shard(s) for {env.world_size} DDP ranks: each rank needs its own shards; "
                "featurise with a smaller --shard-size (best: many more shards than ranks)"
            )
        order = self.shard_order(seed, epoch)
        sizes = [sum(len(self.parts[i].rows) for i in order[r :: env.world_size]) for r in range(env.world_size)]
        return min(math.ceil(s / batch_size) for s in sizes)

    def windows(self, seed: int, epoch: int, env: DistEnv | None = None) -> list[list[int]]:
        parts = self.rank_parts(seed, epoch, env)
        return [parts[i : i + self.buffer_shards] for i in range(0, len(parts), self.buffer_shards)]

    def window_order(self, seed: int, epoch: int, w: int, n: int) -> np.ndarray:
        """Permutation of a window's entries; window 0 of a one-shard stream uses the in-memory epoch order."""
        if w == 0 and len(self.parts) == 1:
            return epoch_order(seed, epoch, n)
        return np.random.default_rng([seed, epoch, 2, w]).permutation(n)

    # ---- reading ----------------------------------------------------------------------------------------------
    def iter_window(self, part_ids: Sequence[int], order: np.ndarray | None = None,
                    opened: dict[tuple[str, int], StoreShard] | None = None) -> Iterator[tuple[CrystalGraph, float]]:
        """``(graph, target)`` of the entries of these parts, in ``order`` (default: as stored)."""
        from screener.graphs.cache import unpack_graph

        stores: dict[str, GraphStore] = {}
        opened = {} if opened is None else opened
        index = [(pi, j) for pi in part_ids for j in range(len(self.parts[pi].rows))]
        order = np.arange(len(index)) if order is None else order
        norm = self.normalization
        for t in order:
            pi, j = index[int(t)]
            part = self.parts[pi]
            if part.store not in stores:
                stores[part.store] = GraphStore(part.store)
            store = stores[part.store]
            shard = _opened(store, part.shard, opened)
            row = int(part.rows[j])
            g_shard, g_row = (int(x) for x in shard.refs[row])
            packed = _opened(store, g_shard, opened).packed(g_row)
            graph = unpack_graph(packed, structure_id=shard.ids[row])
            y = float(part.y[j])
            if norm is not None:
                y = float(np.float32((np.float64(y) - norm.mean) / norm.std))
            yield graph, y

    def epoch_loader(self, config: Any, epoch: int, env: DistEnv, device: torch.device) -> DataLoader:
        """The DataLoader of one epoch (called by :func:`train_model`)."""
        from screener.cgat.training import collate_with_targets

        dataset = _EpochStream(self, config.seed, epoch, env, config.batch_size)
        num_workers = config.num_workers
        if env.enabled and num_workers:
            # equal batch counts per rank are enforced on one stream; split over workers they could differ
            logger.warning("streaming under DDP reads shards in the training process (num_workers ignored)")
            num_workers = 0
        return DataLoader(dataset, batch_size=config.batch_size, collate_fn=collate_with_targets,
                          num_workers=num_workers, pin_memory=device.type == "cuda")


def _opened(store: GraphStore, k: int, opened: dict[tuple[str, int], StoreShard]) -> StoreShard:
    key = (str(store.directory), k)
    if key not in opened:
        info = store.manifest.shards[k]
        opened[key] = StoreShard(store.directory / info.name, info)
    return opened[key]


class _EpochStream(IterableDataset):
    """One epoch of a :class:`StreamingGraphs` for this rank (DataLoader workers split its windows)."""

    def __init__(self, graphs: StreamingGraphs, seed: int, epoch: int, env: DistEnv, batch_size: int) -> None:
        self.graphs, self.seed, self.epoch, self.env = graphs, seed, epoch, env
        limit = graphs.batches_per_rank(seed, epoch, batch_size, env)
        self.max_items = None if limit is None else limit * batch_size

    def __iter__(self) -> Iterator[tuple[CrystalGraph, float]]:
        windows = self.graphs.windows(self.seed, self.epoch, self.env)
        info = get_worker_info()
        n_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        max_items = self.max_items  # set under DDP only, where num_workers is 0
        n = 0
        for w, part_ids in enumerate(windows):
            if w % n_workers != worker:
                continue
            size = sum(len(self.graphs.parts[i].rows) for i in part_ids)
            opened: dict[tuple[str, int], StoreShard] = {}  # released after the window: bounded resident memory
            for item in self.graphs.iter_window(part_ids, self.graphs.window_order(self.seed, self.epoch, w, size),
                                                opened):
                if max_items is not None and n >= max_items:
                    return
                n += 1
                yield item
            opened.clear()


# ---- first pass ----------------------------------------------------------------------------------------------------


@dataclass
class StreamPass:
    """What the first pass over the stores found."""

    parts: list[ShardPart]
    n_entries: int
    n_missing: int
    elements: list[str]
    data_hash: str


def first_pass(stores: Sequence[str | Path], target: str) -> StreamPass:
    """Targets, element set and sizes of the stores' entries (labels and graphs streamed shard by shard).

    Entries whose target is missing (NaN) are left out and counted.
    """
    from pymatgen.core.periodic_table import Element

    parts: list[ShardPart] = []
    seen = np.zeros(119, dtype=bool)
    h = hashlib.sha256(f"target={target}".encode())
    n_entries = n_missing = 0
    for path in stores:
        store = GraphStore(path)
        col = store.label_column(target)
        h.update(store.manifest.model_dump_json(include={"inputs", "shards", "n_neighbors", "targets"}).encode())
        for k in range(store.n_shards):
            shard = StoreShard(store.directory / store.manifest.shards[k].name, store.manifest.shards[k])
            y = np.asarray(shard.labels[:, col], dtype=np.float64)
            ok = np.isfinite(y)
            n_entries += len(y)
            n_missing += int((~ok).sum())
            rows = np.flatnonzero(ok).astype(np.int64)
            parts.append(ShardPart(str(store.directory), k, rows, y[rows]))
            # element set: the atomic numbers of every stored graph (header: version, n_atoms, ...)
            offsets = np.asarray(shard.offsets)
            for g in range(len(offsets) - 1):
                start = int(offsets[g])
                n_atoms = int(shard.graphs[start + 1])
                seen[np.asarray(shard.graphs[start + 4 : start + 4 + n_atoms])] = True
            del shard
    if n_entries - n_missing == 0:
        raise InvalidInputError(f"no entry with a value of {target!r} in {', '.join(map(str, stores))}")
    return StreamPass(parts, n_entries, n_missing, [Element.from_Z(int(z)).symbol for z in np.flatnonzero(seen)],
                      h.hexdigest())


def _split(parts: list[ShardPart], n_val: int, seed: int) -> tuple[list[ShardPart], list[tuple[int, int]]]:
    """Hold out ``n_val`` random entries (as (part, j) pairs); the rest stay streamed."""
    sizes = np.array([len(p.rows) for p in parts], dtype=np.int64)
    total = int(sizes.sum())
    chosen = np.sort(np.random.default_rng([seed, 77]).choice(total, size=min(n_val, total - 1), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    val: list[tuple[int, int]] = []
    train_parts = []
    for i, p in enumerate(parts):
        lo, hi = np.searchsorted(chosen, [starts[i], starts[i + 1]])
        local = chosen[lo:hi] - starts[i]
        val += [(i, int(j)) for j in local]
        keep = np.ones(len(p.rows), dtype=bool)
        keep[local] = False
        train_parts.append(ShardPart(p.store, p.shard, p.rows[keep], p.y[keep]))
    return train_parts, val


def train_streaming_ensemble(
    stores: Sequence[str | Path],
    *,
    target: str,
    out_dir: str | Path,
    preset: str = "small",
    epochs: int | None = None,
    n_members: int = 1,
    seed: int = 0,
    batch_size: int | None = None,
    target_unit: str | None = None,
    loss: str = "l1",
    device: str = "auto",
    num_workers: int = 0,
    val_fraction: float = 0.05,
    max_val: int = 5000,
    buffer_shards: int = 2,
    command: str | None = None,
    progress: Any = None,
) -> Any:
    """Pre-train an ensemble on graph stores, streaming the training graphs (see the module docstring).

    A common validation set (``val_fraction`` of the entries, at most ``max_val``, held in memory) picks each
    member's best epoch and gives the ensemble's validation MAE; every other entry is streamed. Members differ by
    seed (weights and data order). Resumes like :func:`~screener.cgat.ensemble.train_ensemble`.

    Returns
    -------
    CGATEnsemble
    """
    from screener.cgat.api import guess_target_unit, train_config_for_preset
    from screener.cgat.checkpoint import ModelMeta, Normalization, software_versions
    from screener.cgat.config import get_preset
    from screener.cgat.ensemble import CGATEnsemble, EnsembleInfo, _write_info, write_held_out_calibration
    from screener.cgat.model import CGAT
    from screener.cgat.model_card import write_model_card
    from screener.cgat.runtime import distributed_env, hardware_description, resolve_device
    from screener.cgat.training import train_model
    from screener.data import elements_with_embedding

    t0 = time.perf_counter()
    if n_members < 1:
        raise InvalidInputError("an ensemble needs at least one member")
    unit = target_unit if target_unit is not None else guess_target_unit(target)
    architecture = get_preset(preset)
    for path in stores:
        if GraphStore(path).n_neighbors != architecture.n_neighbors:
            raise InvalidInputError(f"{path}: graphs have {GraphStore(path).n_neighbors} neighbours, the "
                                    f"{preset} preset {architecture.n_neighbors}")
    config = train_config_for_preset(preset, epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                                     loss=loss, num_workers=num_workers)
    scan = first_pass(stores, target)
    n_total = scan.n_entries - scan.n_missing
    n_val = max(1, min(max_val, int(round(val_fraction * n_total)))) if n_total > 1 else 0
    train_parts, val_pairs = _split(scan.parts, n_val, seed)
    train = StreamingGraphs(train_parts, buffer_shards=buffer_shards)
    y_train = train.targets
    norm = Normalization.fit(y_train)
    val_graphs: list[CrystalGraph] = []
    val_y = np.array([scan.parts[i].y[j] for i, j in val_pairs], dtype=np.float64)
    by_part: dict[int, list[int]] = {}
    for i, j in val_pairs:
        by_part.setdefault(i, []).append(j)
    for i, js in by_part.items():
        sub = ShardPart(scan.parts[i].store, scan.parts[i].shard, scan.parts[i].rows[js], scan.parts[i].y[js])
        val_graphs += [g for g, _ in StreamingGraphs([sub]).iter_window([0])]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embedding_elements = sorted(elements_with_embedding(architecture.embedding))
    missing = sorted(set(scan.elements) - set(embedding_elements))
    if missing:
        raise InvalidInputError(f"elements without an embedding in the stores: {', '.join(missing)}")
    d_hash = hashlib.sha256(f"{scan.data_hash};val={n_val};seed={seed}".encode()).hexdigest()
    results = []
    for k in range(n_members):
        member_config = config.model_copy(update={"seed": seed + k})
        torch.manual_seed(member_config.seed)
        model = CGAT(architecture)
        meta = ModelMeta(architecture=architecture, normalization=norm, target=target, target_unit=unit,
                         embedding=architecture.embedding, elements=embedding_elements, train_data_hash=d_hash,
                         seed=member_config.seed, train_elements=scan.elements, streamed_from=[str(s) for s in stores])
        cb = (lambda rec, k=k: progress(k, rec)) if progress is not None else None
        results.append(train_model(model, train, y_train, val_graphs, val_y, member_config, meta=meta,
                                   directory=out / f"member_{k}", progress=cb))
    ensemble = CGATEnsemble.load_members([out / f"member_{k}" for k in range(n_members)])
    metrics: dict[str, Any] = {"member_best_val_mae": [r.best_val_mae for r in results]}
    errors, stds = np.zeros(0), np.zeros(0)
    if val_graphs:
        pred = ensemble.predict(val_graphs, batch_size=config.batch_size)
        errors, stds = pred.mean - val_y, pred.std
        metrics["ensemble_val_mae"] = float(np.mean(np.abs(errors)))
    dist_env = distributed_env(config.ddp, resolve_device(config.device).type)
    info = EnsembleInfo(
        target=target, target_unit=unit, members=[f"member_{k}" for k in range(n_members)],
        architecture=architecture, seeds=[seed + k for k in range(n_members)],
        split={"fractions": None, "n_train": [len(train)] * n_members, "n_val": [len(val_graphs)] * n_members,
               "n_test": 0, "test_seed": seed, "streaming": True, "n_missing_target": scan.n_missing},
        metrics=metrics, train_config=config.model_dump(), command=command, data=[str(s) for s in stores],
        n_structures=len(train) + len(val_graphs), train_data_hash=d_hash,
        wall_time_s=round(time.perf_counter() - t0, 3),
        hardware=hardware_description(config.device if config.device != "auto" else resolve_device()),
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), versions=software_versions(),
        train_elements=scan.elements,
    )
    ensemble.info = info
    if dist_env.is_main:
        _write_info(info, out)
        # streaming keeps no test split: its common validation split is the only data no member trained on; it
        # also picked each member's best epoch, which makes the fit slightly optimistic (the source says so)
        calibration = write_held_out_calibration(
            out, errors, stds, command=command,
            source=f"common validation split ({len(val_y)} structures) of streaming training, which also picked "
                   "each member's best epoch (slightly optimistic)")
        write_model_card(out, info, ensemble.metas, calibration=calibration)
    return ensemble
