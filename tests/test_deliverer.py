"""The Celery-independent worker logic (flowlang.distributed.deliverer) on a real Redis and the
loopback HTTPS server: accepting an event once however often it arrives (also from two
processes), results chained from action to action, redelivery after the ledger write, leases,
retries into the due set, dead letters, bodies that are not messages, secrets kept out of
Redis and messages, and a workflow version that is not loaded (a rolling deploy)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from distributed_support import (
    SECRET,
    WORKFLOW,
    Broker,
    Kit,
    accept_body,
    automations,
    event,
    fail_once,
    run,
)
from servers import Server
from support import NOW, FakeClock

from flowlang.automations import load_workflow_text
from flowlang.automations.dispatch import idempotency_key
from flowlang.distributed.deliverer import Deliverer, Step
from flowlang.distributed.messages import DELIVER_TASK, DeliverMessage
from flowlang.distributed.pump import Pump
from flowlang.distributed.shared import SharedStore
from flowlang.errors import SharedStoreError

OWNER = "worker-1"


def deliver_body(server: Server, action: int = 0, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    workflow = load_workflow_text(WORKFLOW.replace("{port}", str(server.port)))
    results = extra.pop("results", {})
    return (
        DeliverMessage(
            event(), workflow.name, workflow.fingerprint, action, attempt, results
        ).to_json()
        | extra
    )


async def one(kit: Kit, server: Server, method: str, body: Any, **options: Any) -> Step:
    """One call of the deliverer on a fresh store and automations."""
    clock = options.pop("clock", None) or FakeClock()
    store = kit.store()
    try:
        async with automations(server, clock=clock, **options.pop("settings", {})) as auto:
            deliverer = Deliverer(auto, store, OWNER, **options)
            step: Step = await getattr(deliverer, method)(body)
            return step
    finally:
        await store.aclose()


KEY0 = idempotency_key("evt-1", "sync", "post")
KEY1 = idempotency_key("evt-1", "sync", "after")


# --- accept -------------------------------------------------------------------------------------


def test_accept_fans_out_one_deliver_per_matching_workflow_then_is_a_duplicate(
    kit: Kit, server: Server
) -> None:
    async def work(store: SharedStore) -> list[Step]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER)
            first = await deliverer.accept(accept_body())
            assert first.confirm is not None
            before = await deliverer.accept(accept_body())
            await first.confirm()
            return [first, before, await deliverer.accept(accept_body())]

    first, before, after = kit.run(work)
    assert first.outcome == "fanned_out" and first.error is None
    [(task, body)] = first.publish
    assert task == DELIVER_TASK
    assert DeliverMessage.from_json(body) == DeliverMessage.from_json(deliver_body(server))
    assert before.outcome == "deferred" and before.publish == []
    assert after.outcome == "duplicate" and after.publish == []
    # the deferred accept waits in the due set until the first claim lapses (60 s)
    [(member, score)] = kit.due()
    assert member["task"] == "flowlang.accept" and member["body"]["event"]["id"] == "evt-1"
    assert NOW + 59 < score <= NOW + 60


def test_a_failing_condition_is_reported_and_the_other_workflows_run(
    kit: Kit, server: Server
) -> None:
    other = WORKFLOW.replace("workflow: sync", "workflow: other")

    async def work(store: SharedStore) -> Step:
        async with automations(server) as auto:
            from flowlang.automations import Automations

            second = load_workflow_text(other.replace("{port}", str(server.port)))

            def broken(scope: Any) -> bool:
                raise RecursionError("too deep")

            object.__setattr__(second, "condition", broken)
            both = Automations(
                [*auto.workflows, second],
                settings=auto.settings,
                secrets=auto.secrets,
                clock=auto.clock,
            )
            return await Deliverer(both, store, OWNER).accept(accept_body())

    step = kit.run(work)
    assert step.outcome == "fanned_out" and len(step.publish) == 1
    assert step.error and "workflow 'other': its conditions failed: RecursionError" in step.error


def test_an_event_no_workflow_matches_fans_out_nothing(kit: Kit, server: Server) -> None:
    body = accept_body() | {"event": {"id": "evt-9", "type": "sms.received"}}
    step = run(lambda: one(kit, server, "accept", body))
    assert step.outcome == "fanned_out" and step.publish == []


def test_five_concurrent_accepts_of_one_event_give_one_fan_out(kit: Kit, server: Server) -> None:
    async def work(store: SharedStore) -> list[Step]:
        async with automations(server) as auto:
            deliverers = [Deliverer(auto, store, f"worker-{n}") for n in range(5)]
            steps = await asyncio.gather(*(d.accept(accept_body()) for d in deliverers))
            for step in steps:
                if step.confirm is not None:
                    await step.confirm()
            # the deferred ones come back when their wait is over: duplicates then
            due = await store.take_due(NOW + 3600, 10)
            later = [await deliverers[0].accept(body) for _, _, body in due]
            return [*steps, *later]

    steps = kit.run(work)
    outcomes = [step.outcome for step in steps]
    assert outcomes.count("fanned_out") == 1
    assert sorted(outcomes[:5]) == ["deferred"] * 4 + ["fanned_out"]
    assert outcomes[5:] == ["duplicate"] * 4
    assert sum(len(step.publish) for step in steps) == 1


TWO_PROCESSES = """
import asyncio, json, sys, time
sys.path.insert(0, {tests!r})
from distributed_support import accept_body
from flowlang.automations import Automations, load_workflow_text
from flowlang.distributed.deliverer import Deliverer
from flowlang.distributed.shared import SharedStore

