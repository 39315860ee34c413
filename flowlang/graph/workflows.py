"""The picture of workflows: per workflow a group — its trigger (the event type), its conditions
(a decision), then each action in order with what it sends where."""

from __future__ import annotations

__all__ = ["workflow_picture"]

import json
from collections.abc import Mapping, Sequence
from typing import Any

from flowlang.automations.workflow import Action, CompiledWorkflow
from flowlang.flow.source import DocumentError, read_document_text
from flowlang.graph.picture import (
    MAX_DETAIL,
    Picture,
    PictureEdge,
    PictureNode,
    shorten,
    source_text,
)

#: The field kinds shown in an action's box (where it sends, and what): not credentials,
#: headers, body entries, switches or numbers.
_SHOWN_KINDS = frozenset({"endpoint", "template", "enum"})
#: Most fields shown in an action's box.
_SHOWN_FIELDS = 2
#: Template delimiters a workflow's conditions may be written in (its syntax is not kept).
_DELIMITERS = (("<<", ">>"), ("{{", "}}"))


def _action_label(action: Action) -> str:
    """The action's name and kind, then up to :data:`_SHOWN_FIELDS` of its fields as written
    (endpoint, recipient, channel, text …) that are not secret fields, an endpoint aside."""
    kind = action.kind
    lines = [shorten(f"{action.id} ({kind.name})")]
    for name, spec in kind.fields.items():
        if len(lines) > _SHOWN_FIELDS:
            break
        if spec.kind not in _SHOWN_KINDS or (
            name in kind.secret_fields and spec.kind != "endpoint"
        ):
            continue
        value = action.fields.get(name)
        text = source_text(value, bare=False) if value is not None else ""
        if text:
            lines.append(shorten(f"{name}: {text}", MAX_DETAIL))
    return "\n".join(lines)


def _plain(value: Any) -> str:
    """A condition's part as written: a template that is one hole without its delimiters."""
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if value is not None else ""
    text = value.strip()
    for opening, closing in _DELIMITERS:
        inner = text[len(opening) : len(text) - len(closing)]
        if (
            text.startswith(opening)
            and text.endswith(closing)
            and opening not in inner
            and closing not in inner
        ):
            return inner.strip()
    return value


def _conditions(workflow: CompiledWorkflow) -> list[str] | None:
    """The workflow's conditions, one line each (None: it has none), read from its text:
    the compiled workflow keeps only their evaluator."""
    if workflow.condition is None:
        return None
    try:
        data = read_document_text(workflow.source, workflow.filename).data
    except DocumentError:  # pragma: no cover - a compiled workflow's text loaded once already
        return ["conditions"]
    if not isinstance(data, Mapping):  # pragma: no cover - as above
        return ["conditions"]
    if "expression" in data:
        return [_plain(data["expression"])]
    rows = data.get("conditions")
    lines = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping):
            parts = (_plain(row.get("property")), str(row.get("operator", "")))
            value = _plain(row["value"]) if "value" in row else ""
            lines.append(" ".join(part for part in (*parts, value) if part))
    return lines or ["conditions"]


def workflow_picture(workflows: Sequence[CompiledWorkflow], title: str = "workflows") -> Picture:
    """One picture of ``workflows``, each a group named after the workflow: its trigger, its
    conditions (when it has some), and its actions in order. An arrow from one action to the
    next; a dashed ``failed`` arrow too when the action goes on after a failure
    (``stop_on_failure: false``)."""
    nodes: list[PictureNode] = []
    edges: list[PictureEdge] = []
    seen: dict[str, int] = {}
    for number, workflow in enumerate(workflows):
        count = seen[workflow.name] = seen.get(workflow.name, 0) + 1
        group = workflow.name if count == 1 else f"{workflow.name} ({count})"
        trigger = f"w{number}"
        nodes.append(PictureNode(trigger, f"on {workflow.trigger}", "terminal", group))
        previous, label, failed = trigger, "", False
        conditions = _conditions(workflow)
        if conditions is not None:
            check = f"w{number}c"
            text = "\nand ".join(shorten(line, MAX_DETAIL) for line in conditions)
            nodes.append(PictureNode(check, text, "decision", group))
            edges.append(PictureEdge(previous, check, ""))
            previous, label = check, "all hold"
        for place, action in enumerate(workflow.actions):
            key = f"w{number}a{place}"
            nodes.append(PictureNode(key, _action_label(action), "request", group, action.id))
            edges.append(PictureEdge(previous, key, label))
            if failed:
                edges.append(PictureEdge(previous, key, "failed", True))
            previous, label = key, ""
            failed = action.fields.get("stop_on_failure") is False
    return Picture(title, tuple(nodes), tuple(edges))
