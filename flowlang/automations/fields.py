"""Fields: the declarative table of workflow action types (the same form as call-flow steps)."""

from __future__ import annotations

__all__ = ["ACTION_COMMON", "ACTION_FIELDS", "E164", "FORMATS", "SPEECH_MODELS"]

import re

from flowlang.automations.audio import ENCODINGS
from flowlang.flow.fields import HTTP_METHODS, Field

#: A phone number in E.164: +, then 7 to 15 digits, not starting with 0.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

#: Formats of api_request values, as the seed defines them.
FORMATS = ("number", "string", "boolean", "auto")
SPEECH_MODELS = ("default", "command_and_search", "phone_call", "video")

#: Fields every action has.
ACTION_COMMON: dict[str, Field] = {
    "name": Field(
        "name", required=True, description="unique in the workflow; actions.<name>.result"
    ),
    "stop_on_failure": Field("bool", default=True, description="a failure stops the later actions"),
}

ACTION_FIELDS: dict[str, dict[str, Field]] = {
    "api_request": {
        "endpoint": Field("endpoint", required=True, description="https URL; values are encoded"),
        "method": Field("enum", default="POST", choices=HTTP_METHODS),
        "headers": Field("headers", default={}),
        "values": Field(
            "values", default=[], description="key, value and format of each body entry"
        ),
        "timeout": Field("duration", default=15.0, minimum=0.05, maximum=30.0),
    },
    "send_sms": {
        "sender": Field("template", required=True, description="E.164 number"),
        "recipient": Field("template", required=True, description="E.164 number"),
        "text": Field("template", required=True),
        "auth": Field("auth", required=True, description="key_id and key_secret"),
    },
    "slack_notification": {
        "token": Field("template", required=True),
        "channel": Field("template", required=True),
        "text": Field("template", required=True),
        "icon_emoji": Field("template"),
        "icon_url": Field("template"),
        "use_markdown": Field("bool", default=True),
    },
    "transcribe_recording": {
        "language": Field("template", default="en-US"),
        "model": Field("enum", default="phone_call", choices=SPEECH_MODELS),
        "enhanced": Field("bool", default=False),
        "recording_url": Field(
            "template", description="https:// or gs:// URL; default event.properties.recording_url"
        ),
        "recording_origin": Field(
            "template", description="fixed https://host[:port] that headers may be sent to"
        ),
        "headers": Field(
            "headers", default={}, description="sent to recording_origin only (credentials)"
        ),
        "encoding": Field("enum", choices=ENCODINGS, description="default: from the header"),
        "sample_rate": Field("int", minimum=8000, maximum=48000, description="Hz"),
        "duration": Field(
            "template", description="seconds; default the header, else event.properties.duration"
        ),
        "timeout": Field(
            "duration", default=15.0, minimum=0.05, maximum=30.0, description="per request"
        ),
    },
}
