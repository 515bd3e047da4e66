"""Read-only access to a campaign ledger for the bench scripts that study its decisions."""

from __future__ import annotations

import json
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
