"""Replay of the shared dead letters (the ``{prefix}dead`` stream of a SharedStore).

:func:`replay_record` retries one record with :meth:`Automations.replay` (its action, then the
actions it stopped, each with its idempotency key) and writes the outcome back in one step:
each action delivered is settled ``delivered`` in the shared ledger; what fails again becomes
a new dead letter in the stream. :func:`replay_all` does it for every record the stream holds
when it starts: each record is first claimed (``{prefix}replaying:{entry id}``, a token of
this replay, a lease renewed while it runs), so two replays at once never send a record
twice; the new dead letters, the settlements and the removal of the record are one step
(:meth:`SharedStore.finish_replay`), so a crash before it keeps the record and a crash after
it leaves nothing to replay again.

:func:`replay_leased` is a worker's replay of one record (a ``flowlang.replay`` message whose
workflow version the worker does not load): under the lease of its action's idempotency key,
after the ledger says the action is not delivered yet, so a redelivered message (a worker
that died before its ack) or a record kept twice never sends a delivered action again; the
outcome is written with a few tries (a store blip after the send does not make it a
candidate for another replay). The ledger entry is marked ``replaying`` before the send
(:meth:`SharedStore.start_replay`) and the mark outlives the lease: a replay whose outcome
was never written (the store down for every try, the worker dead) is not sent again by a
redelivery, which keeps the record as a dead letter saying its outcome is unknown."""

from __future__ import annotations

__all__ = ["ReplayCounts", "replay_all", "replay_leased", "replay_record"]

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowlang.automations.dispatch import (
    DEAD_LETTER_FORMAT,
    Automations,
    DeadLetterStore,
    Delivery,
    describe_error,
    idempotency_key,
)
from flowlang.automations.executor import AttemptTask
from flowlang.automations.records import MAX_RECORD_BYTES, check_event
from flowlang.automations.workflow import load_workflow_text
from flowlang.distributed.deliverer import Later, renew_every
from flowlang.distributed.shared import SharedStore
from flowlang.errors import FlowError, SharedStoreError

log = logging.getLogger("flowlang.replay")

#: Seconds a replay holds its claim of a dead letter (renewed every third while it runs).
CLAIM_LEASE = 60.0
#: Tries of the write of a worker's replay outcome (the action was sent: worth insisting),
#: and the seconds between them.
FINISH_TRIES = 3
FINISH_PAUSE = 0.5
#: The error of a dead letter kept because a replay of its action started and never wrote
#: its outcome (replay_leased).
UNKNOWN_OUTCOME = (
    "a replay of this action started and its outcome was never written (the shared store "
    "failed after the send, or the worker stopped): it may have been delivered, so it was "
    "not sent again; check with the receiver, then replay this dead letter to send it again "
    "(the same Idempotency-Key)"
)


class NoWaiting:
    """An executor that never waits: a retryable failure during a replay ends the replay of
    that record (it stays a dead letter), instead of sleeping in a worker."""

    async def schedule(self, task: AttemptTask) -> bool:
        return False


@dataclass
class ReplayCounts:
    """What a replay came to."""

    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    #: records that cannot be replayed (not a record, a workflow that does not load): kept
    problems: int = 0
    #: records replayed and removed from the stream
    removed: int = 0
    #: records another replay held (or replayed meanwhile): left to it
    held: int = 0


def replayer(automations: Automations, *, wait: bool = True) -> tuple[Automations, DeadLetterStore]:
    """Automations sharing ``automations``' HTTP pool, settings and secrets, with a fresh
    dead-letter store (what fails again) and, unless ``wait``, an executor that never waits."""
    again = DeadLetterStore()
    options: dict[str, Any] = {} if wait else {"executor": NoWaiting()}
    return (
        Automations(
            [],
            settings=automations.settings,
            http=automations.http,
            secrets=automations.secrets,
            clock=automations.clock,
            dead_letters=again,
            on_attempt=automations.on_attempt,
            **options,
        ),
        again,
    )


