"""A laid-out picture as inline SVG (for an HTML page): one shape per node, a polyline with an
arrowhead per edge, failure edges dashed. Every text is XML-escaped, with the characters that
could hide or reorder text (control and format characters, lone surrogates) shown by visible
stand-ins; nodes and edges carry their number (``data-node``, ``data-edge``, and ``data-flow-edge``
for the flow edge an arrow draws) for the page's script.
"""

from __future__ import annotations

__all__ = ["MARKED_EDGES", "Marks", "clean_text", "picture_svg", "xml_text"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape

from flowlang.graph.layout import (
    FONT_SIZE,
    LABEL_LINE,
    LABEL_PAD,
    LINE_HEIGHT,
    EdgeRoute,
    Layout,
    NodeBox,
    layout,
)
from flowlang.graph.picture import SHAPES, Picture, visible_text

#: Edge classes that have an arrowhead of their own colour.
MARKED_EDGES = ("taken", "covered", "uncovered")


def clean_text(text: str) -> str:
    """``text`` as a page shows it: tab and newline kept, every other character that could hide
    or reorder text shown by a stand-in (:func:`~flowlang.graph.picture.visible_text`: ``␀``,
    ``\\u200b`` …), as in every picture."""
    return visible_text(text, "\t\n")


def xml_text(text: str) -> str:
    """``text`` cleaned and escaped for an HTML or SVG text node or quoted attribute."""
    return escape(clean_text(text), quote=True)


@dataclass(frozen=True)
class Marks:
    """What a page adds to a picture: classes of nodes and edges (by their position in the
    picture) and a note beside an edge (path numbers, hit counts)."""

    node_classes: Mapping[int, str] = field(default_factory=dict)
    edge_classes: Mapping[int, str] = field(default_factory=dict)
    edge_notes: Mapping[int, str] = field(default_factory=dict)


def _number(value: float) -> str:
    """A coordinate in fixed point, one decimal at most (never an exponent)."""
    text = f"{value:.1f}"
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def _points(points: tuple[tuple[float, float], ...]) -> str:
    return " ".join(f"{_number(x)},{_number(y)}" for x, y in points)


def _shape(shape: str, box: NodeBox) -> str:
    x, y, w, h = box.x, box.y, box.width, box.height
    corners: tuple[tuple[float, float], ...]
    if shape == "input":
        corners = ((x + 8, y), (x + w, y), (x + w - 8, y + h), (x, y + h))
        return f'<polygon points="{_points(corners)}"/>'
    if shape == "decision":
        corners = (
            (x + 10, y),
            (x + w - 10, y),
            (x + w, y + h / 2),
            (x + w - 10, y + h),
            (x + 10, y + h),
            (x, y + h / 2),
        )
        return f'<polygon points="{_points(corners)}"/>'
    if shape == "terminal":
        return (
            f'<ellipse cx="{_number(x + w / 2)}" cy="{_number(y + h / 2)}" '
            f'rx="{_number(w / 2)}" ry="{_number(h / 2)}"/>'
        )
    radius = h / 2 if shape == "host" else 4
    frame = (
        f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(w)}" height="{_number(h)}" '
        f'rx="{_number(radius)}"/>'
    )
    if shape == "request":  # a second, inner frame: a step that calls a server
        frame += (
            f'<rect class="inner" x="{_number(x + 3)}" y="{_number(y + 3)}" '
            f'width="{_number(w - 6)}" height="{_number(h - 6)}" rx="2"/>'
        )
    return frame


def _label(box: NodeBox) -> str:
    centre = _number(box.x + box.width / 2)
    first = box.y + box.height / 2 - (len(box.lines) - 1) * LINE_HEIGHT / 2 + FONT_SIZE * 0.35
    spans = "".join(
        f'<tspan x="{centre}" y="{_number(round(first + at * LINE_HEIGHT, 1))}"'
        f"{' class=' + chr(34) + 'head' + chr(34) if at == 0 else ''}>{xml_text(line)}</tspan>"
        for at, line in enumerate(box.lines)
    )
    return f"<text>{spans}</text>"


def _edge(
    number: int, route: EdgeRoute, label: str, css: str, flow_edge: int | None, note: str, ids: str
) -> str:
    if not route.points:
        return ""
    marker = f"{ids}-{css.split()[-1]}" if css.split()[-1] in MARKED_EDGES else f"{ids}-plain"
    flow = f' data-flow-edge="{flow_edge}"' if flow_edge is not None else ""
    parts = [
        f'<g class="{css}" data-edge="{number}"{flow}>',
        f'<polyline points="{_points(route.points)}" marker-end="url(#{marker})"/>',
    ]
    if label:
        parts.append(f"<title>{xml_text(label)}</title>")
    if route.label_box is not None and route.label_lines:
        x, y = route.label_box[0] + LABEL_PAD, route.label_box[1] + LABEL_PAD
        noted = len(route.label_lines) - 1 if note else len(route.label_lines)
        spans = "".join(
            f'<tspan x="{_number(x)}" y="{_number(y + (at + 0.8) * LABEL_LINE)}"'
            f"{' class=' + chr(34) + 'note' + chr(34) if at >= noted else ''}>"
            f"{xml_text(line)}</tspan>"
            for at, line in enumerate(route.label_lines)
        )
        parts.append(f"<text>{spans}</text>")
    parts.append("</g>")
    return "".join(parts)


def picture_svg(
    picture: Picture, *, number: int = 0, marks: Marks | None = None, laid: Layout | None = None
) -> str:
    """``picture`` as an ``<svg>`` element (no XML declaration: for inline use in HTML).
    ``number`` makes its marker ids unique in a page; ``marks`` adds classes and notes."""
    marks = marks or Marks()
    laid = laid or layout(picture, marks.edge_notes)
    ids = f"fl{number}"
    parts = [
        f'<svg class="flowlang-graph" data-picture="{number}" width="{_number(laid.width)}" '
        f'height="{_number(laid.height)}" viewBox="0 0 {_number(laid.width)} '
        f'{_number(laid.height)}" role="img" aria-label="{xml_text(picture.title)}">',
        "<defs>",
    ]
    for name in ("plain", *MARKED_EDGES):
        parts.append(
            f'<marker id="{ids}-{name}" class="arrow-{name}" viewBox="0 0 10 10" refX="10" '
            'refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
            'orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z"/></marker>'
        )
    parts.append("</defs>")
    for frame in laid.groups:
        parts.append(
            f'<g class="group"><rect x="{_number(frame.x)}" y="{_number(frame.y)}" '
            f'width="{_number(frame.width)}" height="{_number(frame.height)}" rx="6"/>'
            f'<text x="{_number(frame.x + 8)}" y="{_number(frame.y + 16)}">'
            f"{xml_text(frame.title or '')}</text></g>"
        )
    for at, (edge, route) in enumerate(zip(picture.edges, laid.edges, strict=True)):
        css = "edge" + (" failure" if edge.failure else "")
        extra = marks.edge_classes.get(at)
        css += f" {extra}" if extra else ""
        parts.append(
            _edge(at, route, edge.label, css, edge.edge, marks.edge_notes.get(at, ""), ids)
        )
    for at, (node, box) in enumerate(zip(picture.nodes, laid.nodes, strict=True)):
        css = f"node shape-{node.shape if node.shape in SHAPES else 'step'}"
        extra = marks.node_classes.get(at)
        css += f" {extra}" if extra else ""
        parts.append(
            f'<g class="{css}" data-node="{at}" tabindex="0" role="button">'
            f"{_shape(node.shape, box)}{_label(box)}</g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
