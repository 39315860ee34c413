"""Dispatch: run the matching workflows for each event, delivering every action at least once.

Actions of a workflow run in order. A retryable failure (connection error, timeout, 408, 425,
429, 5xx, some Slack errors) is retried on a schedule with jitter that honours Retry-After; 429
and timeouts wait at least a minute. Every attempt carries the same Idempotency-Key, derived from
(event id, workflow, action), so retries and replays never act twice on a receiver that honours
it. An action that fails for good or exhausts its retries goes to the dead-letter store with what
replay needs (the workflow's text, the event, earlier results; secrets only as references), and
is never dropped. An event id seen again within the window is not run twice.
"""

from __future__ import annotations

__all__ = [
    "Automations",
    "DeadLetterStore",
    "Delivery",
    "DeliverySettings",
    "DispatchResult",
    "Journal",
    "SystemClock",
]

import asyncio
import hashlib
import json
import random
import ssl
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from flowlang.automations.actions import ActionError, Providers, interpret, prepare_action
from flowlang.automations.formats import ValueFormatError
from flowlang.automations.journal import Journal, JournalState, summarize
from flowlang.automations.workflow import CompiledWorkflow, load_workflow
from flowlang.expr.values import plain_json
from flowlang.runtime.http import GuardedHttp, HttpSender, Resolver, guarded_sender
from flowlang.runtime.requests import RequestError
from flowlang.runtime.secrets import (
    EnvironmentSecrets,
    Redactor,
    SecretsProvider,
    SecretsView,
    install_log_redaction,
)
from flowlang.settings import check_counts, check_durations

DEAD_LETTER_FORMAT = "flowlang.deadletter/1"


class Clock(Protocol):
    """Time for retry schedules and deduplication windows (a fake one in tests)."""

    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class DeliverySettings:
    """Retry schedule, limits and providers for automations (defaults from SECURITY.md)."""

    #: Delay before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    jitter: float = 0.1
    throttled_minimum: float = 60.0
    max_retry_after: float = 36000.0
    dedup_window: float = 86400.0
    timeout: float = 15.0
    timeout_cap: float = 30.0
    connect_timeout: float = 5.0
    max_response_body: int = 1024 * 1024
    max_request_body: int = 1024 * 1024
    max_redirects: int = 3
    max_requests_in_flight: int = 100
    allow_hosts: frozenset[str] = frozenset()
    providers: Providers = field(default_factory=Providers)

    def __post_init__(self) -> None:
        check_counts(self, ("max_requests_in_flight",))
        check_counts(self, ("max_response_body", "max_request_body", "max_redirects"), 0)
        check_durations(self, ("timeout", "timeout_cap", "connect_timeout", "dedup_window"))
        check_durations(
            self, ("schedule", "jitter", "throttled_minimum", "max_retry_after"), zero=True
        )
        if not self.schedule:
            raise ValueError("DeliverySettings.schedule needs at least one attempt")


@dataclass
class Delivery:
    """What became of one action for one event."""

    workflow: str
    action: str
    outcome: str  # delivered | dead_lettered | skipped
    attempts: int = 0
    error: str | None = None
    result: Any = None


@dataclass
class DispatchResult:
    """What one event came to: the workflows it matched and every action's delivery."""

    event_id: str | None
    duplicate: bool = False
    matched: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


class DeadLetterStore:
    """Actions kept for replay, one JSON object per line (appended; rewritten by replay)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The records of a dead-letter file."""
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path}:{number}: not a dead-letter record ({error.msg})"
                    ) from None
        return records


def idempotency_key(event_id: str, workflow: str, action: str) -> str:
    """The same key on every attempt and replay of one action for one event."""
    digest = hashlib.sha256(
        f"{event_id}\x00{workflow}\x00{action}".encode("utf-8", "surrogatepass")
    )
    return digest.hexdigest()[:32]


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


