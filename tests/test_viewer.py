"""The HTML viewer without a browser: the layout (golden files for the example flows, and
properties of any picture), the SVG, and the pages read back with ``html.parser``: nothing
external, the Content-Security-Policy, hostile text only as text, the data block's escaping,
the same bytes for the same input, and the size bound.

The golden layouts are written anew by ``python tests/test_viewer.py`` (then read the diff).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from big_documents import chained_flow
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlang
from flowlang.cli import main
from flowlang.flow.load import load_flow, load_flow_text
from flowlang.graph.html import (
    CSP,
    FIRST_ENTRIES,
    LAST_ENTRIES,
    MAX_ROWS,
    coverage_page,
    graph_page,
    json_block,
    run_page,
)
from flowlang.graph.layout import Layout, layout
from flowlang.graph.model import Coverage, flow_graph
from flowlang.graph.picture import SHAPES, Picture, PictureEdge, PictureNode, flow_picture
from flowlang.graph.svg import clean_text, picture_svg
from flowlang.runtime.recorded import load_recorded_responses

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "flows"
GOLDEN = Path(__file__).resolve().parent / "golden" / "layout"
FLOWS = sorted(EXAMPLES.glob("*.yaml"))

#: Text that would act if a page took it as markup or as a URL.
HOSTILE = [
    "</script><script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=1">',
    "javascript:window.pwned=1",
    "<!-- ]]> <![CDATA[ x",
    "\u2028\u2029 & &amp; \"quoted\" 'single'",
    "<svg onload=window.pwned=1>",
    "\x00\x1b[31m\u202e\ud800 control",
]

HOSTILE_FLOW = """\
flow: "x</script><img src=x onerror=window.pwned=1>"
start: "a</script><script>window.pwned=1</script>"
steps:
  "a</script><script>window.pwned=1</script>":
    type: say
    text: "</script><script>window.pwned=1</script> <img src=x onerror=window.pwned=1>"
    next: "javascript:window.pwned=1"
  "javascript:window.pwned=1":
    type: hangup
"""


# --- reading pages back ----------------------------------------------------------------------


class Page(HTMLParser):
    """A page as html.parser sees it: tags with attributes, text by the element it is in, the
    content of each script element."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.texts: list[tuple[str, str]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self.scripts.append((dict(attrs), ""))
        if tag not in ("meta", "br", "img", "input", "link", "path", "polyline", "polygon"):
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        where = self.stack[-1] if self.stack else ""
        if where == "script" and self.scripts:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.texts.append((where, data))

    def text(self) -> str:
        return "".join(data for _, data in self.texts)

    def data(self) -> Any:
        blocks = [text for attrs, text in self.scripts if attrs.get("id") == "flowlang-data"]
        assert len(blocks) == 1
        return json.loads(blocks[0])

    def all(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and all(attrs.get(key) == value for key, value in wanted.items())
        ]


URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data"}
FORBIDDEN_TAGS = {"img", "iframe", "object", "embed", "link", "base", "form", "image", "use"}


def assert_self_contained(page: Page) -> None:
    """Nothing a browser would load or follow, the CSP first in the head, two scripts."""
    for tag, attrs in page.tags:
        assert tag not in FORBIDDEN_TAGS, tag
        assert not URL_ATTRIBUTES & set(attrs), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name, value in attrs.items():
            shown = (value or "").lower()
            assert "javascript:" not in shown or name == "aria-label", (tag, name, value)
            for target in re.findall(r"url\(([^)]*)\)", shown):
                assert target.startswith("#"), (tag, name, value)
    metas = [attrs for tag, attrs in page.tags if tag == "meta"]
    assert metas[0] == {"charset": "utf-8"}
    assert metas[1] == {"http-equiv": "Content-Security-Policy", "content": CSP}
    first_script = next(at for at, (tag, _) in enumerate(page.tags) if tag in ("script", "style"))
    assert first_script > next(at for at, (tag, _) in enumerate(page.tags) if tag == "meta") + 1
    assert [attrs for attrs, _ in page.scripts] == [
        {"type": "application/json", "id": "flowlang-data"},
        {},
    ]
    script = page.scripts[1][1]
    assert "innerHTML" not in script and "outerHTML" not in script and "eval(" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script
    assert "url(" not in "".join(text for where, text in page.texts if where == "style").replace(
        "url(#", ""
    )


