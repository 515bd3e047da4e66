"""Sharded ranking: millions of candidates -> the top K by predicted E_form, E_hull or P(stable), in bounded memory.

The candidates (graph-store folders and/or structure files) are split into chunks: one per store shard, one per
structure file. Each chunk is ranked by :func:`rank_chunk` (read -> featurise, unless the graphs are in a store ->
predict with the ensemble -> keep the chunk's own top K), and the chunks' top-K lists are merged into the global
top K. Nothing but K rows per chunk ever leaves a chunk, so the memory of a worker is one batch of graphs plus the
model, whatever the number of candidates; the merge holds K rows per chunk in flight at most.

Ordering is total and independent of the chunking: rows sort by ``(score, id)`` (ids break ties), so a sharded
ranking equals an unsharded one.

Where chunks run:

- ``executor="local"`` (default): a process pool on this machine (``n_jobs`` workers, one torch thread each).
- ``executor="jobflow"``: :func:`rank_flow` builds a jobflow Flow (one ``rank_chunk_job`` per chunk plus one
  ``merge_rankings_job``) run here with ``jobflow.run_locally``. The same Flow goes to a cluster unchanged:
  ``jobflow.managers.fireworks.flow_to_workflow(flow)`` + ``LaunchPad.add_wf`` (FireWorks) or
  ``jobflow_remote.submit_flow(flow)``; the merge job's output is the ranking (see docs/scale.md).

Scores (all eV/atom, lower is better; P(stable) is sorted descending):

- ``e_form``: the ensemble mean of the predicted formation energy;
- ``e_hull``: ``E_form - E_form(hull at the composition)`` against a PBE hull of the shipped elemental references
  plus optional reference entries (``hull_entries``), as the campaign ranks (:mod:`screener.campaign.ranking`);
- ``p_stable``: Gaussian probability that the predicted E_hull is <= 0 (ensemble std as sigma, floored at 1 meV).
"""

from __future__ import annotations

import csv
import heapq
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import InvalidInputError, ScreenerError

__all__ = [
    "RANK_BY",
    "RankChunk",
    "RankSummary",
    "plan_chunks",
    "rank_chunk",
    "predict_chunk",
    "merge_rankings",
    "rank_candidates",
    "rank_flow",
    "write_ranking",
]

logger = logging.getLogger(__name__)

RANK_BY = ("e_form", "e_hull", "p_stable")
_BATCH = 512  # crystals per forward pass in a chunk
_MAX_SKIPPED_LISTED = 20  # skipped candidates listed per chunk (all are counted)


@dataclass(frozen=True)
class RankChunk:
    """One unit of ranking work: a store shard or a structure file (JSON-friendly for jobflow)."""

    kind: str  # "store" or "file"
    path: str
    shard: int = -1
    fmt: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "shard": self.shard, "fmt": self.fmt}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankChunk:
        return cls(str(d["kind"]), str(d["path"]), int(d.get("shard", -1)), str(d.get("fmt", "")))

    @property
    def label(self) -> str:
        return f"{self.path}/shard_{self.shard:06d}" if self.kind == "store" else self.path


def plan_chunks(candidates: Sequence[str | os.PathLike[str]]) -> list[RankChunk]:
    """Chunks of ``candidates``: one per shard of each graph store, one per structure file (folders expanded)."""
    from screener.graphs.store import GraphStore, is_store
    from screener.structures import collect_files

    if not candidates:
        raise InvalidInputError("no candidates given")
    chunks: list[RankChunk] = []
    for raw in candidates:
        path = Path(raw)
        if is_store(path):
            store = GraphStore(path)
            chunks += [RankChunk("store", str(path), k) for k in range(store.n_shards)]
        else:
            chunks += [RankChunk("file", str(p), fmt=fmt) for p, fmt in collect_files([path])]
    return chunks


# ---- one chunk ---------------------------------------------------------------------------------------------------

_MODELS: dict[str, Any] = {}  # per process: the ensemble is loaded once per worker, not once per chunk
_HULLS: dict[tuple[str, ...], Any] = {}


