"""Console: ``flowlang worker``, ``flowlang automate --executor celery`` and ``flowlang replay
redis://...`` (the ``celery`` extra).

``worker`` checks everything it can before it consumes (the workflows, the broker and store
URLs, that both answer: exit 2 with the URL's password masked otherwise), then runs a Celery
worker in this process with flowlang's settings (flowlang.distributed.celery_app). SIGTERM
and Ctrl-C stop it warmly: the tasks in progress finish, the others stay on the broker;
exit 0. It writes ``flowlang worker: consuming QUEUES`` on standard error once it consumes.
With ``--metrics-port`` it first serves Prometheus metrics (flowlang.observe.worker_metrics)
on ``--metrics-host`` (loopback by default) and says where; a port in use is exit 2. The
endpoint is bounded (MetricsServer: 8 connections at once, 5 s and 8 KiB per request), so
idle clients cannot take the descriptors deliveries need. An inherited
``PROMETHEUS_MULTIPROC_DIR`` is never used (removed at start): with the prefork pool, the
pool children write prometheus_client's multiprocess files in a private temporary folder
(mode 0700) the worker removes when it stops (one that cannot be made is exit 2); the
threads pool writes none.

``serve --broker`` (:func:`event_publisher`) publishes each event in one try of at most 3 s,
on a pool of 8 threads of its own: its sender gets 503 within 5 s when the broker stalls,
at once when all 8 wait already. On RabbitMQ every read and write of its socket is bounded
too (3 s each), so a publish that gave up also gives its thread back within a few of them
(kombu's close of the connection waits for the broker's answers).

``automate --executor celery`` checks each event line at the door (a line that is not an
event is reported with file:line, as ``automate`` does, and not published) and publishes one
``flowlang.accept`` message per event; the summary says how many were published and
refused. Exit 0, 1 when a publish failed, 2 for refused lines or an unusable broker.

``replay redis://HOST/DB`` replays the shared dead letters in this process, removing each one
once replayed; what fails again is a dead letter again (exit 1).
"""

from __future__ import annotations

__all__ = [
    "publish_from_command_line",
    "replay_from_command_line",
    "worker_from_command_line",
]

import argparse
import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TextIO

from celery import Celery, signals

from flowlang.automations.dispatch import Automations, DeadLetterStore, DeliverySettings
from flowlang.automations.records import EventError, check_event
from flowlang.automations.workflow import check_unique_names, load_workflow
from flowlang.cli.automate_console import _providers
from flowlang.cli.event_stream import opened_events, read_events, readable_lines
from flowlang.cli.inputs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError
from flowlang.cli.terminal import printable
from flowlang.cli.trust import trusted_authorities
from flowlang.distributed import loop as worker_loop
from flowlang.distributed import watch
from flowlang.distributed.celery_app import (
    PUBLISH_TIMEOUT,
    WorkerSettings,
    broker_kind,
    check_queue_prefix,
    make_app,
)
from flowlang.distributed.connection import check_prefix, connect, mask_url, scrub, url_secrets
from flowlang.distributed.messages import ACCEPT_TASK, REPLAY_TASK, AcceptMessage, queue_names
from flowlang.distributed.replay import replay_all
from flowlang.distributed.shared import SharedStore
from flowlang.distributed.tasks import publisher, register
from flowlang.errors import SharedStoreError
from flowlang.flow.model import FlowDocumentError
from flowlang.runtime.secrets import install_log_redaction

log = logging.getLogger("flowlang.worker")

#: Seconds to reach the broker or the store before saying it cannot be reached.
REACH_TIMEOUT = 5.0


def _warn(message: str) -> None:
    print(f"flowlang: {printable(message)}", file=sys.stderr, flush=True)


