"""``flowlang worker`` (a Celery worker delivering automations), and the options that make
``flowlang automate`` publish to workers and ``flowlang replay`` replay the shared dead letters.

Only the option parsing lives here; the work is in :mod:`flowlang.cli.worker_console`, loaded
when a command runs (it needs the ``celery`` extra).
"""

from __future__ import annotations

__all__ = ["add_executor_options", "add_queue_type", "add_shared_replay", "add_worker_command"]

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from flowlang.cli.inputs import EXIT_STATUSES, UsageError
from flowlang.distributed.messages import DEFAULT_QUEUE_PREFIX

#: The most tasks one worker process runs at once (threads pool) or pool children (prefork).
MAX_WORKER_CONCURRENCY = 256
#: The shared store's key prefix by default (flowlang.distributed.connection.DEFAULT_PREFIX,
#: which needs redis-py to import: the command line loads without the extras).
DEFAULT_PREFIX = "fl:"
#: The schemes of a shared store given to ``flowlang replay`` instead of a file.
STORE_SCHEMES = ("redis://", "rediss://", "unix://")

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]

WORKER_EPILOG = (
    EXIT_STATUSES
    + """

for worker:
  0    stopped by SIGTERM or Ctrl-C after the tasks in progress finished (warm shutdown)
  2    workflow errors, a bad broker or store URL, a broker or Redis that cannot be reached,
       a --metrics-port that is in use

The worker consumes {queue-prefix}events (flowlang.accept) and {queue-prefix}actions
(flowlang.deliver, flowlang.replay). Every worker must load the same workflow files: a
deliver message names its workflow's fingerprint. Run one worker process per core; with
--pool threads (default) one process delivers --concurrency actions at once on one event loop.
"""
)


def _console() -> Any:
    try:
        from flowlang.cli import worker_console
    except ImportError as error:
        raise UsageError(
            f"this needs the celery extra: pip install 'flowlang[celery]' ({error.name} is missing)"
        ) from None
    return worker_console


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= 6) or not (
            low <= int(text) <= high
        ):
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {high}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("a number of seconds above 0, at most 86400")
    return value


def _schedule(text: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if not 1 <= len(values) <= 100 or not all(0 <= value <= 86400 for value in values):
        raise argparse.ArgumentTypeError(
            "1 to 100 comma-separated numbers of seconds from 0 to 86400"
        )
    return values


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    """``--broker``, ``--queue-prefix`` and ``--queue-type``: where workers' messages go."""
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="the Celery broker: amqp://USER:PASSWORD@HOST:5672// (RabbitMQ) or "
        "redis://HOST:6379/DB",
    )
    parser.add_argument(
        "--queue-prefix",
        default=DEFAULT_QUEUE_PREFIX,
        help="queues are PREFIXevents and PREFIXactions (%(default)s)",
    )
    add_queue_type(parser)


def _add_shared_options(parser: argparse.ArgumentParser, *, store_required: bool) -> None:
    _add_broker_options(parser)
    parser.add_argument(
        "--store",
        required=store_required,
        metavar="URL",
        help="the shared Redis store: redis://HOST:6379/DB (duplicates, ledger, leases, "
        "scheduled retries, dead letters)",
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="key prefix in the shared store (%(default)s)"
    )


def add_queue_type(parser: Any) -> None:
    """``--queue-type``: the same for workers and for whatever publishes to them (RabbitMQ
    refuses to declare an existing queue with another type)."""
    parser.add_argument(
        "--queue-type",
        choices=("classic", "quorum"),
        default="classic",
        help="RabbitMQ queues: classic durable (default) or quorum (RabbitMQ 3.8+, clusters); "
        "the same for the workers and for what publishes to them",
    )


