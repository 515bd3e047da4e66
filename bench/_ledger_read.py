"""Read-only access to a campaign ledger for the bench scripts that study its decisions."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def open_ledger(campaign: Path) -> sqlite3.Connection:
    """The campaign's ``ledger.sqlite``, read-only."""
    return sqlite3.connect(f"file:{Path(campaign) / 'ledger.sqlite'}?mode=ro", uri=True)


def decision_numbers(raw: str | None) -> dict[str, Any]:
    """A decision's ``numbers_json`` as a dict (plain JSON data only; anything else reads as empty)."""
    try:
        numbers = json.loads(raw or "{}")
    except ValueError:
        return {}
    return numbers if isinstance(numbers, dict) else {}


def accepted_scan_decisions(db: sqlite3.Connection) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(structure_id, numbers)`` of every accepted SCAN decision whose numbers parse as a JSON object."""
    for sid, raw in db.execute("SELECT structure_id, numbers_json FROM decisions WHERE accepted = 1 AND "
                               "fidelity = 'scan'"):
        numbers = decision_numbers(raw)
        if numbers:
            yield sid, numbers


def references_and_results(campaign: Path, db: sqlite3.Connection) -> tuple[dict[str, list[Any]],
                                                                          list[tuple[int, str, str, Any]]]:
    """The campaign's reference phases per fidelity (``references.json``) and its successful candidate results,
    ``(round, structure_id, fidelity, entry)`` (pymatgen entries rebuilt from their plain-JSON dicts)."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    raw = json.loads((Path(campaign) / "references.json").read_text())
    references = {f: [ComputedStructureEntry.from_dict(d) for d in raw.get(f, [])] for f in ("pbe", "scan")}
    results = []
    for number, sid, fidelity, result in db.execute(
            "SELECT round, structure_id, fidelity, result_json FROM jobs WHERE state = 'done' AND role = 'candidate'"):
        entry = decision_numbers(result).get("entry")
        if isinstance(entry, dict) and fidelity in ("pbe", "scan"):
            results.append((int(number), sid, fidelity, ComputedStructureEntry.from_dict(entry)))
    return references, results


def ensemble_errors(db: sqlite3.Connection, references: dict[str, list[Any]], results: list[tuple[int, str, str, Any]]
                    ) -> list[tuple[int, str, str, Any, float, float]]:
    """``(round, structure_id, fidelity, entry, error, sigma)`` of each result: its
    signed E_hull on the hull its purchase round saw (the references and the results of earlier rounds) minus the
    E_hull mean the ensemble gave it in that round, and that round's sigma: an out-of-sample error."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    keys = {(r, s, f) for r, s, f, _ in results}
    predicted = {(r, s, f): (m, sd) for r, s, f, m, sd in db.execute(
        "SELECT round, structure_id, fidelity, e_hull_mean_ev_per_atom, e_hull_std_ev_per_atom FROM predictions")
        if (r, s, f) in keys}
    diagrams: dict[tuple[str, int], Any] = {}
    out = []
    for number, sid, fidelity, entry in results:
        mean, sigma = predicted.get((number, sid, fidelity), (None, None))
        if mean is None or sigma is None or not math.isfinite(mean):
            continue
        if (fidelity, number) not in diagrams:
            earlier = [e for r, _, f, e in results if f == fidelity and r < number]
            diagrams[(fidelity, number)] = PhaseDiagram(references[fidelity] + earlier)
        hull = diagrams[(fidelity, number)].get_hull_energy_per_atom(entry.composition)
        out.append((number, sid, fidelity, entry, float(entry.energy_per_atom - hull) - float(mean), float(sigma)))
    return out


def require_finished(parser: Any, campaigns: list[Path]) -> None:
    """Stop with ``parser``'s one-line usage error unless every campaign folder holds its ledger and references."""
    missing = [str(c) for c in campaigns if not (Path(c) / "ledger.sqlite").is_file() or not
               (Path(c) / "references.json").is_file()]
    if missing:
        parser.error(f"not a finished campaign folder (ledger.sqlite and references.json): {', '.join(missing)}")
