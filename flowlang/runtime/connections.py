"""Connection pool: keep-alive HTTP/1.1 connections by scheme, host NAME, port and vetted address.

The key keeps the name, so a connection whose certificate was verified for one name never
carries a request for another name served from the same address (a shared CDN or hosting IP);
and it keeps the address, so once the guard vets a name to a new address, connections to the
old one are never used for it again. Acquire and release cost O(1) whatever the number of
connections: idle connections wait per key in insertion-ordered dicts (the newest is reused
first, the oldest expires or is evicted first). The pool has no waiting list: the sender's FIFO
semaphore in front bounds the connections in use, and the pool bounds the open ones.
"""

from __future__ import annotations

__all__ = ["IDLE_EXPIRY", "ConnectionPool", "PoolKey"]

import asyncio
import ssl

from flowlang.runtime.h1 import Connection, open_connection

#: (scheme, host name, port, vetted address)
PoolKey = tuple[str, str, int, str]
#: Seconds an idle connection is kept (httpx's default keep-alive expiry).
IDLE_EXPIRY = 5.0


class ConnectionPool:
    """Idle keep-alive connections, at most ``max_connections`` open in all."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        max_idle: int | None = None,
        idle_expiry: float = IDLE_EXPIRY,
    ) -> None:
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_idle = max_connections if max_idle is None else max_idle
        self.idle_expiry = idle_expiry
        #: Connections open now: idle ones and those carrying an exchange.
        self.open = 0
        self._idle: dict[PoolKey, dict[Connection, None]] = {}
        self._idle_all: dict[Connection, PoolKey] = {}  # oldest release first
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def idle(self) -> int:
        """Idle connections kept now."""
        return len(self._idle_all)

    async def acquire(self, key: PoolKey, connect_timeout: float) -> tuple[Connection, bool]:
        """A connection for ``key`` and whether it was reused (else it is new)."""
        idle = self._idle.get(key)
        if idle:
            deadline = asyncio.get_running_loop().time() - self.idle_expiry
            while idle:
                connection = idle.popitem()[0]  # the newest: the likeliest still open
                del self._idle_all[connection]
                if connection.alive and connection.idle_since > deadline:
                    if not idle:
                        del self._idle[key]
                    return connection, True
                self._drop(connection)
            del self._idle[key]
        while self.open >= self.max_connections and self._idle_all:
            self._evict_oldest()
        self.open += 1
        scheme, name, port, address = key
        try:
            connection = await open_connection(
                address,
                port,
                ssl_context=self.ssl_context if scheme == "https" else None,
                server_name=name,
                timeout=connect_timeout,
            )
        except BaseException:
            self.open -= 1
            raise
        return connection, False

    def release(self, key: PoolKey, connection: Connection, reusable: bool) -> None:
        """Take back a connection after its exchange: kept when ``reusable``, else closed."""
        if not reusable or self._closed or self.max_idle == 0:
            self._drop(connection)
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(key, {})[connection] = None
        self._idle_all[connection] = key
        while len(self._idle_all) > self.max_idle:
            self._evict_oldest()
        if self._sweep is None:
            self._sweep = loop.call_later(self.idle_expiry, self._expire)

    def _drop(self, connection: Connection) -> None:
        self.open -= 1
        connection.close()

    def _evict_oldest(self) -> None:
        connection, key = next(iter(self._idle_all.items()))
        del self._idle_all[connection]
        idle = self._idle[key]
        del idle[connection]
        if not idle:
            del self._idle[key]
        self._drop(connection)

    def _expire(self) -> None:
        """Close the connections idle longer than the expiry; come back for the next one."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.idle_expiry
        while self._idle_all:
            oldest = next(iter(self._idle_all))
            if oldest.idle_since > deadline:
                self._sweep = loop.call_at(oldest.idle_since + self.idle_expiry, self._expire)
                return
            self._evict_oldest()

    async def aclose(self) -> None:
        """Close every idle connection; those in use close when their exchange ends."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle_all:
            self._evict_oldest()
        await asyncio.sleep(0)  # let the transports finish closing their sockets