# --- running flows ---------------------------------------------------------------------------


def run_call(
    flow: Any, digits: list[str | None], responses: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """One call of ``flow`` with the example context: its trace (every leg), instructions and
    status."""
    context_file = EXAMPLES / "data" / f"{flow.filename and Path(flow.filename).stem}.context.json"
    context = json.loads(context_file.read_text()) if context_file.exists() else {}

    async def call() -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        options: dict[str, Any] = {"secrets": {"billing_token": "b-token", "crm_token": "c-tok"}}
        if responses:
            options["http"] = load_recorded_responses(EXAMPLES / "data" / responses)
        async with flowlang.Runtime(**options) as runtime:
            result = await runtime.start(flow, context)
            trace, instructions = list(result.trace), list(result.instructions)
            for entry in digits:
                result = await runtime.resume(flow, result.state or {}, entry)
                trace.extend(result.trace)
                instructions.extend(result.instructions)
            return trace, instructions, result.status

    return asyncio.run(call())


def account_call() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], str]:
    flow = load_flow(EXAMPLES / "account_verification.yaml")
    trace, instructions, status = run_call(
        flow, ["12345678#"], "account_verification.responses.yaml"
    )
    return flow, trace, instructions, status


# --- layout ----------------------------------------------------------------------------------


def layout_data(laid: Layout) -> dict[str, Any]:
    data = dataclasses.asdict(laid)
    return json.loads(json.dumps(data))  # tuples as lists, as in the golden file


@pytest.mark.parametrize("path", FLOWS, ids=[path.stem for path in FLOWS])
def test_the_example_flows_lay_out_as_their_golden_files(path: Path) -> None:
    picture = flow_picture(flow_graph(load_flow(path)))
    golden = json.loads((GOLDEN / f"{path.stem}.json").read_text())
    assert layout_data(layout(picture)) == golden


def test_every_example_flow_has_a_golden_layout() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == [path.stem for path in FLOWS]


@st.composite
def pictures(draw: st.DrawFn) -> Picture:
    """Any picture: nodes in up to three groups, edges between any nodes (loops, cycles, twins,
    edges across groups), labels of any text."""
    count = draw(st.integers(1, 24))
    groups = draw(st.lists(st.sampled_from([None, "a", "b<c>"]), min_size=count, max_size=count))
    labels = st.text(max_size=60)
    nodes = tuple(
        PictureNode(f"n{at}", draw(labels), draw(st.sampled_from(SHAPES)), groups[at], None)
        for at in range(count)
    )
    pairs = draw(
        st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1)), max_size=50)
    )
    edges = tuple(
        PictureEdge(f"n{a}", f"n{b}", draw(labels), draw(st.booleans()), at)
        for at, (a, b) in enumerate(pairs)
    )
    return Picture(draw(labels), nodes, edges)


def _inside(point: tuple[float, float], box: dict[str, Any]) -> bool:
    x, y = point
    return (
        box["x"] - 0.11 <= x <= box["x"] + box["width"] + 0.11
        and box["y"] - 0.11 <= y <= box["y"] + box["height"] + 0.11
    )


