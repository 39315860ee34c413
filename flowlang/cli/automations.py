"""``flowlang automate`` (process events with workflows) and ``flowlang replay`` (dead letters)."""

from __future__ import annotations

__all__ = ["DEFAULT_STORE", "add_automate_command", "add_deadletters_command", "add_replay_command"]

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from flowlang.automations.actions import PROVIDER_VARIABLES
from flowlang.cli.inputs import EXIT_STATUSES, UsageError
from flowlang.cli.worker import add_executor_options, add_shared_replay

AUTOMATE_EPILOG = (
    EXIT_STATUSES
    + """

for automate:
  1    an action was dead-lettered, an event failed, or a dead letter could not be
       written (it stays unfinished in the store)
  2    workflow errors, bad event lines, an unusable store (not a store, damaged,
       read-only, newer, locked too long), an unreadable file, an unusable --ca-file
       (bad input outranks problems found)
  130  the store keeps what was not finished: rerun the same command to resume

store:
  one SQLite file (default flowlang.db) with the events of the duplicate window, what
  unfinished events have done, scheduled retries and dead letters. Several flowlang
  automate may share it: an event is run by one of them; the events of one that died
  are taken over by the next. Replay its dead letters with flowlang replay STORE;
  flowlang deadletters export STORE writes them as JSON lines.

output:
  text: a line per action not delivered, then a summary; -q leaves out the summary and
    notes (errors only).
  --json: only JSON lines on stdout: one per event
    {"kind": "event", "event": ID, "duplicate": BOOL, "matched": [WORKFLOW...],
     "deliveries": [{"workflow", "action", "outcome", "attempts", "error", "result"}...],
     "errors": [TEXT...]}
  and a last one
    {"kind": "summary", "events", "duplicates", "matched", "delivered", "retried",
     "dead_lettered", "skipped", "unsaved", "failed", "refused": COUNT,
     "simulated_wait": SECONDS|null, "dead_letter_file": STORE|null, "exit": STATUS}
  (dead_letter_file: the store, when this run dead-lettered an action)
  Warnings, notes, -v's attempts and progress (on a terminal) go to stderr.
"""
)

REPLAY_EPILOG = (
    EXIT_STATUSES
    + """

for replay:
  0    every record was replayed and delivered; the store (or file) is left without them
  1    records remain: they failed again, or cannot be replayed
  2    no such file, an unusable store, another replay in progress, a line that never
       ends, an unusable --ca-file
  130  what was not replayed stays: rerun the same command to resume
"""
)


DEADLETTERS_EPILOG = (
    EXIT_STATUSES
    + """

for deadletters:
  0    every dead letter was exported, or every line imported
  1    import: lines that are not dead-letter records were skipped (each reported)
  2    an unusable store or file
"""
)

#: The store ``automate`` and ``replay`` use unless told otherwise.
DEFAULT_STORE = "flowlang.db"
#: The most events ``automate`` processes at once.
MAX_CONCURRENCY = 1000


