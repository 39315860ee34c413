"""transcribe_recording: transcribe the uploaded recording with Google Speech-to-Text.

An attempt is several requests (fetch, recognize, polls: flowlang.automations.speech), so the
kind performs whole attempts instead of preparing one request.
"""

from __future__ import annotations

__all__ = ["KIND"]

from collections.abc import Mapping
from typing import Any

from flowlang.automations.audio import ENCODINGS
from flowlang.automations.kinds.base import Action, ActionKind, AttemptContext
from flowlang.automations.speech import transcribe
from flowlang.automations.triggers import RECORDING_UPLOADED
from flowlang.flow.fields import Field
from flowlang.flow.source import Pointer
from flowlang.http_rules import origin_of
from flowlang.kinds.base import Checker
from flowlang.runtime.http import HttpResult

SPEECH_MODELS = ("default", "command_and_search", "phone_call", "video")


def check_recording_origin(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, owner: str
) -> None:
    """The headers (credentials) go only to a fixed origin: ``recording_origin`` is plain
    ``https://host[:port]`` text, required with headers. Kept as an origin."""
    template = fields.get("recording_origin")
    if "recording_origin" not in raw:
        if raw.get("headers"):  # as written: a header with a fault of its own still counts
            checker.error(
                "headers for the recording server need recording_origin (the fixed "
                "https://host they may be sent to)",
                (*pointer, "headers"),
                owner,
                "headers",
            )
        return
    if template is None:  # reported already
        return
    text = str(template.render({})) if not template.tree.holes else ""
    try:
        origin = origin_of(text) if text else None
    except ValueError as error:
        origin, problem = None, str(error)
    else:
        problem = "it must be fixed text (no <<...>>)"
    if origin is None or text.rstrip("/").count("/") != 2:
        checker.error(
            f"recording_origin is https://host[:port] only: {problem}"
            if origin is None
            else "recording_origin is https://host[:port] only, without a path",
            (*pointer, "recording_origin"),
            owner,
            "recording_origin",
        )
        return
    fields["recording_origin"] = origin


def check_recording_url(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, owner: str
) -> None:
    """A recording_url written as plain http (its host fixed text) reaches only hosts the run
    allows, as an endpoint: the recording is fetched through the same guarded sender."""
    template = fields.get("recording_url")
    hosts = checker.http_hosts
    if template is None or hosts is None:
        return
    parts = template.tree.parts
    prefix = parts[0] if parts and isinstance(parts[0], str) else ""
    if prefix[:7].lower() != "http://":
        return
    try:
        origin = origin_of(prefix)
    except ValueError:
        return  # the host is templated or malformed: the run refuses it
    if origin.host.strip("[]") not in hosts:
        checker.error(
            f"plain http to {origin.host} is not allowed: a recording_url must use https:// or "
            "gs:// (the runtime refuses plain http except to hosts it is told to allow)",
            (*pointer, "recording_url"),
            owner,
            "recording_url",
        )


def check_transcription(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, owner: str
) -> None:
    """recording_origin with headers, and where a plain http recording_url may go."""
    check_recording_origin(checker, fields, raw, pointer, owner)
    check_recording_url(checker, fields, raw, pointer, owner)


async def perform(
    action: Action, scope: Mapping[str, Any], context: AttemptContext
) -> tuple[str, Any, str | None, HttpResult | None]:
    """One attempt: the speech API key (the providers' secret), then fetch, recognize, poll."""
    providers = context.providers
    # One use for the attempt: the API key and the headers' secrets, each looked up once
    # (missing ones in the headers fail the fetch).
    scope, secrets = scope["secrets"].use(scope)
    name = providers.speech_key_secret
    api_key = secrets.get(name)
    if api_key is None:
        return "failed", None, f"{action.id}: secret {name!r} is not set", None
    return await transcribe(
        action,
        scope,
        context.http,
        base_url=providers.speech_base_url,
        api_key=api_key,
        settings=context.speech,
        key=context.key,
        timeout=context.timeout,
        clock=context.clock,
        operations=context.operations,
        started=context.started,
    )


KIND = ActionKind(
    "transcribe_recording",
    "transcribe the uploaded recording; the result is transcript and confidence",
    {
        "language": Field("template", default="en-US"),
        "model": Field("enum", default="phone_call", choices=SPEECH_MODELS),
        "enhanced": Field("bool", default=False),
        "recording_url": Field(
            "template",
            description="https:// or gs:// URL; default event.properties.recording_url",
            examples=("<<event.properties.recording_url>>", "gs://recordings/call.wav"),
        ),
        "recording_origin": Field(
            "template",
            description="fixed https://host[:port] that headers may be sent to",
            examples=("https://recordings.example.com",),
        ),
        "headers": Field(
            "headers",
            default={},
            description="sent to recording_origin only (credentials)",
            examples=({"Authorization": "Bearer <<secrets.recordings_token>>"},),
        ),
        "encoding": Field("enum", choices=ENCODINGS, description="default: from the header"),
        "sample_rate": Field(
            "int", minimum=8000, maximum=48000, description="Hz", examples=(8000, 16000)
        ),
        "duration": Field(
            "template",
            description="seconds; default the header, else event.properties.duration",
            examples=("<<event.properties.duration>>", "42"),
        ),
        "timeout": Field(
            "duration", default=15.0, minimum=0.05, maximum=30.0, description="per request"
        ),
    },
    secret_fields=("headers",),
    check=check_transcription,
    schema_rules={
        "if": {"required": ["headers"], "properties": {"headers": {"minProperties": 1}}},
        "then": {"required": ["recording_origin"]},
    },
    perform=perform,
    trigger=RECORDING_UPLOADED,
)
