"""Schedules: read the opening hours of a business_hours step and decide an instant by them.

A schedule is a time zone (an IANA name, read through :mod:`zoneinfo`; the ``tzdata`` package
supplies zones where the system has none), weekly intervals of local wall-clock time and dated
exceptions. An interval ``HH:MM-HH:MM`` is ``[start, end)``; ``24:00`` may end one; an end
before the start runs across midnight and belongs to the day it starts. An exception governs
its whole local date: the part of the previous day's interval after midnight does not apply on
it (it applies on the next ordinary day, also from an exception's own hours).
"""

from __future__ import annotations

__all__ = [
    "MAX_EXCEPTIONS",
    "MAX_INTERVALS",
    "MAX_SCHEDULES",
    "SCHEDULE_SCHEMA",
    "WEEKDAYS",
    "DatedException",
    "Interval",
    "Schedule",
    "ScheduleReader",
]

import functools
import itertools
import weakref
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flowlang.expr.shared import kind_name
from flowlang.flow.source import Pointer
from flowlang.kinds.base import Checker
from flowlang.suggest import HintBudget

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: Intervals in one day (weekly or an exception's hours): every half hour its own interval.
MAX_INTERVALS = 48
#: Dated exceptions of one schedule: a few years of holidays.
MAX_EXCEPTIONS = 1000
#: Named schedules in one document.
MAX_SCHEDULES = 100
#: The longest time zone name (the longest IANA name is about 32 characters).
MAX_ZONE_NAME = 64
#: The longest exception name.
MAX_NAME = 200
_DAY = 24 * 3600
_DIGITS = "0123456789"
#: The characters of an IANA zone name; a part may not start with a dot (no ``..``).
_ZONE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/")
_SCHEDULE_FIELDS = ("time_zone", "weekly", "exceptions")
_EXCEPTION_FIELDS = ("date", "closed", "hours", "name")

_INTERVAL_SCHEMA = {
    "type": "string",
    "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
    "description": "local wall-clock time HH:MM-HH:MM, [start, end); an end before the start "
    "runs across midnight",
}
_DAY_SCHEMA = {"type": "array", "maxItems": MAX_INTERVALS, "items": _INTERVAL_SCHEMA}
#: The JSON Schema of one schedule (named under ``schedules`` or written inline).
SCHEDULE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["time_zone", "weekly"],
    "additionalProperties": False,
    "properties": {
        "time_zone": {
            "type": "string",
            "maxLength": MAX_ZONE_NAME,
            "description": "an IANA time zone name, such as Europe/Prague",
        },
        "weekly": {
            "type": "object",
            "additionalProperties": False,
            "properties": {day: _DAY_SCHEMA for day in WEEKDAYS},
            "description": "intervals per weekday; a missing day is closed",
        },
        "exceptions": {
            "type": "array",
            "maxItems": MAX_EXCEPTIONS,
            "items": {
                "type": "object",
                "required": ["date"],
                "additionalProperties": False,
                "properties": {
                    "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                    "closed": {"const": True},
                    "hours": {**_DAY_SCHEMA, "minItems": 1},
                    "name": {"type": "string", "maxLength": MAX_NAME},
                },
                "oneOf": [{"required": ["closed"]}, {"required": ["hours"]}],
            },
            "description": "dated exceptions: closed all day (a holiday) or special hours",
        },
    },
}


