"""Failures: on the error path of a run, find the field of the failing step whose template
raised, and where in the document that template's failing text is written.

Nothing here runs while a run goes well: the step loops call it from their ``except`` clause
only. Templates are pure, so the step's templates are rendered again against the run's data,
in the order of the step's fields, and the first one that raises the same error is the field.
"""

from __future__ import annotations

__all__ = ["FailurePlace", "failure_place"]

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowlang.engine import Template
from flowlang.errors import FlowUndefinedError
from flowlang.flow.model import Branch, CompiledFlow, Endpoint, FieldTree, Step, Value
from flowlang.flow.source import Document, Pointer, load_document
from flowlang.locations import SourcePosition, render_place

#: The most templates of one step tried again (a step has a bounded number of fields).
_MAX_TRIED = 2000
#: The most document values searched for the failing template's text.
_MAX_SEARCHED = 100_000


@dataclass(frozen=True)
class FailurePlace:
    """Where a step's error came from: the field (None: not a template's error) and the
    rendering of the place (``--> file:line:column (step, field)`` and the caret lines)."""

    field: str | None
    place: str


def failure_place(
    flow: CompiledFlow, step_id: str, scope: Mapping[str, Any], error: BaseException | None
) -> FailurePlace | None:
    """The field and place of ``error``, raised while step ``step_id`` ran; None when the step
    is not in the flow. Never raises: a place that cannot be found is left out."""
    step = flow.steps.get(step_id)
    if step is None:
        return None
    try:
        return _place(flow, step, scope, error)
    except Exception:  # the error path must not fail: name the step at least
        return FailurePlace(None, _step_place(flow, step))


def _place(
    flow: CompiledFlow, step: Step, scope: Mapping[str, Any], error: BaseException | None
) -> FailurePlace:
    found = _failing_template(step, scope, error) if error is not None else None
    if found is None:
        return FailurePlace(None, _step_place(flow, step))
    name, template, text, shift = found
    begin, end = _failing_span(template, error)
    document = _document(flow)
    pointer = _pointer_of(document, step.id, name, text) if document is not None else None
    if document is None or pointer is None:
        at = step.field_positions.get(name, step.position)
        where = SourcePosition(at.filename, at.line, at.column, step.id, name)
        return FailurePlace(name, _label(where))
    field = _field_label(pointer[2:])
    position, width = document.place(
        pointer, text, begin + shift, end + shift, step=step.id, field_name=field
    )
    return FailurePlace(field, render_place("", position, document.lines, width).lstrip("\n"))


def _label(position: SourcePosition) -> str:
    return render_place("", position).lstrip("\n")


def _step_place(flow: CompiledFlow, step: Step) -> str:
    position = step.position
    document = _document(flow)
    lines = document.lines if document is not None else None
    return render_place("", position, lines).lstrip("\n")


def _document(flow: CompiledFlow) -> Document | None:
    """The flow's document, read again on the first failure that needs it and kept with the
    flow (its derived data): a flow that fails often is read once. None without a source."""
    if not flow.source:
        return None
    kept = flow.prepared.get("document")
    if kept is None:
        try:
            kept = load_document(flow.source, filename=flow.filename)
        except Exception:
            kept = False  # unreadable (it was read once): never tried again
        kept = flow.prepared.setdefault("document", kept)
    return kept or None


def _failing_template(
    step: Step, scope: Mapping[str, Any], error: BaseException
) -> tuple[str, Template, str, int] | None:
    """The first template of the step that raises ``error`` again: its field, the template,
    the text it was written as, and where the template starts in that text."""
    kind, message = type(error), str(error)
    for tried, (name, template, text, shift) in enumerate(_templates(step)):
        if tried >= _MAX_TRIED:
            return None
        try:
            template.render(scope)
        except Exception as again:
            if type(again) is kind and str(again) == message:
                return name, template, text, shift
    return None


def _templates(step: Step) -> Iterator[tuple[str, Template, str, int]]:
    """Every template of the step's fields, in field order: (field, template, text, shift)."""
    for name, compiled in step.fields.items():
        stack: list[Any] = [compiled]
        while stack:
            item = stack.pop()
            if isinstance(item, Template):
                yield name, item, item.source, 0
            elif isinstance(item, Value):
                if item.template is not None:
                    stack.append(item.template)
            elif isinstance(item, FieldTree):
                stack.extend(value for _, value in reversed(item.entries))
            elif isinstance(item, Branch):
                if item.expression is not None:
                    stack.append(item.expression)
                for row in reversed(item.rows):
                    stack.extend(value for value in (row.value, row.property) if value)
            elif isinstance(item, Endpoint):
                text = "".join(
                    part if isinstance(part, str) else part.source for part in item.parts
                )
                shift = 0
                for part in item.parts:
                    if isinstance(part, Template):
                        yield name, part, text, shift
                    shift += len(part if isinstance(part, str) else part.source)
            elif isinstance(item, (tuple, list)):
                stack.extend(reversed(item))
            elif hasattr(item, "items") and isinstance(getattr(item, "items", None), tuple):
                stack.extend(reversed(item.items))  # a list of values (duck-types Template)


def _failing_span(template: Template, error: BaseException | None) -> tuple[int, int]:
    """The span of the template to point at: the undefined reference, else the hole that
    calls a filter (a filter's error), else every hole (a limit)."""
    if isinstance(error, FlowUndefinedError):
        for reference in template.references:
            if reference.text == error.path:
                return reference.start, reference.end
    holes = template.tree.holes
    for hole in holes:
        if "|" in template.source[hole.start : hole.end]:
            return hole.start, hole.end
    if holes:  # a limit: the template's holes, all of them
        return holes[0].start, holes[-1].end
    return 0, 1


def _pointer_of(document: Document, step_id: str, field: str, text: str) -> Pointer | None:
    """The pointer of the text ``text`` under field ``field`` of step ``step_id``."""
    steps = document.data.get("steps") if isinstance(document.data, dict) else None
    if not isinstance(steps, dict):
        return None
    key: str | int | None = next((key for key in steps if str(key) == step_id), None)
    raw = steps.get(key) if key is not None else None
    if key is None or not isinstance(raw, dict) or field not in raw:
        return None
    stack: list[tuple[Pointer, Any]] = [(("steps", key, field), raw[field])]
    searched = 0
    while stack and searched < _MAX_SEARCHED:
        pointer, value = stack.pop()
        searched += 1
        if isinstance(value, dict):
            stack.extend((((*pointer, k), v) for k, v in reversed(value.items())))
        elif isinstance(value, list):
            stack.extend(
                ((*pointer, index), item) for index, item in reversed(list(enumerate(value)))
            )
        elif (isinstance(value, str) and value == text) or (
            value is not None and not isinstance(value, bool) and str(value) == text
        ):
            return pointer
    return None


def _field_label(path: Pointer) -> str:
    """``headers.Authorization``, ``branches[0].conditions[1].property`` …"""
    label = ""
    for part in path:
        if isinstance(part, int):
            label += f"[{part}]"
        else:
            label += f".{part}" if label else str(part)
    return label
