"""flowlang worker and the Celery glue, short of the crash tests (tests/test_celery_e2e.py): the
app's settings and task names, the signal handlers, the command line's errors (bad or
unreachable broker or store: exit 2, passwords masked), publishing events at the door, a
refused message acknowledged once, a store that is down (the message is requeued, then
delivered), and SIGTERM as a warm shutdown (the attempt in progress finishes, exit 0)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signals
from celery_support import (
    HOLD,
    Broker,
    Ledger,
    Receiver,
    event,
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
from services import RedisServer, running_redis
from support import cli

from flowlang.automations.dispatch import idempotency_key
from flowlang.distributed import loop as worker_loop
from flowlang.distributed.celery_app import WorkerSettings, broker_kind, make_app
from flowlang.distributed.deliverer import Step
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.distributed.tasks import register, run_step
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