@settings(max_examples=150, deadline=None)
@given(pictures())
def test_any_picture_lays_out_without_overlaps_and_with_edges_touching_their_nodes(
    picture: Picture,
) -> None:
    laid = layout_data(layout(picture))
    assert laid == layout_data(layout(picture))  # deterministic
    boxes = laid["nodes"]
    assert [box["key"] for box in boxes] == [node.key for node in picture.nodes]
    for box in boxes:
        assert box["x"] >= 0 and box["x"] + box["width"] <= laid["width"] + 0.11
        assert box["y"] >= 0 and box["y"] + box["height"] <= laid["height"] + 0.11
    for a, first in enumerate(boxes):
        for second in boxes[a + 1 :]:
            apart = (
                first["x"] + first["width"] <= second["x"] + 0.11
                or second["x"] + second["width"] <= first["x"] + 0.11
                or first["y"] + first["height"] <= second["y"] + 0.11
                or second["y"] + second["height"] <= first["y"] + 0.11
            )
            assert apart, (first, second)
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    for edge, route in zip(picture.edges, laid["edges"], strict=True):
        points = route["points"]
        assert len(points) >= 2
        assert _inside(points[0], boxes[index[edge.source]]), (edge, route)
        assert _inside(points[-1], boxes[index[edge.target]]), (edge, route)


def _crosses(a: tuple[float, float], b: tuple[float, float], box: Any) -> bool:
    """Whether the segment a-b passes through the inside of ``box`` (its edge excluded)."""
    x0, y0 = box.x + 0.5, box.y + 0.5
    x1, y1 = box.x + box.width - 0.5, box.y + box.height - 0.5
    t0, t1 = 0.0, 1.0  # Liang-Barsky clipping of the segment to the box
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - x0), (dx, x1 - a[0]), (-dy, a[1] - y0), (dy, y1 - a[1])):
        if p == 0:
            if q < 0:
                return False
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 > t1:
            return False
    return t1 - t0 > 1e-9


def _collinear_overlap(first: Any, second: Any) -> bool:
    """Whether two segments lie on one line and share more than a point."""
    (a, b), (c, d) = first, second
    cross = (b[0] - a[0]) * (d[1] - c[1]) - (b[1] - a[1]) * (d[0] - c[0])
    across = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    if abs(cross) > 1e-6 or abs(across) > 1e-6:
        return False
    axis = 0 if abs(b[0] - a[0]) >= abs(b[1] - a[1]) else 1
    low, high = sorted((a[axis], b[axis]))
    other_low, other_high = sorted((c[axis], d[axis]))
    return min(high, other_high) - max(low, other_low) > 0.5


def _apart(first: Any, second: Any) -> bool:
    ax, ay, aw, ah = first
    bx, by, bw, bh = second
    return (
        ax + aw <= bx + 0.11 or bx + bw <= ax + 0.11 or ay + ah <= by + 0.11 or by + bh <= ay + 0.11
    )


def assert_legible(picture: Picture, laid: Layout) -> None:
    """No edge through a node other than its ends; no two texts (node or edge) overlapping;
    everything inside the picture; no two edges that share no node drawn along one line."""
    boxes = [(box.x, box.y, box.width, box.height) for box in laid.nodes]
    labels = [route.label_box for route in laid.edges if route.label_box is not None]
    for box in (*boxes, *labels):
        x, y, w, h = box
        assert x >= 0 and y >= 0 and x + w <= laid.width + 0.11 and y + h <= laid.height + 0.11
    for at, label in enumerate(labels):
        for other in (*boxes, *labels[at + 1 :]):
            assert _apart(label, other), (label, other)
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    segments = []
    for number, (edge, route) in enumerate(zip(picture.edges, laid.edges, strict=True)):
        ends = {edge.source, edge.target}
        mine = list(pairwise(route.points))
        for x, y in route.points:
            assert 0 <= x <= laid.width and 0 <= y <= laid.height, (edge, route)
        for box in laid.nodes:
            if box.key not in ends:
                assert not any(_crosses(a, b, box) for a, b in mine), (edge, box, route)
        segments.append((number, ends, mine))
        assert edge.source in index and edge.target in index
    for at, (number, ends, mine) in enumerate(segments):
        for other, other_ends, theirs in segments[at + 1 :]:
            if ends & other_ends:
                continue  # arrows of one node may meet on their way to it
            for first in mine:
                for second in theirs:
                    assert not _collinear_overlap(first, second), (number, other, first, second)


