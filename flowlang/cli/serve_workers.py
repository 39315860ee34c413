"""``flowlang serve --workers N``: the supervisor of N worker processes on one socket, and
what passes between the parent and a worker (``python -m flowlang.cli.serve_console INDEX``).

The parent (:func:`flowlang.cli.serve_console.serve_with_workers`) checks the arguments
and the documents once, binds the listening socket, makes the metrics folder (Prometheus
multiprocess mode), then starts each worker with :mod:`subprocess`: the socket and a
readiness pipe are inherited file descriptors, and the worker reads what to serve as one
JSON line on standard input. Standard input stays open as the worker's lifeline: when the
parent is gone (even killed), the worker stops itself as on SIGTERM. The workers stay in the
parent's process group, so a signal to the group reaches all.
"""

from __future__ import annotations

__all__ = [
    "MAX_RESTARTS",
    "MAX_SPEC",
    "READY",
    "RESTART_WINDOW",
    "START_TIMEOUT",
    "STOP_MARGIN",
    "Supervisor",
    "WorkerStart",
    "metric_file",
    "metrics_folder",
    "read_worker_start",
    "say",
    "worker_spec",
]

import argparse
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from flowlang.cli.inputs import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from flowlang.cli.terminal import printable
from flowlang.observe.metrics import mark_process_dead

#: Seconds a worker has to say it is ready (load the documents, reach the store, start).
START_TIMEOUT = 60.0
#: Deaths of workers the parent restarts within :data:`RESTART_WINDOW` seconds; one more
#: stops the server with status 1.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds beyond three drain timeouts (in-flight webhooks, event dispatches, background
#: requests) the parent waits for stopping workers before it kills them.
STOP_MARGIN = 10.0
#: How often (seconds) the parent looks at its workers when nothing else wakes it.
_TICK = 0.1
#: The worker's readiness message on its pipe.
READY = b"ready\n"
#: The longest spec line a worker reads (bytes; the context is in it).
MAX_SPEC = 64 * 1024 * 1024
#: Argument values a worker gets (the rest, such as the command's handler, stay behind).
_PLAIN = (str, int, float, bool, list, type(None))


def say(message: str) -> None:
    """Write ``flowlang serve: message`` on standard error (made safe for a terminal)."""
    print(printable(f"flowlang serve: {message}"), file=sys.stderr, flush=True)