async def main():
    workflow = load_workflow_text({workflow!r})
    store = SharedStore.from_url({url!r}, prefix={prefix!r})
    auto = Automations([workflow])
    deliverers = [Deliverer(auto, store, "proc{name}-" + str(n)) for n in range(5)]
    await store.due_count()  # connected before the start
    time.sleep(max(0.0, {start!r} - time.time()))
    steps = await asyncio.gather(*(d.accept(accept_body()) for d in deliverers))
    for step in steps:
        if step.confirm is not None:
            await step.confirm()
    print(json.dumps([[s.outcome, len(s.publish)] for s in steps]))
    await store.aclose()

asyncio.run(asyncio.wait_for(main(), 30))
"""


def test_five_accepts_from_each_of_two_processes_give_one_fan_out(kit: Kit, server: Server) -> None:
    start = time.time() + 3.0
    tests = str(Path(__file__).parent)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    TWO_PROCESSES.format(
                        tests=tests,
                        workflow=WORKFLOW.replace("{port}", str(server.port)),
                        url=kit.url,
                        prefix=kit.prefix,
                        name=name,
                        start=start,
                    )
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            start_new_session=True,
        )
        for name in "ab"
    ]
    outputs = []
    for child in children:
        try:
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, 9)
                child.wait(10)
        assert child.returncode == 0, err
        outputs += json.loads(out)
    outcomes = [outcome for outcome, _ in outputs]
    assert len(outcomes) == 10 and outcomes.count("fanned_out") == 1
    assert set(outcomes) <= {"fanned_out", "deferred", "duplicate"}
    assert sum(published for _, published in outputs) == 1


def test_a_claim_held_elsewhere_defers_the_accept_to_its_lapse(kit: Kit, server: Server) -> None:
    async def work(store: SharedStore) -> Step:
        assert await store.claim_event("evt-1", "someone-else", 12.5) == ("new", 0)
        return await one(kit, server, "accept", accept_body())

    assert kit.run(work).outcome == "deferred"
    [(member, score)] = kit.due()
    assert member["body"] == accept_body() and NOW + 12 < score <= NOW + 12.5


# --- deliver: the happy path and redelivery -----------------------------------------------------


def test_actions_are_delivered_in_order_with_results_chained_and_masked(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (201, {}, {"id": 42, "echo": f"token {SECRET}"}))

    async def work() -> list[Step]:
        first = await one(kit, server, "deliver", deliver_body(server))
        [(_, following)] = first.publish
        return [first, await one(kit, server, "deliver", following)]

    first, second = run(work)
    assert first.outcome == "delivered" and second.outcome == "delivered"
    following = first.publish[0][1]
    assert (following["action"], following["attempt"]) == (1, 1)
    assert following["results"] == {"post": {"id": 42, "echo": "token [redacted]"}}
    assert second.publish == []
    [post] = server.received.to("crm")
    [after] = server.received.to("after")
    assert post["headers"]["idempotency-key"] == KEY0
    assert after["headers"]["idempotency-key"] == KEY1
    assert json.loads(after["body"]) == {"id": "42"}
    stored = kit.everything()
    assert SECRET not in stored and SECRET not in json.dumps(first.publish)
    assert f"{kit.prefix}lease:{KEY0}".encode() not in list(kit.raw.scan_iter(f"{kit.prefix}*"))
    assert kit.raw.hget(f"{kit.prefix}act:{KEY0}", "outcome") == b"delivered"


def test_a_redelivered_deliver_after_the_ledger_write_republishes_without_sending(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (200, {}, {"id": 7}))

    async def work() -> list[Step]:
        body = deliver_body(server)
        first = await one(kit, server, "deliver", body)
        return [first, await one(kit, server, "deliver", body)]

    first, again = run(work)
    assert first.outcome == "delivered" and again.outcome == "settled_before"
    assert again.publish == first.publish
    assert len(server.received.to("crm")) == 1


def test_the_last_action_settled_before_publishes_nothing(kit: Kit, server: Server) -> None:
    body = deliver_body(server, action=1, results={"post": {"id": 1}})

    async def work() -> list[Step]:
        return [await one(kit, server, "deliver", body), await one(kit, server, "deliver", body)]

    first, again = run(work)
    assert (first.outcome, again.outcome) == ("delivered", "settled_before")
    assert first.publish == again.publish == []
    assert len(server.received.to("after")) == 1


def test_a_lease_held_elsewhere_defers_the_attempt_to_its_lapse(kit: Kit, server: Server) -> None:
    async def work(store: SharedStore) -> Step:
        assert await store.take_lease(KEY0, "worker-2", 20.0) is None
        return await one(kit, server, "deliver", deliver_body(server))

    step = kit.run(work)
    assert step.outcome == "deferred" and step.publish == []
    assert server.received.to("crm") == []
    [(member, score)] = kit.due()
    assert member == {"task": DELIVER_TASK, "body": deliver_body(server), "id": member["id"]}
    assert NOW + 19 < score <= NOW + 20


# --- deliver: retries and dead letters ----------------------------------------------------------


def test_a_503_schedules_the_next_attempt_on_the_schedule_and_gives_the_lease_back(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (503, {}, {"error": f"down {SECRET}"}))
    step = run(lambda: one(kit, server, "deliver", deliver_body(server)))
    assert step.outcome == "retry" and step.publish == []
    assert step.error and "503" in step.error and SECRET not in step.error
    [(member, score)] = kit.due()
    assert member["body"] == deliver_body(server, attempt=2) and score == NOW + 5
    assert kit.raw.exists(f"{kit.prefix}lease:{KEY0}") == 0
    assert kit.raw.hgetall(f"{kit.prefix}act:{KEY0}") == {b"tried": b"1"}  # not settled
    assert SECRET not in kit.everything()


def test_a_permanent_400_is_one_dead_letter_and_no_retry(kit: Kit, server: Server) -> None:
    server.received.script("crm", (400, {}, {"error": f"bad token {SECRET}"}))

    async def work() -> list[Any]:
        step = await one(kit, server, "deliver", deliver_body(server))
        store = kit.store()
        try:
            return [step, await store.dead_letters(), await store.settled(KEY0)]
        finally:
            await store.aclose()

    step, dead, settled = run(work)
    assert step.outcome == "dead" and step.publish == []
    assert step.error and "400" in step.error and "(stopped after)" in step.error
    [(_, record)] = dead
    assert record["format"] == "flowlang.deadletter/1"
    assert (record["workflow"], record["action"], record["then"]) == ("sync", "post", ["after"])
    assert record["idempotency_key"] == KEY0 and record["attempts"] == 1
    assert record["event"] == event() and record["workflow_source"].startswith("\nworkflow: sync")
    assert settled is not None and settled["outcome"] == "dead_lettered"
    assert kit.due() == [] and len(server.received.to("crm")) == 1
    assert SECRET not in kit.everything() and SECRET not in json.dumps(record)


def test_a_dead_action_without_stop_on_failure_goes_on_with_the_next(
    kit: Kit, server: Server
) -> None:
    text = WORKFLOW.replace(
        "    headers: {Authorization", "    stop_on_failure: false\n    headers: {Authorization"
    )
    server.received.script("crm", (404, {}, {}))

    async def work(store: SharedStore) -> Step:
        async with automations(server, text=text) as auto:
            workflow = auto.workflows[0]
            body = DeliverMessage(event(), "sync", workflow.fingerprint, 0).to_json()
            return await Deliverer(auto, store, OWNER).deliver(body)

    step = kit.run(work)
    assert step.outcome == "dead"
    [(task, following)] = step.publish
    assert task == DELIVER_TASK and following["action"] == 1 and following["results"] == {}
    [(_, _, record)] = [
        (0, 0, json.loads(r[1][b"record"])) for r in kit.raw.xrange(f"{kit.prefix}dead")
    ]
    assert record["then"] == []


def test_a_retryable_failure_on_the_last_attempt_is_dead_as_exhausted(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (503, {}, {}))
    step = run(lambda: one(kit, server, "deliver", deliver_body(server, attempt=3)))
    assert step.outcome == "dead" and kit.due() == []
    [entry] = kit.raw.xrange(f"{kit.prefix}dead")
    assert json.loads(entry[1][b"record"])["attempts"] == 3


# --- hostile bodies and a rolling deploy --------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


HOSTILE: dict[str, Any] = {
    "none": None,
    "text": "flowlang.deliver",
    "list": [1, 2],
    "empty": {},
    "version-2": {"v": 2},
    "no-event": {"v": 1, "workflow": "sync"},
    "event-without-id": {"v": 1, "event": {"type": "call.ended"}, "received_at": 1.0},
    "deep-event": {"v": 1, "event": {"id": "e", "deep": deep(500)}, "received_at": 1.0},
    "huge-event": {"v": 1, "event": {"id": "e", "x": "y" * 2_000_000}, "received_at": 1.0},
    "nan-time": {"v": 1, "event": {"id": "e"}, "received_at": float("nan"), "source": "s"},
    "surrogates": {"v": 1, "event": {"id": "\ud800"}, "workflow": "\udfff", "received_at": 1},
    "bad-attempt": {
        "v": 1,
        "event": {"id": "e"},
        "workflow": "sync",
        "fingerprint": "f",
        "action": 0,
        "attempt": 0,
        "results": {},
    },
    "results-not-object": {
        "v": 1,
        "event": {"id": "e"},
        "workflow": "sync",
        "fingerprint": "f",
        "action": 0,
        "results": [],
    },
}


@pytest.mark.parametrize("method", ["accept", "deliver"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_body_that_is_not_a_message_is_refused_without_raising(
    kit: Kit, server: Server, method: str, name: str
) -> None:
    step = run(lambda: one(kit, server, method, HOSTILE[name]))
    assert step.outcome == "refused" and step.publish == [] and step.confirm is None
    assert step.error and len(step.error) < 2000
    assert kit.due() == [] and server.received.requests == []


def test_an_action_number_beyond_the_workflow_is_refused(kit: Kit, server: Server) -> None:
    step = run(lambda: one(kit, server, "deliver", deliver_body(server, action=5)))
    assert step.outcome == "refused" and step.error and "no action number 5" in step.error


def test_an_unknown_workflow_version_is_tried_again_then_dead_as_workflow_changed(
    kit: Kit, server: Server
) -> None:
    clock = FakeClock()
    body = deliver_body(server) | {"fingerprint": "f" * 64}

    async def work() -> list[Step]:
        first = await one(kit, server, "deliver", body, clock=clock)
        [(member, score)] = kit.due()
        assert score == NOW + 60 and member["body"]["unknown_since"] == NOW
        kit.raw.delete(f"{kit.prefix}due")
        clock.current += 1800
        second = await one(kit, server, "deliver", member["body"], clock=clock)
        [(member, score)] = kit.due()
        assert score == NOW + 1860 and member["body"]["unknown_since"] == NOW
        kit.raw.delete(f"{kit.prefix}due")
        clock.current += 1800
        third = await one(kit, server, "deliver", member["body"], clock=clock)
        return [first, second, third]

    first, second, third = run(work)
    assert (first.outcome, second.outcome, third.outcome) == ("deferred", "deferred", "dead")
    assert first.error and "is not loaded (this worker has version" in first.error
    assert third.error and third.error.startswith("workflow changed:")
    [entry] = kit.raw.xrange(f"{kit.prefix}dead")
    record = json.loads(entry[1][b"record"])
    assert record["format"] == "flowlang.deadletter/1" and record["workflow_source"] is None
    assert record["workflow_fingerprint"] == "f" * 64 and record["event"] == event()
    assert kit.due() == [] and server.received.requests == []


def test_an_unknown_since_that_is_not_a_time_counts_from_now(kit: Kit, server: Server) -> None:
    body = deliver_body(server) | {"fingerprint": "f" * 64, "unknown_since": -1e300}
    step = run(lambda: one(kit, server, "deliver", body))
    assert step.outcome == "dead"  # long ago is long ago
    body = deliver_body(server) | {"fingerprint": "f" * 64, "unknown_since": "yesterday"}
    assert run(lambda: one(kit, server, "deliver", body)).outcome == "deferred"


# --- the whole path, in one process ---------------------------------------------------------


def test_an_event_through_accept_and_both_actions(kit: Kit, server: Server) -> None:
    server.received.script("crm", (200, {}, {"id": 5}))

    async def work(store: SharedStore) -> Broker:
        async with automations(server) as auto:
            broker = Broker(Deliverer(auto, store, OWNER))
            await broker.publish("flowlang.accept", accept_body())
            await broker.publish("flowlang.accept", accept_body())  # a duplicate
            await broker.work(lambda: broker.queue.empty() and len(broker.steps) >= 4)
            return broker

    broker = kit.run(work)
    assert broker.outcomes() == ["fanned_out", "duplicate", "delivered", "delivered"]
    assert len(server.received.to("crm")) == 1 and len(server.received.to("after")) == 1


def test_an_unreachable_store_is_a_clear_error_and_nothing_is_sent(server: Server) -> None:
    import socket

    from flowlang import SharedStoreError
    from flowlang.distributed.shared import SharedStore

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "deliverer-store-pw-19ad"

    async def work(method: str, body: Any) -> Step:
        store = SharedStore.from_url(f"redis://:{password}@127.0.0.1:{port}/0")
        try:
            async with automations(server) as auto:
                step: Step = await getattr(Deliverer(auto, store, OWNER), method)(body)
                return step
        finally:
            await store.aclose()

    for method, body in (("accept", accept_body()), ("deliver", deliver_body(server))):
        with pytest.raises(SharedStoreError) as caught:
            run(lambda: work(method, body))  # noqa: B023 (run at once)
        assert "127.0.0.1" in str(caught.value) and password not in str(caught.value)
    assert server.received.requests == []


def test_an_owner_must_be_a_key_part(kit: Kit, server: Server) -> None:
    with pytest.raises(ValueError, match="owner"):
        Deliverer(automations(server), kit.store(), "two words")


# --- replay through the workers -----------------------------------------------------------------


def test_a_dead_letter_replayed_through_the_workers_is_delivered_and_its_chain_goes_on(
    kit: Kit, server: Server
) -> None:
    server.received.script("crm", (400, {}, {"error": "bad"}), (200, {}, {"id": 3}))

    async def work(store: SharedStore) -> Broker:
        async with automations(server) as auto:
            broker = Broker(Deliverer(auto, store, OWNER))
            await broker.handle(DELIVER_TASK, deliver_body(server))
            [(entry, record)] = await store.dead_letters()
            step = await broker.deliverer.replay(record)
            assert step.outcome == "replayed" and step.error is None
            await store.remove_dead(entry)
            for task, body in step.publish:
                await broker.publish(task, body)
            await broker.work(lambda: len(broker.steps) >= 3)
            assert await store.dead_count() == 0
            return broker

    broker = kit.run(work)
    assert broker.outcomes() == ["dead", "delivered", "delivered"]
    assert len(server.received.to("crm")) == 2 and len(server.received.to("after")) == 1
    assert kit.raw.hget(f"{kit.prefix}act:{KEY0}", "outcome") == b"delivered"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"format": "other"}, "not a flowlang dead-letter record"),
        ({"workflow_fingerprint": "f" * 64}, "is not loaded here"),
        ({"workflow": "another"}, "is not loaded here"),
        ({"action": "nope"}, "has no action 'nope'"),
        ({"event": {"no": "id"}}, "needs an id"),
        ({"results": [1]}, "results are not an object"),
    ],
)
def test_a_record_that_cannot_be_replayed_here_is_refused(
    kit: Kit, server: Server, change: dict[str, Any], error: str
) -> None:
    workflow = load_workflow_text(WORKFLOW.replace("{port}", str(server.port)))
    record = {
        "format": "flowlang.deadletter/1",
        "workflow": "sync",
        "workflow_fingerprint": workflow.fingerprint,
        "action": "post",
        "event": event(),
        "results": {},
    } | change
    step = run(lambda: one(kit, server, "replay", record))
    assert step.outcome == "refused" and step.error and error in step.error
    assert step.publish == []


def test_replay_refuses_what_is_not_a_record(kit: Kit, server: Server) -> None:
    for record in (None, [], "text", {"format": "flowlang.deadletter/1"}):
        assert run(lambda: one(kit, server, "replay", record)).outcome == "refused"  # noqa: B023


# --- copies, leases, dead letters and replays (from the red-team review) --------------------


def due_deliveries(kit: Kit) -> list[tuple[int, int]]:
    """(action, attempt) of every deliver message waiting in the due set."""
    return sorted(
        (member["body"]["action"], member["body"]["attempt"])
        for member, _ in kit.due()
        if member["task"] == DELIVER_TASK
    )


class Outbox:
    """A publish function that records what it published."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, task: str, body: dict[str, Any]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent.append((self.name, task, body))


