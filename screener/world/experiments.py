"""Learning experiments on a world: the PBE -> SCAN transfer and scaling-law benchmarks (bench/transfer.py,
bench/scaling.py) share these helpers.

A world gives, for every structure, the unrelaxed input (the model input) and four labels: E_form and E_hull at the
PBE and at the SCAN level. :func:`load_world_data` builds the CGAT graphs once (in parallel processes);
:func:`train_and_test` trains an ensemble on one label of some structures, optionally starting from a PBE
checkpoint (``transfer="full"`` or ``"head"``), and scores it on a fixed test set.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import InvalidInputError

__all__ = [
    "PROPERTIES",
    "add_experiment_arguments",
    "apply_mode_defaults",
    "configure_run",
    "write_result",
    "WorldData",
    "ensure_world",
    "bench_environment",
    "load_world_data",
    "split_indices",
    "train_and_test",
    "nested_subsets",
]

logger = logging.getLogger(__name__)

#: entry.data key -> name used in results.
PROPERTIES = {"e_above_hull": "e_hull", "e_form": "e_form"}


@dataclass
class WorldData:
    """Graphs and labels of a world, aligned by structure.

    Attributes
    ----------
    structure_ids : list of str
    graphs : list of CrystalGraph
    labels : dict
        ``(fidelity, key) -> ndarray`` with key ``"e_form"`` or ``"e_above_hull"`` (eV/atom).
    world_dir : Path
    manifest : WorldManifest
    """

    structure_ids: list[str]
    graphs: list[Any]
    labels: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    world_dir: Path | None = None
    manifest: Any = None

    def __len__(self) -> int:
        return len(self.structure_ids)


def load_world_data(
    world_dir: str | Path, *, n_jobs: int | None = None, cache_dir: str | Path | None = None
) -> WorldData:
    """Read a world and build the CGAT graph of every structure (in ``n_jobs`` processes)."""
    from screener.graphs import build_graphs
    from screener.world.io import read_world

    world = read_world(world_dir)
    ids = world.structure_ids("pbe")
    if ids != world.structure_ids("scan"):
        raise InvalidInputError(f"{world_dir}: the PBE and SCAN shards list different structures")
    structures = [e.structure for e in world.entries["pbe"]]
    graphs = build_graphs(structures, n_jobs=n_jobs, cache_dir=cache_dir, structure_ids=ids)
    data = WorldData(structure_ids=ids, graphs=list(graphs), world_dir=Path(world_dir), manifest=world.manifest)
    for fidelity in ("pbe", "scan"):
        for key in PROPERTIES:
            data.labels[(fidelity, key)] = np.array([float(e.data[key]) for e in world.entries[fidelity]])
    return data


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Disjoint random index sets of sizes ``round(f * n)`` (a seeded permutation cut into pieces), each sorted."""
    if sum(fractions) > 1 + 1e-9:
        raise InvalidInputError(f"fractions {list(fractions)} add up to more than 1")
    order = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for f in fractions:
        k = int(round(f * n))
        out.append(np.sort(order[start : start + k]))
        start += k
    return out


