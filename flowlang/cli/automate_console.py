"""Console: ``flowlang automate`` (process a stream of events) and ``flowlang replay``.

``automate`` reads events as JSON lines, each line with a bound (a line that is not an event is
reported with file:line and skipped; one that never ends, such as ``/dev/zero``, ends the
stream), and holds the journal's lock for the run. Exit status: 0; 1 when an action's dead
letter could not be written or an event failed (both stay unfinished in the journal and run
again next time); 2 for unusable input (workflow errors, two workflows with one name, a journal
in use, bad event lines). ``replay`` removes from the dead-letter file only the records it
replayed, under the lock appends take, so records appended meanwhile stay; one replay at a time
per file (``<file>.replay.lock``, held for the whole replay; a second one exits 2). A journal or
dead-letter path that is not a regular file is refused (exit 2) before a lock is made next to
it, and every line is read with a bound: a line that goes on past MAX_RECORD_SKIP bytes ends
the reading (exit 2). Errors are masked, then shortened (MAX_SHOWN_ERROR characters).
"""

from __future__ import annotations

__all__ = ["automate_from_command_line", "replay_from_command_line"]

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from flowlang.automations.dispatch import (
    Automations,
    DeadLetterStore,
    Delivery,
    DeliverySettings,
    DispatchResult,
    Journal,
    describe_error,
    file_lock,
    shown_error,
)
from flowlang.automations.locks import FileLock
from flowlang.automations.records import (
    MAX_EVENT_BYTES,
    MAX_RECORD_BYTES,
    MAX_RECORD_SKIP,
    EventError,
    LineTooLongError,
    RecordError,
    check_record_file,
    decoded_lines,
    encode_record,
)
from flowlang.automations.workflow import check_unique_names, load_workflow
from flowlang.cli.terminal import printable
from flowlang.flow.model import FlowDocumentError
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.secrets import Redactor

PROGRESS_EVERY = 1000
#: An events line is at most this long (an event of MAX_EVENT_BYTES, written with spaces).
MAX_EVENT_LINE = 2 * MAX_EVENT_BYTES
#: A line longer than this without a newline ends the stream (it is not JSON lines).
MAX_SKIP = 64 * MAX_EVENT_BYTES
#: Events read (and parsed) per hop to the reading thread.
READ_BATCH = 256


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


def _events(stream: IO[Any], label: str) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    """``(event, None)`` for each event line, ``(None, "file:line: why")`` for each bad one.
    Lines are read with a bound; one that never ends (``/dev/zero``) raises LineTooLongError."""
    for number, _, item in decoded_lines(stream, MAX_EVENT_LINE, MAX_SKIP):
        if item is None:
            yield None, f"{label}:{number}: line is longer than {MAX_EVENT_LINE} bytes"
            continue
        if isinstance(item, RecordError):
            yield None, item.where(label, number)
            continue
        if not isinstance(item.get("id"), str) or not isinstance(item.get("type"), str):
            yield None, f"{label}:{number}: an event is an object with an id and a type (text)"
            continue
        yield item, f"{label}:{number}"


def _batches(
    events: Iterator[tuple[dict[str, Any] | None, str | None]],
) -> Iterator[list[tuple[dict[str, Any] | None, str | None]]]:
    while True:
        batch = [item for _, item in zip(range(READ_BATCH), events, strict=False)]
        if not batch:
            return
        yield batch


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


def _warn(message: str) -> None:
    print(f"flowlang: {printable(message)}", file=sys.stderr, flush=True)


def _warn_shown(redactor: Redactor, message: str) -> None:
    """Warn with ``message`` as output shows errors: masked, then shortened (shown_error)."""
    _warn(str(shown_error(redactor, message)))


def _load_workflows(names: list[str]) -> list[Any]:
    """The workflows of the files named (FlowDocumentError when one has errors, or when two
    share a name)."""
    workflows = [load_workflow(name) for name in names]
    check_unique_names(workflows)
    return workflows