def test_a_redelivered_copy_of_an_attempt_whose_retry_is_scheduled_is_stale_and_not_sent(
    kit: Kit, server: Server
) -> None:
    """Attempt 1 answers 503: attempt 2 is scheduled (and attempt 1 marked tried and the
    lease given back in the same step), then that step's reply is lost (the task is not acked
    and the broker delivers it again). The redelivered attempt 1 is stale: not sent again, no
    second attempt 2."""
    server.received.script("crm", (503, {}, {}), (503, {}, {}))
    body = deliver_body(server)

    async def work(store: SharedStore) -> list[Step]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, lease=0.5)
            fail_once(store, "record_retry", after=True)
            with pytest.raises(SharedStoreError):
                await deliverer.deliver(body)  # attempt 1 made, attempt 2 scheduled
            again = await deliverer.deliver(body)  # the broker's redelivery
            steps = [again]
            if again.outcome == "deferred":  # our own lease: tried when it lapses
                await asyncio.sleep(0.6)
                steps.append(await deliverer.deliver(body))  # as the pump republishes it
            return steps

    steps = kit.run(work)
    outcomes = [step.outcome for step in steps]
    sent = len(server.received.to("crm"))
    assert sent == 1, f"attempt 1 reached the receiver {sent} times (steps {outcomes})"
    assert due_deliveries(kit) == [(0, 2)], f"pending attempts {due_deliveries(kit)}"