def _check_urls(arguments: argparse.Namespace, *, broker: bool = True, store: bool = True) -> None:
    """UsageError for a broker or store URL of the wrong kind, or a bad prefix (the store's
    only with ``store``: what only publishes needs no store)."""
    if broker:
        if not arguments.broker:
            raise UsageError("give the broker: --broker amqp://... or redis://...")
        try:
            broker_kind(arguments.broker)
        except ValueError as error:
            raise UsageError(f"--broker: {error}") from None
        try:
            check_queue_prefix(arguments.queue_prefix)
        except ValueError as error:
            raise UsageError(f"--queue-prefix: {error}") from None
    if not store:
        return
    if not arguments.store:
        raise UsageError("give the shared store: --store redis://HOST:6379/DB")
    try:
        check_prefix(arguments.prefix)
        connect(arguments.store)  # checks the URL; connects on first use only
    except ValueError as error:
        raise UsageError(f"--store: {error}") from None


def _reach_broker(app: Celery, url: str) -> None:
    """UsageError when the broker does not answer."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0.2, timeout=REACH_TIMEOUT)
    except Exception as error:
        raise UsageError(
            f"cannot reach the broker at {mask_url(url)}: {_scrubbed(error, url)}"
        ) from None


def _scrubbed(error: BaseException, url: str) -> str:
    """``Type: message`` of ``error`` without the password of ``url`` in any form."""
    return scrub(f"{type(error).__name__}: {error}", url_secrets(url))


def _reach_store(url: str) -> None:
    """UsageError when the Redis store does not answer."""

    async def ping() -> None:
        connection = connect(url)
        try:
            await asyncio.wait_for(connection.client.ping(), REACH_TIMEOUT)
        finally:
            await connection.aclose()

    try:
        asyncio.run(ping())
    except Exception as error:
        raise UsageError(
            f"cannot reach the store at {mask_url(url)}: {_scrubbed(error, url)}"
        ) from None


def _app(arguments: argparse.Namespace) -> Celery:
    settings = WorkerSettings(
        publish_timeout=getattr(arguments, "publish_timeout", PUBLISH_TIMEOUT),
        visibility_timeout=getattr(arguments, "visibility_timeout", 300.0),
        restore_interval=getattr(arguments, "restore_interval", 10.0),
        queue_type=getattr(arguments, "queue_type", "classic"),
        task_events=bool(getattr(arguments, "task_events", False)),
    )
    try:
        return make_app(arguments.broker, queue_prefix=arguments.queue_prefix, settings=settings)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _load_workflows(names: list[str], allow_hosts: list[str]) -> list[Any] | None:
    try:
        workflows = [load_workflow(name, allow_hosts=allow_hosts) for name in names]
        check_unique_names(workflows)
    except FlowDocumentError as error:
        _warn(f"the workflows have errors:\n\n{error}")
        return None
    return workflows


def _delivery_settings(arguments: argparse.Namespace) -> DeliverySettings:
    allow_hosts = frozenset(arguments.allow_host)
    options: dict[str, Any] = {}
    if getattr(arguments, "retry_schedule", None):
        options["schedule"] = arguments.retry_schedule
    if getattr(arguments, "throttled_minimum", None):
        options["throttled_minimum"] = arguments.throttled_minimum
    return DeliverySettings(
        allow_hosts=allow_hosts, providers=_providers(arguments, allow_hosts), **options
    )


# --- flowlang worker -------------------------------------------------------------------------


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Say that the worker consumes (module level: Celery holds receivers weakly)."""
    queues = ", ".join(sorted(_consuming)) if _consuming else "its queues"
    print(f"flowlang worker: consuming {queues}", file=sys.stderr, flush=True)


_consuming: list[str] = []
signals.worker_ready.connect(on_worker_ready, dispatch_uid="flowlang.worker_console.ready")