@settings(max_examples=150, deadline=None)
@given(pictures())
def test_any_picture_is_legible(picture: Picture) -> None:
    assert_legible(picture, layout(picture))


@pytest.mark.parametrize("path", FLOWS, ids=[path.stem for path in FLOWS])
def test_the_example_flows_are_legible(path: Path) -> None:
    picture = flow_picture(flow_graph(load_flow(path)))
    assert_legible(picture, layout(picture))


def test_the_example_workflows_are_legible() -> None:
    from flowlang.automations.workflow import load_workflow
    from flowlang.graph.workflows import workflow_picture

    workflows = [
        load_workflow(path) for path in sorted((ROOT / "examples/workflows").glob("*.yaml"))
    ]
    picture = workflow_picture(workflows)
    assert_legible(picture, layout(picture))


def test_labels_with_notes_and_a_long_flow_are_legible() -> None:
    picture = flow_picture(flow_graph(load_flow_text(chained_flow(120), name="long")))
    notes = {at: ", ".join(str(n) for n in range(at % 9)) for at in range(len(picture.edges))}
    assert_legible(picture, layout(picture, notes))


@settings(max_examples=100, deadline=None)
@given(pictures())
def test_without_cycles_every_edge_goes_down_to_a_lower_layer(picture: Picture) -> None:
    forward = tuple(
        edge for edge in picture.edges if int(edge.source[1:]) < int(edge.target[1:])
    )  # edges from an earlier node to a later one: no cycle
    nodes = tuple(dataclasses.replace(node, group=None) for node in picture.nodes)
    laid = layout(Picture(picture.title, nodes, forward))
    boxes = {box.key: box for box in laid.nodes}
    for edge in forward:
        assert boxes[edge.target].y > boxes[edge.source].y, edge


def test_a_long_flow_lays_out_in_layers_with_lanes_for_the_longest_edges() -> None:
    flow = load_flow_text(chained_flow(1000), name="long")
    picture = flow_picture(flow_graph(flow))
    laid = layout(picture)
    assert len(laid.nodes) == len(picture.nodes) > 1000
    tops = {box.y for box in laid.nodes}
    assert len(tops) > 500  # a chain goes down, layer by layer
    # edges to the shared end step run down lanes: the picture stays narrow
    assert laid.width < 1500


# --- svg -------------------------------------------------------------------------------------


def test_the_svg_draws_each_node_and_edge_with_its_number_and_kind() -> None:
    picture = flow_picture(flow_graph(load_flow(EXAMPLES / "account_verification.yaml")))
    page = Page(picture_svg(picture))
    nodes = page.all("g", role="button")
    assert [attrs["data-node"] for attrs in nodes] == [str(at) for at in range(len(picture.nodes))]
    edges = [attrs for tag, attrs in page.tags if tag == "g" and "data-edge" in attrs]
    assert [attrs["data-edge"] for attrs in edges] == [str(at) for at in range(len(picture.edges))]
    for attrs, edge in zip(edges, picture.edges, strict=True):
        assert ("failure" in str(attrs["class"]).split()) == edge.failure
        assert attrs.get("data-flow-edge") == (None if edge.edge is None else str(edge.edge))
    assert {"polygon", "ellipse", "rect", "polyline", "marker"} <= {tag for tag, _ in page.tags}
    assert "verify" in page.text() and "on_timeout" in page.text()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=5))
def test_any_label_is_text_in_the_svg(labels: list[str]) -> None:
    nodes = tuple(PictureNode(f"n{at}", label, "step") for at, label in enumerate(labels))
    edges = tuple(PictureEdge("n0", f"n{at}", label) for at, label in enumerate(labels))
    svg = picture_svg(Picture(labels[0], nodes, edges))
    page = Page(svg)
    assert {tag for tag, _ in page.tags} <= {
        "svg", "defs", "marker", "path", "g", "rect", "polygon", "ellipse", "polyline", "text",
        "tspan", "title",
    }  # fmt: skip
    shown = page.text()
    for label in labels:
        for word in clean_text(label).split():
            assert word[:20] in shown


