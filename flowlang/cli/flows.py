"""``flowlang check`` (validate flow and workflow documents) and ``flowlang run`` (one call)."""

from __future__ import annotations

__all__ = ["add_check_command", "add_run_command", "check_document"]

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from flowlang.automations import check_workflow
from flowlang.cli.inputs import EXIT_BAD_INPUT, EXIT_FAILED, UsageError, read_context, read_input
from flowlang.flow import check_flow, load_flow
from flowlang.flow.model import Finding, FlowDocumentError
from flowlang.flow.source import DocumentError, load_document, paused_collector


def check_document(path: Path, text: str | None = None) -> tuple[object, list[Finding]]:
    """Check a flow or a workflow document (a workflow has a top-level ``workflow`` key);
    the file (or ``text``, read from it already) is parsed once."""
    with paused_collector():
        document = load_document(path) if text is None else load_document(text, filename=str(path))
        if isinstance(document.data, dict) and "workflow" in document.data:
            return check_workflow(document)
        return check_flow(document)


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def _check(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    errors = warnings = unreadable = 0
    for name in arguments.files:
        try:
            text = read_input(name, stdin, "document", dash_is_stdin=False)
            _, findings = check_document(Path(name), text)
        except UsageError as error:
            stdout.write(f"error: {error}\n\n")
            unreadable += 1
            continue
        except DocumentError as error:
            stdout.write(f"error: {error}\n\n")
            errors += 1
            continue
        for finding in findings:
            stdout.write(finding.render() + "\n\n")
            if finding.severity == "error":
                errors += 1
            else:
                warnings += 1
    count = len(arguments.files)
    problems = errors + unreadable
    stdout.write(
        f"{count} file{_plural(count)} checked: {problems} error{_plural(problems)}, "
        f"{warnings} warning{_plural(warnings)}\n"
    )
    if unreadable:
        return EXIT_BAD_INPUT
    return EXIT_FAILED if errors else 0


def _run(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    from flowlang.cli.run_console import run_from_command_line

    text = read_input(arguments.flow, stdin, "flow", dash_is_stdin=False)
    try:  # the text read, never a path named by it
        flow = load_flow(load_document(text, filename=arguments.flow))
    except FlowDocumentError as error:
        print(f"flowlang: {arguments.flow} has errors:\n\n{error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    context = read_context(arguments.context, stdin)
    inputs: dict[str, str | None] = {}
    for item in arguments.input or []:
        step, separator, digits = item.partition("=")
        if not separator:
            raise UsageError(f"--input takes STEP=DIGITS, not {item!r}")
        inputs[step] = digits or None
    return run_from_command_line(flow, context, inputs, arguments, stdout, stdin)


def add_run_command(commands: Any) -> None:
    """Add ``run`` to the subcommands ``commands`` (argparse's subparsers action)."""
    run = commands.add_parser(
        "run",
        help="run a call flow for one call and show each step",
        description="Run FLOW for one call; show each step, the branch taken and why, "
        "the requests (secrets redacted) and the host instructions.",
    )
    run.add_argument("flow", metavar="FLOW", help="flow document (YAML or JSON)")
    run.add_argument(
        "--context", metavar="FILE", help="JSON object with call, contact, ...; '-' reads stdin"
    )
    run.add_argument(
        "--input",
        action="append",
        metavar="STEP=DIGITS",
        help="digits the caller enters at a collect_input step (empty: no input); repeatable",
    )
    run.add_argument("--responses", metavar="FILE", help="recorded HTTP responses: run offline")
    run.add_argument("--interactive", action="store_true", help="ask for digits in the terminal")
    run.add_argument("--json", action="store_true", help="print the trace as JSON lines")
    run.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let requests reach HOST even on loopback or a private network, and over http",
    )
    run.set_defaults(handler=_run)


def add_check_command(commands: Any) -> None:
    """Add ``check`` to the subcommands ``commands`` (argparse's subparsers action)."""
    check = commands.add_parser(
        "check",
        help="validate flow documents",
        description="Check flow and workflow documents: fields, step graph, templates, data flow.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=_check)
