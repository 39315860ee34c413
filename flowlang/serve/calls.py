"""Calls: where a call's record lives between two webhooks, and the in-process store.

A call's record holds its run's state while it waits for the caller, the TwiML last answered
(a webhook delivered twice gets the same answer) and ``seq``: the number the next webhook must
carry. The first webhook of a call carries none (``seq`` 0); a Gather action URL carries the
waiting state's suspension number. Exactly one webhook per ``seq`` runs (:meth:`CallStore.claim`;
:meth:`CallStore.claim_and_get` reads the record in the same step), and the record moves from one
``seq`` to the next by compare-and-set (:meth:`CallStore.replace`), so a run advances once
however often Twilio retries and whichever replica answers.

Stores keep the source of every flow version a call started on, by fingerprint, so that a
replica that never loaded that version (after a redeploy) can still finish the call on it.
"""

from __future__ import annotations

__all__ = ["CallRecord", "CallStore", "CallStoreError", "MemoryCallStore", "event_key"]

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from flowlang.errors import CallStoreError


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One call as the store keeps it (plain JSON).

    ``seq``: what the next webhook of the call must carry. ``flow`` and ``fingerprint``: the
    flow version the call runs on. ``state``: the run's state while it waits, else None.
    ``twiml``: the answer to the webhook that made this record. ``call``: the call's fields
    from the first webhook (what ``call.ended`` carries). ``outcome``: how the flow ended
    (``waiting``, ``completed``, ``transfer``, ``voicemail``, ``hangup``, ``failed``), with the
    transfer ``target``; ``answered`` and ``waiting_time`` come from the transfer's own
    callback (an agent took the call; seconds in the queue). ``started_at``: Unix seconds.
    """

    seq: int
    flow: str
    fingerprint: str
    twiml: str
    state: dict[str, Any] | None = None
    call: dict[str, Any] = field(default_factory=dict)
    outcome: str = "waiting"
    target: str | None = None
    answered: bool = False
    waiting_time: float = 0.0
    started_at: float = 0.0

    def to_json(self) -> bytes:
        """The record as compact JSON."""
        return orjson.dumps(self)  # orjson writes a dataclass's fields without copying them

    @classmethod
    def from_json(cls, data: bytes | str) -> CallRecord:
        """The record ``to_json`` wrote; ValueError when the data is not one."""
        try:
            value = orjson.loads(data)
            return cls(**value) if isinstance(value, dict) else _not_a_record()
        except (orjson.JSONDecodeError, TypeError) as error:
            raise ValueError(f"not a call record: {error}") from None

    def but(self, **changes: Any) -> CallRecord:
        """A copy with ``changes``."""
        return replace(self, **changes)


def _not_a_record() -> CallRecord:
    raise ValueError("not a call record: not a JSON object")


def event_key(event_id: str) -> str:
    """An event id as a store key part: its SHA-256 (ids are any text, keys are not)."""
    return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class CallStore(Protocol):
    """Where call records live between webhooks. Every method is atomic on its own."""

    async def get(self, call_id: str) -> CallRecord | None:
        """The call's record, or None (unknown, ended or expired)."""

    async def create(self, call_id: str, record: CallRecord) -> bool:
        """Store the first record of a call unless it has one (False then)."""

    async def replace(self, call_id: str, expected_seq: int, record: CallRecord) -> bool:
        """Store ``record`` if the call's record still has ``seq == expected_seq`` (else
        False: another webhook moved the call on, or it ended)."""

    async def claim(self, call_id: str, seq: int, seconds: float) -> bool:
        """True for the first claim of ``(call_id, seq)`` within ``seconds``: the webhook that
        may run that segment; False for every later one until the claim lapses (a claim
        outlives the longest segment, so it only lapses when its holder died)."""

    async def claim_and_get(
        self, call_id: str, seq: int, seconds: float, *, first: bool = False
    ) -> tuple[bool, CallRecord | None]:
        """The call's record, and in the same atomic step :meth:`claim` of ``(call_id, seq)``
        taken only when it is that ``seq``'s turn: the record has ``seq == seq`` (or, with
        ``first``, the call has no record yet). ``(claimed, record)``; a record already past
        ``seq`` (answered) or before it (out of turn) is returned unclaimed. A record that
        cannot be read raises ValueError (any claim taken lapses)."""

    async def delete(self, call_id: str) -> CallRecord | None:
        """Remove the call's record and return it (None when there was none)."""

    async def claim_event(self, event_id: str, seconds: float) -> bool:
        """True for the first claim of an event id within ``seconds`` (the duplicate window),
        across every process sharing the store; False for a duplicate."""

    async def release_event(self, event_id: str) -> None:
        """Forget a claimed event id (it could not be recorded: its retry is no duplicate)."""

    async def keep_flow(self, fingerprint: str, source: str) -> None:
        """Keep the source text of a flow version calls run on."""

    async def flow_source(self, fingerprint: str) -> str | None:
        """The source text kept for ``fingerprint``, or None."""

    async def waiting(self) -> int:
        """How many calls wait for the caller now (about: expired records may count)."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryCallStore:
    """The store of one process (`flowlang serve` on a laptop, tests): records expire after
    ``ttl`` seconds; at most ``capacity`` calls, the oldest dropped first beyond it."""

    def __init__(
        self,
        ttl: float = 4 * 3600.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._calls: dict[str, tuple[float, CallRecord]] = {}
        self._claims: dict[tuple[str, int], float] = {}
        self._flows: dict[str, str] = {}

    def _live(self, call_id: str) -> CallRecord | None:
        entry = self._calls.get(call_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._calls[call_id]
            return None
        return entry[1]

    def _put(self, call_id: str, record: CallRecord) -> None:
        self._calls.pop(call_id, None)
        self._calls[call_id] = (self._clock() + self.ttl, record)
        self._expire()

    def _expire(self) -> None:
        """Drop expired entries from the oldest end, and the oldest beyond capacity."""
        now = self._clock()
        while self._calls:
            oldest = next(iter(self._calls))
            until, _ = self._calls[oldest]
            if until > now and len(self._calls) <= self.capacity:
                break
            del self._calls[oldest]
        while self._claims:
            oldest_claim = next(iter(self._claims))
            if self._claims[oldest_claim] > now and len(self._claims) <= 2 * self.capacity:
                break
            del self._claims[oldest_claim]

    async def get(self, call_id: str) -> CallRecord | None:
        return self._live(call_id)

    async def create(self, call_id: str, record: CallRecord) -> bool:
        if self._live(call_id) is not None:
            return False
        self._put(call_id, record)
        return True

    async def replace(self, call_id: str, expected_seq: int, record: CallRecord) -> bool:
        current = self._live(call_id)
        if current is None or current.seq != expected_seq:
            return False
        self._put(call_id, record)
        return True

    async def claim(self, call_id: str, seq: int, seconds: float) -> bool:
        key = (call_id, seq)
        until = self._claims.get(key)
        if until is not None and until > self._clock():
            return False
        self._claims.pop(key, None)  # re-inserted last: the oldest claims stay first
        self._claims[key] = self._clock() + min(seconds, self.ttl)
        self._expire()
        return True

    async def claim_and_get(
        self, call_id: str, seq: int, seconds: float, *, first: bool = False
    ) -> tuple[bool, CallRecord | None]:
        record = self._live(call_id)
        turn = record.seq == seq if record is not None else first
        return turn and await self.claim(call_id, seq, seconds), record

    async def delete(self, call_id: str) -> CallRecord | None:
        record = self._live(call_id)
        self._calls.pop(call_id, None)
        return record

    async def claim_event(self, event_id: str, seconds: float) -> bool:
        return True  # one process: the automations' own duplicate window decides

    async def release_event(self, event_id: str) -> None:
        pass

    async def keep_flow(self, fingerprint: str, source: str) -> None:
        self._flows[fingerprint] = source

    async def flow_source(self, fingerprint: str) -> str | None:
        return self._flows.get(fingerprint)

    async def waiting(self) -> int:
        self._expire()
        return sum(1 for _, record in self._calls.values() if record.state is not None)

    async def aclose(self) -> None:
        pass
