"""Journal: what dispatches have done, appended as it happens and compacted as it grows.

Records, one JSON object per line: ``event`` (accepted, with the time ``at``), ``settled`` (an
action delivered, dead-lettered or skipped, with its result), ``workflow_done``, ``done``, and
``seen`` (a finished event, kept only for the duplicate window). A torn last line (a crash while
writing) is ignored. Compaction keeps every record of an unfinished event and one ``seen`` line
per finished event still inside the duplicate window; it rewrites the file atomically (a new
file, synced, then renamed over the old one), so a crash leaves the old journal or the new one.
"""

from __future__ import annotations

__all__ = ["Journal", "JournalState", "summarize"]

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Lines appended before the first compaction; later, when appends pass the lines last kept.
COMPACT_AFTER = 10_000


class Journal:
    """An append-only file of dispatch records (see the module docstring)."""

    def __init__(self, path: Path, compact_after: int = COMPACT_AFTER) -> None:
        self.path = path
        self.compact_after = compact_after
        self._appended = 0
        self._kept = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
        self._appended += 1

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in order."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if isinstance(record, dict):
                out.append(record)
        return out

    def due(self) -> bool:
        """Whether enough has been appended since the last rewrite to compact (amortized O(1))."""
        return self._appended > max(self.compact_after, self._kept)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``records``, atomically."""
        lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
        temporary = self.path.with_name(self.path.name + ".compacting")
        with temporary.open("w", encoding="utf-8") as handle:
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


def _time(value: Any, now: float) -> float:
    """A record's time; missing, invalid or later than ``now`` (another clock) counts as now."""
    if type(value) in (int, float) and math.isfinite(value) and value <= now:
        return float(value)
    return now


def summarize(records: Iterable[dict[str, Any]], now: float, window: float) -> JournalState:
    """Read records in order into events; finished ones older than ``window`` are forgotten."""
    events: dict[str, _Event] = {}
    for record in records:
        kind = record.get("kind")
        if kind == "event":
            event = record.get("event")
            event_id = str(event.get("id")) if isinstance(event, dict) else "None"
            events.pop(event_id, None)  # accepted again after its window: the latest counts
            events[event_id] = _Event(_time(record.get("at"), now), [record])
        elif kind == "seen":
            event_id = str(record.get("event_id"))
            events.pop(event_id, None)
            events[event_id] = _Event(_time(record.get("at"), now), done=True)
        elif kind in ("settled", "workflow_done", "done"):
            entry = events.get(str(record.get("event_id")))
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
