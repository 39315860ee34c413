"""Command line: ``flowlang eval``, ``run``, ``check``, ``automate``, ``replay``, ``graph``,
``test``, ``schema``, ``serve`` and ``worker``.

Every command keeps one exit-status contract (:data:`EXIT_STATUSES`, shown by ``--help``): 0
on success; 1 when the work found problems (findings, a failed run, dead letters written); 2
for bad usage or unreadable input (a file that is missing, is not UTF-8, or is larger than the
document limit; the message names the place). A closed output pipe (``| head``) and Ctrl-C end
quietly, with no traceback: 141 and 130, as a shell reports a process ended by those signals.
"""

from __future__ import annotations

__all__ = ["EXIT_STATUSES", "main"]

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from flowlang import __version__
from flowlang.cli.automations import (
    _add_network_options,
    add_automate_command,
    add_deadletters_command,
    add_replay_command,
)
from flowlang.cli.expressions import add_eval_command
from flowlang.cli.flows import add_check_command, add_run_command
from flowlang.cli.graph import add_graph_command
from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    EXIT_STATUSES,
    UsageError,
)
from flowlang.cli.schemas import add_schema_command
from flowlang.cli.serve import add_serve_command
from flowlang.cli.terminal import printable
from flowlang.cli.testing import add_test_command
from flowlang.cli.worker import add_worker_command
from flowlang.errors import (
    FlowError,
    FlowFilterError,
    FlowLimitError,
    FlowSyntaxError,
    FlowUndefinedError,
)
from flowlang.flow.source import DocumentError

_DESCRIPTION = "flowlang: render templates, run and check call flows, automate events."

#: What failed, in words, for the errors ``main`` reports (never a Python class name).
_FAILURES: tuple[tuple[type[FlowError], str], ...] = (
    (FlowUndefinedError, "evaluation failed"),
    (FlowFilterError, "a filter failed"),
    (FlowLimitError, "a limit was reached"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowlang",
        description=_DESCRIPTION,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"flowlang {__version__}", help="show the version"
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        title="commands",
        help="flowlang COMMAND --help tells more",
    )
    add_eval_command(commands)
    add_run_command(commands)
    add_check_command(commands)
    add_automate_command(commands)
    add_replay_command(commands)
    add_deadletters_command(commands)
    add_graph_command(commands)
    add_schema_command(commands)
    add_test_command(commands)
    add_serve_command(commands)
    add_worker_command(commands, _add_network_options)
    for command in commands.choices.values():
        if command.epilog is None:  # automate and replay: the contract in their help too
            command.epilog = EXIT_STATUSES
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _failure(error: FlowError) -> str:
    for kind, words in _FAILURES:
        if isinstance(error, kind):
            return words
    return "failed"


def _run(argv: Sequence[str] | None, out: TextIO, stdin: TextIO) -> int:
    arguments = _parser().parse_args(argv)
    try:
        return int(arguments.handler(arguments, out, stdin))
    except FlowSyntaxError as error:
        print(printable(f"flowlang: syntax error: {error}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UsageError, DocumentError) as error:
        print(printable(f"flowlang: {error}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except FlowError as error:
        print(printable(f"flowlang: {_failure(error)}: {error}"), file=sys.stderr)
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush cannot fail
    again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's stream)
        pass


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    """Run the command line; returns the exit status.

    A closed output pipe ends the command quietly with status 141; Ctrl-C ends it with
    "flowlang: interrupted" on standard error and status 130.
    """
    out = stdout or sys.stdout
    try:
        status = _run(argv, out, stdin or sys.stdin)
        out.flush()  # here, where a closed pipe can still be caught
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        try:
            fresh_line = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
            sys.stderr.write(f"{fresh_line}flowlang: interrupted\n")
            sys.stderr.flush()
        except OSError:
            pass
        return EXIT_INTERRUPTED