# --- pages -----------------------------------------------------------------------------------


def test_a_run_page_numbers_the_path_in_order_and_holds_each_steps_detail() -> None:
    flow, trace, instructions, status = account_call()
    graph = flow_graph(flow)
    page = Page(run_page(graph, trace, status=status, instructions=instructions))
    assert_self_contained(page)
    path = graph.path(trace)
    assert len(path) >= 5
    notes: dict[str, str] = {}
    for tag, attrs in page.tags:
        if tag == "g" and "data-flow-edge" in attrs and "taken" in str(attrs["class"]):
            notes[str(attrs["data-flow-edge"])] = ""
    assert set(notes) == {str(edge.index) for edge in path}
    numbers = [data for where, data in page.texts if where == "tspan" and data.isdigit()]
    assert sorted(int(number) for number in numbers) == list(range(1, len(path) + 1))
    data = page.data()
    nodes = data["pictures"][0]["nodes"]
    verify = next(node for node in nodes if node["title"] == "verify")
    rows = dict(verify["sections"][0]["rows"])
    assert rows["request"] == "POST https://billing.example.com/api/accounts/12345678/verify"
    assert rows["response status"] == "200"
    assert rows["header Authorization"] == "Bearer [redacted]"
    assert "b-token" not in json.dumps(data)
    check = next(node for node in nodes if node["title"] == "check")
    assert "greater_than" in dict(check["sections"][0]["rows"])["why"]
    ask = next(node for node in nodes if node["title"] == "ask_account")
    assert [section["heading"] for section in ask["sections"]][:2] == [
        "step 1 of the call: waiting for input",
        "step 2 of the call: collected",
    ]
    assert dict(ask["sections"][1]["rows"])["digits entered"] == "8"
    balance = next(node for node in nodes if node["title"] == "balance_due")
    said = next(
        section for section in balance["sections"] if section["heading"] == "host instructions"
    )
    assert said["rows"][0][0] == "say" and "42.5" in said["rows"][0][1]
    unvisited = [attrs for attrs in page.all("g") if "unvisited" in str(attrs.get("class"))]
    assert {node["title"] for node in (nodes[int(str(a["data-node"]))] for a in unvisited)} == {
        "invalid_number",
        "all_paid",
        "agent",
    }


def test_a_failed_run_marks_the_step_where_it_stopped() -> None:
    flow = load_flow(EXAMPLES / "account_verification.yaml")
    graph = flow_graph(flow)
    trace = [
        {"step": "ask_account", "type": "collect_input", "outcome": "collected", "detail": {}},
        {"step": "verify", "type": "http_request", "outcome": "failed", "detail": {"error": "x"}},
    ]
    page = Page(run_page(graph, trace, status="failed"))
    stopped = [attrs for attrs in page.all("g") if "stopped" in str(attrs.get("class"))]
    nodes = page.data()["pictures"][0]["nodes"]
    assert [nodes[int(str(attrs["data-node"]))]["title"] for attrs in stopped] == ["verify"]
    assert "status: failed" in page.text()


def test_hostile_step_ids_and_trace_text_appear_only_as_text() -> None:
    flow = load_flow_text(HOSTILE_FLOW, name="hostile")
    graph = flow_graph(flow)
    step = flow.start
    trace = [
        {
            "step": step,
            "type": "say",
            "outcome": text,
            "duration_ms": 1.0,
            "detail": {
                "request": {"method": "GET", "url": text, "headers": {text: text}},
                "response": {"body": text},
                "why": text,
                text: [text],
            },
        }
        for text in HOSTILE
    ]
    instructions = [{"action": "say", "step": step, "text": text} for text in HOSTILE]
    pages = [
        run_page(graph, trace, status="ended", instructions=instructions, title=HOSTILE[0]),
        graph_page([flow_picture(graph)], title=HOSTILE[1]),
        coverage_page([Coverage(graph)], title=HOSTILE[2]),
    ]
    for text in pages:
        page = Page(text)
        assert_self_contained(page)
        assert "window.pwned" not in page.scripts[1][1]
        assert "window.pwned=1" in page.text()  # shown, as text
        assert "<script>" not in text.split('id="flowlang-data">')[1].split("</script>")[0]
    run = Page(pages[0])
    assert "</script><script>window.pwned=1</script>" in run.text()
    assert "javascript:window.pwned=1" in run.text()
    dumped = json.dumps(run.data())
    for text in HOSTILE[:4]:
        assert json.dumps(clean_text(text))[1:-1] in dumped


