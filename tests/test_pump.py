"""The pump (flowlang.distributed.pump) on a real Redis: retries through the due set honour the
schedule and Retry-After end to end (deliverer + pump + loopback receiver), a pump that stops
between taking and publishing loses nothing, one pump of two publishes, a failed publish is
published again, foreign members are set aside, and run() never raises."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import pytest
from distributed_support import Broker, Kit, accept_body, automations, pumping, run
from servers import Server
from support import NOW, FakeClock

from flowlang.automations.dispatch import SystemClock, idempotency_key
from flowlang.distributed.deliverer import Deliverer
from flowlang.distributed.messages import DELIVER_TASK
from flowlang.distributed.pump import Pump
from flowlang.distributed.shared import SharedStore


class Outbox:
    """A publish function that records (task, body) and can be told to fail."""

    def __init__(self, name: str = "pump", delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.failures = 0

    async def __call__(self, task: str, body: dict[str, Any]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((self.name, task, body))


# --- end to end: retries wait as the schedule and the receiver say -------------------------------


def test_503_then_429_with_retry_after_then_200_is_delivered_on_attempt_3_after_the_waits(
    kit: Kit, server: Server
) -> None:
    server.received.script(
        "crm", (503, {}, {}), (429, {"Retry-After": "1"}, {}), (200, {}, {"id": 9})
    )
    scheduled: list[tuple[int, float, float]] = []

    async def work(store: SharedStore) -> Broker:
        original = store.record_retry

        async def spy(
            key: str, attempt: int, task: str, body: dict[str, Any], due: float, **options: Any
        ) -> str:
            scheduled.append((body["attempt"], due, time.time()))
            return await original(key, attempt, task, body, due, **options)

        store.record_retry = spy  # type: ignore[method-assign]
        async with automations(
            server, clock=SystemClock(), schedule=(0, 0.2, 0.2), throttled_minimum=0.3
        ) as auto:
            broker = Broker(Deliverer(auto, store, "worker-1"))
            async with pumping(Pump(store, broker.publish, "pump-1", interval=0.02)):
                await broker.publish("flowlang.accept", accept_body())
                await broker.work(lambda: len(broker.steps) >= 5, seconds=15)
            return broker

    broker = kit.run(work)
    assert broker.outcomes() == ["fanned_out", "retry", "retry", "delivered", "delivered"]
    attempts = server.received.to("crm")
    assert len(attempts) == 3
    assert {r["headers"]["idempotency-key"] for r in attempts} == {
        idempotency_key("evt-1", "sync", "post")
    }
    # the due set held attempt 2 for 0.2 s (the schedule) and attempt 3 for 1 s (Retry-After)
    [(second, due2, at2), (third, due3, at3)] = scheduled
    assert (second, third) == (2, 3)
    assert 0.19 <= due2 - at2 <= 0.3
    assert 0.99 <= due3 - at3 <= 1.1
    # and each attempt ran no earlier than it was due
    start = broker.times
    assert start[2] >= due2 and start[3] >= due3
    assert start[3] - start[2] >= 0.99
    assert kit.due() == [] and kit.raw.hlen(f"{kit.prefix}pumping") == 0


def test_a_permanent_400_through_the_pump_is_one_dead_letter_and_no_retry(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (400, {}, {"error": "nope"}))

    async def work(store: SharedStore) -> Broker:
        async with automations(server, clock=SystemClock(), schedule=(0, 0.1)) as auto:
            broker = Broker(Deliverer(auto, store, "worker-1"))
            async with pumping(Pump(store, broker.publish, "p", interval=0.02)):
                await broker.publish("flowlang.accept", accept_body())
                await broker.work(lambda: len(broker.steps) >= 2)
                await asyncio.sleep(0.3)  # nothing more comes
            return broker

    broker = kit.run(work)
    assert broker.outcomes() == ["fanned_out", "dead"] and broker.queue.empty()
    [entry] = kit.raw.xrange(f"{kit.prefix}dead")
    record = json.loads(entry[1][b"record"])
    assert record["format"] == "flowlang.deadletter/1" and record["action"] == "post"
    assert len(server.received.to("crm")) == 1 and kit.due() == []


# --- losing nothing ------------------------------------------------------------------------


def test_a_pump_that_stopped_between_taking_and_publishing_loses_nothing(kit: Kit) -> None:
    clock = FakeClock()
    outbox = Outbox()

    async def work(store: SharedStore) -> list[int]:
        for n in range(3):
            await store.schedule("flowlang.deliver", {"n": n}, NOW - 1)
        taken = await store.take_due(clock.now(), 10)  # then this pump is gone
        assert len(taken) == 3
        pump = Pump(store, outbox, "pump-2", clock=clock, stale=30.0)
        counts = [await pump.run_once()]  # taken just now: not stale yet
        clock.current += 31
        counts.append(await pump.run_once())
        counts.append(await pump.run_once())  # published: nothing more
        return counts

    assert kit.run(work) == [0, 3, 0]
    assert sorted(body["n"] for _, _, body in outbox.sent) == [0, 1, 2]
    assert kit.raw.hlen(f"{kit.prefix}pumping") == 0


def test_a_pump_killed_while_publishing_loses_nothing_and_another_takes_over(kit: Kit) -> None:
    started = asyncio.Event()
    outbox = Outbox("pump-b")

    async def hangs(task: str, body: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def work() -> float:
        store = kit.store()
        stop = asyncio.Event()
        try:
            await store.schedule("flowlang.deliver", {"n": 1}, time.time() - 1)
            first = Pump(store, hangs, "pump-a", hold=0.2, stale=0.3)
            killed = asyncio.create_task(first.run_once())
            await asyncio.wait_for(started.wait(), 5)
            killed.cancel()  # gone between taking and publishing, holding the lock
            assert await store.due_count() == 0
            assert kit.raw.hlen(f"{kit.prefix}pumping") == 1
            begun = time.monotonic()
            second = Pump(store, outbox, "pump-b", interval=0.02, hold=0.2, stale=0.3)
            running = asyncio.create_task(second.run(stop))
            while not outbox.sent and time.monotonic() - begun < 10:
                await asyncio.sleep(0.02)
            stop.set()
            await running
            return time.monotonic() - begun
        finally:
            await store.aclose()

    waited = run(work)
    assert [body for _, _, body in outbox.sent] == [{"n": 1}]
    assert 0.25 <= waited < 5  # after the lock lapsed and the member went stale
    assert kit.raw.hlen(f"{kit.prefix}pumping") == 0


def test_a_failed_publish_stays_in_pumping_and_is_tried_again_first_next_round(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    outbox = Outbox()
    outbox.failures = 1

    async def work(store: SharedStore) -> list[int]:
        for n in range(3):
            await store.schedule("flowlang.deliver", {"n": n}, NOW - 3 + n)
        pump = Pump(store, outbox, "pump-1", clock=clock, stale=10.0)
        counts = [await pump.run_once()]  # the first publish fails: the round stops
        counts.append(await pump.run_once())  # the failed ones first, then the rest
        clock.current += 11
        counts.append(await pump.run_once())  # nothing left
        return counts

    assert kit.run(work) == [0, 3, 0]
    assert sorted(body["n"] for _, _, body in outbox.sent) == [0, 1, 2]
    assert "publishing a flowlang.deliver message failed" in caplog.text
    assert "ConnectionError: broker unreachable" in caplog.text
    assert kit.due() == [] and kit.raw.hlen(f"{kit.prefix}pumping") == 0


def test_only_due_messages_go_out_and_a_full_batch_is_followed_at_once(kit: Kit) -> None:
    clock = FakeClock()
    outbox = Outbox()

    async def work(store: SharedStore) -> list[int]:
        for n in range(25):
            await store.schedule("flowlang.deliver", {"n": n}, NOW - 100 + n)
        await store.schedule("flowlang.deliver", {"later": True}, NOW + 60)
        pump = Pump(store, outbox, "pump-1", clock=clock, batch=10)
        return [await pump.run_once() for _ in range(4)]

    assert kit.run(work) == [10, 10, 5, 0]
    assert [body["n"] for _, _, body in outbox.sent] == list(range(25))
    assert [member["body"] for member, _ in kit.due()] == [{"later": True}]


def test_two_pumps_only_one_publishes_and_each_message_once(kit: Kit) -> None:
    first, second = Outbox("pump-a"), Outbox("pump-b")

    async def work() -> None:
        store_a, store_b = kit.store(), kit.store()
        stop = asyncio.Event()
        try:
            pumps = [
                Pump(store_a, first, "pump-a", interval=0.02, hold=2.0),
                Pump(store_b, second, "pump-b", interval=0.02, hold=2.0),
            ]
            running = [asyncio.create_task(pump.run(stop)) for pump in pumps]
            for n in range(30):
                await store_a.schedule("flowlang.deliver", {"n": n}, time.time() + 0.01 * n)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(first.sent) + len(second.sent) < 30 and loop.time() < deadline:
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*running)
        finally:
            await store_a.aclose()
            await store_b.aclose()

    run(work)
    sent = first.sent + second.sent
    assert sorted(body["n"] for _, _, body in sent) == list(range(30))
    assert len({name for name, _, _ in sent}) == 1


def test_when_the_holder_stops_another_pump_takes_over(kit: Kit) -> None:
    first, second = Outbox("pump-a"), Outbox("pump-b")

    async def work() -> list[int]:
        store = kit.store()
        stop = asyncio.Event()
        try:
            pump_a = Pump(store, first, "pump-a", interval=0.02, hold=5.0)
            pump_b = Pump(store, second, "pump-b", interval=0.02, hold=5.0)
            stop.set()
            await pump_a.run(stop)  # one round, then gives the lock back
            await store.schedule("flowlang.deliver", {"n": 1}, time.time() - 1)
            return [await pump_b.run_once()]
        finally:
            await store.aclose()

    assert run(work) == [1]
    assert [name for name, _, _ in second.sent] == ["pump-b"]


# --- hostile data and failures ---------------------------------------------------------------


def test_foreign_members_are_set_aside_and_the_pump_goes_on(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    outbox = Outbox()
    kit.raw.zadd(
        f"{kit.prefix}due",
        {
            b"garbage": NOW - 5,
            b"\xff\xfe\xfd": NOW - 4,
            b'{"task": "flowlang.deliver", "body": {"n": 1}, "id": "cut': NOW - 3,
            b"[" * 10_000 + b"]" * 10_000: NOW - 2,
        },
    )
    huge = {"text": "\u2603" * 300_000}

    async def work(store: SharedStore) -> int:
        await store.schedule("flowlang.deliver", huge, NOW - 1)
        return await Pump(store, outbox, "pump-1", clock=clock).run_once()

    assert kit.run(work) == 1
    assert [body for _, _, body in outbox.sent] == [huge]
    assert kit.raw.llen(f"{kit.prefix}bad") == 4
    assert kit.due() == [] and kit.raw.hlen(f"{kit.prefix}pumping") == 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_run_never_raises_when_the_store_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pump-store-pw-6b1c"
    outbox = Outbox()

    async def work() -> None:
        store = SharedStore.from_url(
            f"redis://:{password}@127.0.0.1:{closed_port()}/0", prefix="fltest-pump:"
        )
        try:
            async with pumping(Pump(store, outbox, "pump-1", interval=0.05)):
                await asyncio.sleep(0.4)
        finally:
            await store.aclose()

    run(work)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("a round failed" in text for text in warnings)
    assert "SharedStoreError" in warnings[0] and "hold_pump failed" in warnings[0]
    assert password not in caplog.text and outbox.sent == []


def test_run_never_raises_when_every_publish_fails(kit: Kit) -> None:
    outbox = Outbox()
    outbox.failures = 10**6

    async def work(store: SharedStore) -> int:
        await store.schedule("flowlang.deliver", {"n": 1}, time.time() - 1)
        async with pumping(Pump(store, outbox, "pump-1", interval=0.02, stale=0.05)):
            await asyncio.sleep(0.5)
        return await store.due_count()

    assert kit.run(work) == 0
    assert outbox.failures < 10**6 - 2  # tried again and again
    assert kit.raw.hlen(f"{kit.prefix}pumping") == 1  # still there for a later pump


@pytest.mark.parametrize(
    ("name", "value"),
    [("batch", 0), ("batch", 1.5), ("interval", 0), ("hold", -1), ("stale", float("nan"))],
)
def test_pump_settings_are_checked(kit: Kit, name: str, value: Any) -> None:
    store = SharedStore.from_url(kit.url, prefix=kit.prefix)
    with pytest.raises(ValueError, match=name):
        Pump(store, Outbox(), "pump-1", **{name: value})


# --- bounds: publish timeout, the lock between publishes, stop, backlog, foreign tasks ----------


def test_a_slow_publish_times_out_and_is_not_published_again_by_another_pump_meanwhile(
    kit: Kit,
) -> None:
    """Pump A's publish hangs (longer than its publish timeout): it counts as failed and A's
    round ends; pump B takes over only once A's lock lapsed and publishes the member once."""

    async def work(store: SharedStore) -> list[tuple[str, str, dict[str, Any]]]:
        await store.schedule(DELIVER_TASK, {"n": 1}, time.time() - 1)
        slow, quick = Outbox("pump-a", delay=1.0), Outbox("pump-b")
        a = Pump(store, slow, "pump-a", hold=0.2, stale=0.5)
        b = Pump(store, quick, "pump-b", hold=0.2, stale=0.5)
        first = asyncio.create_task(a.run_once())
        await asyncio.sleep(0.7)
        await b.run_once()
        await first
        return slow.sent + quick.sent

    sent = kit.run(work)
    assert [name for name, _, _ in sent] == ["pump-b"]