def test_a_retry_published_twice_by_the_pump_is_sent_once_and_scheduled_once(
    kit: Kit, server: Server
) -> None:
    """The pump publishes a due retry, Redis fails on ``published`` and the next round
    publishes it again once stale: two copies of attempt 2 reach the workers. The first makes
    attempt 2 (503) and schedules attempt 3; the second is stale."""
    server.received.script("crm", (503, {}, {}), (503, {}, {}), (503, {}, {}))
    clock = FakeClock()

    async def work(store: SharedStore) -> None:
        async with automations(server, clock=clock) as auto:
            deliverer = Deliverer(auto, store, OWNER)
            outbox = Outbox("pump")
            first = await deliverer.deliver(deliver_body(server))  # 503: attempt 2 in 5 s
            assert first.outcome == "retry"
            pump = Pump(store, outbox, "pump-1", clock=clock, stale=30.0)
            fail_once(store, "published")
            clock.current += 5
            with pytest.raises(SharedStoreError):
                await pump.run_once()  # published to the broker, then the blip
            clock.current += 31
            await pump.run_once()  # stale: published again
            for _, task, body in outbox.sent:
                assert task == DELIVER_TASK
                await deliverer.deliver(body)

    kit.run(work)
    sent = len(server.received.to("crm"))
    assert sent == 2, f"attempts 1 and 2 should be 2 requests; the receiver saw {sent}"
    assert due_deliveries(kit) == [(0, 3)], f"pending attempts {due_deliveries(kit)}"


