"""Replay of the shared dead letters (the ``{prefix}dead`` stream of a SharedStore).

:func:`replay_record` retries one record with :meth:`Automations.replay` (its action, then the
actions it stopped, each with its idempotency key) and writes the outcome back: each action
delivered is settled ``delivered`` in the shared ledger; what fails again becomes a new dead
letter in the stream. :func:`replay_all` does it for every record the stream holds when it
starts, removing each record only after its replay (and any new dead letter) is written, so
a crash in between keeps it.
"""

from __future__ import annotations

__all__ = ["ReplayCounts", "replay_all", "replay_record"]

import logging
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
from flowlang.flow.model import FlowDocumentError

log = logging.getLogger("flowlang.replay")


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


async def replay_record(
    automations: Automations,
    store: SharedStore,
    record: Mapping[str, Any],
    *,
    wait: bool = True,
) -> tuple[list[Delivery], list[dict[str, Any]]]:
    """Replay ``record``; settle what is delivered in the shared ledger and add what fails
    again to the shared dead letters (a retry the executor did not wait for keeps the record
    as it was, with the new error). ValueError or FlowDocumentError when the record cannot be
    replayed (nothing is written then). Returns the deliveries and the records added."""
    runner, again = replayer(automations, wait=wait)
    deliveries = await runner.replay(record)
    for used in runner.redactor.used:
        automations.redactor.add(used)
    added = list(again.records)
    for delivery in deliveries:
        if delivery.outcome == "scheduled":  # retryable, and not waited for: kept as it was
            added.append(dict(record) | {"error": delivery.error})
    for new in added:
        await store.add_dead(new)
    event = record.get("event")
    event_id = str(event["id"]) if isinstance(event, Mapping) else ""
    for delivery in deliveries:
        if delivery.outcome == "delivered":
            key = idempotency_key(event_id, delivery.workflow, delivery.action)
            await store.settle(key, "delivered", delivery.result, delivery.attempts)
    return deliveries, added


async def replay_all(
    automations: Automations, store: SharedStore, *, count: int = 100, limit: int | None = None
) -> ReplayCounts:
    """Replay the records the stream holds now, oldest first (at most ``limit``); each one
    replayed leaves the stream once its outcome is written; one that cannot be replayed is
    reported and kept."""
    counts = ReplayCounts()
    if limit is None:  # what is added meanwhile (what fails again) waits for the next replay
        limit = await store.dead_count()
    after = "-"
    last: str | None = None
    while counts.records < limit:
        batch = await store.dead_letters(after, count)
        batch = [(entry, record) for entry, record in batch if entry != last]
        if not batch:
            break
        for entry, record in batch:
            last = entry
            if counts.records >= limit:
                break
            counts.records += 1
            try:
                deliveries, _ = await replay_record(automations, store, record)
            except (ValueError, FlowDocumentError) as error:
                counts.problems += 1
                log.warning(
                    "dead letter %s cannot be replayed: %s (kept)",
                    entry,
                    automations.redactor.text(describe_error(error)),
                )
                continue
            for delivery in deliveries:
                if delivery.outcome == "delivered":
                    counts.delivered += 1
                elif delivery.outcome == "skipped":
                    counts.skipped += 1
                else:
                    counts.dead_lettered += 1
            await store.remove_dead(entry)
            counts.removed += 1
        after = last or after
    return counts
