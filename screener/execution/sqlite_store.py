"""A maggma ``Store`` in one SQLite file: one row per document, written incrementally, safe against kills.

The local job store of a campaign (``jobstore/jobstore.sqlite``). Each ``update`` is one SQLite transaction
(write-ahead log), so a process killed at any moment leaves every committed document and none half-written, and a
write costs the documents written, not the whole store (the JSON store it replaces rewrote its whole file on every
update). Documents are JSON text decoded with plain ``json``: nothing stored is turned into code
(``MontyDecoder`` is never used). Look-ups by the store's key (``uuid``, ``blob_uuid``) and ``index`` use SQL
indexes; any other criteria are applied with mongomock's filter (the same query language as maggma's other
stores), after the key narrows the rows.

SQLite locks need a local file system (or one with working POSIX locks): workers on other nodes write to a
MongoDB job store instead (see docs/cluster.md).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store

__all__ = ["SQLiteStore"]

_CHUNK = 900  # bound parameters per IN (...) list: under SQLite's oldest limit (999)
_BUSY_TIMEOUT_S = 60.0  # another process (a worker) holding the write lock: wait this long before failing


def _default(obj: Any) -> Any:
    """JSON for what ``jsanitize(allow_bson=True)`` may leave in a document (datetimes, ObjectIds)."""
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _dumps(doc: dict) -> str:
    return json.dumps(doc, default=_default, separators=(",", ":"), allow_nan=True)


def _get(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _has(doc: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def _project(doc: dict, properties: list[str] | dict | None) -> dict:
    """``doc`` restricted to ``properties`` (maggma's list or ``{field: 1}``; dotted fields keep their nesting)."""
    if not properties:
        return doc
    fields = [k for k, v in properties.items() if v] if isinstance(properties, dict) else list(properties)
    out: dict = {}
    for field in fields:
        if not _has(doc, field):
            continue
        parts = field.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _get(doc, field)
    return out


def _sort_key(value: Any) -> tuple:
    # MongoDB's order across types, reduced to what job documents hold: missing/None < numbers < strings < others
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, json.dumps(value, sort_keys=True, default=str))


