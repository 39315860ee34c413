"""What a worker does with one message, without Celery: accept an event, or make one delivery
attempt, against the shared store (flowlang.distributed.shared).

Each call returns a :class:`Step`: what became of the message, the messages to publish now (in
order) and, for an accept, what to confirm once they are out. The glue (Celery tasks, a test)
publishes ``step.publish``, then awaits ``step.confirm``; nothing here publishes.

accept (``flowlang.accept``): the body is checked (refused otherwise); the event is claimed in
the store: ``fanned_out`` is a duplicate; ``accepting`` (another worker holds the claim) is
scheduled again for when that claim lapses (re-checked, never dropped); a new claim matches the
workflows (one whose condition fails is reported in ``error`` and not run) and publishes one
deliver message (action 0, attempt 1) per workflow; ``confirm`` marks the event fanned out.

deliver (``flowlang.deliver``): the body is checked; its workflow is found by fingerprint among
those loaded (an unknown one, during a rolling deploy, is scheduled again in
``unknown_workflow_retry`` seconds, and after ``unknown_workflow_limit`` seconds is dead-lettered
as "workflow changed"); an action the ledger shows settled is not sent again, and its next action
is published with the recorded result; else the action's lease is taken (or the message
scheduled again when the lease lapses) and one attempt made (:meth:`Automations.attempt_once`):

- delivered: the ledger is written, the lease given back, the next action published (with this
  result, masked) — ledger first, so a redelivered message after a crash re-publishes the next
  action without sending this one again;
- retry: the next attempt is scheduled at the time the outcome says, the lease given back;
- dead: the dead letter (``flowlang.deadletter/1``, with ``then`` the actions a
  ``stop_on_failure`` stopped) is added, then the ledger settles the action as
  ``dead_lettered``; the next action is published unless ``stop_on_failure``.

Secrets never reach a message or the store: results and errors are masked with the secrets the
workflow used (as the local journal keeps them). A body that is not a message never raises: it
is ``Step("refused", error=...)``. :class:`~flowlang.errors.SharedStoreError` (the store cannot
be reached) propagates: nothing was decided, and the message should be delivered again.

replay (``flowlang.replay``, beyond Interface B): a dead letter whose workflow version is loaded
here becomes a deliver message for its action again (its ledger entry forgotten first).

Beyond Interface B (compatible): :meth:`Deliverer.replay` (outcome ``replayed`` or
``refused``); the keyword ``unknown_workflow_retry`` (60 s); a deliver body
scheduled again for an unknown workflow carries ``"unknown_since"`` (when it was first found
unknown: the limit counts from there; DeliverMessage ignores other fields).
"""

from __future__ import annotations

__all__ = ["UNKNOWN_WORKFLOW_RETRY", "Deliverer", "Step"]

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
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
from flowlang.distributed.shared import SharedStore
from flowlang.errors import SharedStoreError
from flowlang.expr.values import plain_json

log = logging.getLogger("flowlang.distributed")

#: Seconds before a deliver message for a workflow version not loaded here is tried again.
UNKNOWN_WORKFLOW_RETRY = 60.0
#: The body field that says since when a deliver message's workflow was unknown.
UNKNOWN_SINCE = "unknown_since"


