"""``flowlang graph``: pictures of flows and workflows as Mermaid, DOT or an HTML page."""

from __future__ import annotations

__all__ = ["FORMATS", "add_graph_command", "pictures_of"]

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from flowlang.automations.workflow import CompiledWorkflow
from flowlang.cli.flows import check_document
from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STATUSES,
    UsageError,
    read_input,
)
from flowlang.cli.reports import Report, render_reports
from flowlang.cli.terminal import Colours, printable
from flowlang.engine import Engine
from flowlang.expr.syntax import SYNTAXES
from flowlang.flow.model import CompiledFlow
from flowlang.flow.source import DocumentError
from flowlang.graph.dot import to_dot
from flowlang.graph.html import graph_page
from flowlang.graph.mermaid import limits_exceeded, to_mermaid
from flowlang.graph.model import flow_graph
from flowlang.graph.picture import Picture, flow_picture
from flowlang.graph.workflows import workflow_picture

#: The output formats and what they draw.
FORMATS = ("mermaid", "dot", "html")
#: Output is written in pieces of this many characters (a closed pipe shows on the next one).
_CHUNK = 16384

_DESCRIPTION = """Draw flows and workflows.

  mermaid  a Mermaid flowchart (pastes into GitHub and GitLab Markdown
           in a ```mermaid block)
  dot      a Graphviz digraph (dot -Tsvg FILE.dot > FILE.svg)
  html     one self-contained page, every document given

mermaid and dot draw one chart: one flow, or workflows (any number, together,
each in its own box). Give each flow its own call, or use html for several.
A document with errors is not drawn: its findings are shown as check shows
them, and the status is 1."""


def pictures_of(
    flows: Sequence[CompiledFlow], workflows: Sequence[CompiledWorkflow]
) -> list[Picture]:
    """One picture per flow, then one of all the workflows together (when there are any)."""
    pictures = [flow_picture(flow_graph(flow)) for flow in flows]
    if workflows:
        title = workflows[0].name if len(workflows) == 1 else "workflows"
        pictures.append(workflow_picture(workflows, title))
    return pictures


def _load(
    names: Sequence[str], stdin: TextIO, engine: Engine
) -> tuple[list[CompiledFlow], list[CompiledWorkflow], list[Report], bool]:
    """The flows and workflows in the files ``names``; the reports of those that do not load;
    whether a file could not be read."""
    flows: list[CompiledFlow] = []
    workflows: list[CompiledWorkflow] = []
    reports: list[Report] = []
    unreadable = False
    for name in names:
        label = "<stdin>" if name == "-" else name
        try:
            text = read_input(name, stdin, "document")
            loaded, findings = check_document(Path(label), text, engine)
        except UsageError as error:
            reports.append(Report.unreadable(label, str(error)))
            unreadable = True
            continue
        except DocumentError as error:
            reports.append(Report.of_document_error(label, error))
            continue
        if loaded is None or any(finding.severity == "error" for finding in findings):
            reports.extend(Report.of_finding(label, finding) for finding in findings)
        elif isinstance(loaded, CompiledWorkflow):
            workflows.append(loaded)
        elif isinstance(loaded, CompiledFlow):
            flows.append(loaded)
    return flows, workflows, reports, unreadable


def _render(output_format: str, pictures: list[Picture]) -> str:
    if output_format == "mermaid":
        return to_mermaid(pictures[0])
    if output_format == "dot":
        return to_dot(pictures[0])
    title = pictures[0].title if len(pictures) == 1 else "flows and workflows"
    return graph_page(pictures, title=title)


def _write(text: str, output: str, stdout: TextIO) -> None:
    if output == "-":
        for start in range(0, len(text), _CHUNK):  # a closed pipe shows on the next chunk
            stdout.write(text[start : start + _CHUNK])
        return
    try:
        with open(output, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
    except OSError as error:
        raise UsageError(
            f"cannot write {printable(output, one_line=True)}: {error.strerror or error}"
        ) from None


def _graph(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    if arguments.files.count("-") > 1:
        raise UsageError("standard input ('-') can be read once only")
    flows, workflows, reports, unreadable = _load(
        arguments.files, stdin, Engine(syntax=arguments.syntax)
    )
    if reports:
        colours = Colours.for_stream(sys.stderr)
        sys.stderr.write(render_reports(reports, len(arguments.files), "text", colours))
        return EXIT_BAD_INPUT if unreadable else EXIT_FAILED
    if arguments.format != "html" and (len(flows) > 1 or (flows and workflows)):
        raise UsageError(
            f"--format {arguments.format} draws one chart: one flow, or workflows (together); "
            "give each flow its own call, or use --format html for several"
        )
    text = _render(arguments.format, pictures_of(flows, workflows))
    _write(text, arguments.output, stdout)
    over = limits_exceeded(text) if arguments.format == "mermaid" else []
    if over:
        sys.stderr.write(
            f"warning: the chart has {' and '.join(over)}; GitHub and a default Mermaid show "
            "an error instead of it: use --format dot or --format html\n"
        )
    return EXIT_OK


def add_graph_command(commands: Any) -> None:
    """Add ``graph`` to the subcommands ``commands`` (argparse's subparsers action)."""
    graph = commands.add_parser(
        "graph",
        help="draw flows and workflows: Mermaid, DOT or an HTML page",
        description=_DESCRIPTION,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="flow or workflow documents (YAML or JSON); '-' reads standard input",
    )
    graph.add_argument(
        "--format", choices=FORMATS, default="mermaid", help="mermaid (default), dot or html"
    )
    graph.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        default="-",
        help="write to the file OUTPUT ('-', the default: standard output)",
    )
    graph.add_argument(
        "--syntax",
        choices=sorted(SYNTAXES),
        default="flowlang",
        help="template delimiters: flowlang <<...>> (default) or cloudtalk {{...}}",
    )
    graph.set_defaults(handler=_graph)
