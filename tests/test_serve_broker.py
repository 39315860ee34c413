"""``flowlang serve --broker``: events (POST /events and the calls' own) are checked at the door
and published as ``flowlang.accept`` messages instead of being dispatched in the server; the
workers deduplicate and deliver them. In process (a publisher that records, or fails), and
end to end through a real Redis broker to a ``flowlang worker``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import (
    Broker,
    Ledger,
    muting_proxy,
    receiving,
    redis_broker_on,
    start_worker,
    store_fixture,  # noqa: F401 (the fixture store)
    wait_until,
    workers,
)
from celery_support import write_workflow as receiver_workflow

from flowlang import load_workflow
from flowlang.automations.dispatch import idempotency_key
from flowlang.cli.worker_console import event_publisher
from flowlang.distributed.messages import AcceptMessage
from tests.serve_support import EVENT_TOKEN, example_workflows, serving
from tests.services import RabbitMQ, RedisServer, rabbitmq  # noqa: F401 (the fixture)

AUTH = {"Authorization": f"Bearer {EVENT_TOKEN}"}
BROKER_PASSWORD = "broker-password-5b7e1c"


def _event(event_id: str = "evt-1", kind: str = "contact.updated") -> bytes:
    return json.dumps(
        {"id": event_id, "type": kind, "properties": {"name": "Ann", "tags": ["Vip"]}}
    ).encode()


def test_events_are_published_instead_of_dispatched() -> None:
    published: list[dict[str, Any]] = []

    async def publish(body: dict[str, Any]) -> None:
        published.append(body)

    async def main() -> None:
        async with serving(workflows=example_workflows(), publish_events=publish) as served:
            client = served.client
            for _ in range(2):  # a duplicate too: the workers tell it apart
                answer = await client.post("/events", content=_event(), headers=AUTH)
                assert (answer.status_code, answer.json()) == (202, {"result": "accepted"})
            assert served.server.events_store is None and served.server.automations.store is None
            await asyncio.sleep(0.05)
            assert served.http.requests == []  # nothing delivered here

    asyncio.run(main())
    assert len(published) == 2
    message = AcceptMessage.from_json(published[0])
    assert (message.event["id"], message.source) == ("evt-1", "serve")


def test_an_event_refused_at_the_door_is_not_published() -> None:
    published: list[dict[str, Any]] = []

    async def publish(body: dict[str, Any]) -> None:
        published.append(body)

    async def main() -> None:
        async with serving(workflows=example_workflows(), publish_events=publish) as served:
            no_id = json.dumps({"type": "contact.updated"}).encode()
            answer = await served.client.post("/events", content=no_id, headers=AUTH)
            assert answer.status_code == 400, answer.text

    asyncio.run(main())
    assert published == []


def test_a_broker_that_fails_is_a_503_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def publish(body: dict[str, Any]) -> None:
        raise ConnectionError(f"amqp://guest:{BROKER_PASSWORD}@10.0.0.1// refused")

    async def main() -> None:
        async with serving(workflows=example_workflows(), publish_events=publish) as served:
            answer = await served.client.post("/events", content=_event(), headers=AUTH)
            assert answer.status_code == 503
            assert "send it again" in answer.json()["error"]
            assert BROKER_PASSWORD not in answer.text

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "could not be published" in caplog.text


@pytest.fixture
def redis_broker(redis_server: RedisServer) -> Iterator[Broker]:
    with redis_broker_on(redis_server, 3) as made:
        yield made


def test_serve_publishes_to_a_worker_that_delivers(
    tmp_path: Path, redis_broker: Broker, store: tuple[str, str, Ledger]
) -> None:
    url, prefix, ledger = store
    with receiving() as receiver, workers() as started:
        flow = receiver_workflow(tmp_path, receiver)
        started.append(start_worker(tmp_path, [flow], redis_broker, url, prefix))
        publish = event_publisher(redis_broker.url, redis_broker.queue_prefix)
        workflow = load_workflow(flow, allow_hosts=["127.0.0.1"])

        async def main() -> None:
            async with serving(
                workflows=[workflow], publish_events=publish, allow_hosts=["127.0.0.1"]
            ) as served:
                for _ in range(3):
                    answer = await served.client.post(
                        "/events", content=_event("evt-9", "call.ended"), headers=AUTH
                    )
                    assert answer.status_code == 202, answer.text

        asyncio.run(main())
        wait_until(lambda: len(ledger.settled()) == 2, 30, "not delivered")
    keys = [idempotency_key("evt-9", "notify", action) for action in ("first", "second")]
    assert receiver.keys() == dict.fromkeys(keys, 1)


def test_serve_with_a_broker_that_does_not_answer_is_a_usage_error() -> None:
    from flowlang.cli.inputs import UsageError
    from tests.services import free_port

    with pytest.raises(UsageError, match="cannot reach the broker") as caught:
        event_publisher(f"redis://:{BROKER_PASSWORD}@127.0.0.1:{free_port()}/0", "flowlang.")
    assert BROKER_PASSWORD not in str(caught.value)


# --- serve --broker when the broker stalls (red team, issue 13) ------------------------------


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_serve_broker_answers_503_in_bounded_time_to_concurrent_senders_when_the_broker_stalls(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Red team, issue 13 (was a hang / starvation). ``serve --broker`` published each event
    with ``asyncio.to_thread`` through a publisher whose bound is
    publish_timeout (10 s) per Redis command, redis-py's own retries and kombu's
    task_publish_retry_policy (4 tries): measured 52 s for ONE 503 on a black-holed Redis
    broker (28 s on RabbitMQ). Worse, each stalled publish holds a thread of the loop's
    default executor (min(32, cpus + 4): 6 on 2 cores), so a few concurrent senders queue
    behind each other (the 7th waits two whole stalls) and so does everything else on that
    executor: loop.getaddrinfo (DNS for the calls' own HTTP requests). Invariant: every
    sender gets its 503 within a webhook sender's patience (15 s, Twilio's), and the server's
    loop keeps resolving names meanwhile."""
    auth = AUTH
    senders = 8

    def body(number: int) -> bytes:
        return json.dumps({"id": f"evt-st-{number}", "type": "contact.updated"}).encode()

    answers: dict[int, tuple[int, float]] = {}
    lookup: list[float] = []
    if kind == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        upstream, prefix = redis_server.port, f"flrt{os.getpid()}."
    else:
        rabbit: RabbitMQ = request.getfixturevalue("rabbitmq")
        upstream, prefix = 5672, rabbit.queue_prefix
    with muting_proxy(upstream) as proxy:
        url = (
            f"redis://127.0.0.1:{proxy.port}/7"
            if kind == "redis"
            else f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
        )
        publish = event_publisher(url, prefix)

        async def main() -> None:
            async with serving(workflows=example_workflows(), publish_events=publish) as served:
                first = await served.client.post("/events", content=body(0), headers=auth)
                assert first.status_code == 202, first.text  # connected
                proxy.black_hole()

                async def send(number: int) -> None:
                    began = time.monotonic()
                    answer = await served.client.post(
                        "/events", content=body(number), headers=auth, timeout=200
                    )
                    answers[number] = (answer.status_code, time.monotonic() - began)

                async def resolve() -> None:
                    await asyncio.sleep(1.0)
                    began = time.monotonic()
                    await asyncio.get_running_loop().getaddrinfo("localhost", 80)
                    lookup.append(time.monotonic() - began)

                jobs = [asyncio.ensure_future(send(n)) for n in range(1, senders + 1)]
                jobs.append(asyncio.ensure_future(resolve()))
                await asyncio.wait(jobs, timeout=20)
                proxy.stop.set()  # the stalled publishes end (connection lost) for the cleanup
                for sock in proxy.sockets:
                    sock.close()
                await asyncio.wait(jobs, timeout=120)

        asyncio.run(main())
    late = {n: a for n, a in answers.items() if a[1] > 15}
    assert len(answers) == senders
    assert all(code == 503 for code, _ in answers.values()), answers
    assert not late, f"503s after more than 15 s: {late}; all {answers}; getaddrinfo {lookup}"
    assert lookup and lookup[0] < 2, f"getaddrinfo waited {lookup} s behind stalled publishes"


