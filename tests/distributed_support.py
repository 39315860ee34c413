"""Helpers of the distributed automations' tests (shared store, deliverer, pump, executor
seam): a random key prefix on the session's Redis, automations against the loopback HTTPS
server, and a small in-process stand-in for the broker and its workers (what the Celery glue
does, without Celery)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis
from servers import Server
from services import RedisServer
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import Clock
from flowlang.distributed.deliverer import Deliverer, Step
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, AcceptMessage
from flowlang.distributed.pump import Pump
from flowlang.distributed.shared import SharedStore
from flowlang.errors import SharedStoreError

T = TypeVar("T")
DEADLINE = 30.0
SECRET = "crm-token-7d41-distributed"

#: Two actions against the server's scripted paths; the first carries the secret.
WORKFLOW = """
workflow: sync
trigger: call.ended
actions:
  - name: post
    type: api_request
    endpoint: "https://crm.test:{port}/script/crm/activities?token=<<secrets.crm_token>>"
    headers: {Authorization: "Bearer <<secrets.crm_token>>"}
    values:
      - {key: name, value: "<<event.properties.name>>", format: string}
  - name: after
    type: api_request
    endpoint: "https://crm.test:{port}/script/after/x"
    values:
      - {key: id, value: "<<actions.post.result.id>>", format: string}
"""


def event(event_id: str = "evt-1", **properties: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "call.ended", "properties": {"name": "Ann", **properties}}


def accept_body(event_id: str = "evt-1", **properties: Any) -> dict[str, Any]:
    return AcceptMessage(event(event_id, **properties), 1_800_000_000.0, "test").to_json()


class Kit:
    """A random prefix on the session's Redis and a plain client to look at its keys."""

    def __init__(self, server: RedisServer) -> None:
        self.url = server.url
        self.prefix = f"fltest-{uuid.uuid4().hex[:12]}:"
        self.raw = redis.Redis.from_url(server.url)

    def store(self, **options: Any) -> SharedStore:
        return SharedStore.from_url(self.url, prefix=self.prefix, **options)

    def run(self, work: Callable[[SharedStore], Awaitable[T]], **options: Any) -> T:
        """``work`` on a fresh store (``options`` go to it), with a deadline; the store closed."""

        async def bounded() -> T:
            store = self.store(**options)
            try:
                return await asyncio.wait_for(work(store), DEADLINE)
            finally:
                await store.aclose()

        return asyncio.run(bounded())

    def stored(self) -> list[str]:
        """The keys under the prefix, sorted."""
        return sorted(key.decode() for key in self.raw.scan_iter(f"{self.prefix}*"))

    def everything(self) -> str:
        """Every value under the prefix, as text (to look for secrets)."""
        parts = []
        for key in self.raw.scan_iter(f"{self.prefix}*"):
            kind = self.raw.type(key).decode()
            if kind == "string":
                parts.append(repr(self.raw.get(key)))
            elif kind == "hash":
                parts.append(repr(self.raw.hgetall(key)))
            elif kind == "zset":
                parts.append(repr(self.raw.zrange(key, 0, -1, withscores=True)))
            elif kind == "list":
                parts.append(repr(self.raw.lrange(key, 0, -1)))
            elif kind == "stream":
                parts.append(repr(self.raw.xrange(key)))
        return "\n".join(parts)

    def due(self) -> list[tuple[dict[str, Any], float]]:
        """The due set: (member as JSON, score), earliest first."""
        return [
            (json.loads(member), score)
            for member, score in self.raw.zrange(f"{self.prefix}due", 0, -1, withscores=True)
        ]

    def clean(self) -> None:
        for key in self.raw.scan_iter(f"{self.prefix}*"):
            self.raw.delete(key)
        self.raw.close()


@pytest.fixture
def kit(redis_server: RedisServer) -> Iterator[Kit]:
    """A :class:`Kit` on the session's Redis, its keys removed afterwards."""
    made = Kit(redis_server)
    try:
        yield made
    finally:
        made.clean()


def automations(
    server: Server,
    *,
    text: str = WORKFLOW,
    clock: Clock | None = None,
    schedule: tuple[float, ...] = (0, 5, 300),
    **settings: Any,
) -> Automations:
    """Automations of ``text`` against ``server`` (crm.test is 127.0.0.1), without jitter."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    options: dict[str, Any] = {"jitter": 0.0} | settings
    return Automations(
        [load_workflow_text(text.replace("{port}", str(server.port)))],
        settings=DeliverySettings(
            allow_hosts=frozenset({"crm.test"}), schedule=schedule, **options
        ),
        ssl_context=server.client_ssl_context(),
        resolver=resolver,
        secrets=MappingSecrets({"crm_token": SECRET}),
        clock=clock or FakeClock(),
    )


def run(work: Callable[[], Awaitable[T]], seconds: float = DEADLINE) -> T:
    """Run ``work()`` with a deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(work(), seconds)

    return asyncio.run(bounded())


@asynccontextmanager
async def pumping(pump: Pump) -> AsyncIterator[Pump]:
    """``pump.run`` in a task for the block; told to stop and awaited at its end."""
    stop = asyncio.Event()
    task = asyncio.create_task(pump.run(stop))
    try:
        yield pump
    finally:
        stop.set()
        await task


def fail_once(store: SharedStore, name: str, *, after: bool = False) -> None:
    """Make the store's method ``name`` raise SharedStoreError on its next call only: before
    it reaches Redis or, with ``after``, once it has run (the reply lost)."""
    method = getattr(store, name)
    failures = [SharedStoreError(f"shared store: {name} failed: reset")]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures and not after:
            raise failures.pop()
        result = await method(*args, **kwargs)
        if failures:
            raise failures.pop()
        return result

    setattr(store, name, flaky)


@dataclass
class Broker:
    """The broker and its workers in one process: published messages wait in a queue; a
    worker takes each, runs the deliverer, publishes what its step says, then confirms."""

    deliverer: Deliverer
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    steps: list[tuple[str, Step]] = field(default_factory=list)
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: When each step was handled (time.time()), in the order of ``steps``.
    times: list[float] = field(default_factory=list)

    async def publish(self, task: str, body: dict[str, Any]) -> None:
        body = json.loads(json.dumps(body))  # as through a broker: JSON only
        self.published.append((task, body))
        await self.queue.put((task, body))

    async def handle(self, task: str, body: dict[str, Any]) -> Step:
        self.times.append(time.time())
        if task == ACCEPT_TASK:
            step = await self.deliverer.accept(body)
        elif task == DELIVER_TASK:
            step = await self.deliverer.deliver(body)
        else:
            raise AssertionError(f"unexpected task {task}")
        self.steps.append((task, step))
        for name, message in step.publish:
            await self.publish(name, message)
        if step.confirm is not None:
            await step.confirm()
        return step

    async def work(self, until: Callable[[], bool], seconds: float = 10.0) -> None:
        """Handle messages as they come until ``until()`` holds (at most ``seconds``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not until():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("the messages did not settle in time")
            try:
                task, body = await asyncio.wait_for(self.queue.get(), min(left, 0.05))
            except TimeoutError:
                continue
            await self.handle(task, body)

    def outcomes(self) -> list[str]:
        return [step.outcome for _, step in self.steps]
