"""Condition coverage: whether each row of each condition_splitter branch (and each branch
written as one expression) was seen true and seen false over the runs of a flow's tests.

A run tests a splitter's branches in order only until one holds; condition coverage needs
every row of every branch at each visit. :class:`ConditionCoverage` gets there through the
runtime's ``plan_wrapper`` (see :class:`flowlang.runtime.runner.Runtime`), on the Python loop
only, the way AWS Step Functions' TestState inspects a state at a chosen level without
changing what it does: the splitter steps of the flow's plan are wrapped so that, before the
step runs, every row is evaluated on its own against a copy of the run's scope roots, and the
outcomes are counted. The step itself then runs exactly as planned (same branch, trace and
instructions). A row whose evaluation raises (strict mode, a failing filter) is counted as
``raised``, neither true nor false; the run goes on as it would have (the step raises or not,
as without the wrapper).

Steps that test conditions are found by their fields (a field holding
:class:`~flowlang.flow.model.Branch` values), not by their type's name.

A workflow's conditions are one branch: :class:`WorkflowConditionCoverage` counts them per
event (matching an event changes nothing, so it needs no seam).
"""

from __future__ import annotations

__all__ = [
    "ConditionCount",
    "ConditionCoverage",
    "MissingCondition",
    "WorkflowConditionCoverage",
]

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flowlang.automations.workflow import CompiledWorkflow
from flowlang.expr.values import truthy
from flowlang.flow.model import Branch, CompiledFlow, Row, Step, Value
from flowlang.graph.model import FlowGraph
from flowlang.runtime.plan import StepPlan

#: The longest condition text the table shows (the JSON keeps it whole).
TABLE_TEXT = 60

#: The ``secrets`` root the evaluations see: none (the checker refuses secrets in conditions;
#: an evaluation never looks one up, so the run's redactor is never touched).
_NO_SECRETS: Mapping[str, str] = {}


@dataclass(frozen=True)
class MissingCondition:
    """An outcome no run saw: a row (``row`` None: the branch's expression) never ``true`` or
    never ``false``."""

    step: str
    branch: int
    row: int | None
    text: str
    missing: Literal["true", "false"]