@dataclass
class Step:
    """What one message came to: ``outcome`` is ``fanned_out``, ``duplicate``, ``deferred``,
    ``delivered``, ``retry``, ``dead``, ``skipped``, ``refused``, ``settled_before``,
    ``done`` or ``replayed``; ``publish`` the (task name, body) messages to publish now, in
    order; ``confirm`` what to await once they are all published; ``error`` masked."""

    outcome: str
    publish: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    confirm: Callable[[], Awaitable[None]] | None = None
    error: str | None = None


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

    def _refused(self, what: str, problem: BaseException) -> Step:
        error = self._shown(f"{what}: {problem}")
        log.warning("refused a %s: %s", what, error)
        return Step("refused", error=error)

    # --- flowlang.accept --------------------------------------------------------------------

    async def accept(self, body: Any) -> Step:
        """Check an accept message, claim its event and fan it out (see the module docstring)."""
        settings = self.automations.settings
        try:
            message = AcceptMessage.from_json(
                body, max_depth=settings.max_event_depth, max_bytes=settings.max_event_bytes
            )
        except Exception as problem:
            return self._refused("accept message", problem)
        event = message.event
        event_id = str(event["id"])
        state, lapse = await self.store.claim_event(event_id, self.owner, self.accept_lease)
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

        async def confirm() -> None:
            await self.store.mark_fanned_out(event_id)

        error = self._shown("; ".join(errors)) if errors else None
        return Step("fanned_out", publish, confirm, error)

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
        settings = self.automations.settings
        try:
            message = DeliverMessage.from_json(
                body, max_depth=settings.max_event_depth, max_bytes=settings.max_event_bytes
            )
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
        except Exception as problem:  # a bug here must not lose the message silently
            error = self._shown(describe_error(problem))
            log.error("deliver of %s failed unexpectedly: %s", workflow.name, error)
            return Step("refused", error=error)

    async def _deliver(self, workflow: CompiledWorkflow, message: DeliverMessage) -> Step:
        automations, store = self.automations, self.store
        action = workflow.actions[message.action]
        event_id = message.event_id
        key = idempotency_key(event_id, workflow.name, action.id)
        earlier = await store.settled(key)
        if earlier is None:
            lapse = await store.take_lease(key, self.owner, self.lease)
            if lapse is not None:
                await store.schedule(DELIVER_TASK, message.to_json(), self._now() + lapse)
                return Step("deferred")
            earlier = await store.settled(key)  # settled while we took the lease
            if earlier is not None:
                await store.release_lease(key, self.owner)
        if earlier is not None:
            return self._after_settled(workflow, message, earlier)
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
            await store.settle(key, "delivered", shown, message.attempt, at=self._now())
            await store.release_lease(key, self.owner)
            return Step("delivered", self._next(workflow, message, {action.id: shown}))
        if isinstance(outcome, Dead):
            delivery = Delivery(
                workflow.name, action.id, "dead_lettered", message.attempt, outcome.error
            )
            stop = bool(action.fields["stop_on_failure"])
            remaining = [later.id for later in workflow.actions[message.action + 1 :]]
            record = automations.dead_letter_record(
                workflow, action, message.event, message.results, redactor, delivery
            ) | {"then": remaining if stop else []}
            await store.add_dead(record)
            await store.settle(key, "dead_lettered", None, message.attempt, at=self._now())
            await store.release_lease(key, self.owner)
            error = self._shown(outcome.error)
            if stop and remaining:
                error += f" (stopped {', '.join(remaining)})"
            publish = [] if stop else self._next(workflow, message, {})
            return Step("dead", publish, error=error)
        await store.schedule(DELIVER_TASK, message.next_attempt().to_json(), outcome.at)
        await store.release_lease(key, self.owner)
        return Step("retry", error=self._shown(outcome.error))

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
        """Replay a dead letter through the workers: its action's ledger entry is forgotten and
        a deliver message for it (attempt 1, with the record's results) is published; the
        actions after it follow as usual (those already settled are not sent again). Refused
        when ``record`` is not a dead letter or its workflow version is not loaded here
        (``flowlang replay`` from the dead letter's own text can run it)."""
        settings = self.automations.settings
        try:
            message = self._replayed(record, settings.max_event_depth)
        except Exception as problem:
            return self._refused("dead letter", problem)
        workflow = self._by_fingerprint[message.fingerprint]
        action = workflow.actions[message.action]
        await self.store.unsettle(idempotency_key(message.event_id, workflow.name, action.id))
        return Step("replayed", [(DELIVER_TASK, message.to_json())])

    def _replayed(self, record: Any, depth: int) -> DeliverMessage:
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
        if record.get("action") not in names:
            raise ValueError(f"its workflow has no action {str(record.get('action'))[:100]!r}")
        body = {
            "v": MESSAGE_VERSION,
            "event": record.get("event"),
            "workflow": workflow.name,
            "fingerprint": workflow.fingerprint,
            "action": names.index(record["action"]),
            "attempt": 1,
            "results": record.get("results") or {},
        }
        return DeliverMessage.from_json(
            body, max_depth=depth, max_bytes=self.automations.settings.max_event_bytes
        )

    def _next(
        self, workflow: CompiledWorkflow, message: DeliverMessage, result: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The next action's message (none after the last)."""
        if message.action + 1 >= len(workflow.actions):
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
        if now - since < self.unknown_workflow_limit:
            again = message.to_json() | {UNKNOWN_SINCE: since}
            await self.store.schedule(DELIVER_TASK, again, now + self.unknown_workflow_retry)
            return Step("deferred", error=self._shown(f"{what} is not loaded{loaded}"))
        error = self._shown(
            f"workflow changed: {what} was not loaded for {now - since:.0f} s{loaded}"
        )
        redactor = self.automations.redactor
        await self.store.add_dead(
            {
                "format": DEAD_LETTER_FORMAT,
                "recorded_at": now,
                "workflow": message.workflow,
                "workflow_fingerprint": message.fingerprint,
                "workflow_file": None,
                "workflow_source": None,
                "event": redactor.data(message.event),
                "action": None,
                "action_index": message.action,
                "then": [],
                "results": redactor.data(message.results),
                "idempotency_key": None,
                "attempts": message.attempt - 1,
                "error": error,
            }
        )
        return Step("dead", error=error)
