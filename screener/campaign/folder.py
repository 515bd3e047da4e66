"""Safe access to a campaign folder: one writer at a time, and creation that is all or nothing.

One writer
    A process that writes a campaign (``screener run``, ``screener budget``, :class:`~screener.campaign.Campaign`)
    holds an exclusive ``flock`` on ``<campaign>/run.lock`` for its whole life. The kernel drops the lock when the
    process dies, however it dies (``kill -9`` included), so a lock is never stale; the file's text (process id, host,
    start time) only says who holds it. A second writer is refused with :class:`CampaignBusyError`. Readers
    (``screener status``, ``screener report``) take no lock: SQLite's WAL lets them read while a run writes.
    Within one process the lock is re-entrant (counted per lock file), so a campaign may be opened twice there.

All-or-nothing creation
    A new campaign is built in a hidden folder beside its target (``.<name>.creating-XXXX``, holding the lock) and
    renamed into place only when complete. A creation that is killed leaves the target untouched; its hidden folder
    (which never holds calculations) is removed by the next creation of the same target.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError, ScreenerError

__all__ = ["CampaignBusyError", "CampaignLock", "LOCK_FILENAME", "acquire_lock", "lock_holder", "creation_folder",
           "publish_campaign"]

logger = logging.getLogger(__name__)

LOCK_FILENAME = "run.lock"
# A writer that finds the lock taken retries this long: a reader probing the lock (lock_holder) holds it for
# microseconds and must not make a starting run fail.
_RETRY_S = 1.0
# A creation folder without a lock file is left alone this long (its creator is between mkdtemp and the lock).
_UNLOCKED_GRACE_S = 60.0

_HELD: dict[tuple[int, int], list[int]] = {}  # (st_dev, st_ino) of a lock file -> [fd, holders in this process]
_GUARD = threading.Lock()


class CampaignBusyError(ScreenerError):
    """Another process is running (or creating) this campaign."""


@dataclass
class CampaignLock:
    """A held writer lock; :meth:`release` it (or let the process end)."""

    path: Path
    key: tuple[int, int]
    what: str | None = None
    released: bool = False

    def release(self) -> None:
        """Drop this holder; the flock goes when the last holder in this process releases it."""
        if self.released:
            return
        self.released = True
        with _GUARD:
            held = _HELD.get(self.key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0 and self.what == "create":  # the creator goes on to run the campaign it created
                _write_holder(held[0], "run")
            if held[1] == 0:
                del _HELD[self.key]
                try:
                    os.ftruncate(held[0], 0)  # an unlocked file names nobody
                except OSError:
                    pass
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])

    def __enter__(self) -> CampaignLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    since = holder.get("since", "?")
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since}"


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(fd: int, what: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def acquire_lock(folder: str | Path, *, what: str | None = None) -> CampaignLock:
    """Take the writer lock of a campaign folder (``<folder>/run.lock``).

    Parameters
    ----------
    folder : path
        The campaign folder (it must exist and be writable).
    what : str, optional
        What the holder does (``create``, ``run``: the default for a new lock; a re-entrant acquisition keeps what
        the lock says unless given), for the message a refused writer gets.

    Raises
    ------
    CampaignBusyError
        Another process holds the lock.
    """
    path = Path(folder) / LOCK_FILENAME
    with _GUARD:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InvalidInputError(f"cannot write to campaign folder {folder}: {exc.strerror}") from None
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        if key in _HELD:  # this process holds it already (flock would refuse a second open file)
            os.close(fd)
            _HELD[key][1] += 1
            if what is not None:
                _write_holder(_HELD[key][0], what)
            return CampaignLock(path, key, what)
        deadline = time.monotonic() + _RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                verb = "being created" if holder and holder.get("what") == "create" else "being run"
                raise CampaignBusyError(
                    f"campaign {_target_name(folder)} is {verb} by {_describe(holder)}; one process writes a "
                    "campaign at a time (screener status and report can read it meanwhile)"
                ) from None
            except OSError as exc:  # a file system without flock (e.g. Lustre mounted -o noflock)
                if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                logger.warning("%s: the file system does not support locks (%s); make sure no other process "
                               "writes this campaign", path, exc.strerror)
                break
        _write_holder(fd, what or "run")
        _HELD[key] = [fd, 1]
        return CampaignLock(path, key, what)


def lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """Who holds the writer lock of a campaign folder (``{"pid", "host", "since", "what"}``), or None.

    Only probes the lock (a shared lock taken and dropped at once); works in a read-only folder.
    """
    path = Path(folder) / LOCK_FILENAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        key = os.fstat(fd)
        if (key.st_dev, key.st_ino) in _HELD:
            return _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {}
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


_CREATING = ".creating-"


def _target_name(folder: str | Path) -> str:
    """The campaign a (creation) folder is for: ``.camp.creating-XXXX`` -> ``camp``."""
    name = Path(folder).name
    if name.startswith(".") and _CREATING in name:
        return str(Path(folder).parent / name[1:name.rindex(_CREATING)])
    return str(folder)


def _clear_other_creations(target: Path) -> None:
    """Refuse while another process creates ``target``; remove what killed creations of it left."""
    pattern = f".{glob.escape(target.name)}{_CREATING}*"
    for other in sorted(target.parent.glob(pattern)):
        if not other.is_dir():
            continue
        if not (other / LOCK_FILENAME).exists():
            if time.time() - other.stat().st_mtime < _UNLOCKED_GRACE_S:
                raise CampaignBusyError(f"campaign {target} is being created by another process")
            shutil.rmtree(other, ignore_errors=True)
            continue
        lock = acquire_lock(other, what="cleanup")  # raises CampaignBusyError while its creator lives
        try:
            logger.info("removing %s, left by a creation of %s that was killed", other, target)
            shutil.rmtree(other, ignore_errors=True)
        finally:
            lock.release()


@contextmanager
def creation_folder(target: str | Path) -> Iterator[Path]:
    """A locked, hidden folder beside ``target`` to build a campaign in; removed on error.

    The body publishes it with :func:`publish_campaign` (the lock moves along with the folder and stays held
    until the body ends).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_other_creations(target)
    # a new name, made with mkdir (not tempfile.mkdtemp, whose folders are private, 0700, whatever the umask: the
    # published campaign folder is shared with colleagues and archived)
    tmp = target.parent / f".{target.name}{_CREATING}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    lock = acquire_lock(tmp, what="create")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing in it was published; it holds no calculation
        raise
    finally:
        lock.release()


def publish_campaign(tmp: Path, target: Path, ledger_name: str) -> None:
    """Move a complete campaign from its creation folder to ``target`` in one rename (the ledger last otherwise)."""
    try:
        os.rename(tmp, target)  # atomic; also replaces an empty target folder
        return
    except OSError as exc:
        if (target / ledger_name).exists():
            raise CampaignBusyError(
                f"{target} was created by another process meanwhile; resume it with --campaign {target}"
            ) from None
        if not (target.is_dir() and not any(target.iterdir())):
            raise InvalidInputError(f"cannot move the new campaign into {target}: {exc.strerror}") from None
    # an empty folder that cannot be replaced (a mount point, the working directory): move the files in, ledger last
    for item in sorted(tmp.iterdir(), key=lambda p: p.name == ledger_name):
        os.rename(item, target / item.name)
    tmp.rmdir()
