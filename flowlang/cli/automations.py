"""``flowlang automate`` (process events with workflows) and ``flowlang replay`` (dead letters)."""

from __future__ import annotations

__all__ = ["add_automate_command", "add_replay_command"]

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from flowlang.cli.inputs import UsageError


def _automations_command(name: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """The handler of ``flowlang automate`` or ``replay``: unusable files become usage errors."""

    def handler(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
        from flowlang.cli import automate_console as console

        try:
            return int(getattr(console, name)(arguments, stdout, stdin))
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None

    return handler


def add_automate_command(commands: Any) -> None:
    """Add ``automate`` to the subcommands ``commands`` (argparse's subparsers action)."""
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


def add_replay_command(commands: Any) -> None:
    """Add ``replay`` to the subcommands ``commands`` (argparse's subparsers action)."""
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