def worker_from_command_line(arguments: argparse.Namespace, out: TextIO) -> int:
    """``flowlang worker``: runs until SIGTERM or Ctrl-C; the exit status."""
    # Never an inherited multiprocess folder (before anything imports prometheus_client):
    # --metrics-port with the prefork pool makes a private one.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    _check_urls(arguments)
    workflows = _load_workflows(arguments.workflows, arguments.allow_host)
    if workflows is None:
        return EXIT_BAD_INPUT
    ssl_context = trusted_authorities(arguments.ca_file)
    try:
        settings = _delivery_settings(arguments)
    except ValueError as error:
        raise UsageError(str(error)) from None
    app = _app(arguments)
    _reach_broker(app, arguments.broker)
    _reach_store(arguments.store)
    if broker_kind(arguments.broker) == "redis" and arguments.visibility_timeout <= 90:
        _warn(
            f"--visibility-timeout {arguments.visibility_timeout:g} is not above a task's time "
            "limit (90 s): Redis may redeliver a task still running (the lease keeps it from "
            "being sent twice)"
        )
    if arguments.lease <= settings.timeout_cap:
        _warn(
            f"--lease {arguments.lease:g} is not above an attempt's longest time "
            f"({settings.timeout_cap:g} s): a redelivered message may be attempted while the "
            "first attempt still runs (the same Idempotency-Key, but two requests at once)"
        )
    install_log_redaction()
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    register(app, arguments.queue_prefix, inline=not arguments.no_inline)
    store_url, prefix = arguments.store, arguments.prefix
    metrics = _start_metrics(arguments)
    try:
        return _run_worker(arguments, app, workflows, settings, ssl_context, store_url, prefix)
    finally:
        metrics.close()


