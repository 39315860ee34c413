"""``flowlang check`` (validate flow and workflow documents) and ``flowlang run`` (one call)."""

from __future__ import annotations

__all__ = [
    "add_check_command",
    "add_run_command",
    "check_document",
    "parse_inputs",
    "parse_now",
    "parse_serve_budget",
]

import argparse
import contextlib
import math
import sys
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from flowlang.automations import check_workflow
from flowlang.automations.workflow import is_workflow_document
from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STATUSES,
    UsageError,
    read_context,
    read_input,
)
from flowlang.cli.reports import FORMATS, Report, render_reports
from flowlang.cli.terminal import Colours, printable
from flowlang.cli.trust import trusted_authorities
from flowlang.engine import Engine
from flowlang.expr.syntax import SYNTAXES
from flowlang.flow.build import in_document_order
from flowlang.flow.load import check_flow, load_flow_text
from flowlang.flow.model import CompiledFlow, Finding, FlowDocumentError
from flowlang.flow.source import DocumentError, load_document, paused_collector
from flowlang.kinds.registry import STEP_KINDS

#: Output is written in pieces of this many characters: one huge write to a pipe that closes
#: part way is cut without an error, so the next piece is what reports the closed pipe.
_CHUNK = 16384
#: The kinds of step that take input (``--input`` answers them), for messages.
_INPUT_KINDS = " and ".join(name for name, kind in STEP_KINDS.items() if kind.takes_input)
#: ``check --serve``'s budget, seconds: ServeSettings.segment_deadline's default (the
#: serve package is imported only when the option is given).
DEFAULT_SERVE_BUDGET = 12.0


