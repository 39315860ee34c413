"""Registry: every step kind, one line each; the only place that lists them.

Adding a step kind: its module under flowlang/kinds/ (defining ``KIND``) and its line below.
"""

from __future__ import annotations

__all__ = ["STEP_KINDS", "step_kind"]

from collections.abc import Iterable, Mapping

from flowlang.kinds.base import StepKind, registered

#: The modules of the step kinds under flowlang/kinds/, in the order the reference lists them.
_KIND_MODULES = (
    "http_request",
    "condition_splitter",
    "business_hours",
    "collect_input",
    "menu",
    "set_variables",
    "say",
    "play",
    "transfer",
    "voicemail",
    "hangup",
)


def _by_name(names: Iterable[str]) -> Mapping[str, StepKind]:
    return registered("flowlang.kinds", names, StepKind)


#: Every step kind by the name documents write in ``type:``, in the order the reference lists them.
STEP_KINDS: Mapping[str, StepKind] = _by_name(_KIND_MODULES)


def step_kind(name: str) -> StepKind:
    """The kind called ``name``; KeyError when there is none."""
    return STEP_KINDS[name]