def _run_worker(
    arguments: argparse.Namespace,
    app: Celery,
    workflows: list[Any],
    settings: DeliverySettings,
    ssl_context: Any,
    store_url: str,
    prefix: str,
) -> int:
    """Run the Celery worker until it stops; its exit status."""

    def automations() -> Automations:
        return Automations(
            workflows, settings=settings, ssl_context=ssl_context, dead_letters=DeadLetterStore()
        )

    def store() -> SharedStore:
        return SharedStore.from_url(store_url, prefix=prefix)

    worker_loop.configure(
        worker_loop.LoopConfig(
            automations=automations,
            store=store,
            publish=publisher(app, arguments.queue_prefix),
            pool=arguments.pool,
            lease=arguments.lease,
            deliverer_options={"accept_lease": arguments.lease},
        )
    )
    queues = list(queue_names(arguments.queue_prefix))
    _consuming[:] = queues
    hostname = arguments.hostname or f"flowlang-{os.getpid()}@{socket.gethostname()}"
    worker = app.Worker(
        pool_cls=arguments.pool,
        concurrency=arguments.concurrency,
        queues=queues,
        hostname=hostname,
        loglevel="INFO" if arguments.verbose else "WARNING",
        without_mingle=True,
        without_gossip=True,
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        worker.start()
    finally:
        worker_loop.stop()
        worker_loop.configure(None)
    code = worker.exitcode
    return EXIT_OK if not code else int(code)


# --- flowlang worker --metrics-port ----------------------------------------------------------


class _Metrics:
    """The metrics endpoint of a worker (nothing without --metrics-port): its server and, with
    the prefork pool, the private multiprocess folder; :meth:`close` stops and removes both."""

    def __init__(self, server: Any = None, folder: Path | None = None) -> None:
        self.server = server
        self.folder = folder

    def close(self) -> None:
        global _metrics_server
        watch.install(None)
        _metrics_server = None
        if self.server is not None:
            self.server.close()
        self.remove_folder()

    def remove_folder(self) -> None:
        """Remove the private folder, if any (also run by the shutdown watchdog's exit, which
        skips every ``finally``: :func:`flowlang.distributed.loop.on_exit`)."""
        worker_loop.on_exit(self.remove_folder, add=False)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


#: The metrics server of this worker (closed in each prefork child: it serves in the parent).
_metrics_server: Any = None


def _start_metrics(arguments: argparse.Namespace) -> _Metrics:
    """Serve the worker's metrics when ``--metrics-port`` is given (UsageError, exit 2, when
    the address cannot be bound: a port in use, a host that is not this machine's)."""
    global _metrics_server
    port = getattr(arguments, "metrics_port", None)
    if port is None:
        return _Metrics()
    host = arguments.metrics_host
    shown = printable(f"{host}:{port}", one_line=True)
    if not isinstance(host, str) or not host or len(host) > 255:
        raise UsageError(f"--metrics-host {shown}: not a host name or address")
    # An inherited PROMETHEUS_MULTIPROC_DIR is never used: a missing folder was a traceback,
    # an existing one (another exporter's) got this worker's files, never removed.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    folder: Path | None = None
    if arguments.pool == "prefork":
        if "prometheus_client" in sys.modules:  # pragma: no cover (nothing imports it earlier)
            raise UsageError("--metrics-port with --pool prefork: prometheus_client is loaded")
        try:
            folder = Path(tempfile.mkdtemp(prefix="flowlang-worker-metrics-"))
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise UsageError(
                f"--metrics-port with --pool prefork: cannot make a private folder for the "
                f"pool's metrics in {printable(tempfile.gettempdir(), one_line=True)}: "
                f"{printable(reason, one_line=True)} (set TMPDIR to a writable folder)"
            ) from None
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    metrics = _Metrics(folder=folder)
    if folder is not None:
        worker_loop.on_exit(metrics.remove_folder)  # the watchdog's os._exit skips finally
    try:
        from flowlang.observe.worker_metrics import MetricsServer, WorkerMetrics
    except ImportError as error:
        metrics.close()
        raise UsageError(
            f"--metrics-port needs prometheus-client: pip install 'flowlang[celery]' "
            f"({error.name} is missing)"
        ) from None
    try:
        recorder = WorkerMetrics(multiprocess_path=str(folder) if folder is not None else None)
    except (OSError, ValueError) as error:
        metrics.close()
        raise UsageError(f"--metrics-port: {printable(str(error), one_line=True)}") from None
    try:
        server = MetricsServer(host, port, recorder.registry())
    except (OSError, UnicodeError, ValueError) as error:
        metrics.close()
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise UsageError(
            f"--metrics-port: cannot serve metrics on {shown}: {printable(reason, one_line=True)}"
        ) from None
    metrics.server = _metrics_server = server
    watch.install(recorder)
    address = server.server_address
    bound_host, bound_port = str(address[0]), int(address[1])
    where = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(
        f"flowlang worker: metrics on http://{where}:{bound_port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    if not ipaddress.ip_address(_loopback_of(bound_host)).is_loopback:
        _warn(
            f"the metrics on {where}:{bound_port} are not authenticated: anyone who can reach "
            "that address can read them"
        )
    return metrics


def _loopback_of(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    return host


def on_worker_process_init(**_: Any) -> None:
    """A prefork child: close its copy of the metrics socket (the parent serves it)."""
    if _metrics_server is not None:
        with contextlib.suppress(OSError):
            _metrics_server.socket.close()


signals.worker_process_init.connect(
    on_worker_process_init, dispatch_uid="flowlang.worker_console.process_init"
)


# --- flowlang automate --executor celery -------------------------------------------------------


def publish_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """Publish one ``flowlang.accept`` message per event line; the exit status."""
    _check_urls(arguments, broker=True, store=False)
    app = _app(arguments)
    _reach_broker(app, arguments.broker)
    settings = DeliverySettings()
    publish = publisher(app, arguments.queue_prefix)
    with opened_events(arguments.events, stdin) as (stream, label):
        return _publish_stream(arguments, publish, settings, stream, label, out)


def _publish_stream(
    arguments: argparse.Namespace,
    publish: Any,
    settings: DeliverySettings,
    stream: IO[Any],
    label: str,
    out: TextIO,
) -> int:
    counts = {"published": 0, "refused": 0, "failed": 0}
    fatal: str | None = None
    try:
        for event, where, _ in read_events(readable_lines(stream), label):
            if event is None:
                counts["refused"] += 1
                _warn(where)
                continue
            try:
                plain = check_event(event, settings.max_event_depth, settings.max_event_bytes)
            except EventError as error:
                counts["refused"] += 1
                _warn(f"{where}: {error}")
                continue
            body = AcceptMessage(plain, time.time(), "automate").to_json()
            try:
                publish(ACCEPT_TASK, body)
            except Exception as error:
                counts["failed"] += 1
                _warn(f"{where}: not published: {_scrubbed(error, arguments.broker)}")
                continue
            counts["published"] += 1
    except ValueError as error:  # a line that never ends
        fatal = f"{label}: {error}"
    if fatal is not None:
        _warn(fatal)
    if arguments.json:
        out.write(json.dumps({"kind": "summary", **counts}) + "\n")
    elif not arguments.quiet:
        out.write(
            f"published {counts['published']} events to {mask_url(arguments.broker)}, "
            f"refused {counts['refused']}, not published {counts['failed']}\n"
        )
    if fatal is not None or counts["refused"]:
        return EXIT_BAD_INPUT
    return EXIT_FAILED if counts["failed"] else EXIT_OK


#: ``serve --broker``: seconds one publish may take on the broker (one try: no retries),
#: seconds its sender waits in all before a 503, and publishes in flight at once (the next
#: sender gets its 503 at once). A publish that timed out may still have reached the broker:
#: its event then runs, and the sender's retry is a duplicate the workers drop (the duplicate
#: window of the shared store).
SERVE_PUBLISH_TIMEOUT = 3.0
SERVE_PUBLISH_WAIT = 5.0
SERVE_PUBLISH_THREADS = 8


def event_publisher(
    broker_url: str,
    queue_prefix: str,
    queue_type: str = "classic",
    *,
    timeout: float = SERVE_PUBLISH_TIMEOUT,
    wait: float = SERVE_PUBLISH_WAIT,
    threads: int = SERVE_PUBLISH_THREADS,
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """``flowlang serve --broker``: a coroutine function publishing one accept message body
    (UsageError, password masked, for a broker URL of another kind or one that does not
    answer). Bounded for a webhook's sender: each publish is one try within ``timeout`` on
    a pool of ``threads`` of its own (never the loop's default executor, which resolves
    names); it raises TimeoutError after ``wait`` seconds in all, or at once when every
    thread is held by a publish the broker has not taken (the server answers 503). On
    RabbitMQ each read and write of the socket waits at most ``timeout`` too (py-amqp's
    ``read_timeout``, ``write_timeout``): a publish that timed out is followed by kombu's
    graceful close of its connection (two waits for the broker's Close-Ok), so its thread
    is given back within about 3 x ``timeout`` (measured: 3.0 s with ``timeout=1``), never
    held for good by a broker whose answers were lost."""
    arguments = argparse.Namespace(
        broker=broker_url, queue_prefix=queue_prefix, queue_type=queue_type,
        publish_timeout=timeout,
    )  # fmt: skip
    try:
        broker_kind(broker_url)
        check_queue_prefix(queue_prefix)
    except ValueError as error:
        raise UsageError(f"--broker: {error}") from None
    app = _app(arguments)
    app.conf.task_publish_retry = False  # the sender retries; a stalled broker is one timeout
    if broker_kind(broker_url) == "rabbitmq":
        # Every wait on the socket bounded, not only the publish and its confirm: after a
        # confirm's timeout kombu closes the connection politely (Channel.Close, then
        # Connection.Close, each waiting for the broker's Close-Ok with no limit), which held
        # the publish thread for good when the broker's answer was lost. py-amqp sets these
        # as the socket's SO_RCVTIMEO / SO_SNDTIMEO; this app only publishes (no consumer).
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "read_timeout": timeout,
            "write_timeout": timeout,
        }
    _reach_broker(app, broker_url)
    publish = publisher(app, queue_prefix)
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="flowlang-publish")
    slots = threading.BoundedSemaphore(threads)

    def publish_one(body: dict[str, Any]) -> None:
        try:
            publish(ACCEPT_TASK, body)
        finally:
            slots.release()  # when the broker answered or gave up, not when the sender did

    async def publish_event(body: dict[str, Any]) -> None:
        if not slots.acquire(blocking=False):
            raise TimeoutError(
                f"{threads} publishes are waiting for the broker already: not queued"
            )
        try:
            work = asyncio.get_running_loop().run_in_executor(pool, publish_one, body)
        except RuntimeError:  # the pool is shut down (the interpreter is stopping)
            slots.release()
            raise
        try:
            await asyncio.wait_for(work, wait)
        except TimeoutError:
            raise TimeoutError(f"the broker did not take the event within {wait:g} s") from None

    return publish_event


# --- flowlang replay redis://... ---------------------------------------------------------------


def replay_from_command_line(arguments: argparse.Namespace, out: TextIO) -> int:
    """Replay the shared dead letters of ``arguments.dead_letter`` (a Redis URL)."""
    url = arguments.dead_letter
    arguments.store = url
    _check_urls(arguments, broker=False)
    if arguments.responses:
        raise UsageError("--responses is for a dead-letter file, not a shared store")
    _reach_store(url)
    if arguments.broker:
        _check_urls(arguments)
        app = _app(arguments)
        _reach_broker(app, arguments.broker)
        publish = publisher(app, arguments.queue_prefix)
        try:
            return asyncio.run(_hand_over(url, arguments.prefix, publish, arguments.broker, out))
        except SharedStoreError as error:
            _warn(f"{error}; what was not handed over stays in the store: run it again")
            return EXIT_BAD_INPUT
    ssl_context = trusted_authorities(arguments.ca_file)
    try:
        settings = _delivery_settings(arguments)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        return asyncio.run(_replay(url, arguments.prefix, settings, ssl_context, out))
    except SharedStoreError as error:  # the store went away during the replay
        _warn(f"{error}; what was not replayed stays in the store: run the replay again")
        return EXIT_BAD_INPUT


async def _hand_over(
    url: str,
    prefix: str,
    publish: Callable[[str, dict[str, Any]], None],
    broker: str,
    out: TextIO,
) -> int:
    """Publish each dead letter the store holds now as a ``flowlang.replay`` message, and
    remove it once the broker has it (what fails again comes back as a new dead letter)."""
    store = SharedStore.from_url(url, prefix=prefix)
    handed = failed = 0
    try:
        total = await store.dead_count()
        after = "-"
        while handed + failed < total:
            batch = await store.dead_letters(after, 100)
            if not batch:
                break
            for entry, record in batch:
                after = entry
                try:
                    await asyncio.to_thread(publish, REPLAY_TASK, record)
                except Exception as error:
                    failed += 1
                    _warn(f"dead letter {entry}: not published: {_scrubbed(error, broker)}")
                    continue
                await store.remove_dead(entry)
                handed += 1
    finally:
        await store.aclose()
    out.write(f"handed {handed} dead letters to the workers; {failed} not published\n")
    return EXIT_FAILED if failed else EXIT_OK


async def _replay(
    url: str, prefix: str, settings: DeliverySettings, ssl_context: Any, out: TextIO
) -> int:
    store = SharedStore.from_url(url, prefix=prefix)
    try:
        async with Automations([], settings=settings, ssl_context=ssl_context) as automations:
            counts = await replay_all(automations, store)
            left = await store.dead_count()
    finally:
        await store.aclose()
    out.write(
        automations.redactor.text(
            f"replayed {counts.records} records: delivered {counts.delivered}, "
            f"dead-lettered again {counts.dead_lettered}, skipped {counts.skipped}"
            + (f", {counts.held} left to another replay" if counts.held else "")
            + f"; {left} left in {mask_url(url)}\n"
        )
    )
    return EXIT_FAILED if counts.dead_lettered or counts.problems else EXIT_OK
