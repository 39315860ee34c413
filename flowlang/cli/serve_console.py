"""``flowlang serve``'s work: load the documents, build the server, run uvicorn until a signal.

Imported only when the command runs (it needs the ``serve`` extra: Starlette and uvicorn).
"""

from __future__ import annotations

__all__ = [
    "check_events_store",
    "check_store",
    "describe",
    "listening_socket",
    "load_served",
    "run_server",
    "serve_from_command_line",
    "serve_with_workers",
    "served_documents",
    "worker_main",
]

import argparse
import contextlib
import ipaddress
import logging
import math
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from flowlang.automations.store import LocalStore
from flowlang.automations.workflow import check_unique_names, is_workflow_document, load_workflow
from flowlang.cli.inputs import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    read_context,
)
from flowlang.cli.serve_workers import (
    STOP_MARGIN,
    Supervisor,
    metrics_folder,
    read_worker_start,
    say,
    worker_spec,
)
from flowlang.cli.terminal import printable
from flowlang.cli.trust import trusted_authorities
from flowlang.errors import StoreError
from flowlang.flow.load import load_flow
from flowlang.flow.model import FlowDocumentError
from flowlang.flow.source import load_document, paused_collector
from flowlang.observe.logs import configure_json_logging
from flowlang.observe.observer import Observability
from flowlang.runtime.collector import tune_collector
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.secrets import install_log_redaction
from flowlang.serve.app import build_server, create_app
from flowlang.serve.calls import CallStore
from flowlang.serve.protocol import HeaderDeadlineProtocol
from flowlang.serve.redis_store import RedisCallStore
from flowlang.serve.settings import ServeSettings

#: Document files a folder given to serve contributes (flow tests, ``*.test.yaml``, are not).
_SUFFIXES = (".yaml", ".yml", ".json")


def served_documents(names: list[str]) -> list[Path]:
    """The document files ``names`` give: files as named, and a folder's YAML and JSON files
    (not its subfolders, not flow tests). UsageError for a name that is neither."""
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            paths.extend(
                child
                for child in sorted(path.iterdir())
                if child.is_file()
                and child.suffix in _SUFFIXES
                and not child.name.endswith((".test.yaml", ".test.yml"))
            )
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageError(f"{printable(name, one_line=True)}: no such file or folder")
    if not paths:
        raise UsageError("no flow or workflow documents to serve")
    return paths


def _targets(items: list[str]) -> dict[str, str]:
    targets = {}
    for item in items:
        target, separator, dial = item.partition("=")
        if not separator or not target or not dial:
            raise UsageError(f"--transfer takes TARGET=DIAL, not {printable(repr(item))}")
        targets[target] = dial
    return targets


def _settings(arguments: argparse.Namespace) -> ServeSettings:
    deadline = arguments.segment_deadline
    if not math.isfinite(deadline) or deadline <= 0:
        raise UsageError(f"--segment-deadline must be seconds above zero, not {deadline!r}")
    options: dict[str, Any] = {
        "public_url": arguments.public_url,
        "twilio_keys": tuple(arguments.twilio_key),
        "signatures": not arguments.no_signatures,
        "voice": arguments.voice,
        "language": arguments.language,
        "transfer_targets": _targets(arguments.transfer),
        "fallback_target": arguments.fallback,
        "segment_deadline": deadline,
        "state_keys": tuple(arguments.state_key),
        "event_secrets": tuple(arguments.event_secret),
        "event_tokens": tuple(arguments.event_token),
    }
    if arguments.apology:
        options["apology"] = arguments.apology
    try:
        return ServeSettings(**options)
    except ValueError as error:
        raise UsageError(str(error).replace("ServeSettings.", "--").replace("_", "-")) from None