def test_huge_and_deep_trace_values_are_cut_not_fatal() -> None:
    flow = load_flow(EXAMPLES / "vip_routing.yaml")
    graph = flow_graph(flow)
    deep: list[Any] = []
    for _ in range(50_000):
        deep = [deep]
    circular: dict[str, Any] = {}
    circular["self"] = circular
    trace = [
        {
            "step": flow.start,
            "type": "http_request",
            "outcome": "x" * 1_000_000,
            "detail": {"deep": deep, "circular": circular, "body": "y" * 1_000_000},
        }
    ]
    text = run_page(graph, trace, status="failed", instructions=["z" * 1_000_000])
    assert len(text.encode()) < 200_000
    page = Page(text)
    rows = dict(page.data()["pictures"][0]["nodes"][1]["sections"][0]["rows"])
    assert rows["outcome"].endswith("…") and len(rows["outcome"]) == 2000
    assert rows["deep"] == "…" and rows["circular"] == "…"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.text() | st.integers() | st.none(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=12,
    )
)
def test_the_data_block_escapes_what_could_end_or_change_it(data: Any) -> None:
    block = json_block(data)
    assert not set(block) & {"<", ">", "&", "\u2028", "\u2029"}
    assert block.isascii()
    assert json.loads(block) == data
    page = Page(f'<script type="application/json" id="flowlang-data">{block}</script><p>after</p>')
    assert page.data() == data and page.text() == "after"


def test_the_same_input_gives_the_same_bytes() -> None:
    flow, trace, instructions, status = account_call()
    graph = flow_graph(flow)
    first = run_page(graph, trace, status=status, instructions=instructions)
    again_flow, again_trace, again_instructions, _ = account_call()
    for entry_a, entry_b in zip(trace, again_trace, strict=True):  # durations differ by run
        entry_b["duration_ms"] = entry_a["duration_ms"]
        if isinstance(entry_b.get("detail"), dict) and "duration_ms" in entry_b["detail"]:
            entry_b["detail"]["duration_ms"] = entry_a["detail"]["duration_ms"]
    second = run_page(
        flow_graph(again_flow), again_trace, status=status, instructions=again_instructions
    )
    assert first.encode() == second.encode()
    pictures = [flow_picture(flow_graph(load_flow(path))) for path in FLOWS]
    assert graph_page(pictures, title="all") == graph_page(pictures, title="all")


def test_the_viewer_of_a_100_step_flow_is_under_200_kb() -> None:
    flow = load_flow_text(chained_flow(100), name="hundred")
    graph = flow_graph(flow)
    assert len(graph.steps) >= 100
    trace = [
        {
            "step": step_id,
            "type": step.type,
            "outcome": "success",
            "duration_ms": 0.25,
            "detail": {
                "request": {
                    "method": "POST",
                    "url": f"https://crm.example.com/api/{step_id}",
                    "headers": {"Authorization": "Bearer [redacted]"},
                    "body_bytes": 120,
                },
                "status": 200,
            },
        }
        for step_id, step in graph.steps.items()
    ]
    sizes = [
        len(run_page(graph, trace, status="ended").encode()),
        len(graph_page([flow_picture(graph)], title="hundred").encode()),
        len(coverage_page([Coverage(graph)], title="hundred").encode()),
    ]
    assert max(sizes) < 200_000, sizes


