"""Training one CGAT model: data set, loss, cyclical learning rate, validation, early stopping, exact resume, DDP.

:func:`train_model` trains a single network (one ensemble member) and writes into its folder::

    <dir>/model.safetensors + config.json        best checkpoint (lowest validation MAE)
    <dir>/last/model.safetensors + config.json   weights after the last finished epoch
    <dir>/train_state.pt                         resumable state (torch.save; see screener.cgat.checkpoint)

Calling it again with the same data and configuration resumes from ``train_state.pt``; the result is bit-identical
to an uninterrupted run because the data order of every epoch is a pure function of ``(seed, epoch)`` and the model,
optimizer, scheduler and RNG states are restored exactly. With ``TrainConfig.write_every_epoch`` False (a campaign's
fine-tunes) only the best checkpoint is written, once, at the end. ``TrainConfig.samples_per_epoch`` with
``focus_indices`` makes each epoch the focus samples plus a seeded draw of the rest (:func:`epoch_sample`).

Multi-GPU: launched under ``torchrun`` (``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the same call trains with
:class:`torch.nn.parallel.DistributedDataParallel` and a :class:`~torch.utils.data.DistributedSampler`; only rank 0
writes files.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from screener.cgat.checkpoint import (
    ModelMeta,
    Normalization,
    load_training_state,
    save_model,
    save_training_state,
)
from screener.cgat.runtime import (
    DistEnv,
    barrier,
    distributed_env,
    epoch_order,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from screener.errors import CheckpointError, InvalidInputError
from screener.graphs.batch import GraphBatch, collate_graphs
from screener.graphs.graph import CrystalGraph

__all__ = [
    "TrainConfig",
    "TrainResult",
    "GraphDataset",
    "collate_with_targets",
    "robust_l1_loss",
    "resolve_device",
    "train_model",
    "predict_model",
    "data_hash",
    "distributed_env",
    "epoch_order",
    "epoch_sample",
]

logger = logging.getLogger(__name__)

STATE_NAME = "train_state.pt"
ProgressCallback = Callable[[dict[str, Any]], None]


class TrainConfig(BaseModel):
    """Optimisation settings of one training run (stored in every checkpoint's ``config.json``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(390, ge=1, description="Epochs to train (the paper's 390).")
    batch_size: int = Field(64, ge=1, description="Crystals per batch (per process under DDP).")
    lr: float = Field(1.25e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(1e-6, ge=0, description="AdamW weight decay.")
    loss: Literal["l1", "robust"] = Field(
        "l1", description="'l1' on the normalised target, or 'robust' = Laplace NLL with the log-std output."
    )
    lr_min_factor: float = Field(0.1, gt=0, le=1, description="Lower end of the triangular cycle, as a fraction of lr.")
    lr_period_epochs: float = Field(130.0, gt=0, description="Period of the triangular cyclical LR (epochs).")
    val_every: int = Field(2, ge=1, description="Validate every this many epochs (and after the last one).")
    patience: int | None = Field(
        None, ge=1, description="Stop when validation MAE has not improved for this many epochs (None: never)."
    )
    seed: int = Field(0, description="Seed of weights init, data order and every RNG.")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU, which always runs fp32).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes collating graphs.")
    ddp: Literal["auto", "off"] = Field("auto", description="'auto': DDP when launched by torchrun.")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="Samples per epoch: the focus samples (train_model's focus_indices, e.g. a "
        "fine-tune's new data) first, then a seeded draw of the others (None: every sample once). A fine-tune then "
        "costs O(new data) per epoch, however much old data it replays.")
    write_every_epoch: bool = Field(
        True, description="Write last/ and train_state.pt after every epoch (an interrupted run resumes there). "
        "False: the best weights are kept in memory and written once at the end (no resume state; a rerun starts "
        "over, with the same result, as every RNG is seeded).")

    def resume_key(self) -> dict[str, Any]:
        """Settings that must not change between an interrupted run and its resumption (all but epochs/device).

        ``samples_per_epoch`` is left out while None, so states written before it existed still resume.
        """
        key = self.model_dump(exclude={"epochs", "device", "num_workers", "patience", "write_every_epoch"})
        if key.get("samples_per_epoch") is None:
            key.pop("samples_per_epoch", None)
        return key


