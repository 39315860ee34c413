"""Prometheus metrics of ``flowlang worker`` (``--metrics-port``): the recorder of
:mod:`flowlang.distributed.watch`.

Series (every label value is a word of a fixed set; anything else is ``other``):

- ``flowlang_worker_steps_total{task, outcome}``: messages handled (a Celery task, or a first
  action an accept delivered inline) by task (``accept``, ``deliver``, ``replay``) and
  outcome (a step's outcome, ``requeued`` or ``abandoned``);
- ``flowlang_worker_attempts_total{outcome}``: delivery attempts made, by outcome
  (``delivered``, ``retry``, ``dead``), and ``flowlang_worker_attempt_duration_seconds``
  (the attempt with its store round trips);
- ``flowlang_worker_duplicates_total{of}``: copies dropped: an ``event`` already fanned out,
  an ``action`` already settled;
- ``flowlang_worker_stale_total``: copies of an attempt whose outcome was recorded already;
- ``flowlang_worker_abandoned_total``: fan-outs whose publishing failed (the claim lapses,
  the accept is requeued);
- ``flowlang_worker_pump_published_total{kind}``: messages the pump published, ``due`` or
  ``again`` (taken before and never marked published, or failed last round).

One process (the threads pool) registers them in a registry of its own; with
``multiprocess_path`` (the prefork pool: ``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus_client is imported) each pool child writes its own files there and
:meth:`WorkerMetrics.registry` sums them for a scrape. :class:`MetricsServer` serves the
registry, bounded (connections at once, seconds and bytes per request).
"""

from __future__ import annotations

__all__ = ["ATTEMPT_BUCKETS", "STEP_OUTCOMES", "TASKS", "MetricsServer", "WorkerMetrics"]

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    multiprocess,
    values,
)

from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.observe.metrics import OTHER, SeriesCache, check_multiprocess_folder

#: Task names as labels.
TASKS = {ACCEPT_TASK: "accept", DELIVER_TASK: "deliver", REPLAY_TASK: "replay"}
#: What a message can come to (flowlang.distributed.deliverer.Step, and the glue's own).
STEP_OUTCOMES = frozenset(
    {
        "fanned_out",
        "duplicate",
        "deferred",
        "delivered",
        "retry",
        "dead",
        "skipped",
        "refused",
        "settled_before",
        "done",
        "replayed",
        "stale",
        "requeued",
        "abandoned",
    }
)
ATTEMPT_OUTCOMES = frozenset({"delivered", "retry", "dead"})
PUMP_KINDS = frozenset({"due", "again"})
#: One attempt: a request of at most 30 s (the timeout cap) and the store's round trips.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


#: The endpoint's bounds: connections served at once (any more is closed at once), seconds a
#: client has to send its request (and, again, to read the answer), bytes of a request head.
MAX_CONNECTIONS = 8
CONNECTION_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 8192

log = logging.getLogger("flowlang.worker")


def _word(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


class WorkerMetrics:
    """A worker's counters (see the module docstring); ``multiprocess_path``: multiprocess
    mode's folder (ValueError when it is not a folder or prometheus_client was imported
    before ``PROMETHEUS_MULTIPROC_DIR`` named it; without it, ValueError when
    prometheus_client was imported in multiprocess mode)."""

    def __init__(self, *, multiprocess_path: str | None = None) -> None:
        self.multiprocess_path = multiprocess_path
        if multiprocess_path is not None:
            check_multiprocess_folder(multiprocess_path)
        elif values.ValueClass is not values.MutexValue:
            raise ValueError(
                "prometheus_client was imported with PROMETHEUS_MULTIPROC_DIR set: one process "
                "must not write multiprocess files"
            )
        self._own = CollectorRegistry(auto_describe=True)
        where = None if multiprocess_path is not None else self._own
        self._summed: CollectorRegistry | None = None
        if multiprocess_path is not None:
            self._summed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._summed, path=multiprocess_path)  # type: ignore[no-untyped-call]
        self._child = SeriesCache()
        self.steps = Counter(
            "flowlang_worker_steps",
            "Messages handled (Celery tasks, and first actions delivered inline), by task and "
            "outcome.",
            ["task", "outcome"],
            registry=where,
        )
        self.attempts = Counter(
            "flowlang_worker_attempts",
            "Delivery attempts made, by outcome (delivered, retry, dead).",
            ["outcome"],
            registry=where,
        )
        self.attempt_duration = Histogram(
            "flowlang_worker_attempt_duration_seconds",
            "One delivery attempt with its shared-store round trips, seconds.",
            ["outcome"],
            buckets=ATTEMPT_BUCKETS,
            registry=where,
        )
        self.duplicates = Counter(
            "flowlang_worker_duplicates",
            "Copies dropped: an event already fanned out, an action already settled.",
            ["of"],
            registry=where,
        )
        self.stale = Counter(
            "flowlang_worker_stale",
            "Copies of an attempt whose outcome was recorded already, dropped.",
            registry=where,
        )
        self.abandoned = Counter(
            "flowlang_worker_abandoned",
            "Fan-outs whose publishing failed: the claim lapses, the accept is requeued.",
            registry=where,
        )
        self.pump = Counter(
            "flowlang_worker_pump_published",
            "Messages the pump published: due, or again (taken before, never marked published).",
            ["kind"],
            registry=where,
        )

    def task(self, task: str, outcome: str) -> None:
        """One message of ``task`` came to ``outcome``."""
        name = TASKS.get(task, OTHER)
        word = _word(outcome, STEP_OUTCOMES)
        self._child(self.steps, name, word).inc()
        if word == "duplicate" and name == "accept":
            self._child(self.duplicates, "event").inc()
        elif word == "settled_before" and name == "deliver":
            self._child(self.duplicates, "action").inc()
        elif word == "stale":
            self.stale.inc()
        elif word == "abandoned":
            self.abandoned.inc()

    def attempt(self, outcome: str, seconds: float) -> None:
        """One delivery attempt."""
        word = _word(outcome, ATTEMPT_OUTCOMES)
        duration = float(seconds)
        duration = min(max(duration, 0.0), 1e9) if duration == duration else 0.0
        self._child(self.attempts, word).inc()
        self._child(self.attempt_duration, word).observe(duration)

    def pump_published(self, kind: str) -> None:
        """The pump published one message."""
        self._child(self.pump, _word(kind, PUMP_KINDS)).inc()

    def registry(self) -> CollectorRegistry:
        """The registry a scrape reads: this process's, or (multiprocess mode) one that sums
        every process's files at each scrape."""
        return self._summed if self._summed is not None else self._own