def test_a_long_run_keeps_its_first_and_last_entries_and_the_page_stays_bounded() -> None:
    flow = load_flow(EXAMPLES / "account_verification.yaml")
    graph = flow_graph(flow)
    headers = {f"h{at}": "v" * 5000 for at in range(60)}
    trace = [
        {
            "step": "verify",
            "type": "http_request",
            "outcome": f"outcome {order}",
            "duration_ms": 1.0,
            "detail": {
                "request": {"method": "POST", "url": "https://x/" + "a" * 5000, "headers": headers},
                "status": 200,
            },
        }
        for order in range(1, 1001)
    ]
    instructions = [{"action": "say", "step": "balance_due", "text": "t" * 5000}] * 1000
    text = run_page(graph, trace, status="completed", instructions=instructions)
    assert len(text.encode()) < 3_000_000
    page = Page(text)
    steps = [data for where, data in page.texts if where == "button"]
    assert len(steps) == FIRST_ENTRIES + LAST_ENTRIES
    more = 1000 - FIRST_ENTRIES - LAST_ENTRIES
    assert f"… {more} more trace entries (not shown)" in page.text()
    assert f"… {more} more host instructions (not shown)" in page.text()
    assert "1000 trace entries" in page.text() and "1000 host instructions" in page.text()
    verify = next(n for n in page.data()["pictures"][0]["nodes"] if n["title"] == "verify")
    headings = [section["heading"] for section in verify["sections"]][:-1]  # then: ways on
    assert headings[0].startswith("step 1 of") and headings[-1].startswith("step 1000 of")
    assert len(headings) == FIRST_ENTRIES + LAST_ENTRIES
    rows = verify["sections"][0]["rows"]
    assert len(rows) == MAX_ROWS and rows[-1][0] == "…" and rows[-1][1].endswith("more rows")
    assert all(len(value) <= 2000 for section in verify["sections"] for _, value in section["rows"])


def test_svg_coordinates_are_fixed_point_with_one_decimal() -> None:
    picture = Picture("t", (PictureNode("a", "a", "step"),), ())
    laid = layout(picture)
    far = dataclasses.replace(laid.nodes[0], x=8648150.25, y=0.04, width=-0.04)
    svg = picture_svg(picture, laid=dataclasses.replace(laid, width=12345678.9, nodes=(far,)))
    numbers = re.findall(r'="(-?[0-9][^"]*)"', svg)
    numbers = [part for text in numbers for pair in text.split() for part in pair.split(",")]
    assert numbers and all(re.fullmatch(r"-?\d+(\.\d)?", number) for number in numbers), numbers
    assert 'width="12345678.9"' in svg and 'x="8648150.2"' in svg and "e+" not in svg


def test_the_page_allows_its_own_script_by_its_hash_and_nothing_inline_else() -> None:
    page = Page(graph_page([flow_picture(flow_graph(load_flow(FLOWS[0])))], title="t"))
    script = page.scripts[1][1]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP
    assert "unsafe-inline" not in CSP.split("script-src")[1] and "img-src" not in CSP


def test_a_steps_duration_shows_once() -> None:
    flow, trace, _, status = account_call()
    data = Page(run_page(flow_graph(flow), trace, status=status)).data()
    verify = next(n for n in data["pictures"][0]["nodes"] if n["title"] == "verify")
    keys = [key for key, _ in verify["sections"][0]["rows"]]
    assert keys.count("duration") == 1 and "duration_ms" not in keys


