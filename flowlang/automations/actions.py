"""Actions: build each action's request and read its provider's answer.

One HTTP layer serves call flows and automations: requests are PreparedRequests sent through
the same guarded sender. Provider base URLs are configurable, so tests and staging point them
at loopback impersonations.
"""

from __future__ import annotations

__all__ = [
    "PROVIDER_VARIABLES",
    "ActionError",
    "Providers",
    "check_provider_url",
    "interpret",
    "prepare_action",
]

import base64
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flowlang.automations.fields import E164
from flowlang.automations.workflow import Action
from flowlang.errors import ActionError
from flowlang.expr.values import OutputTooLong, to_text
from flowlang.http_rules import (
    PreparedRequest,
    check_header,
    encode_body,
    header_value_problem,
    origin_of,
    render_endpoint,
)
from flowlang.runtime.http import HttpResult

#: Slack errors worth retrying (others are permanent: a bad channel or token stays bad).
_SLACK_RETRYABLE = frozenset(
    {"ratelimited", "fatal_error", "internal_error", "request_timeout", "service_unavailable"}
)


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


def _text(name: str, value: Any, limit: int) -> str:
    """The text of field ``name``; ActionError when a list or map would make it longer than
    ``limit`` characters (measured before the text is built)."""
    try:
        return to_text(value, limit)
    except OutputTooLong:
        raise ActionError(f"{name} is longer than {limit} characters") from None


def _phone(name: str, value: Any, limit: int) -> str:
    text = _text(name, value, limit).strip()
    if not E164.match(text):
        raise ActionError(f"{name} must be an E.164 number such as +14155550100, not {text!r}")
    return text


def _json_request(
    url: str, headers: list[tuple[str, str]], body: Any, limit: int
) -> PreparedRequest:
    headers = [*headers, ("Content-Type", "application/json")]
    return PreparedRequest("POST", url, tuple(headers), encode_body(body, limit))


def prepare_action(
    action: Action, scope: Mapping[str, Any], providers: Providers, key: str, limit: int
) -> PreparedRequest:
    """The request for one action and one event; ActionError or RequestError when it cannot be."""
    fields = action.fields
    idempotency = [("Idempotency-Key", key)]
    if action.type == "api_request":
        url = render_endpoint(fields["endpoint"].parts, scope)
        headers = [
            (name, check_header(name, template.render(scope)))
            for name, template in fields["headers"]
        ]
        headers += idempotency
        method = fields["method"]
        if method == "GET" and fields["values"]:
            raise ActionError("a GET request has no body; put values in the endpoint")
        if method == "GET":
            return PreparedRequest(method, url, tuple(headers))
        return PreparedRequest(
            method,
            url,
            tuple([*headers, ("Content-Type", "application/json")]),
            encode_body(fields["values"].build(scope), limit),
        )
    if action.type == "send_sms":
        auth = fields["auth"]
        credentials = (
            f"{_text('auth.key_id', auth['key_id'].render(scope), limit)}:"
            f"{_text('auth.key_secret', auth['key_secret'].render(scope), limit)}"
        )
        token = base64.b64encode(credentials.encode()).decode()
        message: dict[str, Any] = {
            "sender": _phone("sender", fields["sender"].render(scope), limit),
            "recipient": _phone("recipient", fields["recipient"].render(scope), limit),
            "text": _text("text", fields["text"].render(scope), limit),
        }
        return _json_request(
            f"{providers.sms_base_url}/messages",
            [("Authorization", f"Basic {token}"), *idempotency],
            message,
            limit,
        )
    if action.type == "slack_notification":
        token_text = _text("token", fields["token"].render(scope), limit)
        token = check_header("Authorization", f"Bearer {token_text}")
        post: dict[str, Any] = {
            "channel": _text("channel", fields["channel"].render(scope), limit),
            "text": _text("text", fields["text"].render(scope), limit),
            "mrkdwn": bool(fields["use_markdown"]),
        }
        for name in ("icon_emoji", "icon_url"):
            if fields.get(name) is not None:
                post[name] = _text(name, fields[name].render(scope), limit)
        return _json_request(
            f"{providers.slack_base_url}/chat.postMessage",
            [("Authorization", token), *idempotency],
            post,
            limit,
        )
    raise ActionError(f"{action.type} is not a single request (see flowlang.automations.speech)")


def interpret(action: Action, result: HttpResult) -> tuple[str, Any, str | None]:
    """``(outcome, action result, error)``: outcome is delivered, retry or failed.

    The result of an api_request is the response body (JSON parsed, else text); of Slack,
    ``ok``, ``ts`` and ``channel``.
    """
    status = result.status
    if result.outcome in ("timeout", "connection_error"):
        return "retry", None, result.error
    if status is not None and (status in (408, 425, 429) or 500 <= status < 600):
        return "retry", None, result.error or f"HTTP {status}"
    if result.outcome != "success":
        return "failed", None, result.error
    body = result.body
    if action.type == "slack_notification":
        if not isinstance(body, Mapping) or body.get("ok") is not True:
            code = body.get("error", "unknown_error") if isinstance(body, Mapping) else "not_json"
            outcome = "retry" if code in _SLACK_RETRYABLE else "failed"
            return outcome, None, f"Slack answered ok: false ({code})"
        return "delivered", {"ok": True, "ts": body.get("ts"), "channel": body.get("channel")}, None
    return "delivered", body, None
