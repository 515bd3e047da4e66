"""Build many crystal graphs: cache-aware, in parallel over CPU cores, order preserved.

The parent process turns each Structure into plain arrays (:func:`~screener.graphs.build.structure_arrays`, cheap
to pickle, unlike a Structure) and sends them in chunks to a :class:`~concurrent.futures.ProcessPoolExecutor`.
Each worker hashes, looks the graph up in the cache, builds it on a miss and stores it. Few structures or
``n_jobs=1`` run in the calling process.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from screener.errors import InvalidStructureError
from screener.graphs.build import StructureArrays, graph_from_arrays, structure_arrays
from screener.graphs.cache import GraphCache, graph_key
from screener.graphs.graph import CrystalGraph

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["build_graphs", "available_cpus", "SERIAL_THRESHOLD"]

logger = logging.getLogger(__name__)

#: Fewer structures than this are built in the calling process: one core builds ~4,000 small crystals/s, and
#: starting workers costs ~0.1-0.3 s with fork (~2 s with forkserver or spawn, which re-import pymatgen).
SERIAL_THRESHOLD: int = 1000
_MAX_CHUNK = 256

ProgressCallback = Callable[[int, int], None]
# What a worker returns per structure: a graph, or (structure_id, reason) for an invalid one (InvalidStructureError
# itself does not survive pickling: its __init__ takes two arguments).
_Outcome = CrystalGraph | tuple[str, str]


def available_cpus() -> int:
    """CPU cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _build_chunk(
    tasks: Sequence[StructureArrays], n_neighbors: int, cache_dir: str | None
) -> list[_Outcome]:
    """Worker: graphs of ``tasks`` (cache first)."""
    cache = GraphCache(cache_dir) if cache_dir is not None else None
    out: list[_Outcome] = []
    for arrays in tasks:
        try:
            if cache is None:
                out.append(graph_from_arrays(arrays, n_neighbors=n_neighbors))
                continue
            key = graph_key(arrays.lattice_matrix, arrays.frac_coords, arrays.atomic_numbers, n_neighbors, arrays.pbc)
            graph = cache.get_by_key(key, structure_id=arrays.structure_id)
            if graph is None:
                graph = graph_from_arrays(arrays, n_neighbors=n_neighbors)
                cache.put_by_key(key, graph)
            out.append(graph)
        except InvalidStructureError as exc:
            out.append((exc.structure_id, exc.reason))
    return out


