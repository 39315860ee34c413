"""Reading events for ``flowlang automate``: on a thread of their own, handed over as they arrive.

The reading thread blocks on the stream (a file, a pipe that pauses, a stream that never
ends); the event loop gets, at each hop, every event read so far: a batch never waits to fill.
At most ``capacity`` events (and ``max_bytes`` of their lines) wait between the two, so memory
stays bounded however long the stream runs. The thread is a daemon: a run interrupted while
the stream is silent ends without waiting for another line. It reads with ``os.read`` on a
descriptor of its own (:class:`DescriptorLines`), not through ``sys.stdin``'s buffered reader,
whose lock a daemon thread blocked in a read would hold when the interpreter shuts down.
"""

from __future__ import annotations

__all__ = ["DescriptorLines", "EventReader", "opened_events", "read_events", "readable_lines"]

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

from flowlang.automations.records import MAX_EVENT_BYTES, RecordError, decoded_lines
from flowlang.cli.inputs import UsageError

#: An events line is at most this long (an event of MAX_EVENT_BYTES, written with spaces).
MAX_EVENT_LINE = 2 * MAX_EVENT_BYTES
#: A line longer than this without a newline ends the stream (it is not JSON lines).
MAX_SKIP = 64 * MAX_EVENT_BYTES

#: What the reader yields: (the event or None, "file:line" or why the line is not an event, size).
EventItem = tuple[dict[str, Any] | None, str, int]


class DescriptorLines:
    """``readline(limit)`` over a file descriptor it owns, with ``os.read``: each read returns
    what is there (a pipe that pauses is not waited on to fill a buffer) and holds no lock."""

    CHUNK = 1 << 16

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self._start = 0
        self._scanned = 0
        self._ended = False

    def readline(self, limit: int = -1) -> bytes:
        """The next line with its newline, at most ``limit`` bytes of it; b"" at the end."""
        while True:
            buffer, start = self._buffer, self._start
            stop = len(buffer) if limit < 0 else min(len(buffer), start + limit)
            newline = buffer.find(b"\n", max(start, self._scanned), stop)
            if newline >= 0 or (limit >= 0 and stop - start >= limit):
                end = newline + 1 if newline >= 0 else stop
                self._start = self._scanned = end
                return buffer[start:end]
            if self._ended:
                self._start = self._scanned = len(buffer)
                return buffer[start:]
            self._scanned = stop
            data = os.read(self.fd, self.CHUNK)
            if not data:
                self._ended = True
                continue
            self._buffer = buffer[start:] + data
            self._scanned -= start
            self._start = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def readable_lines(stream: Any) -> Any:
    """What the reading thread reads: a :class:`DescriptorLines` on a copy of ``stream``'s
    descriptor when it has one (a file, a pipe, standard input), else ``stream`` itself."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and the like
        return stream
    return DescriptorLines(os.dup(fd))


def read_events(stream: IO[Any], label: str) -> Iterator[EventItem]:
    """``(event, "file:line", size)`` for each event line, ``(None, "file:line: why", size)``
    for each bad one. Lines are read with a bound; one that never ends (``/dev/zero``) raises
    LineTooLongError (a ValueError)."""
    for number, raw, item in decoded_lines(stream, MAX_EVENT_LINE, MAX_SKIP):
        if item is None:
            yield None, f"{label}:{number}: line is longer than {MAX_EVENT_LINE} bytes", 0
        elif isinstance(item, RecordError):
            yield None, item.where(label, number), 0
        elif not isinstance(item.get("id"), str) or not isinstance(item.get("type"), str):
            yield None, f"{label}:{number}: an event is an object with an id and a type (text)", 0
        else:
            yield item, f"{label}:{number}", len(raw or b"")


class EventReader:
    """Runs ``items`` on a daemon thread; :meth:`batch` returns what it has read so far.
    ``source``, when given, is closed when the thread ends."""

    def __init__(
        self,
        items: Iterator[tuple[Any, ...]],
        *,
        source: DescriptorLines | None = None,
        capacity: int = 256,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._items = items
        self._source = source  # closed by the thread when it is done with it
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._bytes = 0
        self._lock = threading.Condition()
        self._waiting = False
        self._ended = False
        self._stopped = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="flowlang-events", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._ready.set)

    def _run(self) -> None:
        try:
            for item in self._items:
                size = int(item[-1])
                with self._lock:
                    while (
                        self._buffer
                        and not self._stopped
                        and (len(self._buffer) >= self._capacity or self._bytes >= self._max_bytes)
                    ):
                        self._lock.wait()
                    if self._stopped:
                        return
                    self._buffer.append(item)
                    self._bytes += size
                    wake, self._waiting = self._waiting, False
                if wake:
                    self._wake()
        except BaseException as error:  # handed to the event loop, raised there
            self._error = error
        finally:
            if self._source is not None:
                self._source.close()
        with self._lock:
            self._ended = True
        self._wake()

    async def batch(self) -> list[tuple[Any, ...]] | None:
        """Every item read and not yet taken (at least one), waiting for one if none is; None
        at the end of the stream; what reading raised, once the items before it are taken."""
        while True:
            with self._lock:
                if self._buffer:
                    items = list(self._buffer)
                    self._buffer.clear()
                    self._bytes = 0
                    self._lock.notify()
                    return items
                if self._ended:
                    if self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    return None
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    def stop(self) -> list[tuple[Any, ...]]:
        """Stop reading (the thread ends at its next item) and return what was read and not
        taken."""
        with self._lock:
            self._stopped = True
            items = list(self._buffer)
            self._buffer.clear()
            self._lock.notify()
        return items


@contextlib.contextmanager
def opened_events(name: str, stdin: Any) -> Iterator[tuple[IO[Any], str]]:
    """The events ``--events NAME`` names (``-``: standard input, bytes) and the label its
    messages use; UsageError when the file cannot be opened. A file is closed afterwards."""
    if name == "-":
        yield getattr(stdin, "buffer", stdin), "<stdin>"
        return
    try:
        stream = open(name, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise UsageError(f"cannot read events file {name}: {error.strerror or error}") from None
    with stream:
        yield stream, name
