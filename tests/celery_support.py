"""Celery worker tests: a loopback receiver counting requests by Idempotency-Key, a harness that
starts ``flowlang worker`` processes in their own process group, and readers of the shared
store in Redis; the fixtures ``store`` and ``receiver`` (import ``store_fixture`` and
``receiver_fixture``).

The receiver is plain HTTP on 127.0.0.1 (workers get ``--allow-host 127.0.0.1``): TLS is
covered by the automations' own tests, these test the delivery guarantees. Each key's answers
can be scripted: a status with headers, or ``HOLD`` (the request is held until released or
the server stops: a worker can be killed while it waits).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from services import RedisServer
from support import clean_env

from flowlang.automations.dispatch import idempotency_key

#: A scripted answer that holds the request until :meth:`Receiver.release`.
HOLD = "hold"
#: Seconds a held request waits at most.
HOLD_LIMIT = 30.0
#: Seconds a worker has to say it consumes.
WORKER_START = 30.0


@dataclass
class Receiver:
    """What the loopback receiver saw, and how it answers each key."""

    port: int = 0
    #: Idempotency-Key -> times each request with it arrived (monotonic)
    seen: dict[str, list[float]] = field(default_factory=dict)
    #: requests without an Idempotency-Key
    unkeyed: int = 0
    scripts: dict[str, list[Any]] = field(default_factory=dict)
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, key: str, *answers: Any) -> None:
        """Answer the next requests with ``key`` with these: ``(status, headers)`` or HOLD."""
        with self.lock:
            self.scripts.setdefault(key, []).extend(answers)

    def release(self) -> None:
        self.released.set()

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.seen.get(key, []))

    def keys(self) -> dict[str, int]:
        with self.lock:
            return {key: len(times) for key, times in self.seen.items()}

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, key: str | None) -> Any:
        with self.lock:
            if key is None:
                self.unkeyed += 1
                return (200, {})
            self.seen.setdefault(key, []).append(time.monotonic())
            queue = self.scripts.get(key)
            return queue.pop(0) if queue else (200, {})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    receiver: Receiver

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        answer = self.receiver.answer(self.headers.get("Idempotency-Key"))
        if answer == HOLD:
            self.receiver.held.set()
            deadline = time.monotonic() + HOLD_LIMIT
            while not self.receiver.released.is_set() and time.monotonic() < deadline:
                if self.receiver.stop.wait(0.05):
                    return
            answer = (200, {})
        status, headers = answer
        body = b'{"ok": true}' if status < 300 else b'{"error": "scripted"}'
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the worker died while the request was held
            pass

    do_PUT = do_POST


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A loopback HTTP receiver for the block (its threads stopped afterwards)."""
    receiver = Receiver()
    handler = type("Handler", (_Handler,), {"receiver": receiver})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    receiver.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield receiver
    finally:
        receiver.stop.set()
        httpd.shutdown()
        httpd.server_close()


WORKFLOW = """
workflow: {name}
trigger: call.ended
actions:
  - name: first
    type: api_request
    endpoint: "{url}"
    values:
      - {{key: caller, value: "<<event.properties.caller>>", format: string}}
  - name: second
    type: api_request
    endpoint: "{url}"
"""


def write_workflow(folder: Path, receiver: Receiver, name: str = "notify") -> Path:
    """A workflow of two actions posting to ``receiver``."""
    path = folder / f"{name}.yaml"
    path.write_text(WORKFLOW.format(name=name, url=receiver.url()), encoding="utf-8")
    return path


def event(number: int) -> dict[str, Any]:
    return {"id": f"evt-{number:05d}", "type": "call.ended", "properties": {"caller": "+15550100"}}


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in events), encoding="utf-8")
    return path


def keys_of(event_id: str, workflow: str = "notify") -> list[str]:
    """The Idempotency-Keys of the event's two actions (``first``, ``second``)."""
    return [idempotency_key(event_id, workflow, action) for action in ("first", "second")]


def one_event(
    folder: Path, receiver: Receiver, number: int, *answers: Any
) -> tuple[Path, Path, str, str]:
    """The workflow posting to ``receiver`` and an events file of :func:`event` ``number``, its
    first action answered with ``answers`` first: (workflow, events, first key, second key)."""
    flow = write_workflow(folder, receiver)
    item = event(number)
    first, second = keys_of(item["id"])
    receiver.script(first, *answers)
    return flow, write_events(folder / "events.jsonl", [item]), first, second


@dataclass
class Broker:
    """A broker of one test: its kind, URL and queue prefix."""

    kind: str
    url: str
    queue_prefix: str


@dataclass
class Worker:
    """A ``flowlang worker`` process (leading its own process group) and its log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole group (the worker and its pool children) and reap it."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def children(self) -> list[int]:
        """The pids of the worker's child processes (prefork pool)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(entry.name))
        return found


def worker_command(
    workflows: list[Path], broker: Broker, store: str, prefix: str, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flowlang",
        "worker",
        *(str(path) for path in workflows),
        "--broker",
        broker.url,
        "--store",
        store,
        "--prefix",
        prefix,
        "--queue-prefix",
        broker.queue_prefix,
        "--allow-host",
        "127.0.0.1",
        "--lease",
        "4",
        "-v",
        *extra,
    ]