async def _replayed(
    automations: Automations, record: Mapping[str, Any], wait: bool
) -> tuple[list[Delivery], list[dict[str, Any]], list[tuple[str, Any, int]]]:
    """Replay ``record`` (nothing written): its deliveries, the dead letters to add and the
    ``(idempotency key, result, attempts)`` of each action delivered."""
    runner, again = replayer(automations, wait=wait)
    deliveries = await runner.replay(record)
    for used in runner.redactor.used:
        automations.redactor.add(used)
    added = list(again.records)
    for delivery in deliveries:
        if delivery.outcome == "scheduled":  # retryable, and not waited for: kept as it was
            added.append(dict(record) | {"error": delivery.error})
    event = record.get("event")
    event_id = str(event["id"]) if isinstance(event, Mapping) else ""
    delivered = [
        (idempotency_key(event_id, d.workflow, d.action), d.result, d.attempts)
        for d in deliveries
        if d.outcome == "delivered"
    ]
    return deliveries, added, delivered


async def replay_record(
    automations: Automations,
    store: SharedStore,
    record: Mapping[str, Any],
    *,
    wait: bool = True,
) -> tuple[list[Delivery], list[dict[str, Any]]]:
    """Replay ``record``; settle what is delivered in the shared ledger and add what fails
    again to the shared dead letters, in one step (a retry the executor did not wait for
    keeps the record as it was, with the new error). ValueError or FlowDocumentError when the
    record cannot be replayed (nothing is written then). Returns the deliveries and the
    records added."""
    deliveries, added, delivered = await _replayed(automations, record, wait)
    await store.finish_replay(added, delivered)
    return deliveries, added


def first_key(automations: Automations, record: Mapping[str, Any]) -> str:
    """The idempotency key of the action a dead-letter record replays first, once the record
    passes the checks :meth:`Automations.replay` makes before any request (its event, its
    workflow text loading, its action in it); ValueError or FlowError (nothing is sent)."""
    if not isinstance(record, Mapping) or record.get("format") != DEAD_LETTER_FORMAT:
        raise ValueError("this is not a flowlang dead-letter record")
    event = record.get("event")
    workflow, action = record.get("workflow"), record.get("action")
    if not isinstance(event, Mapping) or not isinstance(event.get("id"), (str, int)):
        raise ValueError("its event has no id")
    if not isinstance(workflow, str) or not isinstance(action, str):
        raise ValueError("its workflow or action is not a name")
    source, filename = record.get("workflow_source"), record.get("workflow_file")
    if not isinstance(source, str) or (filename is not None and not isinstance(filename, str)):
        raise ValueError("its workflow_source or workflow_file is not text")
    settings = automations.settings
    check_event(event, settings.max_event_depth, MAX_RECORD_BYTES)
    loaded = load_workflow_text(source, name=filename, allow_hosts=settings.allow_hosts)
    if loaded.name != workflow or action not in [step.id for step in loaded.actions]:
        raise ValueError("its workflow text does not hold its workflow and action")
    return idempotency_key(str(event["id"]), workflow, action)


@dataclass
class Leased:
    """What :func:`replay_leased` came to: ``state`` ``replayed`` (``deliveries`` made,
    ``added`` dead letters), ``settled_before`` (the ledger says the action is settled:
    nothing sent; ``outcome`` says how), ``held`` (another replay or attempt holds the
    action's lease for ``seconds`` more: nothing sent) or ``unknown`` (a replay of it started
    earlier and never wrote its outcome: nothing sent, the record kept as a dead letter saying
    so, in ``added``)."""

    state: str
    deliveries: list[Delivery]
    added: list[dict[str, Any]]
    outcome: str = ""
    seconds: float = 0.0
    #: the outcome could not be written (said; the action is not sent again by this record)
    error: str = ""