def _documents(arguments: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    flows, workflows = [], []
    allow = arguments.allow_host
    for path in served_documents(arguments.files):
        with paused_collector():
            document = load_document(path)
        if is_workflow_document(document.data):
            workflows.append(load_workflow(path, allow_hosts=allow))
        else:
            flows.append(load_flow(path, allow_hosts=allow))
    check_unique_names(workflows)
    names = [flow.name for flow in flows]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two flows are named {name!r}: a served flow's name is its URL")
    return flows, workflows


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (made with IPPROTO_TCP, so uvicorn sets TCP_NODELAY on it)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, not {port}")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_store(arguments: argparse.Namespace) -> None:
    """UsageError when ``--store`` (and the options it needs) is wrong; no connection yet."""
    if arguments.store == "memory":
        return
    if not arguments.store.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError("--store is memory or a redis:// URL")
    if not arguments.state_key:
        raise UsageError(
            "a Redis store is shared: give --state-key NAME (the same on every replica)"
        )


def _store(arguments: argparse.Namespace, ttl: float) -> CallStore | None:
    check_store(arguments)
    if arguments.store == "memory":
        return None
    return RedisCallStore.from_url(arguments.store, prefix=arguments.key_prefix, ttl=ttl)


def load_served(
    arguments: argparse.Namespace, *, warn: bool = True
) -> tuple[ServeSettings, list[Any], list[Any]] | int:
    """The settings, flows and workflows ``arguments`` name, or EXIT_BAD_INPUT (said on
    standard error) for documents with errors; ``warn``: say that signatures are off."""
    settings = _settings(arguments)
    try:
        flows, workflows = _documents(arguments)
    except FlowDocumentError as error:
        print(printable(f"flowlang: the documents have errors:\n\n{error}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    takes_events = bool(workflows or settings.event_secrets or settings.event_tokens)
    if getattr(arguments, "broker", None):  # the workers record and deliver the events
        takes_events = False
    events_store = getattr(arguments, "events_store", None)
    no_events_store = getattr(arguments, "no_events_store", False)
    if events_store and no_events_store:
        raise UsageError("--events-store and --no-events-store cannot both be given")
    if events_store and getattr(arguments, "broker", None):
        raise UsageError(
            "--events-store is not used with --broker: the broker keeps the events and the "
            "workers record them (flowlang worker --store)"
        )
    if takes_events and not events_store and not no_events_store:
        raise UsageError(
            "give --events-store FILE: events are recorded there before they are answered, so "
            "that none is lost when a process stops (or --no-events-store to keep them in "
            "memory only)"
        )
    if not 1 <= getattr(arguments, "max_connections", 1000) <= 1_000_000:
        raise UsageError("--max-connections must be from 1 to 1000000")
    if warn and not settings.signatures:
        print(
            "flowlang: WARNING: --no-signatures: anyone who reaches this server can drive calls",
            file=sys.stderr,
        )
    return settings, flows, workflows


def _events_store_path(arguments: argparse.Namespace) -> Path | None:
    """The ``--events-store`` file (None with --no-events-store, or with nothing to record)."""
    given = getattr(arguments, "events_store", None)
    return Path(given) if given else None


def check_events_store(arguments: argparse.Namespace) -> None:
    """UsageError naming the ``--events-store`` file when it cannot be a store (a link, a
    FIFO, not SQLite, read-only, locked too long...): opened once and closed (made when
    missing), before any worker starts."""
    path = _events_store_path(arguments)
    if path is None:
        return
    try:
        LocalStore(path, sync=True).close()
    except StoreError as error:
        raise UsageError(str(error)) from None


def describe(arguments: argparse.Namespace, flows: list[Any], workflows: list[Any]) -> str:
    """What the "listening on" line says about the documents and the store."""
    names = ", ".join(flow.name for flow in flows) or "none"
    store = "memory" if arguments.store == "memory" else "redis"
    return f"flows: {names}; workflows: {len(workflows)}; store: {store}"


#: Seconds beyond the segment deadline that a stop waits for webhooks in flight.
GRACE_MARGIN = 3.0


def _plain_logging() -> None:
    """``--log-format text``: the flowlang loggers' records as plain lines on standard error
    (masked like every record: install_log_redaction)."""
    install_log_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("flowlang")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _event_publisher(arguments: argparse.Namespace) -> Any:
    """With ``--broker``: what publishes each event to the workers (Celery is loaded only
    then); else None."""
    if not getattr(arguments, "broker", None):
        return None
    try:
        from flowlang.cli.worker_console import event_publisher
    except ImportError as error:
        raise UsageError(
            f"--broker needs the celery extra: pip install 'flowlang[celery]' ({error.name} is "
            "missing)"
        ) from None
    return event_publisher(
        arguments.broker, arguments.queue_prefix, getattr(arguments, "queue_type", "classic")
    )


def run_server(
    arguments: argparse.Namespace,
    loaded: tuple[ServeSettings, list[Any], list[Any]],
    bind: Callable[[], socket.socket],
    started: Callable[[socket.socket], None],
    *,
    context: Callable[[], Any],
) -> _StoppingServer:
    """Build the server of ``loaded``, get its socket from ``bind`` and run it with uvicorn
    until a signal; ``started`` is given the socket once uvicorn handles signals."""
    settings, flows, workflows = loaded
    if arguments.log_format == "json":
        configure_json_logging(sys.stderr)
    else:
        _plain_logging()
    http = load_recorded_responses(arguments.responses) if arguments.responses else None
    observer = Observability.create(known_triggers={workflow.trigger for workflow in workflows})
    try:
        server = build_server(
            flows,
            workflows,
            settings,
            store=_store(arguments, settings.call_ttl),
            observer=observer,
            ssl_context=trusted_authorities(arguments.ca_file),
            http=http,
            allow_hosts=arguments.allow_host,
            events_store=_events_store_path(arguments),
            context=context(),
            publish_events=_event_publisher(arguments),
        )
    except (ValueError, StoreError) as error:  # a secret not set, an unusable events store
        raise UsageError(str(error)) from None
    sock = bind()
    logging.getLogger("uvicorn.error").addFilter(_without_lifespan_traceback)
    tune_collector()  # after loading: the documents' objects are long-lived
    config = uvicorn.Config(
        create_app(server, lambda: started(sock)),
        http=HeaderDeadlineProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        limit_concurrency=getattr(arguments, "max_connections", 1000),
        # webhooks in flight finish (each within the segment deadline); then the application's
        # shutdown drains event dispatches and background requests (drain_timeout)
        timeout_graceful_shutdown=math.ceil(settings.segment_deadline + GRACE_MARGIN),
        server_header=False,
    )
    server_process = _StoppingServer(config)
    try:
        server_process.run(sockets=[sock])
    except SystemExit:  # uvicorn's exit when the application cannot start
        if server_process.started:
            raise
    return server_process


def serve_from_command_line(arguments: argparse.Namespace, stdin: TextIO) -> int:
    """Serve until SIGTERM, SIGHUP or SIGINT (0, or 130 for SIGINT); 2 for documents with
    errors. ``--workers`` above 1: :func:`flowlang.cli.serve_workers.serve_with_workers`."""
    if getattr(arguments, "workers", 1) > 1:
        return serve_with_workers(arguments, stdin)
    if getattr(arguments, "metrics_dir", None):
        raise UsageError("--metrics-dir is for --workers above 1 (one process keeps its own)")
    loaded = load_served(arguments)
    if isinstance(loaded, int):
        return loaded
    settings, flows, workflows = loaded

    def started(sock: socket.socket) -> None:  # once uvicorn handles signals: see the class
        host, port = sock.getsockname()[:2]
        print(
            f"flowlang serve: listening on http://{host}:{port} for {settings.public_url} "
            f"({describe(arguments, flows, workflows)}; pid {os.getpid()})",
            file=sys.stderr,
            flush=True,
        )

    server_process = run_server(
        arguments,
        loaded,
        lambda: listening_socket(arguments.host, arguments.port),
        started,
        context=lambda: read_context(arguments.context, stdin) if arguments.context else None,
    )
    if not server_process.started:
        print("flowlang serve: the server could not start (see the log above)", file=sys.stderr)
        return EXIT_FAILED
    print("flowlang serve: stopped", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED if signal.SIGINT in server_process.stopped_by else EXIT_OK


def _without_lifespan_traceback(record: logging.LogRecord) -> bool:
    """uvicorn logs a failed start with the exception's traceback (Starlette's
    ``lifespan.startup.failed`` message is one); the server already logged why it cannot
    start (``serve.start_failed``), so the line says only that."""
    text = str(record.msg)
    if text.startswith(("Traceback (most recent call last)", "Exception in 'lifespan'")):
        record.msg = "the server could not start"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    return True


class _StoppingServer(uvicorn.Server):
    """uvicorn's server, except that a stop asked by a signal ends ``run`` normally (uvicorn
    raises the signal again after its graceful shutdown, which would kill the process), and
    SIGHUP stops it gracefully as SIGTERM does."""

    stopped_by: tuple[int, ...] = ()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            # SIGHUP (a closed terminal or ssh session) stops gracefully, as SIGTERM does;
            # uvicorn handles only SIGINT and SIGTERM.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGHUP, self.handle_exit) if main else None
            try:
                yield
            finally:
                if previous is not None:
                    signal.signal(signal.SIGHUP, previous)
            self.stopped_by = tuple(self._captured_signals)
            self._captured_signals.clear()


def serve_with_workers(arguments: argparse.Namespace, stdin: TextIO) -> int:
    """``flowlang serve --workers N`` (N > 1): check everything once, bind the socket, make
    the metrics folder, and supervise N workers until SIGTERM (0) or SIGINT (130); 1 when a
    worker fails to start or workers die too often; 2 for documents with errors."""
    if arguments.store == "memory":
        raise UsageError(
            f"--workers {arguments.workers} needs a shared store (--store redis://HOST:PORT/DB): "
            "the in-process store cannot be shared between processes"
        )
    check_store(arguments)
    loaded = load_served(arguments)
    if isinstance(loaded, int):
        return loaded
    settings, flows, workflows = loaded
    check_events_store(arguments)
    context = read_context(arguments.context, stdin) if arguments.context else None
    folder, temporary = metrics_folder(arguments.metrics_dir)
    try:
        sock = listening_socket(arguments.host, arguments.port)
        host, port = sock.getsockname()[:2]

        def announce(pids: list[int]) -> None:
            say(
                f"listening on http://{host}:{port} for {settings.public_url} "
                f"({describe(arguments, flows, workflows)}; workers: {len(pids)}, pids "
                f"{', '.join(map(str, pids))}; pid {os.getpid()})"
            )

        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        supervisor = Supervisor(
            count=arguments.workers,
            sock=sock,
            spec=worker_spec(arguments, context),
            env=env,
            stop_wait=3 * max(1, math.ceil(settings.drain_timeout)) + STOP_MARGIN,
            metrics=folder,
            on_ready=announce,
        )
        try:
            return supervisor.run()
        finally:
            sock.close()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def worker_main(index_text: str) -> int:
    """One worker: read the spec line on standard input, serve on the inherited socket, say
    ``ready`` on the inherited pipe once started. 0 after a stop by signal, 1 when it could
    not start, 2 for a usage error."""
    start = read_worker_start(index_text)
    if start is None:
        return EXIT_BAD_INPUT
    index, spec = start.index, start.spec
    arguments = argparse.Namespace(**spec["arguments"])

    def started(_sock: socket.socket) -> None:
        start.say_ready()

    try:
        loaded = load_served(arguments, warn=False)
        if isinstance(loaded, int):
            return loaded
        server_process = run_server(
            arguments,
            loaded,
            lambda: start.sock,
            started,
            context=lambda: spec["context"],
        )
    except UsageError as error:
        say(f"worker {index}: {error}")
        return EXIT_BAD_INPUT
    except (ValueError, OSError, AttributeError) as error:  # such as a secret not set
        say(f"worker {index}: the server cannot start: {error}")
        return EXIT_FAILED
    finally:
        with contextlib.suppress(OSError):
            start.ready.close()
    return EXIT_OK if server_process.started else EXIT_FAILED


if __name__ == "__main__":  # a worker of flowlang serve --workers
    sys.exit(worker_main(sys.argv[1] if len(sys.argv) > 1 else ""))
