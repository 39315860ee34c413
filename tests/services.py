"""Test services: real servers. Redis is started on a free loopback port in its own process
group, waited for (bounded), killed by group at teardown. RabbitMQ is the machine's (127.0.0.1:5672,
guest/guest; it cannot be started per test), each test with a queue prefix of its own whose
queues and exchanges are deleted at teardown (the ``rabbitmq`` fixture).

A missing binary skips the test with the reason, unless ``FLOWLANG_REQUIRE_SERVICES=1`` (CI),
which makes it a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

REDIS_SERVER = "/usr/bin/redis-server"
#: Seconds a service has to answer after it was started.
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def services_required() -> bool:
    """True when a missing service must fail the test instead of skipping it (CI)."""
    return os.environ.get("FLOWLANG_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Skip with ``reason``, or fail when services are required."""
    if services_required():
        pytest.fail(f"{reason} (FLOWLANG_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def kill_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL ``process``'s whole group (it leads one; members outlive a leader that exited,
    as a wrapper script's children do) and reap it, bounded."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def redis_ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING (raw protocol, no client), or
    asks for a password first (``--requirepass``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 that keeps nothing on disk, in its own process group.

    ``url`` is its ``redis://`` address (database 0); ``extra`` arguments are added to the
    command line (``("--requirepass", "pw")``). :meth:`kill` stops it like a crash,
    :meth:`start` starts it again on the same port (empty: nothing was persisted),
    :meth:`restart` does both.
    """

    def __init__(
        self, binary: str = REDIS_SERVER, port: int | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.extra = extra
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = Path(tempfile.mkdtemp(prefix="flowlang-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.folder / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        process = self.process
        deadline = time.monotonic() + START_TIMEOUT
        while not redis_ping(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                kill_group(process)
                pytest.fail(f"redis-server on port {self.port} did not start: {self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Kill the server's process group (SIGKILL, like a crash) and reap it."""
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def restart(self) -> None:
        """Kill the server and start a fresh one on the same port."""
        self.kill()
        self.start()

    def log(self) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return (self.folder / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Kill the server and remove its folder."""
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def running_redis(*extra: str, binary: str = REDIS_SERVER) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` (``extra`` arguments on its command line), closed on
    exit; skips (or fails, when services are required) when the binary is missing."""
    if not os.access(binary, os.X_OK):
        missing_service(f"{binary} is not installed")
    server = RedisServer(binary, extra=extra)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the test session (tests use their own key prefixes). A test that kills it
    must start it again; a crash test is better served by its own :func:`running_redis`."""
    with running_redis() as server:
        yield server


# --- RabbitMQ ----------------------------------------------------------------------------------

#: The machine's RabbitMQ (tests use it when it answers; a queue prefix of their own each).
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_answers(url: str = RABBITMQ_URL, timeout: float = 2.0) -> bool:
    """True when the RabbitMQ at ``url`` accepts an AMQP connection."""
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=timeout):
            pass
    except OSError:
        return False
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False


def random_queue_prefix() -> str:
    """A queue prefix of one test: ``flowlang-test-<hex>.``."""
    return f"flowlang-test-{os.urandom(6).hex()}."


def delete_queues(url: str, prefix: str, timeout: float = 5.0) -> None:
    """Delete the queues and exchanges ``{prefix}events`` and ``{prefix}actions`` (bounded;
    what is missing is ignored)."""
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        for name in (f"{prefix}events", f"{prefix}actions"):
            for delete in ("queue_delete", "exchange_delete"):
                channel = connection.channel()
                with suppress(Exception):
                    getattr(channel, delete)(name)
                with suppress(Exception):
                    channel.close()


class RabbitMQ:
    """The machine's RabbitMQ with a queue prefix for one test (queues deleted afterwards)."""

    def __init__(self, url: str = RABBITMQ_URL) -> None:
        self.url = url
        self.queue_prefix = random_queue_prefix()

    def close(self) -> None:
        delete_queues(self.url, self.queue_prefix)


@pytest.fixture
def rabbitmq() -> Iterator[RabbitMQ]:
    """The machine's RabbitMQ (127.0.0.1:5672, guest/guest) with a random queue prefix, its
    queues deleted at teardown; skipped when it does not answer (a failure when services are
    required)."""
    if not rabbitmq_answers():
        missing_service("RabbitMQ does not answer on 127.0.0.1:5672 (guest/guest)")
    broker = RabbitMQ()
    try:
        yield broker
    finally:
        broker.close()
