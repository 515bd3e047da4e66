"""High-level model functions used by the CLI and the campaign: files in, trained ensembles / prediction tables out.

Everything the ``screener train``, ``screener predict`` and ``screener demo`` commands do is one call here.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import CheckpointError, InvalidInputError

__all__ = [
    "TRAIN_PRESETS",
    "guess_target_unit",
    "train_config_for_preset",
    "TrainSummary",
    "PredictSummary",
    "DemoSummary",
    "train_from_files",
    "predict_files",
    "run_demo",
    "DEMO_TARGET",
]

logger = logging.getLogger(__name__)

TRAIN_PRESETS = ("small", "paper")
DEMO_TARGET = "formation_energy_per_atom"
_EV_PER_ATOM = (
    "per_atom",
    "e_form",
    "e_above_hull",
    "e_hull",
    "e_phase_separation",
    "formation_energy",
    "heat_all",
    "heat_ref",
    "E_f",
)

EpochCallback = Callable[[int, dict[str, Any]], None]
CountCallback = Callable[[int, int], None]


def guess_target_unit(target: str) -> str:
    """Unit of a well-known target name: ``eV/atom`` for per-atom energies, ``eV`` for band gaps, else ``''``."""
    name = target.lower()
    if any(key.lower() in name for key in _EV_PER_ATOM):
        return "eV/atom"
    if "gap" in name:
        return "eV"
    return ""


def train_config_for_preset(
    preset: str,
    *,
    transfer: bool = False,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    **overrides: Any,
):
    """Training settings of a preset.

    ``paper``: AdamW lr 1.25e-4, batch 64, 390 epochs, cyclical period 130 epochs (70 for transfer), validation
    every 2 epochs. ``small``: for CPUs and tests: lr 1e-3, batch 16, 20 epochs, one LR cycle over the run,
    validation every epoch.
    """
    from screener.cgat.training import TrainConfig

    if preset not in TRAIN_PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; choose one of {list(TRAIN_PRESETS)}")
    if preset == "paper":
        n_epochs = epochs or 390
        values: dict[str, Any] = dict(
            epochs=n_epochs, batch_size=batch_size or 64, lr=1.25e-4, lr_period_epochs=70.0 if transfer else 130.0,
            val_every=2,
        )
    else:
        n_epochs = epochs or 20
        values = dict(
            epochs=n_epochs, batch_size=batch_size or 16, lr=1e-3, lr_period_epochs=float(n_epochs), val_every=1
        )
    values.update(seed=seed, device=device, **overrides)
    return TrainConfig(**values)


@dataclass
class TrainSummary:
    """What :func:`train_from_files` did."""

    directory: Path
    target: str
    target_unit: str
    n_structures: int
    n_skipped: int
    n_members: int
    metrics: dict[str, Any]
    wall_time_s: float
    ensemble: Any = field(repr=False, default=None)


@dataclass
class PredictSummary:
    """What :func:`predict_files` wrote."""

    output: Path
    n_predicted: int
    n_skipped: int
    columns: list[str]
    ids: list[str] = field(default_factory=list, repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)
    std: np.ndarray | None = field(default=None, repr=False)


def _read_labelled(
    data: Sequence[str | Path], target: str | None, skip_invalid: bool, progress: CountCallback | None = None
):
    from screener.structures import read_structures

    if not data:
        raise InvalidInputError("no input files given")
    result = read_structures(list(data), target=target, skip_invalid=skip_invalid, progress=progress)
    if not result.records:
        hint = f" with target {target!r}" if target else ""
        reasons = "; ".join(str(e) for e in result.skipped[:3])
        raise InvalidInputError(f"no valid structures{hint} in {', '.join(map(str, data))}" + (f" ({reasons})" if reasons else ""))
    return result


def _graphs_for(records, n_neighbors: int, skip_invalid: bool, cache_dir, progress: CountCallback | None):
    from screener.graphs import build_graphs

    graphs = build_graphs(
        [r.structure for r in records],
        n_neighbors=n_neighbors,
        structure_ids=[r.structure_id for r in records],
        skip_invalid=skip_invalid,
        cache_dir=cache_dir,
        progress=progress or False,
    )
    kept = [(r, g) for r, g in zip(records, graphs, strict=True) if g is not None]
    return [r for r, _ in kept], [g for _, g in kept], len(records) - len(kept)


def train_from_files(
    data: Sequence[str | Path],
    *,
    target: str,
    out_dir: str | Path,
    preset: str = "paper",
    epochs: int | None = None,
    n_members: int = 5,
    init: str | Path | None = None,
    transfer: str | None = None,
    keep_normalization: bool = False,
    skip_invalid: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    target_unit: str | None = None,
    loss: str = "l1",
    n_jobs: int = 1,
    device: str = "auto",
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    command: str | None = None,
    progress: EpochCallback | None = None,
    graph_progress: CountCallback | None = None,
) -> TrainSummary:
    """Read labelled structures, build graphs, train (or fine-tune) an ensemble, write it with its model card.

    Parameters
    ----------
    data : sequence of path
        Files/folders in any format of :func:`screener.structures.read_structures`.
    target : str
        Label to learn (a column, ``entry.data`` key or extxyz info key), e.g. ``formation_energy_per_atom``.
    out_dir : path
        Ensemble folder to write (re-running resumes unfinished members).
    preset : {'paper', 'small'}
        Architecture and training defaults (with ``init`` the architecture comes from the checkpoint).
    epochs, batch_size, seed, loss, device, num_workers : optional
        Override the preset's training settings.
    n_members : int
        Ensemble size.
    init, transfer : optional
        Checkpoint folder to start from and transfer mode (``full`` or ``head``); both or neither.
    keep_normalization : bool
        Keep the checkpoint's target mean/std instead of re-fitting them.
    skip_invalid : bool
        Skip (and report) invalid structures instead of stopping at the first.
    target_unit : str, optional
        Unit of the target; guessed from its name when omitted (:func:`guess_target_unit`).
    n_jobs : int
        Members trained in parallel processes.
    cache_dir : path, optional
        Graph cache folder.
    command : str, optional
        The command line, recorded in the model card.
    progress : callable(k, record), optional
        Per-epoch callback (see :func:`screener.cgat.ensemble.train_ensemble`).
    graph_progress : callable(done, total), optional
        Called while graphs are built.

    Returns
    -------
    TrainSummary
    """
    from screener.cgat.config import get_preset
    from screener.cgat.ensemble import train_ensemble
    from screener.cgat.checkpoint import load_model
    from screener.cgat.transfer import TRANSFER_MODES, resolve_init_dirs

    t0 = time.perf_counter()
    if transfer is not None and init is None:
        raise InvalidInputError("--transfer needs --init (the checkpoint folder to start from)")
    if init is not None and transfer is None:
        raise InvalidInputError("--init needs --transfer full|head")
    if transfer is not None and transfer not in TRANSFER_MODES:
        raise InvalidInputError(f"unknown transfer mode {transfer!r}; choose one of {list(TRANSFER_MODES)}")
    if keep_normalization and init is None:
        raise InvalidInputError("--keep-normalization only applies with --init")
    if preset not in TRAIN_PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; choose one of {list(TRAIN_PRESETS)}")
    from screener.graphs.store import is_store

    if data and any(is_store(p) for p in data):  # graph stores (screener featurize): streamed, never loaded whole
        return _train_from_stores(data, target=target, out_dir=out_dir, preset=preset, epochs=epochs,
                                  n_members=n_members, init=init, seed=seed, batch_size=batch_size,
                                  target_unit=target_unit, loss=loss, device=device, num_workers=num_workers,
                                  command=command, progress=progress, t0=t0)
    unit = target_unit if target_unit is not None else guess_target_unit(target)
    architecture = get_preset(preset)
    if init is not None:
        for member_dir in resolve_init_dirs(init):  # fail early (CheckpointError) on a missing/incompatible checkpoint
            _, meta = load_model(member_dir)
        if meta.architecture != architecture:
            logger.info("transfer keeps the checkpoint's architecture (preset %r applies to training settings only)", preset)
        architecture = meta.architecture
        if keep_normalization and meta.target_unit and unit and meta.target_unit != unit:
            raise CheckpointError(
                f"{init}: --keep-normalization needs the same target unit (checkpoint {meta.target_unit!r}, new {unit!r})"
            )
    config = train_config_for_preset(
        preset,
        transfer=init is not None,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        loss=loss,
        num_workers=num_workers,
    )
    result = _read_labelled(data, target, skip_invalid)
    records, graphs, n_bad_graphs = _graphs_for(
        result.records, architecture.n_neighbors, skip_invalid, cache_dir, graph_progress
    )
    if not graphs:
        raise InvalidInputError("no structure could be turned into a graph")
    targets = np.array([r.targets[target] for r in records], dtype=np.float64)
    ensemble = train_ensemble(
        graphs,
        targets,
        directory=out_dir,
        target=target,
        target_unit=unit,
        architecture=architecture,
        train_config=config,
        n_members=n_members,
        init=init,
        transfer=transfer,
        keep_normalization=keep_normalization,
        n_jobs=n_jobs,
        progress=progress,
        command=command,
        data_files=[str(p) for p in data],
    )
    return TrainSummary(
        directory=Path(out_dir),
        target=target,
        target_unit=unit,
        n_structures=len(graphs),
        n_skipped=len(result.skipped) + n_bad_graphs,
        n_members=len(ensemble),
        metrics=ensemble.info.metrics,
        wall_time_s=time.perf_counter() - t0,
        ensemble=ensemble,
    )


def unit_suffix(unit: str | None) -> str:
    """Column-name suffix of a unit: ``"eV/atom"`` -> ``"_ev_per_atom"``, ``"meV"`` -> ``"_mev"``, ``""`` -> ``""``."""
    import re

    text = re.sub(r"[^0-9a-z]+", "_", (unit or "").lower().replace("/", "_per_")).strip("_")
    return f"_{text}" if text else ""


def _train_from_stores(data, *, init, t0: float, **kwargs: Any) -> TrainSummary:
    """``train_from_files`` on graph stores: streaming pre-training (:mod:`screener.cgat.streaming`)."""
    from screener.cgat.streaming import train_streaming_ensemble
    from screener.graphs.store import is_store

    not_stores = [str(p) for p in data if not is_store(p)]
    if not_stores:
        raise InvalidInputError(f"--data mixes graph stores and structure files ({not_stores[0]}); featurise the "
                                "files into a store first (screener featurize)")
    if init is not None:
        raise InvalidInputError("--init (fine-tuning) takes structure files, not graph stores")
    ensemble = train_streaming_ensemble(data, **kwargs)
    return TrainSummary(
        directory=Path(kwargs["out_dir"]), target=ensemble.target, target_unit=ensemble.target_unit,
        n_structures=ensemble.info.n_structures, n_skipped=int(ensemble.info.split.get("n_missing_target", 0)),
        n_members=len(ensemble), metrics=ensemble.info.metrics, wall_time_s=time.perf_counter() - t0,
        ensemble=ensemble,
    )


def predict_files(
    model_dir: str | Path,
    paths: Sequence[str | Path],
    output: str | Path,
    *,
    skip_invalid: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    graph_progress: CountCallback | None = None,
) -> PredictSummary:
    """Predict every structure in ``paths`` with the ensemble in ``model_dir`` and write a CSV table.

    The table has one row per structure, in input order, with columns ``id``, ``formula`` (reduced formula),
    ``<target>_mean_<unit>``, ``<target>_std_<unit>`` (epistemic, across members) and, when the members have a
    log-std output, ``<target>_aleatoric_std_<unit>``, the unit spelled as in :func:`unit_suffix` (e.g.
    ``e_form_mean_ev_per_atom``; no suffix for a target without a unit). Skipped structures (``skip_invalid``) have
    no row and are logged.

    Returns
    -------
    PredictSummary
    """
    from screener.cgat.ensemble import CGATEnsemble

    ensemble = CGATEnsemble.load(model_dir, device=device)
    result = _read_labelled(paths, None, skip_invalid)
    records, graphs, n_bad = _graphs_for(result.records, ensemble.n_neighbors, skip_invalid, cache_dir, graph_progress)
    pred = ensemble.predict(graphs, batch_size=batch_size, num_workers=num_workers)
    t, unit = ensemble.target, unit_suffix(ensemble.target_unit)
    columns = ["id", "formula", f"{t}_mean{unit}", f"{t}_std{unit}"]
    if pred.aleatoric_std is not None:
        columns.append(f"{t}_aleatoric_std{unit}")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, rec in enumerate(records):
            row = [rec.structure_id, rec.structure.composition.reduced_formula, f"{pred.mean[i]:.6f}", f"{pred.std[i]:.6f}"]
            if pred.aleatoric_std is not None:
                row.append(f"{pred.aleatoric_std[i]:.6f}")
            writer.writerow(row)
    n_skipped = len(result.skipped) + n_bad
    if n_skipped:
        logger.warning("%d invalid structures skipped (no row in %s)", n_skipped, out)
    return PredictSummary(
        output=out,
        n_predicted=len(records),
        n_skipped=n_skipped,
        columns=columns,
        ids=[r.structure_id for r in records],
        mean=pred.mean,
        std=pred.std,
    )


@dataclass
class DemoSummary:
    """Result of :func:`run_demo`: held-out rows with true and predicted values."""

    model_dir: Path
    target: str
    target_unit: str
    rows: list[dict[str, Any]]
    mae: float
    target_std: float
    train: TrainSummary = field(repr=False, default=None)


def demo_data_path() -> Path:
    """The demo's labelled set: 200 MP-20 structures with formation energies (screener/data/demo)."""
    from screener.data import data_path

    return Path(data_path("demo")) / "mp20_train_200.csv"


