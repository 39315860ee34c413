"""A loopback HTTPS receiver of deliveries for ``benchmarks/test_automations_throughput.py``:
it answers every request at once with 200 and a tiny JSON body, and counts requests by their
``Idempotency-Key`` (with the first body seen for each key).

The server is ``benchmarks/test_http_throughput.py``'s minimal one (an asyncio Protocol, keep-alive,
a certificate from a trustme CA made at run time), grown to read request bodies by
``Content-Length`` and to record what it received. It runs in its own process (and process
group), so it never shares the measured process's event loop or CPU:

    python benchmarks/https_receiver.py CERT KEY

It prints its port, then answers one JSON line per command line on stdin:

- ``stats``: counts (``requests``, ``connections`` opened, ``distinct`` keys, ``repeats``, ``unkeyed``, ``refused``,
  ``mismatched`` repeats whose body differs from the first), the monotonic times of the first
  request and of the last new key, and the hold's state;
- ``dump``: ``{"keys": {key: [count, first body as text]}}``;
- ``reset``: forget everything;
- ``hold SECONDS``: the next request with a new key is answered only after SECONDS (or never,
  if its connection closes first: the killed-worker benchmark); later requests with that key
  are answered at once, and the first one's arrival is ``again_at``.

Times are ``time.monotonic()``, the same clock in every process of the machine (Linux
CLOCK_MONOTONIC). :class:`Receiver` is the other side: it starts the process and sends the
commands (stdlib only, so the server process imports nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ANSWER = b'{"ok":true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)
REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#: A request head or body larger than this is refused (the benchmark sends a few hundred bytes).
MAX_REQUEST = 1 << 20


class Counts:
    """What the receiver saw since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys: dict[str, list[Any]] = {}  # key -> [count, first body]
        self.requests = self.unkeyed = self.refused = self.mismatched = self.connections = 0
        self.first: float | None = None
        self.last_new: float | None = None
        self.hold_for: float | None = None
        self.held: str | None = None
        self.held_at: float | None = None
        self.again_at: float | None = None

    def seen(self, key: str | None, body: bytes) -> float | None:
        """Count one request; the seconds to hold its answer, or None to answer now."""
        now = time.monotonic()
        self.requests += 1
        if self.first is None:
            self.first = now
        if key is None:
            self.unkeyed += 1
            return None
        entry = self.keys.get(key)
        if entry is not None:
            entry[0] += 1
            if entry[1] != body:
                self.mismatched += 1
            if key == self.held and self.again_at is None:
                self.again_at = now
            return None
        self.keys[key] = [1, body]
        self.last_new = now
        if self.hold_for is not None:
            hold, self.hold_for = self.hold_for, None
            self.held, self.held_at = key, now
            return hold
        return None

    def stats(self) -> dict[str, Any]:
        distinct = len(self.keys)
        keyed = self.requests - self.unkeyed
        return {
            "requests": self.requests,
            "connections": self.connections,
            "distinct": distinct,
            "repeats": keyed - distinct,
            "unkeyed": self.unkeyed,
            "refused": self.refused,
            "mismatched": self.mismatched,
            "first": self.first,
            "last_new": self.last_new,
            "held": self.held,
            "held_at": self.held_at,
            "again_at": self.again_at,
            "held_count": self.keys[self.held][0] if self.held in self.keys else 0,
        }


COUNTS = Counts()


class Answer(asyncio.Protocol):
    """One connection: requests framed by Content-Length (no chunked bodies), keep-alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""
        COUNTS.connections += 1

    def data_received(self, data: bytes) -> None:
        data = self.pending + data if self.pending else data
        start = 0
        answers = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            length = 0
            key: str | None = None
            for line in data[start:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"idempotency-key":
                    key = value.strip().decode("latin-1")
                elif name == b"transfer-encoding":
                    length = -1
            if length < 0 or length > MAX_REQUEST:
                COUNTS.refused += 1
                self.transport.write(REFUSED)
                self.transport.close()
                return
            body_end = end + 4 + length
            if body_end > len(data):
                break
            hold = COUNTS.seen(key, data[end + 4 : body_end])
            start = body_end
            if hold is None:
                answers += 1
            else:
                self.transport.write(RESPONSE * answers)
                answers = 0
                asyncio.get_running_loop().call_later(hold, self.late_answer)
        if answers:
            self.transport.write(RESPONSE * answers)
        self.pending = data[start:]
        if len(self.pending) > MAX_REQUEST:
            COUNTS.refused += 1
            self.transport.close()

    def late_answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


def command(line: str) -> dict[str, Any]:
    """The answer to one control line."""
    word, _, argument = line.strip().partition(" ")
    if word == "stats":
        return COUNTS.stats()
    if word == "dump":
        keys = {
            key: [count, body.decode("utf-8", "surrogateescape")]
            for key, (count, body) in COUNTS.keys.items()
        }
        return {"keys": keys}
    if word == "reset":
        COUNTS.reset()
        return {"ok": True}
    if word == "hold":
        COUNTS.hold_for = float(argument)
        return {"ok": True}
    return {"error": f"unknown command {line.strip()!r}"}


async def serve(cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answer, "127.0.0.1", 0, ssl=context, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader(limit=1 << 16)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():  # until the controller goes away
        sys.stdout.write(json.dumps(command(line.decode())) + "\n")
        sys.stdout.flush()
    server.close()


class Receiver:
    """The receiver process (its own process group) and its control line."""

    def __init__(self, cert: Path, key: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(cert), str(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.buffer = b""
        try:
            self.port = int(self._line(10.0))
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        """The next line the process writes, waiting at most ``timeout`` seconds."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                raise TimeoutError(f"the receiver did not answer within {timeout} s")
            chunk = os.read(descriptor, 1 << 20)
            if not chunk:
                raise RuntimeError(f"the receiver exited ({self.process.poll()})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        """Send one command, return its JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line(timeout))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def stats(self) -> dict[str, Any]:
        return self.ask("stats")

    def reset(self) -> None:
        self.ask("reset")

    def hold(self, seconds: float) -> None:
        self.ask(f"hold {seconds}")

    def seen(self) -> dict[str, tuple[int, Any]]:
        """Every key seen since the reset: (requests with it, its first body parsed as JSON)."""
        keys = self.ask("dump")["keys"]
        return {key: (count, json.loads(body)) for key, (count, body) in keys.items()}

    def wait_for(self, distinct: int, timeout: float, poll: float = 0.05) -> dict[str, Any]:
        """Poll until ``distinct`` keys were seen (bounded by ``timeout``); the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["distinct"] >= distinct or time.monotonic() > deadline:
                return stats
            time.sleep(poll)

    def close(self) -> None:
        """Kill the process group and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.log.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
