"""PBE- and SCAN-level labels of a world from the stand-in calculators (CHGNet 0.3.0 and CHGNet r2scan).

Protocol (documented in docs/world.md):

- **single point** (default, ``relax_steps=0``): the energy of the structure as generated (real crystals as
  published, hypotheticals at their rescaled volume). This is what the world stores as the model input, as CGAT
  does (it predicts relaxed energies from unrelaxed prototypes).
- **short relaxation** (``relax_steps > 0``): FIRE relaxation of positions and cell with the same checkpoint for at
  most ``relax_steps`` steps (``fmax_ev_per_a``); the energy is that of the last step, the input structure stays
  the model input and the relaxed one is kept in ``entry.data["relaxed_structure"]``.

Both fidelities share one graph per structure (the two CHGNet checkpoints use the same 6 A / 3 A cutoffs), built in
parallel processes; the energies then come from batched forward passes of each model. A structure whose graph
cannot be built (isolated atoms) or whose energy is not finite gets NaN.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["LabelConfig", "FidelityLabels", "chgnet_graphs", "predict_energies", "label_structures"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
FIDELITIES = ("pbe", "scan")


@dataclass
class LabelConfig:
    """How structures are labelled.

    Parameters
    ----------
    relax_steps : int
        0: single point at the input structure (default); > 0: FIRE relaxation of at most this many steps.
    fmax_ev_per_a : float
        Force criterion of the relaxation (eV/A).
    batch_size : int
        Structures per CHGNet forward pass.
    n_jobs : int or None
        Processes building graphs (None: all cores; 1: in this process).
    device : str
        Torch device of the models.
    """

    relax_steps: int = 0
    fmax_ev_per_a: float = 0.1
    batch_size: int = 64
    n_jobs: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.relax_steps < 0:
            raise InvalidInputError(f"relax_steps must be >= 0, got {self.relax_steps}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def protocol(self) -> str:
        """``"static"`` or ``"relax<N>"``."""
        return "static" if self.relax_steps == 0 else f"relax{self.relax_steps}"


@dataclass
class FidelityLabels:
    """Energies of one fidelity for a list of structures.

    Attributes
    ----------
    fidelity : str
    energy_per_atom_ev : ndarray, shape (n,)
        NaN where the calculation failed.
    final_structures : list of Structure or None
        Relaxed structures (None for single points).
    failures : dict of int to str
        Index -> reason for every NaN.
    """

    fidelity: str
    energy_per_atom_ev: np.ndarray
    final_structures: list[Structure] | None
    failures: dict[int, str]


# ---- graphs --------------------------------------------------------------------------------------------------------
_CONVERTER: Any = None


def _converter():
    global _CONVERTER
    if _CONVERTER is None:
        from chgnet.graph import CrystalGraphConverter

        # the cutoffs of both shipped checkpoints (0.3.0 and r2scan); checked against the loaded model in _check
        _CONVERTER = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3, algorithm="fast")
    return _CONVERTER


def _graph_chunk(items: list[tuple[int, Structure]]) -> list[tuple[int, Any, str | None]]:
    import torch

    torch.set_num_threads(1)
    out = []
    converter = _converter()
    for index, structure in items:
        try:
            out.append((index, converter(structure, graph_id=str(index)), None))
        except Exception as exc:  # noqa: BLE001 - isolated atoms and friends: the structure is dropped, not the world
            out.append((index, None, f"graph: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
    return out


def _graph_chunk_bytes(items: list[tuple[int, Structure]]) -> bytes:
    """:func:`_graph_chunk` in a worker, pickled to plain bytes.

    Returned as is, the graphs' tensors would cross the process boundary through torch's shared-memory reducer: one
    open file descriptor per tensor for as long as the graph lives, which exhausts the descriptor limit ("Too many
    open files") at about 20,000 structures. Plain pickle copies the data instead.
    """
    return pickle.dumps(_graph_chunk(items), protocol=pickle.HIGHEST_PROTOCOL)


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs < 1:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return n_jobs


def chgnet_graphs(
    structures: Sequence[Structure],
    *,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Any], dict[int, str]]:
    """CHGNet crystal graphs of many structures, built in ``n_jobs`` processes.

    Returns
    -------
    graphs : list
        CHGNet ``CrystalGraph`` per structure (None where it failed).
    failures : dict of int to str
        Index -> reason.
    """
    n = len(structures)
    jobs = min(_n_jobs(n_jobs), max(1, n // 16))
    items = list(enumerate(structures))
    chunk = max(1, math.ceil(n / (4 * jobs)))
    chunks = [items[i : i + chunk] for i in range(0, n, chunk)]
    graphs: list[Any] = [None] * n
    failures: dict[int, str] = {}
    done = 0

    def collect(results: list[tuple[int, Any, str | None]]) -> None:
        nonlocal done
        for index, graph, error in results:
            graphs[index] = graph
            if error is not None:
                failures[index] = error
        done += len(results)
        if progress is not None:
            progress(done, n)

    if jobs <= 1:
        for part in chunks:
            collect(_graph_chunk(part))
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method)) as pool:
            for blob in pool.map(_graph_chunk_bytes, chunks):
                collect(pickle.loads(blob))  # noqa: S301 - bytes from our own worker process
    return graphs, failures


def _check(model: Any) -> None:
    conv = model.graph_converter
    if (conv.atom_graph_cutoff, conv.bond_graph_cutoff) != (6, 3):
        raise InvalidInputError(
            f"CHGNet checkpoint uses cutoffs {conv.atom_graph_cutoff}/{conv.bond_graph_cutoff}; the world builder "
            "shares graphs built with 6/3"
        )


def predict_energies(
    graphs: Sequence[Any],
    fidelity: str,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Energies (eV/atom) of prebuilt CHGNet graphs with the checkpoint of ``fidelity``; NaN for None graphs."""
    import torch

    from screener.calculators.chgnet_models import CHECKPOINTS, load_chgnet
    from screener.calculators.standin import CALL_COUNTS

    model = load_chgnet(CHECKPOINTS[fidelity], device)
    _check(model)
    out = np.full(len(graphs), np.nan)
    valid = [i for i, g in enumerate(graphs) if g is not None]
    CALL_COUNTS[CHECKPOINTS[fidelity]] += len(valid)
    # batch structures of similar size together: fewer padded atoms, same result per structure
    valid.sort(key=lambda i: (graphs[i].atomic_number.shape[0], i))
    with torch.no_grad():
        for start in range(0, len(valid), batch_size):
            idx = valid[start : start + batch_size]
            preds = model.predict_graph([graphs[i] for i in idx], task="e", batch_size=batch_size)
            if isinstance(preds, dict):
                preds = [preds]
            for i, pred in zip(idx, preds, strict=True):
                out[i] = float(np.asarray(pred["e"]).reshape(-1)[0])
            if progress is not None:
                progress(min(start + batch_size, len(valid)), len(valid))
    return out


def _relax(structures: Sequence[Structure], fidelity: str, config: LabelConfig, progress) -> FidelityLabels:
    import warnings

    from chgnet.model import StructOptimizer

    from screener.calculators.chgnet_models import CHECKPOINTS, load_chgnet

    optimizer = StructOptimizer(model=load_chgnet(CHECKPOINTS[fidelity], config.device), use_device=config.device)
    energies = np.full(len(structures), np.nan)
    finals: list[Any] = [None] * len(structures)
    failures: dict[int, str] = {}
    for i, structure in enumerate(structures):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = optimizer.relax(
                    structure, fmax=config.fmax_ev_per_a, steps=config.relax_steps, relax_cell=True, verbose=False
                )
            final = result["final_structure"]
            energies[i] = float(result["trajectory"].energies[-1]) / len(final)
            finals[i] = final
        except Exception as exc:  # noqa: BLE001
            failures[i] = f"relax: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if progress is not None:
            progress(f"relax {fidelity}", i + 1, len(structures))
    return FidelityLabels(fidelity, energies, finals, failures)


def label_structures(
    structures: Sequence[Structure],
    config: LabelConfig | None = None,
    *,
    fidelities: Sequence[str] = FIDELITIES,
    progress: ProgressCallback | None = None,
) -> dict[str, FidelityLabels]:
    """Label structures at every fidelity with the stand-in calculators.

    Parameters
    ----------
    structures : sequence of Structure
        Model inputs (not modified).
    config : LabelConfig, optional
        Protocol (single point by default).
    fidelities : sequence of {"pbe", "scan"}
    progress : callable, optional
        ``progress(stage, done, total)``; stages ``"graphs"``, ``"pbe"``, ``"scan"`` (or ``"relax pbe"``...).

    Returns
    -------
    dict of str to FidelityLabels
    """
    config = config or LabelConfig()
    for fidelity in fidelities:
        if fidelity not in FIDELITIES:
            raise InvalidInputError(f"unknown fidelity {fidelity!r}; choose from {FIDELITIES}")
    if config.relax_steps > 0:
        return {f: _relax(structures, f, config, progress) for f in fidelities}
    graphs, failures = chgnet_graphs(
        structures,
        n_jobs=config.n_jobs,
        progress=None if progress is None else (lambda d, t: progress("graphs", d, t)),
    )
    out = {}
    for fidelity in fidelities:
        energies = predict_energies(
            graphs,
            fidelity,
            batch_size=config.batch_size,
            device=config.device,
            progress=None if progress is None else (lambda d, t, f=fidelity: progress(f, d, t)),
        )
        fail = dict(failures)
        for i in np.flatnonzero(~np.isfinite(energies)):
            fail.setdefault(int(i), "non-finite energy")
        out[fidelity] = FidelityLabels(fidelity, energies, None, fail)
    return out
