"""bench/routes_from_ledgers.py: which route found the stable crystals, counted on a hand-built ledger."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from routes_from_ledgers import routes  # noqa: E402


def _ledger(folder: Path, jobs: list[tuple[str, str, int]], decisions: list[tuple[str, dict]]) -> Path:
    folder.mkdir()
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("CREATE TABLE jobs (structure_id TEXT, fidelity TEXT, round INTEGER, state TEXT, actual_cost REAL)")
    db.execute("CREATE TABLE decisions (structure_id TEXT, fidelity TEXT, accepted INTEGER, numbers_json TEXT)")
    db.executemany("INSERT INTO jobs VALUES (?, ?, ?, 'done', ?)",
                   [(s, f, r, 5.0 if f == "scan" else 1.0) for s, f, r in jobs])
    db.executemany("INSERT INTO decisions VALUES (?, 'scan', 1, ?)", [(s, json.dumps(n)) for s, n in decisions])
    db.commit()
    db.close()
    return folder


def test_routes_count_screens_follow_ups_and_the_stranded(tmp_path):
    # a: screened in round 1, confirmed in 2 (stable); b: screened in 2, never confirmed (stable: stranded);
    # c: direct SCAN in 1 (unstable); d: screened in the last round (3), never confirmed (unstable)
    jobs = [("a", "pbe", 1), ("a", "scan", 2), ("b", "pbe", 2), ("c", "scan", 1), ("d", "pbe", 3)]
    decisions = [("a", {"p_scan_stable": 0.6, "p_scan_source": "pbe result"}),
                 ("c", {"p_scan_stable": 0.2, "p_scan_source": "model"})]
    out = routes(_ledger(tmp_path / "camp", jobs, decisions), {"a": True, "b": True, "c": False, "d": False})
    assert out["pbe_screens"] == 3 and out["pbe_screens_truly_scan_stable"] == 2
    assert out["screens_followed_by_scan"] == 1 and out["screened_scan_truly_stable"] == 1
    assert out["screened_truly_scan_stable_never_scan"] == 1
    assert out["rounds"] == 3 and out["pbe_screens_in_last_round"] == 1
    assert out["direct_scan"] == 1 and out["direct_scan_truly_stable"] == 0
    assert out["scan_by_decision_route"]["after_pbe_screen"]["truly_stable"] == 1
    assert out["scan_by_decision_route"]["per_unit_model"]["runs"] == 1
