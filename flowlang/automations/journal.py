"""Journal: what dispatches have done, appended as it happens and compacted as it grows.

Records, one JSON object per line: ``event`` (accepted, with the time ``at``), ``settled`` (an
action delivered, dead-lettered or skipped, with its result), ``operation`` (a long-running
speech operation an action started: its ``name`` by idempotency ``key``), ``workflow_done``,
``done``, and
``seen`` (a finished event, kept only for the duplicate window). Lines are ASCII JSON, so what is
written reads back; a line that does not (a torn last line after a crash, say) is reported and
skipped. Compaction keeps every record of an unfinished event and one ``seen`` line
per finished event still inside the duplicate window, for at most the last
``DeliverySettings.max_remembered_events`` finished events; it streams the file (two passes,
a bounded line at a time, kept lines written as they are read) and replaces it atomically (a
new file, synced, then renamed over the old one), so a crash leaves the old journal or the new
one.
"""

from __future__ import annotations

__all__ = ["Journal", "JournalLockedError", "JournalState", "record_problem", "summarize"]

import contextlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlang.automations.locks import FileLock
from flowlang.automations.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_SKIP,
    RecordError,
    append_line,
    check_record_file,
    decoded_lines,
    encode_record,
)
from flowlang.errors import JournalLockedError

#: Lines appended before the first compaction; later, when appends pass the lines last kept.
COMPACT_AFTER = 10_000


class Journal:
    """An append-only file of dispatch records (see the module docstring).

    A journal has one writer: making a Journal takes an exclusive lock on ``<path>.lock``
    (without waiting; JournalLockedError when it is held), released by :meth:`close`. A path
    that is not a regular file (``/dev/zero``, a FIFO) is refused first (RecordFileError).
    Lines that cannot be read are skipped and listed in :attr:`problems` (``file:line: why``).
    """

    def __init__(self, path: Path, compact_after: int = COMPACT_AFTER, sync: bool = False) -> None:
        self.path = path
        #: Whether each record reaches the disk (fsync) before write returns: an event a server
        #: answered "accepted" survives a power cut, not only the process's death.
        self.sync = sync
        self.compact_after = compact_after
        self._appended = 0
        self._kept = 0
        #: Lines skipped when the journal was last read, each ``file:line: why``.
        self.problems: list[str] = []
        self._lock: FileLock | None = None
        check_record_file(path, "journal")  # before a lock is made next to it
        self._lock = FileLock(f"{path}.lock", wait=False, busy=self._locked_error)

    def _locked_error(self) -> JournalLockedError:
        return JournalLockedError(
            f"journal {self.path} is in use by another flowlang automate "
            f"(one writer per journal; {self.path}.lock is held)"
        )

    def close(self) -> None:
        """Release the lock (the journal is not written after this)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at exit, the process ending releases it anyway
            self.close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (ASCII JSON: whatever is written reads back)."""
        append_line(self.path, encode_record(record), sync=self.sync)
        self._appended += 1

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in order (the whole file in memory: for inspection; compaction
        streams instead); bad lines (a torn last line, a field of the wrong type or out of
        range, say) are skipped and listed in :attr:`problems`."""
        return [record for _, _, record in self._lines(report=True)]

    def _lines(self, report: bool) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """``(line number, line, record)`` of each usable record, read one bounded line at a
        time; with ``report``, :attr:`problems` is made anew with the lines skipped.
        RecordFileError or LineTooLongError (naming the file) as for :func:`read_records`."""
        if report:
            self.problems = []
        check_record_file(self.path, "journal")
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        label = str(self.path)
        with handle:
            for number, raw, record in decoded_lines(
                handle, MAX_RECORD_BYTES, MAX_RECORD_SKIP, label
            ):
                if raw is None or record is None:
                    why = f"{label}:{number}: skipped: longer than {MAX_RECORD_BYTES} bytes"
                elif isinstance(record, RecordError):
                    why = f"{record.where(label, number)} (skipped)"
                else:
                    problem = record_problem(record)
                    if problem is None:
                        yield number, raw, record
                        continue
                    why = f"{label}:{number}: {problem} (skipped)"
                if report:
                    self.problems.append(why)

    def due(self) -> bool:
        """Whether enough has been appended since the last rewrite to compact (amortized O(1))."""
        return self._appended > max(self.compact_after, self._kept)

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file with ``records``, atomically (each is written as it comes)."""
        with self._replacing() as write:
            for record in records:
                write(encode_record(record).encode("ascii"))

    def compact(
        self, now: float, window: float, limit: int, *, remember: bool = False
    ) -> JournalState:
        """Rewrite the file, atomically, with every record of each unfinished event and a
        ``seen`` line for each of the last finished events accepted within ``window`` seconds
        of ``now``: at most ``limit`` events in all (unfinished ones are never dropped).

        The file is read twice, a bounded line at a time, and kept lines are written as they
        are read: memory holds a small entry per event (about 1.25 × ``limit`` at most, plus
        the unfinished ones), never the records. With ``remember``, the state says which
        events are duplicates and lists the unfinished events' records (to resume them);
        otherwise both are empty."""
        ledger = _Ledger(now, window, limit)
        for number, _, record in self._lines(report=True):
            ledger.add(number, record)
        ledger.trim(max(limit - len(ledger.open), 0))  # limit counts unfinished ones too
        unfinished: dict[str, list[dict[str, Any]]] = {}
        with self._replacing() as write:
            for number, raw, record in self._lines(report=False):
                event_id = ledger.unfinished_since(number, record)
                if event_id is not None:
                    write(raw + b"\n")
                    if remember:
                        unfinished.setdefault(event_id, []).append(record)
            for event_id, at in ledger.finished():
                write(encode_record({"kind": "seen", "event_id": event_id, "at": at}).encode())
        return JournalState(ledger.seen() if remember else {}, unfinished, self._kept)

    @contextlib.contextmanager
    def _replacing(self) -> Iterator[Callable[[bytes], None]]:
        """A writer of lines to ``<path>.compacting``, synced and renamed over the journal when
        the block ends without an exception (a crash leaves the old journal or the new one)."""
        temporary = self.path.with_name(self.path.name + ".compacting")
        count = 0
        with temporary.open("wb") as handle:

            def write(line: bytes) -> None:
                nonlocal count
                handle.write(line)
                count += 1

            yield write
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._appended, self._kept = 0, count


