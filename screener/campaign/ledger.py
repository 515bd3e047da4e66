"""The campaign ledger: one SQLite file per campaign folder that records everything the campaign decides and buys.

Every state change is one transaction (SQLite in WAL mode, ``synchronous=FULL``), so a process killed at any point
leaves the ledger at a consistent state: a job row and its budget reservation are committed *before* the job is
submitted (write-ahead), and its result is committed in the same transaction that releases the reservation.

Budget invariant (checked inside the reserving transaction): ``spent + reserved + estimate <= total``, where
``reserved`` is the sum of the estimated costs of planned/submitted jobs and ``spent`` the sum of the charged costs of
finished (done/failed) jobs; the charge of a finished job is its actual cost when it is known, else its estimate.
All costs in the ledger are in budget units (see :class:`~screener.campaign.config.CampaignConfig`); the CPU-hours
are stored next to them.

One process writes a ledger at a time: opening one for writing takes the campaign folder's writer lock
(:mod:`screener.campaign.folder`); ``read_only=True`` opens it for reading only (``status``, ``report``), with no
lock, through SQLite's ``mode=ro`` URI, so it also works in a read-only folder. Every open first runs
``PRAGMA quick_check``: a damaged file is refused (:class:`LedgerDamagedError`) before any work is done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from screener.errors import BudgetError, InvalidInputError

__all__ = ["Ledger", "JobRow", "BudgetSummary", "LEDGER_FILENAME", "JobState", "LedgerDamagedError", "json_safe"]

logger = logging.getLogger(__name__)

LEDGER_FILENAME = "ledger.sqlite"
SCHEMA_VERSION = 1
JobState = Literal["planned", "submitted", "done", "failed"]
OPEN_STATES = ("planned", "submitted")
FINISHED_STATES = ("done", "failed")
# Tolerance for float round-off when comparing sums of costs with the budget (budget units).
_EPS = 1e-9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    structure_id TEXT PRIMARY KEY, formula TEXT, chemsys TEXT, n_sites INTEGER, role TEXT NOT NULL,
    structure_json TEXT
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, state TEXT NOT NULL, started_at REAL, finished_at REAL,
    model_version TEXT, info_json TEXT
);
CREATE TABLE IF NOT EXISTS predictions (
    round INTEGER, structure_id TEXT, fidelity TEXT, e_form_mean_ev_per_atom REAL, e_form_std_ev_per_atom REAL,
    hull_e_form_ev_per_atom REAL, e_hull_mean_ev_per_atom REAL, e_hull_std_ev_per_atom REAL, p_stable REAL,
    hull_fidelity TEXT,
    PRIMARY KEY (round, structure_id, fidelity)
);
CREATE INDEX IF NOT EXISTS predictions_by_structure ON predictions (structure_id, fidelity, round);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER, position INTEGER, structure_id TEXT, fidelity TEXT,
    reason TEXT, estimated_cost REAL, accepted INTEGER, numbers_json TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    uuid TEXT PRIMARY KEY, round INTEGER, structure_id TEXT NOT NULL, fidelity TEXT NOT NULL, role TEXT NOT NULL,
    state TEXT NOT NULL, estimated_cost REAL NOT NULL, actual_cost REAL, estimated_cpu_hours REAL,
    actual_cpu_hours REAL, flow_json TEXT, result_json TEXT, failure_reason TEXT, created_at REAL, updated_at REAL,
    UNIQUE (structure_id, fidelity)
);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY, round INTEGER, fidelity TEXT, path TEXT, parent TEXT, n_train INTEGER,
    metrics_json TEXT, created_at REAL
);
CREATE TABLE IF NOT EXISTS hulls (
    round INTEGER, fidelity TEXT, n_entries INTEGER, n_stable INTEGER, hull_json TEXT, created_at REAL,
    PRIMARY KEY (round, fidelity)
);
CREATE TABLE IF NOT EXISTS learning_curve (
    id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER, fidelity TEXT, n_scan INTEGER, n_pbe INTEGER,
    mae_ev_per_atom REAL, source TEXT, n_points INTEGER, mae_se_ev_per_atom REAL, n_pbe_pretraining INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, round INTEGER, kind TEXT, message TEXT, data_json TEXT
);
"""


