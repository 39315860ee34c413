"""Console: ``flowlang automate`` (process a stream of events) and ``flowlang replay``.

``automate`` reads events as JSON lines as they arrive (:mod:`flowlang.cli.event_stream`; a line
that is not an event is reported with file:line and skipped; one that never ends, such as
``/dev/zero``, ends the stream), and keeps what it does in the store (``--store``, an SQLite
file several processes may share: :mod:`flowlang.automations.store`); it takes over the open
events of processes that died, at start and every TAKEOVER_INTERVAL seconds. Results go to
standard output (text, or JSON lines with ``--json``: one per event and a summary line last);
warnings, notes, ``-v``'s attempts and the progress line go to standard error.

Exit status (both commands): 0 success; 1 the work found problems (an action dead-lettered,
an event failed, a dead letter that could not be written; for ``replay``, records that remain);
2 bad usage or unusable input (workflow errors, two workflows with one name, an unusable
store, bad event lines, an unusable ``--ca-file``); 130 interrupted (Ctrl-C): the store keeps
everything not finished, and the same command resumes.

``replay`` of a store is in :mod:`flowlang.cli.store_console`. ``replay`` of a JSON-lines file
removes from it only the records it replayed, under the lock appends take, so records appended
meanwhile stay; one replay at a time per file (``<file>.replay.lock``, held for the whole
replay; a second one exits 2). A dead-letter path that is not a regular file is refused
(exit 2) before a lock is made next to it, and every line is read with a bound: a line that
goes on past MAX_RECORD_SKIP bytes ends the reading (exit 2). Errors are masked, then
shortened (MAX_SHOWN_ERROR characters).
"""

from __future__ import annotations

__all__ = [
    "TAKEOVER_INTERVAL",
    "automate_from_command_line",
    "deadletters_from_command_line",
    "replay_from_command_line",
]

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import ssl
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from flowlang.automations.actions import Providers, check_provider_url
from flowlang.automations.dispatch import (
    Attempt,
    Automations,
    DeadLetterStore,
    Delivery,
    DeliverySettings,
    DispatchResult,
    describe_error,
    file_lock,
    shown_error,
)
from flowlang.automations.locks import FileLock
from flowlang.automations.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_SKIP,
    EventError,
    LineTooLongError,
    RecordError,
    check_record_file,
    decoded_lines,
    encode_record,
)
from flowlang.automations.store import LocalStore, is_store_file
from flowlang.automations.workflow import check_unique_names, load_workflow
from flowlang.cli.automate_progress import Progress
from flowlang.cli.automations import PROVIDER_OPTIONS
from flowlang.cli.event_stream import (
    DescriptorLines,
    EventItem,
    EventReader,
    opened_events,
    read_events,
    readable_lines,
)
from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)
from flowlang.cli.store_console import deadletters_from_command_line, replay_store
from flowlang.cli.terminal import Colours, printable
from flowlang.cli.trust import trusted_authorities
from flowlang.errors import ReplayInProgressError
from flowlang.flow.model import FlowDocumentError
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.secrets import Redactor


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


#: Seconds between two looks for open events of processes that died (the look is one indexed
#: query; taking over is rare).
TAKEOVER_INTERVAL = 10.0


def _automations(
    arguments: argparse.Namespace,
    workflows: list[Any],
    dead_letters: DeadLetterStore,
    store: LocalStore | None = None,
    on_attempt: Any = None,
) -> tuple[Automations, SimulatedClock | None]:
    """The automations of a run: recorded responses and simulated time with ``--responses``,
    else the network with the certificate authorities of ``--ca-file``."""
    ssl_context: ssl.SSLContext | None = trusted_authorities(arguments.ca_file)
    options: dict[str, Any] = {
        "dead_letters": dead_letters,
        "store": store,
        "on_attempt": on_attempt,
    }
    clock: SimulatedClock | None = None
    if arguments.responses:
        options["http"] = load_recorded_responses(arguments.responses)
        clock = SimulatedClock()
    if clock is not None:
        options["clock"] = clock
    allow_hosts = frozenset(arguments.allow_host)
    settings = DeliverySettings(
        allow_hosts=allow_hosts, providers=_providers(arguments, allow_hosts)
    )
    automations = Automations(workflows, settings=settings, ssl_context=ssl_context, **options)
    return automations, clock