def start_worker(
    folder: Path,
    workflows: list[Path],
    broker: Broker,
    store: str,
    prefix: str,
    *extra: str,
    name: str = "worker",
    env: dict[str, str] | None = None,
) -> Worker:
    """Start a worker in its own session and wait (bounded) until it consumes; ``env``: more
    environment variables."""
    log = folder / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            worker_command(workflows, broker, store, prefix, *extra),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**clean_env(), **(env or {})},
            start_new_session=True,
        )
    worker = Worker(process, log)
    deadline = time.monotonic() + WORKER_START
    while "flowlang worker: consuming" not in worker.text():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise AssertionError(f"the worker did not start:\n{worker.text()[-3000:]}")
        time.sleep(0.05)
    return worker


@contextmanager
def workers() -> Iterator[list[Worker]]:
    """A list to put started workers in; each is killed by group at the end."""
    started: list[Worker] = []
    try:
        yield started
    except BaseException:
        for worker in started:  # what the workers said, for the failure's report
            print(f"--- worker {worker.process.pid} log ---\n{worker.text()[-4000:]}")
        raise
    finally:
        for worker in started:
            worker.kill()


@contextmanager
def one_worker(
    folder: Path, workflows: list[Path], broker: Broker, store: str, prefix: str, *extra: str
) -> Iterator[Worker]:
    """One started worker (:func:`start_worker`) for the block, killed by group at the end."""
    with workers() as started:
        started.append(start_worker(folder, workflows, broker, store, prefix, *extra))
        yield started[0]


def publish(
    events: Path, broker: Broker, workflows: list[Path], *extra: str
) -> subprocess.CompletedProcess[str]:
    """``flowlang automate --executor celery`` in a child process (bounded)."""
    command = [
        sys.executable,
        "-m",
        "flowlang",
        "automate",
        *(str(path) for path in workflows),
        "--events",
        str(events),
        "--executor",
        "celery",
        "--broker",
        broker.url,
        "--queue-prefix",
        broker.queue_prefix,
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=clean_env(), check=False
    )


class Ledger:
    """Reads the shared store of one prefix (a synchronous redis-py client)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.prefix = prefix

    def settled(self) -> dict[str, str]:
        """Idempotency key -> outcome of every settled action."""
        found = {}
        start = len(f"{self.prefix}act:")
        for key in self.client.scan_iter(match=f"{self.prefix}act:*", count=1000):
            outcome = self.client.hget(key, "outcome")
            found[key.decode()[start:]] = (outcome or b"").decode()
        return found

    def dead(self) -> list[dict[str, Any]]:
        entries = self.client.xrange(f"{self.prefix}dead") if self.exists("dead") else []
        return [json.loads(fields[b"record"]) for _, fields in entries]

    def exists(self, kind: str) -> bool:
        return bool(self.client.exists(f"{self.prefix}{kind}"))

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


@contextmanager
def redis_broker_on(server: RedisServer, db: int) -> Iterator[Broker]:
    """A Redis broker on database ``db`` of ``server`` with a queue prefix of its own; the
    database (queues, bindings, unacked) flushed afterwards."""
    url = f"redis://127.0.0.1:{server.port}/{db}"
    try:
        yield Broker("redis", url, f"flowlang-test-{os.urandom(6).hex()}.")
    finally:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb()
        client.close()


@pytest.fixture(name="store")
def store_fixture(redis_server: RedisServer) -> Iterator[tuple[str, str, Ledger]]:
    """The shared store's URL, a prefix of this test, and a reader (keys removed after)."""
    prefix = f"flt{os.urandom(5).hex()}:"
    ledger = Ledger(redis_server.url, prefix)
    try:
        yield redis_server.url, prefix, ledger
    finally:
        ledger.clear()


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A loopback receiver (see :func:`receiving`)."""
    with receiving() as server:
        yield server


def wait_until(condition: Any, seconds: float, why: str) -> float:
    """Poll ``condition`` until it holds; the seconds it took (AssertionError after
    ``seconds``)."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > seconds:
            raise AssertionError(f"{why} (after {seconds:g}s)")
        time.sleep(0.05)
    return time.monotonic() - began


@dataclass
class MutingProxy:
    """A loopback TCP proxy to ``upstream`` (a port on 127.0.0.1) that can be muted: then
    whatever the broker says (its confirms, its replies) is dropped, on every connection, the
    ones made later too; the client's bytes still reach the broker. Made a black hole, it
    drops both ways (nothing a client sends reaches the broker: a publish never arrives)."""

    upstream: int
    port: int = 0
    muted: threading.Event = field(default_factory=threading.Event)
    hole: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    sockets: list[socket.socket] = field(default_factory=list)

    def mute(self) -> None:
        self.muted.set()

    def black_hole(self) -> None:
        self.hole.set()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while not self.stop.is_set():
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    return
                if not (self.hole.is_set() or (answers and self.muted.is_set())):
                    sink.sendall(data)
        except OSError:
            return

    def _serve(self, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            try:
                broker = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            self.sockets += [client, broker]
            for source, sink, answers in ((client, broker, False), (broker, client, True)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, answers), daemon=True
                ).start()


@contextmanager
def muting_proxy(upstream: int) -> Iterator[MutingProxy]:
    """A :class:`MutingProxy` to ``upstream`` for the block (its sockets closed after)."""
    proxy = MutingProxy(upstream)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    proxy.port = int(listener.getsockname()[1])
    thread = threading.Thread(target=proxy._serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stop.set()
        thread.join(5)
        listener.close()
        for opened in proxy.sockets:
            with suppress(OSError):
                opened.close()
