"""Celery workers end to end (issue 13), on Redis and on RabbitMQ: real brokers, real worker
processes (``flowlang worker``, each in its own process group, killed by group), a loopback
receiver counting requests by Idempotency-Key, and the shared store read back from Redis.

Each crash test prints a line ``crash-stats`` (run with ``pytest -s`` to see them): events,
deliveries expected, delivered, repeats (requests beyond the first with a key), lost, and the
seconds from the kill to the redelivered message (message_back_after) and to the request sent
again (resent_after, which waits for the dead attempt's lease: 4 s here).
FLOWLANG_SHOW_WORKER_LOGS=1 prints the workers' logs of each crash test.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from celery_support import (
    HOLD,
    Broker,
    Ledger,
    Receiver,
    Worker,
    event,
    keys_of,
    muting_proxy,
    one_event,
    publish,
    receiver_fixture,  # noqa: F401 (the fixture receiver)
    redis_broker_on,
    start_worker,
    store_fixture,  # noqa: F401 (the fixture store)
    wait_until,
    worker_command,
    workers,
    write_events,
    write_workflow,
)
from services import RabbitMQ, RedisServer, rabbitmq  # noqa: F401
from support import clean_env, cli

#: Redis broker options of the crash tests: a dead worker's task comes back after 10 s.
REDIS_FAST = ("--visibility-timeout", "10", "--restore-interval", "2")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Broker]:
    """Each broker with a queue prefix of this test (its queues removed afterwards)."""
    if request.param == "rabbitmq":
        rabbit = request.getfixturevalue("rabbitmq")
        yield Broker("rabbitmq", rabbit.url, rabbit.queue_prefix)
        return
    with redis_broker_on(redis_server, 1) as made:
        yield made


def _stats(name: str, broker: Broker, **figures: object) -> None:
    shown = ", ".join(f"{key} {value}" for key, value in figures.items())
    print(f"\ncrash-stats {name} [{broker.kind}]: {shown}")


def _fast(broker: Broker) -> tuple[str, ...]:
    return REDIS_FAST if broker.kind == "redis" else ()


def _published(result: subprocess.CompletedProcess[str], count: int) -> None:
    assert result.returncode == 0, result.stderr
    assert f"published {count} events" in result.stdout, result.stdout


def test_200_events_with_duplicates_through_two_workers(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow = write_workflow(tmp_path, receiver)
    rng = random.Random(13)
    unique = [event(number) for number in range(180)]
    lines = unique + [rng.choice(unique) for _ in range(20)]
    rng.shuffle(lines)
    events = write_events(tmp_path / "events.jsonl", lines)
    expected = {key for item in unique for key in keys_of(item["id"])}
    with workers() as started:
        for name in ("one", "two"):
            started.append(
                start_worker(tmp_path, [flow], broker, url, prefix, "--concurrency", "8", name=name)
            )
        began = time.monotonic()
        _published(publish(events, broker, [flow]), 200)
        wait_until(lambda: len(ledger.settled()) >= len(expected), 60, "not every action settled")
        took = time.monotonic() - began
    settled = ledger.settled()
    seen = receiver.keys()
    assert set(settled) == expected
    assert set(settled.values()) == {"delivered"}
    assert set(seen) == expected  # every key reached the receiver, and no other key
    repeats = sum(count - 1 for count in seen.values())
    lost = len(expected - set(seen))
    assert lost == 0 and receiver.unkeyed == 0
    assert ledger.dead() == []
    _stats(
        "200-events",
        broker,
        events=len(lines),
        deliveries_expected=len(expected),
        delivered=len(settled),
        repeats=repeats,
        lost=lost,
        seconds=f"{took:.1f}",
    )


def _crash_run(
    tmp_path: Path,
    broker: Broker,
    store: tuple[str, str, Ledger],
    receiver: Receiver,
    *,
    prefork: bool,
) -> None:
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 1, HOLD)
    pool = ("--pool", "prefork", "--concurrency", "1") if prefork else ("--concurrency", "2")
    options = (*pool, *_fast(broker))
    with workers() as started:
        worker = start_worker(tmp_path, [flow], broker, url, prefix, *options, name="doomed")
        started.append(worker)
        _published(publish(events, broker, [flow]), 1)
        wait_until(receiver.held.is_set, 30, "the first request never arrived")
        if prefork:
            children = worker.children()
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
        else:
            worker.kill()
        killed, killed_at = time.monotonic(), time.time()
        receiver.release()  # the held request is answered to a dead worker
        if not prefork:
            started.append(start_worker(tmp_path, [flow], broker, url, prefix, *options))
        wait_until(
            lambda: ledger.settled().get(second) == "delivered",
            60,
            f"not redelivered:\n{started[-1].text()[-3000:]}",
        )
        with receiver.lock:
            arrivals = list(receiver.seen[first])
    settled = ledger.settled()
    assert settled == {first: "delivered", second: "delivered"}
    assert 1 <= receiver.count(first) <= 2  # at most one repeat, with the same key
    assert receiver.count(second) == 1
    assert ledger.dead() == []
    redelivered = arrivals[1] - killed if len(arrivals) > 1 else None
    consumed = _first_deliver_after(started, killed_at)
    if os.environ.get("FLOWLANG_SHOW_WORKER_LOGS"):
        for worker in started:
            print(worker.text()[-5000:])
        print("killed at", killed_at)
    _stats(
        "prefork-child" if prefork else "worker-group",
        broker,
        events=1,
        deliveries_expected=2,
        delivered=len(settled),
        repeats=receiver.count(first) - 1,
        lost=2 - len(settled),
        message_back_after=f"{consumed:.1f}s" if consumed is not None else "n/a",
        resent_after=f"{redelivered:.1f}s" if redelivered is not None else "n/a",
    )


def _first_deliver_after(started: list[Worker], moment: float) -> float | None:
    """Seconds from ``moment`` (epoch) to the first flowlang.deliver a worker received after
    it (the redelivered message; its request waits further for the dead attempt's lease)."""
    times = []
    for worker in started:
        for line in worker.text().splitlines():
            if "Task flowlang.deliver[" in line and line.endswith("received"):
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if stamp > moment:
                    times.append(stamp - moment)
    return min(times) if times else None


def test_sigkill_of_the_worker_group_mid_attempt_is_redelivered(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    _crash_run(tmp_path, broker, store, receiver, prefork=False)


def test_sigkill_of_the_prefork_child_mid_attempt_is_redelivered(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    _crash_run(tmp_path, broker, store, receiver, prefork=True)


def _accept_outcomes(started: list[Worker]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in started:
        for line in worker.text().splitlines():
            if "flowlang.accept: " in line:
                outcome = line.rsplit("flowlang.accept: ", 1)[1].split(":")[0].strip()
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def test_the_same_event_five_times_from_two_processes_fans_out_once(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow = write_workflow(tmp_path, receiver)
    item = event(5)
    three = write_events(tmp_path / "three.jsonl", [item] * 3)
    two = write_events(tmp_path / "two.jsonl", [item] * 2)
    with workers() as started:
        for name in ("one", "two"):
            started.append(
                start_worker(tmp_path, [flow], broker, url, prefix, "--concurrency", "4", name=name)
            )
        commands = [
            [
                sys.executable, "-m", "flowlang", "automate", str(flow), "--events", str(path),
                "--executor", "celery", "--broker", broker.url,
                "--queue-prefix", broker.queue_prefix,
            ]
            for path in (three, two)
        ]  # fmt: skip
        publishers = [
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean_env(),
                start_new_session=True,
            )
            for command in commands
        ]
        for process in publishers:
            _, error = process.communicate(timeout=60)
            assert process.returncode == 0, error
        wait_until(
            lambda: (
                sum(_accept_outcomes(started).get(k, 0) for k in ("fanned_out", "duplicate")) >= 5
            ),
            30,
            f"not every copy was checked: {_accept_outcomes(started)}",
        )
        wait_until(lambda: len(ledger.settled()) == 2, 30, "the actions did not settle")
        outcomes = _accept_outcomes(started)
    assert outcomes.get("fanned_out") == 1, outcomes
    assert outcomes.get("duplicate") == 4, outcomes
    assert receiver.keys() == {key: 1 for key in keys_of(item["id"])}


def test_503_then_429_with_retry_after_then_200_is_delivered_on_the_third_attempt(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow, events, first, second = one_event(
        tmp_path, receiver, 3, (503, {}), (429, {"Retry-After": "2"})
    )
    schedule = ("--retry-schedule", "0,0.5,0.5,0.5", "--throttled-minimum", "1")
    with workers() as started:
        started.append(start_worker(tmp_path, [flow], broker, url, prefix, *schedule))
        _published(publish(events, broker, [flow]), 1)
        wait_until(lambda: ledger.settled().get(second) == "delivered", 30, "not delivered")
    attempts = int(ledger.client.hget(f"{prefix}act:{first}", "attempts") or 0)
    assert attempts == 3
    with receiver.lock:
        times = receiver.seen[first]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.45  # the schedule's 0.5 s, less its 10 % jitter
    assert times[2] - times[1] >= 2.0  # Retry-After: 2 (above the schedule and the minimum)
    assert ledger.dead() == []


def test_a_permanent_400_is_one_shared_dead_letter_that_replay_delivers(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 4, (400, {}))
    with workers() as started:
        started.append(start_worker(tmp_path, [flow], broker, url, prefix))
        _published(publish(events, broker, [flow]), 1)
        wait_until(lambda: ledger.settled() == {first: "dead_lettered"}, 30, "not settled")
        wait_until(lambda: len(ledger.dead()) == 1, 10, "no dead letter")
    [record] = ledger.dead()
    assert record["format"] == "flowlang.deadletter/1"
    assert (record["action"], record["idempotency_key"]) == ("first", first)
    assert record["then"] == ["second"]  # stop_on_failure (the default) stopped it
    assert receiver.keys() == {first: 1}
    # The receiver is fixed (it answers 200 from now on): replay delivers it with its key,
    # then the action it stopped.
    status, out = cli("replay", url, "--prefix", prefix, "--allow-host", "127.0.0.1")
    assert status == 0, out
    assert "delivered 2" in out
    assert ledger.dead() == []
    assert ledger.settled() == {first: "delivered", second: "delivered"}
    assert receiver.keys() == {first: 2, second: 1}
    status, out = cli("replay", url, "--prefix", prefix, "--allow-host", "127.0.0.1")
    assert (status, "replayed 0 records" in out) == (0, True)


def test_replay_hands_the_shared_dead_letters_to_the_workers(
    tmp_path: Path, broker: Broker, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 6, (400, {}), (400, {}))
    replay = ["replay", url, "--prefix", prefix, "--broker", broker.url]
    replay += ["--queue-prefix", broker.queue_prefix]
    with workers() as started:
        started.append(start_worker(tmp_path, [flow], broker, url, prefix))
        _published(publish(events, broker, [flow]), 1)
        wait_until(lambda: len(ledger.dead()) == 1, 30, "no dead letter")
        # still failing: the worker's replay (one try, no waiting) makes it a dead letter again
        assert cli(*replay) == (0, "handed 1 dead letters to the workers; 0 not published\n")
        wait_until(lambda: receiver.count(first) == 2 and len(ledger.dead()) == 1, 30, "kept")
        # fixed: handed over again, it is delivered, then the action it stopped
        assert cli(*replay)[0] == 0
        wait_until(lambda: ledger.settled().get(second) == "delivered", 30, "not replayed")
        wait_until(lambda: ledger.dead() == [], 10, "the dead letter stayed")
    assert ledger.settled() == {first: "delivered", second: "delivered"}
    assert receiver.keys() == {first: 3, second: 1}


def test_quorum_queues_on_rabbitmq(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store: tuple[str, str, Ledger],
    receiver: Receiver,
) -> None:
    url, prefix, ledger = store
    rabbit: RabbitMQ = request.getfixturevalue("rabbitmq")
    broker = Broker("rabbitmq", rabbit.url, rabbit.queue_prefix)
    flow = write_workflow(tmp_path, receiver)
    item = event(2)
    events = write_events(tmp_path / "events.jsonl", [item])
    quorum = ("--queue-type", "quorum")
    with workers() as started:
        started.append(start_worker(tmp_path, [flow], broker, url, prefix, *quorum))
        # a publisher that declares the queues otherwise is told so, and publishes nothing
        refused = publish(events, broker, [flow])
        assert refused.returncode == 1 and "PRECONDITION_FAILED" in refused.stderr
        _published(publish(events, broker, [flow], *quorum), 1)
        wait_until(lambda: len(ledger.settled()) == 2, 30, "not delivered")
    assert receiver.keys() == dict.fromkeys(keys_of(item["id"]), 1)


# --- flowlang worker --metrics-port ----------------------------------------------------------


def _scrape(url: str) -> tuple[dict[str, float], str]:
    """The metrics page at ``url``: series (name with labels) -> value, and its text."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found, text


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_worker_metrics_count_attempts_duplicates_and_pump_publishes(
    tmp_path: Path,
    redis_server: RedisServer,
    store: tuple[str, str, Ledger],
    receiver: Receiver,
    pool: str,
) -> None:
    """A real worker (Redis broker) with --metrics-port 0: four deliveries (one event's first
    action after a 503: its retry goes through the pump), one dead letter (a 400), one
    duplicate event; the scrape counts them, with label values from fixed sets only (no event
    id, URL or caller). With prefork the pool children are summed and the private metrics
    folder is removed at exit."""
    url, prefix, ledger = store
    flow = write_workflow(tmp_path, receiver)
    items = [event(number) for number in (21, 22, 23)]
    keys = {item["id"]: keys_of(item["id"]) for item in items}
    receiver.script(keys["evt-00022"][0], (503, {}))
    receiver.script(keys["evt-00023"][0], (400, {}))
    events = write_events(tmp_path / "events.jsonl", [*items, items[0]])
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    options = ("--pool", pool, "--concurrency", "2", "--metrics-port", "0")
    options += ("--retry-schedule", "0,0.3")
    with redis_broker_on(redis_server, 4) as broker, workers() as started:
        worker = start_worker(
            tmp_path, [flow], broker, url, prefix, *options, env={"TMPDIR": str(temporary)}
        )
        started.append(worker)
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", worker.text())
        assert found, worker.text()
        folders = [p.name for p in temporary.glob("flowlang-worker-metrics-*")]
        assert len(folders) == (1 if pool == "prefork" else 0)  # threads: one process
        _published(publish(events, broker, [flow]), 4)
        wait_until(lambda: len(ledger.settled()) == 5, 30, "not settled")
        expected = {
            'flowlang_worker_attempts_total{outcome="delivered"}': 4.0,
            'flowlang_worker_attempts_total{outcome="retry"}': 1.0,
            'flowlang_worker_attempts_total{outcome="dead"}': 1.0,
            "flowlang_worker_attempt_duration_seconds_count": 6.0,
            'flowlang_worker_duplicates_total{of="event"}': 1.0,
        }

        last = [""]

        def counted() -> bool:
            page, last[0] = _scrape(found.group(1))
            histogram = sum(
                value
                for series, value in page.items()
                if series.startswith("flowlang_worker_attempt_duration_seconds_count")
            )
            page["flowlang_worker_attempt_duration_seconds_count"] = histogram
            return all(page.get(series) == value for series, value in expected.items())

        try:
            wait_until(counted, 15, "not counted")
        except AssertionError:
            print(last[0])
            raise
        page, text = _scrape(found.group(1))
        assert page.get('flowlang_worker_pump_published_total{kind="due"}', 0) >= 1
        assert page.get('flowlang_worker_steps_total{outcome="fanned_out",task="accept"}') == 3
        for secret in ("evt-", "127.0.0.1", "+1555", receiver.url(), prefix):
            assert secret not in text
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0, worker.text()
    assert "Traceback" not in worker.text()
    assert list(temporary.glob("flowlang-worker-metrics-*")) == []  # removed at exit


def test_worker_metrics_port_in_use_or_not_here_is_a_clear_error(
    tmp_path: Path, redis_server: RedisServer, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    url, prefix, _ = store
    flow = write_workflow(tmp_path, receiver)
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with redis_broker_on(redis_server, 4) as broker:
            for extra in (
                ("--metrics-port", str(port)),
                ("--metrics-port", "0", "--metrics-host", "203.0.113.7"),  # not this machine's
                ("--metrics-port", "0", "--pool", "prefork", "--metrics-host", "203.0.113.7"),
            ):
                command = worker_command([flow], broker, url, prefix, *extra)
                began = time.monotonic()
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=60, env=clean_env()
                )
                assert done.returncode == 2, done.stderr
                assert "--metrics-port: cannot serve metrics on" in done.stderr
                assert "Traceback" not in done.stderr and "consuming" not in done.stderr
                if extra[1] == str(port):
                    assert "in use" in done.stderr, done.stderr
                assert time.monotonic() - began < 30
    finally:
        taken.close()


# --- the pump killed between taking a due retry and publishing it ------------------------------


def test_the_worker_holding_the_pump_killed_between_take_and_publish_loses_nothing(
    tmp_path: Path, redis_server: RedisServer, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    """A worker whose broker falls silent (a proxy that becomes a black hole: its publishes
    never arrive) holds the pump when a retry falls due: the pump takes it from the due set
    into the pumping hash and cannot publish it. The worker's whole process group is killed
    there. Another worker (broker reachable) takes the pump lock once it lapses, publishes the
    stale member again, and the retry is delivered: nothing lost, the action's requests all
    carry its one Idempotency-Key, the next action sent once."""
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 31, (503, {}))
    client = ledger.client
    with redis_broker_on(redis_server, 5) as broker, muting_proxy(redis_server.port) as proxy:
        db = broker.url.rsplit("/", 1)[1]
        silent = Broker("redis", f"redis://127.0.0.1:{proxy.port}/{db}", broker.queue_prefix)
        broker_client = redis.Redis.from_url(broker.url, socket_timeout=5)
        with workers() as started:
            doomed = start_worker(
                tmp_path, [flow], silent, url, prefix, "--retry-schedule", "0,3", name="doomed"
            )
            started.append(doomed)
            _published(publish(events, broker, [flow]), 1)
            wait_until(
                lambda: (
                    client.zcard(f"{prefix}due") == 1
                    and receiver.count(first) == 1
                    and broker_client.hlen("unacked") == 0
                ),
                30,
                "the first attempt's retry was not scheduled",
            )
            proxy.black_hole()  # from now on nothing this worker publishes reaches the broker
            wait_until(lambda: client.hlen(f"{prefix}pumping") == 1, 15, "the pump did not take it")
            holder = (client.get(f"{prefix}pump:lock") or b"").decode()
            doomed.kill()  # SIGKILL, the whole group: between take and publish
            killed = time.monotonic()
            assert f":{doomed.process.pid}:" in holder  # the killed worker held the pump
            assert client.zcard(f"{prefix}due") == 0 and client.hlen(f"{prefix}pumping") == 1
            queue = f"{broker.queue_prefix}actions"
            assert broker_client.llen(queue) == 0  # never published
            started.append(start_worker(tmp_path, [flow], broker, url, prefix, name="heir"))
            wait_until(
                lambda: ledger.settled().get(second) == "delivered",
                60,
                f"the taken retry was lost:\n{started[-1].text()[-3000:]}",
            )
            took = time.monotonic() - killed
        broker_client.close()
    assert ledger.settled() == {first: "delivered", second: "delivered"}
    assert receiver.keys() == {first: 2, second: 1}  # the 503, then the retry: one key
    assert receiver.unkeyed == 0
    assert ledger.dead() == []
    assert client.hlen(f"{prefix}pumping") == 0 and client.zcard(f"{prefix}due") == 0
    _stats(
        "pump-take-publish",
        broker,
        events=1,
        deliveries_expected=2,
        delivered=2,
        repeats=0,
        lost=0,
        delivered_after=f"{took:.1f}s",
    )


# --- SIGTERM while a publish waits for a broker that fell silent -----------------------------


def test_sigterm_during_a_publish_the_broker_never_confirms_ends_and_loses_nothing(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store: tuple[str, str, Ledger],
    receiver: Receiver,
) -> None:
    """RabbitMQ through a proxy that stops passing the broker's replies while the worker's
    inline delivery is in flight: its next publish (the second action) waits for a confirm
    that never comes. SIGTERM then. Issue 13 red team (hang; finding 6): the publish ends
    (bounded, the accept requeued) but the warm shutdown then never ended: the worker still
    ran 90 s after SIGTERM (an idle worker whose RabbitMQ fell silent behaved the same:
    closing the AMQP connection waits for the broker with no limit). The shutdown watchdog
    (flowlang.distributed.loop) now ends it SHUTDOWN_GRACE s after its last task. Nothing is
    lost or sent twice (a worker started afterwards delivers both actions once). Invariant:
    the worker exits in bounded time, and a worker started afterwards delivers both actions,
    each sent once."""
    rabbit: RabbitMQ = request.getfixturevalue("rabbitmq")
    url, prefix, ledger = store
    flow, events, first, second = one_event(tmp_path, receiver, 51, HOLD)
    with muting_proxy(5672) as proxy:
        silent = Broker(
            "rabbitmq", f"amqp://guest:guest@127.0.0.1:{proxy.port}//", rabbit.queue_prefix
        )
        direct = Broker("rabbitmq", rabbit.url, rabbit.queue_prefix)
        doomed = start_worker(tmp_path, [flow], silent, url, prefix, name="doomed")
        try:
            status, _ = cli(
                "automate", str(flow), "--events", str(events), "--executor", "celery",
                "--broker", direct.url, "--queue-prefix", direct.queue_prefix,
            )  # fmt: skip
            assert status == 0
            wait_until(receiver.held.is_set, 20, "the request never arrived")
            proxy.mute()
            receiver.release()
            time.sleep(1.0)  # the second action's publish waits for its confirm
            os.killpg(doomed.process.pid, signal.SIGTERM)
            began = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                doomed.process.wait(90)
            took = time.monotonic() - began
            exited = doomed.process.poll() is not None
        finally:
            doomed.kill()
    heir = start_worker(tmp_path, [flow], direct, url, prefix, name="heir")
    try:
        wait_until(lambda: ledger.settled().get(second) == "delivered", 60, heir.text()[-2000:])
    finally:
        heir.kill()
    sent = (receiver.count(first), receiver.count(second))
    assert exited, (
        f"the worker still runs {took:.0f} s after SIGTERM (sent {sent}):\n"
        + (doomed.text()[-1500:])
    )
    assert took < 75, f"the worker took {took:.0f} s to exit after SIGTERM"
    assert sent == (1, 1), receiver.keys()


def test_sigterm_on_an_idle_worker_whose_rabbitmq_fell_silent_ends_in_bounded_time(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store: tuple[str, str, Ledger],
    receiver: Receiver,
) -> None:
    """Finding 6's other half: an idle worker whose RabbitMQ stops answering (a proxy that
    swallows the broker's replies) used to hang in the connection's close after SIGTERM; the
    shutdown watchdog ends it SHUTDOWN_GRACE s later (no task runs: nothing to lose)."""
    rabbit: RabbitMQ = request.getfixturevalue("rabbitmq")
    url, prefix, _ = store
    flow = write_workflow(tmp_path, receiver)
    with muting_proxy(5672) as proxy:
        silent = Broker(
            "rabbitmq", f"amqp://guest:guest@127.0.0.1:{proxy.port}//", rabbit.queue_prefix
        )
        idle = start_worker(tmp_path, [flow], silent, url, prefix, name="idle")
        try:
            proxy.mute()
            time.sleep(0.5)
            os.killpg(idle.process.pid, signal.SIGTERM)
            began = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                idle.process.wait(75)
            took = time.monotonic() - began
            exited = idle.process.poll() is not None
        finally:
            idle.kill()
    assert exited, f"the idle worker still runs {took:.0f} s after SIGTERM:\n{idle.text()[-1500:]}"
    assert "Traceback" not in idle.text(), idle.text()[-3000:]
