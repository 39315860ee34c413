"""The load side of ``benchmarks/test_serve.py``: server processes, and a lean Twilio.

- :class:`ServerProcess` starts ``benchmarks/serve_server.py`` (``flowlang serve`` plus the
  baseline route) in its own process group, logs to a file (no pipe for the client to drain),
  reads the port it listens on, reports its CPU time, and stops it by group.
- :class:`Connection` is an HTTP/1.1 keep-alive connection as an asyncio Protocol: one request
  in flight, the answer's head split once, its body read by Content-Length. No HTTP library.
- :class:`SimulatedCall` holds one call's form bodies and the signed data that does not change
  between its webhooks; every request is still signed as Twilio signs it (HMAC-SHA1 over the
  URL, which carries the ``seq`` of the Gather it answers, and the sorted fields), here in the
  client, by copying a keyed HMAC and feeding it the URL and the precomputed fields.
- :func:`drive` runs simulated calls concurrently, each on its own connection: a first webhook
  (or not) and then round trips, each answering the Gather of the answer before; it records
  every request's latency and counts every answer that is not a 200 with a Gather.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from tests.twilio_sim import call_fields

HERE = Path(__file__).resolve().parent
PUBLIC_URL = "https://ivr.example.com"
HOST = b"ivr.example.com"
#: Seconds a server has to say it listens, and to stop on SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d{1,5}) ")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class ServerProcess:
    """``flowlang serve`` (with the baseline route) as its own process, on a port it chose."""

    def __init__(self, arguments: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.arguments = [*arguments, "--host", "127.0.0.1", "--port", "0"]
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> ServerProcess:
        """Start it and wait (bounded) until it says where it listens."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "serve_server.py"), "serve", *self.arguments],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the server did not start:\n{self.log.read_text()[-4000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM (a profile, when asked, is written on the way out), then SIGKILL the group."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)
        self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; :meth:`send` writes a request and returns
    (status, body) once the whole answer is in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, "127.0.0.1", port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        head = buffer[:end].lower()
        status = int(buffer[9:12])
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else len(head)])
        whole = end + 4 + length
        if len(buffer) < whole:
            self.buffer = buffer
            return
        self.buffer = buffer[whole:]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, buffer[end + 4 : whole]))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()




def signed_fields(params: Sequence[tuple[str, str]]) -> bytes:
    """What Twilio's signature covers after the URL: every field's name and value, sorted."""
    return "".join(name + value for name, value in sorted(params)).encode()


@dataclass(frozen=True)
class Target:
    """Where a call's webhooks go: flowlang's voice URL of a flow, or the baseline. ``follows``:
    the next ``seq`` is read from the answer's Gather action (flowlang) or counted (baseline)."""

    name: str
    path: str
    follows: bool

    @property
    def url(self) -> str:
        return PUBLIC_URL + self.path


def flow_target(flow: str) -> Target:
    return Target("flowlang", f"/voice/{flow}", True)


BARE = Target("bare", "/bare", False)


class SimulatedCall:
    """One call's precomputed parts: its first and its Gather form bodies and signed fields
    (the caller presses ``digits`` at every Gather)."""

    def __init__(self, call_id: str, target: Target, mac: hmac.HMAC, digits: str = "*") -> None:
        self.call_id = call_id
        self.target = target
        self.mac = mac
        first = call_fields(call_id)
        gather = call_fields(call_id, Digits=digits, FinishedOnKey="")
        self.first_body, self.first_signed = urlencode(first).encode(), signed_fields(first)
        self.gather_body, self.gather_signed = urlencode(gather).encode(), signed_fields(gather)
        self.seq = 0

    def request(self, seq: int | None) -> bytes:
        """The signed request of the first webhook (``seq`` None) or of the Gather ``seq``."""
        query = "" if seq is None else f"?seq={seq}"
        body, signed = (
            (self.first_body, self.first_signed)
            if seq is None
            else (
                self.gather_body,
                self.gather_signed,
            )
        )
        mac = self.mac.copy()
        mac.update((self.target.url + query).encode())
        mac.update(signed)
        signature = base64.b64encode(mac.digest())
        return b"".join(
            (
                b"POST ",
                (self.target.path + query).encode(),
                b" HTTP/1.1\r\nHost: ",
                HOST,
                b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\nX-Twilio-Signature: ",
                signature,
                b"\r\n\r\n",
                body,
            )
        )

    def answered(self, status: int, body: bytes) -> bool:
        """Take an answer: True when it is a 200 with a Gather (and the next seq is known)."""
        if status != 200 or b"<Gather" not in body:
            return False
        if not self.target.follows:
            self.seq += 1
            return True
        at = body.find(b"?seq=")
        end = body.find(b'"', at)
        if at < 0 or end < 0:
            return False
        seq = int(body[at + 5 : end])
        if seq != self.seq + 1:
            return False
        self.seq = seq
        return True


def new_calls(target: Target, token: str, count: int, label: str) -> list[SimulatedCall]:
    mac = hmac.new(token.encode(), digestmod=hashlib.sha1)
    return [SimulatedCall(f"CA{label}{index:08d}", target, mac) for index in range(count)]


@dataclass
class Pass:
    """What one :func:`drive` did: requests, wall seconds, every latency, bad answers, and the
    CPU seconds the client and each watched process used meanwhile."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    bad: list[tuple[int, bytes]] = field(default_factory=list)
    client_cpu: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def open_connections(port: int, count: int) -> list[Connection]:
    return list(await asyncio.gather(*(Connection.open(port) for _ in range(count))))


async def drive(
    port: int,
    calls: Sequence[SimulatedCall],
    *,
    first: bool,
    round_trips: int,
    watch: dict[str, int] | None = None,
) -> Pass:
    """Every call concurrently, each on a connection of its own (opened before the clock
    starts): its first webhook when ``first``, then ``round_trips`` Gather answers."""
    connections = await open_connections(port, len(calls))
    result = Pass()

    async def one(connection: Connection, call: SimulatedCall) -> None:
        latencies, bad = result.latencies, result.bad
        if first:
            started = time.perf_counter()
            status, body = await connection.send(call.request(None))
            latencies.append(time.perf_counter() - started)
            if not call.answered(status, body):
                bad.append((status, body))
                return
        for _ in range(round_trips):
            started = time.perf_counter()
            status, body = await connection.send(call.request(call.seq))
            latencies.append(time.perf_counter() - started)
            if not call.answered(status, body):
                bad.append((status, body))
                return

    watched = dict(watch or {})
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(c, call) for c, call in zip(connections, calls, strict=True)))
    finally:
        result.seconds = time.perf_counter() - started
        result.client_cpu = time.process_time() - client_before
        result.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        for connection in connections:
            connection.close()
    result.requests = len(result.latencies)
    return result