@dataclass
class JournalState:
    """What a journal says: which events are duplicates (id → when accepted, oldest first; an
    unfinished one counts as now), the unfinished events with their records in order, and how
    many records compaction kept."""

    seen: dict[str, float]
    unfinished: dict[str, list[dict[str, Any]]]
    kept: int


#: A record's time is a number of at most this magnitude (seconds; exact as a float).
MAX_TIME = 2**53
#: The outcomes a ``settled`` record may have.
SETTLED_OUTCOMES = frozenset({"delivered", "dead_lettered", "skipped"})
#: The fields of each kind of record that must be non-empty text.
_TEXT_FIELDS = {
    "event": (),
    "seen": ("event_id",),
    "settled": ("event_id", "workflow", "action", "outcome"),
    "operation": ("event_id", "key", "name"),
    "workflow_done": ("event_id", "workflow"),
    "done": ("event_id",),
}


def _is_time(value: Any) -> bool:
    """Whether ``value`` is a usable time: an int or float (not a bool), finite, in range.
    (No conversion: ``math.isfinite`` of a 400-digit int raises OverflowError.)"""
    if type(value) is int:
        return -MAX_TIME <= value <= MAX_TIME
    return type(value) is float and math.isfinite(value) and -MAX_TIME <= value <= MAX_TIME


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Why a journal record cannot be used (a kind, field type or range that flowlang never
    writes), or None when it can. A missing ``at`` is allowed (older journals): it counts as
    now."""
    kind = record.get("kind")
    fields = _TEXT_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        return f"not a journal record (its kind, {type(kind).__name__}, is not one flowlang writes)"
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            return f"its {name} is not text ({type(value).__name__})"
    if kind == "event":
        event = record.get("event")
        if not isinstance(event, Mapping) or not isinstance(event.get("id"), str):
            return "its event is not an object with an id (text)"
    if kind == "settled" and record["outcome"] not in SETTLED_OUTCOMES:
        return "its outcome is not one of " + ", ".join(sorted(SETTLED_OUTCOMES))
    if "at" in record and not _is_time(record["at"]):
        return f"its at is not a time (a number of at most {MAX_TIME} in size)"
    return None


def _time(value: Any, now: float) -> float:
    """A record's time; missing, invalid or later than ``now`` (another clock) counts as now."""
    if _is_time(value) and value <= now:
        return float(value)
    return now


def _event_id(record: Mapping[str, Any]) -> str:
    """The id of the event a usable record (see :func:`record_problem`) is about."""
    event_id: str = record["event"]["id"] if record["kind"] == "event" else record["event_id"]
    return event_id


