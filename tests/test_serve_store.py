"""Call stores: one contract for the in-process store and the Redis store, then what only Redis
has (keys and their times to live, hostile keys and data, a server down, killed or restarted,
passwords kept out of messages).

Redis tests share one ``redis-server`` (``redis_server``, tests/services.py) and each uses its
own key prefix, whose keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from services import RedisServer, free_port, running_redis
from support import FakeClock

from flowlang.serve.calls import CallRecord, CallStore, MemoryCallStore
from flowlang.serve.redis_store import CallStoreError, RedisCallStore, check_key_part, mask_url

#: The longest any one test's async body may run.
TEST_SECONDS = 20.0


#: ``record``'s default state: waiting at ``ask``.
ASK = {"step": "ask"}


def record(seq: int = 1, state: dict[str, Any] | None = ASK, **fields: Any) -> CallRecord:
    """A call record (waiting at ``ask`` unless told otherwise)."""
    fields.setdefault("twiml", '<Response><Gather action="/voice/billing?seq=1"/></Response>')
    return CallRecord(
        seq=seq,
        flow="billing",
        fingerprint="fp-1",
        state={"step": "ask", "vars": {"n": seq}} if state is ASK else state,
        **fields,
    )


def run(coroutine: Awaitable[Any]) -> Any:
    """Run ``coroutine`` on a new event loop, bounded."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, TEST_SECONDS)

    return asyncio.run(bounded())


def new_prefix() -> str:
    return f"flowlang-test-{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@dataclass
