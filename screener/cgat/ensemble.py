"""Ensembles of CGAT models: K members, each with its own seed and its own random train/validation split.

Folder layout (see docs/development.md)::

    <dir>/ensemble.json               EnsembleInfo: members, target, splits, seeds, metrics, command, versions
    <dir>/MODEL_CARD.md               human-readable summary (data, split, seeds, hyper-parameters, MAEs, hardware)
    <dir>/member_<k>/model.safetensors + config.json     best checkpoint of member k
    <dir>/member_<k>/last/...         last-epoch checkpoint;  <dir>/member_<k>/train_state.pt  resumable state

Splits: a common test set (``split[2]`` of the data, chosen with the base seed) is held out from every member, so
the ensemble's test MAE is honest; each member then splits the rest into train/validation with its own seed
(``seed + k``). Predictions: mean over members, epistemic std = standard deviation across members (ddof=0), optional
aleatoric std = mean over members of ``exp(log_std) * normalization.std``; all in target units (eV/atom for
energies).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from screener.cgat.checkpoint import (
    FORMAT_VERSION,
    ModelMeta,
    Normalization,
    atomic_write_text,
    load_model,
    save_model,
    software_versions,
)
from screener.cgat.config import CGATConfig
from screener.cgat.training import (
    TrainConfig,
    TrainResult,
    data_hash,
    distributed_env,
    predict_model,
    resolve_device,
    train_model,
)
from screener.cgat.evaluation import ensemble_metrics, evaluated_indices, make_splits
from screener.cgat.runtime import hardware_description
from screener.errors import CheckpointError, InvalidInputError
from screener.graphs.graph import CrystalGraph

__all__ = [
    "EnsemblePrediction",
    "EnsembleInfo",
    "CGATEnsemble",
    "make_splits",
    "train_ensemble",
    "hardware_description",
]

logger = logging.getLogger(__name__)

ENSEMBLE_INDEX = "ensemble.json"


@dataclass
class EnsemblePrediction:
    """Ensemble output in target units, arrays of shape (n,)."""

    mean: np.ndarray
    std: np.ndarray
    aleatoric_std: np.ndarray | None = None
    members: np.ndarray | None = field(default=None, repr=False)  # (K, n) member predictions


class EnsembleInfo(BaseModel):
    """Index of an ensemble folder (``ensemble.json``)."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    target: str = Field(..., description="Predicted quantity.")
    target_unit: str = Field("", description="Its unit (eV/atom for energies per atom).")
    members: list[str] = Field(..., description="Member folders, relative to the ensemble folder.")
    architecture: CGATConfig = Field(default_factory=CGATConfig)
    seeds: list[int] = Field(default_factory=list, description="Seed of each member.")
    split: dict[str, Any] = Field(default_factory=dict, description="Fractions and sizes of train/val/test.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Member and ensemble MAEs (target units).")
    train_config: dict[str, Any] = Field(default_factory=dict)
    init_from: str | None = None
    transfer: str | None = None
    keep_normalization: bool = False
    command: str | None = Field(None, description="The exact command that trained it.")
    data: list[str] = Field(default_factory=list, description="Training data files.")
    n_structures: int = 0
    train_data_hash: str = ""
    wall_time_s: float | None = None
    hardware: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    created_utc: str = ""


