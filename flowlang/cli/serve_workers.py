"""``flowlang serve --workers N``: a parent that binds the socket and supervises N worker
processes, and the worker's own entry point (``python -m flowlang.cli.serve_workers INDEX``).

The parent checks the arguments and the documents once, binds the listening socket, makes the
metrics folder (Prometheus multiprocess mode), then starts each worker with
:mod:`subprocess`: the socket and a readiness pipe are inherited file descriptors, and the
worker reads what to serve as one JSON line on standard input. Standard input stays open as
the worker's lifeline: when the parent is gone (even killed), the worker stops itself as on
SIGTERM. The workers stay in the parent's process group, so a signal to the group reaches all.
"""

from __future__ import annotations

__all__ = [
    "MAX_RESTARTS",
    "MAX_SPEC",
    "RESTART_WINDOW",
    "START_TIMEOUT",
    "Supervisor",
    "indexed_path",
    "serve_with_workers",
    "worker_main",
]

import argparse
import json
import math
import os
import selectors
import shutil
import signal
import socket
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
from typing import Any, TextIO

from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    read_context,
)
from flowlang.cli.terminal import printable

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
_READY = b"ready\n"
#: The longest spec line a worker reads (bytes; the context is in it).
MAX_SPEC = 64 * 1024 * 1024
#: Argument values a worker gets (the rest, such as the command's handler, stay behind).
_PLAIN = (str, int, float, bool, list, type(None))


def _say(message: str) -> None:
    print(printable(f"flowlang serve: {message}"), file=sys.stderr, flush=True)


def indexed_path(path: str | None, index: int) -> Path | None:
    """``path`` with the worker ``index`` before its last suffix (``events.jsonl`` ->
    ``events.2.jsonl``; ``events`` -> ``events.2``); None stays None."""
    if path is None:
        return None
    original = Path(path)
    suffix = original.suffix
    stem = original.name[: len(original.name) - len(suffix)] if suffix else original.name
    return original.with_name(f"{stem}.{index}{suffix}")


