"""Coverage of a test run: per flow, the steps run and the edges taken (counted by
:class:`flowlang.graph.model.Coverage` from each case's trace); per workflow, the actions that
ran. Edge coverage is the headline: ``--fail-under`` reads :func:`edge_ratio`.
"""

from __future__ import annotations

__all__ = [
    "WorkflowCoverage",
    "coverage_json",
    "coverage_table",
    "edge_name",
    "edge_ratio",
    "percent",
]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowlang.automations.workflow import CompiledWorkflow
from flowlang.graph.model import Coverage, FlowEdge


@dataclass
class WorkflowCoverage:
    """How often each action of a workflow ran (attempted at least once) over many events."""

    workflow: CompiledWorkflow
    hits: dict[str, int] = field(default_factory=dict)

    @property
    def actions(self) -> list[str]:
        return [action.id for action in self.workflow.actions]

    def add(self, deliveries: Sequence[Any]) -> None:
        """Count the deliveries of one event (those of this workflow that were attempted)."""
        for delivery in deliveries:
            if delivery.workflow == self.workflow.name and delivery.attempts > 0:
                self.hits[delivery.action] = self.hits.get(delivery.action, 0) + 1

    @property
    def missing(self) -> list[str]:
        return [name for name in self.actions if not self.hits.get(name)]


def edge_name(edge: FlowEdge) -> str:
    """An edge as the coverage report names it: ``check --[on_failure]--> agent``."""
    return f"{edge.source} --[{edge.label}]--> {edge.target if edge.target is not None else 'end'}"


def percent(covered: int, total: int) -> float:
    """``covered`` of ``total`` in percent (100 when there is nothing to cover)."""
    return 100.0 if total == 0 else 100.0 * covered / total


def _counts(coverage: Coverage) -> tuple[int, int, int, int]:
    steps = len(coverage.graph.steps)
    steps_hit = sum(1 for step in coverage.graph.steps if coverage.step_hits.get(step))
    edges = len(coverage.graph.edges)
    return steps_hit, steps, edges - len(coverage.missing_edges), edges


def edge_ratio(
    flows: Mapping[str, Coverage], workflows: Mapping[str, WorkflowCoverage]
) -> tuple[int, int]:
    """Edges taken and edges of every flow, plus actions run and actions of every workflow."""
    covered = total = 0
    for coverage in flows.values():
        _, _, hit, edges = _counts(coverage)
        covered, total = covered + hit, total + edges
    for actions in workflows.values():
        covered += len(actions.actions) - len(actions.missing)
        total += len(actions.actions)
    return covered, total


def _ratio_text(covered: int, total: int) -> str:
    return f"{covered}/{total} {percent(covered, total):.0f}%"


def coverage_table(
    flows: Mapping[str, Coverage], workflows: Mapping[str, WorkflowCoverage]
) -> list[str]:
    """The terminal table: per flow its steps and edges (x/y and percent) and the missing edges
    by name; per workflow its actions."""
    rows = [("file", "steps", "edges")]
    details: dict[int, list[str]] = {}
    for name, coverage in flows.items():
        steps_hit, steps, hit, edges = _counts(coverage)
        details[len(rows)] = [f"missing: {edge_name(edge)}" for edge in coverage.missing_edges]
        rows.append((name, _ratio_text(steps_hit, steps), _ratio_text(hit, edges)))
    for name, actions in workflows.items():
        total = len(actions.actions)
        details[len(rows)] = [f"missing: action {action}" for action in actions.missing]
        rows.append((name, "", "actions " + _ratio_text(total - len(actions.missing), total)))
    covered, total = edge_ratio(flows, workflows)
    rows.append(("total", "", _ratio_text(covered, total)))
    width = max(len(row[0]) for row in rows)
    lines = []
    for number, (name, steps_text, edges_text) in enumerate(rows):
        lines.append(f"{name:<{width}}  {steps_text:<14}{edges_text}".rstrip())
        lines.extend(f"  {line}" for line in details.get(number, ()))
    return lines


def coverage_json(
    flows: Mapping[str, Coverage], workflows: Mapping[str, WorkflowCoverage]
) -> dict[str, Any]:
    """``coverage.json``: per flow and workflow what was covered and what was not."""
    flow_rows = []
    for name, coverage in flows.items():
        steps_hit, steps, hit, edges = _counts(coverage)
        flow_rows.append(
            {
                "file": name,
                "flow": coverage.graph.name,
                "steps": {"covered": steps_hit, "total": steps},
                "edges": {"covered": hit, "total": edges, "percent": percent(hit, edges)},
                "step_hits": dict(coverage.step_hits),
                "edge_hits": [
                    {
                        "source": edge.source,
                        "label": edge.label,
                        "target": edge.target,
                        "hits": coverage.edge_hits[edge.index],
                    }
                    for edge in coverage.graph.edges
                ],
                "missing_edges": [edge_name(edge) for edge in coverage.missing_edges],
            }
        )
    workflow_rows = [
        {
            "file": name,
            "workflow": actions.workflow.name,
            "actions": {
                "covered": len(actions.actions) - len(actions.missing),
                "total": len(actions.actions),
            },
            "action_hits": {name: actions.hits.get(name, 0) for name in actions.actions},
            "missing_actions": actions.missing,
        }
        for name, actions in workflows.items()
    ]
    covered, total = edge_ratio(flows, workflows)
    return {
        "format": "flowlang.coverage/1",
        "edges": {"covered": covered, "total": total, "percent": percent(covered, total)},
        "flows": flow_rows,
        "workflows": workflow_rows,
    }
