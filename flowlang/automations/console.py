"""Console: ``flowlang automate`` (process a stream of events) and ``flowlang replay``."""

from __future__ import annotations

__all__ = ["automate_from_command_line", "replay_from_command_line"]

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from flowlang.automations.dispatch import (
    Automations,
    DeadLetterStore,
    Delivery,
    DeliverySettings,
    DispatchResult,
    Journal,
)
from flowlang.automations.workflow import load_workflow
from flowlang.runtime.recorded import load_recorded_responses

PROGRESS_EVERY = 1000


class SimulatedClock:
    """Time for offline runs: retries wait in simulated time, so a run with recorded responses
    finishes at once while still following the schedule (the summary reports the waits)."""

    def __init__(self) -> None:
        self.current = 0.0
        self.waited = 0.0

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += seconds
        self.waited += seconds


def _events(path: str, stdin: TextIO) -> list[dict[str, Any]]:
    label = "<stdin>" if path == "-" else path
    text = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{label}:{number}:{error.colno}: invalid JSON: {error.msg}") from None
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("type"), str)
        ):
            raise ValueError(
                f"{label}:{number}: an event is an object with an id and a type (text)"
            )
        events.append(item)
    return events


def _automations(
    arguments: argparse.Namespace,
    workflows: list[Any],
    store: DeadLetterStore,
    journal: Journal | None = None,
) -> tuple[Automations, SimulatedClock | None]:
    options: dict[str, Any] = {"dead_letters": store, "journal": journal}
    clock = None
    if arguments.responses:
        options["http"] = load_recorded_responses(arguments.responses)
        clock = SimulatedClock()
        options["clock"] = clock
    settings = DeliverySettings(allow_hosts=frozenset(arguments.allow_host))
    return Automations(workflows, settings=settings, **options), clock


def _tally(counts: Counter[str], deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        counts[delivery.outcome] += 1
        if delivery.outcome == "delivered" and delivery.attempts > 1:
            counts["retried"] += 1


def _summary(counts: Counter[str], clock: SimulatedClock | None) -> str:
    text = (
        f"events {counts['events']}, duplicates {counts['duplicates']}, "
        f"matched {counts['matched']}; "
        f"actions delivered {counts['delivered']} (retried {counts['retried']}), "
        f"dead-lettered {counts['dead_lettered']}, skipped {counts['skipped']}"
    )
    if clock is not None and clock.waited:
        text += f"; retries waited {clock.waited:,.0f}s of simulated time"
    return text


async def _automate(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    workflows = [load_workflow(Path(name)) for name in arguments.workflows]
    events = _events(arguments.events, stdin)
    store = DeadLetterStore(Path(arguments.dead_letter))
    journal = Journal(Path(arguments.journal))
    automations, clock = _automations(arguments, workflows, store, journal)
    counts: Counter[str] = Counter()

    def report(result: DispatchResult) -> None:
        counts["events"] += 1
        counts["duplicates"] += result.duplicate
        counts["matched"] += len(result.matched)
        _tally(counts, result.deliveries)
        if arguments.json:
            out.write(
                json.dumps(
                    {
                        "event": result.event_id,
                        "duplicate": result.duplicate,
                        "matched": result.matched,
                        "deliveries": [vars(d) for d in result.deliveries],
                    },
                    default=str,
                )
                + "\n"
            )
            return
        for delivery in result.deliveries:
            if delivery.outcome != "delivered":
                out.write(
                    f"  {result.event_id} {delivery.workflow}/{delivery.action}: "
                    f"{delivery.outcome} ({delivery.error})\n"
                )

    async with automations:
        resumed = await automations.resume()
        if resumed:
            out.write(
                f"resumed {len(resumed)} unfinished event{'s' if len(resumed) != 1 else ''} "
                f"from {arguments.journal}\n"
            )
        for result in resumed:
            report(result)
        slots = asyncio.Semaphore(max(1, arguments.concurrency))
        done = 0

        async def one(event: dict[str, Any]) -> None:
            nonlocal done
            async with slots:
                report(await automations.dispatch(event))
            done += 1
            if done % PROGRESS_EVERY == 0:
                print(f"flowlang: {done} of {len(events)} events", file=sys.stderr, flush=True)

        await asyncio.gather(*(one(event) for event in events))
    out.write(_summary(counts, clock) + "\n")
    if counts["dead_lettered"]:
        out.write(
            f"dead letters kept in {arguments.dead_letter}; retry them with: flowlang replay "
            f"{arguments.dead_letter}\n"
        )
    return 0


async def _replay(arguments: argparse.Namespace, out: TextIO) -> int:
    path = Path(arguments.dead_letter)
    records = DeadLetterStore.read(path)
    again = DeadLetterStore()
    automations, _ = _automations(arguments, [], again)
    counts: Counter[str] = Counter()
    async with automations:
        for record in records:
            _tally(counts, await automations.replay(record))
    remaining = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in again.records)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(remaining)
    os.replace(temporary, path)
    counts["events"] = len(records)
    out.write(
        f"replayed {len(records)} records: delivered {counts['delivered']}, "
        f"dead-lettered again {counts['dead_lettered']}, skipped {counts['skipped']}\n"
    )
    return 1 if again.records else 0


def automate_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang automate``: returns the exit status."""
    return asyncio.run(_automate(arguments, out, stdin))


def replay_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang replay``: retry the dead letters of a file; 1 when some fail again."""
    return asyncio.run(_replay(arguments, out))