def _exit_reason(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


def _metrics_folder(given: str | None) -> tuple[Path, bool]:
    """The multiprocess metrics folder (``given``, its ``*.db`` files removed, made when
    missing; or a new temporary folder) and whether it is temporary (removed at exit)."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="flowlang-metrics-")), True
    folder = Path(given)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
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
    SIGTERM or SIGINT. ``spec`` is what every worker is told (its index added); ``env`` is
    their environment; ``stop_wait``: seconds stopping workers get before SIGKILL;
    ``metrics``: the multiprocess folder (files of dead workers are marked dead)."""

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
        default=lambda index: [sys.executable, "-m", "flowlang.cli.serve_workers", str(index)]
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
        from flowlang.observe.metrics import mark_process_dead

        mark_process_dead(worker.pid, str(self.metrics))

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def run(self) -> int:
        """Supervise until a stop signal (0, or 130 for SIGINT) or a failure (1)."""
        previous = {
            number: signal.signal(number, self._signalled)
            for number in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            status = self._supervise()
        finally:
            self._stop_all()
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._selector.close()
        if status is None:
            _say("stopped")
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
            _say(f"cannot start worker {index}: {error.strerror or error}; stopping")
            return False
        return True

    def _read_pipes(self) -> None:
        for key, _ in self._selector.select(_TICK):
            worker: _Worker = key.data
            try:
                data = os.read(worker.ready_pipe, 64)
            except OSError:
                data = b""
            if data.startswith(_READY) and not worker.ready:
                worker.ready = True
                if self.announced:
                    _say(f"worker {worker.index} is ready again (pid {worker.pid})")
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
                _say(f"{what} before it was ready (see its log above); stopping")
                return EXIT_FAILED
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > self.restart_window:
                self.deaths.popleft()
            if len(self.deaths) > self.max_restarts:
                _say(
                    f"{what}; workers died {len(self.deaths)} times within "
                    f"{self.restart_window:g} s; stopping"
                )
                return EXIT_FAILED
            delay = self.backoff * (len(self.deaths) - 1)
            _say(f"{what}; starting it again" + (f" in {delay:g} s" if delay else ""))
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
                _say(f"worker {worker.index} (pid {worker.pid}) did not stop in time; killed")
                with suppress(ProcessLookupError):
                    worker.process.kill()
                with suppress(subprocess.TimeoutExpired):
                    worker.process.wait(5)
            self._forget(worker)


def _worker_spec(arguments: argparse.Namespace, context: Any) -> dict[str, Any]:
    plain = {name: value for name, value in vars(arguments).items() if isinstance(value, _PLAIN)}
    return {"arguments": plain, "context": context}


def serve_with_workers(arguments: argparse.Namespace, stdin: TextIO) -> int:
    """``flowlang serve --workers N`` (N > 1): check everything once, bind the socket, make
    the metrics folder, and supervise N workers until SIGTERM (0) or SIGINT (130); 1 when a
    worker fails to start or workers die too often; 2 for documents with errors."""
    from flowlang.cli.serve_console import (
        check_store,
        describe,
        listening_socket,
        load_served,
    )

    if arguments.store == "memory":
        raise UsageError(
            f"--workers {arguments.workers} needs a shared store (--store redis://HOST:PORT/DB): "
            "the in-process store cannot be shared between processes"
        )
    check_store(arguments)
    loaded = load_served(arguments)
    if isinstance(loaded, int):
        return loaded
    settings, flows, workflows = loaded
    context = read_context(arguments.context, stdin) if arguments.context else None
    folder, temporary = _metrics_folder(arguments.metrics_dir)
    try:
        sock = listening_socket(arguments.host, arguments.port)
        host, port = sock.getsockname()[:2]

        def announce(pids: list[int]) -> None:
            _say(
                f"listening on http://{host}:{port} for {settings.public_url} "
                f"({describe(arguments, flows, workflows)}; workers: {len(pids)}, pids "
                f"{', '.join(map(str, pids))}; pid {os.getpid()})"
            )

        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        supervisor = Supervisor(
            count=arguments.workers,
            sock=sock,
            spec=_worker_spec(arguments, context),
            env=env,
            stop_wait=3 * max(1.0, math.ceil(settings.drain_timeout)) + STOP_MARGIN,
            metrics=folder,
            on_ready=announce,
        )
        try:
            return supervisor.run()
        finally:
            sock.close()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


# -- the worker ------------------------------------------------------------------------------


def _lifeline(fd: int) -> None:
    """Wait for the end of standard input (the parent is gone or done), then stop as on
    SIGTERM. Reads the descriptor itself: a thread blocked in a buffered read would stop the
    interpreter's shutdown."""
    with suppress(OSError):
        while os.read(fd, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def worker_main(index_text: str) -> int:
    """One worker: read the spec line on standard input, serve on the inherited socket, say
    ``ready`` on the inherited pipe once started. 0 after a stop by signal, 1 when it could
    not start, 2 for a usage error."""
    try:
        spec = json.loads(sys.stdin.buffer.readline(MAX_SPEC) or b"null")
        if not isinstance(spec, dict) or str(spec.get("index")) != index_text:
            raise ValueError("not a worker's spec")
        index: int = spec["index"]
        ready = os.fdopen(spec["ready"], "wb", buffering=0)
        sock = socket.socket(fileno=spec["socket"])
        if not isinstance(spec["arguments"], dict):
            raise ValueError("not a worker's spec")
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        _say("a worker is started by flowlang serve --workers (its spec was not readable)")
        return EXIT_BAD_INPUT
    threading.Thread(target=_lifeline, args=(sys.stdin.fileno(),), daemon=True).start()
    from flowlang.cli.serve_console import load_served, run_server

    arguments = argparse.Namespace(**spec["arguments"])

    def started(_sock: socket.socket) -> None:
        ready.write(_READY)

    try:
        loaded = load_served(arguments, warn=False)
        if isinstance(loaded, int):
            return loaded
        server_process = run_server(
            arguments,
            loaded,
            lambda: sock,
            started,
            context=lambda: spec["context"],
            journal=indexed_path(arguments.journal, index),
            dead_letters=indexed_path(arguments.dead_letter, index),
        )
    except UsageError as error:
        _say(f"worker {index}: {error}")
        return EXIT_BAD_INPUT
    except (ValueError, OSError, AttributeError) as error:  # such as a secret not set
        _say(f"worker {index}: the server cannot start: {error}")
        return EXIT_FAILED
    finally:
        with suppress(OSError):
            ready.close()
    return EXIT_OK if server_process.started else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1] if len(sys.argv) > 1 else ""))
