"""Pictures: what every renderer draws (Mermaid, DOT, the HTML viewer) — boxes with text, a
shape and an optional group, and arrows with text — made from a flow's graph (or from
workflows). Renderers know nothing of step kinds, and escape every text they are given: a
label is any text a document holds.
"""

from __future__ import annotations

__all__ = [
    "MAX_LABEL",
    "MAX_LINES",
    "SHAPES",
    "Picture",
    "PictureEdge",
    "PictureNode",
    "flow_picture",
    "label_lines",
    "shorten",
    "source_text",
    "text_columns",
    "visible_text",
]

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flowlang.flow.model import Step
from flowlang.graph.model import FlowEdge, FlowGraph
from flowlang.kinds.base import END

#: Node shapes: an ordinary step, one that asks the caller (input), one that chooses a way
#: (decision), one that calls a server (request), a call-control step that hands the call
#: over (host), and the start and end of a run (terminal).
SHAPES = ("step", "input", "decision", "request", "host", "terminal")
#: Longest line of label text drawn (longer text is cut, with an ellipsis).
MAX_LABEL = 80
#: Most lines of one label drawn (the last one drawn ends with an ellipsis when more are cut).
MAX_LINES = 4
#: Longest test of a branch on an arrow, and detail of an action in its box.
MAX_DETAIL = 60


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


def _visible(char: str) -> str:
    """``char``, or a visible stand-in when drawing it could hide or reorder text: a control
    character as its Unicode control picture (U+2400 …: NUL is ``␀``); an invisible format
    character (category Cf: zero-width space, soft hyphen, byte order mark, the bidirectional
    controls …) as its escape (``\\u200b``), so ``agent`` and ``agent\\u200b`` look different;
    a lone surrogate or a code point Unicode does not assign (this Python's Unicode version)
    as U+FFFD."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    category = unicodedata.category(char)
    if category == "Cf":
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    if category in ("Cc", "Cs", "Cn"):
        return "\ufffd"
    return char


def visible_text(text: str, keep: str = "") -> str:
    """``text`` with every character that could hide or reorder text shown by a stand-in (see
    :func:`label_lines`); the characters in ``keep`` (say, tab and newline) are left as they
    are. The one cleaning rule of every picture and page."""
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case
        return text
    return "".join(char if char in keep else _visible(char) for char in text)


def text_columns(text: str) -> int:
    """How many columns of a monospace font ``text`` takes: wide and full-width characters
    (East Asian width W or F: CJK, most emoji) two, combining marks none, the rest one."""
    if text.isascii():
        return len(text)
    columns = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me") or unicodedata.combining(char):
            continue
        columns += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return columns


def label_lines(label: str) -> list[str]:
    """The lines every renderer draws for ``label`` (Mermaid, DOT and the HTML viewer alike):
    its ``\\n``-separated lines, each on one line (other line breaks and runs of blanks are one
    space), with control characters, format characters, lone surrogates and unassigned code
    points shown as stand-ins (:func:`visible_text`), each cut to :data:`MAX_LABEL` characters
    and at most :data:`MAX_LINES` lines. Renderers draw exactly these lines (the HTML viewer
    wraps them, word by word) and escape them, so that any text shows as itself."""
    lines = [
        shorten("".join(_visible(char) if not char.isspace() else " " for char in line))
        for line in str(label).split("\n")
    ]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES]
        lines[-1] = shorten(lines[-1] + " …")
    return lines


def _shape(step: Step[Any], ways: Iterable[FlowEdge]) -> str:
    """Input, request, decision (a step whose ways on are chosen: branches, open/closed), a
    call-control step that hands the call over (host), else an ordinary step."""
    kind = step.kind
    if kind.takes_input:
        return "input"
    if kind.network:
        return "request"
    if any(not way.failure and way.label not in ("next", END) for way in ways):
        return "decision"
    host = getattr(kind, "host", None)
    if host is not None and host.ends:
        return "host"
    return "step"


def source_text(value: Any, *, bare: bool = True) -> str:
    """The text a document wrote for a compiled value: a template's source (with ``bare``, its
    delimiters left out when it is one hole: ``<<call.waiting_time > 60>>`` shows as
    ``call.waiting_time > 60``); an endpoint as written; a literal as written (``true``,
    ``42``)."""
    parts = getattr(value, "parts", None)
    if isinstance(parts, tuple):
        return "".join(str(getattr(part, "source", part)) for part in parts)
    template = getattr(value, "template", value)
    source = getattr(template, "source", None)
    if source is not None:
        syntax = getattr(template, "syntax", None)
        if bare and syntax is not None and getattr(template, "is_expression", False):
            inner = str(source).strip()
            if inner.startswith(syntax.open) and inner.endswith(syntax.close):
                return inner[len(syntax.open) : len(inner) - len(syntax.close)].strip()
        return str(source)
    literal = getattr(value, "literal", value)
    if literal is None:
        return ""
    if isinstance(literal, bool):
        return "true" if literal else "false"
    return str(literal)


def _edge_label(step: Step[Any], label: str) -> str:
    """What an arrow says: nothing for ``next`` or an end, the key of a menu option, a branch's
    test (shortened)."""
    if label in ("next", END):
        return ""
    if label.startswith("options["):
        return f"key {label[8:-1]}"
    if label.startswith("branches["):
        index = int(label[9:-1])
        branch = step.fields["branches"][index]
        if branch.expression is not None:
            tests = [source_text(branch.expression)]
        else:
            tests = [
                " ".join(
                    part
                    for part in (source_text(row.property), row.operator, source_text(row.value))
                    if part
                )
                for row in branch.rows
            ]
        lines = [f"{index}: {tests[0]}" if tests else str(index)]
        lines += [f"and {test}" for test in tests[1:]]
        return "\n".join(shorten(line, MAX_DETAIL) for line in lines)
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
                keys[step_id],
                f"{shorten(step_id)}\n{step.type}",
                _shape(step, graph.by_step.get(step_id, {}).values()),
                None,
                step_id,
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