def _progress_reporter(progress: bool | ProgressCallback, n_total: int) -> ProgressCallback | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    step = max(1, n_total // 10)
    state = {"next": step}

    def log_progress(n_done: int, total: int) -> None:
        if n_done >= state["next"] or n_done == total:
            logger.info("built %d / %d crystal graphs", n_done, total)
            state["next"] = n_done + step

    return log_progress


def build_graphs(
    structures: Sequence[Structure],
    *,
    n_neighbors: int = 24,
    n_jobs: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    structure_ids: Sequence[str] | None = None,
    progress: bool | ProgressCallback = False,
    skip_invalid: bool = False,
    chunk_size: int | None = None,
    mp_context: str | None = None,
) -> list[CrystalGraph | None]:
    """Crystal graphs of many structures, in input order.

    Parameters
    ----------
    structures : sequence of Structure
    n_neighbors : int
        Nearest neighbours per site.
    n_jobs : int or None
        Worker processes; None or -1 = all available cores, 1 = serial. Fewer than :data:`SERIAL_THRESHOLD`
        structures always run serially.
    cache_dir : path or None
        Graph cache folder (:class:`~screener.graphs.cache.GraphCache`); hits are read, misses written.
    structure_ids : sequence of str or None
        Ids for graphs and error messages; default ``"0"``, ``"1"``, ...
    progress : bool or callable(n_done, n_total)
        A callable is called as structures finish (for the CLI's progress bar); True logs every ~10 %.
    skip_invalid : bool
        False: the first invalid structure raises. True: its slot in the result is None and a warning is logged.
    chunk_size : int or None
        Structures per worker task; default ``ceil(n / (4 n_jobs))`` capped at 256.
    mp_context : str or None
        Multiprocessing start method (``"fork"``, ``"forkserver"``, ``"spawn"``); default: the platform's
        (fork on Linux up to Python 3.13). Workers never import torch.

    Returns
    -------
    list of CrystalGraph or None
        One entry per structure; None only for invalid structures when ``skip_invalid``.

    Raises
    ------
    InvalidStructureError
        An invalid structure and ``skip_invalid`` is False.
    """
    n_total = len(structures)
    if structure_ids is None:
        ids = [str(i) for i in range(n_total)]
    else:
        ids = [str(i) for i in structure_ids]
        if len(ids) != n_total:
            raise ValueError(f"{len(ids)} structure_ids for {n_total} structures")
    if n_jobs is None or n_jobs == -1:
        n_jobs = available_cpus()
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
    cache_str = None if cache_dir is None else str(Path(cache_dir))
    if cache_str is not None:
        GraphCache(cache_str)  # create the folder once, here
    report = _progress_reporter(progress, n_total)

    results: list[CrystalGraph | None] = [None] * n_total
    n_done = 0

    def invalid(index: int, structure_id: str, reason: str) -> None:
        if not skip_invalid:
            raise InvalidStructureError(structure_id, reason)
        logger.warning("skipping structure %s: %s", structure_id, reason)

    # Arrays are extracted here: disordered structures fail already at this step.
    tasks: list[StructureArrays] = []
    task_index: list[int] = []
    for i, (structure, sid) in enumerate(zip(structures, ids)):
        try:
            tasks.append(structure_arrays(structure, sid))
            task_index.append(i)
        except InvalidStructureError as exc:
            invalid(i, exc.structure_id, exc.reason)
            n_done += 1

    n_tasks = len(tasks)
    n_workers = min(n_jobs, n_tasks)
    if chunk_size is None:
        chunk_size = max(1, min(_MAX_CHUNK, math.ceil(n_tasks / (4 * max(1, n_workers)))))
    chunks = [range(a, min(a + chunk_size, n_tasks)) for a in range(0, n_tasks, chunk_size)]

    def consume(chunk: range, outcomes: list[_Outcome]) -> None:
        nonlocal n_done
        for t, outcome in zip(chunk, outcomes):
            if isinstance(outcome, CrystalGraph):
                results[task_index[t]] = outcome
            else:
                invalid(task_index[t], *outcome)
        n_done += len(chunk)
        if report is not None:
            report(n_done, n_total)

    if n_workers <= 1 or n_tasks < SERIAL_THRESHOLD:
        for chunk in chunks:
            consume(chunk, _build_chunk([tasks[t] for t in chunk], n_neighbors, cache_str))
        if not chunks and n_total and report is not None:  # everything was invalid (and skipped)
            report(n_total, n_total)
        return results

    context = multiprocessing.get_context(mp_context) if mp_context else None
    logger.debug("building %d graphs with %d workers, chunks of %d", n_tasks, n_workers, chunk_size)
    unfinished: list[range] = []
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        pending: dict[Future[list[_Outcome]], range] = {
            pool.submit(_build_chunk, [tasks[t] for t in chunk], n_neighbors, cache_str): chunk for chunk in chunks
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = pending.pop(future)
                    try:
                        outcomes = future.result()
                    except BrokenProcessPool:
                        unfinished.append(chunk)
                        continue
                    consume(chunk, outcomes)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if unfinished:
        # A worker died (seen once when forking from a parent that had loaded torch models): no graph is lost, the
        # chunks it took down are built here instead.
        logger.warning("a graph-building worker died; building the %d unfinished chunk(s) in this process",
                       len(unfinished))
        for chunk in sorted(unfinished, key=lambda c: c.start):
            consume(chunk, _build_chunk([tasks[t] for t in chunk], n_neighbors, cache_str))
    return results
