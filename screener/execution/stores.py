"""Job stores: where job outputs persist (a campaign folder, or MongoDB).

``make_job_store("local", campaign_dir)`` gives a jobflow ``JobStore`` whose docs and ``data`` stores are two tables
of one SQLite file, ``campaign_dir/jobstore/jobstore.sqlite`` (:class:`~screener.execution.sqlite_store.SQLiteStore`):
one row per document, each update one transaction, so a write costs what it writes and a killed process leaves a
consistent store. (maggma's ``MontyStore`` needs montydb, which is not a dependency here; SQLite is in Python.)

Campaigns made before this store keep theirs: a ``jobstore/outputs.json`` on disk (and no SQLite file) opens the
JSON store it was written with (:class:`AtomicJSONStore`), which rewrites its whole file on every update (atomically:
a temporary file, then ``os.replace``). Workers on other machines (FireWorks, jobflow-remote) write to a MongoDB
store: ``make_job_store("mongo", "mongodb://host/db")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from maggma.stores import JSONStore

from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from jobflow import JobStore

__all__ = ["make_job_store", "local_store_format", "AtomicJSONStore", "STORE_DIRNAME", "SQLITE_NAME"]

STORE_DIRNAME = "jobstore"
SQLITE_NAME = "jobstore.sqlite"
_JSON_NAME = "outputs.json"  # the docs file of the JSON store of campaigns made before the SQLite store


class AtomicJSONStore(JSONStore):
    """maggma ``JSONStore`` (writable) whose file is replaced atomically and reloaded without rewriting it.

    Documents are kept as they are (a job's several indices, ``uuid`` + ``index``, survive a reload).
    """

    def connect(self, force_reset: bool = False) -> None:
        """Load the file into an in-memory collection (create an empty file if there is none)."""
        from maggma.stores.mongolike import mongomock  # the mongomock flavour maggma itself uses

        if self._coll is None or force_reset:
            self._coll = mongomock.MongoClient().db[self.name]
            path = Path(self.paths[0])
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                self.update_json_file()
                return
            objects = self.read_json_file(path)
            if objects:
                self._coll.insert_many(objects)

    def update_json_file(self) -> None:
        """Write all documents to a temporary file, then atomically replace the store file with it."""
        import orjson

        path = Path(self.paths[0])
        data = list(self._coll.find({}, {"_id": 0})) if self._coll is not None else []
        payload = orjson.dumps(data, option=self.serialization_option, default=self.serialization_default)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def local_store_format(campaign_dir: str | Path) -> Literal["sqlite", "json"]:
    """Which local store a campaign folder holds, read from disk: ``json`` for a campaign made before the SQLite
    store (``jobstore/outputs.json`` and no ``jobstore.sqlite``), else ``sqlite`` (also for a new campaign)."""
    folder = Path(campaign_dir) / STORE_DIRNAME
    if (folder / _JSON_NAME).is_file() and not (folder / SQLITE_NAME).exists():
        return "json"
    return "sqlite"


def make_job_store(kind: Literal["local", "mongo"] = "local", path_or_uri: str | Path = ".", **kwargs: Any) -> JobStore:
    """A jobflow ``JobStore`` with an additional store named ``data`` (atomate2 jobs put large objects there).

    Parameters
    ----------
    kind : {"local", "mongo"}
        ``local``: ``<path_or_uri>/jobstore/jobstore.sqlite`` (a campaign folder; the JSON files of an older
        campaign if that is what its folder holds, see :func:`local_store_format`). ``mongo``: a MongoDB URI such as
        ``mongodb://user:pass@host:27017/screener``; collections ``outputs`` and ``outputs_data``.
    path_or_uri : str or Path
        Campaign folder or MongoDB URI.
    **kwargs
        ``mongo`` only: ``database`` (default: from the URI, else "screener"), ``collection_name``.
    """
    from jobflow import JobStore

    if kind == "local":
        # Absolute: jobflow runs each job inside its own folder (chdir), where a relative path would break.
        folder = Path(path_or_uri).resolve() / STORE_DIRNAME
        fmt = local_store_format(path_or_uri)
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            docs = AtomicJSONStore(str(folder / _JSON_NAME), read_only=False, key="uuid")
            data = AtomicJSONStore(str(folder / "data.json"), read_only=False, key="blob_uuid")
        else:
            from screener.execution.sqlite_store import SQLiteStore

            docs = SQLiteStore(str(folder / SQLITE_NAME), table="outputs", key="uuid")
            data = SQLiteStore(str(folder / SQLITE_NAME), table="data", key="blob_uuid")
        return JobStore(docs, additional_stores={"data": data})
    if kind == "mongo":
        from maggma.stores import MongoStore

        uri = str(path_or_uri)
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise InvalidInputError(f"a mongo job store needs a mongodb:// URI, got {uri!r}")
        database = kwargs.get("database") or uri.rsplit("/", 1)[-1].split("?")[0] or "screener"
        name = kwargs.get("collection_name", "outputs")
        docs = MongoStore.from_uri(uri, collection_name=name, database=database, key="uuid")
        data = MongoStore.from_uri(uri, collection_name=f"{name}_data", database=database, key="blob_uuid")
        return JobStore(docs, additional_stores={"data": data})
    raise InvalidInputError(f"unknown job store kind {kind!r}; use 'local' or 'mongo'")
