"""Replay of the shared dead letters (the ``{prefix}dead`` stream of a SharedStore).

:func:`replay_record` retries one record with :meth:`Automations.replay` (its action, then the
actions it stopped, each with its idempotency key) and writes the outcome back in one step:
each action delivered is settled ``delivered`` in the shared ledger; what fails again becomes
a new dead letter in the stream. :func:`replay_all` does it for every record the stream holds
when it starts: each record is first claimed (``{prefix}replaying:{entry id}``, a token of
this replay, a lease renewed while it runs), so two replays at once never send a record
twice; the new dead letters, the settlements and the removal of the record are one step
(:meth:`SharedStore.finish_replay`), so a crash before it keeps the record and a crash after
it leaves nothing to replay again."""

from __future__ import annotations

__all__ = ["ReplayCounts", "replay_all", "replay_record"]

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowlang.automations.dispatch import (
    Automations,
    DeadLetterStore,
    Delivery,
    describe_error,
    idempotency_key,
)
from flowlang.automations.executor import AttemptTask
from flowlang.distributed.shared import SharedStore
from flowlang.errors import SharedStoreError
from flowlang.flow.model import FlowDocumentError

log = logging.getLogger("flowlang.replay")

#: Seconds a replay holds its claim of a dead letter (renewed every third while it runs).
CLAIM_LEASE = 60.0


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


async def _renew_claim(store: SharedStore, entry: str, holder: str, lease: float) -> None:
    """Renew a dead letter's claim every third of ``lease`` until stopped or lost."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            if not await store.renew_dead_claim(entry, holder, lease):
                log.warning("the claim of dead letter %s lapsed during its replay", entry)
                return
        except SharedStoreError as error:
            log.warning("renewing a dead letter's claim failed: %s", error)


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
    renewal = asyncio.create_task(_renew_claim(store, entry, holder, lease))
    try:
        try:
            deliveries, added, delivered = await _replayed(automations, record, True)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewal
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
            except (ValueError, FlowDocumentError) as error:
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