def test_a_store_failure_after_the_dead_letter_gives_one_dead_letter_per_action(
    kit: Kit, server: Server
) -> None:
    """A 400: the dead letter and the ledger entry are written in one step, then the reply is
    lost (SharedStoreError: the broker delivers the message again). The redelivered copy
    sends nothing and adds no dead letter; a replay that fails again replaces the dead letter
    rather than adding a second."""
    server.received.script("crm", (400, {}, {}), (400, {}, {}))

    async def work(store: SharedStore) -> list[Step]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, lease=0.3)
            fail_once(store, "record_dead", after=True)
            body = deliver_body(server)
            with pytest.raises(SharedStoreError):
                await deliverer.deliver(body)
            await asyncio.sleep(0.4)  # our lease lapses (60 s by default)
            steps = [await deliverer.deliver(body)]  # the broker's redelivery
            for _, record in await store.dead_letters():
                steps.append(await deliverer.replay(record))
            for step in steps[1:]:
                for _, message in step.publish:
                    steps.append(await deliverer.deliver(message))
            return steps

    steps = kit.run(work)
    dead = kit.raw.xlen(f"{kit.prefix}dead")
    sent = len(server.received.to("crm"))
    outcomes = [step.outcome for step in steps]
    assert dead == 1, f"{dead} dead letters for one action ({outcomes})"
    assert outcomes == ["settled_before", "replayed", "dead"]
    assert sent == 2, f"the receiver saw {sent} requests for one action ({outcomes})"