def add_worker_command(commands: Any, network_options: Callable[[Any], None]) -> None:
    """Add ``worker`` to the subcommands ``commands``; ``network_options`` adds
    ``--allow-host``, ``--ca-file`` and the providers' URLs as ``automate`` has them."""
    worker = commands.add_parser(
        "worker",
        help="deliver automations as a Celery worker (Redis or RabbitMQ broker)",
        description="Run a Celery worker that checks, fans out and delivers the events\n"
        "published by flowlang automate --executor celery and flowlang serve --broker.",
        epilog=WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument(
        "workflows", nargs="+", metavar="WORKFLOW", help="workflow documents (YAML or JSON)"
    )
    _add_shared_options(worker, store_required=True)
    worker.add_argument(
        "--pool",
        choices=("threads", "prefork"),
        default="threads",
        help="threads: one process, one event loop, --concurrency tasks at once (default); "
        "prefork: --concurrency child processes, one task each",
    )
    worker.add_argument(
        "--concurrency",
        type=_whole(1, MAX_WORKER_CONCURRENCY),
        default=16,
        metavar="N",
        help="tasks at once (threads) or child processes (prefork) (%(default)s)",
    )
    worker.add_argument(
        "--visibility-timeout",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="Redis broker: seconds before a dead worker's task is redelivered (%(default)s)",
    )
    worker.add_argument(
        "--restore-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="Redis broker: seconds between sweeps for such tasks (%(default)s)",
    )
    worker.add_argument(
        "--lease",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long one attempt (or one event's fan-out) is reserved for the worker making "
        "it: a redelivery within it waits for it to lapse (%(default)s)",
    )
    worker.add_argument(
        "--retry-schedule",
        type=_schedule,
        metavar="SECONDS,...",
        help="delay before each attempt, comma-separated (default: 0,5,300,1800,7200,18000,"
        "36000,36000)",
    )
    worker.add_argument(
        "--throttled-minimum",
        type=_seconds,
        metavar="SECONDS",
        help="the least wait after a 429 or a timeout (60)",
    )
    worker.add_argument(
        "--no-inline",
        action="store_true",
        help="publish an event's first action as a flowlang.deliver message of its own "
        "instead of delivering it in the flowlang.accept task (twice the Celery work per "
        "delivery, measured)",
    )
    worker.add_argument(
        "--task-events",
        action="store_true",
        help="send Celery's task events from the start (Flower turns them on by itself while it "
        "watches; each costs a broker publish per task, about a third of a worker's throughput)",
    )
    worker.add_argument(
        "--metrics-port",
        type=_whole(0, 65535),
        metavar="PORT",
        help="serve Prometheus metrics (flowlang_worker_*) on this port, at /metrics "
        "(0: a free port, said on standard error); with --pool prefork the pool's processes "
        "are summed (multiprocess mode, in a private temporary folder; an inherited "
        "PROMETHEUS_MULTIPROC_DIR is ignored); at most 8 connections at once, 5 s each",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address the metrics are served on (%(default)s; they are not authenticated: "
        "keep them off public addresses)",
    )
    worker.add_argument("--hostname", help="the worker's name in Flower (flowlang@HOST)")
    network_options(worker)
    worker.add_argument(
        "-v", "--verbose", action="store_true", help="log each task and delivery attempt"
    )
    worker.set_defaults(handler=lambda a, o, i: int(_console().worker_from_command_line(a, o)))


def add_executor_options(automate: argparse.ArgumentParser) -> None:
    """``automate --executor celery --broker URL``: publish the events to workers instead of
    delivering them here (the workers check duplicates in their shared store)."""
    group = automate.add_argument_group("workers (--executor celery)")
    group.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="local: deliver in this process (default); celery: publish one flowlang.accept "
        "message per event to the workers of --broker",
    )
    _add_broker_options(group)  # type: ignore[arg-type]
    local: Handler = automate.get_default("handler")

    def handler(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
        if arguments.executor != "celery":
            return local(arguments, out, stdin)
        return int(_console().publish_from_command_line(arguments, out, stdin))

    automate.set_defaults(handler=handler)


def add_shared_replay(replay: argparse.ArgumentParser) -> None:
    """``replay redis://HOST/DB [--prefix P]``: replay the shared dead letters."""
    replay.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="with a redis:// DEADLETTER: the shared store's key prefix (%(default)s)",
    )
    replay.add_argument(
        "--broker",
        metavar="URL",
        help="with a redis:// DEADLETTER: hand each dead letter to the workers of this broker "
        "(a flowlang.replay message each, removed from the store once the broker has it) "
        "instead of replaying here",
    )
    replay.add_argument(
        "--queue-prefix",
        default=DEFAULT_QUEUE_PREFIX,
        help="with --broker: the workers' queue prefix (%(default)s)",
    )
    add_queue_type(replay)
    from_file: Handler = replay.get_default("handler")

    def handler(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
        if not str(arguments.dead_letter).startswith(STORE_SCHEMES):
            if arguments.broker:
                raise UsageError("--broker replays a shared store (redis://...), not a file")
            return from_file(arguments, out, stdin)
        return int(_console().replay_from_command_line(arguments, out))

    replay.set_defaults(handler=handler)
