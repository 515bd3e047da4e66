"""Calculate many structures at one or both fidelities: build flows, submit, run (local), collect, write files.

This is what ``screener calc`` does, callable from Python.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from screener.calculators.result import CalcResult

__all__ = ["run_calculations", "write_results"]

logger = logging.getLogger(__name__)


def run_calculations(
    items: Sequence[tuple[str, Structure]],
    fidelities: Sequence[str] = ("pbe",),
    *,
    calculator: Any = None,
    executor: Any = None,
    campaign_dir: str | Path = "calc_campaign",
    progress: Callable[[int, int], None] | None = None,
) -> list[CalcResult | None]:
    """Calculate ``(structure_id, structure)`` pairs at each fidelity; resumable (stored results are reused).

    Parameters
    ----------
    items : sequence of (str, Structure)
        Candidates with their ids.
    fidelities : sequence of {"pbe", "scan"}
        PBE first: with the ``vasp`` back-end a PBE band gap already computed is passed on to the r2SCAN input set.
    calculator : Calculator, optional
        Default ``get_calculator("standin")``.
    executor : executor, optional
        Default ``get_executor("local", campaign_dir)``.
    campaign_dir : str or Path
        Campaign folder of the default executor.
    progress : callable, optional
        ``progress(n_done, n_total)`` while the local executor runs.

    Returns
    -------
    list of CalcResult or None
        One per (item, fidelity), in that order; None where a remote executor has not finished yet.
    """
    from screener.calculators import get_calculator
    from screener.execution.base import get_executor

    calculator = calculator or get_calculator("standin")
    executor = executor or get_executor("local", campaign_dir)
    order = [f for f in ("pbe", "scan") if f in fidelities]
    results: dict[tuple[str, str], CalcResult | None] = {}
    for fidelity in order:
        uuids = []
        for structure_id, structure in items:
            kwargs = {}
            pbe = results.get((structure_id, "pbe"))
            if fidelity == "scan" and pbe is not None and pbe.success and pbe.band_gap_ev is not None:
                kwargs["pbe_band_gap_ev"] = pbe.band_gap_ev
            uuids.extend(executor.submit(calculator.make_flow(structure, fidelity, structure_id, **kwargs)))
        if hasattr(executor, "pending"):
            executor.run(uuids, progress=progress)
        else:
            executor.run()
        collected = executor.collect(uuids)
        for (structure_id, _), uuid in zip(items, uuids):
            results[(structure_id, fidelity)] = collected[uuid]
    return [results[(sid, f)] for sid, _ in items for f in order]


def write_results(results: Sequence[CalcResult | None], folder: str | Path) -> dict[str, Path]:
    """Write ``results.json`` (all CalcResults) and ``entries_<fidelity>.json`` (hull entries of the successes).

    The entry files are lists of ComputedStructureEntry dicts, one functional per file (``screener hull`` reads them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = [r for r in results if r is not None]
    paths = {"results": folder / "results.json"}
    paths["results"].write_text(json.dumps([r.model_dump(mode="json") for r in done]))
    for fidelity in ("pbe", "scan"):
        entries = [r.entry for r in done if r.fidelity == fidelity and r.success and r.entry is not None]
        if entries:
            paths[f"entries_{fidelity}"] = folder / f"entries_{fidelity}.json"
            paths[f"entries_{fidelity}"].write_text(json.dumps(entries))
    return paths
