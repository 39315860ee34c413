"""flowlang worker and the Celery glue, short of the crash tests (tests/test_celery_e2e.py): the
app's settings and task names, the signal handlers, the command line's errors (bad or
unreachable broker or store: exit 2, passwords masked), publishing events at the door, a
refused message acknowledged once, a store that is down (the message is requeued, then
delivered), and SIGTERM as a warm shutdown (the attempt in progress finishes, exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signals
from celery.exceptions import Reject
from celery_support import (
    HOLD,
    Broker,
    Ledger,
    Receiver,
    event,
    muting_proxy,
    one_event,
    one_worker,
    receiver_fixture,  # noqa: F401 (the fixture receiver)
    redis_broker_on,
    start_worker,
    store_fixture,  # noqa: F401 (the fixture store)
    wait_until,
    workers,
    write_events,
    write_workflow,
)
from distributed_support import Kit
from services import RedisServer, rabbitmq, running_redis  # noqa: F401 (the fixture rabbitmq)
from support import StatusHttp, cli, one_action_automations

from flowlang.automations import Automations
from flowlang.automations.dispatch import idempotency_key
from flowlang.distributed import loop as worker_loop
from flowlang.distributed import tasks, watch
from flowlang.distributed.celery_app import (
    WorkerSettings,
    broker_kind,
    make_app,
    publish_options,
)
from flowlang.distributed.deliverer import Deliverer, Step
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.distributed.tasks import publisher, register, run_step
from flowlang.errors import SharedStoreError

PASSWORD = "hunter2-broker-secret"


@pytest.fixture
def redis_broker(redis_server: RedisServer) -> Iterator[Broker]:
    """A Redis broker (database 2 of the session's server) with a queue prefix of this test."""
    with redis_broker_on(redis_server, 2) as made:
        yield made


# --- the app ---------------------------------------------------------------------------------


def test_the_app_has_the_settings_that_lose_nothing() -> None:
    app = make_app("redis://127.0.0.1:6379/0", queue_prefix="fl-a.")
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert (conf.task_serializer, list(conf.accept_content)) == ("json", ["json"])
    assert conf.task_ignore_result and conf.result_backend is None
    assert conf.task_time_limit > conf.task_soft_time_limit > 30  # one attempt's cap
    assert conf.broker_transport_options == {
        "visibility_timeout": 300.0,
        "unacked_restore_interval": 10.0,
        "unacked_restore_throttle": 1,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 10.0,
    }
    assert [queue.name for queue in conf.task_queues] == ["fl-a.events", "fl-a.actions"]
    assert all(queue.durable and not queue.queue_arguments for queue in conf.task_queues)
    assert conf.task_routes[ACCEPT_TASK]["queue"] == "fl-a.events"
    assert conf.task_routes[DELIVER_TASK]["queue"] == "fl-a.actions"
    assert conf.task_routes[REPLAY_TASK]["queue"] == "fl-a.actions"


def test_rabbitmq_confirms_publishes_and_quorum_queues_are_a_choice() -> None:
    settings = WorkerSettings(queue_type="quorum", visibility_timeout=10, restore_interval=2)
    app = make_app("amqp://guest:guest@127.0.0.1:5672//", settings=settings)
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert publish_options(app) == {"timeout": 10.0, "confirm_timeout": 10.0}
    arguments = [queue.queue_arguments for queue in app.conf.task_queues]
    assert arguments == [{"x-queue-type": "quorum"}] * 2
    assert settings.redelivers_running_tasks  # 10 s is below the 90 s limit: said at start


def test_the_tasks_have_the_names_flower_shows() -> None:
    app = make_app("redis://127.0.0.1:6379/0")
    tasks = register(app, "flowlang.")
    assert set(tasks) == {"flowlang.accept", "flowlang.deliver", "flowlang.replay"}
    assert {name for name in app.tasks if name.startswith("flowlang.")} == set(tasks)


@pytest.mark.parametrize(
    "url",
    ["foo://host", f"http://user:{PASSWORD}@host/", PASSWORD, ""],
    ids=["scheme", "http", "bare-secret", "empty"],
)
def test_a_broker_url_of_another_kind_is_refused_masked(url: str) -> None:
    with pytest.raises(ValueError, match="a broker URL starts with") as caught:
        broker_kind(url)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility_timeout", 0),
        ("restore_interval", -1),
        ("soft_time_limit", float("nan")),
        ("queue_type", "stream"),
        ("restore_throttle", 0),
    ],
)
def test_worker_settings_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        WorkerSettings(**{field: value})  # type: ignore[arg-type]


def test_the_loop_is_started_by_module_level_handlers() -> None:
    """Celery holds receivers weakly: only module-level functions stay connected."""
    assert worker_loop.on_worker_init in signals.worker_init._live_receivers(None)
    assert worker_loop.on_worker_process_init in signals.worker_process_init._live_receivers(None)
    assert worker_loop.on_worker_shutdown in signals.worker_shutdown._live_receivers(None)
    with pytest.raises(RuntimeError, match="no flowlang worker loop"):
        worker_loop.current()


