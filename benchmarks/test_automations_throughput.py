"""Automations' delivery throughput (issue 13, Performance): deliveries per second to a loopback
HTTPS receiver, the local executor against a plain asyncio + httpx script doing the same sends,
in one run, at 10 and 100 events at once.

The receiver (``benchmarks/https_receiver.py``) runs in its own process group, as
``benchmarks/test_http_throughput.py``'s server does, so it never shares the measured process's
event loop or core (the machine has two: one for the contestant, one for the receiver). It
answers 200 with a tiny JSON body at once over HTTPS (certificate from a trustme CA made at run
time) and counts requests by ``Idempotency-Key``.

Contestants, on the same EVENTS events (ids, a name and a waiting time) and the same connection
count (``min(concurrency, max_requests_in_flight)``):

- httpx: the script one would write by hand: for each event, build the JSON body and its
  ``Idempotency-Key`` (flowlang's :func:`idempotency_key`, so the keys are the same), POST it on
  one ``httpx.AsyncClient`` (``verify=`` the CA), check the status and parse the answer;
  ``concurrency`` coroutines share the events;
- local: ``Automations(...).dispatch(event)`` (the local executor), each event matching one
  workflow whose one ``api_request`` action posts the same body to the receiver
  (``DeliverySettings(allow_hosts={"127.0.0.1"})``, an ``ssl_context`` trusting the CA);
  ``concurrency`` coroutines share the events, each dispatch checked delivered. A fresh
  ``Automations`` per pass (its duplicate window would refuse the events again) on one sender
  made once, so the contestants keep their connections warm between passes, as a long-running
  process does;
- minimal, for reference only (a floor, not the issue's baseline): the same POSTs on
  ``test_http_throughput``'s minimal client (asyncio streams + ssl + h11, keep-alive).

Before any timing, each contestant runs every event once and the receiver's records are
compared: the same set of keys, each seen once, with the same body (parsed JSON). Every timed
pass is checked again (EVENTS distinct keys, no repeat). Rates are the best of ROUNDS
interleaved passes (the machine is shared); CPU is this process's CPU time per delivery.

Celery contestants (``flowlang worker``): one worker process against the local executor, two
against one, and the time for a killed worker's task to be delivered, on Redis and on RabbitMQ.
The workers' CPU per delivery (their process groups' user + system time over the pass, from
/proc) is shown too: on a shared machine the rates move with the load, the CPU much less.
The harness is below (``celery_*``, ``worker_command``, ``publish_command``); those tests skip
while ``python -m flowlang worker --help`` fails (the command does not exist yet).

The Celery floor, in the same run and per broker: one worker process of
``benchmarks/celery_floor.py`` (flowlang's Celery app from ``make_app`` and ``flowlang
worker``'s options: threads pool, the same concurrency, acks late, prefetch 1, JSON; its own
process group, random queue names) running EVENTS tasks that do nothing but one Redis round
trip (their count: every task checked run exactly once, no result backend), and tasks making
one HTTPS POST to the receiver on a sync httpx client per thread; each published while the
worker consumes, and as a backlog published before it starts. One flowlang worker against
it, in deliveries per second and in CPU per delivery: what flowlang adds to Celery itself.

Outside ``make test``:

    make bench-automations

``FLOWLANG_BENCH_EVENTS=N`` changes the events per pass (default 3,000);
``FLOWLANG_BENCH_WORKER_OPTIONS="..."`` adds options to every ``flowlang worker`` started
(``--task-events --no-inline`` measures the workers as they were before issue 13's tuning:
task events sent, every delivery two tasks);
``FLOWLANG_BENCH_FLOOR=noop|post|noop,post|none`` chooses the floor's tasks (both by default);
``FLOWLANG_BENCH_REDELIVERY_TIMEOUT=S`` bounds the wait for a killed worker's task (420 s);
``FLOWLANG_BENCH_PROFILE=FILE`` runs one local pass at 100 at once under cProfile after the
table and writes the statistics to FILE (``python -m pstats FILE``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import cProfile
import importlib.util
import json
import os
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httpx
import kombu
import orjson
import pytest
import redis
import trustme
from celery_floor import NOOP_TASK, POST_TASK, floor_app, publish
from https_receiver import Receiver
from test_http_throughput import Minimal

from flowlang.automations import Automations, CompiledWorkflow, load_workflow_text
from flowlang.automations.dispatch import DeliverySettings, idempotency_key
from flowlang.distributed.messages import queue_names
from flowlang.runtime.http import HttpSender
from tests.services import REDIS_SERVER, RedisServer, kill_group, missing_service

# httpcore asks sniffio which event loop runs each time it makes a lock or an event; sniffio is
# not installed here (anyio no longer needs it), so every request would retry a failing
# ``import sniffio`` across sys.path (about a quarter of a millisecond each, measured). The
# baseline gets the cheap answer a script would get with sniffio installed: ImportError at once
# (httpcore then assumes asyncio). flowlang does not use httpcore's transport.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

ROOT = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get("FLOWLANG_BENCH_EVENTS", "3000"))
CONCURRENCY = (10, 100)
#: Timed passes per cell, interleaving the contestants; each one's best pass is kept.
ROUNDS = 3
HOST = "127.0.0.1"
WORKFLOW = "bench-deliveries"
ACTION = "post"
NAMES = ("Ann", "Bob", "Cid", "Dee", "Eve")
#: Seconds any one pass may take before the benchmark gives up on it.
PASS_TIMEOUT = 300.0

# --- inputs -----------------------------------------------------------------------------------


def make_events(count: int, tag: str = "evt") -> list[dict[str, Any]]:
    """``count`` call.ended events, each matching the workflow."""
    return [
        {
            "id": f"{tag}-{n:07d}",
            "type": "call.ended",
            "properties": {"name": NAMES[n % len(NAMES)], "waiting_time": n % 300},
        }
        for n in range(count)
    ]


def workflow_text(port: int) -> str:
    """One api_request action posting the event's id, name and waiting time."""
    return json.dumps(
        {
            "workflow": WORKFLOW,
            "trigger": "call.ended",
            "actions": [
                {
                    "name": ACTION,
                    "type": "api_request",
                    "endpoint": f"https://{HOST}:{port}/deliveries",
                    "values": [
                        {"key": "event_id", "value": "<<event.id>>", "format": "string"},
                        {"key": "name", "value": "<<event.properties.name>>", "format": "string"},
                        {"key": "waited", "value": "<<event.properties.waiting_time>>"},
                    ],
                }
            ],
        }
    )