class Automations:
    """Workflows indexed by trigger; matches events and delivers their actions.

    ``ssl_context``/``http``/``resolver`` as for :class:`flowlang.Runtime` (one HTTP layer, one set
    of safety rules); ``secrets`` provides ``<<secrets.NAME>>``; ``clock`` times retries;
    ``dead_letters`` keeps what could not be delivered.
    """

    def __init__(
        self,
        workflows: Iterable[CompiledWorkflow],
        *,
        settings: DeliverySettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        http: HttpSender | None = None,
        resolver: Resolver | None = None,
        secrets: SecretsProvider | None = None,
        clock: Clock | None = None,
        dead_letters: DeadLetterStore | None = None,
        rng: random.Random | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.workflows = tuple(workflows)
        self._by_trigger: dict[str, list[CompiledWorkflow]] = {}
        for workflow in self.workflows:
            self._by_trigger.setdefault(workflow.trigger, []).append(workflow)
        self.settings = settings or DeliverySettings()
        self.secrets: SecretsProvider = secrets or EnvironmentSecrets()
        self.clock: Clock = clock or SystemClock()
        self.dead_letters = dead_letters or DeadLetterStore()
        self.rng = rng or random.Random()
        self._own_http: GuardedHttp | None = None
        self._http = http
        self._ssl_context = ssl_context
        self._resolver = resolver
        self._seen: dict[str, float] = {}
        self._seen_order: deque[tuple[float, str]] = deque()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.journal = journal
        self._unfinished: dict[str, dict[str, Any]] = {}
        if journal is not None:
            self._load_journal(journal)
        install_log_redaction()

    def _load_journal(self, journal: Journal) -> None:
        """Remember the journaled events still inside the duplicate window (so they are not run
        twice) and what is unfinished; then compact the journal to just that."""
        state = self._compact_journal(journal)
        for event_id, at in sorted(state.seen.items(), key=lambda item: item[1]):
            self._seen[event_id] = at
            self._seen_order.append((at, event_id))
        for event_id, records in state.unfinished.items():
            progress: dict[str, Any] = {
                "event": records[0].get("event") or {},
                "settled": {},
                "done": set(),
            }
            for record in records[1:]:
                if record.get("kind") == "settled":
                    key = (record.get("workflow"), record.get("action"))
                    progress["settled"][key] = (record.get("outcome"), record.get("result"))
                else:
                    progress["done"].add(record.get("workflow"))
            self._unfinished[event_id] = progress

    def _compact_journal(self, journal: Journal) -> JournalState:
        """Rewrite the journal with what still matters (synchronous: no dispatch interleaves)."""
        state = summarize(journal.records(), self.clock.now(), self.settings.dedup_window)
        journal.rewrite(state.kept)
        return state

    @property
    def http(self) -> HttpSender:
        """The sender, made on first use."""
        if self._http is None:
            s = self.settings
            self._http = self._own_http = guarded_sender(
                self._ssl_context,
                s.allow_hosts,
                self._resolver,
                s.connect_timeout,
                s.max_redirects,
                s.max_requests_in_flight,
            )
        return self._http

    # --- matching ---------------------------------------------------------------------------

    def match(self, event: Mapping[str, Any]) -> list[CompiledWorkflow]:
        """The workflows whose trigger is the event's type and whose conditions hold."""
        kind = event.get("type") if isinstance(event, Mapping) else None
        candidates = self._by_trigger.get(kind) if isinstance(kind, str) else None
        if not candidates:
            return []
        scope = {"event": event}
        return [w for w in candidates if w.condition is None or w.condition(scope)]

    def _is_duplicate(self, event_id: str) -> bool:
        now = self.clock.now()
        window = self.settings.dedup_window
        while self._seen_order and self._seen_order[0][0] < now - window:
            seen_at, old = self._seen_order.popleft()
            if self._seen.get(old) == seen_at:
                del self._seen[old]
        if event_id in self._seen:
            return True
        self._seen[event_id] = now
        self._seen_order.append((now, event_id))
        return False

    # --- delivery ---------------------------------------------------------------------------

    async def dispatch(self, event: Mapping[str, Any]) -> DispatchResult:
        """Run every matching workflow for ``event``; returns when each action has settled."""
        event_id = event.get("id") if isinstance(event, Mapping) else None
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("an event needs an id (text) so that it is delivered once")
        if self._is_duplicate(event_id):
            return DispatchResult(event_id, duplicate=True)
        self._record({"kind": "event", "event": plain_json(event), "at": self.clock.now()})
        return await self._dispatch(event, event_id, {})

    async def _dispatch(
        self, event: Mapping[str, Any], event_id: str, progress: Mapping[str, Any]
    ) -> DispatchResult:
        """Run the matching workflows, skipping what ``progress`` (from the journal) settled."""
        workflows = self.match(event)
        result = DispatchResult(event_id, matched=[w.name for w in workflows])
        settled = progress.get("settled", {})
        self._in_flight += 1
        self._idle.clear()
        try:
            for workflow in workflows:
                if workflow.name in progress.get("done", ()):
                    continue
                results: dict[str, Any] = {}
                start = 0
                for index, action in enumerate(workflow.actions):
                    outcome = settled.get((workflow.name, action.name))
                    if outcome is None:
                        break
                    if outcome[0] != "delivered":
                        start = len(workflow.actions)  # it stopped the workflow, or was kept
                        break
                    results[action.name] = outcome[1]
                    start = index + 1
                result.deliveries += await self._run_workflow(workflow, event, results, start)
                self._record(
                    {"kind": "workflow_done", "event_id": event_id, "workflow": workflow.name}
                )
            self._record({"kind": "done", "event_id": event_id})
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        return result

    def _record(self, record: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.write(record)
            if self.journal.due():
                self._compact_journal(self.journal)

    async def resume(self) -> list[DispatchResult]:
        """Finish the events the journal shows unfinished (an interrupted run), in order."""
        pending, self._unfinished = self._unfinished, {}
        return [
            await self._dispatch(state["event"], event_id, state)
            for event_id, state in pending.items()
        ]

    async def _run_workflow(
        self,
        workflow: CompiledWorkflow,
        event: Mapping[str, Any],
        results: dict[str, Any],
        start: int,
    ) -> list[Delivery]:
        redactor = SecretsView(self.secrets)
        scope: dict[str, Any] = {
            "event": event,
            "actions": {name: {"result": value} for name, value in results.items()},
            "secrets": redactor,
        }
        deliveries = []
        actions = workflow.actions
        for index in range(start, len(actions)):
            action = actions[index]
            delivery = await self._deliver(workflow, action, scope, redactor, str(event["id"]))
            deliveries.append(delivery)
            self._record(
                {
                    "kind": "settled",
                    "event_id": str(event["id"]),
                    "workflow": workflow.name,
                    "action": action.name,
                    "outcome": delivery.outcome,
                    "result": redactor.data(plain_json(delivery.result)),
                }
            )
            if delivery.outcome == "delivered":
                results[action.name] = delivery.result
                scope["actions"][action.name] = {"result": delivery.result}
                continue
            remaining = (
                [later.name for later in actions[index + 1 :]]
                if action.fields["stop_on_failure"]
                else []
            )
            self.dead_letters.add(
                {
                    "format": DEAD_LETTER_FORMAT,
                    "recorded_at": self.clock.now(),
                    "workflow": workflow.name,
                    "workflow_fingerprint": workflow.fingerprint,
                    "workflow_file": workflow.filename,
                    "workflow_source": workflow.source,
                    "event": redactor.data(plain_json(event)),
                    "action": action.name,
                    "then": remaining,
                    "results": redactor.data(plain_json(results)),
                    "idempotency_key": idempotency_key(
                        str(event["id"]), workflow.name, action.name
                    ),
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                }
            )
            if action.fields["stop_on_failure"]:
                deliveries += [
                    Delivery(workflow.name, name, "skipped", error=f"after {action.name} failed")
                    for name in remaining
                ]
                break
        return deliveries

    async def _deliver(
        self,
        workflow: CompiledWorkflow,
        action: Any,
        scope: dict[str, Any],
        redactor: Redactor,
        event_id: str,
    ) -> Delivery:
        settings = self.settings
        key = idempotency_key(event_id, workflow.name, action.name)
        timeout = min(action.fields.get("timeout", settings.timeout), settings.timeout_cap)
        error: str | None = None
        attempts = 0
        wait = 0.0
        for attempt in range(len(settings.schedule)):
            if attempt:
                await self.clock.sleep(wait)
            attempts += 1
            secrets = scope["secrets"]
            secrets.take_missing()
            try:
                request = prepare_action(
                    action, scope, settings.providers, key, settings.max_request_body
                )
                missing = secrets.take_missing()
                if missing is not None:
                    raise RequestError(missing)
            except (ActionError, RequestError, ValueFormatError) as problem:
                return Delivery(
                    workflow.name,
                    action.name,
                    "dead_lettered",
                    attempts,
                    redactor.text(f"{action.name}: {problem}"),
                )
            sent = await self.http.send(
                request,
                timeout=timeout,
                max_body=settings.max_response_body,
                follow_redirects=False,
            )
            outcome, value, error = interpret(action, sent)
            if outcome == "delivered":
                return Delivery(workflow.name, action.name, "delivered", attempts, None, value)
            error = redactor.text(error or sent.outcome)
            if outcome == "failed" or attempt + 1 >= len(settings.schedule):
                break
            wait = self._next_wait(
                settings.schedule[attempt + 1],
                sent.status,
                sent.outcome,
                sent.headers.get("retry-after"),
            )
        return Delivery(workflow.name, action.name, "dead_lettered", attempts, error)

    def _next_wait(
        self, planned: float, status: int | None, outcome: str, retry_after: str | None
    ) -> float:
        """The wait before the next attempt: the schedule with jitter, at least a minute after
        a 429 or a timeout, and at least what Retry-After asks (up to max_retry_after)."""
        settings = self.settings
        wait = planned * (1 + self.rng.uniform(-settings.jitter, settings.jitter))
        if status == 429 or outcome == "timeout":
            wait = max(wait, settings.throttled_minimum)
        asked = retry_after_seconds(retry_after, self.clock.now())
        if asked is not None:
            wait = max(wait, min(asked, settings.max_retry_after))
        return wait

    # --- replay and shutdown ----------------------------------------------------------------

    async def replay(self, record: Mapping[str, Any]) -> list[Delivery]:
        """Retry a dead-letter record: its action, then the actions it stopped."""
        if record.get("format") != DEAD_LETTER_FORMAT:
            raise ValueError("this is not a flowlang dead-letter record")
        workflow = load_workflow(
            str(record["workflow_source"]), filename=record.get("workflow_file")
        )
        names = [action.name for action in workflow.actions]
        start = names.index(str(record["action"]))
        results = dict(record.get("results") or {})
        event = dict(record["event"])
        last = start + 1 + len(record.get("then") or [])
        trimmed = CompiledWorkflow(
            workflow.name,
            workflow.trigger,
            workflow.condition,
            workflow.actions[:last],
            workflow.source,
            workflow.filename,
            workflow.fingerprint,
        )
        return await self._run_workflow(trimmed, event, results, start)

    async def aclose(self) -> None:
        """Wait for every dispatch in flight, then close the connections if they were made here."""
        await self._idle.wait()
        if self._own_http is not None:
            await self._own_http.aclose()

    async def __aenter__(self) -> Automations:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