def test_a_round_ends_when_the_lock_is_lost_between_publishes(kit: Kit) -> None:
    """Another pump takes the lock while this one is publishing: nothing more is published."""

    async def work(store: SharedStore) -> tuple[int, list[tuple[str, str, dict[str, Any]]]]:
        for n in range(3):
            await store.schedule(DELIVER_TASK, {"n": n}, time.time() - 1)
        outbox = Outbox("pump-a")
        pump = Pump(store, outbox, "pump-a", hold=5.0, stale=30.0)

        async def steal(task: str, body: dict[str, Any]) -> None:
            await outbox(task, body)
            kit.raw.set(f"{kit.prefix}pump:lock", "pump-b", px=5000)

        pump.publish = steal
        return await pump.run_once(), outbox.sent

    count, sent = kit.run(work)
    assert count == 1 and len(sent) == 1
    assert kit.raw.hlen(f"{kit.prefix}pumping") == 2  # left for the pump holding the lock


def test_run_returns_soon_after_stop_even_when_a_publish_hangs(kit: Kit) -> None:
    started = asyncio.Event()

    async def hangs(task: str, body: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def work() -> tuple[bool, int]:
        store = kit.store()
        stop = asyncio.Event()
        try:
            await store.schedule(DELIVER_TASK, {"n": 1}, time.time() - 1)
            running = asyncio.create_task(Pump(store, hangs, "pump-a").run(stop))
            await asyncio.wait_for(started.wait(), 5)
            stop.set()
            done, _ = await asyncio.wait({running}, timeout=3.0)
            if not done:
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
            return bool(done), await store.pumping_count()
        finally:
            await store.aclose()

    stopped, pumping = run(work)
    assert stopped, "run() did not return within 3 s of stop"
    assert pumping == 1  # left for later, not lost
    assert not kit.raw.exists(f"{kit.prefix}pump:lock")


def test_a_pump_that_cannot_publish_does_not_move_the_due_set_into_pumping(kit: Kit) -> None:
    """A broker outage: after a failed publish nothing more is taken from the due set, and
    never while the pumping hash holds a batch."""
    clock = FakeClock()

    async def down(task: str, body: dict[str, Any]) -> None:
        raise ConnectionError("broker unreachable")

    async def work(store: SharedStore) -> tuple[int, int]:
        for n in range(30):
            await store.schedule(DELIVER_TASK, {"n": n}, NOW - 1)
        pump = Pump(store, down, "pump-1", clock=clock, batch=5, stale=30.0)
        for _ in range(6):
            await pump.run_once()
            clock.current += 0.5
        pump.publish = Outbox()
        pump._failed = []  # a new pump: only the batch size holds it back
        clock.current += 60
        return await store.due_count(), int(kit.raw.hlen(f"{kit.prefix}pumping"))

    due, pumping = kit.run(work)
    assert pumping <= 5 and due >= 25


def test_a_stale_scan_looks_at_a_bounded_number_of_entries_per_call(kit: Kit) -> None:
    """A huge pumping hash is covered over several calls, each bounded."""
    pumping = f"{kit.prefix}pumping"
    members = {
        json.dumps({"task": DELIVER_TASK, "body": {"n": n}, "id": f"i{n}"}): "1"
        for n in range(2500)
    }
    kit.raw.hset(pumping, mapping=members)

    async def work(store: SharedStore) -> list[int]:
        return [len(await store.stale_pumping(NOW, 30.0, limit=2000)) for _ in range(10)]

    counts = kit.run(work)
    assert max(counts) <= 2000 and sum(counts) == 2500


def test_a_pump_owner_that_is_not_a_key_part_is_refused_at_once(kit: Kit) -> None:
    store = kit.store()
    try:
        with pytest.raises(ValueError, match="owner"):
            Pump(store, Outbox("pump-x"), "two words")
        with pytest.raises(ValueError, match="publish_timeout"):
            Pump(store, Outbox("pump-x"), "pump-x", stale=1.0, publish_timeout=0.9)
    finally:
        run(store.aclose)


def test_a_due_member_naming_a_task_that_is_not_flowlangs_is_set_aside(kit: Kit) -> None:
    """Write access to the due set must not become "run any registered task on the
    workers": only flowlang.accept, deliver and replay are published."""
    clock = FakeClock()
    foreign = {"task": "celery.backend_cleanup", "body": {"anything": 1}, "id": "x1"}
    kit.raw.zadd(f"{kit.prefix}due", {json.dumps(foreign): NOW - 1})
    outbox = Outbox("pump")

    async def work(store: SharedStore) -> int:
        await Pump(store, outbox, "pump-1", clock=clock).run_once()
        with pytest.raises(ValueError, match="flowlang's tasks"):
            await store.schedule("celery.backend_cleanup", {}, NOW)
        return await store.bad_count()

    assert kit.run(work) == 1
    assert outbox.sent == []