class SQLiteStore(Store):
    """maggma ``Store`` over one table of an SQLite file.

    Parameters
    ----------
    path : str
        SQLite file (made, with its folder, on connect). Absolute, so a job running in its own folder finds it.
    table : str
        Table name (several stores may share one file: a campaign's ``outputs`` and ``data``).
    key : str
        The store's key field (``uuid`` for jobflow's docs store, ``blob_uuid`` for its additional stores).
    **kwargs
        maggma ``Store`` settings (``last_updated_field``, ...).
    """

    def __init__(self, path: str, table: str = "documents", key: str = "task_id", **kwargs: Any) -> None:
        if not table.isidentifier():
            raise ValueError(f"SQLite table name must be an identifier, got {table!r}")
        self.path = str(path)
        self.table = table
        self.kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
        super().__init__(key=key, **kwargs)

    # -- maggma Store interface ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``sqlite://<path>#<table>``."""
        return f"sqlite://{self.path}#{self.table}"

    @property
    def _collection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self.name} is not connected")
        return self._conn

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (made if missing) and its table; an open connection is kept unless ``force_reset``."""
        if self._conn is not None and not force_reset:
            return
        self.close()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode (isolation_level=None): transactions are opened explicitly, one per update
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers (screener) never block the writer (a worker)
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a killed process, one fsync a checkpoint
        t = self.table
        conn.execute(f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, k TEXT, idx INTEGER, doc TEXT NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_k_idx ON {t} (k, idx)")
        self._conn = conn

    def close(self) -> None:
        """Close the connection (committed documents are on disk already)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SQLiteStore) and (self.path, self.table, self.key) == (other.path, other.table,
                                                                                        other.key)

    def __hash__(self) -> int:
        return hash((self.path, self.table, self.key))

    def count(self, criteria: dict | None = None) -> int:
        """Number of documents matching ``criteria``."""
        if not criteria:
            return self._collection.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]
        return sum(1 for _ in self._matching(criteria))

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        """Documents matching ``criteria`` (MongoDB query language), sorted, skipped, limited and projected."""
        docs: Any = (doc for _, doc in self._matching(criteria or {}))
        if sort:
            docs = list(docs)
            for field, direction in reversed(list(sort.items())):  # stable sorts, last key first
                value = direction.value if isinstance(direction, Sort) else int(direction)
                docs.sort(key=lambda d, f=field: _sort_key(_get(d, f)), reverse=value < 0)
        for n, doc in enumerate(docs):
            if n < skip:
                continue
            if limit and n >= skip + limit:
                break
            yield _project(doc, properties)

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Insert or replace documents: one whose ``key`` fields equal a stored one's replaces it. One transaction."""
        docs = [docs] if isinstance(docs, dict) else list(docs)
        keys = [key] if isinstance(key, str) else list(key or [self.key])
        if self.validator is not None:
            for doc in docs:
                self.validator.is_valid(doc)
        conn = self._collection
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: no other writer between our read and write
        try:
            for doc in docs:
                doc = {k: v for k, v in doc.items() if k != "_id"}
                match = {k: doc.get(k) for k in keys}
                stale = [rowid for rowid, _ in self._matching(match, exact=True)]
                if stale:
                    conn.executemany(f"DELETE FROM {self.table} WHERE id = ?", [(r,) for r in stale])
                conn.execute(f"INSERT INTO {self.table} (k, idx, doc) VALUES (?, ?, ?)",
                             (self._key_text(doc.get(self.key)), self._index_of(doc), _dumps(doc)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def remove_docs(self, criteria: dict) -> None:
        """Delete the documents matching ``criteria`` (one transaction)."""
        conn = self._collection
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = [(rowid,) for rowid, _ in self._matching(criteria)]
            conn.executemany(f"DELETE FROM {self.table} WHERE id = ?", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """The key and ``index`` are indexed already; other fields are filtered after the key narrows the rows."""
        return key in (self.key, "index") and not unique

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field`` among the matching documents."""
        seen: list = []
        for _, doc in self._matching(criteria or {}):
            if not _has(doc, field):
                continue
            value = _get(doc, field)
            if value not in seen:
                seen.append(value)
        return seen

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        """Documents grouped by the values of ``keys``: ``({key: value, ...}, [docs])``."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        groups: dict[str, tuple[dict, list[dict]]] = {}
        for doc in self.query(criteria, sort=sort, skip=skip, limit=limit):
            ident = {k: _get(doc, k) for k in keys}
            groups.setdefault(_dumps(ident), (ident, []))[1].append(_project(doc, properties))
        yield from groups.values()

    # -- internals ----------------------------------------------------------------------------------------------
    @staticmethod
    def _key_text(value: Any) -> str | None:
        return None if value is None else value if isinstance(value, str) else _dumps(value)

    @staticmethod
    def _index_of(doc: dict) -> int | None:
        value = doc.get("index")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _matching(self, criteria: dict, *, exact: bool = False) -> Iterator[tuple[int, dict]]:
        """``(rowid, doc)`` of the documents matching ``criteria``; the key (equal or ``$in``) and an integer
        ``index`` are looked up through the SQL index, everything else filtered here.

        ``exact``: plain equality of every field (an ``update``'s key), no query operators.
        """
        from maggma.stores.mongolike import mongomock  # the mongomock flavour maggma itself uses

        filter_applies = mongomock.filtering.filter_applies
        where, params = [], []
        key_crit = criteria.get(self.key, ...)
        groups: list[list] = [[]]
        if isinstance(key_crit, str) or (exact and key_crit is not ...):
            where.append("k IS ?")
            params.append(self._key_text(key_crit))
        elif isinstance(key_crit, dict) and set(key_crit) == {"$in"} and isinstance(key_crit["$in"], list | tuple):
            values = [self._key_text(v) for v in key_crit["$in"]]
            groups = [values[i:i + _CHUNK] for i in range(0, len(values), _CHUNK)]
        index_crit = criteria.get("index", ...)
        if isinstance(index_crit, int) and not isinstance(index_crit, bool):
            where.append("idx = ?")
            params.append(index_crit)
        elif exact and index_crit is None:
            where.append("idx IS NULL")
        # SQL alone answers criteria on a string key (equal or $in) and an integer index: nothing left to filter
        by_sql = (not exact and all(k in (self.key, "index") for k in criteria)
                  and (key_crit is ... or isinstance(key_crit, str)
                       or (groups != [[]] and all(isinstance(v, str) for v in key_crit["$in"])))
                  and (index_crit is ... or (isinstance(index_crit, int) and not isinstance(index_crit, bool))))
        for group in groups:
            clauses = list(where)
            if group:
                clauses.append(f"k IN ({','.join('?' * len(group))})")
            sql = f"SELECT id, doc FROM {self.table}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            sql += " ORDER BY id"
            for rowid, text in self._collection.execute(sql, [*params, *group]).fetchall():
                doc = json.loads(text)
                if by_sql:
                    yield rowid, doc
                elif exact:
                    if all(doc.get(k) == v for k, v in criteria.items()):
                        yield rowid, doc
                elif filter_applies(criteria, doc):
                    yield rowid, doc
