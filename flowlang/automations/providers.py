"""Providers: where the SMS, Slack and speech-to-text APIs live, and how their URLs are checked.

Provider base URLs are configurable, so tests and staging point them at loopback
impersonations.
"""

from __future__ import annotations

__all__ = ["PROVIDER_VARIABLES", "Providers", "check_provider_url"]

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flowlang.http_rules import header_value_problem, origin_of

#: The environment variables that point each provider elsewhere (a sandbox, a region).
PROVIDER_VARIABLES = {
    "sms_base_url": "FLOWLANG_SMS_URL",
    "slack_base_url": "FLOWLANG_SLACK_URL",
    "speech_base_url": "FLOWLANG_SPEECH_URL",
}
_MAX_PROVIDER_URL = 2048


def check_provider_url(
    name: str, url: str, *, allow_hosts: frozenset[str] | Iterable[str] = frozenset()
) -> str:
    """``url`` as a provider base URL (without a trailing ``/``); ValueError naming ``name``
    (a variable or option) when it is not an absolute https URL with a fixed origin.

    Plain http only for a host in ``allow_hosts``, as the runtime's own rule; no credentials,
    query, fragment or template; the address guard still judges the address on every send.
    """
    if not isinstance(url, str):
        raise ValueError(f"{name} must be a URL such as https://api.example.com/v1")
    text = url.strip()
    if not text or len(text) > _MAX_PROVIDER_URL:
        raise ValueError(
            f"{name} must be a URL such as https://api.example.com/v1"
            if not text
            else f"{name} is longer than {_MAX_PROVIDER_URL} characters"
        )
    problem = header_value_problem(text)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    try:
        origin = origin_of(text)
    except ValueError as error:
        raise ValueError(f"{name}: {error} (for example https://api.example.com/v1)") from None
    if any(mark in text for mark in ("?", "#", "<<", ">>", "{{", "}}", " ")):
        raise ValueError(
            f"{name} is a base URL: scheme, host, optional port and path, without a query, "
            "fragment, space or template"
        )
    allowed = {host.lower() for host in allow_hosts}
    if origin.scheme != "https" and origin.host.lower() not in allowed:
        raise ValueError(
            f"{name} must use https ({origin.host} is not an allowed host for plain http)"
        )
    return text.rstrip("/")


@dataclass(frozen=True)
class Providers:
    """Where the SMS, Slack and speech-to-text APIs live (loopback in tests and demos)."""

    sms_base_url: str = "https://sms.example.com/v1"
    slack_base_url: str = "https://slack.com/api"
    speech_base_url: str = "https://speech.googleapis.com/v1"
    #: The secret holding the speech API key (sent as X-Goog-Api-Key).
    speech_key_secret: str = "speech_api_key"

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        allow_hosts: frozenset[str] | Iterable[str] = frozenset(),
    ) -> Providers:
        """The defaults, with each base URL that FLOWLANG_SMS_URL, FLOWLANG_SLACK_URL or
        FLOWLANG_SPEECH_URL sets (checked by :func:`check_provider_url`; ValueError naming the
        variable). An empty variable counts as unset."""
        changes = {}
        for field_name, variable in PROVIDER_VARIABLES.items():
            value = environ.get(variable)
            if value:
                changes[field_name] = check_provider_url(variable, value, allow_hosts=allow_hosts)
        return dataclasses.replace(cls(), **changes)