def test_serve_broker_answers_503_at_once_when_every_publish_thread_waits_for_the_broker(
    redis_server: RedisServer,
) -> None:
    """The publish pool is bounded: with its one thread held by a stalled publish, the next
    sender gets its 503 at once, not after the stall; once the broker answers again (and the
    stalled publish gave up) events are published again."""
    with muting_proxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/7"
        publish = event_publisher(url, f"flpool{os.getpid()}.", threads=1, timeout=1.0, wait=30)

        async def main() -> list[tuple[int, float]]:
            async with serving(workflows=example_workflows(), publish_events=publish) as served:
                client = served.client
                first = await client.post("/events", content=_event("evt-p0"), headers=AUTH)
                assert first.status_code == 202, first.text
                proxy.black_hole()
                stalled = asyncio.ensure_future(
                    client.post("/events", content=_event("evt-p1"), headers=AUTH, timeout=60)
                )
                await asyncio.sleep(0.3)
                began = time.monotonic()
                second = await client.post("/events", content=_event("evt-p2"), headers=AUTH)
                answers = [(second.status_code, time.monotonic() - began)]
                answer = await asyncio.wait_for(stalled, 40)
                answers.append((answer.status_code, 0.0))
                proxy.hole.clear()  # the broker answers again
                again = 0
                for attempt in range(3):  # bounded: the sender's own retries
                    sent = _event(f"evt-p3-{attempt}")
                    again = (await client.post("/events", content=sent, headers=AUTH)).status_code
                    if again == 202:
                        break
                answers.append((again, 0.0))
            return answers

        answers = asyncio.run(main())
    (busy, waited), (stalled_code, _), (recovered, _) = answers
    assert busy == 503 and waited < 1.0, answers
    assert stalled_code == 503, answers
    assert recovered == 202, answers