#: Finished events a compaction's first pass may hold beyond its limit before it trims.
MIN_TRIM_SLACK = 256


class _Ledger:
    """What the first pass of a compaction learns: when each event was accepted, in the order
    accepted, and for the unfinished ones the line of their latest ``event`` record. Finished
    events outside the window are dropped as they are read, and the oldest finished ones beyond
    ``limit`` in batches (a quarter of ``limit`` at a time, at least ``MIN_TRIM_SLACK``), so it
    holds at most about 1.25 × ``limit`` finished events besides the unfinished ones (one float
    each).

    One pass cannot know which of the events it keeps will be accepted again further on (and so
    move or leave the window), so a trim may drop an event that the file's end would have kept:
    when more finished events than the slack are accepted again after a trim, compaction keeps
    fewer than ``limit`` finished events, never more, and never an event the plain reading would
    not keep (tests/test_automations_memory.py). Unfinished events are always kept whole."""

    def __init__(self, now: float, window: float, limit: int) -> None:
        self.now, self.window, self.limit = now, window, limit
        self.accepted: OrderedDict[str, float] = OrderedDict()
        self.open: dict[str, int] = {}

    @property
    def done(self) -> int:
        """How many finished events it holds."""
        return len(self.accepted) - len(self.open)

    def add(self, number: int, record: Mapping[str, Any]) -> None:
        """Learn from the usable record on line ``number``."""
        kind = record["kind"]
        event_id = _event_id(record)
        if kind in ("event", "seen"):  # accepted (again, after its window: the latest counts)
            self.accepted.pop(event_id, None)
            self.open.pop(event_id, None)
            at = _time(record.get("at"), self.now)
            if kind == "event":
                self.accepted[event_id] = at
                self.open[event_id] = number
            elif self.now - at < self.window:
                self.accepted[event_id] = at
                self._finished_one()
        elif kind == "done" and self.open.pop(event_id, None) is not None:
            if self.now - self.accepted[event_id] < self.window:
                self._finished_one()  # it keeps its place
            else:
                del self.accepted[event_id]

    def _finished_one(self) -> None:
        if self.done > self.limit + max(self.limit // 4, MIN_TRIM_SLACK):
            self.trim(self.limit)

    def trim(self, limit: int) -> None:
        """Forget the oldest finished events beyond ``limit``."""
        excess = self.done - limit
        if excess <= 0:
            return
        oldest = []
        for event_id in self.accepted:
            if event_id not in self.open:
                oldest.append(event_id)
                if len(oldest) == excess:
                    break
        for event_id in oldest:
            del self.accepted[event_id]

    def unfinished_since(self, number: int, record: Mapping[str, Any]) -> str | None:
        """The event id of the record on line ``number`` when compaction keeps it: a record of an
        unfinished event from its latest ``event`` record on."""
        if record["kind"] in ("seen", "done"):
            return None
        event_id = _event_id(record)
        start = self.open.get(event_id)
        return event_id if start is not None and number >= start else None

    def finished(self) -> Iterator[tuple[str, float]]:
        """``(id, accepted at)`` of each finished event kept, oldest accepted first."""
        for event_id, at in self.accepted.items():
            if event_id not in self.open:
                yield event_id, at

    def seen(self) -> dict[str, float]:
        """The duplicates: finished events when accepted, unfinished ones as now; oldest first."""
        now, open_ = self.now, self.open
        pairs = ((i, now if i in open_ else at) for i, at in self.accepted.items())
        return dict(sorted(pairs, key=lambda item: item[1]))


def summarize(
    records: Iterable[Mapping[str, Any]], now: float, window: float, limit: int = 2**62
) -> JournalState:
    """What compaction would make of ``records`` (in memory; :meth:`Journal.compact` streams a
    file): unusable records are ignored."""
    numbered = [
        (number, record)
        for number, record in enumerate(records, 1)
        if isinstance(record, Mapping) and record_problem(record) is None
    ]
    ledger = _Ledger(now, window, limit)
    for number, record in numbered:
        ledger.add(number, record)
    ledger.trim(max(limit - len(ledger.open), 0))
    unfinished: dict[str, list[dict[str, Any]]] = {}
    for number, record in numbered:
        event_id = ledger.unfinished_since(number, record)
        if event_id is not None:
            unfinished.setdefault(event_id, []).append(dict(record))
    kept = sum(len(kept) for kept in unfinished.values()) + ledger.done
    return JournalState(ledger.seen(), unfinished, kept)