class CGATEnsemble:
    """Trained CGAT members and their descriptions; predicts mean and uncertainty.

    Parameters
    ----------
    models : sequence of CGAT
    metas : sequence of ModelMeta
        One per model (normalisation, target, ...); all must share target and unit.
    info : EnsembleInfo, optional
        The folder index (written by :meth:`save`); built from ``metas`` when omitted.
    """

    def __init__(self, models: Sequence[torch.nn.Module], metas: Sequence[ModelMeta], info: EnsembleInfo | None = None):
        if len(models) == 0 or len(models) != len(metas):
            raise ValueError("need one ModelMeta per model and at least one model")
        targets = {(m.target, m.target_unit) for m in metas}
        if len(targets) != 1:
            raise CheckpointError(f"ensemble members predict different targets: {sorted(targets)}")
        self.models = list(models)
        self.metas = list(metas)
        self.info = info or EnsembleInfo(
            target=metas[0].target,
            target_unit=metas[0].target_unit,
            members=[f"member_{k}" for k in range(len(models))],
            architecture=metas[0].architecture,
            seeds=[m.seed for m in metas],
        )
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"CGATEnsemble(n_members={len(self)}, target={self.target!r}, unit={self.target_unit!r})"

    @property
    def target(self) -> str:
        return self.metas[0].target

    @property
    def target_unit(self) -> str:
        return self.metas[0].target_unit

    @property
    def n_neighbors(self) -> int:
        return self.metas[0].architecture.n_neighbors

    def to(self, device: str | torch.device) -> CGATEnsemble:
        """Move every member to ``device`` (``'auto'`` picks cuda when available)."""
        self.device = resolve_device(device)
        for m in self.models:
            m.to(self.device)
        return self

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> CGATEnsemble:
        """Load an ensemble folder (``ensemble.json``) or a single model folder as a one-member ensemble."""
        from screener.cgat.transfer import resolve_init_dirs

        d = Path(directory)
        member_dirs = resolve_init_dirs(d)
        info = None
        if (d / ENSEMBLE_INDEX).is_file():
            try:
                info = EnsembleInfo.model_validate_json((d / ENSEMBLE_INDEX).read_text())
            except ValueError as exc:
                raise CheckpointError(f"{d / ENSEMBLE_INDEX}: unreadable ensemble index ({exc})") from None
        loaded = [load_model(m) for m in member_dirs]
        ens = cls([m for m, _ in loaded], [meta for _, meta in loaded], info)
        return ens.to(device)

    @classmethod
    def load_members(cls, member_dirs: Sequence[str | Path], *, device: str | torch.device = "cpu") -> CGATEnsemble:
        """Ensemble of the given single-model folders."""
        loaded = [load_model(m) for m in member_dirs]
        return cls([m for m, _ in loaded], [meta for _, meta in loaded]).to(device)

    def save(self, directory: str | Path) -> Path:
        """Write ``ensemble.json`` and ``member_<k>/`` (safetensors + config.json) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        members = []
        for k, (model, meta) in enumerate(zip(self.models, self.metas, strict=True)):
            save_model(model, meta, d / f"member_{k}")
            members.append(f"member_{k}")
        self.info = self.info.model_copy(update={"members": members})
        _write_info(self.info, d)
        return d

    @torch.no_grad()
    def predict(
        self,
        inputs: Sequence[CrystalGraph] | Sequence[Any],
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        cache_dir: str | Path | None = None,
    ) -> EnsemblePrediction:
        """Mean, epistemic std and aleatoric std in target units.

        Parameters
        ----------
        inputs : sequence of CrystalGraph or of pymatgen Structure
            Structures are turned into graphs with the members' ``n_neighbors`` (invalid ones raise
            :class:`~screener.errors.InvalidStructureError`).
        batch_size : int
            Crystals per forward pass.
        num_workers : int
            DataLoader workers collating batches.
        cache_dir : path, optional
            Graph cache used when structures are given.

        Returns
        -------
        EnsemblePrediction
        """
        graphs = self._as_graphs(inputs, cache_dir)
        if len(graphs) == 0:
            empty = np.zeros(0)
            return EnsemblePrediction(mean=empty, std=empty, aleatoric_std=None, members=np.zeros((len(self), 0)))
        preds, aleatoric = [], []
        for model, meta in zip(self.models, self.metas, strict=True):
            mean, alea = predict_model(
                model, graphs, meta.normalization, batch_size=batch_size, device=self.device, num_workers=num_workers
            )
            preds.append(mean)
            # the log-std output is trained only by the robust (Laplace NLL) loss; after plain L1 it is untrained noise
            aleatoric.append(alea if meta.train_config.get("loss") == "robust" else None)
        stacked = np.stack(preds)
        alea_mean = np.mean(np.stack(aleatoric), axis=0) if all(a is not None for a in aleatoric) else None
        return EnsemblePrediction(mean=stacked.mean(0), std=stacked.std(0), aleatoric_std=alea_mean, members=stacked)

    def _as_graphs(self, inputs: Sequence[Any], cache_dir: str | Path | None) -> list[CrystalGraph]:
        items = list(inputs)
        if all(isinstance(x, CrystalGraph) for x in items):
            return items
        from pymatgen.core import Structure

        if all(isinstance(x, Structure) for x in items):
            from screener.graphs import build_graphs

            return list(build_graphs(items, n_neighbors=self.n_neighbors, cache_dir=cache_dir, n_jobs=1))
        raise InvalidInputError("predict() takes a sequence of CrystalGraph or of pymatgen Structure")


def _write_info(info: EnsembleInfo, directory: Path) -> None:
    info = info.model_copy(update={"versions": software_versions()})
    atomic_write_text(directory / ENSEMBLE_INDEX, info.model_dump_json(indent=2) + "\n")


# ---- training ----------------------------------------------------------------------------------------------------

_WORKER_DATA: dict[str, Any] = {}
MemberProgress = Callable[[int, dict[str, Any]], None]


def _init_worker(graphs: list[CrystalGraph], targets: np.ndarray, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER_DATA["graphs"], _WORKER_DATA["targets"] = graphs, targets


def _train_member_in_worker(kwargs: dict[str, Any]) -> dict[str, Any]:
    result = _train_member(graphs=_WORKER_DATA["graphs"], targets=_WORKER_DATA["targets"], **kwargs)
    return {"k": kwargs["k"], "result": result}


def _train_member(
    *,
    k: int,
    graphs: Sequence[CrystalGraph],
    targets: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    directory: Path,
    architecture: CGATConfig,
    train_config: TrainConfig,
    target: str,
    target_unit: str,
    elements: list[str],
    init_dir: Path | None,
    transfer: str | None,
    keep_normalization: bool,
    resume: bool,
    progress: MemberProgress | None = None,
    focus: np.ndarray | None = None,
) -> TrainResult:
    from screener.cgat.model import CGAT
    from screener.cgat.transfer import load_for_transfer

    y_train = targets[train_idx]
    parameters = None
    if init_dir is not None:
        model, init_meta, parameters = load_for_transfer(
            init_dir, transfer or "full", target_unit=target_unit, keep_normalization=keep_normalization
        )
        norm = init_meta.normalization if keep_normalization else Normalization.fit(y_train)
        architecture = init_meta.architecture
    else:
        torch.manual_seed(train_config.seed)
        model = CGAT(architecture)
        norm = Normalization.fit(y_train)
    tr_graphs = [graphs[i] for i in train_idx]
    meta = ModelMeta(
        architecture=architecture,
        normalization=norm,
        target=target,
        target_unit=target_unit,
        embedding=architecture.embedding,
        elements=elements,
        train_data_hash=data_hash(tr_graphs, y_train),
        seed=train_config.seed,
        init_from=str(init_dir) if init_dir is not None else None,
        transfer=transfer if init_dir is not None else None,
    )
    cb = (lambda rec: progress(k, rec)) if progress is not None else None
    return train_model(
        model,
        tr_graphs,
        y_train,
        [graphs[i] for i in val_idx],
        targets[val_idx],
        train_config,
        meta=meta,
        directory=directory,
        parameters=parameters,
        resume=resume,
        progress=cb,
        focus_indices=focus,
    )


def train_ensemble(
    graphs: Sequence[CrystalGraph],
    targets: Sequence[float],
    *,
    directory: str | Path,
    target: str,
    target_unit: str = "",
    architecture: CGATConfig | None = None,
    train_config: TrainConfig | None = None,
    n_members: int = 5,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    member_splits: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    test_indices: Sequence[int] | None = None,
    init: str | Path | None = None,
    transfer: str | None = None,
    keep_normalization: bool = False,
    n_jobs: int = 1,
    resume: bool = True,
    progress: MemberProgress | None = None,
    command: str | None = None,
    data_files: Sequence[str] = (),
    focus_indices: Sequence[int] | None = None,
) -> CGATEnsemble:
    """Train (or fine-tune) an ensemble and write it, with its model card, into ``directory``.

    Parameters
    ----------
    graphs, targets : sequence
        All labelled data; targets in target units.
    directory : path
        Output folder (``ensemble.json``, ``MODEL_CARD.md``, ``member_<k>/``). Re-running with the same
        arguments resumes unfinished members and skips finished ones.
    target, target_unit : str
        Name and unit of the target (e.g. ``formation_energy_per_atom``, ``eV/atom``).
    architecture : CGATConfig, optional
        Network for training from scratch (default: the paper preset); ignored with ``init`` (the checkpoint's
        architecture is kept).
    train_config : TrainConfig, optional
        Optimisation settings; member ``k`` trains with ``seed = train_config.seed + k``.
    n_members : int
        Ensemble size K (default 5).
    split : (train, val, test) fractions
        Used unless ``member_splits`` is given; see :func:`make_splits`.
    member_splits, test_indices : optional
        Explicit (train, val) indices per member and common test indices.
    init : path, optional
        Model or ensemble folder to start from; member ``k`` starts from init member ``k % K_init``.
    transfer : {'full', 'head'}, optional
        Transfer mode (required with ``init``).
    keep_normalization : bool
        Keep the checkpoint's target normalisation instead of re-fitting it on the new data.
    n_jobs : int
        Members trained in parallel processes (1: in sequence, here).
    resume : bool
        Resume interrupted members from their ``train_state.pt``.
    progress : callable(k, record), optional
        Called after each epoch of member ``k`` (sequential) or once per finished member (parallel).
    command, data_files : optional
        Recorded in ``ensemble.json`` and the model card.
    focus_indices : sequence of int, optional
        Structures (indices into ``graphs``) every epoch of every member includes when
        ``train_config.samples_per_epoch`` limits the epochs (a fine-tune's new data; those in a member's
        validation split stay there).

    Returns
    -------
    CGATEnsemble
        The best checkpoint of every member, in eval mode on the CPU.
    """
    from screener.cgat.model_card import write_model_card
    from screener.cgat.transfer import TRANSFER_MODES, resolve_init_dirs

    t0 = time.perf_counter()
    d = Path(directory)
    y = np.asarray(targets, dtype=np.float64)
    graphs = list(graphs)
    if len(graphs) != len(y):
        raise ValueError(f"{len(graphs)} graphs but {len(y)} targets")
    if not np.all(np.isfinite(y)):
        raise InvalidInputError(f"target {target!r} has missing or non-finite values")
    if n_members < 1:
        raise InvalidInputError("an ensemble needs at least one member")
    train_config = train_config or TrainConfig()
    if (init is None) != (transfer is None):
        raise InvalidInputError("transfer needs init (a checkpoint folder) and init needs a transfer mode (full|head)")
    init_dirs: list[Path] = []
    if init is not None:
        if transfer not in TRANSFER_MODES:
            raise InvalidInputError(f"unknown transfer mode {transfer!r}; choose one of {list(TRANSFER_MODES)}")
        init_dirs = resolve_init_dirs(init)
        from screener.cgat.checkpoint import load_meta

        architecture = load_meta(init_dirs[0]).architecture
    architecture = architecture or CGATConfig()
    if member_splits is not None:
        if len(member_splits) != n_members:
            raise InvalidInputError(f"{len(member_splits)} member splits for {n_members} members")
        splits = [(np.sort(np.asarray(a, dtype=np.int64)), np.sort(np.asarray(b, dtype=np.int64))) for a, b in member_splits]
        test = np.sort(np.asarray(test_indices if test_indices is not None else [], dtype=np.int64))
    else:
        test, splits = make_splits(len(graphs), n_members, fractions=split, seed=train_config.seed)
    from screener.data import elements_with_embedding

    elements = sorted(elements_with_embedding(architecture.embedding))
    focus = np.asarray(focus_indices, dtype=np.int64) if focus_indices is not None else None
    d.mkdir(parents=True, exist_ok=True)
    jobs = [
        dict(
            k=k,
            train_idx=splits[k][0],
            val_idx=splits[k][1],
            directory=d / f"member_{k}",
            architecture=architecture,
            train_config=train_config.model_copy(update={"seed": train_config.seed + k}),
            target=target,
            target_unit=target_unit,
            elements=elements,
            init_dir=init_dirs[k % len(init_dirs)] if init_dirs else None,
            transfer=transfer,
            keep_normalization=keep_normalization,
            resume=resume,
            # positions of the focus structures within this member's training split
            focus=np.flatnonzero(np.isin(splits[k][0], focus)) if focus is not None else None,
        )
        for k in range(n_members)
    ]
    dist_env = distributed_env(train_config.ddp, resolve_device(train_config.device).type)
    results: dict[int, TrainResult] = {}
    if n_jobs > 1 and n_members > 1 and not dist_env.enabled:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // min(n_jobs, n_members))
        with ProcessPoolExecutor(
            max_workers=min(n_jobs, n_members),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(graphs, y, threads),
        ) as pool:
            futures = [pool.submit(_train_member_in_worker, job) for job in jobs]
            for fut in as_completed(futures):
                out = fut.result()
                results[out["k"]] = out["result"]
                if progress is not None:
                    progress(out["k"], {"member_done": True, **_last(out["result"])})
    else:
        for job in jobs:
            results[job["k"]] = _train_member(graphs=graphs, targets=y, progress=progress, **job)

    ensemble = CGATEnsemble.load_members([d / f"member_{k}" for k in range(n_members)])
    # one prediction of the validation and test structures serves the metrics and the held-out calibration
    evaluated = evaluated_indices(test, splits)
    pred = (ensemble.predict([graphs[i] for i in evaluated], batch_size=train_config.batch_size)
            if len(evaluated) else None)
    metrics = ensemble_metrics(ensemble, graphs, y, test, splits, results, train_config.batch_size, pred=pred)
    info = EnsembleInfo(
        target=target,
        target_unit=target_unit,
        members=[f"member_{k}" for k in range(n_members)],
        architecture=ensemble.metas[0].architecture,
        seeds=[job["train_config"].seed for job in jobs],
        split={
            "fractions": list(split) if member_splits is None else None,
            "n_train": [int(len(s[0])) for s in splits],
            "n_val": [int(len(s[1])) for s in splits],
            "n_test": int(len(test)),
            "test_seed": train_config.seed,
        },
        metrics=metrics,
        train_config=train_config.model_dump(),
        init_from=str(init) if init is not None else None,
        transfer=transfer,
        keep_normalization=keep_normalization,
        command=command,
        data=[str(f) for f in data_files],
        n_structures=len(graphs),
        train_data_hash=data_hash(graphs, y),
        wall_time_s=round(time.perf_counter() - t0, 3),
        hardware=hardware_description(train_config.device if train_config.device != "auto" else resolve_device()),
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        versions=software_versions(),
    )
    ensemble.info = info
    if dist_env.is_main:
        _write_info(info, d)
        calibration = None
        if member_splits is None:  # the ensemble's own test split: no member trained on it
            cols = np.searchsorted(evaluated, test)
            mean, std = (pred.mean[cols], pred.std[cols]) if len(test) else (np.zeros(0), np.zeros(0))
            calibration = write_held_out_calibration(
                d, mean - y[test], std, command=command,
                source=f"held-out test split ({len(test)} structures) of screener train")
        write_model_card(d, info, ensemble.metas, calibration=calibration)
    return ensemble


def write_held_out_calibration(directory: str | Path, errors: Any, stds: Any, *, source: str,
                               command: str | None = "") -> Any:
    """Fit the spread calibration (power law, :func:`screener.policies.calibration.fit_held_out_calibration`) on an
    ensemble's errors (prediction minus label) and stds on structures no member trained on, write it to
    ``calibration.json`` in ``directory`` (which ``screener run`` and ``screener rank`` read) and return it; with fewer
    than ``HELD_OUT_MIN_ERRORS`` errors nothing is written (a stale file from an earlier run is removed, so it cannot
    describe another model) and None is returned."""
    from screener.campaign.ensemble_model import CALIBRATION_FILENAME, write_spread_calibration
    from screener.policies.calibration import HELD_OUT_MIN_ERRORS, fit_held_out_calibration

    errors = np.asarray(errors, dtype=float)
    if errors.size < HELD_OUT_MIN_ERRORS:
        (Path(directory) / CALIBRATION_FILENAME).unlink(missing_ok=True)
        return None
    fit = fit_held_out_calibration(errors, np.asarray(stds, dtype=float), source=source)
    write_spread_calibration(directory, {"model": fit}, command=command or "")
    return fit


def _last(result: TrainResult) -> dict[str, Any]:
    return {"epoch": result.epochs_run, "best_val_mae": result.best_val_mae, "best_epoch": result.best_epoch}


