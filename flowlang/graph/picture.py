"""Pictures: what every renderer draws (Mermaid, DOT, the HTML viewer) — boxes with text, a
shape and an optional group, and arrows with text — made from a flow's graph (or from
workflows). Renderers know nothing of step kinds, and escape every text they are given: a
label is any text a document holds.
"""

from __future__ import annotations

__all__ = ["SHAPES", "Picture", "PictureEdge", "PictureNode", "flow_picture"]

from dataclasses import dataclass
from typing import Any

from flowlang.flow.model import Step
from flowlang.graph.model import FlowGraph

#: Node shapes: an ordinary step, one that asks the caller (input), one that chooses a way
#: (decision), one that calls a server (request), a call-control step (host), and the start
#: and end of a run (terminal).
SHAPES = ("step", "input", "decision", "request", "host", "terminal")
#: Longest label text drawn from a document (longer text is cut, with an ellipsis).
MAX_LABEL = 80


@dataclass(frozen=True)
class PictureNode:
    """A box: ``key`` is unique in its picture (never shown); ``label`` is shown as text;
    ``step`` is the step id or action it stands for (None: the start or an end)."""

    key: str
    label: str
    shape: str
    group: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class PictureEdge:
    """An arrow between two node keys: its text, whether it is a failure way (dashed), and the
    number of the flow edge it draws (``FlowEdge.index``; None for the arrow from the start)."""

    source: str
    target: str
    label: str
    failure: bool = False
    edge: int | None = None


@dataclass(frozen=True)
class Picture:
    """Nodes and edges to draw, with a title."""

    title: str
    nodes: tuple[PictureNode, ...]
    edges: tuple[PictureEdge, ...]


def shorten(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _shape(step: Step[Any]) -> str:
    kind = step.kind
    if kind.takes_input:
        return "input"
    if kind.network:
        return "request"
    if getattr(kind, "host", None) is not None:
        return "host"
    if len(kind.edge_fields) > 2:
        return "decision"
    return "step"


def _source(value: Any) -> str:
    template = getattr(value, "template", value)
    source = getattr(template, "source", None)
    if source is not None:
        return str(source)
    literal = getattr(value, "literal", value)
    return "" if literal is None else str(literal)


def _edge_label(step: Step[Any], label: str) -> str:
    """What an arrow says: nothing for ``next``, the key of a menu option, a branch's test."""
    if label == "next":
        return ""
    if label.startswith("options["):
        return f"key {label[8:-1]}"
    if label.startswith("branches["):
        index = int(label[9:-1])
        branch = step.fields["branches"][index]
        if branch.expression is not None:
            test = _source(branch.expression)
        else:
            test = " and ".join(
                " ".join(
                    part
                    for part in (_source(row.property), row.operator, _source(row.value))
                    if part
                )
                for row in branch.rows
            )
        return shorten(f"{index}: {test}")
    return label


def flow_picture(graph: FlowGraph) -> Picture:
    """The picture of a flow: a start node, one node per step (its id and kind), one end node
    per step where the run can end, and one arrow per edge."""
    nodes = [PictureNode("start", "start", "terminal")]
    keys = {step_id: f"s{number}" for number, step_id in enumerate(graph.steps)}
    edges = [PictureEdge("start", keys[graph.start], "")] if graph.start in keys else []
    ends: list[PictureNode] = []
    for step_id, step in graph.steps.items():
        nodes.append(
            PictureNode(
                keys[step_id], f"{shorten(step_id)}\n{step.type}", _shape(step), None, step_id
            )
        )
    for edge in graph.edges:
        step = graph.steps[edge.source]
        if edge.target is None:
            end = f"e{len(ends)}"
            ends.append(PictureNode(end, "end", "terminal"))
            target = end
        else:
            target = keys[edge.target]
        edges.append(
            PictureEdge(
                keys[edge.source], target, _edge_label(step, edge.label), edge.failure, edge.index
            )
        )
    return Picture(graph.name, tuple(nodes + ends), tuple(edges))
