"""``flowlang graph``: Mermaid and DOT pictures of flows and workflows.

The charts of the examples are golden files (tests/golden/graph, reviewed by hand: a change
prints its diff). Any text a document holds shows as itself: hostile labels go through a small
tokenizer of the Mermaid output (no label closes early; its entity codes decode to the text
drawn) and through Graphviz itself (``dot -Tsvg`` parses the output and the SVG holds the
text). The README's Mermaid pictures are the current output for their examples.
"""

from __future__ import annotations

import argparse
import difflib
import html
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

import big_documents
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlang.automations.workflow import load_workflow
from flowlang.cli import _parser, main
from flowlang.cli.inputs import EXIT_STATUSES
from flowlang.flow.load import load_flow, load_flow_text
from flowlang.flow.source import MAX_DOCUMENT
from flowlang.graph.dot import to_dot
from flowlang.graph.mermaid import to_mermaid
from flowlang.graph.model import flow_graph
from flowlang.graph.picture import (
    MAX_LABEL,
    MAX_LINES,
    SHAPES,
    Picture,
    PictureEdge,
    PictureNode,
    flow_picture,
    label_lines,
)
from flowlang.graph.workflows import workflow_picture

ROOT = Path(__file__).resolve().parent.parent
FLOWS = sorted((ROOT / "examples" / "flows").glob("*.yaml"))
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden" / "graph"
README = ROOT / "README.md"
DOT = shutil.which("dot")

#: Pieces of text that mean something to Mermaid, Graphviz, HTML or a terminal.
HOSTILE = (
    '"',
    "\\",
    "\\l",
    "\\N",
    "#",
    "#quot;",
    "&amp;",
    "&#45;",
    "%%",
    "%%{init: {'theme': 'dark'}}%%",
    "end",
    "subgraph",
    "style",
    "classDef x fill:#f00;",
    "<script>alert(1)</script>",
    "|",
    ";",
    "`md`",
    "$$x$$",
    "{}",
    "[]",
    "()",
    "-->",
    "\n",
    "\r\n",
    "\x00",
    "\x1b[31m",
    "\u2028",
    "\u2029",
    "\u202e",
    "\ud800",
    "\udfff",
    "\x85",
    "\ufeff",
    "😀",
    " ",
    "\ufb02\u00b0\u00b060\u00b6\u00df",  # Mermaid's stand-in for an entity code: &#60;
    "\ufb02\u00b0\u00b035\u00b6\u00df",  # ... which Mermaid decodes twice: &#35; then #
    "\ufb02\u00b0amp\u00b6\u00df",
    "fa:fa-car",  # an icon in Mermaid: the text would be lost
    "fab:fa-github fas:fa-x far:fa-y fal:fa-z fak:fa-w",
    "\u200b",
    "\u2060\u00ad\u200e\u200f\u061c",
    "漢字",
    "e\u0301",
)
#: Step ids that are words or numbers to Mermaid or DOT.
HOSTILE_IDS = ("node", "graph", "end", "subgraph", "digraph", "strict", "1", "a b", "default")


def hostile_text() -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.sampled_from(HOSTILE),
        st.text(st.characters(exclude_categories=()), max_size=12),
    )
    joined = st.lists(piece, max_size=10).map("".join)
    huge = st.sampled_from(HOSTILE).map(lambda text: (text * 10_000)[:10_000])
    return st.one_of(joined, joined, joined, huge)


def hostile_picture(labels: Sequence[str], group: str | None) -> Picture:
    """A node per label (every shape in turn, in ``group``), and an arrow per label between
    them, failure ones too."""
    nodes = tuple(
        PictureNode(f"k{number}", label, SHAPES[number % len(SHAPES)], group)
        for number, label in enumerate(labels)
    )
    edges = tuple(
        PictureEdge(f"k{number}", f"k{(number + 1) % len(labels)}", label, bool(number % 2), number)
        for number, label in enumerate(labels)
    )
    return Picture(labels[0], nodes, edges)


def shown(label: str) -> str:
    """The text a chart must show for ``label``: the lines drawn, joined."""
    text = "\n".join(label_lines(label))
    return text if text.strip() else " "


# --- a tokenizer of the Mermaid this module writes --------------------------------------------

