"""Condition Splitter: the first branch whose conditions all hold, else ``otherwise``."""

from __future__ import annotations

__all__ = ["KIND", "compared_rows", "holding_rows", "plan_condition_splitter"]

from collections.abc import Callable, Mapping
from typing import Any

from flowlang.expr.values import truthy
from flowlang.flow.fields import Field
from flowlang.flow.model import Row, Step
from flowlang.kinds.base import RunView, StepKind, Transition


def compared_rows(rows: tuple[Row, ...], scope: Mapping[str, Any]) -> list[list[Any]]:
    """The values each row of a taken branch compared, for the trace."""
    return [
        [
            row.property.render(scope),
            row.operator,
            row.value.render(scope) if row.value else None,
        ]
        for row in rows
    ]


def holding_rows(rows: tuple[Row, ...], scope: Mapping[str, Any]) -> list[list[Any]] | None:
    """Rows that could not be compiled, tested one by one: what they compared when all hold."""
    compared = []
    for row in rows:
        holds, left, right = row.holds(scope)
        if not holds:
            return None
        compared.append([left, row.operator, right])
    return compared


def plan_condition_splitter(step: Step) -> Callable[[RunView], Transition]:
    """The first branch whose rows all hold (or whose expression is true), else ``otherwise``.

    The trace records why as data: the compared values, formatted only when shown.
    """
    branches = [
        (branch.test, branch.expression, branch.next, f"branch {index}", branch.rows)
        for index, branch in enumerate(step.fields["branches"])
    ]
    otherwise = step.fields["otherwise"]

    def run_step(run: RunView) -> Transition:
        scope = run.scope
        for test, expression, target, label, rows in branches:
            if expression is not None:
                value = expression.render(scope)
                if truthy(value):
                    return ("go", target, label, {"expression": expression.source, "value": value})
            elif test is not None:
                if test(scope):
                    return ("go", target, label, {"rows": compared_rows(rows, scope)})
            else:
                compared = holding_rows(rows, scope)
                if compared is not None:
                    return ("go", target, label, {"rows": compared})
        return ("go", otherwise, "otherwise", None)

    return run_step


def branch_edge(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """``branches[i]`` for the outcome ``branch i``; ``otherwise``."""
    if outcome.startswith("branch "):
        return f"branches[{outcome[7:]}]"
    return outcome if outcome == "otherwise" else None


KIND = StepKind(
    "condition_splitter",
    "route the call by conditions on its data",
    {
        "branches": Field(
            "branches", required=True, description="tried in order; the first that holds wins"
        ),
        "otherwise": Field("step", required=True, description="the failover branch"),
    },
    outcome_edge=branch_edge,
    plan=plan_condition_splitter,
    twin="SplitterStep",
)
