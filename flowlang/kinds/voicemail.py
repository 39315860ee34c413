"""Voicemail: send the caller to a voicemail box; the run ends."""

from __future__ import annotations

__all__ = ["KIND"]

from flowlang.flow.fields import Field
from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind(
    "voicemail",
    "send the caller to a voicemail box; the run ends",
    {"mailbox": Field("template", default="")},
    HostAction("mailbox", "voicemail", True),
)
