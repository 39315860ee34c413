"""slack_notification: post a message to a Slack channel (``chat.postMessage``)."""

from __future__ import annotations

__all__ = ["KIND"]

from collections.abc import Mapping
from typing import Any

from flowlang.automations.kinds.base import Action, ActionKind, Outcome, json_request, text
from flowlang.automations.providers import Providers
from flowlang.flow.fields import Field
from flowlang.http_rules import PreparedRequest, check_header
from flowlang.runtime.http import HttpResult

#: Slack errors worth retrying (others are permanent: a bad channel or token stays bad).
RETRYABLE = frozenset(
    {"ratelimited", "fatal_error", "internal_error", "request_timeout", "service_unavailable"}
)


def prepare(
    action: Action, scope: Mapping[str, Any], providers: Providers, key: str, limit: int
) -> PreparedRequest:
    """``POST {slack_base_url}/chat.postMessage`` with the bot token."""
    fields = action.fields
    bearer = text("token", fields["token"].render(scope), limit)
    token = check_header("Authorization", f"Bearer {bearer}")
    post: dict[str, Any] = {
        "channel": text("channel", fields["channel"].render(scope), limit),
        "text": text("text", fields["text"].render(scope), limit),
        "mrkdwn": bool(fields["use_markdown"]),
    }
    for name in ("icon_emoji", "icon_url"):
        if fields.get(name) is not None:
            post[name] = text(name, fields[name].render(scope), limit)
    return json_request(
        f"{providers.slack_base_url}/chat.postMessage",
        [("Authorization", token), ("Idempotency-Key", key)],
        post,
        limit,
    )


def interpret(result: HttpResult) -> Outcome:
    """Slack answers 200 with ``ok: false`` when it refuses: retried only for the errors in
    RETRYABLE. The result is ``ok``, ``ts`` and ``channel``."""
    body = result.body
    if not isinstance(body, Mapping) or body.get("ok") is not True:
        code = body.get("error", "unknown_error") if isinstance(body, Mapping) else "not_json"
        outcome = "retry" if code in RETRYABLE else "failed"
        return outcome, None, f"Slack answered ok: false ({code})"
    return "delivered", {"ok": True, "ts": body.get("ts"), "channel": body.get("channel")}, None


KIND = ActionKind(
    "slack_notification",
    "post a message to a Slack channel; the result is ok, ts and channel",
    {
        "token": Field("template", required=True, examples=("<<secrets.slack_token>>",)),
        "channel": Field("template", required=True, examples=("#support",)),
        "text": Field(
            "template", required=True, examples=("Missed call from <<event.properties.name>>",)
        ),
        "icon_emoji": Field("template", examples=(":telephone_receiver:",)),
        "icon_url": Field("template", examples=("https://example.com/icon.png",)),
        "use_markdown": Field("bool", default=True),
    },
    secret_fields=("token",),
    prepare=prepare,
    interpret=interpret,
)
