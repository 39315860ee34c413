"""The HTML viewer: one self-contained page (no network, no outside script, style or font)
with pictures laid out by flowlang as inline SVG, and a panel that opens a step's detail.

- :func:`graph_page`: one or more pictures (flows, workflows);
- :func:`run_page`: one call's path through a flow, numbered in order on the edges, and each
  step's trace entries (the trace is already redacted by the runtime: the page shows only what
  it holds);
- :func:`coverage_page`: hit counts of many runs, covered and missing edges.

A Content-Security-Policy lets the page load nothing; the page's data sits in a JSON block with
``<``, ``>``, ``&`` and the line separators escaped, and the script writes every text with
``textContent``. Text in the markup is XML-escaped (:func:`~flowlang.graph.svg.xml_text`).
"""

from __future__ import annotations

__all__ = [
    "CSP",
    "FIRST_ENTRIES",
    "LAST_ENTRIES",
    "MAX_DATA",
    "MAX_ROWS",
    "SCRIPT_HASH",
    "coverage_page",
    "graph_page",
    "json_block",
    "run_page",
]

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowlang.graph.model import Coverage, FlowGraph
from flowlang.graph.page_assets import SCRIPT, STYLE
from flowlang.graph.picture import Picture, flow_picture
from flowlang.graph.svg import Marks, clean_text, picture_svg, xml_text
from flowlang.runtime.results import describe_why

#: The page may load nothing: its inline style, and its one script, allowed by its hash (no
#: other script runs, inline or not).
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
CSP = f"default-src 'none'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'"
#: Longest text of one value shown in a step's detail (the rest is cut, with an ellipsis).
MAX_VALUE = 2000
#: The trace entries a run page holds: the first and the last ones (between them, a line
#: says how many more there were); host instructions likewise.
FIRST_ENTRIES = 100
LAST_ENTRIES = 20
#: Bytes of JSON that the rows of a page's step details may take in all (a row after that shows
#: its value as ``…``): with the entries and instructions kept, a page stays a few megabytes.
MAX_DATA = 2_000_000
#: Rows shown of one trace entry or instruction (headers included); the rest are counted.
MAX_ROWS = 40
#: Path numbers written beside one edge (a loop taken more often shows the first ones and …).
MAX_NUMBERS = 6

_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}

Rows = list[tuple[str, str]]


