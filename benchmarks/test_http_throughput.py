"""HTTP throughput (issue 14): requests per second to a loopback HTTPS server at 10, 100, 1,000
and 2,000 concurrent runs, flowlang against a minimal client written here, in one run.

The server runs in its own process group (an asyncio Protocol answering a small fixed JSON with
keep-alive, certificate from a trustme CA made at test time) and is killed by group. Contenders,
on the same connection count (the runtime's default ``max_requests_in_flight``, or fewer when
fewer runs are concurrent):

- minimal: asyncio streams + ssl + h11, keep-alive, connections handed out by an asyncio.Queue;
- send: ``GuardedHttp.send`` (address guard, deadline, bounded body, JSON decoding);
- flow: a flow with one http_request step that keeps the parsed body in ``vars`` (what the
  other two return), started through ``Runtime``.

Outside `make test`; `make bench-http` (and `make bench`) prints the table:

    make bench-http
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import h11
import orjson
import pytest
import trustme

import flowlang
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.addresses import AddressPolicy
from flowlang.runtime.http import GuardedHttp

CONCURRENCY = (10, 100, 1_000, 2_000)
#: Requests per measurement: enough for a second or more of work at every concurrency.
REQUESTS = 4_000
#: Rounds per cell, interleaving the contenders; each contender's best round is kept.
ROUNDS = 3
IN_FLIGHT = flowlang.RuntimeSettings().max_requests_in_flight
HOST = "bench.test"
BODY = {"tier": "gold", "first_name": "Ann", "balance": 42.5}

SERVER = textwrap.dedent(
    """
    import asyncio, ssl, sys
    BODY = sys.argv[3].encode()
    RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)

    class Answer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.pending = b""

        def data_received(self, data):
            data = self.pending + data
            count = data.count(b"\\r\\n\\r\\n")  # GETs without bodies: one head each
            self.pending = data[data.rfind(b"\\r\\n\\r\\n") + 4:] if count else data
            if count:
                self.transport.write(RESPONSE * count)

    async def main():
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[1], sys.argv[2])
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Answer, "127.0.0.1", 0, ssl=context, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, trustme.CA]]:
    """The loopback server in its own process group: (port, the CA that signed it)."""
    folder = tmp_path_factory.mktemp("http-bench")
    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "127.0.0.1")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key), orjson.dumps(BODY).decode()],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield port, ca
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class Minimal:
    """The baseline: asyncio streams + ssl + h11, keep-alive, connections from a queue."""

    def __init__(self, port: int, context: ssl.SSLContext, connections: int) -> None:
        self.port, self.context, self.to_open = port, context, connections
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]] = (
            asyncio.Queue()
        )
        self.all: list[asyncio.StreamWriter] = []

    async def get(self) -> Any:
        """GET /json and return the parsed body."""
        if self.idle.empty() and self.to_open:
            self.to_open -= 1
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.context, server_hostname=HOST
            )
            self.all.append(writer)
            held = (reader, writer, h11.Connection(h11.CLIENT))
        else:
            held = await self.idle.get()
        reader, writer, connection = held
        request = h11.Request(method="GET", target="/json", headers=[("Host", HOST)])
        writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                break
        connection.start_next_cycle()
        self.idle.put_nowait(held)
        return orjson.loads(body)

    async def aclose(self) -> None:
        for writer in self.all:
            writer.transport.abort()
        await asyncio.sleep(0)


async def _resolver(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def _flow(port: int) -> flowlang.CompiledFlow:
    document = {
        "flow": "bench",
        "start": "call",
        "steps": {
            "call": {
                "type": "http_request",
                "endpoint": f"https://{HOST}:{port}/json",
                "next": "done",
                "on_failure": "failed",
            },
            "done": {"type": "set_variables", "variables": {"body": "<<steps.call.response.body>>"}},
            "failed": {"type": "say", "text": "failed <<steps.call.error>>"},
        },
    }
    return flowlang.load_flow_text(orjson.dumps(document).decode())


async def _rate(concurrency: int, one: Callable[[], Awaitable[Any]]) -> float:
    """Requests per second: ``concurrency`` workers sharing REQUESTS requests."""
    left = [REQUESTS]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return REQUESTS / (time.perf_counter() - started)


async def _measure(port: int, ca: trustme.CA, concurrency: int) -> dict[str, float]:
    connections = min(concurrency, IN_FLIGHT)
    minimal = Minimal(port, client_context(ca), connections)
    sender = GuardedHttp(AddressPolicy(frozenset({HOST})), client_context(ca), _resolver)
    runtime = flowlang.Runtime(
        ssl_context=client_context(ca),
        resolver=_resolver,
        settings=flowlang.RuntimeSettings(allow_hosts=frozenset({HOST})),
    )
    flow = _flow(port)
    request = PreparedRequest("GET", f"https://{HOST}:{port}/json", ())

    async def send() -> Any:
        result = await sender.send(request, timeout=30, max_body=65536, follow_redirects=False)
        assert result.outcome == "success", result
        return result.body

    async def run() -> Any:
        result = await runtime.start(flow, {})
        assert result.status == "completed", result.instructions
        return result.variables["body"]

    try:
        assert await minimal.get() == await send() == await run() == BODY  # same output first
        contenders = (("minimal", minimal.get), ("send", send), ("flow", run))
        rates = dict.fromkeys((name for name, _ in contenders), 0.0)
        for _name, one in contenders:
            await _rate(concurrency, one)  # warm: every connection open
        for _ in range(ROUNDS):  # interleaved, the best of each: the machine is shared
            for name, one in contenders:
                rates[name] = max(rates[name], await _rate(concurrency, one))
        assert sender.transport.pool.open <= IN_FLIGHT
        return rates
    finally:
        await minimal.aclose()
        await sender.aclose()
        await runtime.aclose()


def test_http_throughput(benchmark: Any, https_server: tuple[int, trustme.CA]) -> None:
    port, ca = https_server
    rows: list[tuple[int, dict[str, float]]] = []

    def measure_all() -> None:
        rows.clear()
        for concurrency in CONCURRENCY:
            rows.append((concurrency, asyncio.run(_measure(port, ca, concurrency))))

    benchmark.group = "HTTP throughput"
    benchmark.pedantic(measure_all, rounds=1, iterations=1)
    print(
        f"\nHTTP throughput to a loopback HTTPS server (req/s, best of {ROUNDS} rounds of "
        f"{REQUESTS:,} requests; ratio = against minimal)"
    )
    print(
        f"{'concurrency':>11}  {'minimal':>8}  {'send':>8}  {'ratio':>5}  {'flow':>8}  {'ratio':>5}"
    )
    for concurrency, rate in rows:
        print(
            f"{concurrency:>11,}  {rate['minimal']:>8,.0f}  {rate['send']:>8,.0f}  "
            f"{rate['send'] / rate['minimal']:>5.2f}  {rate['flow']:>8,.0f}  "
            f"{rate['flow'] / rate['minimal']:>5.2f}"
        )
    benchmark.extra_info.update(
        {f"{c}": {k: round(v) for k, v in rate.items()} for c, rate in rows}
    )
