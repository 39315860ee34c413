"""Play: play an audio file to the caller."""

from __future__ import annotations

__all__ = ["KIND"]

from flowlang.flow.fields import THEN, Field
from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind(
    "play",
    "play an audio file to the caller",
    {"url": Field("template", required=True), "next": THEN},
    HostAction("url", "played", False),
)
