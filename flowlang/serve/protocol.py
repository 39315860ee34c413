"""The HTTP/1.1 protocol `flowlang serve` runs: uvicorn's, with a deadline on request headers.

uvicorn times out an idle keep-alive connection, but not one that sends a request's headers
slowly (or never finishes them): enough such connections, which need no credentials, would
exhaust the server's file descriptors. Here a request's headers must all arrive within
``HEADER_TIMEOUT`` seconds of the connection, or of the first byte after the previous
response; otherwise the connection is closed. (The body has its own deadline:
``ServeSettings.body_timeout``.)
"""

from __future__ import annotations

__all__ = ["HEADER_TIMEOUT", "HeaderDeadlineProtocol"]

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a request's headers may take to arrive.
HEADER_TIMEOUT = 10.0


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request's headers are late."""

    header_timeout = HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        #: The request cycle when the timer started: a new one means the headers arrived.
        self._timed_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_timer()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._timed_cycle:
            self._stop_timer()  # a request's headers are all here

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _start_timer(self) -> None:
        self._stop_timer()
        self._timed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is self._timed_cycle and not self.transport.is_closing():
            self.transport.close()
