"""Plan: each step of a flow prepared once for the step loop, from its kind."""

from __future__ import annotations

__all__ = ["PlanWrapper", "StepPlan", "keep_plan", "plan_flow"]

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

from flowlang.flow.model import CompiledFlow, Step
from flowlang.kinds.base import Transition
from flowlang.kinds.call_control import run_host_action

#: For each step: the step, and either its planned plain call or its awaited executor.
StepPlan: TypeAlias = (
    "dict[str, tuple[Step, Callable[[Any], Transition] | None, "
    "Callable[[Step, Any], Awaitable[Transition]] | None]]"
)

#: A runtime's ``plan_wrapper`` (Python loop only): given a flow and a copy of its step plan
#: once per flow and runtime, it returns the plan the loop runs. It may wrap a step's plain
#: call to inspect the run before or after the step (flowlang.testing's condition coverage
#: does); it must not change what any step does.
PlanWrapper: TypeAlias = "Callable[[CompiledFlow, StepPlan], StepPlan]"


def plan_flow(steps: Mapping[str, Step]) -> StepPlan:
    """Prepare every step of a flow once: steps without I/O become plain calls (targets,
    builders and labels bound in closures); the others are awaited."""
    plan: StepPlan = {}
    for step_id, step in steps.items():
        kind = step.kind
        if kind.plan is not None:
            plan[step_id] = (step, kind.plan(step), None)
        else:
            plan[step_id] = (step, None, kind.execute or run_host_action)
    return plan


def keep_plan(plan: StepPlan) -> StepPlan:
    """The Python twin of the compiled ``compile_plan``: the Python loop runs the plan as it is."""
    return plan
