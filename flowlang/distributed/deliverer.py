"""What a worker does with one message, without Celery: accept an event, or make one delivery
attempt, against the shared store (flowlang.distributed.shared).

Each call returns a :class:`Step`: what became of the message, the messages to publish now (in
order) and, for an accept, what to confirm once they are out. The glue (Celery tasks, a test)
publishes ``step.publish``, then awaits ``step.confirm``; nothing here publishes.

accept (``flowlang.accept``): the body is checked (refused otherwise); the event is claimed in
the store: ``fanned_out`` is a duplicate; ``accepting`` (another worker holds the claim) is
scheduled again for when that claim lapses (re-checked, never dropped); a new claim matches the
workflows (one whose condition fails is reported in ``error`` and not run) and publishes one
deliver message (action 0, attempt 1) per workflow. The claim is renewed every third of
``accept_lease`` while the glue publishes (at most PUBLISH_LIMIT seconds); ``confirm`` stops
that and marks the event fanned out only while the claim is still ours (a lost claim is
logged as an error); ``abandon`` (publishing failed) stops it and lets the claim lapse.

deliver (``flowlang.deliver``): the body is checked; its workflow is found by fingerprint among
those loaded (an unknown one, during a rolling deploy, is scheduled again in
``unknown_workflow_retry`` seconds, and after ``unknown_workflow_limit`` seconds is dead-lettered
as "workflow changed"); an action the ledger shows settled is not sent again, and its next action
is published with the recorded result; a copy of an attempt whose outcome is recorded already
(the ledger keeps the highest such attempt: a broker redelivery, the pump publishing twice)
is ``stale`` and dropped, so a retry chain never forks and nothing is sent before a
Retry-After; an attempt that crashed before its outcome was recorded is made again. Else the
action's lease is taken with a token of this attempt's own (or the message scheduled again
when the lease lapses), renewed every third of ``lease`` while the attempt runs, and one
attempt made (:meth:`Automations.attempt_once`). The ledger read, the copy check and the
lease are one round trip to Redis (:meth:`SharedStore.start_attempt`); the outcome is
recorded with the attempt's mark, and the lease given back, in one more
(:meth:`SharedStore.record_delivered`, ``record_retry``, ``record_dead`` with ``holder``):
two round trips per attempt, four per event with the accept's claim and confirmation.

- delivered: the ledger is written and the lease given back, the next action published (with
  this result, masked) — ledger first, so a redelivered message after a crash re-publishes the
  next action without sending this one again;
- retry: the next attempt is scheduled at the time the outcome says, the lease given back;
- dead: the dead letter (``flowlang.deadletter/1``, with ``then`` the actions a
  ``stop_on_failure`` stopped, and ``action_index``) is added and the ledger settles the
  action as ``dead_lettered`` in the same step (a later dead letter of the same action
  replaces it); the next action is published unless ``stop_on_failure``. A dead letter too
  large to keep is kept trimmed (event and results replaced by a note, field ``trimmed``).

A deliver message carries ``last`` (optional) when its chain stops before the workflow's end
(a replay). A message the store refuses (ValueError: too large or deep for the due set) is
dead-lettered, never dropped.

Secrets never reach a message or the store: results and errors are masked with the secrets the
workflow used (as the local store keeps them). A body that is not a message never raises: it
is ``Step("refused", error=...)``. :class:`~flowlang.errors.SharedStoreError` (the store cannot
be reached) propagates: nothing was decided, and the message should be delivered again.

replay (``flowlang.replay``, beyond Interface B): a dead letter whose workflow version is loaded
here becomes a deliver message for its action again, and its ``then`` only (``last``); its
ledger entry is forgotten first, only while it says ``dead_lettered`` (else
``settled_before``, nothing sent). A "workflow changed" letter (action None) is replayed from
its ``action_index`` to the workflow's end.

Beyond Interface B (compatible): :meth:`Deliverer.replay` (outcome ``replayed``,
``settled_before`` or ``refused``); the outcome ``stale``; ``Step.abandon``; leases outside
0.003 s to ten years are refused at construction (ValueError); the keyword
``unknown_workflow_retry`` (60 s); a deliver body
scheduled again for an unknown workflow carries ``"unknown_since"`` (when it was first found
unknown: the limit counts from there; DeliverMessage ignores other fields).
"""

