"""HTTP settings: the limits and policy of outbound HTTP that flows and automations share.

:class:`HttpSettings` holds them, checks them and makes the guarded sender;
``RuntimeSettings`` (flows) and ``DeliverySettings`` (automations) extend it, each with its own
defaults (SECURITY.md) redeclared.
"""

from __future__ import annotations

__all__ = ["HttpSettings"]

import ssl
from dataclasses import dataclass

from flowlang.runtime.http import GuardedHttp, Resolver, guarded_sender
from flowlang.settings import check_counts, check_durations


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """Outbound HTTP: hosts allowed plain http and private addresses, the connect timeout,
    body limits, redirects and requests in flight (defaults: a flow's, see SECURITY.md)."""

    #: Hosts that may be reached over plain http and at private addresses (tests, sidecars).
    allow_hosts: frozenset[str] = frozenset()
    connect_timeout: float = 3.0
    max_response_body: int = 64 * 1024
    max_request_body: int = 64 * 1024
    max_redirects: int = 3
    #: Requests sent at once (also the connection pool's size); more wait in a queue, within
    #: their deadline.
    max_requests_in_flight: int = 100

    def __post_init__(self) -> None:
        check_counts(self, ("max_requests_in_flight",))
        check_counts(self, ("max_response_body", "max_request_body", "max_redirects"), 0)
        check_durations(self, ("connect_timeout",))

    def sender(self, ssl_context: ssl.SSLContext | None, resolver: Resolver | None) -> GuardedHttp:
        """The guarded sender these settings describe (certificates checked against
        ``ssl_context``, or the default CA bundle when None); close it with ``aclose``."""
        return guarded_sender(
            ssl_context,
            self.allow_hosts,
            resolver,
            self.connect_timeout,
            self.max_redirects,
            self.max_requests_in_flight,
        )
