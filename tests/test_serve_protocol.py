"""The header deadline of flowlang serve's HTTP protocol: a connection whose request headers do
not all arrive in time is closed; complete requests, kept-alive ones too, are served."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flowlang.serve.protocol import HeaderDeadlineProtocol


class _Quick(HeaderDeadlineProtocol):
    header_timeout = 0.3


async def _hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False


def test_late_headers_close_the_connection_and_complete_requests_are_served() -> None:
    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/", _hello)])
        config = uvicorn.Config(app, http=_Quick, log_config=None, lifespan="off")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            # headers never finished: closed after the deadline
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            began = time.monotonic()
            assert await _closed_within(reader, 3)
            assert time.monotonic() - began < 2
            writer.close()
            # nothing sent at all: closed too
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await _closed_within(reader, 3)
            writer.close()
            # a complete request is served; the next request on the connection, late, is cut
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"hello"), 3)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.5)  # past the deadline, but idle: kept alive (its own timer)
            writer.write(b"GET / HTTP/1.1\r\nHo")
            assert await _closed_within(reader, 3)
            writer.close()
            # slow but in time: served
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for part in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
                writer.write(part)
                await asyncio.sleep(0.05)
            assert (await asyncio.wait_for(reader.readuntil(b"hello"), 3)).startswith(
                b"HTTP/1.1 200"
            )
            writer.close()
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    asyncio.run(main())
