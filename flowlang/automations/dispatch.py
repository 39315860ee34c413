"""Dispatch: run the matching workflows for each event, delivering every action at least once.

Actions of a workflow run in order. A retryable failure (connection error, timeout, 408, 425,
429, 5xx, some Slack errors) is retried on a schedule with jitter that honours Retry-After; 429
and timeouts wait at least a minute. Every attempt carries the same Idempotency-Key, derived from
(event id, workflow, action), so retries and replays never act twice on a receiver that honours
it. An action that fails for good or exhausts its retries goes to the dead-letter store with what
replay needs (the workflow's text, the event, earlier results; secrets only as references), and
is never dropped: with a store, its dead letter and the action's settlement are one
transaction. An event id seen again within the window is not run twice; of the events finished,
the last ``max_remembered_events`` are remembered (the store, or memory without one, is bounded
by it, not by how long the stream runs): an event id older than that may run again, which
at-least-once delivery with idempotency keys already allows. With a
:class:`flowlang.automations.store.LocalStore`, the duplicate check is the store's (shared by
every process on it) and nothing per event stays in memory; a retry's due time is recorded, so
a process that takes the event over waits only what remains. Without a store, nothing outlives
the process.

Nothing an event or a server does ends a dispatch: an event is checked at the door (an id, at
most 64 levels deep and 1 MiB as JSON; EventError otherwise), and any unexpected exception while
preparing, sending or reading an action is a failed attempt, retried and then dead-lettered.
Workflow names are unique in a set (they make the idempotency keys). A transcription is one
attempt of several requests (fetch, recognize, polls: flowlang.automations.speech) with the
same outcomes and retries.

Each attempt is one call of :meth:`Automations.attempt_once`, whose outcome is data
(flowlang.automations.executor: delivered, retry at a time, dead); the executor decides when a
retry runs (:class:`LocalExecutor`, the default, sleeps on the clock in this process).
"""

from __future__ import annotations

__all__ = [
    "Attempt",
    "Automations",
    "DeadLetterStore",
    "Delivery",
    "DeliverySettings",
    "DispatchResult",
    "EventError",
    "SystemClock",
    "describe_error",
    "shown_error",
]

import asyncio
import contextlib
import dataclasses
import hashlib
import random
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowlang.automations.actions import ActionError, Providers, interpret, prepare_action
from flowlang.automations.executor import (
    AttemptOutcome,
    AttemptTask,
    Dead,
    Delivered,
    Executor,
    LocalExecutor,
    RetryAt,
    retry_after_seconds,
)
from flowlang.automations.formats import ValueFormatError
from flowlang.automations.kinds.base import Action, AttemptContext
from flowlang.automations.locks import FileLock
from flowlang.automations.records import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_RECORD_BYTES,
    EventError,
    RecordError,
    append_line,
    check_event,
    check_record_file,
    encode_record,
    read_records,
)
from flowlang.automations.speech import SpeechSettings
from flowlang.automations.store import LocalStore, OpenEvent
from flowlang.automations.workflow import (
    CompiledWorkflow,
    check_unique_names,
    load_workflow_text,
)
from flowlang.errors import StoreError
from flowlang.expr.shared import MAX_SHOWN_ERROR, carried_text, shorten, whole_text
from flowlang.expr.values import plain_json
from flowlang.http_rules import RequestError
from flowlang.runtime.http import GuardedHttp, HttpResult, HttpSender, Resolver
from flowlang.runtime.http_settings import HttpSettings
from flowlang.runtime.secrets import (
    EnvironmentSecrets,
    Redactor,
    SecretsProvider,
    SecretsView,
    install_log_redaction,
)
from flowlang.settings import check_counts, check_durations

DEAD_LETTER_FORMAT = "flowlang.deadletter/1"
#: Event ids remembered for duplicate detection, by default: about 13 MB in memory without a
#: store (short ids), a day's window at more than one event a second, hours at 10 a second.
MAX_REMEMBERED_EVENTS = 100_000


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