def _exit_reason(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


#: The kinds of file prometheus_client's multiprocess mode writes: ``<kind>_<pid>.db``, and
#: for gauges ``gauge_<mode>_<pid>.db`` (prometheus_client.values.MultiProcessValue).
_METRIC_KINDS = ("counter", "histogram", "summary")


def metric_file(name: str) -> bool:
    """Whether ``name`` is one prometheus_client's multiprocess mode writes: ``counter_PID.db``,
    ``histogram_PID.db``, ``summary_PID.db`` or ``gauge_MODE_PID.db`` (MODE in lower-case
    letters)."""
    if not (name.isascii() and name.endswith(".db")):
        return False
    prefix, _, pid = name[: -len(".db")].rpartition("_")
    if not (pid.isdigit() and prefix):
        return False
    if prefix in _METRIC_KINDS:
        return True
    kind, _, mode = prefix.partition("_")
    return kind == "gauge" and mode.isalpha() and mode.islower()


def _checked_folder(folder: Path) -> None:
    """Check that ``folder`` is safe to hand to the workers (UsageError naming it
    otherwise): a real directory (not a link), owned by this user, not writable by group or
    others, holding no symbolic link; then the metric files of an earlier run are removed."""
    shown = printable(str(folder), one_line=True)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"--metrics-dir {shown}: not a directory (a symbolic link or a file)")
    if info.st_uid != os.geteuid():
        raise UsageError(f"--metrics-dir {shown}: owned by another user (uid {info.st_uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"--metrics-dir {shown}: writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); chmod go-w it"
        )
    with os.scandir(folder) as entries:
        listed = list(entries)
    links = sorted(entry.name for entry in listed if entry.is_symlink())
    if links:
        named = printable(", ".join(links[:3]), one_line=True)
        more = f" and {len(links) - 3} more" if len(links) > 3 else ""
        raise UsageError(f"--metrics-dir {shown}: holds symbolic links ({named}{more}): refused")
    for entry in listed:
        if metric_file(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def metrics_folder(given: str | None) -> tuple[Path, bool]:
    """The multiprocess metrics folder and whether it is temporary (removed at exit): a new
    temporary folder (mode 0700) when ``given`` is None; else ``given``, made (mode 0700) when
    missing, refused (UsageError) unless it is a real directory owned by this user, not
    writable by group or others and holding no symbolic link, and cleared of the files
    prometheus_client names (:func:`metric_file`: regular files only, links never followed)."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="flowlang-metrics-")), True
    folder = Path(given)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _checked_folder(folder)
    except OSError as error:
        shown = printable(given, one_line=True)
        raise UsageError(f"--metrics-dir {shown}: {error.strerror or error}") from None
    return folder, False


@dataclass
class _Worker:
    """One running worker process and what the parent knows of it."""

    index: int
    process: subprocess.Popen[bytes]
    ready_pipe: int
    began: float
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Supervisor:
    """Start ``count`` workers on ``sock``, restart those that die (bounded), stop them all on
    SIGTERM, SIGINT or SIGHUP (a closed terminal). ``spec`` is what every worker is told (its
    index added); ``env`` is their environment; ``stop_wait``: seconds stopping workers get
    before SIGKILL; ``metrics``: the multiprocess folder (files of dead workers are marked dead)."""

    count: int
    sock: socket.socket
    spec: dict[str, Any]
    env: dict[str, str]
    stop_wait: float
    metrics: Path
    on_ready: Callable[[list[int]], None]
    workers: dict[int, _Worker] = field(default_factory=dict)
    deaths: deque[float] = field(default_factory=deque)
    pending: dict[int, float] = field(default_factory=dict)
    stop_signal: int | None = None
    #: Whether every worker was ready once (the "listening on" line was said).
    announced: bool = False
    #: The worker's command, given its index (a test can give another).
    command: Callable[[int], list[str]] = field(
        default=lambda index: [sys.executable, "-m", "flowlang.cli.serve_console", str(index)]
    )
    start_timeout: float = START_TIMEOUT
    max_restarts: int = MAX_RESTARTS
    restart_window: float = RESTART_WINDOW
    #: Seconds a restart waits per death within the window beyond the first.
    backoff: float = 0.5
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)

    def _start(self, index: int) -> None:
        ready_read, ready_write = os.pipe()
        spec = {**self.spec, "index": index, "socket": self.sock.fileno(), "ready": ready_write}
        try:
            process = subprocess.Popen(
                self.command(index),
                stdin=subprocess.PIPE,
                env=self.env,
                pass_fds=(self.sock.fileno(), ready_write),
            )
        finally:
            os.close(ready_write)
        worker = _Worker(index, process, ready_read, time.monotonic())
        self.workers[index] = worker
        self._selector.register(ready_read, selectors.EVENT_READ, worker)
        assert process.stdin is not None
        try:  # the lifeline stays open: the worker stops when it reads its end
            process.stdin.write(json.dumps(spec).encode() + b"\n")
            process.stdin.flush()
        except OSError:  # it died already: reaped and reported like any death
            pass

    def _forget(self, worker: _Worker) -> None:
        """Close what the parent holds of an exited worker and mark its metrics dead."""
        self.workers.pop(worker.index, None)
        with suppress(KeyError, ValueError):
            self._selector.unregister(worker.ready_pipe)
        with suppress(OSError):
            os.close(worker.ready_pipe)
        if worker.process.stdin is not None:
            with suppress(OSError):
                worker.process.stdin.close()
        mark_process_dead(worker.pid, str(self.metrics))

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def run(self) -> int:
        """Supervise until a stop signal (0, or 130 for SIGINT) or a failure (1)."""
        previous = {
            number: signal.signal(number, self._signalled)
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            status = self._supervise()
        finally:
            self._stop_all()
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._selector.close()
        if status is None:
            say("stopped")
            return EXIT_INTERRUPTED if self.stop_signal == signal.SIGINT else EXIT_OK
        return status

    def _supervise(self) -> int | None:
        for index in range(1, self.count + 1):
            if self.stop_signal is not None:
                return None
            if not self._started(index):
                return EXIT_FAILED
        while self.stop_signal is None:
            self._read_pipes()
            failure = self._reap()
            if failure is not None:
                return failure
            if (
                not self.announced
                and len(self.workers) == self.count
                and all(worker.ready for worker in self.workers.values())
            ):
                self.announced = True
                self.on_ready([self.workers[index].pid for index in sorted(self.workers)])
            now = time.monotonic()
            for index, due in list(self.pending.items()):
                if now >= due and self.stop_signal is None:
                    del self.pending[index]
                    if not self._started(index):
                        return EXIT_FAILED
        return None

    def _started(self, index: int) -> bool:
        try:
            self._start(index)
        except OSError as error:  # out of processes or file descriptors
            say(f"cannot start worker {index}: {error.strerror or error}; stopping")
            return False
        return True

    def _read_pipes(self) -> None:
        for key, _ in self._selector.select(_TICK):
            worker: _Worker = key.data
            try:
                data = os.read(worker.ready_pipe, 64)
            except OSError:
                data = b""
            if data.startswith(READY) and not worker.ready:
                worker.ready = True
                if self.announced:
                    say(f"worker {worker.index} is ready again (pid {worker.pid})")
            elif not data:  # the worker closed it: it exits (reaped below)
                with suppress(KeyError, ValueError):
                    self._selector.unregister(worker.ready_pipe)

    def _reap(self) -> int | None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            status = worker.process.poll()
            if status is None and not worker.ready and now - worker.began > self.start_timeout:
                with suppress(ProcessLookupError):
                    worker.process.kill()
                with suppress(subprocess.TimeoutExpired):
                    worker.process.wait(5)
                status = worker.process.poll()
                reason = f"did not start within {self.start_timeout:g} s"
            elif status is None:
                continue
            else:
                reason = _exit_reason(status)
            if self.stop_signal is not None:
                return None  # it was stopping anyway (a Ctrl-C reaches the whole group)
            self._forget(worker)
            what = f"worker {worker.index} (pid {worker.pid}) {reason}"
            if not self.announced:
                say(f"{what} before it was ready (see its log above); stopping")
                return EXIT_FAILED
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > self.restart_window:
                self.deaths.popleft()
            if len(self.deaths) > self.max_restarts:
                say(
                    f"{what}; workers died {len(self.deaths)} times within "
                    f"{self.restart_window:g} s; stopping"
                )
                return EXIT_FAILED
            delay = self.backoff * (len(self.deaths) - 1)
            say(f"{what}; starting it again" + (f" in {delay:g} s" if delay else ""))
            self.pending[worker.index] = now + delay
        return None

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait (bounded by ``stop_wait``), SIGKILL the rest."""
        self.pending.clear()
        for worker in self.workers.values():
            with suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_wait
        while time.monotonic() < deadline and any(
            worker.process.poll() is None for worker in self.workers.values()
        ):
            time.sleep(0.05)
        for worker in list(self.workers.values()):
            if worker.process.poll() is None:
                say(f"worker {worker.index} (pid {worker.pid}) did not stop in time; killed")
                with suppress(ProcessLookupError):
                    worker.process.kill()
                with suppress(subprocess.TimeoutExpired):
                    worker.process.wait(5)
            self._forget(worker)


def worker_spec(arguments: argparse.Namespace, context: Any) -> dict[str, Any]:
    """What every worker is told: the command's plain arguments and the parsed context."""
    plain = {name: value for name, value in vars(arguments).items() if isinstance(value, _PLAIN)}
    return {"arguments": plain, "context": context}


# -- the worker ------------------------------------------------------------------------------


def _lifeline(fd: int) -> None:
    """Wait for the end of standard input (the parent is gone or done), then stop as on
    SIGTERM. Reads the descriptor itself: a thread blocked in a buffered read would stop the
    interpreter's shutdown."""
    with suppress(OSError):
        while os.read(fd, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class WorkerStart:
    """What a worker process was given: its index, the spec, the readiness pipe, the socket."""

    index: int
    spec: dict[str, Any]
    ready: IO[bytes]
    sock: socket.socket

    def say_ready(self) -> None:
        """Tell the parent that this worker serves."""
        self.ready.write(READY)


def read_worker_start(index_text: str) -> WorkerStart | None:
    """Read the spec line on standard input (None, said on standard error, when it is not
    one the parent wrote for worker ``index_text``) and start watching the lifeline."""
    try:
        spec = json.loads(sys.stdin.buffer.readline(MAX_SPEC) or b"null")
        if not isinstance(spec, dict) or str(spec.get("index")) != index_text:
            raise ValueError("not a worker's spec")
        if not isinstance(spec["arguments"], dict):
            raise ValueError("not a worker's spec")
        ready = os.fdopen(spec["ready"], "wb", buffering=0)
        sock = socket.socket(fileno=spec["socket"])
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        say("a worker is started by flowlang serve --workers (its spec was not readable)")
        return None
    threading.Thread(target=_lifeline, args=(sys.stdin.fileno(),), daemon=True).start()
    return WorkerStart(spec["index"], spec, ready, sock)