class Kit:
    """One kind of store for the contract: ``memory`` (with a fake clock) or ``redis``."""

    name: str
    url: str | None = None
    prefix: str = field(default_factory=new_prefix)
    clock: FakeClock = field(default_factory=FakeClock)

    def store(self, ttl: float = 3600.0, flow_ttl: float = 86400.0) -> CallStore:
        if self.url is None:
            return MemoryCallStore(ttl=ttl, clock=self.clock.now)
        return RedisCallStore.from_url(self.url, prefix=self.prefix, ttl=ttl, flow_ttl=flow_ttl)

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the fake clock, or really (Redis expires by its clock)."""
        if self.url is None:
            self.clock.current += seconds
        else:
            await asyncio.sleep(seconds)

    def run(self, body: Callable[[CallStore], Awaitable[Any]], **options: Any) -> Any:
        """Run ``body`` with a new store, closed afterwards."""

        async def with_store() -> Any:
            store = self.store(**options)
            try:
                return await body(store)
            finally:
                await store.aclose()

        return run(with_store())


@pytest.fixture(params=["memory", "redis"])
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    if request.param == "memory":
        yield Kit("memory")
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    made = Kit("redis", url=server.url)
    try:
        yield made
    finally:
        delete_prefix(server.url, made.prefix)


@pytest.fixture
def redis_kit(redis_server: RedisServer) -> Iterator[Kit]:
    made = Kit("redis", url=redis_server.url)
    try:
        yield made
    finally:
        delete_prefix(redis_server.url, made.prefix)


# ---------------------------------------------------------------------------------------------
# The contract: both stores


def test_create_sets_only_when_absent(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        first, second = record(state={"who": "first"}), record(state={"who": "second"})
        assert await store.get("CA1") is None
        assert await store.create("CA1", first) is True
        assert await store.create("CA1", second) is False
        assert await store.get("CA1") == first
        assert await store.create("CA2", second) is True
        assert await store.get("CA2") == second

    kit.run(body)


def test_replace_only_on_the_expected_seq(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.create("CA1", record(seq=1))
        assert await store.replace("CA1", 0, record(seq=2)) is False
        assert await store.replace("CA1", 2, record(seq=2)) is False
        assert await store.get("CA1") == record(seq=1)
        assert await store.replace("CA1", 1, record(seq=2)) is True
        assert await store.replace("CA1", 1, record(seq=3)) is False
        assert await store.get("CA1") == record(seq=2)
        assert await store.replace("CA1", 2, record(seq=3, state=None, outcome="completed"))
        assert await store.get("CA1") == record(seq=3, state=None, outcome="completed")

    kit.run(body)


def test_replace_never_after_delete(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.replace("CA-never", 0, record(seq=1)) is False
        assert await store.get("CA-never") is None
        assert await store.create("CA1", record(seq=1))
        assert await store.delete("CA1") == record(seq=1)
        assert await store.replace("CA1", 1, record(seq=2)) is False
        assert await store.get("CA1") is None

    kit.run(body)


def test_claim_once_per_call_and_seq(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.claim("CA1", 1) is True
        assert await store.claim("CA1", 1) is False
        assert await store.claim("CA1", 2) is True
        assert await store.claim("CA2", 1) is True
        assert await store.claim("CA1", 0) is True
        assert [await store.claim("CA1", seq) for seq in (0, 1, 2)] == [False] * 3

    kit.run(body)


def test_fifty_concurrent_claims_one_wins(kit: Kit) -> None:
    async def body(store: CallStore) -> list[bool]:
        return list(await asyncio.gather(*(store.claim("CA1", 3) for _ in range(50))))

    assert sorted(kit.run(body)) == [False] * 49 + [True]


def test_fifty_concurrent_replaces_one_wins(kit: Kit) -> None:
    async def body(store: CallStore) -> tuple[list[bool], CallRecord | None]:
        await store.create("CA1", record(seq=1))
        done = await asyncio.gather(
            *(store.replace("CA1", 1, record(seq=2, state={"by": n})) for n in range(50))
        )
        return list(done), await store.get("CA1")

    done, stored = kit.run(body)
    assert sorted(done) == [False] * 49 + [True]
    assert stored == record(seq=2, state={"by": done.index(True)})


def test_delete_returns_the_record_once(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.delete("CA1") is None
        await store.create("CA1", record(seq=4))
        assert await store.delete("CA1") == record(seq=4)
        assert await store.delete("CA1") is None
        assert await store.get("CA1") is None
        assert await store.create("CA1", record(seq=1)) is True  # a new call may take the id

    kit.run(body)


def test_records_and_claims_expire_and_every_write_renews(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.create("CA1", record(seq=1))
        assert await store.claim("CA1", 1)
        await kit.pass_time(0.6)
        assert await store.replace("CA1", 1, record(seq=2))  # lives 1 s from now
        assert await store.claim("CA1", 2)
        await kit.pass_time(0.6)  # past the first write's time to live
        assert await store.get("CA1") == record(seq=2)
        assert await store.waiting() == 1
        assert await store.claim("CA1", 2) is False
        await kit.pass_time(0.5)
        deadline = time.monotonic() + 3
        while await store.get("CA1") is not None and time.monotonic() < deadline:
            await kit.pass_time(0.05)
        assert await store.get("CA1") is None
        assert await store.waiting() == 0
        assert await store.replace("CA1", 2, record(seq=3)) is False
        assert await store.claim("CA1", 2) is True  # the claim expired with the call
        assert await store.create("CA1", record(seq=1)) is True

    kit.run(body, ttl=1.0)


def test_flow_sources_are_kept_and_read_back(kit: Kit) -> None:
    source = "version: 1\nflow:\n  say: 'Grüße, 世界 🎧'\n" * 100

    async def body(store: CallStore) -> None:
        assert await store.flow_source("fp-unknown") is None
        await store.keep_flow("fp-1", source)
        await store.keep_flow("fp-2", "other")
        await store.keep_flow("fp-1", source)  # kept again: the same text
        assert await store.flow_source("fp-1") == source
        assert await store.flow_source("fp-2") == "other"

    kit.run(body)


def test_waiting_counts_records_with_a_state(kit: Kit) -> None:
    async def body(store: CallStore) -> list[int]:
        counts = [await store.waiting()]
        await store.create("CA1", record(seq=1))
        await store.create("CA2", record(seq=1, state=None, outcome="completed"))
        await store.create("CA3", record(seq=1))
        counts.append(await store.waiting())
        await store.replace("CA3", 1, record(seq=2, state=None, outcome="transfer"))
        counts.append(await store.waiting())
        await store.replace("CA2", 1, record(seq=2))
        counts.append(await store.waiting())
        await store.delete("CA1")
        await store.delete("CA2")
        counts.append(await store.waiting())
        await store.create("CA1", record(seq=1))  # a refused create changes nothing
        await store.create("CA1", record(seq=1, state=None))
        counts.append(await store.waiting())
        return counts

    assert kit.run(body) == [0, 2, 1, 2, 0, 1]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": [1, 2.5, None, True, "x"]}
    for level in range(depth):
        value = {f"level{level}": value, "list": [value] if level % 10 == 0 else []}
    return value


ROUND_TRIPS = {
    "unicode": record(
        state={"text": "Grüße 世界 🎧 مرحبا e\u0301 \u2028 \x00 \ufeff", "名前": ["ü", "🎧"]},
        call={"caller_name": "Zoë 🎧", "from": "+14155550100"},
        twiml="<Response><Say>Grüße &amp; 世界</Say></Response>",
    ),
    "large state": record(
        state={"vars": {f"field{n}": "x" * 100 for n in range(5000)}, "step": "ask"}
    ),
    "nested data": record(state=nested(60)),
    "every field": record(
        seq=2**53,
        outcome="transfer",
        target="queue:billing",
        answered=True,
        waiting_time=12.25,
        started_at=1_796_032_217.125,
        call={"id": "CA1", "numbers": [1, -2, 2**63 - 1, 0.1]},
    ),
    "no state": record(state=None, outcome="completed"),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_records_round_trip(kit: Kit, case: str) -> None:
    stored = ROUND_TRIPS[case]
    if case == "large state":
        assert len(stored.to_json()) > 500_000

    async def body(store: CallStore) -> tuple[Any, ...]:
        assert await store.create("CA1", stored)
        got = await store.get("CA1")
        assert await store.replace("CA1", stored.seq, stored)
        return got, await store.get("CA1"), await store.delete("CA1")

    got, replaced, deleted = kit.run(body)
    assert got == stored
    assert replaced == stored
    assert deleted == stored
    assert got.to_json() == stored.to_json()  # the same types too (1 stays 1, not 1.0)


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=30,
)
json_states = st.dictionaries(texts, json_values, max_size=5)


def same_state_back(kit: Kit, state: dict[str, Any]) -> None:
    """A record with ``state`` comes back equal, with the same types (1 stays 1, not 1.0)."""
    stored = record(state=state)

    async def body(store: CallStore) -> CallRecord | None:
        assert await store.create("CA1", stored)
        return await store.get("CA1")

    try:
        got = kit.run(body)
    finally:
        if kit.url:
            delete_prefix(kit.url, kit.prefix)
    assert got is not None
    assert got.to_json() == stored.to_json()


@settings(max_examples=40)
@given(state=json_states)
def test_any_json_state_round_trips_in_memory(state: dict[str, Any]) -> None:
    same_state_back(Kit("memory"), state)


@settings(max_examples=40)
@given(state=json_states)
def test_any_json_state_round_trips_in_redis(redis_server: RedisServer, state: dict[str, Any]) -> None:
    same_state_back(Kit("redis", url=redis_server.url), state)