_NAMED = {"quot": '"', "lt": "<", "gt": ">", "amp": "&"}
_ENTITY = re.compile(r"#(\w+);")
_NODE_OPENINGS = ("((", "([", "[/", "(", "{", "[")


def decode(quoted: str) -> str:
    """The text Mermaid shows for a label's quoted text: entity codes, ``<br/>`` lines; then
    Mermaid's second pass over the SVG it made, where the label's text (escaped as SVG text)
    has ``ﬂ°°``, ``ﬂ°`` and ``¶ß`` turned into ``&#``, ``&`` and ``;`` and is read as markup
    again. No icon (``fa:fa-car``) is left to replace the text."""
    assert "style" not in quoted and "classDef" not in quoted, quoted
    lines = quoted.split("<br/>")
    assert not any(char in line for line in lines for char in '"<>&`|$%\\\ufb02\u00b6'), quoted
    assert not re.search(r"fa[a-z]?:fa-", quoted), quoted

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return chr(int(name)) if name.isdigit() else _NAMED[name]

    def again(text: str) -> str:
        markup = html.escape(text, quote=False)
        markup = markup.replace("\ufb02\u00b0\u00b0", "&#").replace("\ufb02\u00b0", "&")
        return html.unescape(markup.replace("\u00b6\u00df", ";"))

    return "\n".join(again(_ENTITY.sub(one, line)) for line in lines)


def read_string(line: str, start: int) -> tuple[str, int]:
    """The quoted text at ``line[start]`` (a ``"``) and the index after its closing quote."""
    assert line[start] == '"', (line, start)
    end = line.index('"', start + 1)
    return line[start + 1 : end], end + 1


def tokenize(chart: str) -> tuple[dict[str, str], list[tuple[str, str, str, str]], list[str]]:
    """Nodes (id to shown text), arrows (source, arrow, shown text, target) and subgraph titles
    of a chart; an assertion fails on anything this module would not write."""
    lines = chart.split("\n")
    assert lines[0] == "flowchart TD" and lines[-1] == ""
    nodes: dict[str, str] = {}
    arrows: list[tuple[str, str, str, str]] = []
    titles: list[str] = []
    for line in lines[1:-1]:
        body = line.strip()
        head = re.match(r"(n\d+|subgraph g\d+ |end$|classDef |class |linkStyle )", body)
        assert head is not None, line
        word = head.group(1)
        if body == "end":
            continue
        if word.startswith("subgraph"):
            text, after = read_string(body, len(word) + 1)
            assert body[len(word)] == "[" and body[after:] == "]", line
            titles.append(decode(text))
            continue
        if word in ("classDef ", "class ", "linkStyle "):
            assert '"' not in body, line
            continue
        rest = body[len(word) :]
        if rest.startswith(" "):  # an arrow
            arrow = re.match(r" (-->|-\.->)(\|)?", rest)
            assert arrow is not None, line
            position = arrow.end()
            text = ""
            if arrow.group(2):
                text, position = read_string(rest, position)
                assert rest[position] == "|", line
                text = decode(text)
                position += 1
            target = re.fullmatch(r" (n\d+)", rest[position:])
            assert target is not None, line
            arrows.append((word, arrow.group(1), text, target.group(1)))
            continue
        opening = next(opening for opening in _NODE_OPENINGS if rest.startswith(opening))
        text, after = read_string(rest, len(opening))
        closing = {"((": "))", "([": "])", "[/": "/]", "(": ")", "{": "}", "[": "]"}[opening]
        assert rest[after:] == closing, line
        nodes[word] = decode(text)
    return nodes, arrows, titles


@given(st.lists(hostile_text(), min_size=1, max_size=6), st.none() | hostile_text())
def test_mermaid_quotes_hold_for_any_label(labels: list[str], group: str | None) -> None:
    picture = hostile_picture(labels, group)
    chart = to_mermaid(picture, taken=[0], missed=[1])
    chart.encode("utf-8")  # no lone surrogate left
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", chart)
    assert "%" not in chart.replace("3px", "")  # no comment or directive
    nodes, arrows, titles = tokenize(chart)
    assert list(nodes.values()) == [shown(label) for label in labels]
    assert [arrow[2] for arrow in arrows] == [
        shown(label) if "".join(label_lines(label)).strip() else "" for label in labels
    ]
    assert [arrow[1] == "-.->" for arrow in arrows] == [bool(n % 2) for n in range(len(labels))]
    assert titles == ([] if group is None else [shown(group)])


