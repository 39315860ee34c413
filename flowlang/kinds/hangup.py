"""Hangup: end the call; the run ends."""

from __future__ import annotations

__all__ = ["KIND"]


from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind(
    "hangup",
    "end the call; the run ends",
    {},
    HostAction(None, "hung up", True),
)