# --- the command line --------------------------------------------------------------------------


WORKFLOW = """
workflow: notify
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "https://crm.test/hook"}
"""


def _workflow(tmp: Path) -> str:
    path = tmp / "wf.yaml"
    path.write_text(WORKFLOW)
    return str(path)


def _closed_port() -> int:
    from services import free_port

    return free_port()


def test_worker_refuses_a_bad_broker_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = cli(
        "worker", _workflow(tmp_path), "--broker", f"http://u:{PASSWORD}@h/", "--store",
        "redis://127.0.0.1:6379/0",
    )  # fmt: skip
    error = capsys.readouterr().err
    assert status == 2 and "--broker: a broker URL starts with" in error
    assert PASSWORD not in error


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_worker_says_an_unreachable_broker_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    port = _closed_port()
    url = (
        f"amqp://guest:{PASSWORD}@127.0.0.1:{port}//"
        if kind == "amqp"
        else f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    )
    began = time.monotonic()
    status, _ = cli("worker", _workflow(tmp_path), "--broker", url, "--store", "redis://x:1/0")
    error = capsys.readouterr().err
    assert status == 2 and "cannot reach the broker at" in error, error
    assert PASSWORD not in error and "***" in error
    assert time.monotonic() - began < 15


def test_worker_says_an_unreachable_store_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_broker: Broker
) -> None:
    store = f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"
    status, _ = cli("worker", _workflow(tmp_path), "--broker", redis_broker.url, "--store", store)
    error = capsys.readouterr().err
    assert status == 2 and "cannot reach the store at redis://:***@" in error, error
    assert PASSWORD not in error


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--store", "memory"], "--store: a Redis URL starts with"),
        (["--store", "redis://h/0", "--prefix", "bad prefix"], "--store: prefix must be"),
        (["--store", "redis://h/0", "--queue-prefix", "a/b"], "--queue-prefix: a queue prefix"),
    ],
)
def test_worker_refuses_bad_store_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    status, _ = cli("worker", _workflow(tmp_path), "--broker", "redis://h:1/0", *extra)
    assert status == 2
    assert message in capsys.readouterr().err


def test_worker_refuses_workflows_with_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: broken\n")
    status, _ = cli("worker", str(bad), "--broker", "redis://h:1/0", "--store", "redis://h:1/0")
    assert status == 2 and "the workflows have errors" in capsys.readouterr().err


def test_automate_publishes_each_event_checked_at_the_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_broker: Broker
) -> None:
    events = tmp_path / "events.jsonl"
    deep: object = "bottom"
    for _ in range(100):
        deep = [deep]
    lines = [
        json.dumps(event(1)),
        "not json",
        json.dumps({"type": "call.ended"}),  # no id
        json.dumps(event(2) | {"properties": {"deep": deep}}),
        json.dumps(event(3)),
    ]
    events.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    status, out = cli(
        "automate", _workflow(tmp_path), "--events", str(events), "--executor", "celery",
        "--broker", redis_broker.url,
        "--queue-prefix", redis_broker.queue_prefix, "--json",
    )  # fmt: skip
    error = capsys.readouterr().err
    assert status == 2, error
    assert json.loads(out) == {"kind": "summary", "published": 2, "refused": 4, "failed": 0}
    assert f"{events}:2" in error and f"{events}:6" in error
    client = redis.Redis.from_url(redis_broker.url)
    queued = [json.loads(raw) for raw in client.lrange(f"{redis_broker.queue_prefix}events", 0, -1)]
    client.close()
    assert sorted(message["headers"]["task"] for message in queued) == [ACCEPT_TASK] * 2


def test_automate_without_a_broker_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path / "events.jsonl", [event(1)])
    status, _ = cli(
        "automate", _workflow(tmp_path), "--events", str(events), "--executor", "celery",
    )  # fmt: skip
    assert status == 2 and "give the broker" in capsys.readouterr().err


def test_replay_of_an_unreachable_store_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"
    status, _ = cli("replay", url)
    error = capsys.readouterr().err
    assert status == 2 and "cannot reach the store" in error and PASSWORD not in error


# --- workers -------------------------------------------------------------------------------