async def _automate(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    try:
        workflows = _load_workflows(arguments.workflows)
    except FlowDocumentError as error:
        _warn(f"the workflows have errors:\n\n{error}")
        return 2
    label = "<stdin>" if arguments.events == "-" else arguments.events
    if arguments.events == "-":
        return await _automate_stream(
            arguments, workflows, getattr(stdin, "buffer", stdin), label, out
        )
    with open(arguments.events, "rb") as stream:
        return await _automate_stream(arguments, workflows, stream, label, out)


async def _automate_stream(
    arguments: argparse.Namespace,
    workflows: list[Any],
    stream: IO[Any],
    label: str,
    out: TextIO,
) -> int:
    """Process the events of ``stream`` as they are read: a bad line is reported and skipped
    (exit 2 at the end); an action whose dead letter could not be written, or an event that
    failed, is reported (exit 1)."""
    store = DeadLetterStore(Path(arguments.dead_letter))
    journal = Journal(Path(arguments.journal))
    try:
        automations, clock = _automations(arguments, workflows, store, journal)
    except BaseException:
        journal.close()
        raise
    redactor: Redactor = automations.redactor
    counts: Counter[str] = Counter()

    def write(text: str) -> None:
        out.write(printable(redactor.text(text)))

    def report(result: DispatchResult) -> None:
        counts["events"] += 1
        counts["duplicates"] += result.duplicate
        counts["matched"] += len(result.matched)
        _tally(counts, result.deliveries)
        for message in result.errors:
            counts["failed"] += 1
            _warn_shown(redactor, f"event {result.event_id}: {message}")
        if arguments.json:  # errors masked, then shortened (never the other way round)
            line = {
                "event": result.event_id,
                "duplicate": result.duplicate,
                "matched": result.matched,
                "deliveries": [
                    vars(d) | {"error": shown_error(redactor, d.error)} for d in result.deliveries
                ],
                "errors": [shown_error(redactor, message) for message in result.errors],
            }
            out.write(json.dumps(redactor.data(line), default=str) + "\n")
            return
        for delivery in result.deliveries:
            if delivery.outcome != "delivered":
                write(
                    f"  {result.event_id} {delivery.workflow}/{delivery.action}: "
                    f"{delivery.outcome} ({shown_error(redactor, delivery.error)})\n"
                )

    def refused(message: str) -> None:
        counts["refused"] += 1
        _warn_shown(redactor, message)

    fatal: str | None = None
    async with automations:
        for problem in journal.problems:
            _warn(problem)
        resumed = await automations.resume()
        if resumed:
            write(
                f"resumed {len(resumed)} unfinished event{'s' if len(resumed) != 1 else ''} "
                f"from {arguments.journal}\n"
            )
        for result in resumed:
            report(result)
        slots = asyncio.Semaphore(max(1, arguments.concurrency))
        tasks: set[asyncio.Task[None]] = set()
        done = 0

        async def one(event: dict[str, Any], where: str) -> None:
            nonlocal done
            try:
                report(await automations.dispatch(event))
            except EventError as error:
                refused(f"{where}: {error}")
            except Exception as error:
                counts["failed"] += 1
                _warn_shown(redactor, f"{where}: {describe_error(error)}")
            finally:
                slots.release()
            done += 1
            if done % PROGRESS_EVERY == 0:
                _warn(f"{done} events")

        reader = _batches(_events(stream, label))
        try:
            while (batch := await asyncio.to_thread(next, reader, None)) is not None:
                for event, where in batch:
                    if event is None:
                        refused(str(where))
                        continue
                    await slots.acquire()
                    task = asyncio.create_task(one(event, str(where)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except ValueError as error:  # a line that never ends: stop reading, finish the rest
            fatal = f"{label}: {error}"
        await asyncio.gather(*tasks)
    write(_summary(counts, clock) + "\n")
    if counts["dead_lettered"]:
        write(
            f"dead letters kept in {arguments.dead_letter}; retry them with: flowlang replay "
            f"{arguments.dead_letter}\n"
        )
    if fatal is not None:
        _warn(fatal)
        return 2
    if counts["unsaved"] or counts["failed"]:
        _warn(
            f"{counts['unsaved']} action(s) could not be dead-lettered and {counts['failed']} "
            "event(s) failed: they stay unfinished in the journal and run again on the next run"
        )
        return 1
    return 2 if counts["refused"] else 0


def _rewrite_without(path: Path, consumed: Counter[bytes], added: list[str]) -> None:
    """Under the dead-letter lock, rewrite ``path`` without one copy of each ``consumed`` line
    (what replay took) and with ``added`` appended; whatever else is there (lines appended by
    a ``flowlang automate`` meanwhile, lines that are not records) is kept as it is."""
    with file_lock(path):
        temporary = path.with_name(f"{path.name}.{os.getpid()}.replaying")
        with path.open("rb") as source, temporary.open("wb") as target:
            while line := source.readline(MAX_RECORD_BYTES + 1):
                if line.endswith(b"\n") or len(line) <= MAX_RECORD_BYTES:
                    key = line.rstrip(b"\r\n")
                    if consumed[key] > 0:
                        consumed[key] -= 1
                    else:
                        target.write(line if line.endswith(b"\n") else line + b"\n")
                    continue
                target.write(line)  # an overlong line: copied a chunk at a time
                while rest := source.readline(MAX_RECORD_BYTES):
                    target.write(rest)
                    if rest.endswith(b"\n"):
                        break
                else:
                    target.write(b"\n")
            target.write("".join(added).encode("ascii"))
            target.flush()
            os.fsync(target.fileno())
        os.replace(temporary, path)


def _dead_letters(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | str]]:
    """``(line number, line, record or why it is not one)`` for each line the dead-letter file
    had when this began (what is appended meanwhile is left for the next replay)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        lines = decoded_lines(handle, MAX_RECORD_BYTES, MAX_RECORD_SKIP, str(path))
        for number, raw, record in lines:
            if handle.tell() > size:
                return
            if raw is None:
                yield number, b"", f"{path}:{number}: longer than {MAX_RECORD_BYTES} bytes"
            elif isinstance(record, RecordError):
                yield number, raw, record.where(str(path), number)
            elif record is not None:
                yield number, raw, record


class ReplayInProgressError(OSError):
    """Another ``flowlang replay`` is replaying this dead-letter file."""


def replay_lock(path: Path) -> FileLock:
    """Hold ``<path>.replay.lock`` for a whole replay, without waiting (ReplayInProgressError
    when it is held): one replay at a time per file, so no record is delivered twice. Appends
    take the other, short lock (``<path>.lock``) and are not held up by a replay."""
    return FileLock(
        f"{path}.replay.lock",
        wait=False,
        busy=lambda: ReplayInProgressError(
            f"dead-letter file {path} is being replayed by another flowlang replay "
            f"(one replay at a time; {path}.replay.lock is held): try again when it ends"
        ),
    )


async def _replay(arguments: argparse.Namespace, out: TextIO) -> int:
    """Replay each record, one replay at a time per file; then remove from the file exactly
    the records replayed (under the lock that appends take) and append those that failed
    again. A record that cannot be replayed is reported with its line and left in the file;
    a line that never ends stops the reading (what was replayed is still removed; exit 2)."""
    path = Path(arguments.dead_letter)
    check_record_file(path, "dead-letter file")  # before a lock is made next to it
    if not path.exists():
        raise FileNotFoundError(f"dead-letter file {path} does not exist")
    with replay_lock(path):
        return await _replay_locked(arguments, path, out)


async def _replay_locked(arguments: argparse.Namespace, path: Path, out: TextIO) -> int:
    again = DeadLetterStore()
    automations, _ = _automations(arguments, [], again)
    redactor = automations.redactor
    counts: Counter[str] = Counter()
    consumed: Counter[bytes] = Counter()
    problems = 0
    fatal: str | None = None
    async with automations:
        try:
            for number, raw, record in _dead_letters(path):
                counts["records"] += 1
                if isinstance(record, str):
                    problems += 1
                    _warn(f"{record}: skipped (left in the file)")
                    continue
                try:
                    deliveries = await automations.replay(record)
                except (ValueError, FlowDocumentError) as error:
                    problems += 1
                    message = f"{path}:{number}: cannot replay: {error} (left in the file)"
                    _warn_shown(redactor, message)
                    continue
                _tally(counts, deliveries)
                consumed[raw] += 1
        except LineTooLongError as error:
            fatal = str(error)
    if consumed or again.records:
        _rewrite_without(path, consumed, [encode_record(record) for record in again.records])
    out.write(
        redactor.text(
            f"replayed {counts['records']} records: delivered {counts['delivered']}, "
            f"dead-lettered again {counts['dead_lettered']}, skipped {counts['skipped']}\n"
        )
    )
    if fatal is not None:
        _warn(fatal)
        return 2
    return 1 if again.records or problems else 0


def automate_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang automate``: returns the exit status."""
    return asyncio.run(_automate(arguments, out, stdin))


def replay_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang replay``: retry the dead letters of a file; 1 when some fail again."""
    return asyncio.run(_replay(arguments, out))
