"""Red-team reproductions against the distributed automations core (shared store, deliverer,
pump) on a real Redis and the loopback HTTPS receiver. Each test states the promise of issue 13
it checks; a failing test is a confirmed defect (see the report of the review1 branch)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from distributed_support import WORKFLOW, Kit, accept_body, automations, event, run
from servers import Server
from services import RedisServer
from support import NOW, FakeClock

from flowlang.automations import load_workflow_text
from flowlang.automations.dispatch import idempotency_key
from flowlang.distributed.deliverer import Deliverer, Step
from flowlang.distributed.messages import DELIVER_TASK, DeliverMessage
from flowlang.distributed.pump import Pump
from flowlang.errors import SharedStoreError

OWNER = "worker-1"
KEY0 = idempotency_key("evt-1", "sync", "post")


@pytest.fixture
def kit(redis_server: RedisServer) -> Iterator[Kit]:
    made = Kit(redis_server)
    try:
        yield made
    finally:
        made.clean()


def deliver_body(server: Server, action: int = 0, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    workflow = load_workflow_text(WORKFLOW.replace("{port}", str(server.port)))
    results = extra.pop("results", {})
    return (
        DeliverMessage(
            event(), workflow.name, workflow.fingerprint, action, attempt, results
        ).to_json()
        | extra
    )


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


# --- 1. a deliver message handled twice forks the retry chain and sends again ------------------


def test_a_redelivered_attempt_whose_retry_is_already_scheduled_is_not_sent_again(
    kit: Kit, server: Server
) -> None:
    """The worker makes attempt 1 (503), schedules attempt 2, then Redis fails on the lease
    release (SharedStoreError: the task is not acked and the broker delivers it again). The
    redelivered attempt 1 must not reach the receiver a second time, and one attempt 2 must wait
    in the due set, not two (a fork sends every later attempt twice)."""
    server.received.script("crm", (503, {}, {}), (503, {}, {}))
    body = deliver_body(server)

    async def work() -> list[Step]:
        store = kit.store()
        try:
            async with automations(server) as auto:
                deliverer = Deliverer(auto, store, OWNER, lease=0.5)
                release = store.release_lease
                failures = [SharedStoreError("shared store: release_lease failed: reset")]

                async def flaky(key: str, owner: str) -> None:
                    if failures:
                        raise failures.pop()
                    await release(key, owner)

                store.release_lease = flaky  # type: ignore[method-assign]
                with pytest.raises(SharedStoreError):
                    await deliverer.deliver(body)  # attempt 1 made, attempt 2 scheduled
                again = await deliverer.deliver(body)  # the broker's redelivery
                steps = [again]
                if again.outcome == "deferred":  # our own lease: tried when it lapses
                    await asyncio.sleep(0.6)
                    steps.append(await deliverer.deliver(body))  # as the pump republishes it
                return steps
        finally:
            await store.aclose()

    steps = run(work)
    outcomes = [step.outcome for step in steps]
    sent = len(server.received.to("crm"))
    assert sent == 1, f"attempt 1 reached the receiver {sent} times (steps {outcomes})"
    assert due_deliveries(kit) == [(0, 2)], f"pending attempts {due_deliveries(kit)}"


def test_a_deliver_message_published_twice_by_the_pump_is_not_sent_twice(
    kit: Kit, server: Server
) -> None:
    """The pump publishes a due retry, then Redis fails on ``published`` (the member stays in
    the pumping hash) and the next round publishes it again once stale: the broker now holds
    two copies of attempt 2. At-least-once publishing is documented as harmless ("the
    deliverer's ledger and leases make that harmless"); it is not while the action fails."""
    server.received.script("crm", (503, {}, {}), (503, {}, {}), (503, {}, {}))
    clock = FakeClock()

    async def work() -> None:
        store = kit.store()
        try:
            async with automations(server, clock=clock) as auto:
                deliverer = Deliverer(auto, store, OWNER)
                outbox = Outbox("pump")
                first = await deliverer.deliver(deliver_body(server))  # 503: attempt 2 in 5 s
                assert first.outcome == "retry"
                pump = Pump(store, outbox, "pump-1", clock=clock, stale=30.0)
                published = store.published
                failures = [SharedStoreError("shared store: published failed: reset")]

                async def flaky(member: str) -> None:
                    if failures:
                        raise failures.pop()
                    await published(member)

                store.published = flaky  # type: ignore[method-assign]
                clock.current += 5
                with pytest.raises(SharedStoreError):
                    await pump.run_once()  # published to the broker, then the blip
                clock.current += 31
                await pump.run_once()  # stale: published again
                for _, task, body in outbox.sent:
                    assert task == DELIVER_TASK
                    await deliverer.deliver(body)
        finally:
            await store.aclose()

    run(work)
    sent = len(server.received.to("crm"))
    assert sent == 2, f"attempts 1 and 2 should be 2 requests; the receiver saw {sent}"
    assert due_deliveries(kit) == [(0, 3)], f"pending attempts {due_deliveries(kit)}"


# --- 2. the dead path: the dead letter and the ledger are two writes ---------------------------


def test_a_store_failure_between_the_dead_letter_and_the_ledger_gives_one_dead_letter(
    kit: Kit, server: Server
) -> None:
    """A 400: the deliverer adds the dead letter, then Redis fails on the ledger write. The
    redelivered message sends the request again and adds a second dead letter; replaying both
    (after the receiver is fixed) delivers the action twice."""
    server.received.script("crm", (400, {}, {}), (400, {}, {}))

    async def work() -> list[Step]:
        store = kit.store()
        try:
            async with automations(server) as auto:
                deliverer = Deliverer(auto, store, OWNER, lease=0.3)
                settle = store.settle
                failures = [SharedStoreError("shared store: settle failed: reset")]

                async def flaky(*args: Any, **kwargs: Any) -> None:
                    if failures:
                        raise failures.pop()
                    await settle(*args, **kwargs)

                store.settle = flaky  # type: ignore[method-assign]
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
        finally:
            await store.aclose()

    steps = run(work)
    dead = kit.raw.xlen(f"{kit.prefix}dead")
    sent = len(server.received.to("crm"))
    outcomes = [step.outcome for step in steps]
    assert dead == 1, f"{dead} dead letters for one action ({outcomes})"
    assert sent <= 3, f"the receiver saw {sent} requests for one action ({outcomes})"


# --- 3. replaying a dead letter twice sends a delivered action again ---------------------------


def test_replaying_a_dead_letter_whose_action_was_since_delivered_does_not_send_again(
    kit: Kit, server: Server
) -> None:
    """A dead letter is replayed and delivered; the same record is replayed again (an operator
    running replay twice, or the replay task redelivered): replay forgets the ledger entry
    whatever it says, and the delivered action is sent again."""
    server.received.script("crm", (400, {}, {}), (200, {}, {"id": 1}))

    async def work() -> list[str]:
        store = kit.store()
        try:
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
        finally:
            await store.aclose()

    outcomes = run(work)
    sent = len(server.received.to("crm"))
    assert sent == 2, f"the receiver saw {sent} requests: {outcomes}"


# --- 4. a "workflow changed" dead letter can never be replayed --------------------------------


def test_a_workflow_changed_dead_letter_can_be_replayed_where_that_version_is_loaded(
    kit: Kit, server: Server
) -> None:
    """A worker without the message's workflow version dead-letters it after the limit ("as
    replay does today with workflow_source"); a worker that has that version loaded must be
    able to replay it. The record has action None and workflow_source None, so neither
    Deliverer.replay nor Automations.replay can: the action is lost."""
    old = automations(server)  # the version the event was fanned out for
    fingerprint = old.workflows[0].fingerprint
    newer = WORKFLOW.replace(
        "format: string}\n  - name: after",
        'format: string}\n      - {key: v, value: "2", format: string}\n  - name: after',
    )
    clock = FakeClock()

    async def work() -> tuple[Step, Step]:
        store = kit.store()
        try:
            async with automations(server, text=newer, clock=clock) as auto:
                assert auto.workflows[0].fingerprint != fingerprint
                body = deliver_body(server) | {"unknown_since": NOW - 7200}
                dead = await Deliverer(auto, store, OWNER).deliver(body)
            [(_, record)] = await store.dead_letters()
            async with old:
                replayed = await Deliverer(old, store, OWNER).replay(record)
            return dead, replayed
        finally:
            await store.aclose()

    dead, replayed = run(work)
    assert dead.outcome == "dead" and dead.error and dead.error.startswith("workflow changed")
    assert replayed.outcome == "replayed", f"refused: {replayed.error}"


# --- 5. a message accepted at the door is lost once it waits in the due set -------------------


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_a_deliver_message_accepted_as_valid_is_not_lost_when_its_retry_is_scheduled(
    kit: Kit, server: Server
) -> None:
    """DeliverMessage.from_json accepts results nested up to MAX_RECORD_DEPTH (136); the due
    member wraps the body two levels deeper, parse_member refuses it and the pump moves the
    retry to ``{prefix}bad``: neither delivered, retried nor dead-lettered."""
    server.received.script("crm", (503, {}, {}))
    clock = FakeClock()
    body = deliver_body(server, results={"earlier": deep(134)})
    DeliverMessage.from_json(body)  # a valid message

    async def work() -> tuple[Step, Outbox, int]:
        store = kit.store()
        try:
            async with automations(server, clock=clock) as auto:
                step = await Deliverer(auto, store, OWNER).deliver(body)
            outbox = Outbox("pump")
            clock.current += 3600
            await Pump(store, outbox, "pump-1", clock=clock).run_once()
            return step, outbox, await store.bad_count()
        finally:
            await store.aclose()

    step, outbox, bad = run(work)
    assert step.outcome == "retry"
    assert bad == 0 and len(outbox.sent) == 1, (
        f"the scheduled retry was moved to bad ({bad}); published {len(outbox.sent)}"
    )


# --- 6. a lease shorter than an attempt: two attempts at once, no process dead ----------------


def test_an_attempt_longer_than_its_lease_is_never_made_twice_at_once(
    kit: Kit, server: Server
) -> None:
    """The lease is taken once for a fixed time and never renewed, and nothing relates it to
    how long an attempt may take (here 2 s against a 0.5 s lease; by default a speech action
    polls up to operation_deadline 600 s against the 60 s lease, and a Redis broker redelivers
    an unacked task after visibility_timeout 300 s). A second copy of the message takes the
    lapsed lease and sends while the first attempt is still in flight; the first then
    schedules a retry of an action the second already settled."""
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


# --- 7. an accept claim lapses while its fan-out is still being published ---------------------


def test_one_fan_out_per_event_even_when_publishing_the_fan_out_is_slow(
    kit: Kit, server: Server
) -> None:
    """The accept claim (accept_lease, 60 s by default) is never renewed and confirm does not
    check it is still ours: a duplicate of the event that arrives after the claim lapsed, while
    the first worker is still publishing (a blocked broker connection), fans out again."""

    async def work() -> list[Step]:
        store = kit.store()
        try:
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
        finally:
            await store.aclose()

    steps = run(work)
    fan_outs = [step.outcome for step in steps].count("fanned_out")
    assert fan_outs == 1, f"{fan_outs} fan-outs of one event: {[s.outcome for s in steps]}"


# --- 8. the pump: a slow publish races the stale re-publish, and stop waits for it ------------


# --- 9. the pump drains the due set into the pumping hash while the broker is down ------------


# --- 10. settings the store refuses are accepted, then drop or raise on every message ---------


@pytest.mark.parametrize("lease", [0.0005, 4e8])
def test_a_lease_the_store_cannot_hold_is_refused_at_construction(
    kit: Kit, server: Server, lease: float
) -> None:
    """Deliverer accepts any positive lease; the store takes 0.001 s to ten years. Outside
    that, every deliver becomes "refused" (the message is dropped: nothing sent, no dead
    letter) and every accept raises ValueError (accept "never raises")."""

    async def work() -> str:
        store = kit.store()
        try:
            async with automations(server) as auto:
                try:
                    deliverer = Deliverer(auto, store, OWNER, lease=lease, accept_lease=lease)
                except ValueError:
                    return "refused at construction"
                step = await deliverer.deliver(deliver_body(server))
                return f"deliver {step.outcome}: {step.error}"
        finally:
            await store.aclose()

    assert run(work) == "refused at construction"


def test_a_redelivered_attempt_is_not_sent_before_the_retry_after_the_receiver_asked(
    kit: Kit, server: Server
) -> None:
    """The same fork as above, seen from the receiver: it answers 429 with Retry-After: 3600;
    the worker schedules attempt 2 an hour later, then Redis fails on the lease release. The
    redelivered attempt 1 is sent as soon as the lease lapses (0.5 s here, 60 s by default),
    long before the hour the receiver asked for."""
    server.received.script("crm", (429, {"Retry-After": "3600"}, {}), (429, {}, {}))
    body = deliver_body(server)

    async def work() -> float:
        store = kit.store()
        try:
            async with automations(server) as auto:
                deliverer = Deliverer(auto, store, OWNER, lease=0.5)
                release = store.release_lease
                failures = [SharedStoreError("shared store: release_lease failed: reset")]

                async def flaky(key: str, owner: str) -> None:
                    if failures:
                        raise failures.pop()
                    await release(key, owner)

                store.release_lease = flaky  # type: ignore[method-assign]
                with pytest.raises(SharedStoreError):
                    await deliverer.deliver(body)
                [(_, due)] = kit.due()
                if (await deliverer.deliver(body)).outcome == "deferred":
                    await asyncio.sleep(0.6)
                    await deliverer.deliver(body)  # the deferred copy, republished
                return due
        finally:
            await store.aclose()

    due = run(work)
    assert due >= NOW + 3600
    sent = len(server.received.to("crm"))
    assert sent == 1, f"{sent} requests within a second of a Retry-After of 3600 s"


# --- 11. replay after the ledger expired sends the later, delivered actions again -------------


def test_replaying_an_old_dead_letter_sends_only_its_action_and_those_it_stopped(
    kit: Kit, server: Server
) -> None:
    """Action "post" (stop_on_failure: false) is dead with a 404, action "after" is delivered.
    The dead letter stays in the stream (never trimmed); the ledger entries expire after
    ledger_ttl (7 days; 1 s here). Replaying it then sends "after" again, though its record
    says then=[] (Automations.replay runs only the action and its "then")."""
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


# --- 12. a foreign due member names any task, and the pump publishes it -----------------------