def _events_at_once(text: str) -> int:
    """``--concurrency``: a whole number from 1 to MAX_CONCURRENCY (else a usage error)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"a whole number from 1 to {MAX_CONCURRENCY}, not {text!r}"
        )
    return number


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    """``--allow-host`` and ``--ca-file``: which servers actions may reach, and trust."""
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let actions reach HOST (a name or IP, exactly) even at a private or loopback "
        "address, and over plain http: the workflows' http:// endpoints are checked against it "
        "when they load (repeatable; for tests and local demos)",
    )
    parser.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="FILE",
        help="also trust the certificate authorities in FILE (PEM; repeatable; "
        "SSL_CERT_FILE replaces the default bundle)",
    )
    for field, (option, what) in PROVIDER_OPTIONS.items():
        parser.add_argument(
            option,
            dest=field,
            metavar="URL",
            help=f"base URL of the {what} API, for a sandbox or a regional endpoint "
            f"(default: ${PROVIDER_VARIABLES[field]}, else the provider's own)",
        )


#: The option that sets each provider's base URL (a Providers field), and what it names.
PROVIDER_OPTIONS = {
    "sms_base_url": ("--sms-url", "SMS"),
    "slack_base_url": ("--slack-url", "Slack"),
    "speech_base_url": ("--speech-url", "speech-to-text"),
}


def _automations_command(name: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """The handler of ``flowlang automate`` or ``replay``: unusable files become usage errors."""

    def handler(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
        from flowlang.cli import automate_console as console

        try:
            return int(getattr(console, name)(arguments, stdout, stdin))
        except BrokenPipeError:  # the output was closed (| head): main ends quietly
            raise
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None

    return handler


def add_automate_command(commands: Any) -> None:
    """Add ``automate`` to the subcommands ``commands`` (argparse's subparsers action)."""
    automate = commands.add_parser(
        "automate",
        help="process a stream of events with workflow automations",
        description="Run the matching workflows for each event of EVENTS (JSON lines),\n"
        "delivering every action at least once; end with a summary.",
        epilog=AUTOMATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    automate.add_argument(
        "workflows", nargs="+", metavar="WORKFLOW", help="workflow documents (YAML or JSON)"
    )
    automate.add_argument(
        "--events",
        required=True,
        metavar="FILE",
        help="events as JSON lines; '-' reads standard input as events arrive (it may never end)",
    )
    automate.add_argument(
        "--responses",
        metavar="FILE",
        help="recorded HTTP responses: run offline, retries in simulated time",
    )
    automate.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="FILE",
        help="the store (an SQLite file, shared by every flowlang automate on it): events "
        "seen, what is unfinished, scheduled retries and dead letters (default: %(default)s)",
    )
    automate.add_argument(
        "--concurrency",
        type=_events_at_once,
        default=8,
        metavar="N",
        help=f"events processed at once, 1 to {MAX_CONCURRENCY} (default: %(default)s)",
    )
    _add_network_options(automate)
    automate.add_argument(
        "--json",
        action="store_true",
        help="only JSON lines on standard output: one per event, then a summary line",
    )
    loudness = automate.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors (no summary, no progress)"
    )
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="show each delivery attempt on stderr"
    )
    automate.set_defaults(handler=_automations_command("automate_from_command_line"))
    add_executor_options(automate)


def add_replay_command(commands: Any) -> None:
    """Add ``replay`` to the subcommands ``commands`` (argparse's subparsers action)."""
    replay = commands.add_parser(
        "replay",
        help="retry the dead letters of a store (or of a JSON-lines file)",
        description="Retry each dead letter of STORE (or of a JSON-lines file of them)\n"
        "with its idempotency key; what fails again stays.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "dead_letter",
        metavar="STORE",
        help="a store written by flowlang automate --store or flowlang serve --events-store, or "
        "a JSON-lines file of dead letters "
        "(flowlang deadletters export)",
    )
    replay.add_argument("--responses", metavar="FILE", help="recorded HTTP responses: run offline")
    _add_network_options(replay)
    replay.set_defaults(handler=_automations_command("replay_from_command_line"))
    add_shared_replay(replay)


def add_deadletters_command(commands: Any) -> None:
    """Add ``deadletters`` (export and import) to the subcommands ``commands``."""
    deadletters = commands.add_parser(
        "deadletters",
        help="export or import the dead letters of a store as JSON lines",
        description="Dead letters as JSON lines (flowlang.deadletter/1 records), for grep\n"
        "and for flowlang replay FILE.",
        epilog=DEADLETTERS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = deadletters.add_subparsers(dest="deadletters_action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write the store's dead letters as JSON lines")
    export.add_argument(
        "store",
        metavar="STORE",
        help="a store written by flowlang automate --store or flowlang serve --events-store",
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (default: standard output)"
    )
    imported = actions.add_parser(
        "import",
        help="add the dead letters of a JSON-lines file (those already in the store are not "
        "added again: a rerun after a crash adds each once)",
    )
    imported.add_argument("store", metavar="STORE", help="the store (made when missing)")
    imported.add_argument("file", metavar="FILE", help="JSON lines of flowlang.deadletter/1")
    deadletters.set_defaults(handler=_automations_command("deadletters_from_command_line"))
