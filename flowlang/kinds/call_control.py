"""Call control: the steps handed to the host (say, play, transfer, voicemail, hangup)."""

from __future__ import annotations

__all__ = ["host_kind", "run_host_action", "text_limit"]

from collections.abc import Mapping
from typing import Any

from flowlang.expr.limits import Limits
from flowlang.expr.shared import limited_text
from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.kinds.base import HostAction, RunView, StepKind, Transition

_DEFAULT_MAX_OUTPUT = Limits().max_output


def text_limit(value: Any) -> int:
    """The longest text a host action's field may render: its engine's ``max_output`` (the
    limit its template text already has; a list or map is refused before its JSON is built)."""
    template = getattr(value, "template", value)  # a field is a Template or a Value
    return getattr(template, "max_output", None) or _DEFAULT_MAX_OUTPUT


async def run_host_action(step: Step, run: RunView) -> Transition:
    """Tell the host what to do (say, play, transfer, voicemail, hangup), then go on or end."""
    action = step.kind.host
    assert action is not None
    field, outcome, ends = action.field, action.outcome, action.ends
    value = ""
    if field is None:
        await run.instruct(step.type, step.id)
    else:
        value = limited_text(step.fields[field].render(run.scope), text_limit(step.fields[field]))
        await run.instruct(step.type, step.id, field, value)
    if ends:
        return ("end", None, outcome, None if field is None else {field: value})
    target = step.fields.get("next")
    return ("go" if target else "complete", target, outcome, None)


def host_kind(name: str, summary: str, fields: Mapping[str, Field], action: HostAction) -> StepKind:
    """A call-control kind: its instruction is recorded, then awaited on the host's method of
    the kind's name (``host.say(text, step=...)``, ``host.hangup(step=...)``): a new
    call-control kind is also a method of flowlang.runtime.host.Host."""
    return StepKind(name, summary, fields, host=action, twin="HostStep")
