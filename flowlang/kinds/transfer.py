"""Transfer: hand the call to a queue, an agent or a number; the run ends."""

from __future__ import annotations

__all__ = ["KIND"]

from flowlang.flow.fields import Field
from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind(
    "transfer",
    "hand the call to a queue, an agent or a number; the run ends",
    {"target": Field("template", required=True, description="queue, agent or number")},
    HostAction("target", "transferred", True),
)