@dataclass
class TrainResult:
    """Outcome of :func:`train_model` (metrics in target units)."""

    best_val_mae: float | None
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    directory: Path | None = None


class GraphDataset(Dataset):
    """Crystal graphs with their (normalised) targets; items are ``(graph, target)``."""

    def __init__(self, graphs: Sequence[CrystalGraph], targets: Sequence[float] | None = None) -> None:
        self.graphs = list(graphs)
        if targets is None:
            self.targets = np.full(len(self.graphs), np.nan, dtype=np.float32)
        else:
            self.targets = np.asarray(targets, dtype=np.float32)
        if len(self.targets) != len(self.graphs):
            raise ValueError(f"{len(self.graphs)} graphs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> tuple[CrystalGraph, float]:
        return self.graphs[index], float(self.targets[index])


def collate_with_targets(items: Sequence[tuple[CrystalGraph, float]]) -> tuple[GraphBatch, Tensor]:
    """``collate_fn`` of the DataLoader: one :class:`GraphBatch` plus a float32 target tensor."""
    graphs = [g for g, _ in items]
    targets = torch.tensor([t for _, t in items], dtype=torch.float32)
    return collate_graphs(graphs), targets


def robust_l1_loss(pred: Tensor, log_std: Tensor, target: Tensor) -> Tensor:
    """Laplace negative log-likelihood (RobustL1): ``sqrt(2) |y - mu| exp(-log_std) + log_std``, batch mean."""
    return (math.sqrt(2.0) * (target - pred).abs() * torch.exp(-log_std) + log_std).mean()


def data_hash(graphs: Sequence[CrystalGraph], targets: Sequence[float]) -> str:
    """sha256 over the graphs' arrays, ids and targets: identifies a training set in checkpoints."""
    import hashlib

    h = hashlib.sha256()
    for g, t in zip(graphs, np.asarray(targets, dtype=np.float64), strict=True):
        h.update(g.structure_id.encode())
        for arr in g.to_arrays().values():
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(np.float64(t).tobytes())
    return h.hexdigest()


# ---- evaluation --------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_model(
    model: torch.nn.Module,
    graphs: Sequence[CrystalGraph],
    normalization: Normalization,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of one network in target units.

    Returns
    -------
    mean, aleatoric_std : ndarray of float64, shape (n,); ``aleatoric_std`` is None without a log-std output
    """
    model = getattr(model, "module", model)
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    preds: list[np.ndarray] = []
    stds: list[np.ndarray] = []
    loader = DataLoader(
        GraphDataset(graphs),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_with_targets,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    use_bf16 = bf16 and device.type == "cuda"
    for batch, _ in loader:
        batch = batch.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred, log_std = model(batch)
        preds.append(pred.float().cpu().numpy().astype(np.float64))
        if log_std is not None:
            stds.append(torch.exp(log_std.float()).cpu().numpy().astype(np.float64))
    model.train(was_training)
    mean = np.concatenate(preds) * normalization.std + normalization.mean if preds else np.zeros(0)
    aleatoric = np.concatenate(stds) * normalization.std if stds and len(stds) == len(preds) else None
    return mean, aleatoric


# ---- training ----------------------------------------------------------------------------------------------------


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Triangular cyclical LR between ``lr_min_factor * lr`` and ``lr``, stepped once per batch."""
    from torch.optim.lr_scheduler import CyclicLR

    half_period_steps = max(1, round(config.lr_period_epochs * steps_per_epoch / 2))
    return CyclicLR(
        optimizer,
        base_lr=[config.lr * config.lr_min_factor * _lr_scale(g) for g in optimizer.param_groups],
        max_lr=[config.lr * _lr_scale(g) for g in optimizer.param_groups],
        step_size_up=half_period_steps,
        mode="triangular",
        cycle_momentum=False,
    )


def _lr_scale(group: dict[str, Any]) -> float:
    return float(group.get("lr_scale", 1.0))


def train_model(
    model: torch.nn.Module,
    train_graphs: Sequence[CrystalGraph],
    train_targets: Sequence[float],
    val_graphs: Sequence[CrystalGraph],
    val_targets: Sequence[float],
    config: TrainConfig,
    *,
    meta: ModelMeta,
    directory: str | Path,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    resume: bool = True,
    progress: ProgressCallback | None = None,
    focus_indices: Sequence[int] | None = None,
) -> TrainResult:
    """Train one network and write its best/last checkpoints and resumable state into ``directory``.

    Parameters
    ----------
    model : CGAT
        Freshly initialised or transferred network (moved to the configured device here).
    train_graphs, train_targets : sequence
        Training data; targets in target units (normalised here with ``meta.normalization``).
    val_graphs, val_targets : sequence
        Validation data (may be empty: then the last epoch is the best).
    config : TrainConfig
        Optimisation settings.
    meta : ModelMeta
        Description written next to the weights (normalisation, target, seeds, ...); metrics are filled in.
    directory : path
        Output folder of this model.
    parameters : sequence of Parameter, optional
        Parameters to optimise (head-only transfer passes ``model.head.parameters()``); default: every parameter
        with ``requires_grad``.
    resume : bool
        Continue from ``train_state.pt`` when present (default). With False an existing state is ignored.
    progress : callable, optional
        Called after every finished epoch (state already saved) with a dict ``epoch``, ``epochs``, ``train_loss``,
        ``train_mae``, ``val_mae``, ``lr``. An exception raised there stops training (e.g. KeyboardInterrupt).
    focus_indices : sequence of int, optional
        Positions in ``train_graphs`` that every epoch includes when ``config.samples_per_epoch`` limits the epoch
        (a fine-tune's new data); the rest of the epoch is a seeded draw of the other samples.

    Returns
    -------
    TrainResult
    """
    directory = Path(directory)
    if len(train_graphs) == 0:
        raise InvalidInputError("no training structures")
    if len(train_graphs) != len(train_targets) or len(val_graphs) != len(val_targets):
        raise ValueError("graphs and targets differ in length")
    device = resolve_device(config.device)
    dist_env = distributed_env(config.ddp, device.type)
    if dist_env.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_env.local_rank)
        torch.cuda.set_device(device)
    norm = meta.normalization
    base_model = getattr(model, "module", model)
    robust_out = bool(getattr(getattr(base_model, "config", None), "robust", True))
    if config.loss == "robust" and not robust_out:
        raise InvalidInputError("loss='robust' needs a model with a log-std output (CGATConfig.robust=True)")

    y_train = (np.asarray(train_targets, dtype=np.float64) - norm.mean) / norm.std
    if hasattr(train_graphs, "epoch_loader"):  # graphs streamed from a graph store (screener.cgat.streaming)
        train_set = train_graphs.normalised(norm)
    else:
        train_set = GraphDataset(train_graphs, y_train)
    base_model.to(device)
    if parameters is None:
        parameters = [p for p in base_model.parameters() if p.requires_grad]
    parameters = list(parameters)
    if not parameters:
        raise InvalidInputError("no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    focus = np.unique(np.asarray(focus_indices if focus_indices is not None else [], dtype=np.int64))
    if focus.size and (focus[0] < 0 or focus[-1] >= len(train_set)):
        raise ValueError(f"focus_indices outside the {len(train_set)} training samples")
    if config.samples_per_epoch is not None and (dist_env.enabled or hasattr(train_set, "epoch_loader")):
        raise InvalidInputError("samples_per_epoch needs in-memory training in one process (not DDP or streaming)")
    steps_per_epoch = _steps_per_epoch(_epoch_size(config, len(train_set)), config.batch_size, dist_env)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)

    d_hash = meta.train_data_hash or data_hash(train_graphs, train_targets)
    meta = meta.model_copy(
        update={
            "train_data_hash": d_hash,
            "n_train": len(train_graphs),
            "n_val": len(val_graphs),
            "seed": config.seed,
            "train_config": config.model_dump(),
        }
    )
    state_path = directory / STATE_NAME
    start_epoch, best_val, best_epoch, since_best, history, wall_before = 0, math.inf, -1, 0, [], 0.0
    finished = stopped_early = False
    if resume and state_path.is_file():
        state = load_training_state(state_path)
        _check_resumable(state, config, d_hash, state_path)
        base_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        best_val, best_epoch = float(state["best_val_mae"]), int(state["best_epoch"])
        since_best, history = int(state["epochs_since_best"]), list(state["history"])
        wall_before = float(state["wall_time_s"])
        finished = bool(state.get("stopped_early", False))
        stopped_early = finished
        logger.info("resuming %s at epoch %d", directory, start_epoch)
    else:
        seed_everything(config.seed)

    net: torch.nn.Module = base_model
    if dist_env.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            base_model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )

    use_bf16 = config.bf16 and device.type == "cuda"
    write_now = config.write_every_epoch and dist_env.is_main
    best_state: dict[str, Tensor] | None = None  # write_every_epoch False: the best weights, written at the end
    best_record: dict[str, float] = {}
    t0 = time.perf_counter()
    epoch = start_epoch
    if finished or start_epoch >= config.epochs:
        logger.info("%s: training already finished at epoch %d", directory, start_epoch)
    while epoch < config.epochs and not finished:
        loader = _epoch_loader(train_set, config, epoch, dist_env, device, focus)
        net.train()
        sum_loss = sum_abs = 0.0
        n_seen = 0
        for batch, y in loader:
            batch = batch.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred, log_std = net(batch)
            pred = pred.float()
            if config.loss == "robust":
                loss = robust_l1_loss(pred, log_std.float(), y)
            else:
                loss = torch.nn.functional.l1_loss(pred, y)
                if log_std is not None and dist_env.enabled:
                    loss = loss + 0.0 * log_std.float().sum()  # every output takes part in DDP's all-reduce
            loss.backward()
            optimizer.step()
            scheduler.step()
            sum_loss += float(loss.detach()) * len(y)
            sum_abs += float((pred.detach() - y).abs().sum())
            n_seen += len(y)
        epoch += 1
        record: dict[str, float] = {
            "epoch": epoch,
            "train_loss": sum_loss / max(n_seen, 1),
            "train_mae": sum_abs / max(n_seen, 1) * norm.std,
            "lr": float(scheduler.get_last_lr()[0]),
            "val_mae": float("nan"),
            "samples": n_seen,
        }
        validate = len(val_graphs) > 0 and (epoch % config.val_every == 0 or epoch == config.epochs)
        if validate:
            val_pred, _ = predict_model(base_model, val_graphs, norm, batch_size=config.batch_size, device=device)
            val_mae = float(np.mean(np.abs(val_pred - np.asarray(val_targets, dtype=np.float64))))
            record["val_mae"] = val_mae
            if val_mae < best_val:
                best_val, best_epoch = val_mae, epoch
                if write_now:
                    save_model(base_model, _with_metrics(meta, best_val, best_epoch, record), directory)
                elif dist_env.is_main:
                    best_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
                    best_record = dict(record)
        since_best = epoch - max(best_epoch, 0)
        history.append(record)
        stop = validate and config.patience is not None and since_best >= config.patience
        done = epoch >= config.epochs or stop
        wall = wall_before + time.perf_counter() - t0
        if write_now:
            save_model(base_model, _with_metrics(meta, _finite(best_val), best_epoch, record), directory / "last")
            save_training_state(
                {
                    "format_version": 1,
                    "model": {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "epoch": epoch,
                    "best_val_mae": best_val,
                    "best_epoch": best_epoch,
                    "epochs_since_best": since_best,
                    "history": history,
                    "data_order": torch.from_numpy(epoch_order(config.seed, epoch, len(train_set))),
                    "resume_key": _json_key(config.resume_key()),
                    "train_data_hash": d_hash,
                    "wall_time_s": wall,
                    "finished": done,
                    "stopped_early": stop,
                },
                state_path,
            )
        barrier(dist_env)
        if progress is not None:
            progress({**record, "epochs": config.epochs})
        if stop:
            stopped_early = True
            logger.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
            break
    if best_state is not None:  # written once, now (write_every_epoch False)
        last_state = base_model.state_dict()
        last_state = {k: v.detach().clone() for k, v in last_state.items()}
        base_model.load_state_dict(best_state)
        save_model(base_model, _with_metrics(meta, _finite(best_val), best_epoch, best_record), directory)
        base_model.load_state_dict(last_state)  # the caller's model ends with the last weights, as when writing
    if best_epoch < 0 and history:  # no validation data: the last weights are the best
        best_epoch = int(history[-1]["epoch"])
        if dist_env.is_main:
            save_model(base_model, _with_metrics(meta, None, best_epoch, history[-1]), directory)
    barrier(dist_env)
    return TrainResult(
        best_val_mae=_finite(best_val),
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped_early,
        wall_time_s=wall_before + time.perf_counter() - t0,
        history=history,
        directory=directory,
    )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _json_key(d: dict[str, Any]) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def _with_metrics(meta: ModelMeta, best_val: float | None, best_epoch: int, record: dict[str, float]) -> ModelMeta:
    metrics = {
        "best_val_mae": best_val,
        "best_epoch": best_epoch,
        "epoch": int(record["epoch"]),
        "train_mae": record["train_mae"],
        "val_mae": _finite(record["val_mae"]),
    }
    return meta.model_copy(update={"metrics": {**meta.metrics, **metrics}})


def _check_resumable(state: dict[str, Any], config: TrainConfig, d_hash: str, path: Path) -> None:
    if state.get("train_data_hash") != d_hash:
        raise CheckpointError(
            f"{path}: the interrupted run used different training data; use a new output folder or delete it"
        )
    if state.get("resume_key") != _json_key(config.resume_key()):
        raise CheckpointError(
            f"{path}: the interrupted run used different training settings; use a new output folder or delete it"
        )


def _epoch_size(config: TrainConfig, n: int) -> int:
    """Samples in one epoch: ``config.samples_per_epoch`` (at most ``n``) or ``n``."""
    return n if config.samples_per_epoch is None else min(n, config.samples_per_epoch)


def epoch_sample(seed: int, epoch: int, n: int, size: int | None, focus: np.ndarray | None = None) -> np.ndarray:
    """Indices of one epoch: ``size`` of the ``n`` samples, every focus index first, the rest a seeded draw.

    Returned in the order of :func:`~screener.cgat.runtime.epoch_order` (a pure function of ``(seed, epoch)``, so a
    resumed run repeats it); ``size`` None or >= ``n``: that whole permutation. When the focus alone exceeds ``size``,
    the first ``size`` focus samples of that order are taken.
    """
    order = epoch_order(seed, epoch, n)
    if size is None or size >= n:
        return order
    is_focus = np.zeros(n, dtype=bool)
    if focus is not None and len(focus):
        is_focus[np.asarray(focus, dtype=np.int64)] = True
    in_order = is_focus[order]
    chosen = np.zeros(n, dtype=bool)
    chosen[order[in_order][:size]] = True
    n_rest = size - int(chosen.sum())
    if n_rest > 0:
        chosen[order[~in_order][:n_rest]] = True
    return order[chosen[order]]


def _steps_per_epoch(n: int, batch_size: int, env: DistEnv) -> int:
    per_rank = math.ceil(n / env.world_size) if env.enabled else n
    return max(1, math.ceil(per_rank / batch_size))


def _epoch_loader(dataset: GraphDataset, config: TrainConfig, epoch: int, env: DistEnv, device: torch.device,
                  focus: np.ndarray | None = None):
    if hasattr(dataset, "epoch_loader"):  # streamed shards bring their own loader (order, DDP split, windows)
        return dataset.epoch_loader(config, epoch, env, device)
    if env.enabled:
        from torch.utils.data import DistributedSampler

        sampler: Any = DistributedSampler(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    else:
        sampler = epoch_sample(config.seed, epoch, len(dataset), config.samples_per_epoch, focus).tolist()
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_with_targets,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
