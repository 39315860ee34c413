"""Say: say text to the caller (text-to-speech)."""

from __future__ import annotations

__all__ = ["KIND"]

from flowlang.flow.fields import THEN, Field
from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind(
    "say",
    "say text to the caller (text-to-speech)",
    {"text": Field("template", required=True), "next": THEN},
    HostAction("text", "said", False),
)
