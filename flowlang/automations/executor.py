"""Executor seam: one delivery attempt's outcome as data, and who decides when the next one runs.

Delivering an action is a series of single attempts (:meth:`Automations.attempt_once`), each
ending in one of three outcomes, plain data that round-trips through JSON:

- :class:`Delivered` ``(result)``: the action is settled; ``result`` is plain JSON.
- :class:`RetryAt` ``(at, error, wait)``: a retryable failure; the next attempt is due at time
  ``at`` on the automations' clock (``wait`` seconds after this attempt ended: the retry
  schedule with jitter, at least ``throttled_minimum`` after a 429 or a timeout, at least what
  Retry-After asks).
- :class:`Dead` ``(outcome, error)``: failed for good (``outcome`` ``failed``) or out of
  attempts (``exhausted``); the action goes to the dead letters.

Waiting is data too: an :class:`AttemptTask` says what to attempt (event, workflow, action,
attempt number, idempotency key) and when it is due. An :class:`Executor` is given each task
that must wait: :class:`LocalExecutor` (the default, today's in-process behaviour) sleeps on
the automations' clock until it is due and lets the caller go on; an executor that hands the
task to another process (stores it in a due-set, say) answers that it did, and the action is
left unsettled here.
"""

from __future__ import annotations

__all__ = [
    "AttemptOutcome",
    "AttemptTask",
    "Dead",
    "Delivered",
    "Executor",
    "LocalExecutor",
    "RetryAt",
    "outcome_from_json",
    "retry_after_seconds",
]

import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, TypeAlias

from flowlang.automations.speech import Clock

#: The largest time or wait a serialized outcome or task may hold (seconds; exact as a float).
MAX_TIME = 2**53
#: The longest error text a serialized outcome may hold (characters).
MAX_ERROR = 64 * 1024
#: The most attempts a serialized task may number.
MAX_ATTEMPTS = 10_000
#: The longest name (event id, workflow, action, key) a serialized task may hold (characters).
MAX_NAME = 4096


@dataclass(frozen=True)
class Delivered:
    """The attempt delivered the action; ``result`` is the action's result (plain JSON)."""

    result: Any = None
    kind: Literal["delivered"] = "delivered"

    def to_json(self) -> dict[str, Any]:
        """This outcome as a JSON object."""
        return {"kind": self.kind, "result": self.result}


@dataclass(frozen=True)
class RetryAt:
    """The attempt failed and may be retried: the next one is due at ``at`` (clock seconds),
    ``wait`` seconds after this one ended. ``error`` is masked with the workflow's secrets."""

    at: float
    error: str
    wait: float
    kind: Literal["retry_at"] = "retry_at"

    def to_json(self) -> dict[str, Any]:
        """This outcome as a JSON object."""
        return {"kind": self.kind, "at": self.at, "error": self.error, "wait": self.wait}


@dataclass(frozen=True)
class Dead:
    """The action is not delivered and will not be retried: ``outcome`` is ``failed`` (for
    good: a 4xx, a request that cannot be made) or ``exhausted`` (retryable, but that was the
    last attempt of the schedule). ``error`` is masked with the workflow's secrets."""

    outcome: Literal["failed", "exhausted"]
    error: str
    kind: Literal["dead"] = "dead"

    def to_json(self) -> dict[str, Any]:
        """This outcome as a JSON object."""
        return {"kind": self.kind, "outcome": self.outcome, "error": self.error}


#: What one attempt came to.
AttemptOutcome: TypeAlias = Delivered | RetryAt | Dead


