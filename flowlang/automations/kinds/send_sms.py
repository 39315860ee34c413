"""send_sms: send a text message through the SMS provider (basic authentication)."""

from __future__ import annotations

__all__ = ["KIND"]

import base64
from collections.abc import Mapping
from typing import Any

from flowlang.automations.kinds.base import (
    E164,
    Action,
    ActionKind,
    delivered,
    json_request,
    phone,
    text,
)
from flowlang.automations.providers import Providers
from flowlang.engine import Template
from flowlang.flow.fields import Field
from flowlang.flow.source import Pointer
from flowlang.http_rules import PreparedRequest
from flowlang.kinds.base import Checker


def check_numbers(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, owner: str
) -> None:
    """Constant numbers are checked now (templated ones when the action runs)."""
    for name in ("sender", "recipient"):
        template = fields.get(name)
        if isinstance(template, Template) and not template.tree.holes:
            number = str(template.render({})).strip()
            if not E164.match(number):
                checker.error(
                    f"{name} must be an E.164 number such as +14155550100, not {number!r}",
                    (*pointer, name),
                    owner,
                    name,
                )


def prepare(
    action: Action, scope: Mapping[str, Any], providers: Providers, key: str, limit: int
) -> PreparedRequest:
    """``POST {sms_base_url}/messages`` with sender, recipient and text."""
    fields = action.fields
    auth = fields["auth"]
    credentials = (
        f"{text('auth.key_id', auth['key_id'].render(scope), limit)}:"
        f"{text('auth.key_secret', auth['key_secret'].render(scope), limit)}"
    )
    token = base64.b64encode(credentials.encode()).decode()
    message: dict[str, Any] = {
        "sender": phone("sender", fields["sender"].render(scope), limit),
        "recipient": phone("recipient", fields["recipient"].render(scope), limit),
        "text": text("text", fields["text"].render(scope), limit),
    }
    return json_request(
        f"{providers.sms_base_url}/messages",
        [("Authorization", f"Basic {token}"), ("Idempotency-Key", key)],
        message,
        limit,
    )


KIND = ActionKind(
    "send_sms",
    "send a text message; the result is the provider's answer",
    {
        "sender": Field(
            "template", required=True, description="E.164 number", examples=("+14155550100",)
        ),
        "recipient": Field(
            "template",
            required=True,
            description="E.164 number",
            examples=("<<event.properties.external_number>>", "+14155550123"),
        ),
        "text": Field("template", required=True, examples=("Sorry we missed your call.",)),
        "auth": Field(
            "auth",
            required=True,
            description="key_id and key_secret",
            examples=(
                {"key_id": "<<secrets.sms_key_id>>", "key_secret": "<<secrets.sms_key_secret>>"},
            ),
        ),
    },
    secret_fields=("auth",),
    check=check_numbers,
    prepare=prepare,
    interpret=delivered,
)