def _providers(arguments: argparse.Namespace, allow_hosts: frozenset[str]) -> Providers:
    """The providers' base URLs: each ``--*-url`` option, else its environment variable, else
    the provider's own (ValueError naming the option or variable: a usage error)."""
    providers = Providers.from_environment(os.environ, allow_hosts=allow_hosts)
    changes = {
        field: check_provider_url(option, value, allow_hosts=allow_hosts)
        for field, (option, _) in PROVIDER_OPTIONS.items()
        if (value := getattr(arguments, field, None))
    }
    return dataclasses.replace(providers, **changes)


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
        text += f"; waited {clock.waited:,.0f}s of simulated time (retry delays, speech polling)"
    return text


#: The counts of the JSON summary line, in order.
SUMMARY_COUNTS = (
    "events",
    "duplicates",
    "matched",
    "delivered",
    "retried",
    "dead_lettered",
    "skipped",
    "unsaved",
    "failed",
    "refused",
)


def _warn(message: str, progress: Progress | None = None) -> None:
    if progress is not None:
        progress.clear()
    print(f"flowlang: {printable(message)}", file=sys.stderr, flush=True)


def _warn_shown(redactor: Redactor, message: str, progress: Progress | None = None) -> None:
    """Warn with ``message`` as output shows errors: masked, then shortened (shown_error), on
    one line (it quotes outside text)."""
    _warn(printable(str(shown_error(redactor, message)), one_line=True), progress)


def _load_workflows(names: list[str], allow_hosts: list[str]) -> list[Any]:
    """The workflows of the files named (FlowDocumentError when one has errors, or when two
    share a name); a plain http endpoint is an error unless its host is in ``allow_hosts``."""
    workflows = [load_workflow(name, allow_hosts=allow_hosts) for name in names]
    check_unique_names(workflows)
    return workflows