def expected_body(event: dict[str, Any]) -> dict[str, Any]:
    """What both contestants post for ``event``."""
    properties = event["properties"]
    return {
        "event_id": event["id"],
        "name": properties["name"],
        "waited": properties["waiting_time"],
    }


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@dataclass
class Scene:
    """The receiver and what every contestant is given."""

    receiver: Receiver
    ca: trustme.CA
    ca_file: Path
    folder: Path
    workflow: CompiledWorkflow
    workflow_file: Path
    events: list[dict[str, Any]]
    url: str
    #: Deliveries per second of the local executor by concurrency (for the Celery ratios).
    local: dict[int, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    folder = tmp_path_factory.mktemp("automations-bench")
    ca = trustme.CA()
    issued = ca.issue_cert(HOST)
    cert, key, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    receiver = Receiver(cert, key, folder / "receiver.log")
    try:
        text = workflow_text(receiver.port)
        workflow_file = folder / "workflow.json"
        workflow_file.write_text(text)
        yield Scene(
            receiver,
            ca,
            ca_file,
            folder,
            load_workflow_text(text, name="workflow.json"),
            workflow_file,
            make_events(EVENTS),
            f"https://{HOST}:{receiver.port}/deliveries",
        )
    finally:
        receiver.close()


# --- the two in-process contestants -----------------------------------------------------------

Run = Callable[[list[dict[str, Any]], int], Awaitable[None]]


async def _share(events: list[dict[str, Any]], concurrency: int, one: Callable[[Any], Any]) -> None:
    """``concurrency`` coroutines taking the events in turn, each awaiting ``one(event)``."""
    queue = iter(events)

    async def worker() -> None:
        for event in queue:
            await one(event)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def httpx_contestant(client: httpx.AsyncClient, url: str) -> Run:
    """The plain script: one POST per event on one AsyncClient."""

    async def post(event: dict[str, Any]) -> None:
        properties = event["properties"]
        response = await client.post(
            url,
            json={
                "event_id": event["id"],
                "name": properties["name"],
                "waited": properties["waiting_time"],
            },
            headers={"Idempotency-Key": idempotency_key(event["id"], WORKFLOW, ACTION)},
        )
        response.raise_for_status()
        response.json()

    async def run(events: list[dict[str, Any]], concurrency: int) -> None:
        await _share(events, concurrency, post)

    return run


def minimal_contestant(minimal: Minimal, port: int) -> Run:
    """A floor for reference: the same POSTs on test_http_throughput's minimal client (asyncio
    streams + ssl + h11, keep-alive, connections from a queue)."""
    host = f"{HOST}:{port}"

    async def post(event: dict[str, Any]) -> None:
        properties = event["properties"]
        body = orjson.dumps(
            {
                "event_id": event["id"],
                "name": properties["name"],
                "waited": properties["waiting_time"],
            }
        )
        headers = [
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Idempotency-Key", idempotency_key(event["id"], WORKFLOW, ACTION)),
        ]
        await minimal.request(
            h11.Request(method="POST", target="/deliveries", headers=headers), body
        )

    async def run(events: list[dict[str, Any]], concurrency: int) -> None:
        await _share(events, concurrency, post)

    return run


def local_contestant(
    workflow: CompiledWorkflow, settings: DeliverySettings, sender: HttpSender
) -> Run:
    """The local executor: dispatch every event on a fresh Automations (one shared sender)."""

    async def run(events: list[dict[str, Any]], concurrency: int) -> None:
        automations = Automations([workflow], settings=settings, http=sender)

        async def dispatch(event: dict[str, Any]) -> None:
            result = await automations.dispatch(event)
            (delivery,) = result.deliveries
            if delivery.outcome != "delivered":
                raise AssertionError(f"{event['id']}: {delivery}")

        await _share(events, concurrency, dispatch)
        await automations.aclose()

    return run


def _check_pass(receiver: Receiver, count: int, what: str) -> dict[str, Any]:
    stats = receiver.stats()
    assert stats["distinct"] == count and stats["repeats"] == 0, (what, stats)
    assert stats["unkeyed"] == stats["refused"] == stats["mismatched"] == 0, (what, stats)
    return stats


async def _timed(
    receiver: Receiver, run: Run, events: list[dict[str, Any]], c: int
) -> tuple[float, float]:
    """One checked pass: (deliveries per second, CPU seconds of this process per delivery)."""
    receiver.reset()
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.wait_for(run(events, c), PASS_TIMEOUT)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    _check_pass(receiver, len(events), "timed pass")
    return len(events) / elapsed, cpu / len(events)


def _expected(events: list[dict[str, Any]]) -> dict[str, tuple[int, Any]]:
    return {
        idempotency_key(event["id"], WORKFLOW, ACTION): (1, expected_body(event))
        for event in events
    }


async def measure_local(scene: Scene, concurrency: int) -> dict[str, tuple[float, float]]:
    """Both contestants at ``concurrency``: name -> (best deliveries/s, its CPU s/delivery)."""
    connections = min(concurrency, DeliverySettings().max_requests_in_flight)
    settings = DeliverySettings(allow_hosts=frozenset({HOST}))
    sender = settings.sender(client_context(scene.ca), None)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = httpx.AsyncClient(verify=client_context(scene.ca), limits=limits, timeout=15.0)
    minimal = Minimal(scene.receiver.port, client_context(scene.ca), connections, HOST)
    contestants = {
        "minimal": minimal_contestant(minimal, scene.receiver.port),
        "httpx": httpx_contestant(client, scene.url),
        "local": local_contestant(scene.workflow, settings, sender),
    }
    receiver, events = scene.receiver, scene.events
    try:
        expected = _expected(events)
        for name, run in contestants.items():  # same output first (and every connection open)
            receiver.reset()
            await asyncio.wait_for(run(events, concurrency), PASS_TIMEOUT)
            _check_pass(receiver, len(events), name)
            assert receiver.seen() == expected, f"{name}: the receiver saw other keys or bodies"
        best = dict.fromkeys(contestants, (0.0, 0.0))
        for _ in range(ROUNDS):
            for name, run in contestants.items():
                rate, cpu = await _timed(receiver, run, events, concurrency)
                if rate > best[name][0]:
                    best[name] = (rate, cpu)
        return best
    finally:
        await client.aclose()
        await sender.aclose()
        await minimal.aclose()


def _profile(scene: Scene, target: str) -> None:
    """One local pass at 100 at once under cProfile (after a warm pass), stats to ``target``."""
    settings = DeliverySettings(allow_hosts=frozenset({HOST}))

    async def passes(profiler: cProfile.Profile) -> None:
        sender = settings.sender(client_context(scene.ca), None)
        run = local_contestant(scene.workflow, settings, sender)
        try:
            scene.receiver.reset()
            await run(scene.events, 100)
            scene.receiver.reset()
            profiler.enable()
            await run(scene.events, 100)
            profiler.disable()
            _check_pass(scene.receiver, len(scene.events), "profiled pass")
        finally:
            await sender.aclose()

    profiler = cProfile.Profile()
    asyncio.run(passes(profiler))
    profiler.dump_stats(target)
    print(f"cProfile of one local pass at 100 at once: {target}")


def test_local_executor_against_httpx(benchmark: Any, scene: Scene) -> None:
    rows: list[tuple[int, dict[str, tuple[float, float]]]] = []

    def measure_all() -> None:
        rows.clear()
        for concurrency in CONCURRENCY:
            rows.append((concurrency, asyncio.run(measure_local(scene, concurrency))))

    benchmark.group = "automations throughput"
    benchmark.pedantic(measure_all, rounds=1, iterations=1)
    print(
        f"\n\nDeliveries per second to a loopback HTTPS receiver (own process), best of {ROUNDS} "
        f"passes of {EVENTS:,} events; local / httpx is the issue's ratio (target >= 0.8), "
        "minimal (asyncio + ssl + h11) a floor for reference; CPU = this process's CPU time "
        "per delivery (µs)\n"
    )
    print(
        "| at once | httpx | local executor | local / httpx | minimal | local / minimal "
        "| CPU httpx | CPU local | CPU minimal |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, best in rows:
        (plain, plain_cpu), (local, local_cpu) = best["httpx"], best["local"]
        floor, floor_cpu = best["minimal"]
        scene.local[concurrency] = local
        print(
            f"| {concurrency} | {plain:,.0f} | {local:,.0f} | {local / plain:.2f} | "
            f"{floor:,.0f} | {local / floor:.2f} | {plain_cpu * 1e6:,.0f} | "
            f"{local_cpu * 1e6:,.0f} | {floor_cpu * 1e6:,.0f} |"
        )
    benchmark.extra_info.update(
        {
            str(c): {
                name: {"per_second": round(r), "cpu_us": round(u * 1e6)}
                for name, (r, u) in best.items()
            }
            for c, best in rows
        }
    )
    profile_to = os.environ.get("FLOWLANG_BENCH_PROFILE")
    if profile_to:
        _profile(scene, profile_to)


# --- Celery contestants: hooks for `flowlang worker` ------------------------------------------
#
# Everything below runs once `python -m flowlang worker --help` succeeds; until then the tests
# skip with that reason. Workers and publishers are started in their own session (process
# group), killed by group, every wait bounded. Each pass gets fresh key and queue prefixes
# (the shared store's duplicate window would refuse the same events again); RabbitMQ queues are
# deleted afterwards, the Redis server (store, and broker in database 1) is this module's own.

#: Worker coroutines per worker process (``--concurrency``) in the throughput passes.
CELERY_CONCURRENCY = CONCURRENCY
#: Events of the untimed warm-up batch that shows the workers consume (per worker process).
WARM_EVENTS = 20
#: Seconds workers get to start, connect and deliver the warm-up batch.
READY_TIMEOUT = 120.0
#: Seconds a timed Celery pass may take (at least ~10 deliveries per second).
CELERY_PASS_TIMEOUT = max(300.0, EVENTS / 10)
#: Seconds a killed worker's task gets to be delivered: Redis hands an unacknowledged task
#: back only after its visibility timeout (300 s in the design notes), and the dead worker's
#: lease (60 s) may defer a redelivery that comes sooner.
REDELIVERY_TIMEOUT = float(os.environ.get("FLOWLANG_BENCH_REDELIVERY_TIMEOUT", "420"))
#: More worker options for every worker started here (``FLOWLANG_BENCH_WORKER_OPTIONS``, split
#: like a shell line), e.g. ``--visibility-timeout 10 --restore-interval 2 --lease 5``.
WORKER_OPTIONS = tuple(shlex.split(os.environ.get("FLOWLANG_BENCH_WORKER_OPTIONS", "")))
#: The Celery floor's variants, (label, task, backlog), chosen by ``FLOWLANG_BENCH_FLOOR``
#: (``noop``, ``post``, both by default; ``none`` for neither): each task published while the
#: worker consumes, then as a backlog the worker drains.
FLOOR_VARIANTS = tuple(
    (f"{label}{', backlog' if backlog else ''}", task, backlog)
    for name, label, task in (("noop", "no-op", NOOP_TASK), ("post", "+ POST", POST_TASK))
    if name in os.environ.get("FLOWLANG_BENCH_FLOOR", "noop,post").split(",")
    for backlog in (False, True)
)
#: Threads publishing the floor's tasks (one at a time each, as flowlang's publisher does).
FLOOR_PUBLISHERS = 4
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
RABBITMQ_PORT = 5672
BROKERS = ("redis", "rabbitmq")


def worker_command(
    workflows: list[Path],
    *,
    broker: str,
    store: str,
    prefix: str,
    queue_prefix: str,
    concurrency: int,
    ca_file: Path,
) -> list[str]:
    """HOOK: the command line of one ``flowlang worker`` process."""
    return [
        sys.executable, "-m", "flowlang", "worker", *map(str, workflows),
        "--broker", broker,
        "--store", store,
        "--prefix", prefix,
        "--queue-prefix", queue_prefix,
        "--concurrency", str(concurrency),
        "--allow-host", HOST,
        "--ca-file", str(ca_file),
        *WORKER_OPTIONS,
    ]  # fmt: skip


def publish_command(
    workflows: list[Path],
    *,
    events_file: Path,
    broker: str,
    queue_prefix: str,
) -> list[str]:
    """HOOK: the command line that publishes the events of ``events_file`` to the workers."""
    return [
        sys.executable, "-m", "flowlang", "automate", *map(str, workflows),
        "--events", str(events_file),
        "--executor", "celery",
        "--broker", broker,
        "--queue-prefix", queue_prefix,
    ]  # fmt: skip


def worker_missing() -> str | None:
    """HOOK: why the Celery contestants cannot run yet, or None when ``flowlang worker`` exists."""
    try:
        answer = subprocess.run(
            [sys.executable, "-m", "flowlang", "worker", "--help"],
            capture_output=True,
            timeout=60,
            cwd=ROOT,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return "`python -m flowlang worker --help` did not answer within 60 s"
    if answer.returncode != 0:
        return (
            f"`python -m flowlang worker --help` failed (exit {answer.returncode}): "
            "the worker command does not exist yet"
        )
    return None


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


class Processes:
    """Commands started in their own session (output in ``folder``), killed by group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_SECRET_")}

    def start(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
                env=self.env,
            )
        self.started.append(process)
        self.names[process.pid] = name
        return process

    def run(self, command: list[str], name: str, timeout: float) -> float:
        """Run ``command`` to its end (bounded); the seconds it took. Fails on a non-zero exit."""
        started = time.monotonic()
        process = self.start(command, name)
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            pytest.fail(f"{name} did not finish within {timeout} s: {self.log(name)}")
        if status != 0:
            pytest.fail(f"{name} exited with {status}: {self.log(name)}")
        return time.monotonic() - started

    def log(self, name: str) -> str:
        return _tail(self.folder / f"{name}.log")

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        return self.log(self.names.get(process.pid, "?"))

    def stop(self, processes: list[subprocess.Popen[bytes]]) -> None:
        """Kill each one's process group (once) and reap it, bounded."""
        for process in processes:
            if process in self.started:
                kill_group(process)
                self.started.remove(process)

    def close(self) -> None:
        self.stop(list(self.started))


@dataclass
class CeleryRun:
    """One namespace (key and queue prefixes) on one broker, with its workers."""

    scene: Scene
    processes: Processes
    broker: str
    store: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def prefix(self) -> str:
        return f"flbench-{self.token}:"

    @property
    def queue_prefix(self) -> str:
        return f"flbench-{self.token}."

    def start_workers(self, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
        command = worker_command(
            [self.scene.workflow_file],
            broker=self.broker,
            store=self.store,
            prefix=self.prefix,
            queue_prefix=self.queue_prefix,
            concurrency=concurrency,
            ca_file=self.scene.ca_file,
        )
        return [
            self.processes.start(command, f"worker-{self.token}-{n}-{time.monotonic_ns()}")
            for n in range(count)
        ]

    def publish(self, events: list[dict[str, Any]], name: str) -> subprocess.Popen[bytes]:
        """Start publishing ``events`` (a JSON-lines file); the publisher process."""
        events_file = self.scene.folder / f"{name}-{self.token}.jsonl"
        events_file.write_bytes(b"".join(json.dumps(event).encode() + b"\n" for event in events))
        command = publish_command(
            [self.scene.workflow_file],
            events_file=events_file,
            broker=self.broker,
            queue_prefix=self.queue_prefix,
        )
        return self.processes.start(command, f"publish-{name}-{self.token}")

    def finish(self, publisher: subprocess.Popen[bytes], name: str, timeout: float) -> None:
        """Wait (bounded) for a publisher to exit 0."""
        try:
            status = publisher.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(publisher)
            status = None
        if status != 0:
            pytest.fail(
                f"publishing {name} ended with {status}: "
                f"{self.processes.log(f'publish-{name}-{self.token}')}"
            )

    def warm_up(self, count: int, workers: list[subprocess.Popen[bytes]]) -> None:
        """Deliver ``count`` untimed events: the workers are up and consuming."""
        receiver = self.scene.receiver
        receiver.reset()
        publisher = self.publish(make_events(count, f"warm-{self.token}"), "warm")
        self.finish(publisher, "warm", READY_TIMEOUT)
        stats = receiver.wait_for(count, READY_TIMEOUT)
        if stats["distinct"] < count:
            logs = "\n".join(
                f"--- worker {p.pid} ({p.poll()}):\n{self.processes.log_of(p)}" for p in workers
            )
            pytest.fail(
                f"the workers delivered {stats['distinct']} of {count} warm-up events within "
                f"{READY_TIMEOUT} s\n{logs}"
            )

    def dead_letters(self) -> int:
        """HOOK: the shared dead letters of this namespace (interface A: the stream
        ``{prefix}dead``)."""
        client = redis.Redis.from_url(self.store, socket_timeout=5)
        try:
            return int(client.xlen(f"{self.prefix}dead"))
        finally:
            client.close()

    def close(self) -> None:
        delete_queues(self.broker, self.queue_prefix)


def delete_queues(broker: str, queue_prefix: str) -> None:
    """Remove a pass's RabbitMQ queues (the Redis broker is this module's own server)."""
    if not broker.startswith("amqp"):
        return
    with kombu.Connection(broker, connect_timeout=5) as connection:
        for name in queue_names(queue_prefix):
            channel = connection.channel()  # a failed delete closes its channel
            with contextlib.suppress(Exception):
                channel.queue_delete(name)
            with contextlib.suppress(Exception):
                channel.close()


def group_cpu(leaders: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system) used so far by every live process in the process groups
    these processes lead (a worker and any pool children), from /proc; 0.0 where /proc is
    not there."""
    groups = {process.pid for process in leaders}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after the command's name
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


def celery_rate(
    scene: Scene, processes: Processes, broker: str, store: str, workers: int, concurrency: int
) -> dict[str, Any]:
    """HOOK: ``workers`` worker processes delivering scene.events (after an untimed warm-up):
    deliveries per second from the receiver's first request to its last new key, and end to
    end from the publisher's start; checked against the expected keys and bodies."""
    run = CeleryRun(scene, processes, broker, store)
    started_workers = run.start_workers(workers, concurrency)
    try:
        run.warm_up(WARM_EVENTS * workers, started_workers)
        receiver, events = scene.receiver, scene.events
        receiver.reset()
        cpu = group_cpu(started_workers)
        started = time.monotonic()
        publisher = run.publish(events, "events")
        stats = receiver.wait_for(len(events), CELERY_PASS_TIMEOUT)
        cpu = group_cpu(started_workers) - cpu
        run.finish(publisher, "events", 60.0)
        if stats["distinct"] < len(events):
            logs = "\n".join(
                f"--- worker {p.pid} ({p.poll()}):\n{processes.log_of(p)}" for p in started_workers
            )
            pytest.fail(
                f"{workers} worker(s) delivered {stats['distinct']} of {len(events)} events "
                f"within {CELERY_PASS_TIMEOUT:.0f} s\n{logs}"
            )
        assert stats["mismatched"] == stats["unkeyed"] == stats["refused"] == 0, stats
        seen = receiver.seen()
        assert {key: body for key, (_, body) in seen.items()} == {
            key: body for key, (_, body) in _expected(events).items()
        }, "the workers delivered other keys or bodies"
        assert run.dead_letters() == 0, "dead letters in a run where every request succeeds"
        return {
            # steady: from the first request to the last new key, both at the receiver
            "per_second": (len(events) - 1) / (stats["last_new"] - stats["first"]),
            # end to end: from the publisher's start (a Python process starting) to the last
            "end_to_end": len(events) / (stats["last_new"] - started),
            "repeats": stats["repeats"],
            # the workers' CPU per delivery (all of them, over the pass): the rate under load
            # moves with the machine; this moves much less
            "cpu_ms": cpu / len(events) * 1000,
        }
    finally:
        processes.stop(started_workers)
        run.close()


def killed_worker_delivery(
    scene: Scene, processes: Processes, broker: str, store: str
) -> dict[str, Any]:
    """HOOK: one worker (concurrency 1) gets an event whose request the receiver holds; the
    worker's process group is SIGKILLed while it waits, a new worker is started at once; the
    seconds from the kill until the request with that key arrives again."""
    run = CeleryRun(scene, processes, broker, store)
    first = run.start_workers(1, 1)
    second: list[subprocess.Popen[bytes]] = []
    receiver = scene.receiver
    try:
        run.warm_up(WARM_EVENTS, first)
        receiver.reset()
        receiver.hold(REDELIVERY_TIMEOUT + 120)
        publisher = run.publish(make_events(1, f"kill-{run.token}"), "kill")
        run.finish(publisher, "kill", 60.0)
        deadline = time.monotonic() + READY_TIMEOUT
        while (stats := receiver.stats())["held"] is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the event's request did not arrive within {READY_TIMEOUT} s")
            time.sleep(0.02)
        killed = time.monotonic()
        processes.stop(first)
        second = run.start_workers(1, 1)
        deadline = killed + REDELIVERY_TIMEOUT
        while (stats := receiver.stats())["again_at"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        again = stats["again_at"]
        return {
            "seconds": None if again is None else again - killed,
            "requests": stats["held_count"],
            "dead_letters": run.dead_letters(),
        }
    finally:
        processes.stop(first + second)
        run.close()


FLOOR_SCRIPT = ROOT / "benchmarks" / "celery_floor.py"


def celery_floor(
    scene: Scene,
    processes: Processes,
    broker: str,
    store: str,
    concurrency: int,
    task: str,
    *,
    backlog: bool = False,
) -> dict[str, Any]:
    """The Celery floor (``benchmarks/celery_floor.py``): one worker process with flowlang's
    app and worker options (threads pool, ``concurrency`` threads) running EVENTS ``task``s
    (NOOP_TASK: one Redis round trip; POST_TASK: one HTTPS POST to the receiver with a sync
    httpx client per thread), published from this process (FLOOR_PUBLISHERS threads, each
    one at a time as ``flowlang automate --executor celery`` does); every task checked run
    exactly once.

    Without ``backlog``: after an untimed warm-up, tasks per second from the first publish to
    the last task done. With ``backlog``: the tasks are all published first, then the worker
    starts; tasks per second from the first task done to the last (what the worker drains,
    without the publisher on the machine). Both with the worker's CPU per task
    (``group_cpu``)."""
    token = secrets.token_hex(4)
    queue_prefix = f"flfloor-{token}."
    counts = f"flfloor-{token}:"
    command = [
        sys.executable, str(FLOOR_SCRIPT),
        "--broker", broker,
        "--queue-prefix", queue_prefix,
        "--concurrency", str(concurrency),
        "--store", store,
        "--url", scene.url,
        "--ca-file", str(scene.ca_file),
    ]  # fmt: skip
    name = f"floor-{token}"
    workers: list[subprocess.Popen[bytes]] = []
    app = floor_app(broker, queue_prefix)
    client = redis.Redis.from_url(store, socket_timeout=10)
    receiver = scene.receiver

    def send(hash_key: str, count: int) -> float:
        """Publish ``count`` tasks from FLOOR_PUBLISHERS threads (each its own connection from
        the app's pool); the seconds it took."""

        def part(first: int) -> None:
            for n in range(first, count, FLOOR_PUBLISHERS):
                if task == NOOP_TASK:
                    publish(app, NOOP_TASK, [hash_key, n, count])
                else:
                    publish(app, POST_TASK, [hash_key, n])

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(FLOOR_PUBLISHERS) as threads:
            for running in [threads.submit(part, first) for first in range(FLOOR_PUBLISHERS)]:
                running.result(PASS_TIMEOUT)
        return time.monotonic() - started

    def alive() -> bool:
        return all(worker.poll() is None for worker in workers)

    def first_done(hash_key: str, timeout: float) -> float | None:
        """When the first task was done (polled, bounded), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if task == POST_TASK:
                first = receiver.stats()["first"]
            else:
                text = client.get(f"{hash_key}:first")
                first = None if text is None else float(text)
            if first is not None:
                return float(first)
            time.sleep(0.005)
        return None

    def wait(hash_key: str, count: int, timeout: float) -> tuple[float | None, dict[str, int]]:
        """(when the last of ``count`` tasks was done or None, {n: runs})."""
        if task == POST_TASK:
            stats = receiver.wait_for(count, timeout, poll=0.01)
            seen = {key.removeprefix(hash_key): runs for key, (runs, _) in receiver.seen().items()}
            done = stats["last_new"] if stats["distinct"] >= count else None
            return done, seen
        deadline = time.monotonic() + timeout
        while (end := client.get(f"{hash_key}:end")) is None and time.monotonic() < deadline:
            if not alive():
                break
            time.sleep(0.01)
        runs = {k.decode(): int(v) for k, v in client.hgetall(hash_key).items()}
        return (None if end is None else float(end)), runs

    def check(hash_key: str, count: int, timeout: float, what: str) -> tuple[float, float]:
        """(when the last task was done, the worker's CPU seconds then), once every task is
        seen to have run exactly once."""
        done, runs = wait(hash_key, count, timeout)
        cpu = group_cpu(workers)
        if done is None:
            pytest.fail(
                f"the floor worker ran {len(runs)} of {count} {what} tasks within {timeout:.0f} s"
                f" ({[w.poll() for w in workers]}): {processes.log(name)}"
            )
        time.sleep(0.2)  # a repeat arriving late is counted too
        _, runs = wait(hash_key, count, 1.0)
        assert runs == {str(n): 1 for n in range(count)}, f"{what}: not every task ran once"
        if task == POST_TASK:
            stats = receiver.stats()
            assert stats["repeats"] == stats["unkeyed"] == stats["refused"] == 0, stats
        return done, cpu

    run = f"{counts}run:"
    try:
        receiver.reset()
        if backlog:
            published = send(run, EVENTS)
            workers.append(processes.start(command, name))
            first = first_done(run, READY_TIMEOUT)
            if first is None:
                pytest.fail(f"the floor worker ran no task ({alive()}): {processes.log(name)}")
            cpu = group_cpu(workers)
            done, cpu_after = check(run, EVENTS, CELERY_PASS_TIMEOUT, "backlog")
            per_second = (EVENTS - 1) / (done - first)
        else:
            workers.append(processes.start(command, name))
            send(f"{counts}warm:", WARM_EVENTS)
            check(f"{counts}warm:", WARM_EVENTS, READY_TIMEOUT, "warm-up")
            receiver.reset()
            cpu = group_cpu(workers)
            started = time.monotonic()
            published = send(run, EVENTS)
            done, cpu_after = check(run, EVENTS, CELERY_PASS_TIMEOUT, "timed")
            per_second = EVENTS / (done - started)
        return {
            "per_second": per_second,
            "publish_per_second": EVENTS / published,
            "cpu_ms": (cpu_after - cpu) / EVENTS * 1000,
        }
    finally:
        processes.stop(workers)
        with contextlib.suppress(Exception):
            client.delete(
                *(f"{counts}{a}{b}" for a in ("warm:", "run:") for b in ("", ":end", ":first"))
            )
        client.close()
        app.close()
        delete_queues(broker, queue_prefix)


@pytest.fixture(scope="module")
def celery_ready() -> None:
    reason = worker_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def store_server(celery_ready: None) -> Iterator[RedisServer]:
    """The shared store (database 0) and the Redis broker (database 1)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        missing_service(f"{REDIS_SERVER} is not installed")
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


def broker_url(name: str, store_server: RedisServer) -> str:
    """The broker's URL (RabbitMQ: the machine's; skipped, or failed under
    FLOWLANG_REQUIRE_SERVICES=1, when it does not listen)."""
    if name == "redis":
        return f"redis://127.0.0.1:{store_server.port}/1"
    try:
        socket.create_connection(("127.0.0.1", RABBITMQ_PORT), timeout=2).close()
    except OSError:
        missing_service(f"RabbitMQ does not listen on 127.0.0.1:{RABBITMQ_PORT}")
    return RABBITMQ_URL


def _local_rate(scene: Scene, concurrency: int) -> float:
    if concurrency not in scene.local:
        scene.local[concurrency] = asyncio.run(measure_local(scene, concurrency))["local"][0]
    return scene.local[concurrency]


@pytest.mark.parametrize("broker", BROKERS)
def test_celery_workers_throughput(
    benchmark: Any, scene: Scene, store_server: RedisServer, broker: str
) -> None:
    url = broker_url(broker, store_server)
    processes = Processes(scene.folder)
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    floors: dict[int, dict[str, dict[str, Any]]] = {}

    def measure_all() -> None:
        rows.clear()
        floors.clear()
        for concurrency in CELERY_CONCURRENCY:
            one = celery_rate(scene, processes, url, store_server.url, 1, concurrency)
            two = celery_rate(scene, processes, url, store_server.url, 2, concurrency)
            rows.append((concurrency, one, two))
            floors[concurrency] = {
                label: celery_floor(
                    scene, processes, url, store_server.url, concurrency, task, backlog=backlog
                )
                for label, task, backlog in FLOOR_VARIANTS
            }

    try:
        benchmark.group = "automations throughput: celery"
        benchmark.pedantic(measure_all, rounds=1, iterations=1)
    finally:
        processes.close()
    print(
        f"\n\nCelery workers on {broker}: deliveries per second of {EVENTS:,} events, from the "
        "first request to the last new key at the receiver (end to end: from the publisher's "
        "start); targets: one worker >= 0.5 x local, two workers >= 1.6 x one; worker CPU: "
        f"all workers' CPU over the pass per delivery; load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| broker | at once (per worker) | local | 1 worker | / local | 2 workers | / 1 worker "
        "| end to end 1 / 2 | repeats 1 / 2 | worker CPU ms per delivery 1 / 2 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, one, two in rows:
        local = _local_rate(scene, concurrency)
        print(
            f"| {broker} | {concurrency} | {local:,.0f} | {one['per_second']:,.0f} | "
            f"{one['per_second'] / local:.2f} | {two['per_second']:,.0f} | "
            f"{two['per_second'] / one['per_second']:.2f} | "
            f"{one['end_to_end']:,.0f} / {two['end_to_end']:,.0f} | "
            f"{one['repeats']} / {two['repeats']} | "
            f"{one['cpu_ms']:.2f} / {two['cpu_ms']:.2f} |"
        )
    _print_floor(broker, rows, floors)
    benchmark.extra_info.update(
        {str(c): {"one": one, "two": two, "floor": floors.get(c, {})} for c, one, two in rows}
    )


def _print_floor(
    broker: str,
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]],
    floors: dict[int, dict[str, dict[str, Any]]],
) -> None:
    """The Celery floor's table: one flowlang worker against Celery running no-op tasks (and
    tasks making one HTTPS POST) with the same app, pool and concurrency."""
    if not any(floors.values()):
        return
    print(
        f"\nCelery floor on {broker}: one worker process with flowlang's Celery app and worker "
        f"options (threads pool, acks late, prefetch 1, JSON), {EVENTS:,} tasks published by "
        f"{FLOOR_PUBLISHERS} threads of the benchmark's process, every task checked run once. "
        "no-op = one Redis round trip (the count); + POST = one HTTPS POST to the receiver "
        "(sync httpx client per thread). Tasks/s from the first publish to the last task "
        "done; backlog: all published before the worker starts, from the first task done to "
        "the last. CPU ms = the worker's CPU per task (flowlang: per delivery, 1 worker); "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| broker | at once | floor | floor tasks/s | flowlang 1 worker | flowlang / floor "
        "| publishes/s | floor CPU ms per task | flowlang CPU ms per delivery |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for concurrency, one, _ in rows:
        rate = one["per_second"]
        for label, found in floors.get(concurrency, {}).items():
            print(
                f"| {broker} | {concurrency} | {label} | {found['per_second']:,.0f} | "
                f"{rate:,.0f} | {rate / found['per_second']:.2f} | "
                f"{found['publish_per_second']:,.0f} | {found['cpu_ms']:.2f} | "
                f"{one['cpu_ms']:.2f} |"
            )


@pytest.mark.parametrize("broker", BROKERS)
def test_killed_worker_task_delivered(
    benchmark: Any, scene: Scene, store_server: RedisServer, broker: str
) -> None:
    url = broker_url(broker, store_server)
    processes = Processes(scene.folder)
    found: dict[str, Any] = {}

    def measure() -> None:
        found.clear()
        found.update(killed_worker_delivery(scene, processes, url, store_server.url))

    try:
        benchmark.group = "automations: killed worker"
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        processes.close()
    seconds = found["seconds"]
    shown = f"{seconds:.1f}" if seconds is not None else f"not within {REDELIVERY_TIMEOUT:.0f}"
    print(
        "\n\nA worker (concurrency 1) SIGKILLed by group while the receiver holds its request, "
        "a new one started at once\n"
    )
    print("| broker | kill -> delivered again (s) | requests with that key | dead letters |")
    print("|---|---:|---:|---:|")
    print(f"| {broker} | {shown} | {found['requests']} | {found['dead_letters']} |")
    benchmark.extra_info.update(found)