def test_a_refused_message_is_acknowledged_once_and_logged(
    tmp_path: Path, redis_broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow = write_workflow(tmp_path, receiver)
    app = make_app(redis_broker.url, queue_prefix=redis_broker.queue_prefix)
    with one_worker(tmp_path, [flow], redis_broker, url, prefix) as worker:
        app.send_task(DELIVER_TASK, kwargs={"v": 1, "event": "not an event"})
        app.send_task(ACCEPT_TASK, args=["positional"])
        app.send_task(ACCEPT_TASK, kwargs={"v": 2, "secret": PASSWORD})
        refused = "refused (acknowledged, not retried)"
        wait_until(lambda: worker.text().count(refused) >= 3, 20, "not refused")
        time.sleep(1.0)  # were any redelivered, they would be refused again meanwhile
        text = worker.text()
    assert text.count(refused) == 3, text
    assert PASSWORD not in text and "Traceback" not in text
    client = redis.Redis.from_url(redis_broker.url)
    queues = [f"{redis_broker.queue_prefix}{name}" for name in ("events", "actions")]
    assert [client.llen(name) for name in queues] == [0, 0]
    assert client.hlen("unacked") == 0
    client.close()
    assert ledger.settled() == {}


def test_a_store_that_is_down_requeues_the_message_until_it_is_back(
    tmp_path: Path, redis_broker: Broker, receiver: Receiver
) -> None:
    flow = write_workflow(tmp_path, receiver)
    item = event(7)
    events = write_events(tmp_path / "events.jsonl", [item])
    with running_redis() as own, workers() as started:
        prefix = "fltdown:"
        worker = start_worker(tmp_path, [flow], redis_broker, own.url, prefix)
        started.append(worker)
        own.kill()
        status, _ = cli(
            "automate", str(flow), "--events", str(events), "--executor", "celery",
            "--broker", redis_broker.url,
            "--queue-prefix", redis_broker.queue_prefix,
        )  # fmt: skip
        assert status == 0
        wait_until(lambda: "requeued" in worker.text(), 20, "no requeue")
        own.start()
        ledger = Ledger(own.url, prefix)
        wait_until(
            lambda: len(ledger.settled()) == 2,
            30,
            f"not delivered after the store came back:\n{worker.text()[-2000:]}",
        )
        ledger.clear()
    keys = [idempotency_key(item["id"], "notify", name) for name in ("first", "second")]
    assert receiver.keys() == dict.fromkeys(keys, 1)


def test_sigterm_is_a_warm_shutdown_the_attempt_in_progress_finishes(
    tmp_path: Path, redis_broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow, events, first, _ = one_event(tmp_path, receiver, 8, HOLD)
    with one_worker(tmp_path, [flow], redis_broker, url, prefix) as worker:
        status, _ = cli(
            "automate", str(flow), "--events", str(events), "--executor", "celery",
            "--broker", redis_broker.url,
            "--queue-prefix", redis_broker.queue_prefix,
        )  # fmt: skip
        assert status == 0
        wait_until(receiver.held.is_set, 20, "the request never arrived")
        worker.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.process.poll() is None  # waiting for the attempt in progress
        receiver.release()
        assert worker.process.wait(30) == 0, worker.text()
    assert ledger.settled().get(first) == "delivered"
    assert receiver.count(first) == 1


def test_a_dead_letter_of_a_workflow_version_not_loaded_is_replayed_from_its_own_text(
    tmp_path: Path, redis_broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 9, (400, {}))
    app = make_app(redis_broker.url, queue_prefix=redis_broker.queue_prefix)
    with one_worker(tmp_path, [flow], redis_broker, url, prefix) as worker:
        assert cli(
            "automate", str(flow), "--events", str(events), "--executor", "celery",
            "--broker", redis_broker.url,
            "--queue-prefix", redis_broker.queue_prefix,
        )[0] == 0  # fmt: skip
        wait_until(lambda: len(ledger.dead()) == 1, 30, "no dead letter")
        [record] = ledger.dead()
        ledger.client.delete(f"{prefix}dead")
        # an older version of the workflow: not loaded by this worker, replayed from its text
        app.send_task(REPLAY_TASK, kwargs=record | {"workflow_fingerprint": "0" * 16})
        wait_until(lambda: ledger.settled().get(second) == "delivered", 30, worker.text())
    assert ledger.dead() == []
    assert receiver.keys() == {first: 2, second: 1}


def test_a_pickled_message_is_never_unpickled_and_the_worker_goes_on(
    tmp_path: Path, redis_broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow = write_workflow(tmp_path, receiver)
    app = make_app(redis_broker.url, queue_prefix=redis_broker.queue_prefix)
    marker = tmp_path / "unpickled"
    with one_worker(tmp_path, [flow], redis_broker, url, prefix) as worker:
        app.send_task(ACCEPT_TASK, args=[_Unpickle(str(marker))], serializer="pickle")
        app.send_task(ACCEPT_TASK, kwargs={"v": 1, "event": event(11), "received_at": 1.0,
                                           "source": "test"})  # fmt: skip
        wait_until(lambda: len(ledger.settled()) == 2, 30, worker.text())
        text = worker.text()
    assert not marker.exists()
    assert "pickle" in text  # Celery says it refused the content type
    assert receiver.keys() == {
        idempotency_key("evt-00011", "notify", name): 1 for name in ("first", "second")
    }


class _Unpickle:
    """Unpickling this creates a file: it must never happen in a worker."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


# --- run_step: the fan-out's first action delivered inline -------------------------------------


class _Deliverer:
    """Deliver steps by body: a Step, or an exception to raise."""

    def __init__(self, outcomes: dict[str, object]) -> None:
        self.outcomes = outcomes
        self.delivered: list[str] = []

    async def deliver(self, body: dict[str, object]) -> Step:
        name = str(body["name"])
        self.delivered.append(name)
        outcome = self.outcomes[name]
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, Step)
        return outcome


class _Runner:
    """A worker loop that runs each coroutine to its end on a loop of its own."""

    def __init__(self, deliverer: _Deliverer) -> None:
        self.deliverer = deliverer
        self.automations = None
        self.store = None

    def call(self, work: Any, timeout: float) -> Any:
        async def awaited() -> Any:
            return await work

        return asyncio.run(awaited())


def _fan_out(calls: list[str]) -> Step:
    async def confirm() -> None:
        calls.append("confirm")

    async def abandon() -> None:
        calls.append("abandon")

    publish = [(DELIVER_TASK, {"name": "one"}), (DELIVER_TASK, {"name": "two"})]
    return Step("fanned_out", publish, confirm, None, abandon)


def _run_accept(
    monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, object], *, inline: bool
) -> tuple[list[str], _Deliverer]:
    calls: list[str] = []
    deliverer = _Deliverer(outcomes)
    monkeypatch.setattr(worker_loop, "_current", _Runner(deliverer))

    async def work(_: Any) -> Step:
        return _fan_out(calls)

    def publish(task: str, body: dict[str, Any]) -> None:
        calls.append(f"publish {task} {body['name']}")

    assert run_step(ACCEPT_TASK, work, publish, inline=inline) == "fanned_out"
    return calls, deliverer


def test_an_accept_delivers_its_first_action_inline_before_it_is_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes: dict[str, object] = {"one": Step("delivered", [(DELIVER_TASK, {"name": "next"})])}
    calls, deliverer = _run_accept(monkeypatch, outcomes, inline=True)
    assert deliverer.delivered == ["one"]
    assert calls == [
        f"publish {DELIVER_TASK} two",
        f"publish {DELIVER_TASK} next",  # what the inline delivery publishes, before the ack
        "confirm",
    ]


def test_an_inline_delivery_that_fails_is_published_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes: dict[str, object] = {"one": SharedStoreError("the store is down")}
    calls, _ = _run_accept(monkeypatch, outcomes, inline=True)
    assert calls == [f"publish {DELIVER_TASK} two", f"publish {DELIVER_TASK} one", "confirm"]


def test_without_inline_every_fan_out_message_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, deliverer = _run_accept(monkeypatch, {}, inline=False)
    assert deliverer.delivered == []
    assert calls == [f"publish {DELIVER_TASK} one", f"publish {DELIVER_TASK} two", "confirm"]


def test_task_events_are_off_unless_asked_for() -> None:
    assert not make_app("redis://127.0.0.1:6379/0").conf.worker_send_task_events
    app = make_app("redis://127.0.0.1:6379/0", settings=WorkerSettings(task_events=True))
    assert app.conf.worker_send_task_events and app.conf.task_send_sent_event


# --- defects of issue 13 found by the red-team review, fixed ------------------------------------


def test_a_task_without_a_running_loop_requeues_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery swallows a worker_init / worker_process_init handler's exception, so a worker
    whose loop did not start keeps consuming: its tasks reject their messages with requeue,
    and a task that raises anyway is not acknowledged (task_acks_on_failure_or_timeout off)."""
    app = make_app("redis://127.0.0.1:1/0")
    assert app.conf.task_acks_late and not app.conf.task_acks_on_failure_or_timeout
    registered = register(app, "fltest-redteam")
    monkeypatch.setattr(worker_loop, "_current", None)
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE", 0.0)
    with pytest.raises(Reject) as raised:
        registered[ACCEPT_TASK].run(v=1, event={"id": "evt-1", "type": "call.ended"})
    assert raised.value.requeue


class _ThreadLoop:
    """A loop on its own thread with WorkerLoop.call (a timeout cancels the coroutine)."""

    call = worker_loop.WorkerLoop.call

    def __init__(self, deliverer: Any) -> None:
        self.deliverer = deliverer
        self.automations = None
        self.store = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        time.sleep(0.1)  # let a cancelled coroutine end
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _SlowReceiver:
    """Deliver: the request reaches the receiver at once, its answer takes ``answer`` s."""

    def __init__(self, answer: float) -> None:
        self.answer = answer
        self.received: list[str] = []

    async def deliver(self, body: dict[str, Any]) -> Step:
        self.received.append(str(body["name"]))
        await asyncio.sleep(self.answer)
        return Step("delivered")


@pytest.mark.parametrize(("accept_takes", "inlined"), [(2.0, False), (0.0, True)])
def test_an_inline_delivery_starts_only_with_an_attempts_whole_time_left(
    monkeypatch: pytest.MonkeyPatch, accept_takes: float, inlined: bool
) -> None:
    """Scaled down: a task budget (BRIDGE_TIMEOUT) of 3.6 s, an attempt cap of 2.5 s (the
    timeout_cap; 30 s in production against 50 s) and a margin (INLINE_MINIMUM) of 0.5 s.
    An accept that took 2 s leaves too little for a whole attempt: its first action is
    published, not started inline and cut short mid-request (then sent twice). A quick one
    delivers it inline, the request ends within the budget, and nothing is published."""
    monkeypatch.setattr(tasks, "BRIDGE_TIMEOUT", 3.6)
    monkeypatch.setattr(tasks, "INLINE_MINIMUM", 0.5)
    monkeypatch.setattr(tasks, "_attempt_cap", lambda runner: 2.5)
    receiver = _SlowReceiver(answer=2.0)
    runner = _ThreadLoop(receiver)
    monkeypatch.setattr(worker_loop, "_current", runner)
    published: list[str] = []

    async def accept(_: Any) -> Step:
        await asyncio.sleep(accept_takes)  # a slow shared store during the claim
        return Step("fanned_out", [(DELIVER_TASK, {"name": "one"})])

    def publish(task: str, body: dict[str, Any]) -> None:
        published.append(str(body["name"]))

    try:
        started = time.monotonic()
        tasks.run_step(ACCEPT_TASK, accept, publish, inline=True)
        assert time.monotonic() - started < 10
    finally:
        runner.close()
    if inlined:
        assert (receiver.received, published) == (["one"], [])
    else:
        assert (receiver.received, published) == ([], ["one"])


class _ReplayRunner:
    """A worker loop's objects for tasks._replay: automations, a store, a deliverer."""

    def __init__(self, automations: Automations, store: Any) -> None:
        self.automations = automations
        self.store = store
        self.deliverer = Deliverer(automations, store, "redteam:1:abcd")


def test_a_handed_over_dead_letter_that_cannot_be_replayed_is_kept(kit: Kit) -> None:
    """``flowlang replay --broker`` removes each record once published; a worker that cannot
    replay it (its workflow text does not load here: another flowlang version, allow_hosts)
    puts it back in the shared dead letters before refusing (acknowledging) the message.
    A body that is not a dead letter at all is refused and not kept."""
    from flowlang.cli.worker_console import _hand_over

    async def work() -> tuple[str, int, list[dict[str, Any]], str, int]:
        failing = one_action_automations(StatusHttp(400))
        async with failing:
            await failing.dispatch({"id": "evt-rt-2", "type": "call.ended", "properties": {}})
        (record,) = failing.dead_letters.records
        record = dict(record) | {
            "workflow_fingerprint": "0" * 64,
            "workflow_source": "workflow: redteam_one\ntrigger: call.ended\nactions: 7\n",
        }
        store = kit.store()
        handed: list[dict[str, Any]] = []
        try:
            await store.add_dead(record)
            await _hand_over(
                kit.url,
                kit.prefix,
                lambda _task, body: handed.append(body),
                "redis://x",
                io.StringIO(),
            )
            assert await store.dead_count() == 0  # handed over
            worker = one_action_automations(StatusHttp(200))
            async with worker:
                runner = _ReplayRunner(worker, store)
                step = await tasks._replay(runner, handed[0])  # type: ignore[arg-type]
                left = [r for _, r in await store.dead_letters("-", 10)]
                junk = await tasks._replay(runner, {"not": "a dead letter"})  # type: ignore[arg-type]
            return step.outcome, len(left), left, junk.outcome, await store.dead_count()
        finally:
            await store.aclose()

    outcome, count, left, junk, after_junk = asyncio.run(asyncio.wait_for(work(), 20))
    assert outcome == "refused" and count == 1
    assert left[0]["workflow_fingerprint"] == "0" * 64  # the record as it was
    assert (junk, after_junk) == ("refused", 1)


@pytest.mark.parametrize("kind", ["rabbitmq", "redis"])
def test_a_publish_the_broker_never_answers_ends_in_bounded_time_and_is_requeued(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,
    kind: str,
) -> None:
    """The threads pool has no time limits and py-amqp waits for a confirm with no limit:
    a broker that takes a publish and never confirms it held the task thread for ever. Now
    each publish is bounded (publish_timeout, a few tries): it raises, and the task requeues
    the message it came from. The first publish, made before the broker fell silent, is kept
    on the broker."""
    if kind == "rabbitmq":
        rabbit = request.getfixturevalue("rabbitmq")
        upstream, queue_prefix, db = 5672, rabbit.queue_prefix, ""
    else:
        upstream, queue_prefix, db = redis_server.port, f"fltest-{os.urandom(4).hex()}.", "/3"
    with muting_proxy(upstream) as proxy:
        scheme = "amqp://guest:guest@" if kind == "rabbitmq" else "redis://"
        url = f"{scheme}127.0.0.1:{proxy.port}{'//' if kind == 'rabbitmq' else db}"
        app = make_app(url, queue_prefix=queue_prefix, settings=WorkerSettings(publish_timeout=1))
        app.conf.broker_connection_timeout = 1
        publish = publisher(app, queue_prefix)
        publish(DELIVER_TASK, {"n": 1})  # connected, queues declared, confirms on
        proxy.mute()  # from now on, nothing the broker says reaches the publisher
        monkeypatch.setattr(tasks, "REQUEUE_PAUSE", 0.0)
        monkeypatch.setattr(worker_loop, "_current", _Runner(_Deliverer({})))
        outcome: list[BaseException | str] = []

        async def work(_: Any) -> Step:
            return Step("delivered", [(DELIVER_TASK, {"n": 2})])

        def task() -> None:
            try:
                outcome.append(run_step(DELIVER_TASK, work, publish))
            except BaseException as error:
                outcome.append(error)

        began = time.monotonic()
        thread = threading.Thread(target=task, daemon=True)
        thread.start()
        thread.join(60)
        took = time.monotonic() - began
        assert not thread.is_alive(), "the publish still waits for the broker after 60 s"
    [raised] = outcome
    assert isinstance(raised, Reject) and raised.requeue, raised
    assert took < 45
    url_direct = url.replace(f":{proxy.port}", f":{upstream}")
    kept = _queued(url_direct, f"{queue_prefix}actions", kind)
    assert kept >= 1  # the first publish (the second may be there too: harmless, a copy)


def _queued(url: str, queue: str, kind: str) -> int:
    """How many messages ``queue`` holds on the broker at ``url``; the queue is emptied."""
    if kind == "redis":
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            return int(client.llen(queue))
        finally:
            client.delete(queue)
            client.close()
    from kombu import Connection

    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        _, count, _ = channel.queue_declare(queue, passive=True)
        return int(count)


# --- flowlang worker --metrics-port: the endpoint's hostile inputs -------------------------------


def _metrics_arguments(port: int, host: str = "127.0.0.1") -> Any:
    import argparse

    return argparse.Namespace(metrics_port=port, metrics_host=host, pool="threads")


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("h" * 300, "not a host name or address"),
        ("bad\x00host", "cannot serve metrics on"),
        ("caf\udcff.example", "cannot serve metrics on"),  # not UTF-8 on the command line
        ("203.0.113.7", "cannot serve metrics on"),  # an address of another machine
    ],
    ids=["huge", "nul", "non-utf8", "not-here"],
)
def test_a_metrics_host_that_cannot_be_served_is_a_usage_error(host: str, said: str) -> None:
    from flowlang.cli.inputs import UsageError
    from flowlang.cli.worker_console import _start_metrics

    with pytest.raises(UsageError, match=said) as caught:
        _start_metrics(_metrics_arguments(0, host))
    assert "\x00" not in str(caught.value) and "\udcff" not in str(caught.value)
    assert watch.installed() is None


def test_a_metrics_port_in_use_is_a_usage_error() -> None:
    from flowlang.cli.inputs import UsageError
    from flowlang.cli.worker_console import _start_metrics

    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(UsageError, match="in use"):
            _start_metrics(_metrics_arguments(taken.getsockname()[1]))
    finally:
        taken.close()


def test_the_metrics_endpoint_survives_garbage_and_counts_only_fixed_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Garbage, a huge request line and a filter query do not stop the endpoint; values
    outside the fixed sets (an event id as an outcome, say) are counted as ``other``."""
    from flowlang.cli.worker_console import _start_metrics

    metrics = _start_metrics(_metrics_arguments(0))
    try:
        port = metrics.server.server_address[1]
        assert f"metrics on http://127.0.0.1:{port}/metrics" in capsys.readouterr().err
        watch.task(DELIVER_TASK, "evt-secret-123")
        watch.task("not.a.task", "delivered")
        watch.attempt("delivered", float("nan"))
        watch.attempt("https://crm.example.com/x", -5.0)
        watch.pump_published("due")
        for garbage in (
            b"\xff\xfe\x00garbage\r\n\r\n",
            b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(garbage)
                raw.settimeout(5)
                with contextlib.suppress(OSError):
                    raw.recv(1024)
        url = f"http://127.0.0.1:{port}/metrics?name[]=flowlang_worker_attempts_total"
        with urllib.request.urlopen(url, timeout=5) as answer:
            filtered = answer.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            page = answer.read().decode()
    finally:
        metrics.close()
    assert watch.installed() is None
    assert 'flowlang_worker_attempts_total{outcome="delivered"} 1.0' in filtered
    assert "flowlang_worker_steps" not in filtered
    assert 'flowlang_worker_steps_total{outcome="other",task="deliver"} 1.0' in page
    assert 'flowlang_worker_steps_total{outcome="delivered",task="other"} 1.0' in page
    assert 'flowlang_worker_attempts_total{outcome="other"} 1.0' in page
    assert 'flowlang_worker_pump_published_total{kind="due"} 1.0' in page
    assert "evt-secret" not in page and "crm.example" not in page


@pytest.mark.parametrize("port", ["65536", "-1", "abc", "9" * 50, "١٢٣"])
def test_a_metrics_port_that_is_not_a_port_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    try:
        status, _ = cli(
            "worker", _workflow(tmp_path), "--broker", "redis://h:1/0", "--store",
            "redis://h:1/0", "--metrics-port", port,
        )  # fmt: skip
    except SystemExit as stop:
        status = int(stop.code or 0)
    error = capsys.readouterr().err
    assert status == 2 and "--metrics-port" in error and "a whole number from 0 to 65535" in error
    assert "Traceback" not in error


# --- the soft time limit landing in the requeue pause ----------------------------------------


class _LoopOfItsOwn:
    """A worker loop running each coroutine on a loop of its own."""

    deliverer = None
    automations = None
    store = None

    def call(self, work: Any, timeout: float) -> Any:
        return asyncio.run(asyncio.wait_for(work, timeout))


def test_a_soft_time_limit_in_the_requeue_pause_still_requeues_the_message(
    monkeypatch: Any,
) -> None:
    """Issue 13 red team (lost message, prefork). With task_acks_on_failure_or_timeout=False, Celery
    does not leave a raising task's message unacknowledged: Request.on_failure calls
    ``reject(requeue=False)`` (celery/worker/request.py, "need to be removed from prefetched
    local queue"): the message is dropped, on Redis and RabbitMQ alike. Only a Reject with
    requeue keeps it. run_step turns its own failures into Reject(requeue=True), but
    _requeue sleeps REQUEUE_PAUSE (1 s) before returning the Reject (tasks.py:83), outside
    any handler: the prefork pool's soft time limit (60 s, billiard raises
    SoftTimeLimitExceeded from a signal handler) landing in that second escapes as a plain
    exception, and the message is lost. E.g. a deliver whose attempt took 9.5 s and whose
    confirmation then stalls for BRIDGE_TIMEOUT (50 s) fails at 59.5 s: the soft limit fires
    in the pause. Reproduced here with the same signal mechanism, scaled down (the limit
    0.3 s after a work that fails at once). Invariant: whatever happens inside run_step,
    its message ends acknowledged-as-done or rejected with requeue."""
    from celery.exceptions import SoftTimeLimitExceeded

    monkeypatch.setattr(worker_loop, "_current", _LoopOfItsOwn())

    async def work(_: Any) -> Any:
        raise ConnectionError("the shared store stalled")

    def soft_limit(signum: int, frame: Any) -> None:  # billiard's soft_timeout_sighandler
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(BaseException) as raised:
            tasks.run_step("flowlang.deliver", work, lambda task, body: None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert isinstance(raised.value, Reject) and raised.value.requeue, repr(raised.value)


def test_a_task_that_raises_leaves_its_message_on_the_broker(redis_server: RedisServer) -> None:
    """The premise of the test above (fixed by RequeueingTask, the app's task class), on a real worker and Redis broker: the app's
    docstring says task_acks_on_failure_or_timeout=False means "a task that raises is never
    acknowledged" (celery_app.py:9); Celery instead rejects it without requeue, which removes
    it from the queue and from the unacked set: the message is gone. Invariant (the one the
    docstring states): a task of this app that raises leaves its message to be redelivered."""
    from celery.contrib.testing.worker import start_worker as celery_worker

    queue_prefix = f"flrt{os.getpid()}x."
    url = f"{redis_server.url[:-2]}/8"
    app = make_app(url, queue_prefix=queue_prefix)
    ran: list[int] = []

    @app.task(name="flowlang.deliver", ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def deliver(**_: Any) -> None:
        ran.append(1)
        raise RuntimeError("an exception run_step did not turn into a Reject")

    client = redis.Redis.from_url(url)
    try:
        with celery_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
            app.send_task("flowlang.deliver", kwargs={"n": 1}, queue=f"{queue_prefix}actions")
            deadline = time.monotonic() + 20
            while not ran and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        left = client.llen(f"{queue_prefix}actions") + client.hlen("unacked")
    finally:
        client.delete(f"{queue_prefix}actions")
        client.close()
    assert ran, "the task never ran"
    assert left >= 1, "the message of a task that raised is gone from the broker (lost)"


def test_the_shutdown_watchdog_waits_for_the_tasks_then_ends_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13 red team (SIGTERM on a silent broker never ended; finding 6): the watchdog
    started at worker_shutting_down ends the process only once no task has run for the whole
    grace (a task running resets it), and not before."""
    running = [2]
    ended: list[float] = []
    monkeypatch.setattr(worker_loop, "WATCH_INTERVAL", 0.01)
    monkeypatch.setattr(worker_loop, "_tasks_running", lambda: running[0])
    began = time.monotonic()

    def finish_tasks() -> None:
        time.sleep(0.3)
        running[0] = 0

    helper = threading.Thread(target=finish_tasks, daemon=True)
    helper.start()
    watcher = threading.Thread(
        target=worker_loop._watch_shutdown,
        args=(0.3,),
        kwargs={"end": lambda: ended.append(time.monotonic() - began)},
        daemon=True,
    )
    watcher.start()
    watcher.join(10)
    helper.join(10)
    assert not watcher.is_alive()
    assert len(ended) == 1 and 0.55 <= ended[0] < 5, ended


def test_the_shutdown_watchdog_starts_once_and_only_for_a_flowlang_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No configured loop (a plain Celery worker in this process): no watchdog; configured:
    one, however many times the signal comes."""
    started: list[float] = []
    monkeypatch.setattr(worker_loop, "_watch_shutdown", lambda grace: started.append(grace))
    monkeypatch.setattr(worker_loop, "_watchdog", None)
    monkeypatch.setattr(worker_loop, "_config", None)
    worker_loop.on_worker_shutting_down()
    assert started == []
    monkeypatch.setattr(worker_loop, "_config", object())
    worker_loop.on_worker_shutting_down()
    worker_loop.on_worker_shutting_down()
    watchdog = worker_loop._watchdog
    assert watchdog is not None
    watchdog.join(5)
    assert started == [worker_loop.SHUTDOWN_GRACE]


def test_the_apps_tasks_turn_what_they_raise_into_a_requeue_and_leave_celerys_own_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RequeueingTask (finding 2's net): an exception, SoftTimeLimitExceeded or SystemExit
    leaving a task of the app is Reject(requeue=True); Celery's own Reject, Ignore and Retry
    pass unchanged; a task that returns returns."""
    from celery.exceptions import Ignore, SoftTimeLimitExceeded

    from flowlang.distributed import celery_app

    monkeypatch.setattr(celery_app, "REQUEUE_PAUSE", 0.0)
    app = make_app("redis://127.0.0.1:1/0", queue_prefix="fltest-requeueing.")
    raised: list[BaseException] = [
        ValueError("x"),
        SoftTimeLimitExceeded(),
        SystemExit(3),
        Ignore(),
        Reject("kept as is", requeue=False),
    ]

    @app.task(name="fltest.raising", shared=False)  # type: ignore[untyped-decorator]
    def raising(number: int) -> int:
        if number < len(raised):
            raise raised[number]
        return number

    outcomes: list[str] = []
    for number in range(len(raised)):
        try:
            raising(number)
        except Reject as rejected:
            outcomes.append(f"Reject requeue={rejected.requeue}")
        except Ignore:
            outcomes.append("Ignore")
    assert outcomes == [
        "Reject requeue=True",
        "Reject requeue=True",
        "Reject requeue=True",
        "Ignore",
        "Reject requeue=False",
    ]
    assert raising(len(raised)) == len(raised)


def test_a_message_that_always_fails_is_not_tried_for_ever(redis_server: RedisServer) -> None:
    """Red team round 2, R2-1: RequeueingTask (celery_app.py) turns whatever a task raises into
    Reject(requeue=True) after a 1 s pause, with no count of tries, no delivery limit and no
    dead letter: a message whose task fails every time is taken again about once a second for
    as long as the worker runs, holding a pool slot each time, and is never set aside where an
    operator would see it (flowlang's dead letters are only written by the Deliverer).
    Invariant: a message that fails on every try is set aside (dead-lettered, or at least
    off its queue) after a bounded number of tries (MAX_TRIES, 5): now counted per message
    (its task id) and set aside in ``{prefix}bad`` (here no worker loop: logged, dropped)."""
    from celery.contrib.testing.worker import start_worker as celery_worker

    queue_prefix = f"flrt2{os.getpid()}x."
    url = f"{redis_server.url[:-2]}/9"
    app = make_app(url, queue_prefix=queue_prefix)
    runs: list[float] = []

    @app.task(name="flowlang.deliver", ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def deliver(**_: Any) -> None:
        runs.append(time.monotonic())
        raise RuntimeError("this message fails every time (a poison message)")

    client = redis.Redis.from_url(url)
    try:
        with celery_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
            app.send_task("flowlang.deliver", kwargs={"n": 1}, queue=f"{queue_prefix}actions")
            deadline = time.monotonic() + 12
            while len(runs) <= 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        left = client.llen(f"{queue_prefix}actions") + client.hlen("unacked")
    finally:
        client.delete(f"{queue_prefix}actions")
        client.close()
    assert runs, "the task never ran"
    assert len(runs) <= 5, (
        f"a message that always fails was tried {len(runs)} times in "
        f"{runs[-1] - runs[0]:.1f} s and is still on the broker ({left} left): it is "
        "requeued for ever, never dead-lettered"
    )


@pytest.mark.parametrize(
    "body", [{"n": 1}, {"odd": float("nan")}, {"x": "\udcff" * 10}, {"deep": [[[[]]]] * 3}]
)
def test_a_message_set_aside_is_kept_as_json_in_the_bad_list(kit: Kit, body: Any) -> None:
    """SharedStore.set_aside (RequeueingTask's MAX_TRIES): the task, its body (its repr when
    JSON cannot hold it) and the reason, appended to ``{prefix}bad`` as JSON."""

    async def work() -> int:
        store = kit.store()
        try:
            await store.set_aside("flowlang.deliver", body, "raised RuntimeError on each of 5")
            return await store.bad_count()
        finally:
            await store.aclose()

    assert asyncio.run(asyncio.wait_for(work(), 20)) == 1
    (raw,) = kit.raw.lrange(f"{kit.prefix}bad", 0, -1)
    kept = json.loads(raw)
    assert kept["task"] == "flowlang.deliver" and kept["reason"].startswith("raised")