@dataclass(frozen=True)
class Interval:
    """Opening hours in one day: seconds after the local midnight of the day it starts;
    ``end`` is past ``86400`` when it runs across midnight."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class DatedException:
    """A local date with its own rule: closed all day (``hours`` empty) or special hours."""

    date: date
    closed: bool
    hours: tuple[Interval, ...]
    name: str

    def label(self) -> str:
        """``exception 2026-12-24 (Christmas Eve)``, for the trace."""
        return f"exception {self.date.isoformat()}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Schedule:
    """A compiled schedule: the zone, the intervals of each weekday (monday first) and the
    exceptions by date. Immutable; shared by every step and call that uses it."""

    name: str | None
    zone: zoneinfo.ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]
    exceptions: Mapping[date, DatedException]

    def decide(self, instant: datetime) -> tuple[str, dict[str, Any]]:
        """The outcome (``open``, ``closed`` or ``holiday``) at ``instant`` (an aware datetime)
        and the trace detail: the local time, the zone and what decided."""
        if not isinstance(instant, datetime) or instant.utcoffset() is None:
            raise TypeError(
                f"the runtime's clock gave {type(instant).__name__} {str(instant)[:40]!r}, "
                "not an aware datetime"
            )
        try:
            local = instant.astimezone(self.zone)
        except (OverflowError, ValueError):
            raise ValueError(
                f"the time {instant.isoformat()} is out of range in {self.zone.key}"
            ) from None
        outcome, why = self._decide(
            local.date(), local.hour * 3600 + local.minute * 60 + local.second
        )
        shown = f"{WEEKDAYS[local.weekday()]} {local.strftime('%Y-%m-%d %H:%M:%S')}"
        detail = {
            "schedule": self.name,
            "time_zone": self.zone.key,
            "local_time": local.isoformat(timespec="seconds"),
            "why": f"{shown} {local.tzname()} in {self.zone.key}: {why}",
        }
        return outcome, detail

    def _decide(self, day: date, seconds: int) -> tuple[str, str]:
        exception = self.exceptions.get(day)
        if exception is not None:
            if exception.closed:
                return "holiday", f"{exception.label()}: closed all day"
            for interval in exception.hours:
                if interval.start <= seconds < interval.end:
                    return "open", f"{exception.label()}: inside {interval.text}"
            hours = ", ".join(interval.text for interval in exception.hours)
            return "holiday", f"{exception.label()}: outside {hours}"
        weekday = WEEKDAYS[day.weekday()]
        for interval in self.weekly[day.weekday()]:
            if interval.start <= seconds < interval.end:
                return "open", f"{weekday} {interval.text}"
        if day > date.min:
            before = day - timedelta(days=1)
            previous = self.exceptions.get(before)
            carried = previous.hours if previous is not None else self.weekly[before.weekday()]
            for interval in carried:
                if seconds < interval.end - _DAY:
                    source = (
                        previous.label() if previous is not None else WEEKDAYS[before.weekday()]
                    )
                    return "open", f"{source} {interval.text} (from the day before)"
        return "closed", f"no interval on {weekday} holds"


class ScheduleReader:
    """Reads schedules of one document for a checker: the ``schedules`` section once (each
    named schedule checked once, its errors reported once), inline schedules per step."""

    def __init__(self, checker: Checker) -> None:
        #: Held weakly: readers are kept per checker in a weak map, which a strong reference
        #: from the value to its key would never empty.
        self._checker = weakref.ref(checker)
        self.named: dict[str, Schedule | None] | None = None

    @property
    def checker(self) -> Checker:
        """The checker this reader reports through (alive while it reads)."""
        checker = self._checker()
        if checker is None:  # pragma: no cover - a reader is used only by its checker
            raise RuntimeError("the document's checker is gone")
        return checker

    # --- the section and the field --------------------------------------------------------

    def field(self, raw: Any, pointer: Pointer, step: str, name: str) -> Schedule | None:
        """A step's ``schedule``: a name from ``schedules``, or an inline schedule (the section
        is checked either way, once)."""
        named = self.section()
        if isinstance(raw, dict):
            return self.schedule(None, raw, pointer, step, name)
        if not isinstance(raw, str):
            self.checker.error(
                f"expected a schedule name or a schedule (time_zone, weekly, exceptions), "
                f"found {kind_name(raw)}",
                pointer,
                step,
                name,
            )
            return None
        if raw not in named:
            hint = self.checker.hint(raw, named) if named else "; the document has no schedules"
            self.checker.error(f"unknown schedule {_shorten(raw)}{hint}", pointer, step, name)
            return None
        return named[raw]  # None when it has errors: reported once, where it is defined

    def section(self) -> dict[str, Schedule | None]:
        """Every named schedule of the document, read on first use."""
        if self.named is not None:
            return self.named
        self.named = {}
        data = self.checker.document.data
        raw = data.get("schedules") if isinstance(data, dict) else None
        if raw is None:
            return self.named
        if not isinstance(raw, dict):
            self.checker.error(
                f"schedules is a map of schedule name to schedule, found {kind_name(raw)}",
                ("schedules",),
            )
            return self.named
        if len(raw) > MAX_SCHEDULES:
            self.checker.error(
                f"at most {MAX_SCHEDULES} schedules are allowed, not {len(raw)}", ("schedules",)
            )
            return self.named
        for key, item in raw.items():
            name = str(key)
            self.named[name] = self.schedule(
                name, item, ("schedules", key), None, f"schedules.{_label(name)}"
            )
        return self.named

    # --- one schedule ---------------------------------------------------------------------

    def known_fields(
        self,
        raw: Any,
        known: Any,
        noun: str,
        listing: str,
        pointer: Pointer,
        step: str | None,
        field: str,
    ) -> bool | None:
        """Whether the map ``raw`` has only ``known`` fields (each unknown one reported, with a
        suggestion); None, after reporting, when ``raw`` is not a map at all."""
        error = self.checker.error
        if not isinstance(raw, dict):
            error(
                f"{noun} is key/value fields ({listing}), found {kind_name(raw)}",
                pointer,
                step,
                field,
            )
            return None
        ok = True
        for key in raw:
            if key not in known:
                hint = self.checker.hint(key, known)
                error(
                    f"unknown field {_shorten(str(key))} for {noun}{hint}",
                    (*pointer, key),
                    step,
                    field,
                    key=True,
                )
                ok = False
        return ok

    def schedule(
        self, name: str | None, raw: Any, pointer: Pointer, step: str | None, field: str
    ) -> Schedule | None:
        """One schedule map: None (after reporting) when anything is wrong."""
        error = self.checker.error
        ok = self.known_fields(
            raw,
            _SCHEDULE_FIELDS,
            "a schedule",
            "time_zone, weekly, exceptions",
            pointer,
            step,
            field,
        )
        if ok is None:
            return None
        for needed in ("time_zone", "weekly"):
            if needed not in raw:
                error(f"a schedule needs {needed}", pointer, step, field, key=True)
                ok = False
        zone = (
            self.zone(raw["time_zone"], (*pointer, "time_zone"), step, field)
            if ("time_zone" in raw)
            else None
        )
        weekly = (
            self.weekly(raw["weekly"], (*pointer, "weekly"), step, field)
            if ("weekly" in raw)
            else None
        )
        exceptions = self.exceptions(
            raw.get("exceptions", []), (*pointer, "exceptions"), step, field
        )
        if not ok or zone is None or weekly is None or exceptions is None:
            return None
        return Schedule(name, zone, weekly, exceptions)

    def zone(
        self, raw: Any, pointer: Pointer, step: str | None, field: str
    ) -> zoneinfo.ZoneInfo | None:
        """An IANA zone by name; a path-like or unknown name is an error (no file is opened
        for a name that is not made of a zone name's characters)."""
        if not isinstance(raw, str):
            self.checker.error(
                f"time_zone is an IANA name such as Europe/Prague, found {kind_name(raw)}",
                pointer,
                step,
                field,
            )
            return None
        found = _zone(raw) if _zone_like(raw) else None
        if found is None:
            self.checker.error(
                f"unknown time zone {_shorten(raw)}{_zone_hint(raw, self.checker.hint)}",
                pointer,
                step,
                field,
            )
        return found

    def weekly(
        self, raw: Any, pointer: Pointer, step: str | None, field: str
    ) -> tuple[tuple[Interval, ...], ...] | None:
        if not isinstance(raw, dict):
            self.checker.error(
                f"weekly is a map of weekday (monday..sunday) to intervals, found {kind_name(raw)}",
                pointer,
                step,
                field,
            )
            return None
        days: list[tuple[Interval, ...]] = [() for _ in WEEKDAYS]
        ok = True
        for key, item in raw.items():
            day = str(key)
            if day not in WEEKDAYS or not isinstance(key, str):
                hint = self.checker.hint(day.lower(), WEEKDAYS) or "; expected monday..sunday"
                self.checker.error(
                    f"unknown weekday {_shorten(day)}{hint}", (*pointer, key), step, field, key=True
                )
                ok = False
                continue
            intervals = self.intervals(item, (*pointer, key), step, field, allow_empty=True)
            if intervals is None:
                ok = False
            else:
                days[WEEKDAYS.index(day)] = intervals
        return tuple(days) if ok else None

    def exceptions(
        self, raw: Any, pointer: Pointer, step: str | None, field: str
    ) -> dict[date, DatedException] | None:
        error = self.checker.error
        if not isinstance(raw, list):
            error(
                f"exceptions is a list of dated exceptions, found {kind_name(raw)}",
                pointer,
                step,
                field,
            )
            return None
        if len(raw) > MAX_EXCEPTIONS:
            error(
                f"at most {MAX_EXCEPTIONS} exceptions are allowed, not {len(raw)}",
                pointer,
                step,
                field,
            )
            return None
        out: dict[date, DatedException] = {}
        ok = True
        for index, item in enumerate(raw):
            found = self.exception(item, (*pointer, index), step, field)
            if found is None:
                ok = False
            elif found.date in out:
                error(
                    f"date {found.date.isoformat()} is given twice in exceptions",
                    (*pointer, index, "date"),
                    step,
                    field,
                )
                ok = False
            else:
                out[found.date] = found
        return out if ok else None

    def exception(
        self, raw: Any, pointer: Pointer, step: str | None, field: str
    ) -> DatedException | None:
        error = self.checker.error
        ok = self.known_fields(
            raw,
            _EXCEPTION_FIELDS,
            "an exception",
            "date, closed or hours, name",
            pointer,
            step,
            field,
        )
        if ok is None:
            return None
        day = self.date(raw["date"], (*pointer, "date"), step, field) if "date" in raw else None
        if "date" not in raw:
            error("an exception needs a date (YYYY-MM-DD)", pointer, step, field, key=True)
        closed, hours = raw.get("closed"), raw.get("hours")
        intervals: tuple[Interval, ...] | None = ()
        if "closed" in raw and closed is not True:
            error(
                f"closed is true (closed all day), found {_shown(closed)}; for special hours "
                "write hours",
                (*pointer, "closed"),
                step,
                field,
            )
            ok = False
        elif ("closed" in raw) == ("hours" in raw):
            error(
                "an exception is either closed: true or hours: [...], not "
                + ("both" if "closed" in raw else "neither"),
                pointer,
                step,
                field,
                key=True,
            )
            ok = False
        elif "hours" in raw:
            intervals = self.intervals(hours, (*pointer, "hours"), step, field, allow_empty=False)
        name = raw.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            error(
                f"name is text of at most {MAX_NAME} characters, found {_shown(name)}",
                (*pointer, "name"),
                step,
                field,
            )
            ok = False
        if not ok or day is None or intervals is None:
            return None
        return DatedException(day, closed is True, intervals, name)

    def date(self, raw: Any, pointer: Pointer, step: str | None, field: str) -> date | None:
        text = raw if isinstance(raw, str) else ""
        shape = len(text) == 10 and text[4] == "-" and text[7] == "-"
        if not shape or not all(text[index] in _DIGITS for index in (0, 1, 2, 3, 5, 6, 8, 9)):
            self.checker.error(
                f"expected a date YYYY-MM-DD, found {_shown(raw)}", pointer, step, field
            )
            return None
        try:
            return date.fromisoformat(text)
        except ValueError as problem:
            self.checker.error(f"{text} is not a date ({problem})", pointer, step, field)
            return None

    def intervals(
        self, raw: Any, pointer: Pointer, step: str | None, field: str, *, allow_empty: bool
    ) -> tuple[Interval, ...] | None:
        """A day's intervals, each well formed, none overlapping another."""
        error = self.checker.error
        if not isinstance(raw, list) or (not raw and not allow_empty):
            error(
                f'expected a list of intervals such as ["09:00-17:00"], found {_shown(raw)}',
                pointer,
                step,
                field,
            )
            return None
        if len(raw) > MAX_INTERVALS:
            error(
                f"at most {MAX_INTERVALS} intervals a day are allowed, not {len(raw)}",
                pointer,
                step,
                field,
            )
            return None
        found: list[tuple[Interval, Pointer]] = []
        for index, item in enumerate(raw):
            where = (*pointer, index)
            interval = self.interval(item, where, step, field)
            if interval is not None:
                found.append((interval, where))
        if len(found) != len(raw):
            return None
        ordered = sorted(found, key=lambda pair: pair[0].start)
        ok = True
        for (first, _), (second, where) in itertools.pairwise(ordered):
            if second.start < first.end:
                error(f"interval {second.text} overlaps {first.text}", where, step, field)
                ok = False
        return tuple(interval for interval, _ in found) if ok else None

    def interval(self, raw: Any, pointer: Pointer, step: str | None, field: str) -> Interval | None:
        if not isinstance(raw, str):
            self.checker.error(
                f"expected an interval HH:MM-HH:MM such as 09:00-17:00, found {kind_name(raw)}",
                pointer,
                step,
                field,
            )
            return None
        problem = _interval_problem(raw)
        if problem is not None:
            self.checker.error(problem, pointer, step, field)
            return None
        start, end = _minutes(raw[:5]) * 60, _minutes(raw[6:]) * 60
        if end <= start:
            end += _DAY  # across midnight: it belongs to the day it starts
        return Interval(start, end, raw)


def _interval_problem(text: str) -> str | None:
    """Why ``text`` is not an interval ``HH:MM-HH:MM``, or None."""
    shown = _shorten(text)
    if (
        len(text) != 11
        or text[5] != "-"
        or text[2] != ":"
        or text[8] != ":"
        or not all(text[index] in _DIGITS for index in (0, 1, 3, 4, 6, 7, 9, 10))
    ):
        return (
            f"malformed interval {shown}: write HH:MM-HH:MM with two-digit hours and minutes, "
            "such as 09:00-17:00"
        )
    for part, which in ((text[:5], "start"), (text[6:], "end")):
        hours, minutes = int(part[:2]), int(part[3:])
        if part == "24:00":
            if which == "start":
                return f"interval {shown} starts at 24:00: write 00:00"
            continue
        if hours > 23:
            return f"interval {shown}: hour {part[:2]} is out of range (00-23; 24:00 ends a day)"
        if minutes > 59:
            return f"interval {shown}: minute {part[3:]} is out of range (00-59)"
    if text[:5] == text[6:]:
        return f"interval {shown} is empty (it starts where it ends)"
    return None


def _minutes(part: str) -> int:
    return int(part[:2]) * 60 + int(part[3:])


def _zone_like(name: str) -> bool:
    """Whether ``name`` is made of an IANA name's characters, no part empty or starting with a
    dot: nothing else reaches zoneinfo (which would read a path-like key as a file name)."""
    if not 0 < len(name) <= MAX_ZONE_NAME or not _ZONE_CHARACTERS.issuperset(name):
        return False
    return all(part and not part.startswith((".", "-")) for part in name.split("/"))


#: Names zoneinfo loads whose meaning depends on the host (its own zone, its default rules, a
#: placeholder) or that are copies of the canonical zones for other purposes: refused, so that
#: one document means the same hours on every machine.
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_HOST_ZONE_TREES = ("posix/", "right/")


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    if name in _HOST_ZONES or name.startswith(_HOST_ZONE_TREES):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _zone_names() -> tuple[dict[str, str], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """The canonical zone names: by their casefolded text, by casefolded area, and all."""
    names = sorted(
        name
        for name in zoneinfo.available_timezones()
        if name not in _HOST_ZONES and not name.startswith(_HOST_ZONE_TREES)
    )
    areas: dict[str, list[str]] = {}
    for name in names:
        areas.setdefault(name.split("/", 1)[0].casefold(), []).append(name)
    folded = {name.casefold(): name for name in names}
    return folded, {area: tuple(group) for area, group in areas.items()}, tuple(names)


def _zone_hint(name: str, hint: HintBudget) -> str:
    """``"; did you mean 'Europe/Prague'?"``: a name that differs in case, else a close one;
    nothing once the document's budget of hints is spent (each compares many names)."""
    if len(name) > MAX_ZONE_NAME or hint.left <= 0:
        return ""
    folded, areas, names = _zone_names()
    same = folded.get(name.casefold())
    if same is not None:
        hint.left -= 1
        return f"; did you mean {same!r}?"
    return hint(name, areas.get(name.split("/", 1)[0].casefold()) or names)


def _label(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def _shorten(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _shown(raw: Any) -> str:
    return _shorten(raw) if isinstance(raw, str) else kind_name(raw)