def _ensemble(model_dir: str):
    if model_dir not in _MODELS:
        from screener.cgat.ensemble import CGATEnsemble

        _MODELS[model_dir] = CGATEnsemble.load(model_dir, device="cpu")
    return _MODELS[model_dir]


def _hull(hull_entries: Sequence[str]):
    key = tuple(hull_entries)
    if key not in _HULLS:
        from screener.hull import FidelityHull, load_entries, reference_entries

        entries = load_entries(hull_entries) if hull_entries else []
        _HULLS[key] = FidelityHull("pbe", entries, references=reference_entries("pbe"), on_incompatible="skip",
                                   check_potcar=False, on_mixed_backends="ignore")
    return _HULLS[key]


def _formula_counts(atomic_numbers: np.ndarray) -> dict[str, int]:
    from pymatgen.core.periodic_table import Element

    z, n = np.unique(np.asarray(atomic_numbers), return_counts=True)
    return {Element.from_Z(int(a)).symbol: int(b) for a, b in zip(z, n)}


def _graph_batches(chunk: RankChunk, n_neighbors: int, skip_invalid: bool, skipped: list[str], counts: dict[str, int],
                   rows: Sequence[int] | None = None, batch: int = _BATCH) -> Iterator[list[tuple[str, Any]]]:
    """Batches of ``(structure_id, graph)`` of a chunk (of a store chunk: all entries, or ``rows`` of its shard);
    invalid candidates are located and skipped or raised."""
    size = batch
    from screener.errors import InvalidStructureError

    def skip(where: str, reason: str) -> None:
        if not skip_invalid:
            raise InvalidInputError(f"{where}: {reason} (use --skip-invalid to skip such candidates)")
        counts["skipped"] += 1
        if len(skipped) < _MAX_SKIPPED_LISTED:
            skipped.append(f"{where}: {reason}")

    batch: list[tuple[str, Any]] = []  # (rebinds the parameter: its size is kept in ``size``)
    if chunk.kind == "store":
        from screener.graphs.store import GraphStore

        store = GraphStore(chunk.path)
        if store.n_neighbors != n_neighbors:
            raise InvalidInputError(f"{chunk.path}: graphs have {store.n_neighbors} neighbours, the model {n_neighbors}")
        for sid, graph, _ in store.iter_shard(chunk.shard, rows, skip_invalid=True,
                                              on_skip=lambda e: skip(e.structure_id, e.reason)):
            batch.append((sid, graph))
            if len(batch) >= size:
                yield batch
                batch = []
    else:
        from screener.graphs.cache import unpack_graph
        from screener.graphs.store import _featurise_chunk, _iter_payloads

        name = Path(chunk.path).name

        def featurise(payloads: list, first: int) -> list[tuple[str, Any]]:
            out = []
            for i, outcome in enumerate(_featurise_chunk(payloads, n_neighbors, (), True, dedupe=False)):
                if len(outcome) == 2:
                    skip(f"{name} entry {first + i} ({outcome[0]})", str(outcome[1]))
                else:
                    out.append((outcome[0], unpack_graph(outcome[2], structure_id=outcome[0])))
            return out

        payloads: list = []
        first = 0
        try:
            for i, payload in enumerate(_iter_payloads(Path(chunk.path), chunk.fmt)):
                payloads.append(payload)
                if len(payloads) >= size:
                    yield featurise(payloads, first)
                    payloads, first = [], i + 1
        except InvalidStructureError as exc:  # the whole file is unreadable
            skip(name, exc.reason)
        if payloads:
            batch = featurise(payloads, first)
    if batch:
        yield batch