def check_document(
    path: Path,
    text: str | None = None,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> tuple[object, list[Finding]]:
    """Check a flow or a workflow document (told apart by :func:`is_workflow_document`); the
    file (or ``text``, read from it already) is parsed once. ``allow_hosts``: hosts its
    endpoints may reach over plain http (as ``run --allow-host`` and ``automate --allow-host``
    allow them)."""
    with paused_collector():
        document = (
            load_document(path, keep_duplicates=True)
            if text is None
            else load_document(text, filename=str(path), keep_duplicates=True)
        )
        if is_workflow_document(document.data):
            return check_workflow(document, engine=engine, allow_hosts=allow_hosts)
        return check_flow(document, engine=engine, allow_hosts=allow_hosts)


def _label(name: str) -> str:
    return "<stdin>" if name == "-" else name


def _check(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    if arguments.files.count("-") > 1:
        raise UsageError("standard input ('-') can be read once only")
    engine = Engine(syntax=arguments.syntax)
    budget = parse_serve_budget(arguments.serve_budget, arguments.serve)
    reports: list[Report] = []
    unreadable = False
    for name in arguments.files:
        label = _label(name)
        try:
            text = read_input(name, stdin, "document")
            checked, findings = check_document(Path(label), text, engine, arguments.allow_host)
            if budget is not None and isinstance(checked, CompiledFlow):
                from flowlang.serve.budget import budget_findings

                findings = in_document_order([*findings, *budget_findings(checked, budget)])
        except UsageError as error:
            reports.append(Report.unreadable(label, str(error)))
            unreadable = True
            continue
        except DocumentError as error:
            reports.append(Report.of_document_error(label, error))
            continue
        reports.extend(Report.of_finding(label, finding) for finding in findings)
    colours = Colours.for_stream(stdout) if arguments.format == "text" else Colours(False)
    text = render_reports(reports, len(arguments.files), arguments.format, colours)
    for start in range(0, len(text), _CHUNK):  # a closed pipe shows on the next chunk
        stdout.write(text[start : start + _CHUNK])
    if unreadable:
        return EXIT_BAD_INPUT
    return EXIT_FAILED if any(report.severity == "error" for report in reports) else EXIT_OK


#: The characters a ``--serve-budget`` may hold (ASCII digits and a decimal number's signs:
#: no ``nan``, ``inf``, ``1_0`` or digits of other scripts).
_NUMBER_CHARACTERS = frozenset("0123456789.eE+-")


def parse_serve_budget(text: str | None, serve: bool) -> float | None:
    """The seconds ``check --serve`` allows one webhook (``--serve-budget``, which implies
    ``--serve``; 12 by default), or None without either option; a value that is not a
    positive, finite number of seconds is a usage error."""
    if text is None:
        return DEFAULT_SERVE_BUDGET if serve else None
    number = math.nan
    if 0 < len(text) <= 32 and set(text) <= _NUMBER_CHARACTERS:
        with contextlib.suppress(ValueError):  # "1e", "+-1", "."
            number = float(text)
    if not math.isfinite(number) or number <= 0:
        shown = printable(text[:64], one_line=True)
        raise UsageError(
            f"--serve-budget takes seconds, more than zero, such as 12 or 9.5, not {shown!r}"
        )
    return number


def parse_inputs(items: list[str], flow: CompiledFlow) -> dict[str, deque[str | None]]:
    """``--input STEP=DIGITS`` items: the answers for each step that takes input, in order.

    A step of ``flow`` that takes no input (or no step at all) is a usage error naming the
    steps that do."""
    collecting = [step.id for step in flow.steps.values() if step.kind.takes_input]
    inputs: dict[str, deque[str | None]] = {}
    for item in items:
        step, separator, digits = item.partition("=")
        if not separator:
            raise UsageError(f"--input takes STEP=DIGITS, not {printable(repr(item))}")
        if step not in collecting:
            known = ", ".join(repr(name) for name in collecting) or "none"
            raise UsageError(
                f"--input {printable(repr(step), one_line=True)}: the flow has no step of "
                f"that name that takes input ({_INPUT_KINDS} steps do; its steps that take "
                f"input: {known})"
            )
        inputs.setdefault(step, deque()).append(digits or None)
    return inputs


def _run(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    from flowlang.cli.run_console import run_from_command_line

    readers = [
        option
        for option, value in (("FLOW", arguments.flow), ("--context", arguments.context))
        if value == "-"
    ]
    if arguments.interactive and readers:
        readers.append("--interactive")
    if len(readers) > 1:
        raise UsageError(
            f"{' and '.join(readers)} cannot all read standard input: give a file for all but one"
        )
    arguments.now = parse_now(arguments.now)
    label = _label(arguments.flow)
    text = read_input(arguments.flow, stdin, "flow")
    try:  # the text read, never a path named by it
        flow = load_flow_text(  # plain http to the hosts the run allows passes the check
            text,
            name=label,
            engine=Engine(syntax=arguments.syntax),
            allow_hosts=arguments.allow_host or (),
        )
    except FlowDocumentError as error:
        print(printable(f"flowlang: {label} has errors:\n\n{error}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    context = read_context(arguments.context, stdin)
    inputs = parse_inputs(arguments.input or [], flow)
    ssl_context = trusted_authorities(arguments.ca_file)
    return run_from_command_line(flow, context, inputs, arguments, stdout, stdin, ssl_context)


def parse_now(text: str | None) -> datetime | None:
    """``--now``: an ISO 8601 time with its UTC offset (``2026-12-24T10:00:00+01:00``), or None
    when not given; a naive or malformed time is a usage error."""
    if text is None:
        return None
    shown = printable(text[:64], one_line=True)
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 64 else None
    except ValueError:
        moment = None
    if moment is None:
        raise UsageError(
            f"--now {shown!r} is not a time: write ISO 8601 with the UTC offset, such as "
            "2026-12-24T10:00:00+01:00"
        )
    if moment.utcoffset() is None:
        raise UsageError(
            f"--now {shown!r} has no UTC offset: add one, such as {moment.isoformat()}+01:00 "
            "or Z for UTC"
        )
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise UsageError(f"--now {shown!r} is out of range") from None
    return moment


_SECRETS_HELP = """secrets:
  A flow names secrets as <<secrets.NAME>>; flowlang run reads each from the
  environment variable FLOWLANG_SECRET_<NAME> (upper case, '-' as '_'), for
  example FLOWLANG_SECRET_CRM_TOKEN for <<secrets.crm_token>>. Secrets are
  redacted in the trace. A secret that is not set fails its step and is
  named on standard error."""


def _add_syntax(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--syntax",
        choices=sorted(SYNTAXES),
        default="flowlang",
        help="template delimiters: flowlang <<...>> (default) or cloudtalk {{...}}",
    )


def add_run_command(commands: Any) -> None:
    """Add ``run`` to the subcommands ``commands`` (argparse's subparsers action)."""
    run = commands.add_parser(
        "run",
        help="run a call flow for one call and show each step",
        description="Run FLOW for one call; show each step, the branch taken and why,\n"
        "the requests (secrets redacted) and the host instructions.",
        epilog=f"{_SECRETS_HELP}\n\n{EXIT_STATUSES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "flow", metavar="FLOW", help="flow document (YAML or JSON); '-' reads standard input"
    )
    run.add_argument(
        "--context", metavar="FILE", help="JSON object with call, contact, ...; '-' reads stdin"
    )
    run.add_argument(
        "--input",
        action="append",
        metavar="STEP=DIGITS",
        help=f"digits the caller enters at step STEP, a step that takes input ({_INPUT_KINDS}; "
        "empty: no input); "
        "repeat it for one step to answer its prompts in order",
    )
    run.add_argument("--responses", metavar="FILE", help="recorded HTTP responses: run offline")
    run.add_argument(
        "--now",
        metavar="TIME",
        help="the time of the call for business_hours steps: ISO 8601 with the UTC offset, "
        "such as 2026-12-24T10:00:00+01:00 (default: now)",
    )
    run.add_argument(
        "--interactive",
        action="store_true",
        help="ask for digits in the terminal (on standard error with --json)",
    )
    run.add_argument(
        "--json", action="store_true", help="print the trace as JSON lines, and nothing else"
    )
    run.add_argument(
        "--html",
        metavar="FILE",
        help="also write the call as a web page to FILE: the flow with the path taken, "
        "numbered, and each step's detail on a click (one file, loads nothing)",
    )
    _add_syntax(run)
    run.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="FILE",
        help="trust the certificate authorities in FILE (PEM) too; repeatable. SSL_CERT_FILE "
        "or SSL_CERT_DIR replace the default bundle",
    )
    _add_allow_host(
        run, "let requests reach HOST even on loopback or a private network, and over http"
    )
    run.set_defaults(handler=_run)


def _add_allow_host(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--allow-host", action="append", default=[], metavar="HOST", help=help_text)


def add_check_command(commands: Any) -> None:
    """Add ``check`` to the subcommands ``commands`` (argparse's subparsers action)."""
    check = commands.add_parser(
        "check",
        help="validate flow and workflow documents",
        description="Check flow and workflow documents: fields, step graph, templates, data flow.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="flow or workflow documents (YAML or JSON); '-' reads standard input",
    )
    check.add_argument(
        "--format",
        choices=list(FORMATS),
        default="text",
        help="text (default); json: one JSON document; github: GitHub Actions annotations; "
        "sarif: SARIF 2.1.0",
    )
    _add_syntax(check)
    _add_allow_host(
        check, "an endpoint may use plain http to HOST (as run and automate --allow-host let it)"
    )
    check.add_argument(
        "--serve",
        action="store_true",
        help="also warn where one webhook of a flow (from the start or a step that takes "
        "input, to the next) can wait longer than the serve budget on HTTP requests, "
        "and where HTTP requests can loop without input (Twilio gives up at 15 s)",
    )
    check.add_argument(
        "--serve-budget",
        metavar="SECONDS",
        help=f"the budget of --serve, seconds (default {DEFAULT_SERVE_BUDGET:g}, as flowlang "
        "serve's segment deadline); implies --serve",
    )
    check.set_defaults(handler=_check)
