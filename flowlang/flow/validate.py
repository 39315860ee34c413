"""Validate: the step graph (targets, reachability) and data flow (what is certain to exist).

Data flow is a forward must-analysis over the step graph: a fact holds at a step when it holds
on every path from the start. Facts are ``ran:X`` (step X finished), ``input:X`` (collect_input X
stored its value: on every outcome) and ``response:X`` (http_request X succeeded, so its response
is there: only on its ``next`` edge).
"""

from __future__ import annotations

__all__ = ["validate_flow"]

from collections.abc import Mapping

from flowlang.errors import SourcePosition
from flowlang.flow.build import TemplateUse
from flowlang.flow.model import Finding, Step
from flowlang.suggest import did_you_mean

#: Fields in which a secret may be used: only what goes to the HTTP server.
_SECRET_FIELDS = ("endpoint", "headers", "body")


def _edge_facts(step: Step, edge: str) -> set[str]:
    facts = {f"ran:{step.id}"}
    if step.type == "collect_input":
        facts.add(f"input:{step.id}")
    if step.type == "http_request" and step.fields.get("parse_response") and edge == "next":
        facts.add(f"response:{step.id}")
    return facts


def _facts_at_entry(steps: Mapping[str, Step], start: str) -> dict[str, set[str] | None]:
    """For each reachable step, the facts that hold on entry (None: not reachable)."""
    facts: dict[str, set[str] | None] = {step_id: None for step_id in steps}
    facts[start] = set()
    pending = [start]
    while pending:
        step_id = pending.pop()
        step = steps[step_id]
        entry = facts[step_id]
        assert entry is not None
        for edge, target in step.targets().items():
            if target not in steps:
                continue
            out = entry | _edge_facts(step, edge)
            current = facts[target]
            updated = out if current is None else (current & out)
            if target == start:
                updated = set()
            if current != updated:
                facts[target] = updated
                pending.append(target)
    return facts


def _reference_position(use: TemplateUse, offset: int) -> SourcePosition:
    position = use.position
    text = use.template.source[:offset]
    if "\n" in text:
        return SourcePosition(
            position.filename,
            position.line + text.count("\n"),
            offset - text.rfind("\n"),
            position.step,
            position.field,
        )
    return SourcePosition(
        position.filename, position.line, position.column + offset, position.step, position.field
    )


def validate_flow(
    steps: Mapping[str, Step],
    start: str,
    start_position: SourcePosition,
    templates: list[TemplateUse],
) -> list[Finding]:
    """Every graph and data-flow problem of a flow whose steps compiled."""
    findings: list[Finding] = []
    if start not in steps:
        return [
            Finding(
                f"start step {start!r} does not exist{did_you_mean(start, steps)}", start_position
            )
        ]
    for step in steps.values():
        for edge, target in step.targets().items():
            if target not in steps:
                hint = did_you_mean(target, steps)
                field = edge.split("[")[0] if edge.startswith("branches") else edge
                position = step.field_positions.get(field, step.position)
                findings.append(
                    Finding(
                        f"{edge} goes to step {target!r}, which does not exist{hint}",
                        SourcePosition(
                            position.filename, position.line, position.column, step.id, edge
                        ),
                    )
                )
    facts = _facts_at_entry(steps, start)
    for step_id, entry in facts.items():
        if entry is None:
            findings.append(
                Finding(
                    f"step {step_id!r} is unreachable from the start step {start!r}",
                    steps[step_id].position,
                )
            )
    for use in templates:
        entry = facts.get(use.step)
        if entry is None:
            continue
        for reference in use.template.references:
            problem = _check_reference(reference.path, use, steps, entry)
            if problem is not None:
                message, severity = problem
                findings.append(
                    Finding(
                        f"{reference}: {message}",
                        _reference_position(use, reference.start),
                        severity,
                    )
                )
    return findings


def _check_reference(
    path: tuple[object, ...], use: TemplateUse, steps: Mapping[str, Step], entry: set[str]
) -> tuple[str, str] | None:
    root = path[0]
    if root == "secrets":
        if not use.field.startswith(_SECRET_FIELDS) or steps[use.step].type != "http_request":
            return (
                "secrets may only be used in the endpoint, headers and body of an "
                "http_request step",
                "error",
            )
        return None
    if root not in ("input", "steps") or len(path) < 2:
        return None
    target = path[1]
    if target is None:
        return ("the step id is computed, so this cannot be checked before the call", "warning")
    target_id = str(target)
    step = steps.get(target_id)
    if root == "input":
        if step is None:
            return (f"there is no step {target_id!r}", "error")
        if step.type != "collect_input":
            return (f"step {target_id!r} is a {step.type} step, not collect_input", "error")
        if f"input:{target_id}" not in entry:
            return (f"step {target_id!r} may not have run on every path to this step", "error")
        return None
    if len(path) < 3 or path[2] not in ("response", "outcome"):
        return None
    if step is None:
        return (f"there is no step {target_id!r}", "error")
    if path[2] == "outcome":
        if f"ran:{target_id}" not in entry:
            return (f"step {target_id!r} may not have run on every path to this step", "error")
        return None
    if step.type != "http_request" or not step.fields.get("parse_response"):
        return (
            f"step {target_id!r} does not parse a response "
            "(an http_request with parse_response: true "
            "does)",
            "error",
        )
    if f"response:{target_id}" not in entry:
        return (
            f"step {target_id!r} may not have succeeded on every path to this step "
            "(it is read after "
            "its failure edge, or before it runs)",
            "error",
        )
    return None