def predict_chunk(
    ensemble: Any,
    chunk: RankChunk,
    *,
    rows: Sequence[int] | None = None,
    batch_size: int = 256,
    skip_invalid: bool = False,
    skipped: list[str] | None = None,
    counts: dict[str, int] | None = None,
) -> Iterator[tuple[list[tuple[str, Any]], np.ndarray, np.ndarray]]:
    """Ensemble predictions of one chunk, batch by batch: ``(batch of (id, graph), mean, std)``.

    Memory is one batch of graphs (``_BATCH`` crystals, read from the memory-mapped store or featurised) plus the
    model. ``rows``: only these entries of a store chunk's shard, in that order. ``skipped``/``counts``: where the
    skipped candidates are listed and counted (``skip_invalid``; otherwise the first one raises).
    """
    import torch

    skipped = [] if skipped is None else skipped
    counts = {"skipped": 0, "ranked": 0} if counts is None else counts
    for batch in _graph_batches(chunk, ensemble.n_neighbors, skip_invalid, skipped, counts, rows):
        with torch.no_grad():  # not held across the yield: the caller's code runs with its own grad mode
            pred = ensemble.predict([g for _, g in batch], batch_size=batch_size)
        yield batch, np.asarray(pred.mean, dtype=float), np.asarray(pred.std, dtype=float)


def _sort_key(by: str) -> Callable[[dict[str, Any]], tuple[float, str]]:
    if by == "p_stable":
        return lambda row: (-row["p_stable"], row["id"])
    if by == "e_hull":
        return lambda row: (row["e_hull_pred_ev_per_atom"], row["id"])
    return lambda row: (row["e_form_mean_ev_per_atom"], row["id"])


def rank_chunk(
    model_dir: str,
    chunk: dict[str, Any] | RankChunk,
    top_k: int,
    by: str = "e_form",
    *,
    hull_entries: Sequence[str] = (),
    skip_invalid: bool = False,
    batch_size: int = _BATCH,
) -> dict[str, Any]:
    """Top ``top_k`` rows of one chunk (plain JSON: the output of a jobflow job).

    Returns
    -------
    dict
        ``rows`` (sorted best first; ``id``, ``formula``, ``e_form_mean_ev_per_atom``, ``e_form_std_ev_per_atom``
        and, with a hull, ``e_hull_pred_ev_per_atom``, ``p_stable`` (with the std calibrated as the model's
        ``calibration.json`` says: scale and power-law exponent); ``source``), ``n_ranked``, ``n_skipped``,
        ``skipped`` (the first few, located by file/shard and index).
    """
    from screener.campaign.ranking import probability_below

    if by not in RANK_BY:
        raise InvalidInputError(f"unknown ranking {by!r}; choose one of {list(RANK_BY)}")
    chunk = chunk if isinstance(chunk, RankChunk) else RankChunk.from_dict(chunk)
    ensemble = _ensemble(str(model_dir))
    hull = _hull(list(hull_entries)) if by != "e_form" else None
    # P(stable) with the ensemble spread calibrated on held-out data (the raw spread is too narrow); the CSV keeps
    # the raw std of the members
    from screener.campaign.ensemble_model import model_spread_calibration

    spread = model_spread_calibration(model_dir, "pbe")  # scale and power-law exponent of calibration.json
    key = _sort_key(by)
    kept: list[dict[str, Any]] = []
    skipped: list[str] = []
    counts = {"skipped": 0, "ranked": 0}
    for batch, means, stds in predict_chunk(ensemble, chunk, batch_size=batch_size, skip_invalid=skip_invalid,
                                            skipped=skipped, counts=counts):
        rows = []
        for (sid, graph), mean, std in zip(batch, means, stds, strict=True):
            formula = _formula_counts(graph.atomic_numbers)
            row: dict[str, Any] = {"id": sid, "formula": formula, "e_form_mean_ev_per_atom": float(mean),
                                   "e_form_std_ev_per_atom": float(std), "source": chunk.label}
            if hull is not None:
                from pymatgen.core import Composition

                e_hull = hull.e_above_hull_from_formation_energy(Composition(formula), float(mean))
                row["e_hull_pred_ev_per_atom"] = float(e_hull)
                row["p_stable"] = float(probability_below(np.array([e_hull]), spread.calibrated_std(np.array([std])))[0])
            rows.append(row)
        counts["ranked"] += len(rows)
        kept = heapq.nsmallest(top_k, kept + rows, key=key)  # bounded: K + one batch
    for row in kept:
        from pymatgen.core import Composition

        row["formula"] = Composition(row["formula"]).reduced_formula
    return {"rows": kept, "n_ranked": counts["ranked"], "n_skipped": counts["skipped"], "skipped": skipped,
            "chunk": chunk.label}


