"""The local store: one SQLite file (WAL) holding what automations have done, for every process.

Tables: ``events`` (one row per event id inside the duplicate window: when it was accepted, the
process that owns it while it is open, its JSON while open), ``settled`` (the ledger: each
action delivered, dead-lettered or skipped, with its result), ``operations`` (long-running
speech operations by idempotency key), ``workflows_done``, ``retries`` (the attempt number and
due time of each unsettled action's next attempt: waiting is data), ``dead`` (dead letters,
each a ``flowlang.deadletter/1`` record) and ``flowlang_store`` (the schema version).

Several processes may use one store: the duplicate check is one atomic upsert; an event
accepted by a process is owned by it (``events.owner``), and each open :class:`LocalStore`
holds an ``flock`` on ``<store>.owners/<owner>.lock``. An open event whose owner's lock can
be taken is orphaned (its process died: the lock went with it, whatever pid came next), and
:meth:`LocalStore.take_over` makes it ours atomically (``UPDATE ... WHERE owner = old``).

A finished event keeps only its id's digest and when it was accepted, inside the window and for
at most ``limit`` finished events; each finish prunes a few of the oldest (bounded work per
event), so the file follows the window, not the history. Text is stored as ASCII JSON
(:func:`flowlang.automations.records.encode_record`): lone surrogates and any other text read
back exactly. Every SQLite failure is a :class:`StoreError` naming the file.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "LocalStore", "OpenEvent", "is_store_file"]

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlang.automations.locks import FileLock
from flowlang.automations.records import RecordError, decode_record, encode_record
from flowlang.errors import StoreError
from flowlang.expr.shared import shorten

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no owner locks (one process per store)
    fcntl = None  # type: ignore[assignment]

#: The schema this flowlang writes and reads.
SCHEMA_VERSION = 1
#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Every PRUNE_EVERY finishes, at most PRUNE_BATCH finished events are pruned by age and as
#: many by count (amortized: more than one per finish, so the store catches up after the
#: limit is lowered).
PRUNE_EVERY = 8
PRUNE_BATCH = 32
#: The tables besides ``settled`` that hold rows of an open event.
_SIDE_TABLES = frozenset({"operations", "workflows_done", "retries"})
#: Dead letters an import adds per transaction (about 0.1 s of the store's write lock).
IMPORT_BATCH = 1000
#: Stale owner lock files removed at most when a store opens.
STALE_OWNER_SWEEP = 64
#: The backoff of an event run again in the process that owns it (doubling, at most the max).
RUN_AGAIN_DELAY = 10.0
RUN_AGAIN_MAX_DELAY = 600.0
#: How long an owner's lock file must stay missing (seen so by one process twice, this far
#: apart) before its owner counts as gone: a live owner re-creates it before then.
MISSING_LOCK_GRACE = 30.0
_OWNER = re.compile(r"[0-9a-f]{32}")
#: The outcomes a settled action is recorded with.
_OUTCOMES = frozenset({"delivered", "dead_lettered", "skipped"})

_SCHEMA = (
    "CREATE TABLE flowlang_store (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE events (key BLOB PRIMARY KEY, at REAL NOT NULL, owner TEXT, event TEXT,"
    " done_no INTEGER) WITHOUT ROWID",
    "CREATE INDEX events_open ON events(owner) WHERE done_no IS NULL",
    "CREATE INDEX events_done_no ON events(done_no) WHERE done_no IS NOT NULL",
    "CREATE INDEX events_done_at ON events(at) WHERE done_no IS NOT NULL",
    "CREATE TABLE settled (event_key BLOB NOT NULL, workflow TEXT NOT NULL, action TEXT NOT NULL,"
    " outcome TEXT NOT NULL, result TEXT, PRIMARY KEY (event_key, workflow, action))"
    " WITHOUT ROWID",
    "CREATE TABLE operations (event_key BLOB NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,"
    " PRIMARY KEY (event_key, key)) WITHOUT ROWID",
    "CREATE TABLE workflows_done (event_key BLOB NOT NULL, workflow TEXT NOT NULL,"
    " PRIMARY KEY (event_key, workflow)) WITHOUT ROWID",
    "CREATE TABLE retries (event_key BLOB NOT NULL, key TEXT NOT NULL, number INTEGER NOT NULL,"
    " due REAL NOT NULL, PRIMARY KEY (event_key, key)) WITHOUT ROWID",
    "CREATE TABLE dead (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
    " record TEXT NOT NULL)",
    f"INSERT INTO flowlang_store VALUES ('schema', {SCHEMA_VERSION}), ('finished', 0)",
)


def is_store_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that begins as an SQLite database does."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def event_key(event_id: str) -> bytes:
    """The digest an event id is stored under (any text, of any length: 16 bytes)."""
    return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).digest()[:16]


def _text(value: Any) -> str:
    """``value`` as ASCII JSON text (RecordError when it cannot be written as JSON)."""
    return encode_record({"v": value})[5:-2]


def _raw(column: Any) -> bytes:
    """A column read as a BLOB (text is read so: a damaged row may not be UTF-8)."""
    return column if isinstance(column, bytes) else str(column).encode("utf-8", "replace")


def _decoded(column: Any) -> str:
    """A column read as a BLOB, as text; ValueError when it is not UTF-8."""
    try:
        return _raw(column).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None


def _value(column: Any) -> Any:
    """What :func:`_text` wrote (read as a BLOB); ValueError when a column holds something
    else (a damaged or hand-edited row)."""
    if column is None:
        return None
    text = _decoded(column)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"not JSON: {error}") from None


def _name(text: Any, raw: bool = False) -> str:
    """A name column (JSON text, or plain text when ``raw``); ValueError when it is not text."""
    value = _decoded(text) if raw else _value(text)
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} where a name was written")
    return value


@dataclass
class OpenEvent:
    """An accepted event not finished: what its resumption needs."""

    event_id: str
    event: dict[str, Any]
    #: (workflow, action) → (outcome, result)
    settled: dict[tuple[str, str], tuple[str, Any]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    #: Long-running speech operations it started, by idempotency key.
    operations: dict[str, str] = field(default_factory=dict)
    #: Problems reading it (a record that does not decode), each a sentence.
    problems: list[str] = field(default_factory=list)


class LocalStore:
    """One store file, opened by this process (see the module docstring).

    ``sync``: every commit reaches the disk (``synchronous=FULL``) before it returns, for a
    server that answers "accepted"; otherwise a commit survives the process's death
    (``synchronous=NORMAL`` in WAL mode). ``busy_timeout``: how long a write waits for another
    process's transaction before StoreError. Each thread that uses it gets its own connection.
    """

    def __init__(self, path: Path, *, sync: bool = False, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.sync = sync
        self.busy_timeout = busy_timeout
        self.owner = uuid.uuid4().hex
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._owner_fd: int | None = None
        #: The side tables written for each open event this store accepted (a finish deletes
        #: only from those; an event taken over may have rows in any).
        self._written: dict[bytes, set[str]] = {}
        self._finished = 0
        #: This process's open events to return again from take_over: key → (times, due).
        self._again: dict[bytes, tuple[int, float]] = {}
        #: Owners whose lock file this process found missing, and when first.
        self._missing: dict[str, float] = {}
        self._check_path()
        # Named after the file itself, not the link it was reached through: every process on
        # one file shares its owners folder (and its WAL) whatever path it was given.
        self.path = Path(os.path.realpath(self.path))
        self._check_path()
        self.owners = Path(f"{self.path}.owners")
        #: (st_dev, st_ino) of the file opened: an event is accepted only while the path
        #: still names it (not deleted, not replaced by another file).
        self._identity: tuple[int, int] | None = None
        try:
            self._prepare()
            self._identity = self._file_identity()
            self._hold_owner_lock()
        except BaseException:
            self.close()
            raise
        self.sweep_owner_files()

    # --- opening ----------------------------------------------------------------------------

    def _error(self, what: str) -> StoreError:
        return StoreError(f"store {self.path} {what}")

    def _check_path(self) -> None:
        """StoreError unless the path is a regular file (or missing) that begins as SQLite,
        and its sidecars are not links or devices."""
        path = self.path
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            if os.path.islink(path):
                raise self._error("is a symbolic link to nothing: refused") from None
            mode = None
        except OSError as error:
            raise self._error(f"cannot be used: {error.strerror}") from None
        if mode is not None and not stat.S_ISREG(mode):
            raise self._error("is not a regular file (a device, FIFO or directory): refused")
        for suffix in ("-wal", "-shm", "-journal", ".owners"):
            side = Path(f"{path}{suffix}")
            if os.path.islink(side):
                raise self._error(f"has a symbolic link {side} next to it: refused")
            if suffix != ".owners" and side.exists() and not side.is_file():
                raise self._error(f"has {side} next to it, which is not a regular file: refused")
        if mode is None:
            return
        try:
            with path.open("rb") as handle:
                head = handle.read(len(SQLITE_MAGIC))
        except OSError as error:
            raise self._error(f"cannot be read: {error.strerror}") from None
        if head and head != SQLITE_MAGIC:
            hint = ""
            if head.lstrip()[:1] == b"{":
                hint = (
                    " (it looks like JSON lines: a store is made by flowlang automate --store or "
                    "flowlang serve --events-store; "
                    "dead letters in JSON lines are imported with flowlang deadletters import)"
                )
            raise self._error(f"is not a flowlang store (not an SQLite database){hint}")
        if not os.access(path, os.W_OK):
            raise self._error("is read-only: flowlang writes to its store")

    def _prepare(self) -> None:
        """Open this thread's connection, set WAL, make or check the schema."""
        connection = self._connection()
        with self._translated("cannot be opened"):
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._error(f"cannot use write-ahead logging (journal mode {mode})")
            with self._transaction() as db:
                tables = {
                    row[0]
                    for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if not tables:
                    for statement in _SCHEMA:
                        db.execute(statement)
                    return
                if "flowlang_store" not in tables:
                    raise self._error(
                        "is an SQLite database that is not a flowlang store: give another file"
                    )
                row = db.execute(
                    "SELECT value FROM flowlang_store WHERE name = 'schema'"
                ).fetchone()
                version = row[0] if row else None
                if version != SCHEMA_VERSION:
                    raise self._error(self._version_problem(version))

    @staticmethod
    def _version_problem(version: Any) -> str:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            return (
                f"was written by a newer flowlang (store schema {version}; this flowlang reads "
                f"{SCHEMA_VERSION}): use that newer flowlang, or a new store file"
            )
        if isinstance(version, int):
            return (
                f"has an older store schema ({version}; this flowlang reads {SCHEMA_VERSION}): "
                "export its dead letters with the flowlang that wrote it (flowlang deadletters "
                "export), then start a new store and import them"
            )
        return "has no usable schema version: it is not a flowlang store (or it is damaged)"

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (made on first use: sqlite3 wants one per thread)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        with self._translated("cannot be opened"):
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            with self._translated("cannot be opened"):
                connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                connection.execute(f"PRAGMA synchronous = {'FULL' if self.sync else 'NORMAL'}")
        except BaseException:
            connection.close()
            raise
        self._local.connection = connection
        with self._guard:
            self._connections.append(connection)
        return connection

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """sqlite3's errors (and OSErrors) as StoreError naming the file and what to do."""
        try:
            yield
        except StoreError:
            raise
        except sqlite3.Error as error:
            raise self._error(f"{doing}: {self._explain(error)}") from None
        except OSError as error:
            raise self._error(f"{doing}: {error.strerror or error}") from None

    def _explain(self, error: sqlite3.Error) -> str:
        text = str(error)
        if "locked" in text or "busy" in text:
            return (
                f"it is locked by another process for more than {self.busy_timeout:g} s "
                "(a long transaction): try again when it ends"
            )
        if "not a database" in text:
            return "it is not an SQLite database (or its header is damaged)"
        if "malformed" in text or "corrupt" in text:
            return (
                "it is damaged (database disk image is malformed): restore it from a backup, "
                "or move it away to start a new one"
            )
        if "readonly" in text or "read-only" in text:
            return "it cannot be written (read-only file or folder)"
        if "full" in text:
            return "the disk is full"
        if "unable to open" in text:
            return "a missing or unwritable folder?"
        return text

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on an exception)."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction whose errors are StoreErrors saying what was being done."""
        with self._translated(doing), self._transaction() as connection:
            yield connection

    def _file_identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the file at the path now; None when there is none."""
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def _check_same_file(self) -> None:
        """StoreError when the path no longer names the file opened (deleted or replaced
        while open): what is written now would be in a file no process can open."""
        now = self._file_identity()
        if now is None:
            raise self._error("was deleted while open: restore it, or restart on a new one")
        if now != self._identity:
            raise self._error("was replaced by another file while open: restart to use the new one")

    # --- owners -----------------------------------------------------------------------------

    def _hold_owner_lock(self) -> None:
        try:
            self.owners.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise self._error(f"cannot make {self.owners}: {error.strerror}") from None
        if os.path.islink(self.owners) or not self.owners.is_dir():
            raise self._error(f"has {self.owners} next to it, which is not a folder: refused")
        # Locked under a name no sweep or takeover looks at, then renamed: an owner's lock file
        # is never seen unlocked while its process lives.
        final = self.owners / f"{self.owner}.lock"
        making = self.owners / f"{self.owner}.making"
        try:
            fd = os.open(
                making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(making, final)
            except BaseException:
                os.close(fd)
                raise
        except OSError as error:
            raise self._error(f"cannot lock {final}: {error.strerror}") from None
        self._owner_fd = fd

    @staticmethod
    def _clock() -> float:
        """Seconds on a monotonic clock (for the backoffs and grace periods)."""
        return time.monotonic()

    def _orphaned(self, owner: object) -> FileLock | bool:
        """Whether ``owner`` is gone: its lock held now (to be released after the takeover),
        True when it has no lock file and had none at a look by this process at least
        MISSING_LOCK_GRACE before (a live owner whose file was deleted re-creates it by
        then), False when its process still holds it (or it may)."""
        if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
            return True  # none, or not one a store writes (a damaged row): gone
        name = str(self.owners / f"{owner}.lock")
        try:
            fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            now = self._clock()
            first = self._missing.setdefault(owner, now)
            # Gone once missing for the grace (forgotten once all its events are ours).
            return now - first >= MISSING_LOCK_GRACE
        except OSError:
            return False
        self._missing.pop(owner, None)
        os.close(fd)
        try:
            return FileLock(name, wait=False)
        except OSError:
            return False

    def _keep_owner_lock(self) -> None:
        """Re-create this process's lock file if it was deleted or replaced (a tmp cleaner, an
        ``rm -r`` of the owners folder): other processes would take our events otherwise."""
        if self._owner_fd is None or fcntl is None:
            return
        try:
            held = os.fstat(self._owner_fd)
            found = os.stat(self.owners / f"{self.owner}.lock", follow_symlinks=False)
            if (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino):
                return
        except OSError:
            pass
        old, self._owner_fd = self._owner_fd, None
        try:
            self._hold_owner_lock()
        except StoreError:
            self._owner_fd = old  # tried again at the next take-over or finish
            return
        os.close(old)

    def sweep_owner_files(self) -> None:
        """Remove a few lock files of owners that are gone and own nothing (bounded)."""
        try:
            with os.scandir(self.owners) as entries:
                names = [entry.name for entry in itertools.islice(entries, STALE_OWNER_SWEEP)]
        except OSError:
            return
        for name in names:
            owner = name.removesuffix(".lock")
            if owner == self.owner or not _OWNER.fullmatch(owner):
                continue
            with contextlib.suppress(StoreError):
                if self._owns_open(owner):
                    continue
            lock = self._orphaned(owner)
            if isinstance(lock, FileLock):
                with contextlib.suppress(OSError):
                    os.unlink(lock.lock_path)
                lock.close()

    def _owns_open(self, owner: str) -> bool:
        with self._translated("cannot be read"):
            row = (
                self._connection()
                .execute(
                    "SELECT 1 FROM events WHERE done_no IS NULL AND owner = ? LIMIT 1", (owner,)
                )
                .fetchone()
            )
        return row is not None

    def take_over(self, limit: int | None = None) -> list[OpenEvent]:
        """The open events of owners that are gone, now ours (atomically: another process
        taking over at the same time gets none of them), in the order they were accepted;
        then this process's own open events whose run ended unfinished (:meth:`run_again`) and
        whose backoff has passed. At most ``limit`` (a bounded batch: memory and store time
        follow it; the rest stay as they are for the next call, a gone owner's still taken at
        once). A StoreError part-way loses nothing: the events already made ours are
        returned by the next call."""
        clock = self._clock()
        room = limit if limit is not None else 2**62
        self._keep_owner_lock()
        # Owners read as BLOBs (a damaged one need not be UTF-8 text) and matched so.
        mine = self.owner.encode("ascii")
        with self._translated("cannot be read"):
            owners: list[bytes | None] = [
                row[0]
                for row in self._connection().execute(
                    "SELECT DISTINCT CAST(owner AS BLOB) FROM events WHERE done_no IS NULL"
                )
                if row[0] != mine
            ]
        taken: list[tuple[bytes, bytes]] = []
        try:
            for owner in owners:
                if len(taken) >= room:
                    break
                taken += self._take_from(owner, room - len(taken))
            seen = {key for key, _ in taken}
            again = [row for row in self._own_again(clock) if row[0] not in seen]
            taken += again[: max(0, room - len(taken))]
            return [self._open_event(key, text) for key, text in taken]
        except BaseException:
            for key, _ in taken:  # ours now: the next take-over returns them
                self._again.setdefault(key, (0, 0.0))
            raise

    def _take_from(self, owner: bytes | None, room: int) -> list[tuple[bytes, bytes]]:
        """At most ``room`` of the open events of ``owner`` made ours, oldest first, if it is
        gone (else none)."""
        name = owner.decode("ascii", "replace") if owner is not None else None
        lock = self._orphaned(name)
        if lock is False:
            return []
        try:
            with self._write("cannot take over open events") as db:
                rows: list[tuple[bytes, bytes]] = db.execute(
                    "SELECT key, CAST(event AS BLOB) FROM events"
                    " WHERE done_no IS NULL AND CAST(owner AS BLOB) IS ? ORDER BY at LIMIT ?",
                    (owner, room),
                ).fetchall()
                db.executemany(
                    "UPDATE events SET owner = ? WHERE key = ?",
                    [(self.owner, key) for key, _ in rows],
                )
            if len(rows) < room:  # all its events are ours: its lock file is not needed
                if name is not None:
                    self._missing.pop(name, None)
                if isinstance(lock, FileLock):
                    with contextlib.suppress(OSError):
                        os.unlink(lock.lock_path)
            return rows
        finally:
            # Otherwise the file stays, unlocked: the next take-over takes the rest at once.
            if isinstance(lock, FileLock):
                lock.close()

    def run_again(self, event_id: str) -> None:
        """This process's open event ``event_id`` ended its run unfinished (its progress could
        not be written): a later :meth:`take_over` returns it again, after a backoff that
        doubles each time (none the first time; at most RUN_AGAIN_MAX_DELAY)."""
        clock = self._clock()
        key = event_key(event_id)
        with self._guard:  # dispatch (the loop) and a take-over (a store thread) may race
            tries, _ = self._again.get(key, (0, 0.0))
            delay = (
                0.0 if tries == 0 else min(RUN_AGAIN_MAX_DELAY, RUN_AGAIN_DELAY * 2 ** (tries - 1))
            )
            self._again[key] = (tries + 1, clock + delay)

    def _own_again(self, clock: float) -> list[tuple[bytes, bytes]]:
        """This process's events to run again whose time has come (still open and ours)."""
        with self._guard:
            due = [key for key, (_, at) in self._again.items() if at <= clock]
        if not due:
            return []
        rows: list[tuple[bytes, bytes]] = []
        with self._translated("cannot be read"):
            db = self._connection()
            for key in due:
                row = db.execute(
                    "SELECT key, CAST(event AS BLOB) FROM events"
                    " WHERE key = ? AND done_no IS NULL AND owner = ?",
                    (key, self.owner),
                ).fetchone()
                if row is None:  # finished since, or no longer ours
                    self._again.pop(key, None)
                else:
                    rows.append((row[0], row[1]))
        return rows

    def _open_event(self, key: bytes, text: bytes | None) -> OpenEvent:
        problems: list[str] = []
        try:
            event = decode_record(_raw(text))
            event_id = event["id"]
            if not isinstance(event_id, str):
                raise RecordError("its id is not text")
        except (RecordError, KeyError, UnicodeEncodeError) as error:
            problems.append(f"{self.path}: an open event cannot be read back: {error}")
            return OpenEvent("", {}, problems=problems)
        found = OpenEvent(event_id, event, problems=problems)
        with self._translated("cannot be read"):
            db = self._connection()
            for row in db.execute(
                "SELECT CAST(workflow AS BLOB), CAST(action AS BLOB), CAST(outcome AS BLOB),"
                " CAST(result AS BLOB) FROM settled WHERE event_key = ?",
                (key,),
            ):
                try:
                    workflow, action = _name(row[0]), _name(row[1])
                    outcome = _name(row[2], raw=True)
                    if outcome not in _OUTCOMES:
                        raise ValueError(f"{shorten(outcome, 40)!r} is not an outcome")
                    found.settled[(workflow, action)] = (outcome, _value(row[3]))
                except ValueError as error:
                    problems.append(
                        self._damaged(event_id, "a settled action", error, "runs again")
                    )
            for (workflow,) in db.execute(
                "SELECT CAST(workflow AS BLOB) FROM workflows_done WHERE event_key = ?", (key,)
            ):
                try:
                    found.done.add(_name(workflow))
                except ValueError as error:
                    problems.append(self._damaged(event_id, "a finished workflow", error, "runs"))
            for op_key, name in db.execute(
                "SELECT CAST(key AS BLOB), CAST(name AS BLOB) FROM operations WHERE event_key = ?",
                (key,),
            ):
                try:
                    found.operations[_name(op_key, raw=True)] = _name(name)
                except ValueError as error:
                    problems.append(
                        self._damaged(event_id, "a speech operation", error, "starts anew")
                    )
        return found

    def _damaged(self, event_id: str, what: str, error: ValueError, then: str) -> str:
        return (
            f"{self.path}: open event {event_id!r}: {what} cannot be read back ({error}): "
            f"skipped, so its action {then} (with the same idempotency key)"
        )

    # --- events -----------------------------------------------------------------------------

    def accept(self, event_id: str, event: dict[str, Any], now: float, window: float) -> bool:
        """Record ``event`` as accepted and ours, unless its id was accepted less than
        ``window`` seconds before ``now`` or is still open: False then (a duplicate). One
        atomic statement, so of several processes accepting one id, one gets True."""
        text = encode_record(event)[:-1]
        self._check_same_file()
        with self._translated("cannot record an event"):
            cursor = self._connection().execute(
                "INSERT INTO events (key, at, owner, event, done_no) VALUES (?, ?, ?, ?, NULL)"
                " ON CONFLICT (key) DO UPDATE SET at = excluded.at, owner = excluded.owner,"
                " event = excluded.event, done_no = NULL"
                " WHERE events.done_no IS NOT NULL AND events.at <= ?",
                (event_key(event_id), now, self.owner, text, now - window),
            )
        if cursor.rowcount != 1:
            return False
        self._written[event_key(event_id)] = set()
        return True

    def _writes(self, key: bytes, table: str) -> bytes:
        written = self._written.get(key)
        if written is not None:
            written.add(table)
        return key

    def settle(self, event_id: str, workflow: str, action: str, outcome: str, result: Any) -> None:
        """Record an action as settled (RecordError when ``result`` is not JSON)."""
        values = (event_key(event_id), _text(workflow), _text(action), outcome, _text(result))
        with self._translated("cannot record a settled action"):
            self._settled_row(self._connection(), values)

    @staticmethod
    def _settled_row(db: sqlite3.Connection, values: tuple[bytes, str, str, str, str]) -> None:
        db.execute("INSERT OR REPLACE INTO settled VALUES (?, ?, ?, ?, ?)", values)

    def settle_dead(
        self,
        event_id: str,
        workflow: str,
        action: str,
        outcome: str,
        record: dict[str, Any],
        now: float = 0.0,
    ) -> int:
        """Keep the dead letter ``record`` and settle its action as ``outcome``, in one
        transaction: a process that dies part-way leaves neither (the action runs again and
        is dead-lettered once), never a dead letter and an unsettled action (which the next
        run would dead-letter a second time). The dead letter's id; RecordError when the
        record is not JSON."""
        text = encode_record(record)[:-1]
        values = (event_key(event_id), _text(workflow), _text(action), outcome, _text(None))
        with self._write("cannot keep a dead letter") as db:
            cursor = db.execute("INSERT INTO dead (at, record) VALUES (?, ?)", (now, text))
            self._settled_row(db, values)
        return int(cursor.lastrowid or 0)

    def operation(self, event_id: str, key: str, name: str) -> None:
        """Record a long-running speech operation started for the action of ``key``."""
        with self._translated("cannot record a speech operation"):
            self._connection().execute(
                "INSERT OR REPLACE INTO operations VALUES (?, ?, ?)",
                (self._writes(event_key(event_id), "operations"), key, _text(name)),
            )

    def workflow_done(self, event_id: str, workflow: str) -> None:
        """Record that every action of ``workflow`` settled for the event."""
        with self._translated("cannot record a finished workflow"):
            self._connection().execute(
                "INSERT OR REPLACE INTO workflows_done VALUES (?, ?)",
                (self._writes(event_key(event_id), "workflows_done"), _text(workflow)),
            )

    def schedule_retry(self, event_id: str, key: str, number: int, due: float) -> None:
        """Record that attempt ``number`` of the action of ``key`` is due at ``due``."""
        with self._translated("cannot record a retry"):
            self._connection().execute(
                "INSERT OR REPLACE INTO retries VALUES (?, ?, ?, ?)",
                (self._writes(event_key(event_id), "retries"), key, number, due),
            )

    def retry_of(self, event_id: str, key: str) -> tuple[int, float] | None:
        """``(attempt number, due)`` of the recorded next attempt of the action of ``key``
        (None when there is none, or its row is damaged: not a count and a finite time)."""
        with self._translated("cannot be read"):
            row = (
                self._connection()
                .execute(
                    "SELECT number, due FROM retries WHERE event_key = ? AND key = ?",
                    (event_key(event_id), key),
                )
                .fetchone()
            )
        if row is None:
            return None
        number, due = row
        if type(number) is not int or not 1 <= number <= 2**31:
            return None  # a damaged row: the attempt is made now
        if type(due) not in (int, float) or not math.isfinite(due):
            return None
        return number, float(due)

    def finish(self, event_id: str, now: float, window: float, limit: int) -> None:
        """The event is done: keep only (its id's digest, when accepted), forget its ledger,
        and prune a few finished events out of ``window`` or beyond the last ``limit``."""
        key = event_key(event_id)
        side = self._written.pop(key, _SIDE_TABLES)
        self._keep_owner_lock()
        self._finished += 1
        prune = self._finished % PRUNE_EVERY == 0
        with self._write("cannot record a finished event") as db:
            (number,) = db.execute(
                "UPDATE flowlang_store SET value = value + 1 WHERE name = 'finished'"
                " RETURNING value"
            ).fetchone()
            db.execute(
                "UPDATE events SET event = NULL, owner = NULL, done_no = ? WHERE key = ?",
                (number, key),
            )
            for table in ("settled", *sorted(side)):
                db.execute(f"DELETE FROM {table} WHERE event_key = ?", (key,))
            if prune:
                db.execute(
                    "DELETE FROM events WHERE key IN (SELECT key FROM events WHERE done_no IS NOT"
                    " NULL AND at <= ? ORDER BY at LIMIT ?)",
                    (now - window, PRUNE_BATCH),
                )
                db.execute(
                    "DELETE FROM events WHERE key IN (SELECT key FROM events WHERE done_no IS NOT"
                    " NULL AND done_no <= ? ORDER BY done_no LIMIT ?)",
                    (number - limit, PRUNE_BATCH),
                )
        self._again.pop(key, None)

    def counts(self) -> dict[str, int]:
        """Rows per table (for tests and inspection)."""
        with self._translated("cannot be read"):
            db = self._connection()
            counts = {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in (
                    "events",
                    "settled",
                    "operations",
                    "workflows_done",
                    "retries",
                    "dead",
                )
            }
            counts["open"] = db.execute(
                "SELECT count(*) FROM events WHERE done_no IS NULL"
            ).fetchone()[0]
        return counts

    # --- dead letters -----------------------------------------------------------------------

    def add_dead(self, record: dict[str, Any], now: float = 0.0) -> int:
        """Keep a dead-letter record; its id (RecordError when it is not JSON)."""
        text = encode_record(record)[:-1]
        with self._translated("cannot keep a dead letter"):
            cursor = self._connection().execute(
                "INSERT INTO dead (at, record) VALUES (?, ?)", (now, text)
            )
        return int(cursor.lastrowid or 0)

    def last_dead(self) -> int:
        """The id of the newest dead letter (0 when none)."""
        with self._translated("cannot be read"):
            row = self._connection().execute("SELECT max(id) FROM dead").fetchone()
        return int(row[0] or 0)

    def dead_letters(
        self, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, dict[str, Any] | str]]:
        """``(id, record or why it cannot be read)`` of each dead letter after ``after`` (and up
        to ``upto``), one read at a time (memory holds one)."""
        last = after
        while True:
            with self._translated("cannot be read"):
                row = (
                    self._connection()
                    .execute(
                        "SELECT id, CAST(record AS BLOB) FROM dead WHERE id > ? AND id <= ?"
                        " ORDER BY id LIMIT 1",
                        (last, upto if upto is not None else 2**62),
                    )
                    .fetchone()
                )
            if row is None:
                return
            last = int(row[0])
            try:
                yield last, decode_record(_raw(row[1]))
            except (RecordError, UnicodeEncodeError) as error:
                yield last, f"{self.path}: dead letter {last}: {error}"

    def import_dead(
        self, records: Iterable[tuple[dict[str, Any], float]], batch: int | None = None
    ) -> tuple[int, int]:
        """Add the dead letters ``records`` (each with when it was recorded), except those the
        store already holds (the same record, byte for byte as stored): ``(added, already
        held)``. RecordError when one is not JSON.

        Records are added ``batch`` (by default IMPORT_BATCH) at a time, each batch one
        transaction that first learns the dead letters committed since the last one: a run
        interrupted part-way (an exception, the process's death) keeps whole batches, and
        running it again adds each record once, as does another import of the same file at the
        same time. The store's write lock is
        held for one batch at a time, so processes on the store wait a moment, not the whole
        import."""
        size = batch or IMPORT_BATCH
        added = held = 0
        known: set[bytes] = set()
        last = 0
        pending: list[tuple[str, float]] = []

        def commit() -> None:
            nonlocal added, held, last
            with self._write("cannot import dead letters") as db:
                for number, raw in db.execute(
                    "SELECT id, CAST(record AS BLOB) FROM dead WHERE id > ? ORDER BY id", (last,)
                ):
                    known.add(hashlib.sha256(_raw(raw)).digest()[:16])
                    last = int(number)
                for text, at in pending:
                    digest = hashlib.sha256(text.encode("ascii")).digest()[:16]
                    if digest in known:
                        held += 1
                        continue
                    known.add(digest)
                    last = max(last, self._insert_dead(db, text, at))
                    added += 1
            pending.clear()

        for record, at in records:
            pending.append((encode_record(record)[:-1], at))
            if len(pending) >= size:
                commit()
        commit()
        return added, held

    @staticmethod
    def _insert_dead(db: sqlite3.Connection, text: str, at: float) -> int:
        cursor = db.execute("INSERT INTO dead (at, record) VALUES (?, ?)", (at, text))
        return int(cursor.lastrowid or 0)

    def replace_dead(
        self, consumed: list[int], added: list[dict[str, Any]], now: float = 0.0
    ) -> None:
        """In one transaction: remove the dead letters ``consumed``, keep ``added``."""
        lines = [encode_record(record)[:-1] for record in added]
        with self._write("cannot update its dead letters") as db:
            db.executemany("DELETE FROM dead WHERE id = ?", [(number,) for number in consumed])
            db.executemany("INSERT INTO dead (at, record) VALUES (?, ?)", [(now, x) for x in lines])

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and give up ownership (open events become orphans that the
        next process takes over). Again: nothing."""
        owns = True  # our lock file is kept (unlocked) while we own open events: taken at once
        if self._owner_fd is not None and self._file_identity() == self._identity:
            with contextlib.suppress(StoreError):
                owns = self._owns_open(self.owner)
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local = threading.local()
        if self._owner_fd is not None:
            if not owns:
                with contextlib.suppress(OSError):
                    os.unlink(self.owners / f"{self.owner}.lock")
            # else kept, unlocked: the next process takes our open events over at once
            os.close(self._owner_fd)
            self._owner_fd = None

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