def retry_after_seconds(value: Any, now: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, or None when it is
    absent or absurd (never raises: the value comes from a server)."""
    if not value or not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            seconds = float(text)
        else:
            seconds = parsedate_to_datetime(text).timestamp() - now
    except Exception:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def field_time(data: Mapping[str, Any], name: str) -> float:
    """``data[name]`` as a time: a finite number of at most MAX_TIME; ValueError otherwise."""
    value = data.get(name)
    if type(value) is int and abs(value) <= MAX_TIME:
        return float(value)
    if type(value) is float and math.isfinite(value) and abs(value) <= MAX_TIME:
        return value
    raise ValueError(f"its {name} is not a time (a finite number of at most {MAX_TIME})")


def field_text(data: Mapping[str, Any], name: str, limit: int, empty: bool = False) -> str:
    """``data[name]`` as text of at most ``limit`` characters (empty only with ``empty``);
    ValueError otherwise."""
    value = data.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise ValueError(f"its {name} is not text ({type(value).__name__})")
    if len(value) > limit:
        raise ValueError(f"its {name} is longer than {limit} characters")
    return value


def field_whole(data: Mapping[str, Any], name: str, low: int, high: int) -> int:
    """``data[name]`` as a whole number from ``low`` to ``high``; ValueError otherwise."""
    value = data.get(name)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"its {name} is not a whole number from {low} to {high}")
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not a JSON object ({type(data).__name__})")
    return data


def outcome_from_json(data: Any) -> AttemptOutcome:
    """The outcome :meth:`Delivered.to_json` (or the others) wrote; ValueError naming what is
    wrong when ``data`` is not one (it may come from another process)."""
    data = _object(data, "an attempt outcome")
    kind = data.get("kind")
    if kind == "delivered":
        return Delivered(data.get("result"))
    if kind == "retry_at":
        wait = field_time(data, "wait")
        if wait < 0:
            raise ValueError("its wait is negative")
        return RetryAt(
            field_time(data, "at"), field_text(data, "error", MAX_ERROR, empty=True), wait
        )
    if kind == "dead":
        outcome = data.get("outcome")
        if outcome not in ("failed", "exhausted"):
            raise ValueError("its outcome is not failed or exhausted")
        return Dead(outcome, field_text(data, "error", MAX_ERROR, empty=True))
    raise ValueError("its kind is not delivered, retry_at or dead")


@dataclass(frozen=True)
class AttemptTask:
    """What to attempt, and when: attempt ``number`` (from 1) of ``action`` of ``workflow`` for
    the event ``event_id``, due at ``due`` (clock seconds), with the idempotency ``key`` every
    attempt of it carries. The event and the earlier actions' results are kept by whoever
    holds the task (the dispatch in this process; the store, or a message, elsewhere)."""

    event_id: str
    workflow: str
    action: str
    number: int
    due: float
    key: str

    def retry(self, outcome: RetryAt) -> AttemptTask:
        """The next attempt, due when ``outcome`` says."""
        return AttemptTask(
            self.event_id, self.workflow, self.action, self.number + 1, outcome.at, self.key
        )

    def to_json(self) -> dict[str, Any]:
        """This task as a JSON object."""
        return {
            "event_id": self.event_id,
            "workflow": self.workflow,
            "action": self.action,
            "number": self.number,
            "due": self.due,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, data: Any) -> AttemptTask:
        """The task :meth:`to_json` wrote; ValueError naming what is wrong otherwise."""
        data = _object(data, "an attempt task")
        number = field_whole(data, "number", 1, MAX_ATTEMPTS)
        return cls(
            field_text(data, "event_id", MAX_NAME),
            field_text(data, "workflow", MAX_NAME),
            field_text(data, "action", MAX_NAME),
            number,
            field_time(data, "due"),
            field_text(data, "key", MAX_NAME),
        )


class Executor(Protocol):
    """Decides when an action's next attempt runs (see the module docstring)."""

    async def schedule(self, task: AttemptTask) -> bool:
        """Arrange for ``task`` to run when it is due: True when the caller is to make the
        attempt now (the executor waited until ``task.due``), False when the task was handed
        to someone else to run (the caller leaves the action unsettled and stops its
        workflow there)."""


class LocalExecutor:
    """Every attempt in this process: waits on ``clock`` (the automations' clock, so a fake or
    simulated clock keeps working) until the task is due."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def schedule(self, task: AttemptTask) -> bool:
        """Sleep until ``task.due``, then let the caller attempt it."""
        await self.clock.sleep(max(0.0, task.due - self.clock.now()))
        return True
