"""The manifest of a world (``manifest.json``) and the label statistics it records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WORLD_FORMAT", "WORLD_FORMAT_VERSION", "FileRecord", "WorldManifest", "label_statistics"]

WORLD_FORMAT = "screener-world"
WORLD_FORMAT_VERSION = 1


class FileRecord(BaseModel):
    """One file of a world."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(description="SHA-256 of the file's bytes.")
    n_bytes: int = Field(description="Size in bytes.")
    n_entries: int | None = Field(None, description="Entries (or structures) in the file.")
    fidelity: str | None = Field(None, description="'pbe' or 'scan' for entry shards and references.")
    kind: str = Field(description="'entries', 'references' or 'structures'.")


class WorldManifest(BaseModel):
    """What a world holds and how it was made (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(WORLD_FORMAT, description="Always 'screener-world'.")
    format_version: int = Field(WORLD_FORMAT_VERSION, description="Version of the folder layout.")
    created_utc: str = Field(description="When it was built (ISO 8601).")
    command: str | None = Field(None, description="Command line that built it.")
    seed: int = Field(description="Seed of every random draw.")
    size_requested: int = Field(description="Structures asked for.")
    elements: list[str] | None = Field(None, description="Chemical space it was restricted to (None: any).")
    counts: dict[str, int] = Field(
        description="n_structures, n_entries, n_real, n_hypothetical, n_generated, n_dropped, n_references."
    )
    dropped: dict[str, str] = Field(default_factory=dict, description="structure_id -> why it was left out.")
    generator: dict[str, Any] = Field(description="GeneratorConfig used.")
    labels: dict[str, Any] = Field(description="Labelling protocol: LabelConfig, checkpoints, honest labels.")
    references: dict[str, Any] = Field(
        description="Elemental references: source of the structures, per fidelity energies (eV/atom)."
    )
    files: dict[str, FileRecord] = Field(description="Relative path -> file record (hash, size, entries).")
    statistics: dict[str, Any] = Field(description="Distribution of E_hull and E_form per fidelity, correlations.")
    timings_s: dict[str, float] = Field(description="Wall time of each stage in seconds.")
    throughput_entries_per_s: float = Field(description="Labelled entries (structures x fidelities) per second of "
                                            "total build time.")
    hardware: str = Field(description="CPU model and core count (or GPU).")
    versions: dict[str, str] = Field(description="Versions of screener, pymatgen, chgnet, torch, numpy, python.")

    def entry_files(self, fidelity: str | None = None) -> list[str]:
        """Relative paths of the entry shards (of one fidelity, or all), sorted."""
        return sorted(
            path
            for path, rec in self.files.items()
            if rec.kind == "entries" and (fidelity is None or rec.fidelity == fidelity)
        )


def _describe(values: np.ndarray, stable_tol: float) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0}
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(q50),
        "std": float(v.std()),
        "q25": float(q25),
        "q75": float(q75),
        "iqr": float(q75 - q25),
        "min": float(v.min()),
        "max": float(v.max()),
        **({"fraction_stable": float(np.mean(v <= stable_tol)),
            "fraction_below_0.1": float(np.mean(v <= 0.1))} if stable_tol is not None else {}),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def label_statistics(
    e_hull: Mapping[str, np.ndarray], e_form: Mapping[str, np.ndarray], *, stable_tol_ev_per_atom: float = 1e-6
) -> dict[str, Any]:
    """Distribution of the labels and how the two fidelities agree.

    Parameters
    ----------
    e_hull, e_form : mapping fidelity -> ndarray, shape (n,)
        Per structure, aligned across fidelities (eV/atom).
    stable_tol_ev_per_atom : float
        E_hull at or below this counts as stable.

    Returns
    -------
    dict
        ``e_above_hull`` and ``e_form`` per fidelity (n, mean, median, std, quartiles, fraction stable), and
        ``pbe_vs_scan`` (Pearson and Spearman correlation, MAE and mean difference of E_hull and E_form, fraction
        whose stability verdict agrees).
    """
    out: dict[str, Any] = {"stable_tol_ev_per_atom": stable_tol_ev_per_atom, "e_above_hull": {}, "e_form": {}}
    for fidelity, values in e_hull.items():
        out["e_above_hull"][fidelity] = _describe(np.asarray(values, float), stable_tol_ev_per_atom)
    for fidelity, values in e_form.items():
        d = _describe(np.asarray(values, float), None)
        out["e_form"][fidelity] = d
    if {"pbe", "scan"} <= set(e_hull):
        cmp: dict[str, float] = {}
        for name, table in (("e_above_hull", e_hull), ("e_form", e_form)):
            x, y = np.asarray(table["pbe"], float), np.asarray(table["scan"], float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3:
                cmp[f"{name}_pearson"] = float(np.corrcoef(x[ok], y[ok])[0, 1])
                cmp[f"{name}_spearman"] = _spearman(x[ok], y[ok])
                cmp[f"{name}_mae_ev_per_atom"] = float(np.mean(np.abs(x[ok] - y[ok])))
                cmp[f"{name}_mean_scan_minus_pbe_ev_per_atom"] = float(np.mean(y[ok] - x[ok]))
        x, y = np.asarray(e_hull["pbe"], float), np.asarray(e_hull["scan"], float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            sx, sy = x[ok] <= stable_tol_ev_per_atom, y[ok] <= stable_tol_ev_per_atom
            cmp["stability_agreement"] = float(np.mean(sx == sy))
            cmp["n_stable_both"] = int(np.sum(sx & sy))
            cmp["n_stable_pbe_only"] = int(np.sum(sx & ~sy))
            cmp["n_stable_scan_only"] = int(np.sum(~sx & sy))
        out["pbe_vs_scan"] = cmp
    return out