def json_block(data: Any) -> str:
    """``data`` as JSON that can sit inside ``<script type="application/json">``: ``<``, ``>``,
    ``&``, U+2028 and U+2029 written as ``\\u`` escapes (so no ``</script>`` or ``<!--`` can
    end or change the block), everything else but ASCII escaped too (lone surrogates
    included). Keys sorted: the same data gives the same text."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.translate(_JSON_ESCAPES)


def _cut(text: str, limit: int = MAX_VALUE) -> str:
    text = clean_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: Any) -> str:
    """A value of the trace as text: text as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return _cut(value)
    try:
        return _cut(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    except (TypeError, ValueError, RecursionError):
        return _cut(repr(value)[:MAX_VALUE] if not isinstance(value, list | dict) else "…")


@dataclass
class _Section:
    heading: str
    rows: Rows = field(default_factory=list)

    def as_data(self, budget: list[int]) -> dict[str, Any]:
        """The section as the page's data; ``budget`` (one number: bytes of JSON left for the
        page's rows) is spent, and once it is gone a value shows as ``…``."""
        rows = []
        for key, value in self.rows:
            pair = [_cut(key), _cut(value)]
            cost = sum(len(json_block(text)) for text in pair)
            if cost > budget[0]:
                pair = [pair[0][:200], "…"]
                cost = len(json_block(pair[0])) + 3
            budget[0] = max(0, budget[0] - cost)
            rows.append(pair)
        return {"heading": _cut(self.heading), "rows": rows}


@dataclass
class _Shown:
    """One picture on a page: the picture, its marks, and each node's detail sections."""

    picture: Picture
    marks: Marks = field(default_factory=Marks)
    sections: dict[int, list[_Section]] = field(default_factory=dict)


def _node_title(picture: Picture, at: int) -> str:
    node = picture.nodes[at]
    return node.step if node.step is not None else node.label.replace("\n", " ")


def _ways_on(picture: Picture) -> dict[int, _Section]:
    """Per node: the ways on from it, as a section of its detail."""
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    ways: dict[int, _Section] = {}
    for edge in picture.edges:
        source, target = index.get(edge.source), index.get(edge.target)
        if source is None or target is None:
            continue
        section = ways.setdefault(source, _Section("ways on"))
        kind = "failure" if edge.failure else "next"
        section.rows.append((edge.label or kind, "→ " + _node_title(picture, target)))
    return ways


def _page(title: str, summary: Sequence[str], shown: Sequence[_Shown], extra: str = "") -> str:
    """The page: header with the summary, one section per picture, the detail panel."""
    sections, pictures = [], []
    budget = [MAX_DATA]
    for number, item in enumerate(shown):
        picture = item.picture
        svg = picture_svg(picture, number=number, marks=item.marks)
        sections.append(
            f'<section class="picture"><h2>{xml_text(picture.title)}</h2>'
            f'<div class="canvas">\n{svg}\n</div></section>'
        )
        ways = _ways_on(picture)
        nodes = []
        for at, _node in enumerate(picture.nodes):
            detail = list(item.sections.get(at, []))
            if at in ways:
                detail.append(ways[at])
            nodes.append(
                {
                    "title": _cut(_node_title(picture, at)),
                    "sections": [section.as_data(budget) for section in detail],
                }
            )
        pictures.append({"title": _cut(picture.title), "nodes": nodes})
    data = {"pictures": pictures, "empty": "This step did not run."}
    spans = "".join(f"<span>{xml_text(line)}</span>" for line in summary)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{xml_text(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head><body>",
            f'<header><h1>{xml_text(title)}</h1><p class="summary">{spans}</p></header>',
            '<div class="body"><main>',
            *sections,
            f'<section class="listing">{extra}</section>' if extra else "",
            "</main>",
            '<aside id="detail" aria-live="polite">',
            '<p class="hint">Click a step to see its detail.</p>',
            "</aside></div>",
            f'<script type="application/json" id="flowlang-data">{json_block(data)}</script>',
            f"<script>{SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )


def graph_page(pictures: Sequence[Picture], *, title: str) -> str:
    """The viewer of one or more pictures (flows and/or workflows), without run data: a click
    on a node shows the ways on from it."""
    count = sum(len(picture.nodes) for picture in pictures)
    summary = [f"{len(pictures)} picture{'s' if len(pictures) != 1 else ''}", f"{count} nodes"]
    return _page(title, summary, [_Shown(picture) for picture in pictures])


# --- one run -------------------------------------------------------------------------------


#: Detail keys shown by name (the rest are shown as they are, after these).
_NAMED = {
    "digits": "digits entered",
    "key": "key pressed",
    "status": "response status",
    "error": "error",
    "target": "target",
    "mailbox": "mailbox",
    "prompt": "prompt",
    "prompt_url": "plays",
}
_SKIPPED = frozenset({"request", "why", "rows", "expression", "value", "step", "duration_ms"})


def _entry_rows(entry: Mapping[str, Any]) -> Rows:
    """What the page shows of one trace entry."""
    rows: Rows = [("outcome", _shown(entry.get("outcome"))), ("type", _shown(entry.get("type")))]
    duration = entry.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        rows.append(("duration", f"{duration:.3f} ms"))
    raw = entry.get("detail")
    detail: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    request = detail.get("request")
    if isinstance(request, Mapping):
        rows.append(("request", f"{_shown(request.get('method'))} {_shown(request.get('url'))}"))
        headers = request.get("headers")
        if isinstance(headers, Mapping):
            rows.extend(
                (f"header {_shown(name)}", _shown(value)) for name, value in headers.items()
            )
        rows.extend(
            (f"request {_shown(key)}", _shown(value))
            for key, value in request.items()
            if key not in ("method", "url", "headers")
        )
    why = describe_why(detail)
    if why is not None:
        rows.append(("why", _cut(why)))
    if "attempt" in detail and "max_attempts" in detail:
        after = f" (after {_shown(detail['after'])})" if "after" in detail else ""
        rows.append(
            ("try", f"{_shown(detail['attempt'])} of {_shown(detail['max_attempts'])}{after}")
        )
    for key, name in _NAMED.items():
        if key in detail:
            rows.append((name, _shown(detail[key])))
    for key, value in detail.items():
        if (
            key not in _NAMED
            and key not in _SKIPPED
            and key not in ("attempt", "max_attempts", "after")
        ):
            rows.append((_shown(key), _shown(value)))
    if raw is not None and not isinstance(raw, Mapping):
        rows.append(("detail", _shown(raw)))
    return _capped(rows)


def _capped(rows: Rows) -> Rows:
    """At most :data:`MAX_ROWS` rows, the last one counting those left out."""
    if len(rows) <= MAX_ROWS:
        return rows
    return [*rows[: MAX_ROWS - 1], ("…", f"{len(rows) - MAX_ROWS + 1} more rows")]


def _kept(count: int) -> tuple[range, range]:
    """The positions of a run's first and last items that a page holds (of ``count``)."""
    if count <= FIRST_ENTRIES + LAST_ENTRIES:
        return range(count), range(count, count)
    return range(FIRST_ENTRIES), range(count - LAST_ENTRIES, count)


def _more(count: int, noun: str) -> str:
    shown = count - FIRST_ENTRIES - LAST_ENTRIES
    return f'<li class="more">… {shown} more {noun} (not shown)</li>'


def _instruction_rows(instruction: Any) -> tuple[str, str]:
    if isinstance(instruction, Mapping):
        parts = [
            f"{_shown(key)}={_shown(value)}"
            for key, value in instruction.items()
            if key not in ("action", "step")
        ]
        if len(parts) > MAX_ROWS:
            parts = [*parts[: MAX_ROWS - 1], f"… {len(parts) - MAX_ROWS + 1} more"]
        return (_shown(instruction.get("action", "instruction")), _cut(", ".join(parts)))
    return ("instruction", _shown(instruction))


def _edge_positions(picture: Picture) -> dict[int, int]:
    """Flow edge number → position of its arrow in the picture."""
    return {edge.edge: at for at, edge in enumerate(picture.edges) if edge.edge is not None}


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:MAX_NUMBERS])
    return shown + (", …" if len(numbers) > MAX_NUMBERS else "")


def run_page(
    graph: FlowGraph,
    trace: Sequence[Mapping[str, Any]],
    *,
    status: str,
    instructions: Sequence[Any] = (),
    title: str | None = None,
) -> str:
    """The viewer of one call: the flow with the path the call took numbered in order on its
    edges, the steps in order, and each step's trace entries (outcome, duration, the redacted
    request and response summary, compared values, digits, instructions) on a click."""
    picture = flow_picture(graph)
    node_of = {node.step: at for at, node in enumerate(picture.nodes) if node.step is not None}
    positions = _edge_positions(picture)
    path = graph.path(trace)
    numbers: dict[int, list[int]] = {}
    for order, edge in enumerate(path, start=1):
        if edge.index in positions:
            numbers.setdefault(positions[edge.index], []).append(order)
    edge_classes = dict.fromkeys(numbers, "taken")
    sections: dict[int, list[_Section]] = {}
    steps: list[str] = []
    first, last = _kept(len(trace))
    for position in (*first, *last):
        entry, order = trace[position], position + 1
        if position == last.start and first.stop < last.start:
            steps.append(_more(len(trace), "trace entries"))
        step = str(entry.get("step"))
        at = node_of.get(step)
        if at is not None:
            heading = f"step {order} of the call: {_shown(entry.get('outcome'))}"
            sections.setdefault(at, []).append(_Section(heading, _entry_rows(entry)))
        button = (
            f'<button type="button" data-node="{at}">{xml_text(_cut(step, 200))}</button>'
            if at is not None
            else xml_text(_cut(step, 200))
        )
        outcome = xml_text(_shown(entry.get("outcome")))
        steps.append(f'<li>{button} <span class="outcome">{outcome}</span></li>')
    said_first, said_last = _kept(len(instructions))
    kept = [instructions[position] for position in (*said_first, *said_last)]
    by_step: dict[str, list[Any]] = {}
    for instruction in kept:
        owner = instruction.get("step") if isinstance(instruction, Mapping) else None
        by_step.setdefault(str(owner), []).append(instruction)
    for step, items in by_step.items():
        if step in node_of:
            section = _Section("host instructions", [_instruction_rows(item) for item in items])
            sections.setdefault(node_of[step], []).append(section)
    visited = {
        node_of[str(entry.get("step"))] for entry in trace if str(entry.get("step")) in node_of
    }
    node_classes = {
        at: ("visited" if at in visited else "unvisited")
        for at, node in enumerate(picture.nodes)
        if node.step is not None
    }
    if trace and status != "ended" and status != "completed":
        stopped = node_of.get(str(trace[-1].get("step")))
        if stopped is not None:
            node_classes[stopped] = "visited stopped"
    start_edges = [at for at, edge in enumerate(picture.edges) if edge.edge is None]
    if trace:
        edge_classes.update(dict.fromkeys(start_edges, "taken"))
    marks = Marks(node_classes, edge_classes, {at: _numbers(n) for at, n in numbers.items()})
    summary = [
        f"status: {status}",
        f"{len(trace)} trace entries",
        f"{len(path)} edges taken",
        f"{len(instructions)} host instructions",
    ]
    listing = (
        '<h2>Steps in order</h2><ol class="steps" data-picture="0">' + "".join(steps) + "</ol>"
    )
    if instructions:
        shown = [
            "<li>" + xml_text(": ".join(part for part in _instruction_rows(item) if part)) + "</li>"
            for item in kept
        ]
        if said_first.stop < said_last.start:
            shown.insert(said_first.stop, _more(len(instructions), "host instructions"))
        listing += '<h2>Host instructions</h2><ul class="instructions">' + "".join(shown) + "</ul>"
    return _page(
        title if title is not None else f"{graph.name}: one call",
        summary,
        [_Shown(picture, marks, sections)],
        listing,
    )


# --- coverage ------------------------------------------------------------------------------


def _coverage_shown(coverage: Coverage) -> tuple[_Shown, tuple[int, int, int, int]]:
    graph = coverage.graph
    picture = flow_picture(graph)
    positions = _edge_positions(picture)
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    edge_classes: dict[int, str] = {}
    notes: dict[int, str] = {}
    reached: set[int] = set()
    for edge in graph.edges:
        at = positions.get(edge.index)
        if at is None:
            continue
        hits = coverage.edge_hits[edge.index]
        edge_classes[at] = "covered" if hits else "uncovered"
        notes[at] = f"×{hits}" if hits else "never"
        if hits:
            reached.add(index[picture.edges[at].target])
    node_classes: dict[int, str] = {}
    sections: dict[int, list[_Section]] = {}
    for at, node in enumerate(picture.nodes):
        if node.step is not None:
            hits = coverage.step_hits.get(node.step, 0)
            sections[at] = [_Section("coverage", [("runs", str(hits))])]
            if not hits:
                node_classes[at] = "unrun"
        elif node.key != "start" and at not in reached:
            node_classes[at] = "unrun"
    for at, arrow in enumerate(picture.edges):
        if arrow.edge is None:
            ran = coverage.step_hits.get(graph.start, 0) > 0
            edge_classes[at] = "covered" if ran else "uncovered"
    steps_run = sum(1 for step in graph.steps if coverage.step_hits.get(step, 0))
    edges_run = sum(1 for hits in coverage.edge_hits if hits)
    counts = (steps_run, len(graph.steps), edges_run, len(graph.edges))
    title = f"{graph.name}: steps {counts[0]}/{counts[1]}, edges {counts[2]}/{counts[3]}"
    shown = Picture(title, picture.nodes, picture.edges)
    return _Shown(shown, Marks(node_classes, edge_classes, notes), sections), counts


def _totals(counts: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    steps_run = steps = edges_run = edges = 0
    for a, b, c, d in counts:
        steps_run, steps, edges_run, edges = steps_run + a, steps + b, edges_run + c, edges + d
    return steps_run, steps, edges_run, edges


def coverage_page(coverages: Sequence[Coverage], *, title: str) -> str:
    """The viewer of coverage: per flow, covered edges solid green with their counts, edges
    never taken dashed red, steps never run marked; a summary of steps and edges covered."""
    shown, counts = [], []
    for coverage in coverages:
        item, count = _coverage_shown(coverage)
        shown.append(item)
        counts.append(count)
    steps_run, steps, edges_run, edges = _totals(counts)
    percent = f" ({100 * edges_run / edges:.1f}%)" if edges else ""
    summary = [f"steps {steps_run}/{steps}", f"edges {edges_run}/{edges}{percent}"]
    return _page(title, summary, shown)