def merge_rankings(results: Sequence[dict[str, Any]], top_k: int, by: str = "e_form") -> dict[str, Any]:
    """Merge chunk results (:func:`rank_chunk`) into the global top ``top_k``.

    A chunk that failed on bad input (``{"error": message}``) makes the merge return ``{"error": message}`` too.
    """
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0], "n_failed_chunks": len(errors)}
    key = _sort_key(by)
    rows = heapq.nsmallest(top_k, (row for r in results for row in r["rows"]), key=key)
    return {
        "rows": rows,
        "n_ranked": sum(int(r["n_ranked"]) for r in results),
        "n_skipped": sum(int(r["n_skipped"]) for r in results),
        "skipped": [s for r in results for s in r["skipped"]][:_MAX_SKIPPED_LISTED],
        "n_chunks": len(results),
    }


# ---- jobflow ------------------------------------------------------------------------------------------------------


def _jobs():
    from jobflow import job

    return job(rank_chunk_or_error, name="rank_chunk"), job(merge_rankings, name="merge_rankings")


def rank_chunk_or_error(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`rank_chunk`, with bad input returned as ``{"error": message}`` (the job succeeds, the merge reports)."""
    try:
        return rank_chunk(*args, **kwargs)
    except ScreenerError as exc:
        return {"error": str(exc)}


def rank_flow(
    model_dir: str | os.PathLike[str],
    chunks: Sequence[RankChunk],
    top_k: int,
    by: str = "e_form",
    *,
    hull_entries: Sequence[str] = (),
    skip_invalid: bool = False,
):
    """A jobflow Flow: one ``rank_chunk`` job per chunk, then ``merge_rankings`` (its output is the ranking).

    Paths are stored as given: on a cluster they must be visible to the workers (absolute paths on a shared file
    system).
    """
    from jobflow import Flow

    chunk_job, merge_job = _jobs()
    jobs = [
        chunk_job(str(model_dir), c.as_dict(), top_k, by, hull_entries=list(hull_entries), skip_invalid=skip_invalid)
        for c in chunks
    ]
    for c, j in zip(chunks, jobs):
        j.name = f"rank {Path(c.path).name}" + (f" shard {c.shard}" if c.kind == "store" else "")
    merge = merge_job([j.output for j in jobs], top_k, by)
    return Flow([*jobs, merge], output=merge.output, name="screener rank")


# ---- driver -------------------------------------------------------------------------------------------------------


@dataclass
class RankSummary:
    """What :func:`rank_candidates` produced."""

    rows: list[dict[str, Any]]
    n_ranked: int
    n_skipped: int
    n_chunks: int
    skipped: list[str] = field(default_factory=list)
    target: str = "e_form"
    target_unit: str = "eV/atom"
    output: Path | None = None


def _init_rank_worker() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # pymatgen chatter (noble-gas electronegativity, ...) from every worker


def _run_chunk(args: tuple) -> dict[str, Any]:
    # errors come back as text: exceptions with a custom __init__ do not survive pickling
    return rank_chunk_or_error(*args[:4], **args[4])


def rank_candidates(
    candidates: Sequence[str | os.PathLike[str]],
    *,
    model_dir: str | os.PathLike[str] | None = None,
    top_k: int = 1000,
    by: str = "e_form",
    hull_entries: Sequence[str | os.PathLike[str]] = (),
    n_jobs: int = 1,
    executor: str = "local",
    skip_invalid: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RankSummary:
    """Rank candidates in chunks and merge the top ``top_k``.

    Parameters
    ----------
    candidates : sequence of path
        Graph-store folders (``screener featurize``) and/or structure files/folders.
    model_dir : path, optional
        PBE ensemble predicting the formation energy per atom (default: the shipped one).
    top_k : int
        Rows kept.
    by : {'e_form', 'e_hull', 'p_stable'}
    hull_entries : sequence of path
        Reference entry files added to the shipped elemental references (``e_hull``/``p_stable`` only).
    n_jobs : int
        Worker processes of the local pool.
    executor : {'local', 'jobflow'}
        Process pool, or a jobflow Flow run here (the Flow of :func:`rank_flow` is what a cluster runs).
    skip_invalid : bool
        Skip (count and list) invalid candidates; otherwise the first one stops the ranking (exit 2 on the CLI).

    Returns
    -------
    RankSummary
    """
    if top_k < 1:
        raise InvalidInputError(f"--top must be >= 1, got {top_k}")
    if by not in RANK_BY:
        raise InvalidInputError(f"unknown ranking {by!r}; choose one of {list(RANK_BY)}")
    if model_dir is None:
        from screener.campaign.ensemble_model import default_model_dir

        model_dir = default_model_dir()
    model_dir = str(Path(model_dir).resolve())
    from screener.cgat.ensemble import CGATEnsemble

    first = CGATEnsemble.load(model_dir)  # fails early (one line) on a bad model folder
    target, target_unit = first.target, first.target_unit
    del first
    chunks = plan_chunks(candidates)
    hull_entries = [str(Path(p).resolve()) for p in hull_entries]
    options = {"hull_entries": hull_entries, "skip_invalid": skip_invalid}
    results: list[dict[str, Any]] = []

    def take(result: dict[str, Any]) -> None:
        if "error" in result:
            raise InvalidInputError(result["error"])
        results.append(result)
        if len(results) > 64:  # bounded memory however many chunks: fold the finished ones into one
            results[:] = [merge_rankings(results, top_k, by)]
        if progress is not None:
            progress(n_done[0] + 1, len(chunks))
        n_done[0] += 1

    n_done = [0]
    if executor == "jobflow":
        from jobflow import run_locally

        flow = rank_flow(model_dir, chunks, top_k, by, hull_entries=hull_entries, skip_invalid=skip_invalid)
        responses = run_locally(flow, ensure_success=True, log=False)
        merged = responses[flow.output.uuid][1].output
        if "error" in merged:
            raise InvalidInputError(merged["error"])
    elif executor == "local":
        work = [(model_dir, c.as_dict(), top_k, by, options) for c in chunks]
        if n_jobs <= 1 or len(chunks) == 1:
            for args in work:
                take(_run_chunk(args))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")  # workers start clean (no forked torch state)
            with ProcessPoolExecutor(min(n_jobs, len(chunks)), mp_context=context,
                                     initializer=_init_rank_worker) as pool:
                for result in pool.map(_run_chunk, work):
                    take(result)
        merged = merge_rankings(results, top_k, by)
    else:
        raise InvalidInputError(
            f"unknown executor {executor!r} for ranking; choose local or jobflow (on a cluster, submit the Flow of "
            "screener.cgat.rank.rank_flow with FireWorks or jobflow-remote: see docs/scale.md)"
        )
    return RankSummary(rows=merged["rows"], n_ranked=merged["n_ranked"], n_skipped=merged["n_skipped"],
                       n_chunks=len(chunks), skipped=merged["skipped"], target=target,
                       target_unit=target_unit)


def write_ranking(summary: RankSummary, output: str | os.PathLike[str]) -> Path:
    """Write the ranking as CSV (``rank``, ``id``, ``formula``, predictions named as ``screener predict`` names
    them, e.g. ``e_form_mean_ev_per_atom``, then ``source``)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    has_hull = bool(summary.rows) and "e_hull_pred_ev_per_atom" in summary.rows[0]
    from screener.cgat.api import unit_suffix

    t, unit = summary.target, unit_suffix(summary.target_unit)
    columns = ["rank", "id", "formula", f"{t}_mean{unit}", f"{t}_std{unit}"]
    if has_hull:
        columns += ["e_hull_pred_ev_per_atom", "p_stable"]
    columns.append("source")
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, row in enumerate(summary.rows, start=1):
            values = [i, row["id"], row["formula"], f"{row['e_form_mean_ev_per_atom']:.6f}",
                      f"{row['e_form_std_ev_per_atom']:.6f}"]
            if has_hull:
                values += [f"{row['e_hull_pred_ev_per_atom']:.6f}", f"{row['p_stable']:.6f}"]
            values.append(row["source"])
            writer.writerow(values)
    os.replace(tmp, out)
    summary.output = out
    return out
