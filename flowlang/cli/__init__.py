"""Command line: ``flowlang eval``, ``run``, ``check``, ``automate`` and ``replay``.

Exit status: 0 on success; 1 when evaluation or a run fails, or ``check`` finds an error;
2 for a syntax error or unusable input (the message names the place, with a caret): a file
that cannot be read, is not UTF-8, or is larger than the document limit (4 MiB; files are read
up to the limit only, so ``/dev/zero`` or an endless pipe ends with this message).
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from flowlang import __version__
from flowlang.cli.automations import add_automate_command, add_replay_command
from flowlang.cli.expressions import add_eval_command
from flowlang.cli.flows import add_check_command, add_run_command
from flowlang.cli.inputs import EXIT_BAD_INPUT, EXIT_FAILED, UsageError
from flowlang.errors import FlowError, FlowSyntaxError
from flowlang.flow.source import DocumentError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowlang", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"flowlang {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_eval_command(commands)
    add_run_command(commands)
    add_check_command(commands)
    add_automate_command(commands)
    add_replay_command(commands)
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
