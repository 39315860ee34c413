"""Command line: ``flowlang eval``, ``flowlang run`` and ``flowlang check``.

Exit status: 0 on success; 1 when evaluation or a run fails, or ``check`` finds an error;
2 for a syntax error or unusable input (the message names the place, with a caret): a file
that cannot be read, is not UTF-8, or is larger than the document limit (4 MiB; files are read
up to the limit only, so ``/dev/zero`` or an endless pipe ends with this message).
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from flowlang import __version__
from flowlang.automations import check_workflow
from flowlang.engine import Engine
from flowlang.errors import FlowError, FlowSyntaxError
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.syntax import SYNTAXES
from flowlang.expr.values import to_json
from flowlang.flow import check_flow, load_flow
from flowlang.flow.model import Finding, FlowDocumentError
from flowlang.flow.source import (
    MAX_DOCUMENT,
    DocumentError,
    load_document,
    paused_collector,
    read_limited,
)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Input the command cannot use; the message says which and why."""


def read_input(name: str, stdin: TextIO, what: str, *, dash_is_stdin: bool = True) -> str:
    """The UTF-8 text of file ``name`` (``-``: standard input), read with the document limit.

    At most ``MAX_DOCUMENT`` + 1 bytes are read (:func:`read_limited`, as for a document), so
    ``/dev/zero``, a FIFO or an endless pipe ends with a message instead of exhausting memory.
    """
    from_stdin = name == "-" and dash_is_stdin
    label = "<stdin>" if from_stdin else name
    raw: bytes | str
    try:
        if from_stdin:
            buffer = getattr(stdin, "buffer", None)
            raw = read_limited(buffer) if buffer is not None else read_limited(stdin)
        else:
            with open(name, "rb") as stream:
                raw = read_limited(stream)
    except OSError as error:
        raise UsageError(f"cannot read {what} {label}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:  # a text stream without a byte buffer
        raise UsageError(f"{label}: {what} is not UTF-8 text ({error.reason})") from None
    if len(raw) > MAX_DOCUMENT:
        raise UsageError(f"{label}: {what} is larger than {MAX_DOCUMENT} bytes")
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{label}: {what} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None


def _read_context(name: str | None, stdin: TextIO) -> Any:
    if name is None:
        return {}
    label = "<stdin>" if name == "-" else name
    text = read_input(name, stdin, "context")

    def whole_number(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise UsageError(
                f"{label}: a number in the context has {len(digits)} digits, more than "
                f"{sys.get_int_max_str_digits()}"
            ) from None

    try:
        context = json.loads(text, parse_int=whole_number)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{label}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise UsageError(f"{label}: JSON nests too deeply") from None
    if not isinstance(context, dict):
        raise UsageError(
            f"{label}: the context must be a JSON object, not {type(context).__name__}"
        )
    return context


def _eval(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    engine = Engine(syntax=arguments.syntax, strict=arguments.strict, backend=arguments.backend)
    context = _read_context(arguments.context, stdin)
    templates = [engine.compile(source) for source in arguments.templates]
    for template in templates:
        stdout.write(to_json(template.render(context)) + "\n")
    return 0


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
    from flowlang.runtime.console import run_from_command_line

    text = read_input(arguments.flow, stdin, "flow", dash_is_stdin=False)
    try:  # the text read, never a path named by it
        flow = load_flow(load_document(text, filename=arguments.flow))
    except FlowDocumentError as error:
        print(f"flowlang: {arguments.flow} has errors:\n\n{error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    context = _read_context(arguments.context, stdin)
    inputs: dict[str, str | None] = {}
    for item in arguments.input or []:
        step, separator, digits = item.partition("=")
        if not separator:
            raise UsageError(f"--input takes STEP=DIGITS, not {item!r}")
        inputs[step] = digits or None
    return run_from_command_line(flow, context, inputs, arguments, stdout, stdin)


def _automations_command(name: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """The handler of ``flowlang automate`` or ``replay``: unusable files become usage errors."""

    def handler(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
        from flowlang.automations import console

        try:
            return int(getattr(console, name)(arguments, stdout, stdin))
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None

    return handler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowlang", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"flowlang {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser(
        "eval",
        help="render templates against a JSON context and print each value as JSON",
        description="Render each TEMPLATE against the context; print each value as a JSON line.",
    )
    evaluate.add_argument(
        "templates",
        nargs="+",
        metavar="TEMPLATE",
        help="a template, such as '<<contact.emails[0]>>'",
    )
    evaluate.add_argument(
        "--context",
        metavar="FILE",
        help="JSON object with the roots (call, contact, ...); '-' reads standard input",
    )
    evaluate.add_argument(
        "--syntax",
        choices=sorted(SYNTAXES),
        default="flowlang",
        help="delimiters: flowlang <<...>> or cloudtalk {{...}}",
    )
    evaluate.add_argument(
        "--strict", action="store_true", help="fail on a path that does not resolve instead of null"
    )
    evaluate.add_argument(
        "--backend",
        choices=AVAILABLE,
        default=None,
        help="evaluator (default: the compiled one when built)",
    )
    evaluate.set_defaults(handler=_eval)

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

    check = commands.add_parser(
        "check",
        help="validate flow documents",
        description="Check flow and workflow documents: fields, step graph, templates, data flow.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=_check)

    automate = commands.add_parser(
        "automate",
        help="process a stream of events with workflow automations",
        description="Run the matching workflows for each event of EVENTS (JSON lines), delivering "
        "every action at least once; end with a summary.",
    )
    automate.add_argument("workflows", nargs="+", metavar="WORKFLOW")
    automate.add_argument(
        "--events", required=True, metavar="FILE", help="JSON lines; '-' reads stdin"
    )
    automate.add_argument(
        "--responses",
        metavar="FILE",
        help="recorded HTTP responses: run offline, retries in simulated time",
    )
    automate.add_argument(
        "--dead-letter",
        default="flowlang-deadletter.jsonl",
        metavar="FILE",
        help="where undeliverable actions are kept (default: %(default)s)",
    )
    automate.add_argument(
        "--journal",
        default="flowlang-journal.jsonl",
        metavar="FILE",
        help="what was done, to resume an interrupted run and skip events seen "
        "before (default: %(default)s)",
    )
    automate.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="events processed at once (default: %(default)s)",
    )
    automate.add_argument("--allow-host", action="append", default=[], metavar="HOST")
    automate.add_argument("--json", action="store_true", help="one JSON line per event")
    automate.set_defaults(handler=_automations_command("automate_from_command_line"))

    replay = commands.add_parser(
        "replay",
        help="retry the actions kept in a dead-letter file",
        description="Retry each record of DEADLETTER with its idempotency key; "
        "what fails again stays in the file.",
    )
    replay.add_argument("dead_letter", metavar="DEADLETTER")
    replay.add_argument("--responses", metavar="FILE", help="recorded HTTP responses: run offline")
    replay.add_argument("--allow-host", action="append", default=[], metavar="HOST")
    replay.set_defaults(handler=_automations_command("replay_from_command_line"))
    return parser


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    """Run the command line; returns the exit status."""
    out = stdout or sys.stdout
    arguments = _parser().parse_args(argv)
    try:
        return int(arguments.handler(arguments, out, stdin or sys.stdin))
    except FlowSyntaxError as error:
        print(f"flowlang: syntax error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UsageError, DocumentError) as error:
        print(f"flowlang: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FlowError as error:
        print(f"flowlang: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