@dataclass
class ConditionCount:
    """One row (or a branch's expression) and how often it was seen true, false, or raised."""

    step: str
    branch: int
    row: int | None
    text: str
    true: int = 0
    false: int = 0
    raised: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: where, the text and the three counts."""
        return {
            "step": self.step,
            "branch": self.branch,
            "row": self.row,
            "text": self.text,
            "true": self.true,
            "false": self.false,
            "raised": self.raised,
        }


def _value_text(value: Value | None) -> str:
    if value is None:
        return ""
    template: Any = value.template
    if template is not None:
        return str(template.source)
    literal = value.literal
    return literal if isinstance(literal, str) else json.dumps(literal, ensure_ascii=False)


def _row_text(row: Row) -> str:
    parts = [_value_text(row.property), row.operator]
    if row.value is not None:
        parts.append(_value_text(row.value))
    return " ".join(parts)


def _branches(step: Step[Any]) -> list[Branch]:
    """The branches a step tests (those of its fields that hold Branch values)."""
    found: list[Branch] = []
    for value in step.fields.values():
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], Branch):
            found.extend(item for item in value if isinstance(item, Branch))
    return found


def _conditions(branches: Sequence[Branch]) -> list[tuple[int, int | None, str]]:
    """Each condition of the branches: its branch, its row (None: the branch's expression)
    and its text, in order; a run is counted only against a step whose list is the same."""
    found: list[tuple[int, int | None, str]] = []
    for index, branch in enumerate(branches):
        if branch.expression is not None:
            found.append((index, None, str(getattr(branch.expression, "source", ""))))
        else:
            found.extend((index, row, _row_text(item)) for row, item in enumerate(branch.rows))
    return found


Test = Callable[[Mapping[str, Any]], Any]


def _row_test(row: Row) -> Test:
    def holds(scope: Mapping[str, Any]) -> Any:
        return row.holds(scope)[0]

    return holds


def _expression_test(render: Callable[[Mapping[str, Any]], Any]) -> Test:
    def holds(scope: Mapping[str, Any]) -> bool:
        return truthy(render(scope))

    return holds


def _bool_test(render: Callable[[Mapping[str, Any]], Any]) -> Test:
    def holds(scope: Mapping[str, Any]) -> bool:
        return bool(render(scope))

    return holds


def _tests(branches: Sequence[Branch]) -> list[Test]:
    """One test per condition, in the order of :meth:`ConditionCoverage.conditions`."""
    tests: list[Test] = []
    for branch in branches:
        expression = branch.expression
        if expression is not None:
            tests.append(_expression_test(expression.render))
        else:
            tests.extend(_row_test(row) for row in branch.rows)
    return tests


class _Conditions:
    """Counts of conditions and what is read of them: the missing outcomes, the ratio, JSON
    and the table (a flow's, or a workflow's)."""

    #: ``flow`` or ``workflow``: the key of the name in :meth:`to_json`.
    document = "flow"

    def __init__(self, name: str) -> None:
        self.name = name
        #: Every condition, in step, branch and row order.
        self.conditions: list[ConditionCount] = []

    def missing(self) -> list[MissingCondition]:
        """The outcomes no run saw, in step, branch and row order (``true`` before ``false``)."""
        missing: list[MissingCondition] = []
        for count in self.conditions:
            where = (count.step, count.branch, count.row, count.text)
            if not count.true:
                missing.append(MissingCondition(*where, "true"))
            if not count.false:
                missing.append(MissingCondition(*where, "false"))
        return missing

    @property
    def ratio(self) -> tuple[int, int]:
        """(outcomes seen, outcomes possible): two per condition."""
        seen = sum((count.true > 0) + (count.false > 0) for count in self.conditions)
        return seen, 2 * len(self.conditions)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for ``coverage.json``: the ratio, every condition's counts, the missing."""
        seen, possible = self.ratio
        return {
            self.document: self.name,
            "seen": seen,
            "possible": possible,
            "percent": _percent(seen, possible),
            "conditions": [count.to_json() for count in self.conditions],
            "missing": [
                {
                    "step": item.step,
                    "branch": item.branch,
                    "row": item.row,
                    "text": item.text,
                    "missing": item.missing,
                }
                for item in self.missing()
            ],
        }

    def table(self) -> str:
        """Plain text lines: the total, then each condition not fully covered (or that raised)
        with the outcomes it lacks; condition text shown with control characters escaped."""
        seen, possible = self.ratio
        lines = [f"conditions {seen}/{possible} outcomes ({_percent(seen, possible):.1f}%)"]
        for count in self.conditions:
            lacks = [
                name for name, hits in (("true", count.true), ("false", count.false)) if not hits
            ]
            if not lacks and not count.raised:
                continue
            note = f"never {' nor '.join(lacks)}" if lacks else "covered"
            if count.raised:
                note += f", raised {count.raised}x"
            lines.append(f"  {self._where(count)}: {_shown(count.text)}  {note}")
        return "\n".join(lines) + "\n"

    def _where(self, count: ConditionCount) -> str:
        """Where a condition is written, for the table."""
        where = f"{count.step} branches[{count.branch}]"
        return where + (" expression" if count.row is None else f" row {count.row}")


class ConditionCoverage(_Conditions):
    """Condition coverage of one flow over many runs: give every runtime that runs the flow
    :meth:`runtime_options`, then read :meth:`missing`, :attr:`ratio`, :meth:`to_json` or
    :meth:`table`.

    Each outcome of each condition counts: a row (or a branch's expression) is covered when it
    was seen true and seen false, two outcomes each. Runs of another flow are not counted:
    another name, or (another version of the flow) a splitter whose conditions differ.
    """

    def __init__(self, graph: FlowGraph) -> None:
        super().__init__(graph.name)
        self.graph = graph
        #: For each step that tests conditions: what they are, and their counts.
        self._by_step: dict[str, tuple[list[tuple[int, int | None, str]], list[ConditionCount]]]
        self._by_step = {}
        for step_id, step in graph.steps.items():
            found = _conditions(_branches(step))
            if found:
                counts = [ConditionCount(step_id, *condition) for condition in found]
                self._by_step[step_id] = (found, counts)
                self.conditions.extend(counts)

    def runtime_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`flowlang.Runtime` (merge them into yours): the
        Python loop and the plan wrapper that counts this flow's conditions."""
        return {"backend": "python", "plan_wrapper": self.wrap_plan}

    def wrap_plan(self, flow: CompiledFlow, plan: StepPlan) -> StepPlan:
        """A new plan with each splitter step of this flow wrapped: every condition evaluated
        and counted before the step runs as planned (a
        :data:`~flowlang.runtime.plan.PlanWrapper`). ``plan`` itself is left as it is."""
        wrapped = dict(plan)
        if flow.name != self.graph.name:
            return wrapped
        for step_id, (found, counts) in self._by_step.items():
            planned = plan.get(step_id)
            if planned is None:
                continue
            step, run_step, execute = planned
            branches = _branches(step)
            if run_step is None or _conditions(branches) != found:
                continue
            wrapped[step_id] = (step, _observed(run_step, _tests(branches), counts), execute)
        return wrapped


class WorkflowConditionCoverage(_Conditions):
    """Condition coverage of a workflow's conditions (its rows, or its one expression) over
    the events of its tests: :meth:`add` each event a test dispatches. A workflow's conditions
    are one branch (``step`` ``<conditions>``, ``branch`` 0). Matching an event changes
    nothing, so no runtime seam is needed: each condition is evaluated on its own as the
    dispatcher's match would (an expression's value read with ``bool``)."""

    document = "workflow"
    #: The ``step`` of a workflow's conditions (as the checker's messages name them).
    STEP = "<conditions>"

    def __init__(self, workflow: CompiledWorkflow) -> None:
        super().__init__(workflow.name)
        self.workflow = workflow
        tests: list[Test] = []
        if workflow.expression is not None:
            self.conditions.append(
                ConditionCount(self.STEP, 0, None, str(workflow.expression.source))
            )
            tests.append(_bool_test(workflow.expression.render))
        for number, row in enumerate(workflow.rows):
            self.conditions.append(ConditionCount(self.STEP, 0, number, _row_text(row)))
            tests.append(_row_test(row))
        self._pairs = list(zip(tests, self.conditions, strict=True))

    def add(self, event: Mapping[str, Any]) -> bool:
        """Count the conditions for ``event``; False (nothing counted) when the event is not of
        the workflow's trigger (the dispatcher would not test it)."""
        if not isinstance(event, Mapping) or event.get("type") != self.workflow.trigger:
            return False
        _count(self._pairs, {"event": event})
        return True

    def _where(self, count: ConditionCount) -> str:
        return "expression" if count.row is None else f"conditions[{count.row}]"


def _observed(
    run_step: Callable[[Any], Any], tests: list[Test], counts: list[ConditionCount]
) -> Callable[[Any], Any]:
    """``run_step`` after every condition of the step is evaluated and counted."""
    pairs = list(zip(tests, counts, strict=True))

    def observed(run: Any) -> Any:
        _count(pairs, {**run.scope, "secrets": _NO_SECRETS})
        return run_step(run)

    return observed


def _count(pairs: list[tuple[Test, ConditionCount]], scope: Mapping[str, Any]) -> None:
    """Evaluate each condition on its own and count its outcome."""
    for test, count in pairs:
        try:
            holds = bool(test(scope))
        except Exception:  # strict mode, a failing filter: neither true nor false
            count.raised += 1
            continue
        if holds:
            count.true += 1
        else:
            count.false += 1


def _percent(seen: int, possible: int) -> float:
    return 100.0 if not possible else round(100.0 * seen / possible, 1)


def _shown(text: str) -> str:
    """Text for a terminal line: control characters escaped, shortened to TABLE_TEXT."""
    shown = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
    return shown if len(shown) <= TABLE_TEXT else shown[: TABLE_TEXT - 1] + "…"