def test_replaying_a_dead_letter_whose_action_was_since_delivered_is_settled_before(
    kit: Kit, server: Server
) -> None:
    """A dead letter is replayed and delivered; replaying the same record again (an operator
    running replay twice, or the replay task redelivered) answers settled_before: the ledger
    entry is forgotten only while it says dead_lettered."""
    server.received.script("crm", (400, {}, {}), (200, {}, {"id": 1}))

    async def work(store: SharedStore) -> list[str]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER)
            outcomes = [(await deliverer.deliver(deliver_body(server))).outcome]
            [(_, record)] = await store.dead_letters()
            for _ in range(2):
                step = await deliverer.replay(record)
                outcomes.append(step.outcome)
                for _, message in step.publish:
                    outcomes.append((await deliverer.deliver(message)).outcome)
            return outcomes

    outcomes = kit.run(work)
    sent = len(server.received.to("crm"))
    assert sent == 2, f"the receiver saw {sent} requests: {outcomes}"


def test_a_workflow_changed_dead_letter_is_replayed_where_that_version_is_loaded(
    kit: Kit, server: Server
) -> None:
    """A worker without the message's workflow version dead-letters it after the limit
    (action None, action_index kept); a worker with that version loaded replays it from the
    index."""
    old = automations(server)  # the version the event was fanned out for
    fingerprint = old.workflows[0].fingerprint
    newer = WORKFLOW.replace(
        "format: string}\n  - name: after",
        'format: string}\n      - {key: v, value: "2", format: string}\n  - name: after',
    )
    clock = FakeClock()

    async def work(store: SharedStore) -> tuple[Step, Step]:
        async with automations(server, text=newer, clock=clock) as auto:
            assert auto.workflows[0].fingerprint != fingerprint
            body = deliver_body(server) | {"unknown_since": NOW - 7200}
            dead = await Deliverer(auto, store, OWNER).deliver(body)
        [(_, record)] = await store.dead_letters()
        async with old:
            replayed = await Deliverer(old, store, OWNER).replay(record)
        return dead, replayed

    dead, replayed = kit.run(work)
    assert dead.outcome == "dead" and dead.error and dead.error.startswith("workflow changed")
    assert replayed.outcome == "replayed", f"refused: {replayed.error}"


def test_a_deliver_message_accepted_as_valid_survives_its_retry_in_the_due_set(
    kit: Kit, server: Server
) -> None:
    """DeliverMessage.from_json accepts results nested up to MAX_RECORD_DEPTH (136); its
    retry waits in the due set (two levels deeper) and the pump publishes it, not sets it
    aside."""
    server.received.script("crm", (503, {}, {}))
    clock = FakeClock()
    body = deliver_body(server, results={"earlier": deep(134)})
    DeliverMessage.from_json(body)  # a valid message

    async def work(store: SharedStore) -> tuple[Step, Outbox, int]:
        async with automations(server, clock=clock) as auto:
            step = await Deliverer(auto, store, OWNER).deliver(body)
        outbox = Outbox("pump")
        clock.current += 3600
        await Pump(store, outbox, "pump-1", clock=clock).run_once()
        return step, outbox, await store.bad_count()

    step, outbox, bad = kit.run(work)
    assert step.outcome == "retry"
    assert bad == 0 and len(outbox.sent) == 1, (
        f"the scheduled retry was moved to bad ({bad}); published {len(outbox.sent)}"
    )


def test_an_attempt_longer_than_its_lease_renews_it_and_is_never_made_twice_at_once(
    kit: Kit, server: Server
) -> None:
    """An attempt (2 s here) longer than its lease (0.5 s) renews the lease every third of
    it: a second copy of the message arriving meanwhile is deferred, not sent."""
    server.received.script("crm", (0, {}, {}))  # the first request hangs until the timeout

    async def work() -> list[str]:
        store = kit.store()
        try:
            text = WORKFLOW.replace(
                "    headers: {Authorization", "    timeout: 2\n    headers: {Authorization"
            )
            async with automations(server, text=text) as auto:
                deliverer = Deliverer(auto, store, OWNER, lease=0.5)
                fingerprint = auto.workflows[0].fingerprint
                body = DeliverMessage(event(), "sync", fingerprint, 0).to_json()
                first = asyncio.create_task(deliverer.deliver(body))
                await asyncio.sleep(0.8)
                second = await deliverer.deliver(body)  # a redelivered copy
                return [(await first).outcome, second.outcome]
        except ValueError:
            return ["refused at construction"]  # also acceptable: a lease too short is refused
        finally:
            await store.aclose()

    outcomes = run(work)
    sent = len(server.received.to("crm"))
    assert sent <= 1, f"two attempts in flight at once ({outcomes}); the receiver saw {sent}"


def test_the_accept_claim_is_renewed_while_a_slow_fan_out_is_published(
    kit: Kit, server: Server
) -> None:
    """The accept claim (0.3 s here) is renewed while the fan-out is being published (until
    confirm): a duplicate of the event arriving meanwhile is deferred, not fanned out again."""

    async def work(store: SharedStore) -> list[Step]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, accept_lease=0.3)
            first = await deliverer.accept(accept_body())
            await asyncio.sleep(0.4)  # publishing first.publish takes a while
            second = await Deliverer(auto, store, "worker-2", accept_lease=0.3).accept(
                accept_body()
            )
            assert first.confirm is not None
            await first.confirm()
            if second.confirm is not None:
                await second.confirm()
            return [first, second]

    steps = kit.run(work)
    fan_outs = [step.outcome for step in steps].count("fanned_out")
    assert fan_outs == 1, f"{fan_outs} fan-outs of one event: {[s.outcome for s in steps]}"


