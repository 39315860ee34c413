"""The HTTP/1.1 client and its pool (flowlang.runtime.h1, connections, transport) against loopback
servers scripted per test: keep-alive reuse and when a connection is never reused, addresses,
certificates, expiry, bounds, and hostile responses (garbage, huge or endless heads, slowloris)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlang.http_rules import PreparedRequest
from flowlang.runtime.addresses import AddressPolicy
from flowlang.runtime.http import GuardedHttp, HttpResult

HOST = "pool.test"
JSON = b'{"tier": "gold"}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(JSON)).encode()
    + b"\r\n\r\n"
    + JSON
)
#: Every outcome a failed exchange may come to.
OUTCOMES = {
    "success",
    "http_error",
    "timeout",
    "connection_error",
    "tls_error",
    "too_large",
    "invalid_json",
    "invalid_response",
}

Handler = Callable[["Scripted", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Scripted:
    """A loopback server running ``handler`` on each connection; what it saw."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    heads: list[bytes] = field(default_factory=list)


async def read_head(server: Scripted, reader: asyncio.StreamReader) -> bytes | None:
    """The next request head (its body, if any, read too), or None at the end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    server.heads.append(head)
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def keep_alive(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
    """Answer every request with OK on the same connection."""
    while await read_head(server, reader) is not None:
        writer.write(OK)


def answer_once(payload: bytes, then_wait: float = 0.0) -> Handler:
    """A handler answering the first request with ``payload``, then waiting, then closing."""

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        if await read_head(server, reader) is None:
            return
        writer.write(payload)
        await writer.drain()
        await asyncio.sleep(then_wait)

    return handle


@contextlib.asynccontextmanager
async def scripted(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Scripted]:
    """Serve on loopback for the block; every connection is closed and its task ended after."""
    state = Scripted()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        state.connections += 1
        state.open_now += 1
        state.most_open = max(state.most_open, state.open_now)
        try:
            await handler(state, reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            state.open_now -= 1
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_connection, host, port, ssl=tls, backlog=4096)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def sender(
    addresses: list[str] | None = None, context: ssl.SSLContext | None = None, **options: Any
) -> GuardedHttp:
    """A sender allowed to reach HOST, which resolves to ``addresses`` (loopback)."""
    answers = addresses or ["127.0.0.1"]

    async def resolver(host: str, port: int) -> list[str]:
        return [answers[0]]

    return GuardedHttp(AddressPolicy(frozenset({HOST})), context, resolver, **options)


async def get(
    client: GuardedHttp,
    port: int,
    *,
    method: str = "GET",
    scheme: str = "http",
    timeout: float = 5.0,
    body: bytes | None = None,
) -> HttpResult:
    request = PreparedRequest(method, f"{scheme}://{HOST}:{port}/x", (), body)
    return await client.send(request, timeout=timeout, max_body=64 * 1024, follow_redirects=False)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())  # type: ignore[arg-type]


# --- reuse, and when a connection is never reused --------------------------------------------


def test_a_keep_alive_connection_carries_sequential_requests() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        client = sender()
        async with scripted(keep_alive) as server:
            outcomes = [(await get(client, server.port)).outcome for _ in range(5)]
            idle = client.transport.pool.idle
            await client.aclose()
            return outcomes, server.connections, idle

    outcomes, connections, idle = run(scenario)
    assert outcomes == ["success"] * 5
    assert connections == 1
    assert idle == 1


@pytest.mark.parametrize(
    "payload",
    [
        OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type"),
        OK.replace(b"HTTP/1.1", b"HTTP/1.0"),  # no keep-alive in HTTP/1.0 unless asked
    ],
    ids=["connection-close", "http-1.0"],
)
def test_a_server_that_closes_after_a_response_is_not_reused(payload: bytes) -> None:
    async def scenario() -> tuple[list[HttpResult], int, int]:
        client = sender()
        async with scripted(answer_once(payload, then_wait=1.0)) as server:
            results = [await get(client, server.port) for _ in range(3)]
            open_after = client.transport.pool.open
            await client.aclose()
            return results, server.connections, open_after

    results, connections, open_after = run(scenario)
    assert [r.body for r in results] == [{"tier": "gold"}] * 3
    assert connections == 3
    assert open_after == 0


def test_an_exchange_cancelled_mid_body_does_not_return_its_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nabc"

    async def scenario() -> tuple[str, str, int, int, int]:
        client = sender()
        async with scripted(answer_once(head, then_wait=10)) as server:
            timed_out = await get(client, server.port, timeout=0.3)
            pool = client.transport.pool
            counts = (pool.idle, pool.open)
            task = asyncio.create_task(get(client, server.port, timeout=5))
            for _ in range(100):  # until the server answered the head, at most 2 s
                await asyncio.sleep(0.02)
                if len(server.heads) == 2:
                    break
            await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
            return timed_out.outcome, str(task.cancelled()), *counts, pool.open

    outcome, cancelled, idle, open_after_timeout, open_after_cancel = run(scenario)
    assert outcome == "timeout"
    assert cancelled == "True"
    assert (idle, open_after_timeout, open_after_cancel) == (0, 0, 0)


def test_a_response_read_to_the_end_of_the_connection_is_read_whole_and_not_reused() -> None:
    payload = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + JSON

    async def scenario() -> tuple[list[Any], int]:
        client = sender()
        async with scripted(answer_once(payload)) as server:
            bodies = [(await get(client, server.port)).body for _ in range(2)]
            await client.aclose()
            return bodies, server.connections

    bodies, connections = run(scenario)
    assert bodies == [{"tier": "gold"}] * 2
    assert connections == 2


def test_chunked_bodies_are_read_and_the_connection_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"tie\r\n6\r\nr": "g\r\n5\r\nold"}\r\n0\r\n\r\n'
    )

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            writer.write(chunked)

    async def scenario() -> tuple[list[Any], int]:
        client = sender()
        async with scripted(handle) as server:
            bodies = [(await get(client, server.port)).body for _ in range(3)]
            await client.aclose()
            return bodies, server.connections

    assert run(scenario) == ([{"tier": "gold"}] * 3, 1)


def test_head_responses_have_no_body_and_keep_the_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n"

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            writer.write(head)

    async def scenario() -> tuple[list[tuple[str, Any]], int]:
        client = sender()
        async with scripted(handle) as server:
            results = [await get(client, server.port, method="HEAD") for _ in range(3)]
            await client.aclose()
            return [(r.outcome, r.body) for r in results], server.connections

    assert run(scenario) == ([("success", "")] * 3, 1)


def test_informational_responses_are_skipped() -> None:
    payload = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK
    )

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            writer.write(payload)

    async def scenario() -> tuple[str, int, Any, int]:
        client = sender()
        async with scripted(handle) as server:
            first = await get(client, server.port)
            second = await get(client, server.port)
            await client.aclose()
            return first.outcome, first.status or 0, second.body, server.connections

    assert run(scenario) == ("success", 200, {"tier": "gold"}, 1)


def test_a_kept_alive_connection_the_server_dropped_is_replaced_for_idempotent_methods_only() -> (
    None
):
    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        if await read_head(server, reader) is not None:
            writer.write(OK)
        await read_head(server, reader)  # the second request: dropped unanswered

    async def scenario() -> tuple[list[str], int]:
        client = sender()
        async with scripted(handle) as server:
            outcomes = [(await get(client, server.port)).outcome]
            outcomes.append((await get(client, server.port)).outcome)  # retried: new connection
            outcomes.append((await get(client, server.port, method="POST", body=b"{}")).outcome)
            await client.aclose()
            return outcomes, server.connections

    outcomes, connections = run(scenario)
    assert outcomes == ["success", "success", "connection_error"]  # the POST is not resent
    assert connections == 2


# --- addresses, certificates, expiry, bounds -------------------------------------------------


def test_a_name_vetted_to_a_new_address_does_not_reuse_the_old_connection() -> None:
    answers = ["127.0.0.1"]

    async def scenario() -> tuple[list[str], int, int]:
        client = sender(answers)
        async with scripted(keep_alive) as first:
            try:
                second_server = scripted(keep_alive, host="127.0.0.2", port=first.port)
                second = await second_server.__aenter__()
            except OSError:
                pytest.skip("127.0.0.2 is not a loopback address here")
            try:
                outcomes = [(await get(client, first.port)).outcome]
                answers[0] = "127.0.0.2"
                outcomes.append((await get(client, first.port)).outcome)
                outcomes.append((await get(client, first.port)).outcome)
            finally:
                await second_server.__aexit__(None, None, None)
            await client.aclose()
            return outcomes, len(first.heads), len(second.heads)

    outcomes, at_first, at_second = run(scenario)
    assert outcomes == ["success"] * 3
    assert (at_first, at_second) == (1, 2)


def test_a_certificate_for_another_name_is_a_tls_error(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def scenario() -> tuple[HttpResult, int, int]:
        client = sender(context=client_context)
        async with scripted(keep_alive, tls=server_context) as server:
            result = await get(client, server.port, scheme="https")
            pool = client.transport.pool
            counts = pool.open, len(server.heads)
            await client.aclose()
            return result, *counts

    result, open_after, heads = run(scenario)
    assert result.outcome == "tls_error", result
    assert "CERTIFICATE_VERIFY_FAILED" in str(result.error)
    assert (open_after, heads) == (0, 0)


def test_tls_keep_alive_reuses_one_verified_connection(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def scenario() -> tuple[list[str], int]:
        client = sender(context=client_context)
        async with scripted(keep_alive, tls=server_context) as server:
            outcomes = [(await get(client, server.port, scheme="https")).outcome for _ in range(4)]
            await client.aclose()
            return outcomes, server.connections

    assert run(scenario) == (["success"] * 4, 1)


def test_idle_connections_expire() -> None:
    async def scenario() -> tuple[int, int, int, int]:
        client = sender()
        client.transport.pool.idle_expiry = 0.2
        async with scripted(keep_alive) as server:
            await get(client, server.port)
            kept = client.transport.pool.idle
            for _ in range(50):  # until the sweep ran, at most 2.5 s
                await asyncio.sleep(0.05)
                if client.transport.pool.open == 0:
                    break
            after = client.transport.pool.idle, client.transport.pool.open
            await get(client, server.port)
            await client.aclose()
            return kept, *after, server.connections

    assert run(scenario) == (1, 0, 0, 2)


def test_the_pool_stays_bounded_under_2000_concurrent_runs() -> None:
    async def scenario() -> tuple[set[str], int, int, int]:
        client = sender(max_in_flight=20)
        async with scripted(keep_alive) as server:
            results = await asyncio.gather(
                *(get(client, server.port, timeout=60) for _ in range(2000))
            )
            pool = client.transport.pool
            counts = pool.open, server.most_open
            await client.aclose()
            return {r.outcome for r in results}, *counts, len(server.heads)

    outcomes, pool_open, most_open, requests = run(scenario)
    assert outcomes == {"success"}
    assert pool_open <= 20
    assert most_open <= 20
    assert requests == 2000


# --- hostile responses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (b"garbage\r\n\r\n", "connection_error"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", "connection_error"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
            "connection_error",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "connection_error"),  # cut short
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "connection_error"),
        (b"", "connection_error"),  # closed without a response
        (b"\xff\xfe\x00binary", "connection_error"),
    ],
    ids=["garbage", "huge-header", "two-lengths", "short-body", "bad-chunk", "empty", "binary"],
)
def test_broken_responses_are_outcomes(payload: bytes, outcome: str) -> None:
    async def scenario() -> tuple[HttpResult, int]:
        client = sender()
        async with scripted(answer_once(payload)) as server:
            result = await get(client, server.port, timeout=5)
            open_after = client.transport.pool.open
            await client.aclose()
            return result, open_after

    result, open_after = run(scenario)
    assert result.outcome == outcome, result
    assert open_after == 0


@pytest.mark.parametrize(
    "piece",
    [b"X-Endless: " + b"a" * 1000, b"a"],
    ids=["never-ending-header", "slowloris"],
)
def test_a_head_that_never_ends_is_bounded_by_the_deadline_or_the_head_limit(
    piece: bytes,
) -> None:
    async def drip(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        if await read_head(server, reader) is None:
            return
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(400):  # at most 400 pieces, 20 s
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05 if len(piece) == 1 else 0.005)

    async def scenario() -> tuple[HttpResult, float]:
        client = sender()
        async with scripted(drip) as server:
            started = time.monotonic()
            result = await get(client, server.port, timeout=1.0)
            elapsed = time.monotonic() - started
            await client.aclose()
            return result, elapsed

    result, elapsed = run(scenario)
    assert result.outcome in ("timeout", "connection_error"), result
    assert elapsed < 3.0


def test_a_body_dripped_slowly_is_bounded_by_the_deadline() -> None:
    async def drip(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        if await read_head(server, reader) is None:
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(200):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[HttpResult, float]:
        client = sender()
        async with scripted(drip) as server:
            started = time.monotonic()
            result = await get(client, server.port, timeout=0.5)
            elapsed = time.monotonic() - started
            await client.aclose()
            return result, elapsed

    result, elapsed = run(scenario)
    assert result.outcome == "timeout"
    assert elapsed < 2.0


@settings(max_examples=60)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda status, head, body: b"HTTP/1.1 " + status + b"\r\n" + head + b"\r\n\r\n" + body,
            st.sampled_from([b"200 OK", b"100 Continue", b"204 No", b"301 Moved", b"999 X", b"20"]),
            st.binary(max_size=120),
            st.binary(max_size=120),
        ),
    )
)
def test_any_bytes_from_the_server_end_in_an_outcome(payload: bytes) -> None:
    async def scenario() -> HttpResult:
        client = sender()
        async with scripted(answer_once(payload)) as server:
            result = await get(client, server.port, timeout=2)
            assert client.transport.pool.open <= 1
            await client.aclose()
            return result

    result = run(scenario)
    assert result.outcome in OUTCOMES, result


# --- a connection is reused only when nothing of one exchange can leak into the next ---------

#: A whole response of its own, sent where none was asked for: it must never answer a request.
SMUGGLED_JSON = b'{"tier": "SMUGGLED!"}'
SMUGGLED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(SMUGGLED_JSON)).encode()
    + b"\r\n\r\n"
    + SMUGGLED_JSON
)


def first_answer(payload: bytes, later: bytes = b"") -> Handler:
    """A keep-alive handler answering the first request with ``payload`` (then ``later``, in a
    segment of its own) and every other one with OK."""

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            if len(server.heads) > 1:
                writer.write(OK)
                continue
            writer.write(payload)
            if later:
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(later)

    return handle


@pytest.mark.parametrize(
    ("method", "payload", "later"),
    [
        ("GET", OK + SMUGGLED, b""),
        ("GET", OK, SMUGGLED),  # the extra response comes while the connection is idle
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n" + SMUGGLED, b""),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n", SMUGGLED),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 90\r\n\r\n" + SMUGGLED, b""),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 90\r\n\r\n", SMUGGLED),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 90\r\n\r\n" + SMUGGLED, b""),
    ],
    ids=["extra", "extra-later", "head", "head-later", "204", "204-later", "304"],
)
def test_bytes_after_a_response_never_answer_the_next_request(
    method: str, payload: bytes, later: bytes
) -> None:
    async def scenario() -> tuple[str, HttpResult, int, int]:
        client = sender()
        async with scripted(first_answer(payload, later)) as server:
            first = await get(client, server.port, method=method)
            await asyncio.sleep(0.2)  # the late bytes arrive while the connection is idle
            second = await get(client, server.port)  # another run's request
            open_after = client.transport.pool.open
            await client.aclose()
            return first.outcome, second, server.connections, open_after

    first, second, connections, open_after = run(scenario)
    assert first in ("success", "http_error")  # the 304
    assert (second.outcome, second.body) == ("success", {"tier": "gold"}), second
    assert connections == 2
    assert open_after == 1


def test_a_204_that_declares_a_body_closes_its_connection() -> None:
    async def late_body(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            if len(server.heads) == 1:
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 90\r\n\r\n")
            else:  # the 204's body, sent only once the next request came on the connection
                writer.write(SMUGGLED + OK if server.connections == 1 else OK)

    async def scenario() -> tuple[HttpResult, HttpResult, int]:
        client = sender()
        async with scripted(late_body) as server:
            first = await get(client, server.port)
            second = await get(client, server.port)
            await client.aclose()
            return first, second, server.connections

    first, second, connections = run(scenario)
    assert (first.outcome, first.status) == ("success", 204)
    assert (second.outcome, second.body, connections) == ("success", {"tier": "gold"}, 2)


def test_a_connection_is_not_reused_while_the_request_body_is_unsent() -> None:
    async def answer_early(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")  # the head only: the body is never read
        server.heads.append(head)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(5)

    async def scenario() -> tuple[str, int, int, str, int]:
        client = sender()
        async with scripted(answer_early) as server:
            first = await get(client, server.port, method="POST", body=b"x" * (16 << 20))
            idle = client.transport.pool.idle
            second = await get(client, server.port)
            await client.aclose()
            return first.outcome, idle, server.connections, second.outcome, len(server.heads)

    first, idle, connections, second, heads = run(scenario)
    assert (first, idle) == ("success", 0)
    assert (second, connections, heads) == ("success", 2, 2)  # the body's tail is no request


def test_a_response_with_both_lengths_is_invalid_and_its_connection_closed() -> None:
    both = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"tier": "gold"}\r\n0\r\n\r\n'
    )

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            writer.write(both)

    async def scenario() -> tuple[list[HttpResult], int, int]:
        client = sender()
        async with scripted(handle) as server:
            results = [await get(client, server.port) for _ in range(3)]
            open_after = client.transport.pool.open
            await client.aclose()
            return results, server.connections, open_after

    results, connections, open_after = run(scenario)
    assert [r.outcome for r in results] == ["invalid_response"] * 3
    assert "Content-Length and Transfer-Encoding" in (results[0].error or "")
    assert (connections, open_after) == (3, 0)


@pytest.mark.parametrize(
    ("method", "status", "outcome"),
    [("HEAD", b"200 OK", "success"), ("GET", b"304 Not Modified", "http_error")],
)
def test_a_response_without_a_body_may_declare_any_length(
    method: str, status: bytes, outcome: str
) -> None:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10000000\r\n\r\n"

    async def handle(server: Scripted, reader: Any, writer: asyncio.StreamWriter) -> None:
        while await read_head(server, reader) is not None:
            writer.write(head)

    async def scenario() -> tuple[list[tuple[str, Any]], int]:
        client = sender()
        async with scripted(handle) as server:
            results = [await get(client, server.port, method=method) for _ in range(2)]
            await client.aclose()
            return [(r.outcome, r.body) for r in results], server.connections

    assert run(scenario) == ([(outcome, "")] * 2, 1)


# --- what the request may not say ----------------------------------------------------------


@pytest.mark.parametrize("name", ["Host", "hOsT"])
def test_a_request_cannot_set_its_host_header(name: str) -> None:
    async def scenario() -> tuple[HttpResult, int]:
        client = sender()
        async with scripted(keep_alive) as server:
            url = f"http://{HOST}:{server.port}/x"
            request = PreparedRequest("GET", url, ((name, "internal.test"),))
            result = await client.send(request, timeout=5, max_body=1024, follow_redirects=False)
            await client.aclose()
            return result, server.connections

    result, connections = run(scenario)
    assert result.outcome == "invalid_request"
    assert f"the {name} header cannot be set" in (result.error or "")
    assert connections == 0


# --- the sender's caches ---------------------------------------------------------------------


def test_a_name_that_resolved_to_nothing_is_resolved_again() -> None:
    answers = [[], ["127.0.0.1"]]

    async def resolver(host: str, port: int) -> list[str]:
        return answers.pop(0)

    async def scenario() -> tuple[HttpResult, HttpResult]:
        client = GuardedHttp(AddressPolicy(frozenset({HOST})), None, resolver)
        async with scripted(keep_alive) as server:
            first = await get(client, server.port)
            second = await get(client, server.port)
            await client.aclose()
            return first, second

    first, second = run(scenario)
    assert first.outcome == "refused" and "did not resolve" in (first.error or "")
    assert (second.outcome, second.body) == ("success", {"tier": "gold"})


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(("url_chars", "header_chars"), [(10_000, 8_000), (900, 900)])
def test_the_caches_hold_a_few_mb_whatever_the_requests(url_chars: int, header_chars: int) -> None:
    import gc
    import tracemalloc

    port = closed_port()
    count = 1500  # distinct requests: many times what the caches keep (CACHE_CHARS)

    async def scenario() -> tuple[set[str], int]:
        client = sender()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        outcomes = set()
        for i in range(count):
            url = f"http://{HOST}:{port}/q?v={i}{'v' * url_chars}"
            request = PreparedRequest("GET", url, (("X-Caller", f"{i}{'x' * header_chars}"),))
            result = await client.send(request, timeout=2, max_body=1024, follow_redirects=False)
            outcomes.add(result.outcome)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        await client.aclose()
        return outcomes, retained

    outcomes, retained = run(scenario)
    assert outcomes == {"connection_error"}
    assert retained < 4_000_000, f"the caches hold {retained} bytes"


def test_a_head_with_a_secret_is_never_cached() -> None:
    import httpx

    from flowlang.runtime.secrets import Redactor

    secret = "sk-live-4f9a1c2e7b3d-http-pool-cache"
    Redactor().add(secret)  # a value some run used as a secret
    client = sender()
    plain = PreparedRequest("GET", f"https://{HOST}/a", (("X-Tier", "gold"),))
    carrying = PreparedRequest("GET", f"https://{HOST}/a", (("Authorization", f"Bearer {secret}"),))
    in_url = PreparedRequest("GET", f"https://{HOST}/a?key={secret}", ())
    for request in (plain, carrying, in_url):
        head = client._head(request, httpx.URL(request.url))
        assert head.target.startswith(b"/a")
    assert list(client._heads) == [(plain.method, plain.url, plain.headers, 0)]
