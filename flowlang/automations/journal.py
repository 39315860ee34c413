"""Journal: what dispatches have done, appended as it happens and compacted as it grows.

Records, one JSON object per line: ``event`` (accepted, with the time ``at``), ``settled`` (an
action delivered, dead-lettered or skipped, with its result), ``operation`` (a long-running
speech operation an action started: its ``name`` by idempotency ``key``), ``workflow_done``,
``done``, and
``seen`` (a finished event, kept only for the duplicate window). Lines are ASCII JSON, so what is
written reads back; a line that does not (a torn last line after a crash, say) is reported and
skipped. Compaction keeps every record of an unfinished event and one ``seen`` line
per finished event still inside the duplicate window; it rewrites the file atomically (a new
file, synced, then renamed over the old one), so a crash leaves the old journal or the new one.
"""

from __future__ import annotations

__all__ = ["Journal", "JournalLockedError", "JournalState", "record_problem", "summarize"]

import contextlib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlang.automations.locks import FileLock
from flowlang.automations.records import (
    append_line,
    check_record_file,
    encode_record,
    read_records,
)

#: Lines appended before the first compaction; later, when appends pass the lines last kept.
COMPACT_AFTER = 10_000


class JournalLockedError(OSError):
    """Another process (or another Journal in this one) writes this journal."""


class Journal:
    """An append-only file of dispatch records (see the module docstring).

    A journal has one writer: making a Journal takes an exclusive lock on ``<path>.lock``
    (without waiting; JournalLockedError when it is held), released by :meth:`close`. A path
    that is not a regular file (``/dev/zero``, a FIFO) is refused first (RecordFileError).
    Lines that cannot be read are skipped and listed in :attr:`problems` (``file:line: why``).
    """

    def __init__(self, path: Path, compact_after: int = COMPACT_AFTER) -> None:
        self.path = path
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
        append_line(self.path, encode_record(record))
        self._appended += 1

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in order; bad lines (a torn last line, a field of the wrong
        type or out of range, say) are skipped and listed in :attr:`problems`."""
        found, self.problems = read_records(self.path)
        kept = []
        for number, record in found:
            why = record_problem(record)
            if why is None:
                kept.append(record)
            else:
                self.problems.append(f"{self.path}:{number}: {why} (skipped)")
        return kept

    def due(self) -> bool:
        """Whether enough has been appended since the last rewrite to compact (amortized O(1))."""
        return self._appended > max(self.compact_after, self._kept)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``records``, atomically."""
        lines = [encode_record(record) for record in records]
        temporary = self.path.with_name(self.path.name + ".compacting")
        with temporary.open("w", encoding="ascii") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._appended, self._kept = 0, len(lines)


@dataclass
class _Event:
    at: float
    records: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False


@dataclass
class JournalState:
    """What a journal says: when each event was accepted, which are unfinished (with their
    records, in order), and the records compaction keeps."""

    seen: dict[str, float]
    unfinished: dict[str, list[dict[str, Any]]]
    kept: list[dict[str, Any]]


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


def summarize(records: Iterable[dict[str, Any]], now: float, window: float) -> JournalState:
    """Read records in order into events; finished ones older than ``window`` are forgotten."""
    events: dict[str, _Event] = {}
    for record in records:
        if not isinstance(record, Mapping) or record_problem(record) is not None:
            continue  # Journal.records reports these; a summary never acts on them
        kind = record["kind"]  # from here on, the fields record_problem checked are text
        if kind == "event":
            event_id = record["event"]["id"]
            events.pop(event_id, None)  # accepted again after its window: the latest counts
            events[event_id] = _Event(_time(record.get("at"), now), [record])
        elif kind == "seen":
            event_id = record["event_id"]
            events.pop(event_id, None)
            events[event_id] = _Event(_time(record.get("at"), now), done=True)
        else:  # settled, operation, workflow_done, done
            entry = events.get(record["event_id"])
            if entry is None or entry.done:
                continue
            if kind == "done":
                entry.done, entry.records = True, []
            else:
                entry.records.append(record)
    seen: dict[str, float] = {}
    unfinished: dict[str, list[dict[str, Any]]] = {}
    kept: list[dict[str, Any]] = []
    for event_id, entry in events.items():
        if not entry.done:  # unfinished: everything, whatever its age; a duplicate until done
            seen[event_id] = now
            unfinished[event_id] = entry.records
            kept.extend(entry.records)
        elif now - entry.at < window:
            seen[event_id] = entry.at
            kept.append({"kind": "seen", "event_id": event_id, "at": entry.at})
    return JournalState(seen, unfinished, kept)