@pytest.mark.parametrize("lease", [0.0005, 4e8])
def test_a_lease_the_store_cannot_hold_is_refused_at_construction(
    kit: Kit, server: Server, lease: float
) -> None:
    """The store holds leases of 0.001 s to ten years (renewed every third): outside that a
    Deliverer is refused at once, not every message later."""

    async def work(store: SharedStore) -> str:
        async with automations(server) as auto:
            try:
                deliverer = Deliverer(auto, store, OWNER, lease=lease, accept_lease=lease)
            except ValueError:
                return "refused at construction"
            step = await deliverer.deliver(deliver_body(server))
            return f"deliver {step.outcome}: {step.error}"

    assert kit.run(work) == "refused at construction"


def test_a_redelivered_attempt_is_not_sent_before_the_retry_after_the_receiver_asked(
    kit: Kit, server: Server
) -> None:
    """The receiver answers 429 with Retry-After: 3600; attempt 2 is scheduled an hour later,
    then the reply of that step (which also gives the lease back) is lost. The redelivered
    attempt 1 is stale: nothing is sent before the hour the receiver asked for."""
    server.received.script("crm", (429, {"Retry-After": "3600"}, {}), (429, {}, {}))
    body = deliver_body(server)

    async def work(store: SharedStore) -> float:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, lease=0.5)
            fail_once(store, "record_retry", after=True)
            with pytest.raises(SharedStoreError):
                await deliverer.deliver(body)
            [(_, due)] = kit.due()
            if (await deliverer.deliver(body)).outcome == "deferred":
                await asyncio.sleep(0.6)
                await deliverer.deliver(body)  # the deferred copy, republished
            return due

    due = kit.run(work)
    assert due >= NOW + 3600
    sent = len(server.received.to("crm"))
    assert sent == 1, f"{sent} requests within a second of a Retry-After of 3600 s"


def test_replaying_an_old_dead_letter_sends_only_its_action_and_those_it_stopped(
    kit: Kit, server: Server
) -> None:
    """Action "post" (stop_on_failure: false) is dead with a 404, action "after" is
    delivered. Once the ledger entries expired (ledger_ttl; 1 s here), replaying the dead
    letter sends "post" only: its then is [] (the deliver message carries ``last``)."""
    text = WORKFLOW.replace(
        "    headers: {Authorization", "    stop_on_failure: false\n    headers: {Authorization"
    )
    server.received.script("crm", (404, {}, {}), (200, {}, {"id": 5}))

    async def work() -> list[str]:
        store = kit.store(ledger_ttl=1.0)
        try:
            async with automations(server, text=text) as auto:
                deliverer = Deliverer(auto, store, OWNER)
                fingerprint = auto.workflows[0].fingerprint
                body = DeliverMessage(event(), "sync", fingerprint, 0).to_json()
                pending = [(DELIVER_TASK, body)]
                outcomes = []
                while pending:
                    _, message = pending.pop(0)
                    step = await deliverer.deliver(message)
                    outcomes.append(step.outcome)
                    pending += step.publish
                [(_, record)] = await store.dead_letters()
                assert record["then"] == []
                await asyncio.sleep(1.2)  # a week later
                pending = list((await deliverer.replay(record)).publish)
                while pending:
                    _, message = pending.pop(0)
                    step = await deliverer.deliver(message)
                    outcomes.append(step.outcome)
                    pending += step.publish
                return outcomes
        finally:
            await store.aclose()

    outcomes = run(work)
    after = len(server.received.to("after"))
    assert after == 1, f'"after" was sent {after} times ({outcomes})'


def test_a_dead_letter_too_large_to_keep_is_written_trimmed_not_lost(
    kit: Kit, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400 for a message whose results make the dead letter larger than the store keeps:
    the dead letter is written without its event and results (a note says so), the ledger
    settles the action; nothing is dropped."""
    monkeypatch.setattr("flowlang.distributed.shared.MAX_MEMBER_BYTES", 8000)
    server.received.script("crm", (400, {}, {}))
    body = deliver_body(server, results={"earlier": "long result " * 1000})
    step = run(lambda: one(kit, server, "deliver", body))
    assert step.outcome == "dead"
    [(_, record)] = run(lambda: dead_records(kit))
    assert record["event"] == {"id": "evt-1"} and record["results"] == {}
    assert "too large" in record["trimmed"] and record["action"] == "post"
    assert kit.raw.hget(f"{kit.prefix}act:{KEY0}", "outcome") == b"dead_lettered"


def test_a_retry_the_store_refuses_becomes_a_dead_letter_not_a_silent_drop(
    kit: Kit, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 whose next attempt the due set cannot take (too large here): the message is
    dead-lettered (trimmed), never refused and dropped."""
    monkeypatch.setattr("flowlang.distributed.shared.MAX_MEMBER_BYTES", 8000)
    server.received.script("crm", (503, {}, {}))
    body = deliver_body(server, results={"earlier": "long result " * 1000})
    step = run(lambda: one(kit, server, "deliver", body))
    assert step.outcome == "dead" and step.error and "larger than" in step.error
    [(_, record)] = run(lambda: dead_records(kit))
    assert record["trimmed"] and record["action"] == "post"
    assert kit.due() == []


async def dead_records(kit: Kit) -> list[tuple[str, dict[str, Any]]]:
    store = kit.store()
    try:
        return await store.dead_letters()
    finally:
        await store.aclose()


def test_a_deliver_message_carries_its_last_action_and_checks_it() -> None:
    message = DeliverMessage(event(), "sync", "f" * 64, 0, 1, {}, last=0)
    body = message.to_json()
    assert body["last"] == 0 and DeliverMessage.from_json(body) == message
    assert message.next_attempt().last == 0 and message.ends_here()
    assert "last" not in DeliverMessage(event(), "sync", "f" * 64, 0).to_json()
    with pytest.raises(ValueError, match="last"):
        DeliverMessage.from_json(body | {"action": 1})  # last before the action
    with pytest.raises(ValueError, match="last"):
        DeliverMessage.from_json(body | {"last": "0"})


def test_an_abandoned_fan_out_stops_renewing_its_claim(kit: Kit, server: Server) -> None:
    """Publishing the fan-out failed: abandon stops the renewal and the claim lapses, so the
    redelivered accept fans the event out."""

    async def work(store: SharedStore) -> list[str]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, accept_lease=0.3)
            first = await deliverer.accept(accept_body())
            assert first.abandon is not None
            await first.abandon()
            await asyncio.sleep(0.4)
            second = await deliverer.accept(accept_body())
            if second.abandon is not None:
                await second.abandon()
            return [first.outcome, second.outcome]

    assert kit.run(work) == ["fanned_out", "fanned_out"]


