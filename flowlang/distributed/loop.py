"""One asyncio event loop per worker process, on its own thread, for Celery's tasks.

Celery runs tasks in threads (``-P threads``) or pool children (``-P prefork``), never as
coroutines. Each worker process therefore runs one event loop thread holding one
:class:`~flowlang.automations.dispatch.Automations` (so one guarded HTTP pool), one
:class:`~flowlang.distributed.shared.SharedStore`, one
:class:`~flowlang.distributed.deliverer.Deliverer` and the
:class:`~flowlang.distributed.pump.Pump` task; tasks hand it coroutines with
:meth:`WorkerLoop.call` (``asyncio.run_coroutine_threadsafe(...).result(timeout)``).

It is made when the worker starts by module-level signal handlers (a handler connected as a
lambda is a weak reference that is collected at once and silently never runs): on
``worker_init`` with the threads pool (the process that consumes), on ``worker_process_init``
with prefork (each child after the fork; never in the parent, which forks after it). It is
stopped on ``worker_shutdown`` / ``worker_process_shutdown``. :func:`configure` says what to
build before the worker starts.

A warm shutdown is bounded (``worker_shutting_down``, in the consuming process): Celery and
py-amqp close the broker connection with no time limit, so a worker whose RabbitMQ fell
silent never exited after SIGTERM (measured: still running 90 s later, idle or not). A
watchdog thread then waits until no task runs, then SHUTDOWN_GRACE seconds more, and ends
the process (exit code 0, its pool children first, then the cleanups given to
:func:`on_exit`, such as the removal of the prefork metrics folder). Nothing is lost: no
task runs, and a message delivered but not acknowledged goes back to its queue when the
connection drops (Redis: after the visibility timeout); the ledger makes a redelivery
harmless.
"""

from __future__ import annotations

__all__ = [
    "LoopConfig",
    "WorkerLoop",
    "configure",
    "current",
    "on_exit",
    "running",
    "start",
    "stop",
]

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from billiard import process as billiard_process  # type: ignore[import-untyped]
from celery import signals
from celery.worker import state as celery_state

from flowlang.automations.dispatch import Automations
from flowlang.distributed.connection import KEY_PART_CHARS
from flowlang.distributed.deliverer import Deliverer
from flowlang.distributed.pump import Pump
from flowlang.distributed.shared import SharedStore

log = logging.getLogger("flowlang.worker")

T = TypeVar("T")

#: Seconds the loop thread has to build its objects, and to close them at shutdown.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: Seconds a warm shutdown may take once no task runs (the loop's stop, STOP_TIMEOUT, and
#: the broker connection's close) before the process ends itself.
SHUTDOWN_GRACE = STOP_TIMEOUT + 10.0
#: Seconds between the watchdog's looks at the running tasks.
WATCH_INTERVAL = 0.25


@dataclass(frozen=True)
class LoopConfig:
    """What each worker process builds on its loop: ``automations()`` makes the Automations
    (called on the loop thread), ``store()`` the SharedStore, ``publish(task, body)`` sends a
    message to the broker (blocking; run off the loop), ``pool`` is ``threads`` or
    ``prefork``."""

    automations: Callable[[], Automations]
    store: Callable[[], SharedStore]
    publish: Callable[[str, dict[str, Any]], None]
    pool: str = "threads"
    lease: float = 60.0
    pump_interval: float = 0.5
    deliverer_options: dict[str, Any] = field(default_factory=dict)