@given(hostile_text())
def test_a_label_is_drawn_bounded_and_printable(label: str) -> None:
    lines = label_lines(label)
    assert 1 <= len(lines) <= MAX_LINES
    for line in lines:
        assert len(line) <= MAX_LABEL
        assert line == line.strip() and "  " not in line
        assert not any(char.isspace() and char != " " for char in line)
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e]", line)
    if len(label) < MAX_LABEL and "\n" not in label and label.isprintable():
        assert lines == [" ".join(label.split())]


def test_mermaid_styles_taken_and_missed_arrows_by_flow_edge() -> None:
    picture = flow_picture(flow_graph(load_flow(ROOT / "examples/flows/vip_routing.yaml")))
    chart = to_mermaid(picture, taken=[0, 3], missed=[1, 3])
    _, arrows, _ = tokenize(chart)
    places = {edge.edge: place for place, edge in enumerate(picture.edges)}
    styles = dict(
        line.split(" ", 2)[1:]
        for line in (line.strip() for line in chart.split("\n"))
        if line.startswith("linkStyle")
    )
    taken = [place for place, style in styles.items() if "stroke-width:3px" in style]
    assert taken == [f"{places[0]},{places[3]}"]  # 3 is taken: not missed too
    assert f"{places[1]}" in styles and "dasharray" in styles[f"{places[1]}"]
    assert len(arrows) == len(picture.edges)


# --- DOT through Graphviz ----------------------------------------------------------------------


