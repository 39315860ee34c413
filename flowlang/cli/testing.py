"""``flowlang test``: run the cases of flow test files (``*.test.yaml``) offline, with step and
edge coverage.

Output: one line per case (PASS or FAIL, WARN for a passing case with warnings), then each
failure as ``check`` shows a finding (the place in the test file with a caret, the expected
and actual values) with the trace of that case as ``flowlang run`` prints it, then a summary
line and, with ``--coverage``, the table. Exit status: 0 when every case passed (and the
coverage reached ``--fail-under``); 1 when a case failed, a flow or workflow did not load (its
findings are shown) or coverage fell short; 2 for bad usage, no test file found, no case
matching ``-k``, or a test file that cannot be read.
"""

from __future__ import annotations

__all__ = ["add_test_command", "case_report", "test_from_command_line"]

import argparse
import io
import json
from typing import Any, TextIO

from flowlang.cli.inputs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STATUSES, UsageError
from flowlang.cli.run_console import print_result
from flowlang.cli.terminal import Colours, printable
from flowlang.expr.backends import AVAILABLE
from flowlang.graph.html import coverage_page
from flowlang.testing.coverage import coverage_json, coverage_table, edge_ratio, percent
from flowlang.testing.report import delivery_lines, failure_lines
from flowlang.testing.session import CaseOutcome, FileOutcome, Session, find_test_files

#: The most failures shown in full per case (the rest are counted).
_FAILURES_SHOWN = 10


def case_report(outcome: CaseOutcome, colours: Colours | None = None) -> str:
    """A failed case in full: each failure with its place, then the case's trace (or, for
    workflows, its deliveries); terminal-safe, every test secret redacted."""
    colours = colours or Colours(False)
    run = outcome.run
    lines: list[str] = []
    for failure in outcome.failures[:_FAILURES_SHOWN]:
        shown = failure_lines(outcome.cases_file, run, failure)
        lines.append(colours.paint(printable(shown[0], one_line=True), "error"))
        lines.extend(printable(line, one_line=True) for line in shown[1:])
        lines.append("")
    hidden = len(outcome.failures) - _FAILURES_SHOWN
    if hidden > 0:
        lines.extend([f"… and {hidden} more failure(s)", ""])
    if outcome.warnings:  # redacted by the session
        lines.append("warnings:")
        lines.extend(printable(f"  {warning}", one_line=True) for warning in outcome.warnings)
        lines.append("")
    if outcome.cases_file.flow is not None:
        trace = io.StringIO()
        for leg in run.legs:
            print_result(leg, trace, colours)
        status = run.status or "not run"
        lines.append(f"trace (status: {status}):")
        lines.extend(run.redactor.text(trace.getvalue()).rstrip("\n").split("\n"))
        for item in run.background:
            lines.append(
                printable(
                    run.redactor.text(
                        f"  background {item['step']}: {item['outcome']}"
                        + (f" ({item['status']})" if item["status"] else "")
                    ),
                    one_line=True,
                )
            )
    else:
        lines.append("deliveries:")
        lines.extend(printable(line, one_line=True) for line in delivery_lines(run))
    return "\n".join(lines)


def _label(outcome: CaseOutcome) -> str:
    return printable(f"{outcome.cases_file.path} :: {outcome.case.name}", one_line=True)