async def replay_leased(
    automations: Automations,
    store: SharedStore,
    record: Mapping[str, Any],
    *,
    holder: str,
    lease: float,
) -> Leased:
    """One try of ``record`` (nothing waited for) under the lease of its first action's
    idempotency key, taken by ``holder`` for ``lease`` seconds (renewed every third while it
    runs, given back at the end): only when the ledger's entry is absent or
    ``dead_lettered``, which is then marked ``replaying`` by ``holder`` in the same step
    (:meth:`SharedStore.start_replay`). The outcome is written as :func:`replay_record`
    does, replacing the mark, up to FINISH_TRIES times on a store error (the action was
    sent); when that still fails the lease is kept until it lapses and the error raised (the
    message is requeued, and its redelivery waits for the lease).

    The choice when the mark is found (a replay of this action started and did not finish:
    the worker stopped, or its outcome could not be written): nothing is sent, and the
    record is kept as a dead letter again, its error saying the outcome is unknown
    (UNKNOWN_OUTCOME), its ledger entry ``dead_lettered`` again (in one step, only while the
    mark is still there). The action may well have been delivered; sending it again on a
    redelivery would rely on the receiver honouring the Idempotency-Key, and a store that
    keeps failing would send it once per redelivery. Never sending it a second time on our
    own, and leaving the decision to the operator's next replay (which sends it again with
    the same key), keeps the promise that a redelivered message sends nothing twice, at the
    cost of a dead letter to look at after a crash or a long store outage mid-replay. (A copy
    of the message after that keep, which only a worker dying between the keep and its ack
    makes, finds the entry ``dead_lettered`` and replays it: at least once, the same key.)

    ValueError or FlowError when the record cannot be replayed (:func:`first_key`, before the
    lease: nothing sent); SharedStoreError before the send (nothing sent, the lease given
    back). Whatever is raised once the replay started keeps the lease (it lapses)."""
    key = first_key(automations, record)
    left = await store.take_lease(key, holder, lease)
    if left is not None:
        return Leased("held", [], [], seconds=left)
    sent = False
    try:
        state, marker = await store.start_replay(key, holder)
        if state == "replaying":
            return await _unknown(store, record, key, marker)
        if state != "started":
            return Leased("settled_before", [], [], outcome=state)
        renewal = Later(
            lease / 3,
            lambda: renew_every(
                lambda: store.renew_lease(key, holder, lease),
                lease / 3,
                "the lease of a replayed action lapsed during its replay",
                "renewing a replayed action's lease failed",
            ),
        )
        try:
            sent = True
            deliveries, added, delivered = await _replayed(automations, record, False)
        finally:
            await renewal.stop()
        error = await _finish(store, added, delivered, (key, holder))
        with contextlib.suppress(SharedStoreError):  # else it lapses: the ledger is written
            await store.release_lease(key, holder)
        return Leased("replayed", deliveries, added, error=error)
    finally:
        if not sent:
            with contextlib.suppress(SharedStoreError):
                await store.release_lease(key, holder)


async def _unknown(store: SharedStore, record: Mapping[str, Any], key: str, marker: str) -> Leased:
    """A replay of ``key`` by ``marker`` started and never wrote its outcome: keep ``record``
    as a dead letter saying so, in place of the mark (nothing sent). When the mark went
    meanwhile (that replay wrote its outcome after all), nothing is kept: ``settled_before``.
    A mark that is no holder (not ours) is ValueError: the record is refused and kept."""
    kept = dict(record) | {"error": UNKNOWN_OUTCOME}
    log.error(
        "a replay of %s started earlier and never wrote its outcome: not sent again, kept as "
        "a dead letter",
        key,
    )
    if await store.finish_replay([kept], [], replayed=(key, marker)) != "ok":
        return Leased("settled_before", [], [], outcome="replayed meanwhile")
    return Leased("unknown", [], [kept], outcome="replaying")


