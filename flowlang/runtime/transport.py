"""Transport: connections keyed by host name, each made only to an address the guard vetted.

Connecting to a vetted IP by putting the IP in the URL would make the connection pool key its
connections by IP, so a connection whose certificate was verified for one name could carry a
request for another name served from the same address (a shared CDN or hosting IP), whose
certificate was never checked. Here the URL keeps the name (the pool key, the Host header and
the TLS server name), and the network backend connects that name only to the address the guard
last vetted for it.
"""

from __future__ import annotations

__all__ = ["GuardedTransport", "VettedAddresses"]

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

#: Names remembered at once; a name forgotten before its connection is made fails to connect.
MAX_VETTED_NAMES = 10_000


class VettedAddresses(httpcore.AsyncNetworkBackend):
    """A network backend that connects ``(name, port)`` only to the address vetted for it."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._backend = backend or httpcore.AnyIOBackend()
        self._vetted: dict[tuple[str, int], str] = {}

    def vet(self, host: str, port: int, address: str) -> None:
        """Connect ``host:port`` to ``address`` from now on (the guard has checked it)."""
        key = (host, port)
        self._vetted.pop(key, None)
        self._vetted[key] = address
        if len(self._vetted) > MAX_VETTED_NAMES:  # redirects can name any host: stay bounded
            del self._vetted[next(iter(self._vetted))]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = self._vetted.get((host, port))
        if address is None:
            raise httpcore.ConnectError(f"no vetted address for {host}:{port}")
        return await self._backend.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (request mapping, exception mapping) over a pool that connects through
    ``VettedAddresses``. No proxies, no environment, HTTP/1.1, certificates verified."""

    def __init__(self, ssl_context: ssl.SSLContext | None, max_connections: int) -> None:
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        limits = httpx.Limits(  # idle connections close after keepalive_expiry (5 s)
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        super().__init__(verify=context, trust_env=False, limits=limits)
        self.addresses = VettedAddresses()
        # The one place we reach into httpx: its pool, rebuilt with our network backend
        # (httpx has no parameter for it). tests/test_http.py checks the pool is this one.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=self.addresses,
        )
