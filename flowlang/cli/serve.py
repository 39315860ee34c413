"""``flowlang serve``: answer TwiML voice webhooks and signed events in a real server process."""

from __future__ import annotations

__all__ = ["MAX_WORKERS", "add_serve_command", "worker_count"]

import argparse
from typing import Any, TextIO

from flowlang.cli.inputs import (
    UsageError,
)
from flowlang.cli.terminal import printable

#: Document files a folder given to serve contributes (flow tests, ``*.test.yaml``, are not).
_SUFFIXES = (".yaml", ".yml", ".json")
#: The most worker processes ``--workers`` starts.
MAX_WORKERS = 64

_EPILOG = """secrets:
  Every NAME below is a secret name, read from the environment variable
  FLOWLANG_SECRET_<NAME> (upper case, '-' as '_') on each use.

Point a Twilio number at it:
  Voice "A call comes in": Webhook, POST, <public-url>/voice/<flow name>
  "Call status changes":   <public-url>/twilio/status

events (workflows, or an --event-secret or --event-token):
  An event is recorded in --events-store FILE (an SQLite file, as flowlang automate
  --store; synced to the disk) before it is answered 202, and its dead letters are kept
  there (flowlang replay FILE; flowlang deadletters export FILE). The processes on one
  store file (workers, other serve processes on this machine) share it: an event is
  accepted once, and the events a process accepted and did not finish when it died are
  taken over by the next process that starts on the file, or within 10 s by one that
  runs, with its own workflows: give them all the same workflows.

workers (--workers N, N > 1):
  N processes share one listening socket, a Redis store and the one --events-store file.
  A worker that dies is started again; its unfinished events are taken over (by it or by
  another worker). More than 5 deaths within 60 s stop the server (status 1). /metrics on any
  worker sums every worker (Prometheus multiprocess mode, in --metrics-dir or a
  temporary folder). SIGHUP stops the server as SIGTERM does.
"""


def worker_count(text: str) -> int:
    """``--workers``: a whole number from 1 to :data:`MAX_WORKERS` in ASCII digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
        1 <= int(text) <= MAX_WORKERS
    ):
        shown = printable(repr(text[:40]), one_line=True)
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_WORKERS}, not {shown}")
    return int(text)


def add_serve_command(commands: Any) -> None:
    """Add ``serve`` to the subcommands ``commands`` (argparse's subparsers action)."""
    serve = commands.add_parser(
        "serve",
        help="answer TwiML voice webhooks and signed events (a server process)",
        description="Serve the flows of FILE... to Twilio (TwiML voice webhooks) and feed the "
        "workflows from POST /events and from the calls' own events. Stops cleanly on SIGTERM "
        "(or SIGHUP).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "files", nargs="+", metavar="FILE", help="flow and workflow documents, or folders of them"
    )
    serve.add_argument(
        "--public-url", required=True, metavar="URL", help="the https URL Twilio calls"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0: any)")
    serve.add_argument(
        "--twilio-key",
        action="append",
        default=[],
        metavar="NAME",
        help="secret holding a Twilio auth token to verify signatures with (repeat: rotation)",
    )
    serve.add_argument(
        "--no-signatures",
        action="store_true",
        help="accept unsigned webhooks (local experiments only: anyone could drive calls)",
    )
    serve.add_argument(
        "--store",
        default="memory",
        metavar="URL",
        help="where waiting calls live: memory (this process, default) or redis://HOST:PORT/DB",
    )
    serve.add_argument("--key-prefix", default="fl:", help="Redis key prefix (fl:)")
    serve.add_argument(
        "--state-key",
        action="append",
        default=[],
        metavar="NAME",
        help="secret that signs call states (repeat: rotation; required with a Redis store)",
    )
    serve.add_argument(
        "--events-store",
        metavar="FILE",
        help="the store (an SQLite file, as flowlang automate --store) where events are recorded "
        "before they are answered and dead letters are kept, shared by every worker (required "
        "with workflows or an events secret or token, unless --no-events-store)",
    )
    serve.add_argument(
        "--no-events-store",
        action="store_true",
        help="keep accepted events and dead letters in memory only: they die with the process "
        "(experiments)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="connections and requests at once before new ones get 503 (1000)",
    )
    serve.add_argument(
        "--broker",
        metavar="URL",
        help="publish events to flowlang worker processes through this Celery broker "
        "(amqp://... or redis://...) instead of delivering them here (needs the celery extra; "
        "no --events-store then: the broker and the workers keep them)",
    )
    serve.add_argument(
        "--queue-prefix",
        default="flowlang.",
        help="with --broker: the workers' queue prefix (%(default)s)",
    )
    serve.add_argument(
        "--queue-type",
        choices=("classic", "quorum"),
        default="classic",
        help="with --broker: the workers' RabbitMQ queue type (classic)",
    )
    serve.add_argument(
        "--event-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="secret of Standard Webhooks signatures on POST /events (repeat: rotation)",
    )
    serve.add_argument(
        "--event-token",
        action="append",
        default=[],
        metavar="NAME",
        help="secret bearer token POST /events accepts from senders that cannot sign",
    )
    serve.add_argument("--voice", help="<Say voice=...> (Twilio's default when not given)")
    serve.add_argument("--language", help="<Say language=...>, such as en-US")
    serve.add_argument(
        "--transfer",
        action="append",
        default=[],
        metavar="TARGET=DIAL",
        help="dial DIAL (+E164, sip:..., queue:NAME, client:NAME) for the flow's TARGET",
    )
    serve.add_argument("--apology", help="said when a run fails")
    serve.add_argument("--fallback", metavar="TARGET", help="transfer here after the apology")
    serve.add_argument(
        "--segment-deadline",
        type=float,
        default=12.0,
        metavar="SECONDS",
        help="deadline of one webhook's run segment (12; under Twilio's 15)",
    )
    serve.add_argument(
        "--context",
        metavar="FILE",
        help="JSON object every call's context starts from (call.office, say); the webhook's "
        "call fields are laid over its call",
    )
    serve.add_argument("--responses", metavar="FILE", help="recorded HTTP responses: offline")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let requests reach HOST even on loopback or a private network, and over http",
    )
    serve.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="FILE",
        help="also trust the certificate authorities in FILE (PEM; repeatable)",
    )
    serve.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help=f"worker processes sharing the socket (1: this process; up to {MAX_WORKERS}; "
        "more than 1 needs a Redis --store)",
    )
    serve.add_argument(
        "--metrics-dir",
        metavar="DIR",
        help="with --workers above 1: the workers' metrics files, in a directory of this user "
        "that group and others cannot write and that holds no symbolic link (its "
        "prometheus_client files, counter_PID.db, gauge_MODE_PID.db, histogram_PID.db and "
        "summary_PID.db, are removed at start; default: a temporary folder removed at exit)",
    )
    serve.add_argument(
        "--log-format", choices=("json", "text"), default="json", help="log lines (json)"
    )
    serve.set_defaults(handler=_serve)


def _serve(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    try:
        from flowlang.cli.serve_console import serve_from_command_line
    except ImportError as error:
        raise UsageError(
            f"flowlang serve needs the serve extra: pip install 'flowlang[serve]' ({error.name} "
            "is missing)"
        ) from None
    return serve_from_command_line(arguments, stdin)