@dataclass(frozen=True, kw_only=True)
class DeliverySettings(HttpSettings):
    """Retry schedule, limits and providers for automations (defaults from SECURITY.md): the
    HTTP ones of :class:`HttpSettings`, with an automation's defaults, and these."""

    #: Delay before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    jitter: float = 0.1
    throttled_minimum: float = 60.0
    max_retry_after: float = 36000.0
    dedup_window: float = 86400.0
    #: At most this many event ids are remembered for the window (oldest forgotten first).
    max_remembered_events: int = MAX_REMEMBERED_EVENTS
    timeout: float = 15.0
    #: The longest deadline an action's ``timeout`` may ask for.
    timeout_cap: float = 30.0
    connect_timeout: float = 5.0
    max_response_body: int = 1024 * 1024
    max_request_body: int = 1024 * 1024
    max_event_depth: int = MAX_EVENT_DEPTH
    max_event_bytes: int = MAX_EVENT_BYTES
    providers: Providers = field(default_factory=Providers)
    #: Recording size, long-running polling and its deadline (see flowlang.automations.speech).
    speech: SpeechSettings = field(default_factory=SpeechSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_counts(self, ("max_event_depth", "max_event_bytes", "max_remembered_events"))
        check_durations(self, ("timeout", "timeout_cap", "dedup_window"))
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
    #: delivered | dead_lettered | skipped, or unsaved: failed, and its dead letter could not be
    #: written, so it stays unsettled in the store and runs again on the next run; or
    #: scheduled: its retry was handed to another process by the executor (unsettled here)
    outcome: str
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
    #: Workflows that could not be considered (a condition that failed), one message each.
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as reported to the ``on_attempt`` callback of :class:`Automations`
    (``error`` masked with the workflow's secrets, whole)."""

    event_id: str
    workflow: str
    action: str
    number: int
    #: delivered | retry (``retry_in`` seconds from now) | failed (for good, or out of attempts)
    outcome: str
    error: str | None = None
    retry_in: float | None = None


def file_lock(path: Path) -> FileLock:
    """Hold the exclusive lock ``<path>.lock`` (waiting for it): appends and replay's rewrite of
    a dead-letter file take turns."""
    return FileLock(f"{path}.lock", wait=True)


#: How many dead letters a file-backed store also keeps in memory (the most recent).
RECENT_DEAD_LETTERS = 100


class DeadLetterStore:
    """Actions kept for replay: in a local store (``store``), or one ASCII JSON object per line
    of ``path`` (appended under ``<path>.lock``, so a concurrent ``flowlang replay`` never
    erases one), or only in memory."""

    def __init__(self, path: Path | None = None, *, store: LocalStore | None = None) -> None:
        if path is not None:
            check_record_file(path, "dead-letter file")  # before a lock is made next to it
        self.path = path
        self.store = store
        #: Every record of a store in memory; of a file-backed store, only the most recent
        #: RECENT_DEAD_LETTERS (the file has them all), so an endless stream stays bounded.
        self.records: MutableSequence[dict[str, Any]] = (
            [] if path is None and store is None else deque(maxlen=RECENT_DEAD_LETTERS)
        )

    def add(self, record: dict[str, Any], settles: tuple[str, str, str, str] | None = None) -> bool:
        """Keep ``record``; OSError or RecordError when the file cannot take it. With
        ``settles`` (event id, workflow, action, outcome) and a store, the action is settled in
        the same transaction: True then (otherwise the caller settles it)."""
        if self.store is not None:
            at = float(record.get("recorded_at") or 0.0)
            if settles is not None:
                self.store.settle_dead(*settles, record, at)
                self.records.append(record)
                return True
            self.store.add_dead(record, at)
        elif self.path is not None:
            line = encode_record(record)
            with file_lock(self.path):
                append_line(self.path, line)
        self.records.append(record)
        return False

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The records of a dead-letter file (lines that are not records are skipped)."""
        return [record for _, record in read_records(path)[0]]


def idempotency_key(event_id: str, workflow: str, action: str) -> str:
    """The same key on every attempt and replay of one action for one event."""
    digest = hashlib.sha256(
        f"{event_id}\x00{workflow}\x00{action}".encode("utf-8", "surrogatepass")
    )
    return digest.hexdigest()[:32]


def describe_error(problem: BaseException) -> str:
    """``Type: message`` of an unexpected exception, even if its ``str`` fails. Whole (see
    carried_text): outputs mask it first, then shorten it (:func:`shown_error`)."""
    try:
        text = whole_text(problem)
    except Exception:
        text = "(unprintable)"
    return f"{type(problem).__name__}: {carried_text(text)}"


def shown_error(redactor: Redactor, text: str | None) -> str | None:
    """An error as output shows it: masked by ``redactor``, then cut to MAX_SHOWN_ERROR."""
    return None if text is None else shorten(redactor.text(text), MAX_SHOWN_ERROR)


class Automations:
    """Workflows indexed by trigger; matches events and delivers their actions.

    ``ssl_context``/``http``/``resolver`` as for :class:`flowlang.Runtime` (one HTTP layer, one set
    of safety rules); ``secrets`` provides ``<<secrets.NAME>>``; ``clock`` times retries;
    ``dead_letters`` keeps what could not be delivered; ``on_attempt`` is told of every
    delivery attempt (:class:`Attempt`; what it raises is ignored); ``executor`` decides when a
    retry runs (by default a :class:`LocalExecutor` sleeping on ``clock``).

    What was done is kept in ``store`` (a :class:`LocalStore`, shared with other processes:
    the duplicate check is the store's, nothing is remembered in memory; orphaned events are
    taken over by :meth:`take_over`), or nowhere (duplicates remembered in memory, bounded by
    ``max_remembered_events``; nothing outlives the process).
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
        on_attempt: Callable[[Attempt], None] | None = None,
        executor: Executor | None = None,
        store: LocalStore | None = None,
    ) -> None:
        self.workflows = tuple(workflows)
        check_unique_names(self.workflows)
        self._by_trigger: dict[str, list[CompiledWorkflow]] = {}
        for workflow in self.workflows:
            self._by_trigger.setdefault(workflow.trigger, []).append(workflow)
        self.settings = settings or DeliverySettings()
        self.secrets: SecretsProvider = secrets or EnvironmentSecrets()
        self.clock: Clock = clock or SystemClock()
        self.executor: Executor = executor or LocalExecutor(self.clock)
        if dead_letters is None:  # with a store, its dead letters are kept there
            dead_letters = DeadLetterStore(store=store) if store is not None else DeadLetterStore()
        self.dead_letters = dead_letters
        self.rng = rng or random.Random()
        #: Every secret value any action used: what the caller's output must be passed through.
        self.redactor = Redactor()
        self._own_http: GuardedHttp | None = None
        self._http = http
        self._ssl_context = ssl_context
        self._resolver = resolver
        #: Event ids accepted, oldest first, with when (see _is_duplicate).
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.store = store
        self.on_attempt = on_attempt
        self._unfinished: dict[str, dict[str, Any]] = {}
        #: Long-running speech operations by idempotency key, so a retry (or, through the
        #: store, the next run) polls the same one.
        self._speech_operations: dict[str, str] = {}
        #: Problems met reading the store's open events (each a sentence).
        self.problems: list[str] = []
        #: Ids of the open events taken over from the store, until they finish: only they
        #: may have a recorded retry to wait for.
        self._taken: set[str] = set()
        if store is not None:
            self.take_over()
        install_log_redaction()

    def take_over(self, limit: int | None = None) -> int:
        """Take over the store's open events whose process is gone (at start, and again from
        time to time), at most ``limit`` (a bounded batch: call again for the rest), and this
        process's own events whose run ended unfinished: :meth:`resume` finishes them. How
        many were taken."""
        if self.store is None:
            return 0
        taken = self.store.take_over(limit)
        for found in taken:
            self.problems += found.problems
            if not found.event_id:  # the event itself cannot be read back: reported only
                continue
            self._resume_later(found)
        return len(taken)

    def _resume_later(self, found: OpenEvent) -> None:
        try:
            event = check_event(found.event, self.settings.max_event_depth, 2**62)
        except EventError as error:
            self.problems.append(f"unfinished event {found.event_id!r}: {error}")
            return
        self._speech_operations.update(found.operations)
        self._taken.add(found.event_id)
        settled = {key: value for key, value in found.settled.items()}
        self._unfinished[found.event_id] = {"event": event, "settled": settled, "done": found.done}

    @property
    def http(self) -> HttpSender:
        """The sender, made on first use."""
        if self._http is None:
            self._http = self._own_http = self.settings.sender(self._ssl_context, self._resolver)
        return self._http

    # --- matching ---------------------------------------------------------------------------

    def match(self, event: Mapping[str, Any]) -> list[CompiledWorkflow]:
        """The workflows whose trigger is the event's type and whose conditions hold."""
        kind = event.get("type") if isinstance(event, Mapping) else None
        candidates = self._by_trigger.get(kind) if isinstance(kind, str) else None
        if not candidates:
            return []
        return [w for w in candidates if w.matches(event)]

    def _is_duplicate(self, event_id: str) -> bool:
        """Whether ``event_id`` was accepted within the window (and is still remembered); if
        not, it is remembered now. One dict entry per id, oldest first: ids leave when the
        window passes them or, beyond ``max_remembered_events``, oldest first."""
        now = self.clock.now()
        seen = self._seen
        horizon = now - self.settings.dedup_window
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= horizon:
                break
            del seen[oldest]
        if event_id in seen:
            return True
        seen[event_id] = now
        self._forget_beyond(self.settings.max_remembered_events)
        return False

    def _forget_beyond(self, limit: int) -> None:
        """Forget the oldest remembered event ids beyond ``limit``."""
        while len(self._seen) > limit:
            self._seen.popitem(last=False)

    # --- delivery ---------------------------------------------------------------------------

    async def dispatch(self, event: Mapping[str, Any]) -> DispatchResult:
        """Run every matching workflow for ``event``; returns when each action has settled.

        EventError (a ValueError) for an event refused at the door: no id, nested deeper than
        ``max_event_depth`` or larger than ``max_event_bytes`` as JSON. Nothing an action does
        raises here: an unexpected exception is a failed attempt.
        """
        plain = self.accept(event)
        if plain is None:
            return DispatchResult(str(event["id"]), duplicate=True)
        return await self._dispatch(plain, plain["id"], {})

    def accept(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Check ``event`` and record it as accepted (in the store, or in memory), without
        running it (:meth:`dispatch` runs it; with a store, an accepted event not run to its end
        is resumed by the next run): the event as plain JSON, or None for a duplicate.
        EventError as for :meth:`dispatch`."""
        settings = self.settings
        plain = check_event(event, settings.max_event_depth, settings.max_event_bytes)
        event_id = plain["id"]
        if self.store is not None:  # one atomic check-and-insert, shared with other processes
            now = self.clock.now()
            accepted = self.store.accept(event_id, plain, now, settings.dedup_window)
            return plain if accepted else None
        return None if self._is_duplicate(event_id) else plain

    async def run(self, event: Mapping[str, Any]) -> DispatchResult:
        """Run an event :meth:`accept` returned (recorded already) to its end."""
        return await self._dispatch(event, str(event["id"]), {})

    def _matching(self, event: Mapping[str, Any], result: DispatchResult) -> list[CompiledWorkflow]:
        """:meth:`match`, and if a condition raises, each workflow on its own: one whose
        condition fails is reported in ``result.errors`` and not run."""
        try:
            return self.match(event)
        except Exception:
            pass
        kind = event.get("type")
        matched = []
        for workflow in self._by_trigger.get(kind, ()) if isinstance(kind, str) else ():
            try:
                if workflow.matches(event):
                    matched.append(workflow)
            except Exception as problem:
                result.errors.append(
                    f"workflow {workflow.name!r}: its conditions failed: {describe_error(problem)}"
                )
        return matched

    async def _dispatch(
        self, event: Mapping[str, Any], event_id: str, progress: Mapping[str, Any]
    ) -> DispatchResult:
        """Run the matching workflows, skipping what ``progress`` (from the store) settled."""
        result = DispatchResult(event_id)
        workflows = self._matching(event, result)
        result.matched = [w.name for w in workflows]
        settled = progress.get("settled", {})
        finished = True
        self._in_flight += 1
        self._idle.clear()
        try:
            for workflow in workflows:
                if workflow.name in progress.get("done", ()):
                    continue
                earlier = {
                    action.id: settled[(workflow.name, action.id)]
                    for action in workflow.actions
                    if (workflow.name, action.id) in settled
                }
                deliveries, done = await self._run_workflow(workflow, event, {}, 0, earlier)
                result.deliveries += deliveries
                if done:
                    self._record(
                        {"kind": "workflow_done", "event_id": event_id, "workflow": workflow.name}
                    )
                finished = finished and done
            if finished:
                self._record({"kind": "done", "event_id": event_id})
            elif any(d.outcome == "unsaved" for d in result.deliveries):
                self._run_again(event_id)
        except StoreError:
            self._run_again(event_id)
            raise
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        return result

    def _run_again(self, event_id: str) -> None:
        """The event's run ended unfinished because the store could not be written: this
        process's next :meth:`take_over` returns it (with a backoff), since no other
        process takes over the events of a live one."""
        if self.store is not None:
            self.store.run_again(event_id)

    def _record(self, record: dict[str, Any]) -> None:
        """Record progress (``kind``: settled, operation, workflow_done, done) in the store's
        tables; without a store, nothing."""
        store = self.store
        if store is None:
            return
        kind, event_id = record["kind"], record["event_id"]
        if kind == "settled":
            store.settle(
                event_id, record["workflow"], record["action"], record["outcome"], record["result"]
            )
        elif kind == "operation":
            store.operation(event_id, record["key"], record["name"])
        elif kind == "workflow_done":  # resuming without it only skips its settled actions
            if len(self.workflows) > 1:
                store.workflow_done(event_id, record["workflow"])
        elif kind == "done":
            self._taken.discard(event_id)
            settings = self.settings
            store.finish(
                event_id, self.clock.now(), settings.dedup_window, settings.max_remembered_events
            )

    async def resume(self) -> list[DispatchResult]:
        """Finish the open events taken over from the store (an interrupted run), in order."""
        pending, self._unfinished = self._unfinished, {}
        results = []
        items = list(pending.items())
        for number, (event_id, state) in enumerate(items):
            try:
                if number:
                    await asyncio.sleep(0)  # other work runs between events (a serving loop)
                results.append(await self._dispatch(state["event"], event_id, state))
            except BaseException:
                # The rest are kept for the next resume (this one runs again: _dispatch).
                for later, later_state in items[number + 1 :]:
                    self._unfinished.setdefault(later, later_state)
                raise
        return results

    async def _run_workflow(
        self,
        workflow: CompiledWorkflow,
        event: Mapping[str, Any],
        results: dict[str, Any],
        start: int,
        settled: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Deliver the actions from ``start`` on, in order, except those ``settled`` (from the
        store); returns the deliveries and whether every action settled.

        Only a failed action with ``stop_on_failure`` stops the rest. A failed action's dead
        letter is kept in the same store transaction that settles it (or, when the dead letters
        are elsewhere, before it is settled); when it cannot be kept the action (and what
        follows) stays unsettled, to run again on the next run.
        """
        scope, redactor = self.attempt_scope(event, results)
        deliveries = []
        actions = workflow.actions
        event_id = str(event["id"])
        for index in range(start, len(actions)):
            action = actions[index]
            earlier = settled.get(action.id) if settled else None
            if earlier is not None:
                if earlier[0] == "delivered":
                    results[action.id] = earlier[1]
                    scope["actions"][action.id] = {"result": earlier[1]}
                elif action.fields["stop_on_failure"]:
                    break  # it stopped the rest; its dead letter names them
                continue
            delivery = await self._deliver(workflow, action, scope, redactor, event_id)
            for used in redactor.used - self.redactor.used:
                self.redactor.add(used)
            deliveries.append(delivery)
            value = delivery.result  # plain JSON (see _attempt)
            delivery.result = shown = redactor.data(value)
            if delivery.outcome == "scheduled":  # its retry runs elsewhere: left unsettled
                return deliveries, False
            if delivery.outcome == "delivered":
                self._settle(event_id, workflow.name, action.id, "delivered", shown)
                results[action.id] = value
                scope["actions"][action.id] = {"result": value}
                continue
            stop = bool(action.fields["stop_on_failure"])
            remaining = [later.id for later in actions[index + 1 :]] if stop else []
            record = self.dead_letter_record(
                workflow, action, event, results, redactor, delivery
            ) | {"then": remaining}
            # Dead letter and settlement in one transaction when both are in the store.
            settles = (event_id, workflow.name, action.id, delivery.outcome)
            try:
                together = self.dead_letters.add(
                    record,
                    settles
                    if self.store is not None and self.dead_letters.store is self.store
                    else None,
                )
            except (OSError, RecordError) as error:
                delivery.outcome = "unsaved"
                delivery.error = (
                    f"{delivery.error}; its dead letter could not be written "
                    f"({redactor.text(describe_error(error))}): it stays unsettled and runs again "
                    "on the next run"
                )
                return deliveries, False
            if not together:
                self._settle(event_id, workflow.name, action.id, delivery.outcome, None)
            if stop:
                deliveries += [
                    Delivery(workflow.name, name, "skipped", error=f"after {action.id} failed")
                    for name in remaining
                ]
                break
        return deliveries, True

    def attempt_scope(
        self, event: Mapping[str, Any], results: Mapping[str, Any]
    ) -> tuple[dict[str, Any], SecretsView]:
        """What the actions of a workflow see for ``event`` after ``results`` (the earlier
        actions' results by name), and the secrets' view that masks what they used."""
        redactor = SecretsView(self.secrets)
        actions = {name: {"result": value} for name, value in results.items()}
        return {"event": event, "actions": actions, "secrets": redactor}, redactor

    def _settle(self, event_id: str, workflow: str, action: str, outcome: str, result: Any) -> None:
        """Record an action as settled (its result only if it can be written as JSON)."""
        record = {
            "kind": "settled",
            "event_id": event_id,
            "workflow": workflow,
            "action": action,
            "outcome": outcome,
            "result": result,
        }
        try:
            self._record(record)
        except RecordError:
            self._record(record | {"result": None})

    def dead_letter_record(
        self,
        workflow: CompiledWorkflow,
        action: Action,
        event: Mapping[str, Any],
        results: Mapping[str, Any],
        redactor: Redactor,
        delivery: Delivery,
    ) -> dict[str, Any]:
        """What replay needs: the workflow's text, the event, earlier results (redacted)."""
        return {
            "format": DEAD_LETTER_FORMAT,
            "recorded_at": self.clock.now(),
            "workflow": workflow.name,
            "workflow_fingerprint": workflow.fingerprint,
            "workflow_file": workflow.filename,
            "workflow_source": workflow.source,
            "event": redactor.data(plain_json(event)),
            "action": action.id,
            "then": [],
            "results": redactor.data(plain_json(results)),
            "idempotency_key": idempotency_key(str(event["id"]), workflow.name, action.id),
            "attempts": delivery.attempts,
            "error": shown_error(self.redactor, delivery.error),  # ⊇ this run's secrets
        }

    async def _attempt(
        self, action: Action, scope: dict[str, Any], key: str, timeout: float
    ) -> tuple[str, Any, str | None, HttpResult | None]:
        """One attempt: ``(outcome, result, error, response)``; outcome as :func:`interpret`."""
        settings = self.settings
        perform = action.kind.perform
        if perform is not None:
            outcome, value, error, sent = await perform(
                action, scope, self._attempt_context(scope, key, timeout)
            )
            return outcome, plain_json(value), error, sent
        try:
            request = prepare_action(
                action, scope, settings.providers, key, settings.max_request_body
            )
        except (ActionError, RequestError, ValueFormatError) as problem:
            return "failed", None, f"{action.id}: {problem}", None
        sent = await self.http.send(
            request, timeout=timeout, max_body=settings.max_response_body, follow_redirects=False
        )
        outcome, value, error = interpret(action, sent)
        return outcome, plain_json(value), error or sent.outcome, sent

    def _attempt_context(
        self, scope: Mapping[str, Any], key: str, timeout: float
    ) -> AttemptContext:
        """What an action of several requests may use for one attempt."""
        event_id = str(scope["event"]["id"])
        return AttemptContext(
            http=self.http,
            providers=self.settings.providers,
            speech=self.settings.speech,
            key=key,
            timeout=timeout,
            clock=self.clock,
            operations=self._speech_operations,
            started=lambda name: self._record(
                {"kind": "operation", "event_id": event_id, "key": key, "name": name}
            ),
        )

    async def _deliver(
        self,
        workflow: CompiledWorkflow,
        action: Action,
        scope: dict[str, Any],
        redactor: Redactor,
        event_id: str,
    ) -> Delivery:
        """Attempt ``action`` until it is delivered or dead, each retry when the executor runs
        it (or ``scheduled`` when the executor hands it to another process)."""
        name = workflow.name
        key = idempotency_key(event_id, name, action.id)
        task = AttemptTask(event_id, name, action.id, 1, self.clock.now(), key)
        store = self.store
        taken = store is not None and event_id in self._taken
        recorded = store.retry_of(event_id, key) if store is not None and taken else None
        if recorded is not None:  # an earlier run's retry: wait only what remains of it
            number = min(recorded[0], len(self.settings.schedule))
            due = min(recorded[1], self.clock.now() + self._longest_wait())  # not a damaged one
            task = AttemptTask(event_id, name, action.id, number, due, key)
            if not await self.executor.schedule(task):
                return Delivery(name, action.id, "scheduled", task.number - 1)
        while True:
            outcome = await self.attempt_once(workflow, action, scope, task.number, redactor)
            if isinstance(outcome, Delivered):
                return Delivery(name, action.id, "delivered", task.number, None, outcome.result)
            if isinstance(outcome, Dead):
                return Delivery(name, action.id, "dead_lettered", task.number, outcome.error)
            task = task.retry(outcome)
            if store is not None:  # waiting is data: a rerun waits only what remains
                store.schedule_retry(event_id, key, task.number, task.due)
            if not await self.executor.schedule(task):
                return Delivery(name, action.id, "scheduled", task.number - 1, outcome.error)

    async def attempt_once(
        self,
        workflow: CompiledWorkflow,
        action: Action,
        scope: dict[str, Any],
        number: int,
        redactor: Redactor,
    ) -> AttemptOutcome:
        """Make attempt ``number`` (from 1) of ``action`` of ``workflow``, and only that one,
        reported to ``on_attempt``: :class:`Delivered`, :class:`RetryAt` (a retryable failure
        with attempts left on the schedule; when the next is due by the schedule, 429,
        Retry-After and timeout rules) or :class:`Dead`. ``scope`` is what its templates see
        (``event``, earlier ``actions``, ``secrets`` read through ``redactor``, which masks the
        error). Nothing raises: an unexpected exception is a retryable failure."""
        settings = self.settings
        event_id = str(scope["event"]["id"])
        key = idempotency_key(event_id, workflow.name, action.id)
        sent: HttpResult | None = None
        try:
            timeout = min(action.fields.get("timeout", settings.timeout), settings.timeout_cap)
            outcome, value, error, sent = await self._attempt(action, scope, key, timeout)
        except Exception as problem:
            outcome, value = "retry", None
            error = f"{action.id}: unexpected error: {describe_error(problem)}"
        if outcome == "delivered":
            self._tell(Attempt(event_id, workflow.name, action.id, number, outcome))
            return Delivered(value)
        error = redactor.text(str(error))
        if outcome != "retry" or number >= len(settings.schedule):
            self._tell(Attempt(event_id, workflow.name, action.id, number, "failed", error))
            return Dead("failed" if outcome != "retry" else "exhausted", error)
        planned = settings.schedule[max(number, 1)]
        try:
            wait = self._next_wait(
                planned,
                sent.status if sent is not None else None,
                sent.outcome if sent is not None else "error",
                sent.headers.get("retry-after") if sent is not None else None,
            )
        except Exception:
            wait = planned
        self._tell(Attempt(event_id, workflow.name, action.id, number, outcome, error, wait))
        return RetryAt(self.clock.now() + wait, error, wait)

    def _tell(self, attempt: Attempt) -> None:
        """Report ``attempt`` to ``on_attempt``; nothing it does ends a delivery."""
        if self.on_attempt is not None:
            with contextlib.suppress(Exception):
                self.on_attempt(attempt)

    def _longest_wait(self) -> float:
        """The longest wait :meth:`_next_wait` can give (a recorded due time later than this
        from now was not written by it: it is waited for only this long)."""
        settings = self.settings
        planned = max(settings.schedule) * (1 + settings.jitter)
        return max(planned, settings.throttled_minimum, settings.max_retry_after)

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
        """Retry a dead-letter record: its action, then the actions it stopped.

        A record is data, checked before use: ValueError naming what is wrong, or
        FlowDocumentError when its workflow text (always text, never a path) does not load.
        """
        if not isinstance(record, Mapping) or record.get("format") != DEAD_LETTER_FORMAT:
            raise ValueError("this is not a flowlang dead-letter record")
        source, filename = record.get("workflow_source"), record.get("workflow_file")
        action_name, then = record.get("action"), record.get("then") or []
        results = record.get("results") or {}
        if not isinstance(source, str):
            raise ValueError("its workflow_source is not the workflow's text")
        if filename is not None and not isinstance(filename, str):
            raise ValueError("its workflow_file is not text")
        if not isinstance(action_name, str):
            raise ValueError("its action is not a name")
        if not isinstance(then, list) or not all(isinstance(name, str) for name in then):
            raise ValueError("its then is not a list of action names")
        if not isinstance(results, dict):
            raise ValueError("its results are not an object")
        event = check_event(record.get("event"), self.settings.max_event_depth, MAX_RECORD_BYTES)
        # Plain http endpoints reach the hosts this run allows, as when the workflow loaded.
        workflow = load_workflow_text(source, name=filename, allow_hosts=self.settings.allow_hosts)
        names = [action.id for action in workflow.actions]
        if action_name not in names:
            raise ValueError(f"its workflow has no action {action_name!r}")
        start = names.index(action_name)
        last = start + 1 + len(then)
        trimmed = dataclasses.replace(workflow, actions=workflow.actions[:last])
        deliveries, _ = await self._run_workflow(trimmed, event, dict(results), start)
        return deliveries

    async def aclose(self) -> None:
        """Wait for every dispatch in flight, then close the connections if they were made here
        (a store is closed by whoever opened it)."""
        await self._idle.wait()
        if self._own_http is not None:
            await self._own_http.aclose()

    async def __aenter__(self) -> Automations:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