from __future__ import annotations

__all__ = ["UNKNOWN_WORKFLOW_RETRY", "Deliverer", "Step"]

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlang.automations.dispatch import (
    DEAD_LETTER_FORMAT,
    Automations,
    Delivery,
    describe_error,
    idempotency_key,
    shown_error,
)
from flowlang.automations.executor import Dead, Delivered
from flowlang.automations.workflow import CompiledWorkflow
from flowlang.distributed.connection import check_key_part
from flowlang.distributed.messages import (
    ACCEPT_TASK,
    DELIVER_TASK,
    MESSAGE_VERSION,
    AcceptMessage,
    DeliverMessage,
)
from flowlang.distributed.shared import MAX_SECONDS, SharedStore
from flowlang.errors import SharedStoreError
from flowlang.expr.values import plain_json

log = logging.getLogger("flowlang.distributed")


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel a background renewal and wait for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class Later:
    """A background renewal started ``delay`` seconds from now unless stopped before: most
    attempts and fan-outs end sooner, and then no task is made at all (a timer costs less)."""

    def __init__(self, delay: float, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = start
        self._task: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(delay, self._begin)

    def _begin(self) -> None:
        self._task = self._loop.create_task(self._start())

    async def stop(self) -> None:
        """Stop it (the timer, or the renewal once started) and wait for it."""
        self._timer.cancel()
        if self._task is not None:
            await _stopped(self._task)


async def renew_every(
    renew: Callable[[], Awaitable[bool]],
    every: float,
    lapsed: str | None,
    failed: str,
    deadline: float | None = None,
) -> None:
    """Call ``renew`` now and every ``every`` seconds until stopped, until it returns False
    (the claim or lease was lost: ``lapsed`` is logged, when given), or until the loop's time
    passes ``deadline``. A store error is logged (``failed``, with the error) and tried again
    at the next turn. Started through :class:`Later`, whose delay is the first ``every``."""
    loop = asyncio.get_running_loop()
    while deadline is None or loop.time() < deadline:
        try:
            if not await renew():
                if lapsed is not None:
                    log.warning("%s", lapsed)
                return
        except SharedStoreError as error:
            log.warning("%s: %s", failed, error)
        await asyncio.sleep(every)


#: Seconds before a deliver message for a workflow version not loaded here is tried again.
UNKNOWN_WORKFLOW_RETRY = 60.0
#: The body field that says since when a deliver message's workflow was unknown.
UNKNOWN_SINCE = "unknown_since"
#: The longest an accept's claim is renewed while its fan-out is published (confirm not yet
#: awaited): a glue that never confirms does not hold the event for ever.
PUBLISH_LIMIT = 600.0
#: What a dead letter too large to keep holds instead of its event and results.
TRIMMED = "too large to keep in the shared store; removed from this dead letter"


@dataclass
class Step:
    """What one message came to: ``outcome`` is ``fanned_out``, ``duplicate``, ``deferred``,
    ``delivered``, ``retry``, ``dead``, ``skipped``, ``refused``, ``settled_before``,
    ``done``, ``replayed`` or ``stale`` (a copy of an attempt whose outcome is recorded
    already: dropped, nothing sent); ``publish`` the (task name, body) messages to publish
    now, in order; ``confirm`` what to await once they are all published; ``error`` masked.
    ``abandon`` (an accept's fan-out only): what to await instead of ``confirm`` when
    publishing failed (the claim is then no longer renewed and lapses)."""

    outcome: str
    publish: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    confirm: Callable[[], Awaitable[None]] | None = None
    error: str | None = None
    abandon: Callable[[], Awaitable[None]] | None = None


class Deliverer:
    """Accepts events and delivers actions one attempt at a time for ``automations`` (its
    workflows, settings, secrets, clock and HTTP), sharing state through ``store``; ``owner``
    names this worker in claims and leases (a key part: ``A-Z a-z 0-9 _ . : -``).

    ``lease``: seconds one attempt holds its action (longer than an attempt can take);
    ``accept_lease``: seconds an accept holds its event until it is fanned out."""

    def __init__(
        self,
        automations: Automations,
        store: SharedStore,
        owner: str,
        *,
        lease: float = 60.0,
        accept_lease: float = 60.0,
        unknown_workflow_limit: float = 3600.0,
        unknown_workflow_retry: float = UNKNOWN_WORKFLOW_RETRY,
    ) -> None:
        for name, value in (
            ("lease", lease),
            ("accept_lease", accept_lease),
            ("unknown_workflow_limit", unknown_workflow_limit),
            ("unknown_workflow_retry", unknown_workflow_retry),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number of seconds")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
            if name.endswith("lease") and not 0.003 <= value <= MAX_SECONDS:
                raise ValueError(
                    f"{name} must be from 0.003 to {MAX_SECONDS:.0f} seconds (what the shared "
                    "store can hold, renewed every third of it)"
                )
        self.automations = automations
        self.store = store
        self.owner = check_key_part("owner", owner)
        self.lease = float(lease)
        self.accept_lease = float(accept_lease)
        self.unknown_workflow_limit = float(unknown_workflow_limit)
        self.unknown_workflow_retry = float(unknown_workflow_retry)
        self._by_fingerprint = {w.fingerprint: w for w in automations.workflows}

    # --- helpers ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.automations.clock.now()

    def _shown(self, text: str) -> str:
        """An error as steps carry it: masked with every secret used so far, shortened."""
        return shown_error(self.automations.redactor, text) or ""

    def _limits(self) -> dict[str, int]:
        """The limits a message's event is read under: the automations' settings."""
        settings = self.automations.settings
        return {"max_depth": settings.max_event_depth, "max_bytes": settings.max_event_bytes}

    def _refused(self, what: str, problem: BaseException) -> Step:
        error = self._shown(f"{what}: {problem}")
        log.warning("refused a %s: %s", what, error)
        return Step("refused", error=error)

    # --- flowlang.accept --------------------------------------------------------------------

    async def accept(self, body: Any) -> Step:
        """Check an accept message, claim its event and fan it out (see the module docstring)."""
        try:
            message = AcceptMessage.from_json(body, **self._limits())
        except Exception as problem:
            return self._refused("accept message", problem)
        event = message.event
        event_id = str(event["id"])
        claimant = self._token()
        state, lapse = await self.store.claim_event(event_id, claimant, self.accept_lease)
        if state == "fanned_out":
            return Step("duplicate")
        if state == "accepting":
            await self.store.schedule(ACCEPT_TASK, message.to_json(), self._now() + lapse)
            return Step("deferred")
        workflows, errors = self._matching(event)
        publish = [
            (DELIVER_TASK, DeliverMessage(event, w.name, w.fingerprint, 0, 1, {}).to_json())
            for w in workflows
            if w.actions
        ]
        deadline = asyncio.get_running_loop().time() + PUBLISH_LIMIT
        every = self.accept_lease / 3
        renewal = Later(
            every,
            lambda: renew_every(
                lambda: self.store.renew_claim(event_id, claimant, self.accept_lease),
                every,
                None,  # confirm says it, if the fan-out is confirmed after all
                "renewing an accept claim failed",
                deadline,
            ),
        )

        async def confirm() -> None:
            await renewal.stop()
            if not await self.store.mark_fanned_out(event_id, claimant):
                log.error(
                    "the claim of event %s lapsed while its fan-out was published; another "
                    "worker may have fanned it out too",
                    self._shown(event_id[:100]),
                )

        async def abandon() -> None:
            await renewal.stop()

        error = self._shown("; ".join(errors)) if errors else None
        return Step("fanned_out", publish, confirm, error, abandon)

    def _token(self) -> str:
        """This worker's owner with a token of its own: one claim or lease, one holder."""
        return f"{self.owner}:{uuid.uuid4().hex[:16]}"

    def _matching(self, event: Mapping[str, Any]) -> tuple[list[CompiledWorkflow], list[str]]:
        """The workflows of the event's trigger whose conditions hold; and, for each whose
        condition failed, a message (that workflow is not run)."""
        kind = event.get("type")
        matched, errors = [], []
        for workflow in self.automations.workflows:
            if workflow.trigger != kind:
                continue
            try:
                if workflow.matches(event):
                    matched.append(workflow)
            except Exception as problem:
                errors.append(
                    f"workflow {workflow.name!r}: its conditions failed: {describe_error(problem)}"
                )
        return matched, errors

    # --- flowlang.deliver -------------------------------------------------------------------

    async def deliver(self, body: Any) -> Step:
        """Check a deliver message and make its attempt, once (see the module docstring)."""
        try:
            message = DeliverMessage.from_json(body, **self._limits())
        except Exception as problem:
            return self._refused("deliver message", problem)
        workflow = self._by_fingerprint.get(message.fingerprint)
        if workflow is None or workflow.name != message.workflow:
            return await self._unknown(message, body)
        if message.action >= len(workflow.actions):
            return self._refused(
                "deliver message",
                ValueError(f"workflow {workflow.name!r} has no action number {message.action}"),
            )
        try:
            return await self._deliver(workflow, message)
        except SharedStoreError:
            raise
        except Exception as problem:  # a message kept nowhere else must not be dropped
            error = self._shown(describe_error(problem))
            log.error("deliver of %s failed unexpectedly: %s", workflow.name, error)
            return await self._bury(workflow, message, error)

    async def _bury(self, workflow: CompiledWorkflow, message: DeliverMessage, error: str) -> Step:
        """Dead-letter a message that could not be handled (a store refusing what it was
        given, say) rather than drop it."""
        action = workflow.actions[message.action]
        automations = self.automations
        delivery = Delivery(workflow.name, action.id, "dead_lettered", message.attempt, error)
        record = automations.dead_letter_record(
            workflow, action, message.event, message.results, automations.redactor, delivery
        ) | {"then": [], "error": error, "action_index": message.action}
        key = idempotency_key(message.event_id, workflow.name, action.id)
        status = await self._add_dead(record, key)
        if status != "ok":
            return Step(status if status == "stale" else "settled_before", error=error)
        return Step("dead", error=error)

    async def _add_dead(
        self, record: dict[str, Any], key: str | None = None, holder: str | None = None
    ) -> str:
        """Add a dead letter (with the ledger entry of ``key``, in one step, when given; and
        the action's lease given back when ``holder`` is): the step's status (``ok``,
        ``settled``, ``stale``). A record too large (or deep) to keep is kept trimmed: its
        event and results replaced by a note."""
        try:
            if key is None:
                await self.store.add_dead(record)
                return "ok"
            status, _ = await self.store.record_dead(key, record, record["attempts"], holder=holder)
            return status
        except ValueError as problem:
            log.error("a dead letter was trimmed to be kept: %s", self._shown(str(problem)))
            event = record.get("event")
            event_id = event.get("id") if isinstance(event, Mapping) else None
            trimmed = record | {
                "event": {"id": event_id if isinstance(event_id, str) else None},
                "results": {},
                "trimmed": TRIMMED,
            }
            if key is None:
                await self.store.add_dead(trimmed)
                return "ok"
            status, _ = await self.store.record_dead(
                key, trimmed, record["attempts"], holder=holder
            )
            return status

    async def _deliver(self, workflow: CompiledWorkflow, message: DeliverMessage) -> Step:
        """Start the attempt (ledger, copy and lease in one round trip), make it and record
        its outcome (the lease given back in the same round trip)."""
        store = self.store
        action = workflow.actions[message.action]
        key = idempotency_key(message.event_id, workflow.name, action.id)
        holder = self._token()
        state, earlier, number = await store.start_attempt(key, message.attempt, holder, self.lease)
        if earlier is not None:  # settled
            return self._after_settled(workflow, message, earlier)
        if state == "stale":
            return self._stale(workflow, message, int(number))
        if state != "leased":  # held: tried again when that lease lapses
            await store.schedule(DELIVER_TASK, message.to_json(), self._now() + number)
            return Step("deferred")
        every = self.lease / 3
        renewal = Later(
            every,
            lambda: renew_every(
                lambda: self.store.renew_lease(key, holder, self.lease),
                every,
                f"the lease of {key} lapsed during its attempt",
                "renewing a lease failed",
            ),
        )
        recorded = False
        try:
            step = await self._attempt(workflow, message, key, holder)
            recorded = True  # its outcome's step gave the lease back
            return step
        finally:
            await renewal.stop()
            if not recorded:
                await store.release_lease(key, holder)

    def _stale(self, workflow: CompiledWorkflow, message: DeliverMessage, tried: int) -> Step:
        log.info(
            "dropped a copy of attempt %d of %s action %d: attempt %d's outcome is recorded",
            message.attempt,
            workflow.name,
            message.action,
            tried,
        )
        return Step("stale")

    async def _attempt(
        self, workflow: CompiledWorkflow, message: DeliverMessage, key: str, holder: str
    ) -> Step:
        """One attempt under ``holder``'s lease, and its outcome recorded (the lease given
        back in the same step)."""
        automations, store = self.automations, self.store
        action = workflow.actions[message.action]
        scope, redactor = automations.attempt_scope(message.event, message.results)
        try:
            outcome = await automations.attempt_once(
                workflow, action, scope, message.attempt, redactor
            )
        finally:
            for used in redactor.used - automations.redactor.used:
                automations.redactor.add(used)
        if isinstance(outcome, Delivered):
            shown = redactor.data(plain_json(outcome.result))
            status = await store.record_delivered(
                key, shown, message.attempt, at=self._now(), holder=holder
            )
            if status != "ok":
                return Step("settled_before")  # another copy delivered it and went on
            return Step("delivered", self._next(workflow, message, {action.id: shown}))
        if isinstance(outcome, Dead):
            delivery = Delivery(
                workflow.name, action.id, "dead_lettered", message.attempt, outcome.error
            )
            stop = bool(action.fields["stop_on_failure"])
            remaining = [later.id for later in self._chain(workflow, message)]
            record = automations.dead_letter_record(
                workflow, action, message.event, message.results, redactor, delivery
            ) | {"then": remaining if stop else [], "action_index": message.action}
            status = await self._add_dead(record, key, holder)
            if status != "ok":
                return Step(status if status == "stale" else "settled_before")
            error = self._shown(outcome.error)
            if stop and remaining:
                error += f" (stopped {', '.join(remaining)})"
            publish = [] if stop else self._next(workflow, message, {})
            return Step("dead", publish, error=error)
        status = await store.record_retry(
            key,
            message.attempt,
            DELIVER_TASK,
            message.next_attempt().to_json(),
            outcome.at,
            holder=holder,
        )
        if status != "ok":
            return Step(status if status == "stale" else "settled_before")
        return Step("retry", error=self._shown(outcome.error))

    def _chain(self, workflow: CompiledWorkflow, message: DeliverMessage) -> list[Any]:
        """The actions this message's chain runs after its own."""
        last = len(workflow.actions) - 1 if message.last is None else message.last
        return list(workflow.actions[message.action + 1 : last + 1])

    def _after_settled(
        self, workflow: CompiledWorkflow, message: DeliverMessage, earlier: Mapping[str, Any]
    ) -> Step:
        """An action the ledger shows settled: its next action, with the recorded result
        (nothing after a dead letter that stopped the rest)."""
        action = workflow.actions[message.action]
        if earlier["outcome"] == "delivered":
            publish = self._next(workflow, message, {action.id: earlier["result"]})
        elif action.fields["stop_on_failure"]:
            publish = []
        else:
            publish = self._next(workflow, message, {})
        return Step("settled_before", publish)

    # --- flowlang.replay --------------------------------------------------------------------

    async def replay(self, record: Any) -> Step:
        """Replay a dead letter through the workers: a deliver message for its action (attempt
        1, with the record's results) is published, and after it only the actions its ``then``
        names (those a stop_on_failure stopped; the rest of the workflow for a "workflow
        changed" letter, whose ``action`` is None and ``action_index`` says where it stopped).
        Its ledger entry is forgotten first, only while it says ``dead_lettered`` (one step);
        when it says ``delivered`` (replayed before), ``settled_before``: nothing is sent;
        when it says ``replaying`` (a replay from the record's own text started and did not
        finish), ``refused``: left to that kind of replay, which decides under the action's
        lease (:func:`flowlang.distributed.replay.replay_leased`).
        Refused when ``record`` is not a dead letter or its workflow version is not loaded here
        (``flowlang replay`` from the dead letter's own text can run it)."""
        try:
            message = self._replayed(record)
        except Exception as problem:
            return self._refused("dead letter", problem)
        workflow = self._by_fingerprint[message.fingerprint]
        action = workflow.actions[message.action]
        key = idempotency_key(message.event_id, workflow.name, action.id)
        state = await self.store.forget_dead(key)
        if state == "replaying":  # a replay from its own text started: its lease decides
            return Step(
                "refused",
                error="a replay of its action from its own text started and did not finish",
            )
        if state not in ("forgotten", "none"):
            return Step("settled_before", error=f"its action is {state} already: not sent again")
        return Step("replayed", [(DELIVER_TASK, message.to_json())])

    def _replayed(self, record: Any) -> DeliverMessage:
        """The deliver message that replays ``record``; ValueError saying why there is none."""
        if not isinstance(record, Mapping) or record.get("format") != DEAD_LETTER_FORMAT:
            raise ValueError("this is not a flowlang dead-letter record")
        name, fingerprint = record.get("workflow"), record.get("workflow_fingerprint")
        workflow = self._by_fingerprint.get(fingerprint) if isinstance(fingerprint, str) else None
        if workflow is None or workflow.name != name:
            raise ValueError(
                f"its workflow {str(name)[:100]!r} version {str(fingerprint)[:64]} is not loaded "
                "here (replay it from its own text with flowlang replay)"
            )
        names = [action.id for action in workflow.actions]
        named, index = record.get("action"), record.get("action_index")
        if named is None and type(index) is int and 0 <= index < len(names):
            start, last = index, None  # workflow changed: the action and the rest
        elif named in names:
            then = record.get("then") or []
            if not isinstance(then, list) or not all(name in names for name in then):
                raise ValueError("its then names actions its workflow does not have")
            start = names.index(named)
            last = max([start, *(names.index(name) for name in then)])
        else:
            raise ValueError(f"its workflow has no action {str(named)[:100]!r}")
        body = {
            "v": MESSAGE_VERSION,
            "event": record.get("event"),
            "workflow": workflow.name,
            "fingerprint": workflow.fingerprint,
            "action": start,
            "attempt": 1,
            "results": record.get("results") or {},
            "last": last,
        }
        return DeliverMessage.from_json(body, **self._limits())

    def _next(
        self, workflow: CompiledWorkflow, message: DeliverMessage, result: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The next action's message (none after the last)."""
        if message.action + 1 >= len(workflow.actions) or message.ends_here():
            return []
        following = message.next_action({**message.results, **result})
        return [(DELIVER_TASK, following.to_json())]

    async def _unknown(self, message: DeliverMessage, body: Any) -> Step:
        """A workflow version not loaded here: tried again later; dead after the limit."""
        now = self._now()
        since = body.get(UNKNOWN_SINCE) if isinstance(body, Mapping) else None
        if (
            isinstance(since, bool)
            or not isinstance(since, int | float)
            or not math.isfinite(since)
            or since > now
        ):
            since = now
        here = [w.fingerprint for w in self.automations.workflows if w.name == message.workflow]
        loaded = f" (this worker has version {here[0]})" if here else " (not loaded here)"
        what = f"workflow {message.workflow!r} version {message.fingerprint}"
        error = self._shown(
            f"workflow changed: {what} was not loaded for {now - since:.0f} s{loaded}"
        )
        if now - since < self.unknown_workflow_limit:
            again = message.to_json() | {UNKNOWN_SINCE: since}
            try:
                await self.store.schedule(DELIVER_TASK, again, now + self.unknown_workflow_retry)
                return Step("deferred", error=self._shown(f"{what} is not loaded{loaded}"))
            except ValueError as problem:  # kept as a dead letter, not dropped
                error = self._shown(f"workflow changed: {what} is not loaded{loaded}; {problem}")
        redactor = self.automations.redactor
        await self._add_dead(
            {
                "format": DEAD_LETTER_FORMAT,
                "recorded_at": now,
                "workflow": message.workflow,
                "workflow_fingerprint": message.fingerprint,
                "workflow_file": None,
                "workflow_source": None,
                "event": redactor.data(message.event),
                "action": None,  # unknown here: replay goes by action_index
                "action_index": message.action,
                "then": [],
                "results": redactor.data(message.results),
                "idempotency_key": None,
                "attempts": message.attempt - 1,
                "error": error,
            }
        )
        return Step("dead", error=error)
