"""``flowlang eval``: render templates against a JSON context, one JSON line per value."""

from __future__ import annotations

__all__ = ["add_eval_command"]

import argparse
from typing import Any, TextIO

from flowlang.cli.inputs import EXIT_OK, EXIT_STATUSES, read_context
from flowlang.engine import Engine
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.syntax import SYNTAXES
from flowlang.expr.values import to_json


def _eval(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    engine = Engine(syntax=arguments.syntax, strict=arguments.strict, backend=arguments.backend)
    context = read_context(arguments.context, stdin)
    templates = [engine.compile(source) for source in arguments.templates]
    for template in templates:
        stdout.write(to_json(template.render(context)) + "\n")
    return EXIT_OK


def add_eval_command(commands: Any) -> None:
    """Add ``eval`` to the subcommands ``commands`` (argparse's subparsers action)."""
    evaluate = commands.add_parser(
        "eval",
        help="render templates against a JSON context: one JSON value per line",
        description="Render each TEMPLATE against the context; print each value as a JSON line.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