def test_a_copy_of_an_attempt_that_crashed_before_its_outcome_is_attempted_again(
    kit: Kit, server: Server
) -> None:
    """A worker took the lease and died mid-attempt (no outcome recorded): once its lease
    lapses, the redelivered copy of the same attempt is made (the crash matrix's allowed
    duplicate, with the same Idempotency-Key)."""
    server.received.script("crm", (200, {}, {"id": 3}))
    kit.raw.set(f"{kit.prefix}lease:{KEY0}", "worker-0:crashed", px=300)
    body = deliver_body(server)

    async def work(store: SharedStore) -> list[str]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER)
            first = await deliverer.deliver(body)
            await asyncio.sleep(0.4)
            return [first.outcome, (await deliverer.deliver(body)).outcome]

    assert kit.run(work) == ["deferred", "delivered"]
    assert len(server.received.to("crm")) == 1


# --- Redis round trips per delivery ------------------------------------------------------------


def count_round_trips(store: SharedStore) -> dict[str, int]:
    """Count the commands the store's client sends (each one a round trip), by name."""
    counts: dict[str, int] = {}
    send = store._client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        counts[str(args[0])] = counts.get(str(args[0]), 0) + 1
        return await send(*args, **options)

    store._client.execute_command = counted  # type: ignore[method-assign]
    return counts


def test_a_delivery_is_four_round_trips_to_redis(kit: Kit, server: Server) -> None:
    """Accept (claim), the attempt's start (ledger, copy check and lease in one step), its
    outcome (ledger and the lease given back in one step), the fan-out's confirmation: four
    round trips for an event's first action; two for a later action or a retry."""
    server.received.script("after", (200, {}, {}), (503, {}, {}))

    async def work(store: SharedStore) -> list[dict[str, int]]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER)
            warm = await deliverer.accept(accept_body("evt-warm"))  # each script loaded once
            [(_, message)] = warm.publish
            [(_, message)] = (await deliverer.deliver(message)).publish
            await deliverer.deliver(message)  # "after": 200
            assert warm.confirm is not None
            await warm.confirm()
            counts = count_round_trips(store)
            seen = []
            accepted = await deliverer.accept(accept_body())
            [(_, first)] = accepted.publish
            delivered = await deliverer.deliver(first)
            assert accepted.confirm is not None
            await accepted.confirm()
            seen.append(dict(counts))
            counts.clear()
            [(_, second)] = delivered.publish
            assert (await deliverer.deliver(second)).outcome == "retry"
            seen.append(dict(counts))
            return seen

    first, retry = kit.run(work)
    assert first == {"EVALSHA": 4}, first
    assert retry == {"EVALSHA": 2}, retry
    assert not [key for key in kit.stored() if ":lease:" in key]


def test_an_attempt_that_fails_unexpectedly_gives_its_lease_back_and_is_dead_lettered(
    kit: Kit, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work(store: SharedStore) -> Step:
        async with automations(server) as auto:

            async def broken(*_: Any, **__: Any) -> Any:
                raise RuntimeError("a bug in the attempt")

            monkeypatch.setattr(auto, "attempt_once", broken)
            return await Deliverer(auto, store, OWNER).deliver(deliver_body(server))

    step = kit.run(work)
    assert step.outcome == "dead" and step.error and "a bug in the attempt" in step.error
    assert kit.raw.exists(f"{kit.prefix}lease:{KEY0}") == 0
    assert kit.raw.hget(f"{kit.prefix}act:{KEY0}", "outcome") == b"dead_lettered"


def test_a_lost_reply_of_the_start_leaves_a_lease_that_lapses_and_the_copy_is_made(
    kit: Kit, server: Server
) -> None:
    """The start's reply is lost (the lease may be taken: SharedStoreError, the message is
    delivered again). The redelivered copy waits for that lease to lapse, then is made once."""
    server.received.script("crm", (200, {}, {"id": 3}))
    body = deliver_body(server)

    async def work(store: SharedStore) -> list[str]:
        async with automations(server) as auto:
            deliverer = Deliverer(auto, store, OWNER, lease=0.3)
            fail_once(store, "start_attempt", after=True)
            with pytest.raises(SharedStoreError):
                await deliverer.deliver(body)
            outcomes = [(await deliverer.deliver(body)).outcome]
            await asyncio.sleep(0.4)
            outcomes.append((await deliverer.deliver(body)).outcome)
            return outcomes

    assert kit.run(work) == ["deferred", "delivered"]
    assert len(server.received.to("crm")) == 1
