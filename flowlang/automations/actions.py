"""Actions: build each action's request and read its provider's answer, through its kind.

One HTTP layer serves call flows and automations: requests are PreparedRequests sent through
the same guarded sender. What an action means is its kind's (flowlang.automations.kinds);
this module adds what is common to all: the secrets of one use and the outcome by status.
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

from collections.abc import Mapping
from typing import Any

from flowlang.automations.formats import ValueFormatError
from flowlang.automations.kinds.base import Action, ActionError, Outcome
from flowlang.automations.providers import PROVIDER_VARIABLES, Providers, check_provider_url
from flowlang.http_rules import PreparedRequest, RequestError
from flowlang.runtime.http import HttpResult


def prepare_action(
    action: Action, scope: Mapping[str, Any], providers: Providers, key: str, limit: int
) -> PreparedRequest:
    """The request for one action and one event (an action whose kind prepares one); each
    secret is looked up once. ActionError, RequestError (naming the secrets that are not set)
    or ValueFormatError when it cannot be."""
    prepare = action.kind.prepare
    if prepare is None:
        raise ActionError(f"a {action.type} action is not a single request")
    request: PreparedRequest = scope["secrets"].prepare(
        scope,
        lambda used: prepare(action, used, providers, key, limit),
        (ActionError, RequestError, ValueFormatError),
    )
    return request


def interpret(action: Action, result: HttpResult) -> Outcome:
    """``(outcome, action result, error)``: outcome is delivered, retry or failed.

    Timeouts, connection errors, 408, 425, 429 and 5xx are retried; any other failure is
    permanent; a success is read by the action's kind (Slack's ``ok: false`` …).
    """
    status = result.status
    if result.outcome in ("timeout", "connection_error"):
        return "retry", None, result.error
    if status is not None and (status in (408, 425, 429) or 500 <= status < 600):
        return "retry", None, result.error or f"HTTP {status}"
    if result.outcome != "success" or action.kind.interpret is None:
        return "failed", None, result.error
    return action.kind.interpret(result)
