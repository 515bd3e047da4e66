"""``screener world build`` as a Python function: generate, label, put on hulls, write, record.

:func:`build_world` draws the structures (:mod:`screener.world.generate`), labels them and the elemental references
with the same stand-in calculators (:mod:`screener.world.labels`), computes formation energies and E_hull of every
entry in its own world per functional (:class:`screener.hull.FidelityHull`, never mixing the two), and writes the
folder described in :mod:`screener.world.io` with a :class:`~screener.world.manifest.WorldManifest`.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from screener.errors import CalculationError, InvalidInputError
from screener.world.generate import GeneratorConfig, generate_world_structures
from screener.world.io import MANIFEST_NAME, REFERENCES_NAME, STRUCTURES_NAME, file_sha256, write_json_bz2, write_shards
from screener.world.labels import FIDELITIES, LabelConfig, label_structures
from screener.world.manifest import FileRecord, WorldManifest, label_statistics
from screener.world.prototypes import DEFAULT_SOURCES

__all__ = ["build_world", "REFERENCE_STRUCTURE_SOURCE", "software_versions", "hardware_description"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]

#: elemental reference structures: the lowest-energy MP GGA polymorph of each element.
REFERENCE_STRUCTURE_SOURCE = "mp-polymorphs"


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine a world's content."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("screener", "pymatgen", "chgnet", "torch", "numpy", "ase"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def hardware_description(device: str = "cpu") -> str:
    """CPU model and cores available to this process (plus the GPU name on CUDA)."""
    from screener._hardware import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu_model()}, {cores} cores"
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InvalidInputError(
                f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        if not (out_dir / MANIFEST_NAME).is_file():
            raise InvalidInputError(f"{out_dir} is not empty and holds no world; refusing to delete it")
        for child in ("pbe", "scan"):
            shutil.rmtree(out_dir / child, ignore_errors=True)
        for name in (MANIFEST_NAME, REFERENCES_NAME, STRUCTURES_NAME):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def build_world(
    out_dir: str | Path,
    *,
    size: int = 1000,
    seed: int = 0,
    elements: Sequence[str] | str | None = None,
    real_fraction: float = 0.3,
    sources: Sequence[str] = DEFAULT_SOURCES,
    relax_steps: int = 0,
    fmax_ev_per_a: float = 0.1,
    batch_size: int = 64,
    n_jobs: int | None = None,
    device: str = "cpu",
    shard_size: int = 1000,
    max_abs_e_form_ev_per_atom: float = 5.0,
    overwrite: bool = False,
    command: str | None = None,
    progress: ProgressCallback | None = None,
) -> WorldManifest:
    """Build a simulated PBE/SCAN world and write it to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Folder to write (must be empty or absent unless ``overwrite``).
    size : int
        Distinct structures to draw (each gets a PBE and a SCAN entry).
    seed : int
        Seed of the structure draws; the same seed (and versions) gives byte-identical shards.
    elements : str or sequence of str, optional
        Restrict the world to a chemical space (``"Li,Fe,O"``).
    real_fraction : float
        Share of real crystals; the rest are substituted hypotheticals.
    sources : sequence of str
        Prototype sets.
    relax_steps, fmax_ev_per_a : int, float
        Labelling protocol (:class:`~screener.world.labels.LabelConfig`; 0 = single point, the default).
    batch_size, n_jobs, device
        CHGNet batch size, graph-building processes, torch device.
    shard_size : int
        Entries per ``json.bz2`` shard.
    max_abs_e_form_ev_per_atom : float
        Structures whose formation energy (against the elemental references) exceeds this in magnitude at either
        fidelity are left out as unphysical (listed in the manifest's ``dropped``).
    overwrite : bool
        Replace an existing world in ``out_dir``.
    command : str, optional
        Recorded in the manifest.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    WorldManifest
        Also written to ``out_dir/manifest.json``.
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from screener.calculators.chgnet_models import CHECKPOINTS, checkpoint_label
    from screener.calculators.result import make_entry_dict
    from screener.hull import FidelityHull, elemental_reference_structures, make_reference_entries
    from screener.structures.writer import write_structures

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out_dir)
    gen_config = GeneratorConfig(
        size=size, seed=seed, elements=None if elements is None else tuple(_split(elements)),
        real_fraction=real_fraction, sources=tuple(sources),
    )
    label_config = LabelConfig(
        relax_steps=relax_steps, fmax_ev_per_a=fmax_ev_per_a, batch_size=batch_size, n_jobs=n_jobs, device=device
    )
    _prepare_out_dir(out, overwrite)

    # 1. structures
    t0 = time.perf_counter()
    records = generate_world_structures(gen_config, progress=progress)
    timings["generate_s"] = time.perf_counter() - t0

    # 2. labels of the structures and of the elemental references, with the same calculators
    t0 = time.perf_counter()
    world_elements = sorted({str(el) for r in records for el in r.structure.composition.elements})
    ref_structures = elemental_reference_structures(world_elements, source=REFERENCE_STRUCTURE_SOURCE)
    ref_symbols = sorted(ref_structures)
    inputs = [r.structure for r in records] + [ref_structures[el] for el in ref_symbols]
    labels = label_structures(inputs, label_config, progress=progress)
    timings["label_s"] = time.perf_counter() - t0
    n = len(records)

    mu: dict[str, dict[str, float]] = {}
    for fidelity in FIDELITIES:
        e = labels[fidelity].energy_per_atom_ev
        bad = [ref_symbols[i - n] for i in labels[fidelity].failures if i >= n]
        if bad:
            raise CalculationError(f"{fidelity} elemental reference(s) {', '.join(bad)} could not be computed")
        mu[fidelity] = {el: float(e[n + k]) for k, el in enumerate(ref_symbols)}

    # 3. drop failures and unphysical energies (decided on formation energies against the references)
    dropped: dict[str, str] = {}
    keep: list[int] = []
    for i, record in enumerate(records):
        reasons = [f"{f}: {labels[f].failures[i]}" for f in FIDELITIES if i in labels[f].failures]
        if not reasons:
            comp = record.structure.composition
            for fidelity in FIDELITIES:
                e_form = labels[fidelity].energy_per_atom_ev[i] - sum(
                    comp.get_atomic_fraction(el) * mu[fidelity][str(el)] for el in comp.elements
                )
                if abs(e_form) > max_abs_e_form_ev_per_atom:
                    reasons.append(f"{fidelity}: |E_form| = {abs(e_form):.2f} eV/atom > {max_abs_e_form_ev_per_atom}")
        if reasons:
            dropped[record.structure_id] = "; ".join(reasons)
        else:
            keep.append(i)
    if dropped:
        logger.warning("world: %d of %d structures left out (failed or unphysical energies)", len(dropped), n)
    if not keep:
        raise CalculationError("no structure of the world could be labelled")

    # 4. entries, references and hulls per fidelity
    t0 = time.perf_counter()
    entries: dict[str, list[dict]] = {}
    refs: dict[str, list] = {}
    e_hull: dict[str, np.ndarray] = {}
    e_form: dict[str, np.ndarray] = {}
    for fidelity in FIDELITIES:
        checkpoint = CHECKPOINTS[fidelity]
        label = checkpoint_label(checkpoint)
        run_type = f"CHGNet-{checkpoint} stand-in"
        refs[fidelity] = make_reference_entries(
            {el: ref_structures[el] for el in ref_symbols},
            {el: mu[fidelity][el] * len(ref_structures[el]) for el in ref_symbols},
            fidelity,
            backend="standin",
            label=label,
        )
        dicts = []
        for i in keep:
            record = records[i]
            structure = record.structure
            data = {
                "label": label,
                "protocol": label_config.protocol,
                "world_seed": seed,
                "prototype_id": record.data["prototype_id"],
                "origin": record.data["origin"],
                "substitution": record.data["substitution"],
                "formula": structure.composition.reduced_formula,
            }
            finals = labels[fidelity].final_structures
            if finals is not None and finals[i] is not None:
                data["relaxed_structure"] = finals[i].as_dict()
            dicts.append(
                make_entry_dict(
                    structure,
                    float(labels[fidelity].energy_per_atom_ev[i]) * len(structure),
                    structure_id=record.structure_id,
                    fidelity=fidelity,
                    backend="standin",
                    run_type=run_type,
                    parameters={"calculator": "CHGNet", "checkpoint": checkpoint, "protocol": label_config.protocol},
                    data=data,
                )
            )
        cse = [ComputedStructureEntry.from_dict(d) for d in dicts]
        hull = FidelityHull(fidelity, cse, refs[fidelity], on_mixed_backends="raise")
        hull_values = np.empty(len(cse))
        form_values = np.empty(len(cse))
        for k, (d, entry) in enumerate(zip(dicts, cse, strict=True)):
            form_values[k] = hull.e_form_ev_per_atom(entry)
            hull_values[k] = hull.e_above_hull_ev_per_atom(entry)
            d["data"]["e_form"] = float(form_values[k])
            d["data"]["e_above_hull"] = float(hull_values[k])
            if progress is not None and ((k + 1) % 50 == 0 or k + 1 == len(cse)):
                progress(f"hull {fidelity}", k + 1, len(cse))
        entries[fidelity] = dicts
        e_hull[fidelity] = hull_values
        e_form[fidelity] = form_values
    timings["hull_s"] = time.perf_counter() - t0

    # 5. files
    t0 = time.perf_counter()
    files: dict[str, FileRecord] = {}
    for fidelity in FIDELITIES:
        files.update(write_shards(entries[fidelity], out, fidelity, shard_size=shard_size))
    ref_path = write_json_bz2([e.as_dict() for f in FIDELITIES for e in refs[f]], out / REFERENCES_NAME)
    files[REFERENCES_NAME] = FileRecord(
        sha256=file_sha256(ref_path), n_bytes=ref_path.stat().st_size, n_entries=sum(len(v) for v in refs.values()),
        kind="references",
    )
    kept_records = [records[i] for i in keep]
    structures_path = write_structures(kept_records, out / STRUCTURES_NAME)
    files[STRUCTURES_NAME] = FileRecord(
        sha256=file_sha256(structures_path), n_bytes=structures_path.stat().st_size, n_entries=len(kept_records),
        kind="structures",
    )
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    n_entries = len(keep) * len(FIDELITIES)

    manifest = WorldManifest(
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        command=command,
        seed=seed,
        size_requested=size,
        elements=list(gen_config.elements) if gen_config.elements else None,
        counts={
            "n_structures": len(keep),
            "n_entries": n_entries,
            "n_real": sum(records[i].data["origin"] == "real" for i in keep),
            "n_hypothetical": sum(records[i].data["origin"] == "substitution" for i in keep),
            "n_generated": n,
            "n_dropped": len(dropped),
            "n_references": len(ref_symbols),
        },
        dropped=dropped,
        generator={**_asdict(gen_config)},
        labels={
            **_asdict(label_config),
            "protocol": label_config.protocol,
            "checkpoints": dict(CHECKPOINTS),
            "label": {f: checkpoint_label(CHECKPOINTS[f]) for f in FIDELITIES},
            "model_input": "the generated (unrelaxed) structure, stored as entry.structure",
            "max_abs_e_form_ev_per_atom": max_abs_e_form_ev_per_atom,
        },
        references={
            "structures": REFERENCE_STRUCTURE_SOURCE,
            "computed_with": "the same stand-in calculator and protocol as the entries",
            "energy_per_atom_ev": mu,
        },
        files=files,
        statistics=label_statistics(e_hull, e_form),
        timings_s={k: round(v, 3) for k, v in timings.items()},
        throughput_entries_per_s=round(n_entries / max(timings["total_s"], 1e-9), 3),
        hardware=hardware_description(device),
        versions=software_versions(),
    )
    (out / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    logger.info(
        "world %s: %d structures, %d entries in %.1f s (%.1f entries/s)",
        out, len(keep), n_entries, timings["total_s"], manifest.throughput_entries_per_s,
    )
    return manifest


def _split(elements: Sequence[str] | str) -> list[str]:
    from screener.world.generate import parse_elements

    return parse_elements(elements)


def _asdict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(obj).items()}