def test_a_coverage_page_shows_covered_and_missing_edges_with_counts() -> None:
    flow = load_flow(EXAMPLES / "account_verification.yaml")
    graph = flow_graph(flow)
    coverage = Coverage(graph)
    for _ in range(2):
        coverage.add(run_call(flow, ["12345678#"], "account_verification.responses.yaml")[0])
    coverage.add(run_call(flow, ["123"], None)[0])
    page = Page(coverage_page([coverage], title="coverage"))
    assert_self_contained(page)
    covered = {str(e.index) for e in graph.edges if coverage.edge_hits[e.index]}
    missing = {str(e.index) for e in coverage.missing_edges}
    assert covered and missing
    classes = {
        str(attrs["data-flow-edge"]): str(attrs["class"]).split()
        for attrs in page.all("g")
        if "data-flow-edge" in attrs
    }
    assert {k for k, v in classes.items() if "covered" in v} == covered
    assert {k for k, v in classes.items() if "uncovered" in v} == missing
    steps_run = sum(1 for step in graph.steps if coverage.step_hits.get(step))
    edges_run = len(covered)
    summary = page.text()
    assert f"steps {steps_run}/{len(graph.steps)}" in summary
    assert f"edges {edges_run}/{len(graph.edges)}" in summary
    notes = [data for where, data in page.texts if where == "tspan" and data.startswith("×")]
    assert sorted(notes) == sorted(f"×{coverage.edge_hits[int(k)]}" for k in covered)
    unrun = [attrs for attrs in page.all("g") if "unrun" in str(attrs.get("class"))]
    titles = [page.data()["pictures"][0]["nodes"][int(str(a["data-node"]))]["title"] for a in unrun]
    assert set(graph.steps) - set(coverage.step_hits) <= set(titles)


def test_a_graph_page_draws_every_picture_and_lists_the_ways_on() -> None:
    pictures = [flow_picture(flow_graph(load_flow(path))) for path in FLOWS]
    page = Page(graph_page(pictures, title="examples"))
    assert_self_contained(page)
    svgs = page.all("svg")
    assert [attrs["data-picture"] for attrs in svgs] == [str(at) for at in range(len(FLOWS))]
    data = page.data()
    assert [len(item["nodes"]) for item in data["pictures"]] == [len(p.nodes) for p in pictures]
    verify = next(n for n in data["pictures"][0]["nodes"] if n["title"] == "verify")
    assert ["on_failure", "→ agent"] in verify["sections"][0]["rows"]


# --- flowlang run --html ---------------------------------------------------------------------


def test_flowlang_run_html_writes_the_whole_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWLANG_SECRET_BILLING_TOKEN", "billing-secret-value")
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", "crm-secret-value")
    target = tmp_path / "call.html"
    arguments = [
        "run",
        str(EXAMPLES / "support_menu.yaml"),
        "--context",
        str(EXAMPLES / "data" / "support_menu.context.json"),
        "--responses",
        str(EXAMPLES / "data" / "support_menu.responses.yaml"),
        *("--input", "main_menu=3", "--input", "main_menu=2"),
        *("--input", "tech_menu=7", "--input", "tech_menu="),
    ]
    out = io.StringIO()
    assert main([*arguments, "--html", str(target)], stdout=out) == 0, out.getvalue()
    lines = io.StringIO()
    assert main([*arguments, "--json"], stdout=lines) == 0
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    text = target.read_text(encoding="utf-8")
    page = Page(text)
    assert_self_contained(page)
    assert "secret-value" not in text
    steps = [data for where, data in page.texts if where == "button"]
    assert steps == [event["step"] for event in events if event["event"] == "step"]
    assert steps.count("tech_menu") == 4  # every leg of the run, joined
    assert "status: ended" in page.text()
    assert "transfer: target=queue:operator" in page.text()


def test_flowlang_run_html_to_a_place_it_cannot_write_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "run",
            str(EXAMPLES / "vip_routing.yaml"),
            "--html",
            str(tmp_path / "missing" / "dir" / "call\x1b.html"),
        ],
        stdout=io.StringIO(),
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot write --html" in err and "No such file or directory" in err
    assert "\x1b" not in err and "Traceback" not in err


if __name__ == "__main__":  # write the golden layouts anew
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for flow_path in FLOWS:
        laid = layout_data(layout(flow_picture(flow_graph(load_flow(flow_path)))))
        (GOLDEN / f"{flow_path.stem}.json").write_text(json.dumps(laid, indent=1) + "\n")
        print("wrote", GOLDEN / f"{flow_path.stem}.json")