def nested_subsets(pool: np.ndarray, sizes: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """Nested random subsets of ``pool`` (the size-100 set contains the size-50 set), as in learning curves."""
    order = np.random.default_rng(seed).permutation(np.asarray(pool))
    return {int(s): np.sort(order[: int(s)]) for s in sizes if int(s) <= len(order)}


def train_and_test(
    data: WorldData,
    fidelity: str,
    key: str,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    directory: str | Path,
    preset: str = "small",
    epochs: int | None = None,
    n_members: int = 1,
    init: str | Path | None = None,
    transfer: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Train an ensemble on one label of ``train_idx`` and return its MAE on ``test_idx``.

    Each member holds out its own random ``val_fraction`` of the training indices for early-stopping selection
    (the best validation epoch is kept); the test set is never seen.

    Returns
    -------
    dict
        ``test_mae_ev_per_atom``, ``member_test_mae``, ``n_train``, ``n_test``, ``wall_s``, ``directory``.
    """
    from screener.cgat import get_preset, train_ensemble
    from screener.cgat.api import train_config_for_preset

    y = data.labels[(fidelity, key)]
    train_idx = np.asarray(train_idx)
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_members):
        perm = rng.permutation(train_idx)
        n_val = max(1, int(round(val_fraction * len(perm))))
        splits.append((np.sort(perm[n_val:]), np.sort(perm[:n_val])))
    config = train_config_for_preset(
        preset, transfer=transfer is not None, epochs=epochs, batch_size=batch_size, seed=seed, device=device
    )
    t0 = time.perf_counter()
    ensemble = train_ensemble(
        data.graphs,
        y,
        directory=directory,
        target=f"{key}_{fidelity}",
        target_unit="eV/atom",
        architecture=None if init is not None else get_preset(preset),
        train_config=config,
        n_members=n_members,
        member_splits=splits,
        test_indices=test_idx,
        init=init,
        transfer=transfer,
        resume=False,
    )
    metrics = ensemble.info.metrics if ensemble.info is not None else {}
    return {
        "test_mae_ev_per_atom": float(metrics["ensemble_test_mae"]),
        "member_test_mae": [float(v) for v in metrics.get("member_test_mae", [])],
        "n_train": int(len(train_idx)),
        "n_test": int(len(test_idx)),
        "wall_s": round(time.perf_counter() - t0, 2),
        "directory": str(directory),
    }


def ensure_world(
    world: str | Path | None, work_dir: str | Path, size: int, seed: int, n_jobs: int | None = None
) -> tuple[Path, float]:
    """The world to experiment on: ``world`` if given, else ``<work_dir>/world_s<size>_seed<seed>`` (built once, then
    reused while its manifest says the same size and seed). Returns (folder, build seconds; 0 when reused)."""
    import json

    from screener.world.build import build_world
    from screener.world.io import MANIFEST_NAME

    if world is not None:
        return Path(world), 0.0
    out = Path(work_dir) / f"world_s{size}_seed{seed}"
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        raw = json.loads(manifest.read_text())
        if raw.get("size_requested") == size and raw.get("seed") == seed:
            logger.info("reusing world %s", out)
            return out, 0.0
    t0 = time.perf_counter()
    command = f"ensure_world(size={size}, seed={seed})"
    build_world(out, size=size, seed=seed, n_jobs=n_jobs, overwrite=True, command=command)
    return out, round(time.perf_counter() - t0, 1)


def bench_environment(device: str = "cpu") -> dict[str, Any]:
    """Hardware (CPU model from /proc/cpuinfo, cores, GPU) and versions for benchmark records."""
    from screener.world.build import hardware_description, software_versions

    try:
        import torch

        cuda = device != "cpu" and torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    return {
        "hardware": hardware_description("cuda" if cuda else "cpu"),
        "device": "cuda" if cuda else "cpu",
        "versions": software_versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options the world experiments share (world, seed, model size, device, threads, output)."""
    parser.add_argument("--quick", action="store_true", help="CPU preset: small world, small model, few epochs.")
    parser.add_argument("--world", type=Path, help="Existing world folder (default: build one in --work-dir).")
    parser.add_argument("--size", type=int, help="Structures of the world to build.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the world, the splits and the subsets.")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/screener-bench"), help="Worlds and checkpoints.")
    parser.add_argument("--preset", choices=["small", "paper"], help="CGAT preset.")
    parser.add_argument("--members", type=int, help="Ensemble members.")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="Share of structures in the SCAN test set.")
    parser.add_argument("--device", default="auto", help="Torch device for training (auto, cpu, cuda).")
    parser.add_argument("--n-jobs", type=int, default=None, help="Processes for graphs (default: all cores).")
    parser.add_argument("--threads", type=int, default=1, help="Torch CPU threads for training (default 1: on a "
                        "shared 2-core CPU, 2 threads were ~6x slower).")
    parser.add_argument("--output", type=Path, help="JSON result (default bench/results/<name>[_quick|_custom].json).")


def apply_mode_defaults(args: argparse.Namespace, quick: dict[str, Any], full: dict[str, Any]) -> None:
    """Fill every option left unset from the ``--quick`` or the full preset, and name the mode in ``args.mode``.

    The mode is ``quick``/``full`` when every preset setting is the preset's, else ``custom`` (the result's command
    line then says what ran), so that a smaller run is never recorded as the full one. ``args.result_suffix``
    (``_quick``, ``_custom`` or empty) names the default result files to match.
    """
    preset = quick if args.quick else full
    overridden = [key for key, value in preset.items() if getattr(args, key) not in (None, value)]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    base = "quick (CPU, small preset, toy world)" if args.quick else "full"
    if overridden:
        changed = ", ".join(f"{key}={getattr(args, key)}" for key in overridden)
        args.mode = f"custom ({'quick' if args.quick else 'full'} preset with {changed})"
    elif args.world is not None:
        args.mode = f"{base} settings on the given world"
    else:
        args.mode = base
    args.result_suffix = "_quick" if args.quick else "_custom" if overridden else ""


def configure_run(threads: int | None) -> None:
    """Warnings-only logging and the torch CPU thread count of a benchmark run."""
    logging.basicConfig(level=logging.WARNING)
    if threads:
        import torch

        torch.set_num_threads(threads)


def write_result(out: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Save a benchmark result as JSON (unless ``path`` is None) and print it as the one JSON line that ends the
    benchmark's output."""
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out