async def _automate(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    try:
        workflows = _load_workflows(arguments.workflows, arguments.allow_host)
    except FlowDocumentError as error:
        _warn(f"the workflows have errors:\n\n{error}")
        return EXIT_BAD_INPUT
    trusted_authorities(arguments.ca_file)  # an unusable file is a usage error before any work
    with opened_events(arguments.events, stdin) as (stream, label):
        return await _AutomateRun(arguments, workflows, out).process(stream, label)


class _AutomateRun:
    """One ``flowlang automate`` run: dispatches events, reports them, keeps the counts."""

    def __init__(self, arguments: argparse.Namespace, workflows: list[Any], out: TextIO) -> None:
        self.arguments = arguments
        self.workflows = workflows
        self.out = out
        self.quiet: bool = arguments.quiet
        self.counts: Counter[str] = Counter()
        self.colours = Colours.for_stream(out)
        self.progress = Progress(
            sys.stderr,
            enabled=not self.quiet and _is_terminal(sys.stderr),
            real_time=not arguments.responses,
        )
        self.redactor = Redactor()
        self.request_log: Any = None
        #: What ended the run from inside an event's task (output that cannot be written).
        self.failure: BaseException | None = None
        #: Whether events taken over from a process that died are being finished.
        self.resuming = False

    # --- output ------------------------------------------------------------------------------

    def write(self, text: str, painted: str = "") -> None:
        """Write ``text`` to standard output, masked and made printable: each of its lines stays
        one line (a newline inside outside text is escaped by the caller's one-line pieces).
        ``painted`` (colour codes around text already made safe) is written as is before it."""
        if _is_terminal(self.out):
            self.progress.clear()
        self.out.write(painted + printable(self.redactor.text(text)))

    def note(self, text: str) -> None:
        """A note about the run (not with -q): on standard output, or standard error with
        --json (standard output has only JSON lines then)."""
        if self.quiet:
            return
        if self.arguments.json:
            _warn(self.redactor.text(text), self.progress)
        else:
            self.write(text + "\n")

    def warn(self, message: str) -> None:
        _warn_shown(self.redactor, message, self.progress)  # one line: outside text in it

    def attempt(self, attempt: Attempt) -> None:
        """Every delivery attempt: progress notes its retry; ``-v`` writes a line on standard
        error."""
        self.progress.attempted(attempt)
        if not self.arguments.verbose:
            return
        text = f"{attempt.event_id} {attempt.workflow}/{attempt.action}: attempt {attempt.number} "
        text += attempt.outcome
        if attempt.error:
            text += f" ({shown_error(self.redactor, attempt.error)})"
        if attempt.retry_in is not None:
            text += f"; next attempt in {attempt.retry_in:,.0f}s"
        _warn(printable(text, one_line=True), self.progress)

    def report(self, result: DispatchResult) -> None:
        counts, redactor = self.counts, self.redactor
        if isinstance(self.request_log, list):
            self.request_log.clear()  # memory stays bounded on a stream that never ends
        counts["events"] += 1
        counts["duplicates"] += result.duplicate
        counts["matched"] += len(result.matched)
        _tally(counts, result.deliveries)
        self.progress.done += 1
        self.progress.event_done(result.event_id)
        self.progress.delivered = counts["delivered"]
        self.progress.dead_lettered = counts["dead_lettered"]
        for message in result.errors:
            counts["failed"] += 1
            self.warn(f"event {result.event_id}: {message}")
        if self.arguments.json:  # errors masked, then shortened (never the other way round)
            line = {
                "kind": "event",
                "event": result.event_id,
                "duplicate": result.duplicate,
                "matched": result.matched,
                "deliveries": [
                    vars(d) | {"error": shown_error(redactor, d.error)} for d in result.deliveries
                ],
                "errors": [shown_error(redactor, message) for message in result.errors],
            }
            self.out.write(json.dumps(redactor.data(line), default=str) + "\n")
            self.out.flush()  # a line per event as it ends, also into a pipe
            return
        for delivery in result.deliveries:
            if delivery.outcome != "delivered":
                # Ids, names and errors come from events, documents and servers: each is one
                # line; only the outcome is painted, after the rest was made safe.
                where = f"  {result.event_id} {delivery.workflow}/{delivery.action}: "
                error = str(shown_error(redactor, delivery.error))
                safe_where = printable(redactor.text(where), one_line=True)
                outcome = self.colours.paint(delivery.outcome, "bad")
                self.write(f" ({printable(error, one_line=True)})\n", safe_where + outcome)
        if result.deliveries:
            self.out.flush()

    def refused(self, message: str) -> None:
        self.counts["refused"] += 1
        self.warn(message)

    def finish(self, clock: SimulatedClock | None, fatal: str | None) -> int:
        """Write the summary; the exit status."""
        counts, arguments = self.counts, self.arguments
        if fatal is not None:
            _warn(fatal)
            status = EXIT_BAD_INPUT
        elif counts["refused"]:
            status = EXIT_BAD_INPUT
        elif counts["unsaved"] or counts["failed"] or counts["dead_lettered"]:
            status = EXIT_FAILED
        else:
            status = EXIT_OK
        if counts["unsaved"] or counts["failed"]:
            _warn(
                f"{counts['unsaved']} action(s) could not be dead-lettered and {counts['failed']} "
                "event(s) failed: they stay unfinished in the store and run again on the next run"
            )
        dead_letters = arguments.store if counts["dead_lettered"] else None
        if arguments.json:
            line: dict[str, Any] = {"kind": "summary"}
            line |= {name: counts[name] for name in SUMMARY_COUNTS}
            line["simulated_wait"] = clock.waited if clock is not None else None
            line["dead_letter_file"] = dead_letters
            line["exit"] = status
            self.out.write(json.dumps(line) + "\n")
        elif not self.quiet:
            self.write(_summary(counts, clock) + "\n")
        if dead_letters is not None:
            self.note(
                f"dead letters kept in {dead_letters}; retry them with: flowlang replay "
                f"{dead_letters}"
            )
        return status

    # --- the run -----------------------------------------------------------------------------

    async def process(self, stream: IO[Any], label: str) -> int:
        """Process the events of ``stream`` as they are read, then write the summary."""
        arguments = self.arguments
        _providers(arguments, frozenset(arguments.allow_host))  # a bad URL: before the store
        store = LocalStore(Path(arguments.store))
        try:
            dead_letters = DeadLetterStore(store=store)
            automations, clock = _automations(
                arguments, self.workflows, dead_letters, store, self.attempt
            )
            self.redactor = automations.redactor
            self.progress.now = automations.clock.now
            if arguments.responses:  # the recorded sender's log of requests: not kept by a run
                self.request_log = getattr(automations.http, "requests", None)
            async with automations:
                self.progress.start()
                try:
                    fatal = await self._run(automations, stream, label)
                finally:
                    await self.progress.stop()
        finally:
            store.close()
        return self.finish(clock, fatal)

    def _resumed(self, results: list[DispatchResult], automations: Automations) -> None:
        """Report events taken over from the store and finished here."""
        for problem in automations.problems:
            _warn(problem)
        automations.problems.clear()
        if results:
            plural = "s" if len(results) != 1 else ""
            self.note(
                f"resumed {len(results)} unfinished event{plural} from {self.arguments.store}"
            )
        self.progress.read += len(results)
        for result in results:
            self.report(result)

    async def _take_over_from_time_to_time(self, automations: Automations) -> None:
        """Every TAKEOVER_INTERVAL seconds (real time), finish the open events of processes on
        the store that died meanwhile."""
        while True:
            await asyncio.sleep(TAKEOVER_INTERVAL)
            try:
                taken = automations.take_over()
            except OSError as error:
                self.warn(f"looking for unfinished events: {error}")
                continue
            if taken:
                self.resuming = True
                try:
                    self._resumed(await automations.resume(), automations)
                finally:
                    self.resuming = False

    async def _run(self, automations: Automations, stream: IO[Any], label: str) -> str | None:
        """Resume what the store has unfinished (events of processes that died), then
        dispatch the events of ``stream``; ``file:line: why`` when a line that never ends
        stopped the reading. Interrupted, it records every event read and not started as
        accepted, so that the next run resumes it."""
        self._resumed(await automations.resume(), automations)
        takeover = asyncio.create_task(self._take_over_from_time_to_time(automations))
        try:
            fatal = await self._dispatch_stream(automations, stream, label)
            while self.resuming:  # events taken over are finished before the summary
                await asyncio.sleep(0.05)
            return fatal
        finally:
            takeover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await takeover

    async def _dispatch_stream(
        self, automations: Automations, stream: IO[Any], label: str
    ) -> str | None:
        """Dispatch the events of ``stream``, ``concurrency`` at a time (see :meth:`_run`)."""
        slots = asyncio.Semaphore(max(1, self.arguments.concurrency))
        #: Each task in flight, with its event and whether its dispatch began.
        tasks: dict[asyncio.Task[None], tuple[dict[str, Any], list[bool]]] = {}
        pending: deque[EventItem] = deque()
        lines = readable_lines(stream)
        source = lines if isinstance(lines, DescriptorLines) else None
        reader = EventReader(read_events(lines, label), source=source)

        async def one(event: dict[str, Any], where: str, began: list[bool]) -> None:
            began[0] = True  # dispatch records the event before its first wait
            try:
                result = await automations.dispatch(event)
            except EventError as error:
                self.progress.done += 1
                self.refused(f"{where}: {error}")
            except Exception as error:
                self.counts["failed"] += 1
                self.progress.done += 1
                self.warn(f"{where}: {describe_error(error)}")
            else:
                self.report(result)  # what output raises (a closed pipe) ends the run
            finally:
                slots.release()

        run = asyncio.current_task()

        def ended(task: asyncio.Task[None]) -> None:
            tasks.pop(task, None)
            if not task.cancelled() and task.exception() is not None and self.failure is None:
                self.failure = task.exception()
                if run is not None:
                    run.cancel()

        fatal: str | None = None
        try:
            try:
                while (batch := await reader.batch()) is not None:
                    pending.extend(batch)
                    self.progress.read += sum(1 for item in batch if item[0] is not None)
                    while pending:
                        event, where, _ = pending[0]
                        if event is None:
                            pending.popleft()
                            self.refused(where)
                            continue
                        await slots.acquire()
                        pending.popleft()
                        began = [False]
                        task = asyncio.create_task(one(event, where, began))
                        tasks[task] = (event, began)
                        task.add_done_callback(ended)
            except ValueError as error:  # a line that never ends: stop reading, finish the rest
                fatal = f"{label}: {error}"
            self.progress.input_ended = True
            await asyncio.gather(*tasks)
        except BaseException:  # interrupted (Ctrl-C cancels the run): keep what was read
            unstarted = [item[0] for item in [*pending, *reader.stop()] if item[0] is not None]
            for task, (event, began) in list(tasks.items()):
                task.cancel()
                if not began[0]:
                    unstarted.append(event)
            await asyncio.gather(*tasks, return_exceptions=True)
            for event in unstarted:  # one refused at the door would be refused next time too
                with contextlib.suppress(EventError, OSError, RecordError):
                    automations.accept(event)
            if self.failure is not None:  # the output failed, not the user's Ctrl-C
                raise self.failure from None
            raise
        return fatal


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
        raise FileNotFoundError(f"{path} does not exist (a store or a dead-letter file)")
    with replay_lock(path):
        if is_store_file(path):
            again = DeadLetterStore()
            automations, _ = _automations(arguments, [], again)
            return await replay_store(automations, again, path, out)
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
        mark = 0
        try:
            for number, raw, record in _dead_letters(path):
                mark = len(again.records)
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
        except BaseException:  # interrupted: the record being replayed stays whole in the file
            del again.records[mark:]
            raise
        finally:  # what was replayed leaves the file, what failed again joins it
            if consumed or again.records:
                added = [encode_record(record) for record in again.records]
                _rewrite_without(path, consumed, added)
    out.write(
        redactor.text(
            f"replayed {counts['records']} records: delivered {counts['delivered']}, "
            f"dead-lettered again {counts['dead_lettered']}, skipped {counts['skipped']}\n"
        )
    )
    if fatal is not None:
        _warn(fatal)
        return EXIT_BAD_INPUT
    return EXIT_FAILED if again.records or problems else EXIT_OK


def automate_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang automate``: returns the exit status (EXIT_INTERRUPTED after Ctrl-C, saying
    that the store keeps what was not finished)."""
    try:
        return asyncio.run(_automate(arguments, out, stdin))
    except KeyboardInterrupt:
        _warn(f"interrupted; store kept at {arguments.store}: rerun the same command to resume")
        return EXIT_INTERRUPTED


def replay_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang replay``: retry the dead letters of a store or file; 1 when some remain."""
    try:
        return asyncio.run(_replay(arguments, out))
    except KeyboardInterrupt:
        _warn(
            f"interrupted; dead letters kept in {arguments.dead_letter}: rerun the same command "
            "to resume"
        )
        return EXIT_INTERRUPTED