def _write_file(name: str, text: str, option: str) -> None:
    try:
        with open(name, "w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        shown = printable(name, one_line=True)
        raise UsageError(f"cannot write {option} {shown}: {error.strerror or error}") from None


def _coverage_page(session: Session) -> str:
    return coverage_page(list(session.flows.values()), title="flowlang test coverage")


def _summary(files: list[FileOutcome], colours: Colours) -> tuple[str, int, int]:
    cases = [case for file in files for case in file.cases]
    failed = sum(1 for case in cases if not case.passed)
    broken = sum(1 for file in files if file.error is not None or file.load_error is not None)
    warned = sum(len(case.warnings) for case in cases)
    parts = [colours.paint(f"{len(cases) - failed} passed", "good")]
    if failed:
        parts.append(colours.paint(f"{failed} failed", "bad"))
    if broken:
        parts.append(colours.paint(f"{broken} file(s) with errors", "bad"))
    if warned:
        parts.append(colours.paint(f"{warned} warning(s)", "warning"))
    return f"{', '.join(parts)} in {len(files)} file(s)", failed, broken


def test_from_command_line(arguments: argparse.Namespace, out: TextIO) -> int:
    """Run ``flowlang test``; returns the exit status."""
    backend = arguments.backend
    if backend is not None and backend not in AVAILABLE:
        raise UsageError(f"--backend {backend}: this build has only {', '.join(AVAILABLE)}")
    conditions = arguments.coverage == "conditions"
    if conditions and backend not in (None, "python"):
        raise UsageError("--coverage=conditions runs on the Python step loop: --backend python")
    if arguments.fail_under is not None and not 0 <= arguments.fail_under <= 100:
        raise UsageError("--fail-under takes a percent from 0 to 100")
    try:
        paths = find_test_files(arguments.paths or ["."])
    except FileNotFoundError as error:
        raise UsageError(
            f"no such file or folder: {printable(str(error), one_line=True)}"
        ) from None
    except (ValueError, OSError) as error:
        raise UsageError(printable(str(error), one_line=True)) from None
    if not paths:
        where = ", ".join(arguments.paths or ["."])
        raise UsageError(f"no test files (*.test.yaml) in {printable(where, one_line=True)}")
    session = Session(
        backend=backend, strict=arguments.strict, keyword=arguments.keyword, conditions=conditions
    )
    colours = Colours.for_stream(out)
    files: list[FileOutcome] = []
    failed_cases: list[CaseOutcome] = []
    for path in paths:
        outcome = session.run_file(path)
        files.append(outcome)
        out.write(printable(str(path), one_line=True) + "\n")
        if outcome.error is not None:
            out.write(colours.paint("  ERROR", "error") + " the test file cannot be read:\n")
            out.write(printable(str(outcome.error)) + "\n")
            continue
        if outcome.load_error is not None:
            out.write(colours.paint("  ERROR", "error") + " what it tests does not load:\n")
            out.write(printable(outcome.load_error) + "\n")
            continue
        for case in outcome.cases:
            name = printable(case.case.name, one_line=True)
            if not case.passed:
                failed_cases.append(case)
                out.write(f"  {colours.paint('FAIL', 'bad')} {name}\n")
            elif case.warnings:
                out.write(f"  {colours.paint('WARN', 'warning')} {name}\n")
                for warning in case.warnings:
                    out.write(printable(f"       {warning}", one_line=True) + "\n")
            else:
                out.write(f"  {colours.paint('PASS', 'good')} {name}\n")
    for case in failed_cases:
        out.write("\n" + colours.paint(f"FAIL {_label(case)}", "strong") + "\n")
        out.write(case_report(case, colours) + "\n")
    if (
        arguments.keyword
        and not any(file.cases for file in files)
        and not any(file.error or file.load_error for file in files)
    ):
        shown = printable(arguments.keyword, one_line=True)
        raise UsageError(f"no case name holds -k {shown!r} in {len(files)} test file(s)")
    summary, failed, _ = _summary(files, colours)
    out.write("\n" + summary + "\n")
    status = EXIT_FAILED if failed or any(f.load_error for f in files) else EXIT_OK
    if any(file.error is not None for file in files):
        status = EXIT_BAD_INPUT
    return (
        max(status, _coverage(arguments, session, out, colours))
        if status != EXIT_BAD_INPUT
        else status
    )


def _coverage(
    arguments: argparse.Namespace, session: Session, out: TextIO, colours: Colours
) -> int:
    """Write the coverage asked for; EXIT_FAILED when it falls short of ``--fail-under``."""
    if arguments.coverage:
        out.write("\ncoverage\n")
        for line in coverage_table(session.flows, session.workflows):
            out.write(printable(line, one_line=True) + "\n")
        counted = [*session.flow_conditions.items(), *session.workflow_conditions.items()]
        for name, conditions in counted:
            out.write(f"\n{printable(name, one_line=True)}: " + conditions.table())
    if arguments.coverage_json:
        data: dict[str, Any] = coverage_json(session.flows, session.workflows)
        if session.conditions:
            data["conditions"] = [
                {"file": name, **conditions.to_json()}
                for name, conditions in [
                    *session.flow_conditions.items(),
                    *session.workflow_conditions.items(),
                ]
            ]
        _write_file(arguments.coverage_json, json.dumps(data, indent=2) + "\n", "--coverage-json")
    if arguments.coverage_html:
        _write_file(arguments.coverage_html, _coverage_page(session), "--coverage-html")
    if arguments.fail_under is not None:
        covered, total = edge_ratio(session.flows, session.workflows)
        reached = percent(covered, total)
        if reached + 1e-9 < arguments.fail_under:
            message = (
                f"edge coverage {reached:.1f}% ({covered}/{total}) is below "
                f"--fail-under {arguments.fail_under:g}%"
            )
            out.write(colours.paint(message, "error") + "\n")
            return EXIT_FAILED
    return EXIT_OK


def _handle(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    return test_from_command_line(arguments, stdout)


def add_test_command(commands: Any) -> None:
    """Add ``test`` to the subcommands ``commands`` (argparse's subparsers action)."""
    test = commands.add_parser(
        "test",
        help="run the cases of flow test files (*.test.yaml) offline, with coverage",
        description="Run the cases of flow and workflow test files offline (recorded responses,\n"
        "virtual time) and report failures, warnings and coverage.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="test files, or folders searched for *.test.yaml (default: .)",
    )
    test.add_argument("-k", dest="keyword", metavar="NAME", help="only cases whose name holds NAME")
    test.add_argument(
        "--backend",
        choices=("cython", "python"),
        help="the step loop: cython (compiled, the default when built) or python",
    )
    test.add_argument(
        "--strict",
        action="store_true",
        help="unused recorded responses and inputs fail their case (else: warnings)",
    )
    test.add_argument(
        "--coverage",
        nargs="?",
        const="edges",
        choices=("edges", "conditions"),
        help="print the coverage table: steps and edges per flow (conditions: also each "
        "condition row seen true and false, on the Python loop)",
    )
    test.add_argument("--coverage-json", metavar="FILE", help="write coverage.json to FILE")
    test.add_argument("--coverage-html", metavar="FILE", help="write the coverage viewer to FILE")
    test.add_argument(
        "--fail-under",
        type=float,
        metavar="PERCENT",
        help="exit 1 when edge coverage is below PERCENT",
    )
    test.set_defaults(handler=_handle)
