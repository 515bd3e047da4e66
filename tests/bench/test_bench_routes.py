"""bench/routes_from_ledgers.py: which route found the stable crystals, counted on a hand-built ledger."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from routes_from_ledgers import by_cell_size, routes, site_class_labels  # noqa: E402


def _ledger(folder: Path, jobs: list[tuple[str, str, int]], decisions: list[tuple[str, dict]],
            planned: list[tuple[int, str, str, dict]] = ()) -> Path:
    """``decisions``: accepted SCAN decisions (structure, numbers); ``planned``: accepted decisions of either
    fidelity in the order planned, (round, structure, fidelity, numbers)."""
    folder.mkdir()
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("CREATE TABLE jobs (structure_id TEXT, fidelity TEXT, round INTEGER, state TEXT, actual_cost REAL)")
    db.execute("CREATE TABLE decisions (round INTEGER, position INTEGER, structure_id TEXT, fidelity TEXT, "
               "accepted INTEGER, numbers_json TEXT)")
    db.executemany("INSERT INTO jobs VALUES (?, ?, ?, 'done', ?)",
                   [(s, f, r, 5.0 if f == "scan" else 1.0) for s, f, r in jobs])
    db.executemany("INSERT INTO decisions VALUES (0, ?, ?, 'scan', 1, ?)",
                   [(k, s, json.dumps(n)) for k, (s, n) in enumerate(decisions)])
    db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, 1, ?)",
                   [(r, k, s, f, json.dumps(n)) for k, (r, s, f, n) in enumerate(planned)])
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


def test_direct_runs_beside_a_capped_screen_are_counted_per_round_and_chemical_system(tmp_path):
    # round 1: three Li-O screens reach the cap of 3, then a direct SCAN of Li-O (counted, stable) and one of Na-O
    # (not: its system has no screens); round 2 starts a fresh count, so its Li-O direct run is not counted either;
    # a follow-up (P from a PBE result) and a cost-blind pick are never counted
    model = {"p_scan_stable": 0.1, "p_scan_source": "model"}
    planned = [(1, "s1", "pbe", {}), (1, "s2", "pbe", {}), (1, "s3", "pbe", {}), (1, "x", "scan", model),
               (1, "y", "scan", model), (1, "z", "scan", {**model, "route": "cost_blind"}),
               (1, "f", "scan", {"p_scan_stable": 0.5, "p_scan_source": "pbe result"}),
               (2, "w", "scan", model)]
    chemsys = {"s1": "Li-O", "s2": "Li-O", "s3": "Li-O", "x": "Li-O", "y": "Na-O", "z": "Li-O", "f": "Li-O",
               "w": "Li-O"}
    stable = {k: k in ("x", "z") for k in chemsys}
    out = routes(_ledger(tmp_path / "camp", [], [], planned), stable, chemsys, 3)
    assert out["direct_scan_beside_capped_screens"] == {"runs": 1, "truly_stable": 1}
    assert routes(tmp_path / "camp", stable, chemsys, 4)["direct_scan_beside_capped_screens"]["runs"] == 0
    assert "direct_scan_beside_capped_screens" not in routes(tmp_path / "camp", stable)


def test_by_cell_size_puts_runs_finds_and_spend_in_the_class_of_each_candidate(tmp_path):
    # 4-site a (stable, PBE then SCAN), 8-site b (SCAN, unstable), 9-site c (PBE only), 20-site d (SCAN, stable);
    # x is a known phase computed for a hull (not a candidate: not counted)
    folder = _ledger(tmp_path / "camp", [("a", "pbe", 1), ("a", "scan", 2), ("b", "scan", 1), ("c", "pbe", 1),
                                         ("d", "scan", 1), ("x", "scan", 1)], [])
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("CREATE TABLE candidates (structure_id TEXT, n_sites INTEGER, role TEXT)")
    db.executemany("INSERT INTO candidates VALUES (?, ?, ?)", [("a", 4, "candidate"), ("b", 8, "candidate"),
                   ("c", 9, "candidate"), ("d", 20, "candidate"), ("e", 13, "candidate"), ("x", 2, "known")])
    db.commit()
    stable = {"a": True, "b": False, "c": False, "d": True, "e": True, "x": True}
    assert site_class_labels([8, 12, 16]) == ["1-8", "9-12", "13-16", "17+"]
    out = by_cell_size(db, stable, [8, 12, 16])
    db.close()
    assert out["1-8"] == {"candidates": 2, "truly_stable": 1, "scan_runs": 2, "scan_truly_stable": 1,
                          "scan_cost": 10.0, "pbe_cost": 1.0}
    assert out["9-12"] == {"candidates": 1, "truly_stable": 0, "scan_runs": 0, "scan_truly_stable": 0,
                           "scan_cost": 0.0, "pbe_cost": 1.0}
    assert out["13-16"]["candidates"] == 1 and out["13-16"]["truly_stable"] == 1 and out["13-16"]["scan_runs"] == 0
    assert out["17+"]["scan_truly_stable"] == 1 and out["17+"]["scan_cost"] == 5.0
    assert routes(folder, stable, site_edges=[8, 12, 16])["by_cell_size"] == out
    assert "by_cell_size" not in routes(folder, stable)


def test_by_cell_size_splits_expected_value_scan_runs_by_route_and_sums_over_campaigns(tmp_path):
    from routes_from_ledgers import cell_size_total

    # a: a cost-blind SCAN (stable), b: a follow-up of its screen (unstable), both 4 sites
    folder = _ledger(tmp_path / "camp", [("a", "scan", 1), ("b", "pbe", 1), ("b", "scan", 2)],
                     [("a", {"p_scan_stable": 0.3, "p_scan_source": "model", "route": "cost_blind"}),
                      ("b", {"p_scan_stable": 0.6, "p_scan_source": "pbe result"})])
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("CREATE TABLE candidates (structure_id TEXT, n_sites INTEGER, role TEXT)")
    db.executemany("INSERT INTO candidates VALUES (?, ?, 'candidate')", [("a", 4), ("b", 4)])
    db.commit()
    row = by_cell_size(db, {"a": True, "b": False}, [8])["1-8"]
    db.close()
    assert row["scan_by_route"] == {"cost_blind": {"runs": 1, "truly_stable": 1, "cost": 5.0},
                                    "after_pbe_screen": {"runs": 1, "truly_stable": 0, "cost": 5.0}}
    total = cell_size_total([row, row])
    assert total["scan_runs"] == 4 and total["pbe_cost"] == 2.0
    assert total["scan_by_route"]["cost_blind"] == {"runs": 2, "truly_stable": 2, "cost": 10.0}


def test_by_candidate_counts_per_policy_the_campaigns_that_found_or_only_screened_each_stable_candidate(tmp_path):
    from routes_from_ledgers import by_candidate

    stable = {"a": True, "b": True, "c": False, "d": True}
    # policy x, two campaigns: a found in both, b screened in the first; policy y: b found, a only screened
    x1 = _ledger(tmp_path / "x_s0", [("a", "scan", 1), ("b", "pbe", 1), ("c", "scan", 1)], [])
    x2 = _ledger(tmp_path / "x_s1", [("a", "pbe", 1), ("a", "scan", 2)], [])
    y1 = _ledger(tmp_path / "y_s0", [("a", "pbe", 1), ("b", "scan", 1)], [])
    db = sqlite3.connect(y1 / "ledger.sqlite")  # a ledger with its pool: d, never touched, is listed too
    db.execute("CREATE TABLE candidates (structure_id TEXT, role TEXT)")
    db.executemany("INSERT INTO candidates VALUES (?, 'candidate')", [("a",), ("b",), ("c",), ("d",)])
    db.commit()
    db.close()
    rows = [routes(c, stable) for c in (x1, x2, y1)]
    assert rows[0]["found_truly_stable"] == ["a"] and rows[0]["screened_truly_stable_not_found"] == ["b"]
    assert "pool_truly_stable" not in rows[0] and rows[2]["pool_truly_stable"] == ["a", "b", "d"]
    out = by_candidate([x1, x2, y1], rows)
    assert out["campaigns_per_policy"] == {"x": 2, "y": 1}
    assert out["candidates"]["a"] == {"found": {"x": 2, "y": 0}, "screened_not_found": {"x": 0, "y": 1}}
    assert out["candidates"]["b"] == {"found": {"x": 0, "y": 1}, "screened_not_found": {"x": 1, "y": 0}}
    assert out["candidates"]["d"] == {"found": {"x": 0, "y": 0}, "screened_not_found": {"x": 0, "y": 0}}
    assert "c" not in out["candidates"]
