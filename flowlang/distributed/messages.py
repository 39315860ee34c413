"""The messages workers exchange: task names, queues, and the JSON bodies of each task.

Every body is a JSON object with ``"v": 1``; nothing but JSON crosses the broker (the Celery
app accepts only JSON). A body comes from another process, so each is checked when read
(:meth:`AcceptMessage.from_json`, :meth:`DeliverMessage.from_json`: ValueError naming what is
wrong), never trusted.

| task | queue | body |
|---|---|---|
| ``flowlang.accept`` | ``{queue_prefix}events`` | :class:`AcceptMessage`: an event as received |
| ``flowlang.deliver`` | ``{queue_prefix}actions`` | :class:`DeliverMessage`: one attempt |
| ``flowlang.replay`` | ``{queue_prefix}actions`` | a ``flowlang.deadletter/1`` record |

A deliver message carries the earlier actions' results as the local store keeps them (masked with
the workflow's secrets), so no secret value ever sits in a broker or in Redis.
"""

from __future__ import annotations

__all__ = [
    "ACCEPT_TASK",
    "ACTIONS_QUEUE",
    "DEFAULT_QUEUE_PREFIX",
    "DELIVER_TASK",
    "EVENTS_QUEUE",
    "MESSAGE_VERSION",
    "REPLAY_TASK",
    "AcceptMessage",
    "DeliverMessage",
    "queue_names",
]

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlang.automations.executor import (
    MAX_ATTEMPTS,
    MAX_NAME,
    field_text,
    field_time,
    field_whole,
)
from flowlang.automations.records import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    check_event,
    nests_deeper_than,
)
from flowlang.expr.values import plain_json

MESSAGE_VERSION = 1
ACCEPT_TASK = "flowlang.accept"
DELIVER_TASK = "flowlang.deliver"
REPLAY_TASK = "flowlang.replay"
#: Queue names are ``{queue_prefix}events`` and ``{queue_prefix}actions``.
DEFAULT_QUEUE_PREFIX = "flowlang."
EVENTS_QUEUE = "events"
ACTIONS_QUEUE = "actions"
#: The most actions a workflow in a message may be at (index), and sources' longest name.
MAX_ACTION_INDEX = 10_000
MAX_SOURCE = 64


def queue_names(prefix: str = DEFAULT_QUEUE_PREFIX) -> tuple[str, str]:
    """The events queue and the actions queue for ``prefix``."""
    return f"{prefix}{EVENTS_QUEUE}", f"{prefix}{ACTIONS_QUEUE}"


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not a JSON object ({type(data).__name__})")
    if data.get("v") != MESSAGE_VERSION:
        raise ValueError(
            f"{what} is not version {MESSAGE_VERSION} (its v is {data.get('v')!r:.20})"
        )
    return data


@dataclass(frozen=True)
class AcceptMessage:
    """An event as received (``source``: ``automate``, ``serve``, ...), to check for
    duplicates, match and fan out to one deliver message per matching workflow."""

    event: dict[str, Any]
    received_at: float
    source: str = "automate"

    def to_json(self) -> dict[str, Any]:
        """This message as a JSON object."""
        return {
            "v": MESSAGE_VERSION,
            "event": self.event,
            "received_at": self.received_at,
            "source": self.source,
        }

    @classmethod
    def from_json(
        cls, data: Any, *, max_depth: int = MAX_EVENT_DEPTH, max_bytes: int = MAX_EVENT_BYTES
    ) -> AcceptMessage:
        """The message :meth:`to_json` wrote; ValueError (EventError for the event) naming
        what is wrong otherwise."""
        data = _object(data, "an accept message")
        event = check_event(data.get("event"), max_depth, max_bytes)
        return cls(event, field_time(data, "received_at"), field_text(data, "source", MAX_SOURCE))


@dataclass(frozen=True)
class DeliverMessage:
    """Attempt ``attempt`` (from 1) of action number ``action`` (from 0) of ``workflow`` (the
    version with ``fingerprint``) for ``event``; ``results`` are the earlier actions' results
    by action id, masked. ``last`` (optional; the body field ``"last"``) is the index of the
    last action this chain runs: a replayed dead letter runs only its action and those it
    stopped; None runs to the workflow's end."""

    event: dict[str, Any]
    workflow: str
    fingerprint: str
    action: int
    attempt: int = 1
    results: dict[str, Any] = field(default_factory=dict)
    last: int | None = None

    @property
    def event_id(self) -> str:
        """The event's id."""
        return str(self.event["id"])

    def to_json(self) -> dict[str, Any]:
        """This message as a JSON object."""
        return {
            "v": MESSAGE_VERSION,
            "event": self.event,
            "workflow": self.workflow,
            "fingerprint": self.fingerprint,
            "action": self.action,
            "attempt": self.attempt,
            "results": self.results,
        } | ({} if self.last is None else {"last": self.last})

    def next_attempt(self) -> DeliverMessage:
        """The same action's next attempt."""
        return DeliverMessage(
            self.event,
            self.workflow,
            self.fingerprint,
            self.action,
            self.attempt + 1,
            self.results,
            self.last,
        )

    def next_action(self, results: dict[str, Any]) -> DeliverMessage:
        """The workflow's next action, first attempt, after ``results``."""
        return DeliverMessage(
            self.event, self.workflow, self.fingerprint, self.action + 1, 1, results, self.last
        )

    def ends_here(self) -> bool:
        """Whether this chain runs no action after this one (``last`` says so)."""
        return self.last is not None and self.action >= self.last

    @classmethod
    def from_json(
        cls, data: Any, *, max_depth: int = MAX_EVENT_DEPTH, max_bytes: int = MAX_EVENT_BYTES
    ) -> DeliverMessage:
        """The message :meth:`to_json` wrote; ValueError (EventError for the event) naming
        what is wrong otherwise."""
        data = _object(data, "a deliver message")
        event = check_event(data.get("event"), max_depth, max_bytes)
        results = data.get("results")
        if not isinstance(results, Mapping):
            raise ValueError(f"its results are not an object ({type(results).__name__})")
        if nests_deeper_than(results, MAX_RECORD_DEPTH):
            raise ValueError(f"its results nest deeper than {MAX_RECORD_DEPTH} levels")
        plain = plain_json(results)
        if len(json.dumps(plain, ensure_ascii=True, separators=(",", ":"))) > MAX_RECORD_BYTES:
            raise ValueError(f"its results are larger than {MAX_RECORD_BYTES} bytes")
        action = field_whole(data, "action", 0, MAX_ACTION_INDEX)
        last = (
            None
            if data.get("last") is None
            else field_whole(data, "last", action, MAX_ACTION_INDEX)
        )
        return cls(
            event,
            field_text(data, "workflow", MAX_NAME),
            field_text(data, "fingerprint", MAX_NAME),
            action,
            field_whole(data, "attempt", 1, MAX_ATTEMPTS),
            plain,
            last,
        )
