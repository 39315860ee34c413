"""Set variables: store values in ``vars.*`` (dotted names nest; maps merge copy-on-write)."""

from __future__ import annotations

__all__ = ["KIND", "plan_set_variables"]

from collections.abc import Callable

from flowlang.flow.fields import THEN, Field
from flowlang.flow.model import Step
from flowlang.kinds.base import RunView, StepKind, Transition
from flowlang.rundata import store_variables


def plan_set_variables(step: Step) -> Callable[[RunView], Transition]:
    """Set ``vars.*``; nested maps merge copy-on-write; values within the data limits."""
    build = step.fields["variables"].build
    names = [key for key, _ in step.fields["variables"].entries]
    target = step.fields.get("next")
    kind = "go" if target else "complete"
    step_id = step.id

    def run_step(run: RunView) -> Transition:
        store_variables(run, step_id, build(run.scope))
        return (kind, target, "set", {"variables": list(names)})

    return run_step


KIND = StepKind(
    "set_variables",
    "store values in vars.*",
    {
        "variables": Field("fields", required=True, description="vars.* to set; dotted names nest"),
        "next": THEN,
    },
    plan=plan_set_variables,
    twin="SetVariablesStep",
)
