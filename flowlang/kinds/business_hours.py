"""Business Hours: route the call by a schedule's opening hours at the runtime's clock."""

from __future__ import annotations

__all__ = ["KIND", "parse_schedule", "plan_business_hours"]

import weakref
from collections.abc import Callable, Mapping
from typing import Any

from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.flow.source import Pointer
from flowlang.kinds.base import Checker, RunView, StepKind, Transition
from flowlang.kinds.schedules import MAX_SCHEDULES, SCHEDULE_SCHEMA, Schedule, ScheduleReader

#: The schedule reader of each document being checked (one per checker): the ``schedules``
#: section is read once per document, however many steps name its schedules.
_READERS: weakref.WeakKeyDictionary[Any, ScheduleReader] = weakref.WeakKeyDictionary()


def parse_schedule(
    checker: Checker, raw: Any, pointer: Pointer, step_id: str, name: str
) -> Schedule | None:
    """The ``schedule`` field: a name from the document's ``schedules``, or an inline one."""
    return _reader(checker).field(raw, pointer, step_id, name)


def read_schedules(checker: Checker) -> None:
    """Check the document's ``schedules`` (once), also when no step reads them."""
    _reader(checker).section()


def _reader(checker: Checker) -> ScheduleReader:
    """The document's schedule reader (one per checker: each schedule is read once)."""
    reader = _READERS.get(checker)
    if reader is None:
        reader = _READERS[checker] = ScheduleReader(checker)
    return reader


def plan_business_hours(step: Step) -> Callable[[RunView], Transition]:
    """Decide by the schedule at the runtime's clock: ``open``, ``closed`` or ``holiday`` (to
    ``holiday``, or ``closed`` without it); the trace says the local time, zone and why."""
    schedule: Schedule = step.fields["schedule"]
    closed = step.fields["closed"]
    targets = {
        "open": step.fields["open"],
        "closed": closed,
        "holiday": step.fields["holiday"] or closed,
    }

    def run_step(run: RunView) -> Transition:
        outcome, detail = schedule.decide(run.runtime.clock())
        return ("go", targets[outcome], outcome, detail)

    return run_step


def hours_edge(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """The edge of the outcome's name (``holiday`` falls to ``closed`` when the step has none)."""
    if outcome == "holiday" and not step.fields.get("holiday"):
        return "closed"
    return outcome if outcome in ("open", "closed", "holiday") else None


KIND = StepKind(
    "business_hours",
    "route the call by opening hours: open, closed or holiday",
    {
        "schedule": Field(
            "custom",
            required=True,
            description="a name from the document's schedules, or a schedule written inline",
            parse=parse_schedule,
            schema={"anyOf": [{"type": "string", "minLength": 1}, SCHEDULE_SCHEMA]},
            examples=(
                {"time_zone": "Europe/Prague", "weekly": {"monday": ["09:00-17:00"]}},
                {
                    "time_zone": "America/New_York",
                    "weekly": {"friday": ["22:00-02:00"], "sunday": ["00:00-24:00"]},
                    "exceptions": [{"date": "2026-12-25", "closed": True}],
                },
            ),
        ),
        "open": Field("step", required=True, description="inside the opening hours"),
        "closed": Field("step", required=True, description="outside the opening hours"),
        "holiday": Field(
            "step",
            description="on a dated exception: closed all day, or outside its special hours; "
            "defaults to closed",
        ),
    },
    outcome_edge=hours_edge,
    reads_clock=True,
    plan=plan_business_hours,
    read_sections=read_schedules,
    sections={
        "schedules": {
            "type": "object",
            "maxProperties": MAX_SCHEDULES,
            "additionalProperties": SCHEDULE_SCHEMA,
            "description": "opening hours by name, shared by business_hours steps",
        }
    },
)
