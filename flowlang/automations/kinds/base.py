"""Action kinds: what a workflow action kind is — fields, secret fields, checks, its request
and how its provider's answer reads.

An action kind is one module under ``flowlang/automations/kinds/`` that defines ``KIND`` (an
:class:`ActionKind`) and one line in ``registry.py``. The workflow loader, the checks of
``secrets`` uses and the dispatcher read the registry; no other code tests an action's type.
An action is a :class:`flowlang.flow.model.Step` of its kind (its id is the action's name).
"""

from __future__ import annotations

__all__ = [
    "COMMON_FIELDS",
    "E164",
    "Action",
    "ActionError",
    "ActionKind",
    "AttemptContext",
    "Interpret",
    "Outcome",
    "Perform",
    "Prepare",
    "delivered",
    "json_request",
    "phone",
    "text",
]

import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from flowlang.automations.providers import Providers
from flowlang.automations.speech import Clock, SpeechSettings
from flowlang.errors import ActionError
from flowlang.expr.values import OutputTooLong, to_text
from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.http_rules import PreparedRequest, encode_body
from flowlang.kinds.base import Kind
from flowlang.runtime.http import HttpResult, HttpSender

#: A phone number in E.164: +, then 7 to 15 digits, not starting with 0.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

#: Fields every action has, before its kind's own.
COMMON_FIELDS: Mapping[str, Field] = {
    "name": Field(
        "name",
        required=True,
        description="unique in the workflow; actions.<name>.result",
        examples=("log_in_crm", "tell_team"),
    ),
    "stop_on_failure": Field("bool", default=True, description="a failure stops the later actions"),
}


#: What an attempt came to: ``(outcome, result, error)``; outcome is delivered, retry or failed.
Outcome: TypeAlias = tuple[str, Any, "str | None"]
#: Build the request of one action for one event: ``prepare(action, scope, providers, key,
#: limit)``; ActionError, RequestError or ValueFormatError when it cannot be.
Prepare: TypeAlias = Callable[["Action", Mapping[str, Any], Providers, str, int], PreparedRequest]
#: Read a provider's successful answer (2xx): the outcome and the action's result.
Interpret: TypeAlias = Callable[[HttpResult], Outcome]


@dataclass(frozen=True)
class AttemptContext:
    """What an action that is more than one request (``perform``) may use for one attempt."""

    http: HttpSender
    providers: Providers
    speech: SpeechSettings
    #: The idempotency key of the action for this event (the same on every attempt).
    key: str
    timeout: float
    clock: Clock
    #: Long-running operations by idempotency key (polled again by a retry).
    operations: MutableMapping[str, str]
    #: Told the name of a long-running operation once it is started (to record it in the store).
    started: Callable[[str], None]


#: An attempt of several requests: ``(outcome, result, error, last response)``.
Perform: TypeAlias = Callable[
    ["Action", Mapping[str, Any], AttemptContext],
    Awaitable[tuple[str, Any, "str | None", "HttpResult | None"]],
]


@dataclass(frozen=True)
class ActionKind(Kind):
    """One kind of workflow action: everything the loader and the dispatcher need to know.

    Exactly one way to perform it: ``prepare`` and ``interpret`` (one request, its answer read
    by ``interpret`` when it succeeded; retries and failures by status are common to all), or
    ``perform`` (an attempt of several requests). ``trigger``: the only trigger it runs on.
    """

    prepare: Prepare | None = None
    interpret: Interpret | None = None
    perform: Perform | None = None
    trigger: str | None = None
    #: JSON Schema rules across the kind's fields, added to its action's schema (a GET has no
    #: ``values``); the kind's check enforces the same.
    schema_rules: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        single = self.prepare is not None or self.interpret is not None
        if single == (self.perform is not None):
            raise TypeError(
                f"action kind {self.name!r} needs exactly one way to perform it: prepare and "
                "interpret, or perform"
            )
        if single and (self.prepare is None or self.interpret is None):
            raise TypeError(f"action kind {self.name!r} needs both prepare and interpret")
        clash = [name for name in self.fields if name in COMMON_FIELDS or name == "type"]
        if clash:
            raise TypeError(f"action kind {self.name!r}: fields {clash} are common to all")


#: One compiled action: a Step of its action kind (``action.id`` is its name).
Action: TypeAlias = Step[ActionKind]


def text(name: str, value: Any, limit: int) -> str:
    """The text of field ``name``; ActionError when a list or map would make it longer than
    ``limit`` characters (measured before the text is built)."""
    try:
        return to_text(value, limit)
    except OutputTooLong:
        raise ActionError(f"{name} is longer than {limit} characters") from None


def phone(name: str, value: Any, limit: int) -> str:
    """The E.164 number of field ``name``; ActionError when it is not one."""
    number = text(name, value, limit).strip()
    if not E164.match(number):
        raise ActionError(f"{name} must be an E.164 number such as +14155550100, not {number!r}")
    return number


def json_request(
    url: str, headers: list[tuple[str, str]], body: Any, limit: int
) -> PreparedRequest:
    """A POST of ``body`` as JSON."""
    headers = [*headers, ("Content-Type", "application/json")]
    return PreparedRequest("POST", url, tuple(headers), encode_body(body, limit))


def delivered(result: HttpResult) -> Outcome:
    """A successful answer delivers the action; its result is the body (JSON parsed, else
    text)."""
    return "delivered", result.body, None