def test_serve_broker_on_rabbitmq_publishes_again_once_a_stalled_broker_answers(
    rabbitmq: RabbitMQ,  # noqa: F811
) -> None:
    """Red team round 2, R2-3: after a confirm's timeout kombu throws the connection away
    with a graceful close (Producer.__exit__ -> resource.replace -> amqp Channel.close, then
    Connection.close), each waiting for the broker's Close-Ok; with no limit on that wait, a
    lost answer held the publish thread for good (one more per stall: after 8 stalls every
    event was a 503 until a restart). Now every read and write on serve's broker socket is
    bounded (py-amqp read_timeout / write_timeout = ``timeout``). Here one thread makes one
    stall enough. Invariant: once the broker answers again, events are published again (202)
    within ``timeout`` plus a few seconds (here: within 20 s)."""
    with muting_proxy(5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
        publish = event_publisher(url, rabbitmq.queue_prefix, threads=1, timeout=1.0, wait=5.0)

        async def main() -> list[tuple[int, float]]:
            async with serving(workflows=example_workflows(), publish_events=publish) as served:
                client = served.client
                first = await client.post("/events", content=_event("e0"), headers=AUTH)
                assert first.status_code == 202, first.text
                proxy.mute()  # the broker's answers (the confirm) are lost
                began = time.monotonic()
                stalled = await client.post(
                    "/events", content=_event("e1"), headers=AUTH, timeout=60
                )
                answers = [(stalled.status_code, time.monotonic() - began)]
                proxy.muted.clear()  # the broker answers again
                began = time.monotonic()
                for attempt in range(40):  # bounded: at most 40 tries in about 20 s
                    sent = _event(f"e2-{attempt}")
                    answer = await client.post("/events", content=sent, headers=AUTH, timeout=30)
                    answers.append((answer.status_code, time.monotonic() - began))
                    if answer.status_code == 202 or time.monotonic() - began > 20:
                        break
                    await asyncio.sleep(0.5)
            return answers

        answers = asyncio.run(main())
    assert answers[0][0] == 503, answers
    assert answers[-1][0] == 202, (
        f"still 503 {answers[-1][1]:.0f} s after the broker answered again "
        f"({len(answers) - 1} tries): the stalled publish still holds its thread; {answers[:3]}"
    )
