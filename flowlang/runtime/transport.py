"""Transport: one exchange on a pooled connection keyed by host NAME and the address vetted for it.

Connecting to a vetted IP by putting the IP in the URL would make a pool key its connections by
IP, so a connection whose certificate was verified for one name could carry a request for
another name served from the same address (a shared CDN or hosting IP), whose certificate was
never checked. Here the Host header, the TLS server name and the pool key keep the name, and
the socket connects only to the address the guard vetted for that name (part of the key too:
a name vetted to a new address never reuses a connection to the old one).
"""

from __future__ import annotations

__all__ = ["IDEMPOTENT_METHODS", "Exchange", "GuardedTransport"]

import logging
import ssl

import h11

from flowlang.runtime.connections import ConnectionPool, PoolKey
from flowlang.runtime.h1 import LOG, Connection, Response, _StaleConnectionError

#: Methods sent again on a new connection when a kept-alive one turns out closed (RFC 9110).
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Exchange:
    """A response head and its body still on the connection; ``close`` it (always)."""

    __slots__ = ("_connection", "_done", "_key", "_pool", "response")

    def __init__(
        self, pool: ConnectionPool, key: PoolKey, connection: Connection, response: Response
    ) -> None:
        self._pool = pool
        self._key = key
        self._connection: Connection | None = connection
        self._done = False
        self.response = response

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as sent, or None at its end."""
        assert self._connection is not None
        chunk = await self._connection.next_chunk()
        if chunk is None:
            self._done = True
        return chunk

    def close(self) -> None:
        """Give the connection back: kept only after a whole, clean exchange."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(self._key, connection, self._done and connection.finish())


class GuardedTransport:
    """Sends a request to a vetted address over a pooled HTTP/1.1 connection (certificates
    verified against ``ssl_context``; no proxies, no environment)."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self.pool = ConnectionPool(ssl_context, max_connections)

    async def send(
        self,
        key: PoolKey,
        head: h11.Request,
        body: bytes | None,
        connect_timeout: float,
    ) -> Exchange:
        """Send the request on a connection for ``key``; the exchange with the response head.
        A kept-alive connection that the server had closed is replaced once for idempotent
        methods; any other failure raises an ``h1.ExchangeError`` (or the OSError)."""
        pool = self.pool
        for attempt in (1, 2):
            connection, reused = await pool.acquire(key, connect_timeout)
            try:
                if LOG.isEnabledFor(logging.DEBUG):
                    LOG.debug(
                        "request %s %s to %s://%s:%s via %s (reused %s) headers %r",
                        head.method.decode(),
                        head.target.decode("ascii", "replace"),
                        *key,
                        reused,
                        head.headers.raw_items(),
                    )
                response = await connection.send(head, body)
            except _StaleConnectionError:
                pool.release(key, connection, False)
                if reused and attempt == 1 and head.method in IDEMPOTENT_METHODS:
                    continue
                raise
            except BaseException:  # an error or a cancellation: the connection is not reused
                pool.release(key, connection, False)
                raise
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("response %s headers %r", response.status, response.headers)
            return Exchange(pool, key, connection, response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every idle connection."""
        await self.pool.aclose()