class WorkerLoop:
    """An event loop thread with the objects of :class:`LoopConfig`."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        host = "".join(c for c in socket.gethostname() if c in KEY_PART_CHARS)[:64] or "host"
        #: This process in claims and leases (a key part: host, pid and a random part).
        self.owner = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.loop = asyncio.new_event_loop()
        self.automations: Automations | None = None
        self.store: SharedStore | None = None
        self.deliverer: Deliverer | None = None
        self._pump_stop: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._problem: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flowlang-loop", daemon=True)

    def start(self) -> None:
        """Start the thread and build the objects (RuntimeError when that fails or hangs)."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the worker's event loop did not start in time")
        if self._problem is not None:
            raise RuntimeError(f"the worker's event loop could not start: {self._problem}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._setup())
        except BaseException as problem:  # reported by start()
            self._problem = problem
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _setup(self) -> None:
        config = self.config
        self.automations = config.automations()
        self.store = config.store()
        self.deliverer = Deliverer(
            self.automations,
            self.store,
            self.owner,
            lease=config.lease,
            **config.deliverer_options,
        )
        pump = Pump(
            self.store,
            self.publish,
            self.owner,
            clock=self.automations.clock,
            interval=config.pump_interval,
        )
        self._pump_stop = asyncio.Event()
        self._pump_task = asyncio.create_task(pump.run(self._pump_stop))

    async def publish(self, task: str, body: dict[str, Any]) -> None:
        """Publish one message from the loop (the blocking publish runs in a thread)."""
        await asyncio.get_running_loop().run_in_executor(None, self.config.publish, task, body)

    def call(self, work: Coroutine[Any, Any, T] | Awaitable[T], timeout: float) -> T:
        """Run ``work`` on the loop from another thread and wait at most ``timeout`` seconds
        for its result (TimeoutError after cancelling it)."""
        future = asyncio.run_coroutine_threadsafe(_awaited(work), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the work did not finish within {timeout:g}s") from None
        except BaseException:
            future.cancel()  # the caller was interrupted (a soft time limit): stop it too
            raise

    async def _shutdown(self) -> None:
        if self._pump_stop is not None:
            self._pump_stop.set()
        if self._pump_task is not None:
            try:
                await asyncio.wait_for(self._pump_task, 5.0)
            except (TimeoutError, Exception):
                self._pump_task.cancel()
        if self.automations is not None:
            await self.automations.aclose()
        if self.store is not None:
            await self.store.aclose()

    def stop(self) -> None:
        """Stop the pump, close the objects and the loop (bounded)."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(STOP_TIMEOUT)
        except BaseException as problem:
            log.warning("the worker's event loop did not close cleanly: %s", problem)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)


async def _awaited(work: Awaitable[T]) -> T:
    return await work


_config: LoopConfig | None = None
_current: WorkerLoop | None = None
_lock = threading.Lock()


def configure(config: LoopConfig | None) -> None:
    """What the worker processes of this program build when they start (None: nothing)."""
    global _config
    _config = config


def running() -> WorkerLoop | None:
    """This process's loop, or None."""
    return _current


def current() -> WorkerLoop:
    """This process's loop (RuntimeError when the worker did not start one)."""
    if _current is None:
        raise RuntimeError("no flowlang worker loop runs in this process")
    return _current


def start() -> WorkerLoop:
    """Start this process's loop (once) with the configured objects."""
    global _current
    with _lock:
        if _current is None:
            if _config is None:
                raise RuntimeError("flowlang.distributed.loop.configure was not called")
            loop = WorkerLoop(_config)
            loop.start()
            _current = loop
        return _current


def stop() -> None:
    """Stop this process's loop, if one runs."""
    global _current
    with _lock:
        loop, _current = _current, None
    if loop is not None:
        loop.stop()


# Module-level handlers: Celery keeps weak references to receivers, so a lambda or a local
# function would be collected and never run (measured).


def on_worker_init(**_: Any) -> None:
    """Threads pool: the consuming process itself runs the tasks; start its loop."""
    if _config is not None and _config.pool != "prefork":
        start()


def on_worker_process_init(**_: Any) -> None:
    """Prefork: each child, after the fork, starts its own loop."""
    if _config is not None and _config.pool == "prefork":
        start()


def on_worker_shutdown(**_: Any) -> None:
    """Stop the loop of this process (the consuming process, or a child)."""
    stop()


def on_worker_shutting_down(**_: Any) -> None:
    """A warm (or cold) shutdown began in the consuming process: start the watchdog that
    ends the process if the shutdown outlasts its tasks by SHUTDOWN_GRACE seconds."""
    global _watchdog
    if _config is None or _watchdog is not None:
        return
    _watchdog = threading.Thread(
        target=_watch_shutdown, args=(SHUTDOWN_GRACE,), name="flowlang-shutdown", daemon=True
    )
    _watchdog.start()


_watchdog: threading.Thread | None = None


def _tasks_running() -> int:
    """The tasks this worker process runs (or handed to its pool) now."""
    return len(celery_state.active_requests)


def _watch_shutdown(grace: float, *, end: Callable[[], None] | None = None) -> None:
    """Wait until no task runs for ``grace`` seconds in a row, then ``end`` the process
    (by default: pool children terminated, then ``os._exit(0)``); returns only if ``end``
    does."""
    quiet_since: float | None = None
    while True:
        time.sleep(WATCH_INTERVAL)
        if _tasks_running():
            quiet_since = None
            continue
        now = time.monotonic()
        if quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= grace:
            break
    log.warning(
        "flowlang worker: the shutdown did not end %.0f s after the last task (the broker does "
        "not answer?); exiting now (no task runs; unacknowledged messages go back to their "
        "queue)",
        grace,
    )
    (end or _end_process)()


#: What _end_process runs before os._exit skips every ``finally`` (on_exit).
_exit_cleanups: list[Callable[[], None]] = []


def on_exit(cleanup: Callable[[], None], *, add: bool = True) -> None:
    """Run ``cleanup`` (quick, no arguments) if the shutdown watchdog ends this process: its
    ``os._exit`` skips every ``finally``. ``add=False`` takes it back (the normal end ran it)."""
    if add:
        _exit_cleanups.append(cleanup)
    else:
        with contextlib.suppress(ValueError):
            _exit_cleanups.remove(cleanup)


def _end_process() -> None:
    """End this process now: its pool children first (prefork), then the cleanups given to
    :func:`on_exit`, then itself (exit 0)."""
    with contextlib.suppress(Exception):  # ending anyway
        for child in billiard_process.active_children():
            child.terminate()
    for cleanup in list(_exit_cleanups):
        with contextlib.suppress(Exception):  # ending anyway
            cleanup()
    for handler in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):  # ending anyway
            handler.flush()
    os._exit(0)


signals.worker_init.connect(on_worker_init, dispatch_uid="flowlang.loop.worker_init")
signals.worker_shutting_down.connect(
    on_worker_shutting_down, dispatch_uid="flowlang.loop.worker_shutting_down"
)
signals.worker_process_init.connect(
    on_worker_process_init, dispatch_uid="flowlang.loop.worker_process_init"
)
signals.worker_shutdown.connect(on_worker_shutdown, dispatch_uid="flowlang.loop.worker_shutdown")
signals.worker_process_shutdown.connect(
    on_worker_shutdown, dispatch_uid="flowlang.loop.worker_process_shutdown"
)