async def _finish(
    store: SharedStore,
    added: list[dict[str, Any]],
    delivered: list[tuple[str, Any, int]],
    replayed: tuple[str, str],
) -> str:
    """Write a replay's outcome (after its send) in place of its ``replaying`` mark: a store
    error is tried again, up to FINISH_TRIES times, then raised (a try whose reply was lost
    leaves the next one ``lost``: nothing added twice); ValueError (nothing can be written)
    is returned as the error, said, instead of raised: the action was sent, the record must
    not be kept (the mark stays: the action is not sent again)."""
    for tried in range(1, FINISH_TRIES + 1):
        try:
            await store.finish_replay(added, delivered, replayed=replayed)
            return ""
        except SharedStoreError as error:
            if tried == FINISH_TRIES:
                raise
            log.warning("writing a replay's outcome failed (tried again): %s", error)
            await asyncio.sleep(FINISH_PAUSE)
        except ValueError as error:
            log.error("a replay's outcome cannot be written (its action was sent): %s", error)
            return f"its outcome cannot be written: {error}"
    return ""  # not reached


async def _replay_claimed(
    automations: Automations,
    store: SharedStore,
    entry: str,
    record: Mapping[str, Any],
    lease: float,
) -> tuple[str, list[Delivery]]:
    """Replay one dead letter under a claim of its own: ``(state, deliveries)``, state
    ``held`` or ``gone`` (not replayed here), ``ok`` or ``lost`` (replayed; ``lost``: its claim
    lapsed and another replay took it, so only the settlements were written). ValueError or
    FlowDocumentError (claim given back, nothing written) when it cannot be replayed."""
    holder = f"replay:{uuid.uuid4().hex}"
    state = await store.claim_dead(entry, holder, lease)
    if state != "claimed":
        return state, []
    renewal = Later(
        lease / 3,
        lambda: renew_every(
            lambda: store.renew_dead_claim(entry, holder, lease),
            lease / 3,
            f"the claim of dead letter {entry} lapsed during its replay",
            "renewing a dead letter's claim failed",
        ),
    )
    try:
        try:
            deliveries, added, delivered = await _replayed(automations, record, True)
        finally:
            await renewal.stop()
        state = await store.finish_replay(added, delivered, entry_id=entry, holder=holder)
    except BaseException:
        with contextlib.suppress(SharedStoreError):
            await store.release_dead_claim(entry, holder)
        raise
    if state == "lost":
        log.warning(
            "the claim of dead letter %s was lost during its replay: its deliveries are "
            "settled, the dead letter is left to the replay that holds it",
            entry,
        )
    return state, deliveries


async def replay_all(
    automations: Automations,
    store: SharedStore,
    *,
    count: int = 100,
    limit: int | None = None,
    lease: float = CLAIM_LEASE,
) -> ReplayCounts:
    """Replay the records the stream holds now, oldest first (at most ``limit``); each one
    replayed leaves the stream once its outcome is written (in one step with what failed
    again); one that cannot be replayed is reported and kept. Each record is claimed for
    ``lease`` seconds (renewed while it is replayed): two replays at once never replay the
    same record; one another replay holds is left to it (counted in ``held``)."""
    counts = ReplayCounts()
    newest = await store.last_dead()  # what is added meanwhile waits for the next replay
    if newest is None:
        return counts
    after = "-"
    while limit is None or counts.records < limit:
        batch = await store.dead_letters(after, count)
        if not batch:
            break
        for entry, record in batch:
            after = entry
            if _after(entry, newest) or (limit is not None and counts.records >= limit):
                return counts
            try:
                state, deliveries = await _replay_claimed(automations, store, entry, record, lease)
            except (ValueError, FlowError) as error:
                counts.records += 1
                counts.problems += 1
                log.warning(
                    "dead letter %s cannot be replayed: %s (kept)",
                    entry,
                    automations.redactor.text(describe_error(error)),
                )
                continue
            if state in ("held", "gone"):
                counts.held += 1
                continue
            counts.records += 1
            for delivery in deliveries:
                if delivery.outcome == "delivered":
                    counts.delivered += 1
                elif delivery.outcome == "skipped":
                    counts.skipped += 1
                else:
                    counts.dead_lettered += 1
            if state == "ok":
                counts.removed += 1
    return counts


def _after(entry: str, newest: str) -> bool:
    """Whether stream id ``entry`` comes after ``newest``."""
    first, _, second = entry.partition("-")
    last, _, seq = newest.partition("-")
    return (int(first), int(second)) > (int(last), int(seq))