class LedgerDamagedError(InvalidInputError):
    """The ledger file is damaged (or not an SQLite file); nothing was done with it."""

    def __init__(self, path: str | Path, detail: str) -> None:
        path = Path(path)
        detail = " ".join(str(detail).split())[:200]
        super().__init__(
            f"{path} is damaged or not a valid campaign ledger ({detail}); nothing was done. Keep a copy, then recover it with "
            f"`sqlite3 {path} .recover | sqlite3 {path.with_name('ledger-recovered.sqlite')}` and put the recovered "
            "file in its place (see 'Reliability and safety' in the user guide)"
        )


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None and numpy scalars/arrays made plain, so that
    ``json.dumps(..., allow_nan=False)`` writes standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy":
        return json_safe(obj.tolist() if hasattr(obj, "tolist") else obj)
    return obj


def json_object(text: Any) -> dict[str, Any]:
    """The JSON object a ledger text column holds (``numbers_json``, ``data_json``, ...); anything else, unreadable
    or not an object (a hand-edited ledger), reads as empty."""
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _dumps(obj: Any, **kwargs: Any) -> str:
    """Standard JSON (no NaN/Infinity tokens) of ``obj``."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


@dataclass(frozen=True)
class JobRow:
    """One calculation as the ledger knows it (costs in budget units)."""

    uuid: str
    round: int
    structure_id: str
    fidelity: str
    role: str
    state: str
    estimated_cost: float
    actual_cost: float | None
    estimated_cpu_hours: float | None
    actual_cpu_hours: float | None
    flow_json: str | None
    result_json: str | None
    failure_reason: str | None

    @property
    def result(self) -> dict[str, Any] | None:
        """The stored result (a ``CalcResult`` as a JSON dict) or None."""
        return json.loads(self.result_json) if self.result_json else None


@dataclass(frozen=True)
class BudgetSummary:
    """Budget state in budget units: ``spent + reserved <= total`` always holds for estimated costs."""

    total: float
    spent: float
    reserved: float
    unit: str

    @property
    def remaining(self) -> float:
        """What may still be reserved: ``total - spent - reserved`` (never below 0)."""
        return max(0.0, self.total - self.spent - self.reserved)


class Ledger:
    """SQLite ledger of one campaign (``<campaign_dir>/ledger.sqlite``).

    Parameters
    ----------
    path : Path
        The SQLite file.
    create : bool
        Create the file and its tables if missing; otherwise a missing file is an :class:`InvalidInputError`.
    read_only : bool
        Open for reading only: no writer lock, nothing in the folder is written (``mode=ro``; ``immutable=1`` when
        not even SQLite's ``-wal``/``-shm`` side files can be created there).

    Raises
    ------
    CampaignBusyError
        (writing) another process holds the campaign's writer lock.
    LedgerDamagedError
        The file fails SQLite's ``quick_check`` or is not an SQLite database.
    """

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = None
        if not self.path.exists() and not create:
            raise InvalidInputError(f"{self.path.parent} is not a screener campaign (no {LEDGER_FILENAME} in it)")
        if not read_only and self.path.exists() and not (os.access(self.path, os.W_OK)
                                                         and os.access(self.path.parent, os.W_OK)):
            raise InvalidInputError(f"campaign folder {self.path.parent} is read-only: screener status and screener "
                                    "report --output ELSEWHERE can read it; copy it somewhere writable to run it")
        try:
            existed = self.path.exists()
            if read_only:
                self._conn = _connect_read_only(self.path)
            else:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every change is an explicit transaction.
                self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            self._conn.row_factory = sqlite3.Row
            if existed:
                self._check_integrity()  # before the lock: a damaged campaign is left exactly as it was
            if not read_only:
                from screener.campaign.folder import acquire_lock

                self._lock = acquire_lock(self.path.parent)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            if create:
                self._conn.executescript(_SCHEMA)
                with self.transaction() as cur:
                    cur.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            else:
                self._conn.execute("SELECT 1 FROM jobs LIMIT 1")
                if not read_only:
                    self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            if "no such table" in str(exc):
                raise InvalidInputError(f"{self.path} is not a campaign ledger: {exc}") from None
            raise LedgerDamagedError(self.path, str(exc)) from None
        except BaseException:
            self.close()
            raise

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` (O(size), well under a second for a campaign's ledger): damage is found here,
        before any work, not later as a wrong answer."""
        rows = [r[0] for r in self._conn.execute("PRAGMA quick_check(5)")]
        if rows != ["ok"]:
            raise LedgerDamagedError(self.path, f"quick_check: {'; '.join(map(str, rows))}")

    def _migrate(self) -> None:
        """Bring a ledger written by an older screener up to this schema (columns added since)."""
        cols = {r["name"] for r in self._conn.execute("PRAGMA table_info(predictions)")}
        if "hull_fidelity" not in cols:
            with self.transaction() as cur:
                cur.execute("ALTER TABLE predictions ADD COLUMN hull_fidelity TEXT")
        # one candidate's predictions across rounds (the report, prospective errors) without scanning every round
        indexes = {r["name"] for r in self._conn.execute("PRAGMA index_list(predictions)")}
        if "predictions_by_structure" not in indexes:
            with self.transaction() as cur:
                cur.execute("CREATE INDEX IF NOT EXISTS predictions_by_structure ON predictions "
                            "(structure_id, fidelity, round)")
        cols = {r["name"] for r in self._conn.execute("PRAGMA table_info(learning_curve)")}
        if "n_points" not in cols:
            with self.transaction() as cur:
                cur.execute("ALTER TABLE learning_curve ADD COLUMN n_points INTEGER")
        # standard error of each MAE (fit weights) and the pre-training part of n_pbe (NULL: campaign PBE only)
        for column in ("mae_se_ev_per_atom REAL", "n_pbe_pretraining INTEGER"):
            if column.split()[0] not in cols:
                with self.transaction() as cur:
                    cur.execute(f"ALTER TABLE learning_curve ADD COLUMN {column}")

    @classmethod
    def in_dir(cls, campaign_dir: str | Path, *, create: bool = False, read_only: bool = False) -> Ledger:
        """Open the ledger of a campaign folder (for reading only with ``read_only=True``)."""
        campaign_dir = Path(campaign_dir)
        if not create and not (campaign_dir / LEDGER_FILENAME).exists():
            if not campaign_dir.exists():
                raise InvalidInputError(f"campaign folder {campaign_dir} does not exist")
            raise InvalidInputError(f"{campaign_dir} is not a screener campaign (no {LEDGER_FILENAME} in it)")
        if create:
            campaign_dir.mkdir(parents=True, exist_ok=True)
        return cls(campaign_dir / LEDGER_FILENAME, create=create, read_only=read_only)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite) and release the writer lock."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): all or nothing."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # ---- meta / config ---------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``."""
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """Value stored under ``key`` or ``default``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row is not None else default

    # ---- candidates ------------------------------------------------------------------------------------------------
    def add_candidates(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert candidate rows (keys: structure_id, formula, chemsys, n_sites, role, structure_json)."""
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR IGNORE INTO candidates VALUES "
                "(:structure_id, :formula, :chemsys, :n_sites, :role, :structure_json)",
                [{"role": "candidate", "structure_json": None, **r} for r in rows],
            )

    def candidates(self, role: str | None = "candidate", *, with_structures: bool = True,
                   structure_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Candidate rows in insertion order (``role=None``: all, including competing phases); without
        ``structure_json`` unless ``with_structures`` (a large campaign's structures are most of the ledger), only
        those of ``structure_ids`` if given."""
        columns = "*" if with_structures else "structure_id, formula, chemsys, n_sites, role"
        where, args = (["role = ?"], [role]) if role else ([], [])
        if structure_ids is None:
            sql = f"SELECT rowid AS _pos, {columns} FROM candidates" + (" WHERE " + where[0] if where else "")
            rows = [dict(r) for r in self._conn.execute(sql + " ORDER BY rowid", args)]
        else:
            ids, rows = sorted(set(map(str, structure_ids))), []
            for start in range(0, len(ids), 500):  # well under SQLite's limit of bound parameters
                part = ids[start:start + 500]
                cond = " AND ".join([*where, f"structure_id IN ({', '.join('?' * len(part))})"])
                rows += [dict(r) for r in self._conn.execute(
                    f"SELECT rowid AS _pos, {columns} FROM candidates WHERE {cond}", [*args, *part])]
            rows.sort(key=lambda r: r["_pos"])
        for r in rows:
            del r["_pos"]
        return rows

    # ---- rounds ----------------------------------------------------------------------------------------------------
    def current_round(self) -> dict[str, Any] | None:
        """The last round row (finished or not), or None before the first round."""
        row = self._conn.execute("SELECT * FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        return dict(row) if row else None

    def start_round(self, number: int) -> None:
        """Open round ``number`` in state ``ranking``."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO rounds (round, state, started_at) VALUES (?, 'ranking', ?)", (number, time.time())
            )
            _event(cur, number, "round", f"round {number} started")

    def set_round_state(self, number: int, state: str, *, info: dict[str, Any] | None = None) -> None:
        """Move a round to ``state`` (``finished`` also stamps the finish time)."""
        with self.transaction() as cur:
            cur.execute("UPDATE rounds SET state = ? WHERE round = ?", (state, number))
            if info is not None:
                cur.execute("UPDATE rounds SET info_json = ? WHERE round = ?", (_dumps(info), number))
            if state in ("finished", "empty"):
                cur.execute("UPDATE rounds SET finished_at = ? WHERE round = ?", (time.time(), number))

    def rounds(self) -> list[dict[str, Any]]:
        """All round rows, oldest first, with their job counts."""
        out = []
        for r in self._conn.execute("SELECT * FROM rounds ORDER BY round"):
            row = dict(r)
            row["info"] = json.loads(row.pop("info_json") or "{}")
            counts = self._conn.execute(
                "SELECT fidelity, COUNT(*) AS n, SUM(COALESCE(actual_cost, estimated_cost)) AS cost "
                "FROM jobs WHERE round = ? GROUP BY fidelity",
                (row["round"],),
            ).fetchall()
            row["jobs"] = {c["fidelity"]: c["n"] for c in counts}
            row["cost"] = float(sum(c["cost"] or 0.0 for c in counts))
            out.append(row)
        return out

    # ---- predictions and decisions ---------------------------------------------------------------------------------
    def record_predictions(self, round_number: int, rows: Sequence[dict[str, Any]], *, add: bool = False) -> None:
        """Store the ranking of a round (one row per candidate and fidelity; replaces the round's rows, or with
        ``add`` adds to them, replacing rows of the same candidate and fidelity)."""
        with self.transaction() as cur:
            if not add:
                cur.execute("DELETE FROM predictions WHERE round = ?", (round_number,))
            cur.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (:round, :structure_id, :fidelity, "
                ":e_form_mean_ev_per_atom, "
                ":e_form_std_ev_per_atom, :hull_e_form_ev_per_atom, :e_hull_mean_ev_per_atom, "
                ":e_hull_std_ev_per_atom, :p_stable, :hull_fidelity)",
                [{"round": round_number, "p_stable": None, "hull_fidelity": None, **r} for r in rows],
            )

    def predictions(self, round_number: int | None, *, structure_ids: Sequence[str] | None = None
                    ) -> list[dict[str, Any]]:
        """Prediction rows of a round (None: of every round), of every candidate or only of ``structure_ids``
        (ordered by round, structure_id, fidelity)."""
        where, args = [], []
        if round_number is not None:
            where.append("round = ?")
            args.append(round_number)
        sql = "SELECT * FROM predictions" + (" WHERE " + " AND ".join(where) if where else "")
        order = " ORDER BY round, structure_id, fidelity"
        if structure_ids is None:
            return [dict(r) for r in self._conn.execute(sql + order, args)]
        ids = sorted(set(map(str, structure_ids)))
        rows = []
        for start in range(0, len(ids), 500):  # well under SQLite's limit of bound parameters
            part = ids[start:start + 500]
            cond = f"structure_id IN ({', '.join('?' * len(part))})"
            rows += [dict(r) for r in self._conn.execute(sql + (" AND " if where else " WHERE ") + cond,
                                                         [*args, *part])]
        return sorted(rows, key=lambda r: (r["round"], r["structure_id"], r["fidelity"]))

    def decisions(self, round_number: int | None = None) -> list[dict[str, Any]]:
        """Decision rows (all rounds or one)."""
        sql = "SELECT * FROM decisions" + (" WHERE round = ?" if round_number is not None else "") + " ORDER BY id"
        rows = self._conn.execute(sql, (round_number,) if round_number is not None else ())
        return [dict(r) for r in rows]

    # ---- jobs and budget -------------------------------------------------------------------------------------------
    def set_budget_total(self, total: float) -> tuple[float, float]:
        """Change the total budget (meta ``budget_total`` and the stored config, in one transaction, as an event).

        A campaign that had stopped because nothing more fitted (last round ``empty``) plans that round again on
        its next run when the total grows; when it shrinks, the round stays empty and loses its stored
        ``stop_reason`` (which quoted the budget left under the old total). Returns ``(old, new)``.

        Raises
        ------
        BudgetError
            ``total`` is not a finite number > 0, or is below what is already spent and reserved.
        """
        total = float(total)
        if not (math.isfinite(total) and total > 0):
            raise BudgetError(f"the budget must be a finite number > 0, not {total:g}")
        with self.transaction() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key='budget_total'").fetchone()
            old = float(json.loads(row[0])) if row else 0.0
            sums = _sums(cur)
            committed = sums["spent"] + sums["reserved"]
            if total < committed - _EPS:
                raise BudgetError(f"a total of {total:g} is less than the {committed:.4g} already spent and reserved")
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('budget_total', ?)", (_dumps(total),))
            row = cur.execute("SELECT value FROM meta WHERE key='config'").fetchone()
            if row is not None:
                config = json.loads(row[0])
                config["budget_total"] = total
                cur.execute("UPDATE meta SET value = ? WHERE key='config'", (_dumps(config),))
            last = cur.execute("SELECT round, state FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
            finished = last is not None and last["state"] == "empty"
            reopened = finished and total > old
            if reopened:
                cur.execute("UPDATE rounds SET state = 'ranking', finished_at = NULL WHERE round = ?", (last["round"],))
            elif finished and total < old:
                # a lowered budget keeps the campaign finished, but the stored reason quotes the old budget's "left"
                info = json_object(cur.execute("SELECT info_json FROM rounds WHERE round = ?",
                                               (last["round"],)).fetchone()[0])
                if info.pop("stop_reason", None) is not None:
                    cur.execute("UPDATE rounds SET info_json = ? WHERE round = ?", (_dumps(info), last["round"]))
            _event(cur, last["round"] if last is not None else None, "budget",
                   f"budget total changed from {old:g} to {total:g}"
                   + (f"; round {last['round']} will be planned again" if reopened else ""),
                   {"old": old, "new": total})
        return old, total

    def job_times(self) -> dict[str, tuple[float | None, float | None]]:
        """``{uuid: (created_at, updated_at)}`` of every job (epoch seconds)."""
        rows = self._conn.execute("SELECT uuid, created_at, updated_at FROM jobs").fetchall()
        return {str(r[0]): (r[1], r[2]) for r in rows}

    def budget(self) -> BudgetSummary:
        """Current budget state from the job table."""
        total = float(self.get_meta("budget_total", 0.0))
        unit = str(self.get_meta("budget_unit", "pbe-equivalent"))
        return BudgetSummary(total=total, unit=unit, **_sums(self._conn))

    def reserve_job(
        self,
        *,
        uuid: str,
        round_number: int,
        structure_id: str,
        fidelity: str,
        role: str,
        estimated_cost: float,
        estimated_cpu_hours: float | None = None,
        flow_json: str | None = None,
    ) -> None:
        """Write-ahead: insert a ``planned`` job and reserve its estimated cost, in one transaction.

        Raises
        ------
        BudgetError
            If the reservation would make ``spent + reserved`` exceed the total budget, or the (structure,
            fidelity) pair already has a job (a calculation is never bought twice).
        """
        if not estimated_cost >= 0:
            raise BudgetError(f"estimated cost of {structure_id} ({fidelity}) is {estimated_cost}, not >= 0")
        with self.transaction() as cur:
            total = float(json.loads(cur.execute("SELECT value FROM meta WHERE key='budget_total'").fetchone()[0]))
            sums = _sums(cur)
            if sums["spent"] + sums["reserved"] + estimated_cost > total + _EPS:
                raise BudgetError(
                    f"{structure_id} ({fidelity}) costs {estimated_cost:.4g} but only "
                    f"{total - sums['spent'] - sums['reserved']:.4g} of {total:.4g} is left"
                )
            dup = cur.execute(
                "SELECT uuid FROM jobs WHERE structure_id = ? AND fidelity = ?", (structure_id, fidelity)
            ).fetchone()
            if dup is not None:
                raise BudgetError(f"{structure_id} ({fidelity}) already has job {dup[0]}; not buying it twice")
            now = time.time()
            cur.execute(
                "INSERT INTO jobs (uuid, round, structure_id, fidelity, role, state, estimated_cost, "
                "estimated_cpu_hours, flow_json, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?)",
                (uuid, round_number, structure_id, fidelity, role, estimated_cost, estimated_cpu_hours, flow_json,
                 now, now),
            )

    def commit_plan(
        self,
        round_number: int,
        *,
        decisions: Sequence[dict[str, Any]],
        numbers: dict[str, Any],
        jobs: Sequence[dict[str, Any]],
        new_candidates: Sequence[dict[str, Any]] = (),
    ) -> list[str]:
        """Record a round's decisions and reserve its jobs in ONE transaction; the round becomes ``planned``.

        Jobs are reserved in order; the first one that does not fit the budget (or repeats a calculation) and all
        after it are dropped, so the campaign stops exactly when the next job would exceed the budget. Returns the
        uuids reserved.
        """
        accepted: list[str] = []
        with self.transaction() as cur:
            total = float(json.loads(cur.execute("SELECT value FROM meta WHERE key='budget_total'").fetchone()[0]))
            sums = _sums(cur)
            committed = sums["spent"] + sums["reserved"]
            now = time.time()
            for job in jobs:
                cost = float(job["estimated_cost"])
                if not cost >= 0 or committed + cost > total + _EPS:
                    break
                dup = cur.execute(
                    "SELECT 1 FROM jobs WHERE structure_id = ? AND fidelity = ?", (job["structure_id"], job["fidelity"])
                ).fetchone()
                if dup is not None:
                    continue
                cur.execute(
                    "INSERT INTO jobs (uuid, round, structure_id, fidelity, role, state, estimated_cost, "
                    "estimated_cpu_hours, flow_json, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?)",
                    (job["uuid"], round_number, job["structure_id"], job["fidelity"], job.get("role", "candidate"),
                     cost, job.get("estimated_cpu_hours"), job.get("flow_json"), now, now),
                )
                committed += cost
                accepted.append(job["uuid"])
            cur.executemany(
                "INSERT OR IGNORE INTO candidates VALUES "
                "(:structure_id, :formula, :chemsys, :n_sites, :role, :structure_json)",
                [{"role": "competing", "structure_json": None, **r} for r in new_candidates],
            )
            cur.execute("DELETE FROM decisions WHERE round = ?", (round_number,))
            reserved = set(accepted)
            by_key = {(j["structure_id"], j["fidelity"]): j["uuid"] for j in jobs}
            for pos, d in enumerate(decisions):
                ok = by_key.get((d["structure_id"], d["fidelity"])) in reserved
                cur.execute(
                    "INSERT INTO decisions (round, position, structure_id, fidelity, reason, estimated_cost, "
                    "accepted, numbers_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (round_number, pos, d["structure_id"], d["fidelity"], d.get("reason", ""),
                     float(d["estimated_cost"]), int(ok), _dumps(d.get("numbers") or {}, default=float)),
                )
            cur.execute("UPDATE rounds SET state = 'planned' WHERE round = ?", (round_number,))
            _event(cur, round_number, "policy",
                   f"round {round_number}: policy planned {len(decisions)}, reserved {len(accepted)} calculations",
                   numbers)
        return accepted

    def mark_submitted(self, uuids: Sequence[str]) -> None:
        """planned -> submitted (jobs already finished stay as they are)."""
        with self.transaction() as cur:
            cur.executemany(
                "UPDATE jobs SET state = 'submitted', updated_at = ? WHERE uuid = ? AND state = 'planned'",
                [(time.time(), u) for u in uuids],
            )

    def finish_job(
        self,
        uuid: str,
        *,
        success: bool,
        result_json: str | None,
        actual_cost: float | None,
        actual_cpu_hours: float | None,
        failure_reason: str | None = None,
    ) -> None:
        """Record a result: the job becomes ``done`` or ``failed``; its reservation becomes its charge."""
        state = "done" if success else "failed"
        if result_json is not None:  # standard JSON in the ledger: a NaN from a calculator is stored as null
            result_json = _dumps(json.loads(result_json))
        with self.transaction() as cur:
            row = cur.execute(
                "SELECT state, round, structure_id, fidelity FROM jobs WHERE uuid = ?", (uuid,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no job {uuid} in the ledger")
            if row["state"] in FINISHED_STATES:
                return
            cur.execute(
                "UPDATE jobs SET state = ?, result_json = ?, actual_cost = ?, actual_cpu_hours = ?, "
                "failure_reason = ?, updated_at = ? WHERE uuid = ?",
                (state, result_json, actual_cost, actual_cpu_hours, failure_reason, time.time(), uuid),
            )
            msg = f"{row['structure_id']} ({row['fidelity']}) {state}"
            if failure_reason:
                msg += f": {failure_reason}"
            _event(cur, row["round"], "job", msg, {"uuid": uuid})

    def jobs(self, *, states: Sequence[str] | None = None, round_number: int | None = None) -> list[JobRow]:
        """Job rows, oldest first, optionally filtered by state and round."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        if round_number is not None:
            sql += " AND round = ?"
            args.append(round_number)
        rows = self._conn.execute(sql + " ORDER BY created_at, rowid", args)
        return [JobRow(**{k: r[k] for k in JobRow.__dataclass_fields__}) for r in rows]

    def done_calculations(self, fidelity: str | None = None) -> list[tuple[int, str, str]]:
        """(round, structure_id, fidelity) of every finished job, oldest first: a light read (no flows, no results)
        for what needs only which structure was computed when."""
        sql, args = "SELECT round, structure_id, fidelity FROM jobs WHERE state = 'done'", []
        if fidelity is not None:
            sql += " AND fidelity = ?"
            args.append(fidelity)
        rows = self._conn.execute(sql + " ORDER BY created_at, rowid", args)
        return [(int(r["round"]), r["structure_id"], r["fidelity"]) for r in rows]

    def job_counts(self) -> dict[str, dict[str, int]]:
        """``{fidelity: {state: count}}`` over all jobs."""
        out: dict[str, dict[str, int]] = {}
        for r in self._conn.execute("SELECT fidelity, state, COUNT(*) AS n FROM jobs GROUP BY fidelity, state"):
            out.setdefault(r["fidelity"], {})[r["state"]] = r["n"]
        return out

    def job_times(self) -> dict[str, tuple[float | None, float | None]]:
        """``{uuid: (created_at, updated_at)}`` of every job (Unix seconds; the report's spend-over-time plot)."""
        return {str(r["uuid"]): (r["created_at"], r["updated_at"])
                for r in self._conn.execute("SELECT uuid, created_at, updated_at FROM jobs")}

    # ---- models, hulls, learning curve, events ---------------------------------------------------------------------
    def record_model(self, *, version: str, round_number: int, fidelity: str, path: str, parent: str | None,
                     n_train: int, metrics: dict[str, Any]) -> None:
        """Record a saved model version (call after the files are in place)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (version, round_number, fidelity, path, parent, n_train, _dumps(metrics, default=float), time.time()),
            )
            _event(cur, round_number, "model", f"model {version} ({fidelity}, {n_train} points) saved", metrics)

    def models(self, fidelity: str | None = None) -> list[dict[str, Any]]:
        """Model versions, oldest first."""
        sql = "SELECT * FROM models" + (" WHERE fidelity = ?" if fidelity else "") + " ORDER BY created_at, rowid"
        out = []
        for r in self._conn.execute(sql, (fidelity,) if fidelity else ()):
            row = dict(r)
            row["metrics"] = json.loads(row.pop("metrics_json") or "{}")
            out.append(row)
        return out

    def record_hull(self, round_number: int, fidelity: str, *, n_entries: int, n_stable: int, hull_json: str) -> None:
        """Snapshot of a hull after a round."""
        hull_json = _dumps(json.loads(hull_json))  # standard JSON: a non-finite number is stored as null
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO hulls VALUES (?, ?, ?, ?, ?, ?)",
                (round_number, fidelity, n_entries, n_stable, hull_json, time.time()),
            )

    def hull_snapshots(self, fidelity: str | None = None) -> list[dict[str, Any]]:
        """Hull snapshot rows, oldest first (``hull_json`` included)."""
        sql = "SELECT * FROM hulls" + (" WHERE fidelity = ?" if fidelity else "") + " ORDER BY round"
        return [dict(r) for r in self._conn.execute(sql, (fidelity,) if fidelity else ())]

    def add_learning_curve_point(self, *, round_number: int, fidelity: str, n_scan: int, n_pbe: int,
                                 mae_ev_per_atom: float, source: str, n_points: int = 1,
                                 mae_se_ev_per_atom: float | None = None, n_pbe_pretraining: int | None = None) -> None:
        """One (N_s, N_p, MAE) point for the scaling-law fit, measured on ``n_points`` structures.

        ``n_pbe`` is all PBE data behind the model (``n_pbe_pretraining`` of it from before the campaign);
        ``mae_se_ev_per_atom`` is the standard error of the MAE (the fit weights the point by it).
        """
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO learning_curve (round, fidelity, n_scan, n_pbe, mae_ev_per_atom, source, n_points, "
                "mae_se_ev_per_atom, n_pbe_pretraining) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (round_number, fidelity, n_scan, n_pbe, mae_ev_per_atom, source, n_points, mae_se_ev_per_atom,
                 n_pbe_pretraining),
            )

    def learning_curve(self) -> list[dict[str, Any]]:
        """All learning-curve points, oldest first."""
        return [dict(r) for r in self._conn.execute("SELECT * FROM learning_curve ORDER BY id")]

    def log_event(self, kind: str, message: str, *, round_number: int | None = None,
                  data: dict[str, Any] | None = None) -> None:
        """Append an event (and log it)."""
        with self.transaction() as cur:
            _event(cur, round_number, kind, message, data)

    def events(self, limit: int | None = None, *, kind: str | None = None) -> list[dict[str, Any]]:
        """Events, oldest first (the last ``limit`` ones; only those of ``kind`` if given)."""
        if kind is None:
            rows = [dict(r) for r in self._conn.execute("SELECT * FROM events ORDER BY id")]
        else:
            rows = [dict(r) for r in self._conn.execute("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,))]
        return rows[-limit:] if limit else rows


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: ``mode=ro``; ``immutable=1`` where SQLite cannot create its ``-wal``/``-shm`` files
    (a read-only folder or mount, where no writer can be at work either)."""
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.OperationalError as exc:  # no -wal/-shm and none can be created
        if "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        logger.warning("%s: its write-ahead log %s cannot be read in this read-only folder; showing the ledger "
                       "without the transactions still in it (copy the folder somewhere writable to see them)",
                       path, wal.name)
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)


def _sums(cur: sqlite3.Connection | sqlite3.Cursor) -> dict[str, float]:
    row = cur.execute(
        "SELECT "
        "COALESCE(SUM(CASE WHEN state IN ('done','failed') THEN COALESCE(actual_cost, estimated_cost) END), 0.0), "
        "COALESCE(SUM(CASE WHEN state IN ('planned','submitted') THEN estimated_cost END), 0.0) FROM jobs"
    ).fetchone()
    return {"spent": float(row[0]), "reserved": float(row[1])}


def _event(cur: sqlite3.Cursor, round_number: int | None, kind: str, message: str,
           data: dict[str, Any] | None = None) -> None:
    logger.info("%s", message)
    cur.execute(
        "INSERT INTO events (time, round, kind, message, data_json) VALUES (?, ?, ?, ?, ?)",
        (time.time(), round_number, kind, message, _dumps(data, default=str) if data else None),
    )