def run_demo(
    out_dir: str | Path,
    *,
    n_members: int = 3,
    epochs: int | None = 10,
    n_holdout: int = 20,
    seed: int = 0,
    progress: EpochCallback | None = None,
    command: str | None = None,
) -> DemoSummary:
    """Train a small ensemble on the shipped MP-20 subset and predict structures it never saw.

    The last ``n_holdout`` structures of the demo set are held out; the rest train a ``small``-preset ensemble in
    ``out_dir/model``; the held-out ones are predicted into ``out_dir/predictions.csv``.
    """
    from screener.structures import read_structures

    out = Path(out_dir)
    src = demo_data_path()
    records = read_structures([src], target=DEMO_TARGET).records
    if len(records) <= n_holdout + 10:
        raise InvalidInputError(f"demo set too small ({len(records)} structures) for {n_holdout} held out")
    # write the two halves as files so the demo runs exactly what a user would run
    train_file, holdout_file = out / "demo_train.extxyz", out / "demo_holdout.extxyz"
    from screener.structures import write_structures

    out.mkdir(parents=True, exist_ok=True)
    write_structures(records[:-n_holdout], train_file)
    write_structures(records[-n_holdout:], holdout_file)
    summary = train_from_files(
        [train_file],
        target=DEMO_TARGET,
        out_dir=out / "model",
        preset="small",
        epochs=epochs,
        n_members=n_members,
        seed=seed,
        progress=progress,
        command=command,
    )
    pred = predict_files(out / "model", [holdout_file], out / "predictions.csv")
    truth = {r.structure_id: r.targets[DEMO_TARGET] for r in records[-n_holdout:]}
    formulas = {r.structure_id: r.structure.composition.reduced_formula for r in records[-n_holdout:]}
    rows = [
        {"id": i, "formula": formulas[i], "true": truth[i], "mean": float(m), "std": float(s)}
        for i, m, s in zip(pred.ids, pred.mean, pred.std, strict=True)
    ]
    y = np.array([r["true"] for r in rows])
    return DemoSummary(
        model_dir=out / "model",
        target=DEMO_TARGET,
        target_unit=summary.target_unit,
        rows=rows,
        mae=float(np.mean(np.abs(y - np.array([r["mean"] for r in rows])))),
        target_std=float(y.std()),
        train=summary,
    )