def graphviz(source: str) -> ElementTree.Element:
    """The SVG ``dot`` draws for ``source``; fails when dot refuses it."""
    if DOT is None:
        if os.environ.get("FLOWLANG_REQUIRE_SERVICES") == "1":
            pytest.fail("Graphviz (dot) is required (FLOWLANG_REQUIRE_SERVICES=1) but not found")
        pytest.skip("Graphviz (dot) is not installed")
    process = subprocess.Popen(
        [DOT, "-Tsvg"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(source.encode("utf-8"), timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err.decode("utf-8", "replace")[-2000:]
    assert b"Warning" not in err and b"Error" not in err, err[-2000:]
    return ElementTree.fromstring(out)


_SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(svg: ElementTree.Element, kind: str) -> dict[str, str]:
    """The lines drawn in each node (``kind`` node) or edge (``edge``) group, by its title."""
    found = {}
    for group in svg.iter(f"{_SVG}g"):
        if group.get("class") == kind:
            title = group.findtext(f"{_SVG}title") or ""
            lines = [text.text or "" for text in group.iter(f"{_SVG}text")]
            found[title] = "\n".join(lines)
    return found


def drawn_lines(label: str) -> str:
    """What Graphviz draws for ``label``: its drawn lines that are not blank."""
    return "\n".join(line for line in label_lines(label) if line.strip())


@settings(max_examples=30)
@given(st.lists(hostile_text(), min_size=2, max_size=5), st.none() | hostile_text())
def test_dot_parses_and_shows_any_label(labels: list[str], group: str | None) -> None:
    picture = hostile_picture(labels, group)
    source = to_dot(picture, taken=[0], missed=[1])
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", source)
    svg = graphviz(source)
    nodes = svg_texts(svg, "node")
    assert [nodes[f"n{number}"] for number in range(len(labels))] == [
        drawn_lines(label) for label in labels
    ]
    edges = svg_texts(svg, "edge")
    assert sorted(edges.values()) == sorted(drawn_lines(label) for label in labels)
    if group is not None:
        clusters = svg_texts(svg, "cluster")
        assert list(clusters.values()) == [drawn_lines(group)]


def test_dot_draws_failure_ways_dashed_and_taken_ones_green() -> None:
    picture = flow_picture(flow_graph(load_flow(ROOT / "examples/flows/vip_routing.yaml")))
    source = to_dot(picture, taken=[0], missed=[1])
    lines = [line for line in source.split("\n") if "->" in line]
    assert lines[1].endswith('[color="#1e8e3e", penwidth="3"];')  # edge 0: lookup -> route
    assert 'label="on_failure", color="#d93025", style="dashed"' in lines[2]  # edge 1, missed
    assert 'style="dashed"' not in lines[3]  # edge 2: a branch
    graphviz(source)


# --- the examples, golden ----------------------------------------------------------------------


def graph(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["graph", *argv], stdout=out)
    return status, out.getvalue()


def same_as_golden(name: str, actual: str) -> None:
    expected = (GOLDEN / name).read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), f"golden/{name}", "now", lineterm=""
        )
        print("\n".join(diff))  # review by hand; then write the new output to the golden file
        raise AssertionError(f"{name} differs from its golden file (diff above)")


EXAMPLES = [*FLOWS, *WORKFLOWS]


@pytest.mark.parametrize("output_format", ["mermaid", "dot"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_each_example_draws_its_golden_chart(example: Path, output_format: str) -> None:
    status, chart = graph(str(example), "--format", output_format)
    assert status == 0
    same_as_golden(f"{example.stem}.{'mmd' if output_format == 'mermaid' else 'dot'}", chart)
    if output_format == "dot":
        graphviz(chart)
    else:
        tokenize(chart)


@pytest.mark.parametrize("output_format", ["mermaid", "dot"])
def test_the_example_workflows_draw_together(output_format: str) -> None:
    status, chart = graph(*map(str, WORKFLOWS), "--format", output_format)
    assert status == 0
    same_as_golden(f"workflows.{'mmd' if output_format == 'mermaid' else 'dot'}", chart)
    if output_format == "mermaid":
        _, _, titles = tokenize(chart)
        assert titles == [load_workflow(path).name for path in WORKFLOWS]
    else:
        clusters = svg_texts(graphviz(chart), "cluster")
        assert list(clusters.values()) == [load_workflow(path).name for path in WORKFLOWS]


def test_a_flow_picture_draws_every_edge_of_its_graph() -> None:
    for path in FLOWS:
        graph_ = flow_graph(load_flow(path))
        picture = flow_picture(graph_)
        drawn = [edge.edge for edge in picture.edges if edge.edge is not None]
        assert drawn == [edge.index for edge in graph_.edges]
        keys = {node.key for node in picture.nodes}
        assert all(edge.source in keys and edge.target in keys for edge in picture.edges)
        steps = [node.step for node in picture.nodes if node.step is not None]
        assert steps == list(graph_.steps)


def test_a_branch_shows_its_test_without_delimiters() -> None:
    picture = flow_picture(flow_graph(load_flow(ROOT / "examples/flows/vip_routing.yaml")))
    labels = [edge.label for edge in picture.edges]
    assert "0: steps.lookup.response.body.tier equals gold\nand contact.tags contains Vip" in (
        labels
    )
    assert '1: call.waiting_time > 60 and contact.type == "lead"' in labels
    assert not any("<<" in label or ">>" in label for label in labels)


def test_a_workflow_is_trigger_then_conditions_then_its_actions_in_order() -> None:
    workflow = load_workflow(ROOT / "examples/workflows/missed_call.yaml")
    picture = workflow_picture([workflow, workflow])
    first = [node for node in picture.nodes if node.group == workflow.name]
    assert [node.shape for node in first] == ["terminal", "decision", *["request"] * 3]
    assert first[0].label == "on call.ended"
    assert first[1].label == (
        "event.properties.answered equals false\nand event.properties.direction equals inbound"
    )
    assert [node.step for node in first[2:]] == [action.id for action in workflow.actions]
    assert "endpoint: https://crm.example.com/api/activities" in first[2].label
    assert "secrets" not in " ".join(node.label for node in first)
    assert {node.group for node in picture.nodes} == {workflow.name, f"{workflow.name} (2)"}
    # text_back goes on after a failure (stop_on_failure: false): tell_team follows either way
    ways = [(edge.source, edge.target, edge.failure) for edge in picture.edges]
    assert ways[:5] == [
        ("w0", "w0c", False),
        ("w0c", "w0a0", False),
        ("w0a0", "w0a1", False),
        ("w0a1", "w0a2", False),
        ("w0a1", "w0a2", True),
    ]


# --- the command line --------------------------------------------------------------------------


def flowlang(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [sys.executable, "-m", "flowlang.cli", *argv],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )
    assert b"Traceback" not in result.stderr, result.stderr[-2000:]
    return result


HOSTILE_FLOW = """\
flow: '<script>alert(1)</script> "x" %%{init: {}}%%'
start: node
steps:
  node: {type: say, text: hi, next: graph}
  graph: {type: say, text: hi, next: end}
  end: {type: say, text: hi, next: subgraph}
  subgraph: {type: say, text: hi, next: 1}
  1: {type: say, text: hi, next: a b}
  a b: {type: say, text: hi, next: '"q" \\l #35; ; | `x` <b>'}
  '"q" \\l #35; ; | `x` <b>': {type: say, text: hi, next: strict}
  strict: {type: hangup}
"""


def test_hostile_step_ids_are_drawn_as_text_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE_FLOW, encoding="utf-8")
    flow = load_flow_text(HOSTILE_FLOW)
    mermaid = flowlang("graph", str(path))
    assert mermaid.returncode == 0, mermaid.stderr
    nodes, arrows, _ = tokenize(mermaid.stdout.decode("utf-8"))
    shown_ids = [text.split("\n")[0] for text in nodes.values()]
    assert shown_ids == ["start", *flow.steps, "end"]
    assert len(arrows) == len(flow.steps) + 1
    dot = flowlang("graph", str(path), "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    svg = graphviz(dot.stdout.decode("utf-8"))
    drawn = [text.split("\n")[0] for text in svg_texts(svg, "node").values()]
    assert drawn == ["start", *flow.steps, "end"]
    titles = [text.text for text in svg.iter(f"{_SVG}text")]
    assert flow.name in titles


HOSTILE_WORKFLOW = """\
workflow: 'end" %%{init: {"theme": "dark"}}%% <b>x</b> \\l ﬂ°°60¶ß'
trigger: call.ended
expression: '<<event.properties.note == "a|b" and event.properties.x == "#quot;">>'
actions:
  - name: tell
    type: slack_notification
    token: "<<secrets.slack_token>>"
    channel: "#a|b"
    text: '"quoted" <script>alert(1)</script> `x` $$y$$ style:#x;'
"""


def test_a_hostile_workflow_with_warnings_is_drawn_as_text(tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE_WORKFLOW, encoding="utf-8")
    workflow = load_workflow(path)
    assert workflow.warnings  # properties the trigger does not carry: drawn all the same
    action = workflow.actions[0]
    mermaid = flowlang("graph", str(path))
    assert mermaid.returncode == 0, mermaid.stderr
    nodes, arrows, titles = tokenize(mermaid.stdout.decode("utf-8"))
    assert titles == [workflow.name]
    assert arrows == [("n0", "-->", "", "n1"), ("n1", "-->", "all hold", "n2")]
    assert list(nodes.values())[2].split("\n") == [
        "tell (slack_notification)",
        "channel: #a|b",
        "text: " + action.fields["text"].source,
    ]
    assert "secrets" not in mermaid.stdout.decode("utf-8")
    dot = flowlang("graph", str(path), "--format", "dot")
    svg = graphviz(dot.stdout.decode("utf-8"))
    assert list(svg_texts(svg, "cluster").values()) == [workflow.name]
    assert list(svg_texts(svg, "node").values()) == list(nodes.values())


def test_cloudtalk_templates_are_drawn_with_syntax_cloudtalk(tmp_path: Path) -> None:
    path = tmp_path / "cloudtalk.yaml"
    path.write_text(
        "flow: ct\nstart: route\nsteps:\n  route:\n    type: condition_splitter\n"
        "    branches:\n      - {expression: '{{call.waiting_time > 60}}', next: done}\n"
        "    otherwise: done\n  done: {type: hangup}\n",
        encoding="utf-8",
    )
    status, chart = graph(str(path), "--syntax", "cloudtalk")
    assert status == 0
    _, arrows, _ = tokenize(chart)
    assert ("n1", "-->", "0: call.waiting_time > 60", "n2") in arrows


def test_a_huge_flow_is_drawn_whole() -> None:
    text = big_documents.chained_flow_of_size(MAX_DOCUMENT // 4)  # a quarter of the limit
    flow = load_flow_text(text)
    picture = flow_picture(flow_graph(flow))
    nodes, arrows, _ = tokenize(to_mermaid(picture))
    assert len(nodes) == len(picture.nodes) and len(arrows) == len(flow_graph(flow).edges) + 1
    assert to_dot(picture).count(" -> ") == len(arrows)


def test_output_goes_to_a_file_with_o(tmp_path: Path) -> None:
    target = tmp_path / "flow.dot"
    example = str(FLOWS[0])
    result = flowlang("graph", example, "--format", "dot", "-o", str(target))
    assert result.returncode == 0 and result.stdout == b""
    assert target.read_text(encoding="utf-8") == graph(example, "--format", "dot")[1]
    to_stdout = flowlang("graph", example, "-o", "-")
    assert to_stdout.stdout.decode("utf-8") == graph(example)[1]
    unwritable = flowlang("graph", example, "-o", str(tmp_path / "no" / "such" / "dir.mmd"))
    assert unwritable.returncode == 2
    assert b"cannot write" in unwritable.stderr and b"dir.mmd" in unwritable.stderr


def test_several_flows_are_one_chart_each_so_mermaid_and_dot_refuse_them() -> None:
    for output_format in ("mermaid", "dot"):
        result = flowlang("graph", *map(str, FLOWS[:2]), "--format", output_format)
        assert result.returncode == 2
        assert b"one chart" in result.stderr and b"--format html" in result.stderr
        mixed = flowlang("graph", str(FLOWS[0]), str(WORKFLOWS[0]), "--format", output_format)
        assert mixed.returncode == 2


def test_a_document_with_errors_shows_its_findings_and_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi, next: nowhere}\n")
    result = flowlang("graph", str(FLOWS[0]), str(broken))
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"broken.yaml:4:" in result.stderr and b"nowhere" in result.stderr
    bad_workflow = tmp_path / "wf.yaml"
    bad_workflow.write_text("workflow: w\ntrigger: call.ended\nactions: 3\n")
    assert flowlang("graph", str(bad_workflow)).returncode == 1
    not_yaml = tmp_path / "tabs.yaml"
    not_yaml.write_text("flow: [\n")
    shown_error = flowlang("graph", str(not_yaml))
    assert shown_error.returncode == 1 and b"tabs.yaml:" in shown_error.stderr


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b'{"a": "caf\xe9"}\n')
    for argv in (
        [str(tmp_path / "nope.yaml")],
        [str(latin)],
        [str(FLOWS[0]), str(tmp_path / "nope.yaml")],
        ["-", "-"],
        ["--format", "svg", str(FLOWS[0])],
    ):
        result = flowlang("graph", *argv)
        assert result.returncode == 2, argv
        assert result.stdout == b""
    assert b"not UTF-8" in flowlang("graph", str(latin)).stderr


def test_standard_input_is_read_with_a_dash() -> None:
    text = FLOWS[0].read_bytes()
    result = flowlang("graph", "-", stdin=text)
    assert result.returncode == 0
    assert result.stdout.decode("utf-8") == graph(str(FLOWS[0]))[1]


def test_graph_help_states_the_exit_statuses_and_every_option_has_help() -> None:
    result = flowlang("graph", "--help")
    assert result.returncode == 0
    assert EXIT_STATUSES in result.stdout.decode("utf-8")
    for option in ("--format", "-o", "--syntax"):
        assert option in result.stdout.decode("utf-8")
    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    parser = commands.choices["graph"]
    assert all(action.help for action in parser._actions)


def test_html_draws_every_document_given(tmp_path: Path) -> None:
    target = tmp_path / "all.html"
    result = flowlang(
        "graph", *map(str, FLOWS), *map(str, WORKFLOWS), "--format", "html", "-o", str(target)
    )
    assert result.returncode == 0, result.stderr
    page = target.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    for path in FLOWS:
        assert load_flow(path).name in page


def test_hostile_step_ids_in_html_are_text(tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE_FLOW, encoding="utf-8")
    result = flowlang("graph", str(path), "--format", "html")
    assert result.returncode == 0, result.stderr
    page = result.stdout.decode("utf-8")
    assert "<script>alert(1)</script>" not in page and "<b>" not in page


# --- the README --------------------------------------------------------------------------------

#: A picture in the README: its command (in a summary line), then its Mermaid block.
_README_PICTURE = re.compile(
    r"<code>(flowlang graph [^<\n]+)</code>[^\n]*\n+```mermaid\n(.*?)^```$", re.M | re.S
)


def readme_pictures() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Pictures of flows", 1)[1].split("\n### ", 1)[0]
    return [(match.group(1), match.group(2)) for match in _README_PICTURE.finditer(section)]


def test_the_readme_shows_each_example_flow_as_flowlang_graph_draws_it() -> None:
    pictures = readme_pictures()
    commands = [command for command, _ in pictures]
    assert commands == [f"flowlang graph examples/flows/{path.name}" for path in FLOWS]
    for command, chart in pictures:
        argv = command.split()[2:]
        status, drawn = graph(*[str(ROOT / argv[0]), *argv[1:]])
        assert status == 0
        assert chart == drawn, f"the README's picture of {argv[0]} is not the current output"


# --- one cleaning rule, measured text, Mermaid's own readings and limits ---------------------


def test_invisible_characters_show_visibly_and_alike_in_every_format() -> None:
    from flowlang.graph.layout import wrap_lines
    from flowlang.graph.svg import picture_svg

    for hidden in ("\u200b", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u061c"):
        plain, marked = label_lines("agent"), label_lines(f"agent{hidden}")
        assert plain != marked and marked == [f"agent\\u{ord(hidden):04x}"]
        picture = hostile_picture(["agent", f"agent{hidden}"], None)
        nodes, _, _ = tokenize(to_mermaid(picture))
        assert list(nodes.values()) == ["agent", marked[0]]
        assert f'"{marked[0]}"'.replace("\\", "\\\\") in to_dot(picture)
        assert wrap_lines(f"agent{hidden}") == tuple(marked)
        assert marked[0] in picture_svg(picture) and hidden not in picture_svg(picture)
    nul = hostile_picture(["a\x00b"], None)
    assert tokenize(to_mermaid(nul))[0] == {"n0": "a␀b"}
    assert '"a␀b"' in to_dot(nul) and "a␀b" in picture_svg(nul)


def test_text_is_measured_in_columns_wide_characters_two_combining_marks_none() -> None:
    from flowlang.graph.layout import CHAR_WIDTH, text_width, wrap_lines

    assert text_width("漢字") == 4 * CHAR_WIDTH == text_width("abcd")
    assert text_width("😀") == 2 * CHAR_WIDTH
    assert text_width("e\u0301") == CHAR_WIDTH
    assert all(text_width(line) <= 28 * CHAR_WIDTH for line in wrap_lines("漢" * 40))
    assert len(wrap_lines("漢" * 40)) == 3  # 80 columns, 28 a line
    assert wrap_lines("e\u0301" * 28) == ("e\u0301" * 28,)


def test_mermaid_shows_icons_and_its_own_stand_ins_as_text() -> None:
    for text in (
        "fa:fa-car",
        "fak:fa-x y",
        "\ufb02\u00b0\u00b035\u00b6\u00df",
        "\ufb02\u00b0x\u00b6",
    ):
        picture = hostile_picture([text], None)
        chart = to_mermaid(picture)
        assert "fa:fa-" not in chart and "\ufb02" not in chart and "\u00b6" not in chart
        assert tokenize(chart)[0] == {"n0": text}


def test_a_chart_over_mermaids_limits_is_written_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(big_documents.chained_flow(600), encoding="utf-8")
    result = flowlang("graph", str(path))
    assert result.returncode == 0
    chart = result.stdout.decode("utf-8")
    arrows = len(tokenize(chart)[1])
    assert arrows > 500 and len(chart) > 50_000
    warning = result.stderr.decode("utf-8")
    assert f"{arrows} arrows" in warning and f"{len(chart)} characters" in warning
    assert "--format dot" in warning and "--format html" in warning
    small = flowlang("graph", str(FLOWS[0]))
    assert small.returncode == 0 and small.stderr == b""
    dot = flowlang("graph", str(path), "--format", "dot")
    assert dot.returncode == 0 and dot.stderr == b""
