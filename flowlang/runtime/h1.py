"""HTTP/1.1 connections: one exchange at a time over an asyncio Protocol, framed by h11.

A connection is made to the address the guard vetted, with TLS verified for the host NAME
(SNI and certificate check use the name, never the address). It carries one request at a time
and says afterwards whether it may carry another (``reusable``): only when both sides finished
the message cleanly and the server did not ask to close. Errors are the few classes below, each
chained to its cause (an ``ssl.SSLError`` stays reachable through ``__cause__``); they are
private to the runtime's HTTP modules (flowlang's public exceptions live in flowlang.errors).
"""

from __future__ import annotations

__all__ = [
    "MAX_RESPONSE_HEAD",
    "Connection",
    "Response",
    "open_connection",
    "request_head",
]

import asyncio
import logging
import ssl
from dataclasses import dataclass

import h11

LOG = logging.getLogger("flowlang.http")
#: The largest response head (status line and headers) read; more is a protocol error.
MAX_RESPONSE_HEAD = 100 * 1024
#: Bytes received and not yet parsed past which the connection stops reading the socket.
READ_BUFFER_LIMIT = 256 * 1024


class _ExchangeError(Exception):
    """An exchange failed on the connection (the connection is not reused)."""


class _ConnectError(_ExchangeError):
    """No connection could be made (refused, unreachable, TLS handshake or certificate)."""


class _ConnectTimeoutError(_ExchangeError):
    """The connection was not made within the connect timeout."""


class _ReadError(_ExchangeError):
    """The connection broke while sending or reading."""


class _StaleConnectionError(_ReadError):
    """A kept-alive connection was closed by the server before it answered anything: the
    request may be sent again on a new connection (when it is idempotent)."""


class _RemoteProtocolError(_ExchangeError):
    """The server's bytes are not HTTP/1.1 (or break its framing)."""


class _LocalProtocolError(_ExchangeError):
    """The request cannot be written as HTTP/1.1 (h11 refuses it); nothing was sent."""


@dataclass(slots=True)
class Response:
    """A response head: status and headers (names as sent, in order)."""

    status: int
    headers: list[tuple[bytes, bytes]]


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> h11.Request:
    """A request head, checked by h11 (names, values, target); _LocalProtocolError when h11
    will not write it. Immutable: one head may be sent any number of times."""
    try:
        return h11.Request(method=method, target=target, headers=headers)
    except h11.LocalProtocolError as error:
        raise _LocalProtocolError(str(error)) from error


class _Receiver(asyncio.Protocol):
    """Buffers what the socket delivers until the connection asks for it."""

    __slots__ = ("chunks", "eof", "error", "paused", "size", "total", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        #: Bytes received over the connection's life.
        self.total = 0
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self.total += len(data)
        if self.size > READ_BUFFER_LIMIT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self.eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> bytes:
        """What arrived since the last call (waiting for something); b"" at the end."""
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise _ReadError(f"{type(self.error).__name__}: {self.error}") from self.error
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.size = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


def _no_content_with_body(response: h11.Response) -> bool:
    """Whether a 204 declares a body (RFC 9110 forbids it): a server that sends it anyway, now
    or later, would answer the next request with it. (A HEAD or 304 response may declare the
    representation's length: its connection is kept unless bytes follow it.)"""
    if response.status_code != 204:
        return False
    for name, value in response.headers:  # h11 lower-cases the names
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" \t0")):
            return True
    return False


class Connection:
    """One HTTP/1.1 connection; ``exchange`` it once, then ``reusable`` says whether again."""

    __slots__ = ("_h11", "_receiver", "_reusable", "idle_since", "transport")

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self.transport = transport
        self._receiver = receiver
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        #: When the connection went back to the pool (``loop.time()``).
        self.idle_since = 0.0
        #: False once the exchange showed the connection must not carry another.
        self._reusable = True

    @property
    def alive(self) -> bool:
        """Whether the idle connection may still carry a request: the server neither closed
        it nor sent anything unasked (received, or left over after the last response)."""
        receiver = self._receiver
        return not (
            receiver.eof
            or receiver.chunks
            or self._h11.trailing_data[0]
            or self.transport.is_closing()
        )

    async def _next_event(self) -> object:
        connection = self._h11
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                raise _RemoteProtocolError(str(error) or "malformed response") from error
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(await self._receiver.receive())

    async def send(self, head: h11.Request, body: bytes | None) -> Response:
        """Send a request and read the head of its final response (1xx ones are skipped)."""
        connection = self._h11
        try:
            data = connection.send(head)
            if body:
                data += connection.send(h11.Data(data=body))
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError as error:
            raise _LocalProtocolError(str(error)) from error
        assert data is not None
        if self._receiver.eof or self.transport.is_closing():
            raise _ReadError("the connection was closed before the request was sent")
        receiver = self._receiver
        before = receiver.total
        self.transport.write(data)
        while True:
            try:
                event = await self._next_event()
            except (_ReadError, _RemoteProtocolError) as error:
                if receiver.total == before and receiver.eof:
                    raise _StaleConnectionError(str(error)) from error.__cause__
                raise
            if type(event) is h11.Response:
                if self.transport.get_write_buffer_size() or _no_content_with_body(event):
                    self._reusable = False
                return Response(event.status_code, event.headers.raw_items())
            if type(event) is not h11.InformationalResponse:  # 1xx: the final one follows
                if receiver.total == before:
                    raise _StaleConnectionError("the server closed the connection before answering")
                raise _RemoteProtocolError("the server closed the connection without a response")

    async def next_chunk(self) -> bytes | None:
        """The next piece of the response body as sent (framing removed, codings kept), or
        None at its end."""
        while True:
            event = await self._next_event()
            if type(event) is h11.Data:
                return bytes(event.data)
            if type(event) is h11.EndOfMessage:
                return None
            # ConnectionClosed (h11 raises first when a framed body is cut short)
            raise _RemoteProtocolError("the server closed the connection mid-body")

    def finish(self) -> bool:
        """After a whole exchange: ready the connection for the next one; whether it can.

        Never when bytes follow the response (they would answer the next request), when part
        of our request is still unsent or was when the answer came (the server may take its
        tail for the next request), or after a 204 that declared a body."""
        connection = self._h11
        if (
            self._reusable
            and connection.our_state is h11.DONE
            and connection.their_state is h11.DONE
            and not self.transport.get_write_buffer_size()
        ):
            connection.start_next_cycle()
            return self.alive  # no bytes after the response, nothing received, still open
        return False

    def close(self) -> None:
        """Drop the connection at once (no TLS close_notify: HTTP/1.1 needs none)."""
        self.transport.abort()


async def open_connection(
    address: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_name: str,
    timeout: float,
) -> Connection:
    """Connect to ``address``; with ``ssl_context``, TLS for ``server_name`` (SNI, verified)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, receiver = await loop.create_connection(
                _Receiver,
                address,
                port,
                ssl=ssl_context,
                server_hostname=server_name if ssl_context is not None else None,
            )
    except TimeoutError as error:
        raise _ConnectTimeoutError(f"no connection within {timeout:g}s") from error
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise _ConnectError(f"{type(error).__name__}: {error}") from error
    assert isinstance(transport, asyncio.Transport)
    if LOG.isEnabledFor(logging.DEBUG):
        LOG.debug(
            "connected to %s port %s as %s (tls %s)",
            address,
            port,
            server_name,
            ssl_context is not None,
        )
    return Connection(transport, receiver)
