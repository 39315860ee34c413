"""Registry: every workflow action kind, one line each; the only place that lists them.

Adding an action kind: its module under flowlang/automations/kinds/ (defining ``KIND``) and its
line below.
"""

from __future__ import annotations

__all__ = ["ACTION_KINDS", "action_kind"]

from collections.abc import Mapping

from flowlang.automations.kinds.base import ActionKind
from flowlang.kinds.base import registered

#: The modules of the action kinds under flowlang/automations/kinds/, in reference order.
_KIND_MODULES = (
    "api_request",
    "send_sms",
    "slack_notification",
    "transcribe_recording",
)


#: Every action kind by the name workflows write in ``type:``, in reference order.
ACTION_KINDS: Mapping[str, ActionKind] = registered(
    "flowlang.automations.kinds", _KIND_MODULES, ActionKind
)


def action_kind(name: str) -> ActionKind:
    """The kind called ``name``; KeyError when there is none."""
    return ACTION_KINDS[name]