class MetricsServer:
    """The worker's ``/metrics`` endpoint: prometheus_client's WSGI app (the text or
    OpenMetrics format, gzip, ``name[]`` filters) behind a small bounded HTTP/1.0 front.

    prometheus_client's own ``start_wsgi_server`` has no timeout and no connection limit: each
    connection that says nothing holds a thread and a descriptor for ever, and enough of them
    exhaust the worker's descriptors (no delivery can open a connection any more). Here at
    most :data:`MAX_CONNECTIONS` are served at once (any more is closed as soon as accepted),
    each has :data:`CONNECTION_TIMEOUT` seconds to send a request head of at most
    :data:`MAX_REQUEST_BYTES` bytes and as long again to read the answer, then is closed.
    OSError (or UnicodeError, ValueError for a host that is not one) when the address cannot
    be bound."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = CONNECTION_TIMEOUT,
        max_request: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._app = make_wsgi_app(registry)
        self._timeout = timeout
        self._max_request = max_request
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        #: The listening socket (a prefork child closes its copy).
        self.socket = socket.create_server(address[:2], family=family, backlog=64)
        self.socket.settimeout(0.25)  # the accept loop looks at _stopping this often
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._thread = threading.Thread(
            target=self._accept_loop, name="flowlang-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close the listening socket (idempotent; connections being
        served end within their timeout)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self.socket.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set() or self.socket.fileno() < 0:
                    return
                time.sleep(0.1)  # out of descriptors, say: try again shortly
                continue
            if not self._slots.acquire(blocking=False):
                connection.close()  # too many at once: no thread, no descriptor held
                continue
            try:
                threading.Thread(
                    target=self._serve,
                    args=(connection,),
                    name="flowlang-metrics-conn",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread can be started now
                connection.close()
                self._slots.release()

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                head = self._read_head(connection)
                status, headers, body = self._answer(head)
                self._write(connection, status, headers, body)
        except Exception as error:  # a client that went away, or timed out: nothing to say
            log.debug("metrics connection closed: %s", type(error).__name__)
        finally:
            self._slots.release()

    def _read_head(self, connection: socket.socket) -> bytes | None:
        """The request head (None when it is too big); TimeoutError past the deadline."""
        deadline = time.monotonic() + self._timeout
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            if len(data) > self._max_request:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not come in time")
            connection.settimeout(left)
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
        head = data.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        return None if len(head) > self._max_request else head

    def _answer(self, head: bytes | None) -> tuple[str, list[tuple[str, str]], bytes]:
        if head is None:
            return "431 Request Header Fields Too Large", [], b"request too large\n"
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
            return "400 Bad Request", [], b"bad request\n"
        method, target, _ = parts
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
        }
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            if key in ("accept", "accept-encoding"):
                environ["HTTP_" + key.upper().replace("-", "_")] = value.strip()
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer["status"], answer["headers"] = status, headers

        chunks: Iterable[bytes] = self._app(environ, start_response)
        return answer["status"], list(answer["headers"]), b"".join(chunks)

    def _write(
        self,
        connection: socket.socket,
        status: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        lines = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        data = memoryview("\r\n".join(lines).encode("latin-1") + body)
        deadline = time.monotonic() + self._timeout
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer was not read in time")
            connection.settimeout(left)
            sent = connection.send(data[:65536])
            data = data[sent:]
        # A close with unread request bytes would reset the connection and lose the answer:
        # end the writing side and read what is left for a moment (bounded) first.
        connection.shutdown(socket.SHUT_WR)
        drained, deadline = 0, time.monotonic() + min(self._timeout, 1.0)
        while drained < 1 << 20 and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
