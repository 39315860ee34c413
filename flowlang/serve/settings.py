"""Serve settings: what a `flowlang serve` deployment configures, checked when it is made."""

from __future__ import annotations

__all__ = ["TWILIO_BUDGET", "ServeSettings", "require_secrets", "secret_values"]

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flowlang.settings import check_counts, check_durations, check_names

if TYPE_CHECKING:
    from flowlang.runtime.secrets import SecretsProvider

#: Seconds Twilio waits for a webhook's answer before it gives up (error 11205).
TWILIO_BUDGET = 15.0

#: The most threads ServeSettings.store_threads may ask for.
MAX_STORE_THREADS = 64


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """A deployment's settings. Secrets are named, never held: each name is looked up in the
    secrets provider (``FLOWLANG_SECRET_<NAME>`` by default).

    ``public_url``: the https URL Twilio calls (``https://ivr.example.com`` or with a path
    prefix); signatures are checked against it, never against the request's Host header.
    ``twilio_keys``: the names of the auth tokens (or webhook signing keys) Twilio signs with,
    newest first: any of them verifies (rotation). ``signatures``: False turns the check off
    (local experiments only; `flowlang serve` says so loudly).
    """

    public_url: str
    twilio_keys: tuple[str, ...] = ()
    signatures: bool = True
    #: ``<Say voice=... language=...>``: None leaves the attribute out (Twilio's default).
    voice: str | None = None
    language: str | None = None
    #: Transfer targets the flow names, mapped to what Twilio dials (``queue:billing`` ->
    #: ``+14155550100``); unmapped targets follow the default rules (see flowlang.serve.twiml).
    transfer_targets: dict[str, str] = field(default_factory=dict)
    #: Said when a run fails or a call cannot go on; then ``fallback_target`` (a transfer target)
    #: or, when None, the call is hung up.
    apology: str = "Sorry, something went wrong on our side."
    fallback_target: str | None = None
    #: ``<Record maxLength>`` of voicemail, seconds.
    voicemail_max_length: int = 120
    #: How long a waiting call's state is kept (and the longest a state may wait to resume).
    call_ttl: float = 4 * 3600.0
    #: The deadline of one run segment (one webhook's work): under Twilio's 15 s.
    segment_deadline: float = 12.0
    #: Names of the secrets that sign call states, newest first (any verifies). Several
    #: replicas sharing a store must share them; with none, a process signs with a random key
    #: of its own (one process, in-process store only).
    state_keys: tuple[str, ...] = ()
    #: The largest webhook form body Twilio's requests may have, bytes.
    max_form_bytes: int = 64 * 1024
    #: POST /events: the largest body, bytes; Standard Webhooks secrets (names, newest first);
    #: bearer tokens (names) for senders that cannot sign; the allowed clock skew, seconds.
    max_event_bytes: int = 256 * 1024
    event_secrets: tuple[str, ...] = ()
    event_tokens: tuple[str, ...] = ()
    event_tolerance: float = 300.0
    #: Events dispatched at once; accepted events beyond this wait their turn (recorded).
    dispatch_concurrency: int = 64
    #: Accepted events not yet dispatched at most; beyond, POST /events answers 503 (send
    #: again later) instead of holding more in memory.
    max_pending_events: int = 10_000
    #: Threads that record events in the events store (and one more for the periodic
    #: take-over). At most 16 events per thread wait for one; beyond, POST /events answers
    #: 503 at once (and those waiting when a recording fails, the store locked by another
    #: process say, are answered 503 then, rather than each waiting busy_timeout in turn).
    store_threads: int = 4
    #: Seconds a request's body may take to arrive (a slow sender holds a connection no longer).
    body_timeout: float = 10.0
    #: Seconds a duplicate webhook waits for the first copy's answer before it is refused.
    duplicate_wait: float = 14.0
    #: On shutdown: seconds given to event dispatches and background requests to finish.
    drain_timeout: float = 10.0
    #: Seconds between two looks for open events of processes on the events store that died
    #: (taken over and finished here; a starting process also looks once).
    takeover_interval: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url) if isinstance(self.public_url, str) else None
        if (
            parts is None
            or parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"ServeSettings.public_url must be an https:// URL without query or fragment "
                f"(the address Twilio calls), not {self.public_url!r}"
            )
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        check_names(self, ("twilio_keys", "event_secrets", "event_tokens", "state_keys"))
        check_counts(
            self,
            (
                "voicemail_max_length",
                "max_form_bytes",
                "max_event_bytes",
                "dispatch_concurrency",
                "max_pending_events",
                "store_threads",
            ),
        )
        check_durations(
            self,
            (
                "call_ttl",
                "segment_deadline",
                "event_tolerance",
                "duplicate_wait",
                "drain_timeout",
                "body_timeout",
                "takeover_interval",
            ),
        )
        if self.store_threads > MAX_STORE_THREADS:
            raise ValueError(
                f"ServeSettings.store_threads must be at most {MAX_STORE_THREADS} (each holds a "
                f"connection to the events store), not {self.store_threads!r}"
            )
        if self.segment_deadline >= TWILIO_BUDGET:
            raise ValueError(
                f"ServeSettings.segment_deadline must be under Twilio's {TWILIO_BUDGET:g} s, "
                f"not {self.segment_deadline!r}"
            )
        if self.signatures and not self.twilio_keys:
            raise ValueError(
                "ServeSettings.twilio_keys must name at least one Twilio auth token "
                "(or set signatures=False for a local experiment)"
            )


def secret_values(provider: SecretsProvider, names: Iterable[str]) -> list[str]:
    """The values of the secrets ``names`` that are set (looked up now: a rotated secret takes
    effect without a restart)."""
    return [value for name in names if (value := provider.get(name))]


def require_secrets(
    provider: SecretsProvider, names: Iterable[str], what: str = "", why: str = ""
) -> None:
    """ValueError naming the first of ``names`` that is not set (never a value): ``what`` says
    what the secret is, ``why`` what would happen without it."""
    for name in names:
        if not provider.get(name):
            raise ValueError(f"secret {name!r}{what} is not set ({provider.describe(name)}){why}")
