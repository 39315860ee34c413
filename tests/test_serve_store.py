"""Call stores: one contract for the in-process store and the Redis store, then what only Redis
has (keys and their times to live, hostile keys and data, a server down, killed or restarted,
passwords kept out of messages).

Redis tests share one ``redis-server`` (``redis_server``, tests/services.py) and each uses its
own key prefix, whose keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from services import RedisServer, free_port, redis_ping, running_redis
from support import FakeClock

from flowlang.distributed.connection import MAX_CONNECTIONS, check_key_part, mask_url
from flowlang.serve.calls import CallRecord, CallStore, MemoryCallStore
from flowlang.serve.redis_store import CallStoreError, RedisCallStore

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
        assert await store.claim("CA1", 1, 60) is True
        assert await store.claim("CA1", 1, 60) is False
        assert await store.claim("CA1", 2, 60) is True
        assert await store.claim("CA2", 1, 60) is True
        assert await store.claim("CA1", 0, 60) is True
        assert [await store.claim("CA1", seq, 60) for seq in (0, 1, 2)] == [False] * 3

    kit.run(body)


def test_fifty_concurrent_claims_one_wins(kit: Kit) -> None:
    async def body(store: CallStore) -> list[bool]:
        return list(await asyncio.gather(*(store.claim("CA1", 3, 60) for _ in range(50))))

    assert sorted(kit.run(body)) == [False] * 49 + [True]


def test_claim_and_get_claims_only_the_records_own_turn_and_returns_the_record(
    kit: Kit,
) -> None:
    async def body(store: CallStore) -> None:
        assert await store.claim_and_get("CA1", 1, 60) == (False, None)  # no record, no claim
        assert await store.claim_and_get("CA1", 0, 60, first=True) == (True, None)
        assert await store.claim_and_get("CA1", 0, 60, first=True) == (False, None)
        await store.create("CA1", record(seq=2))
        assert await store.claim_and_get("CA1", 2, 60) == (True, record(seq=2))
        assert await store.claim_and_get("CA1", 2, 60) == (False, record(seq=2))
        assert await store.claim("CA1", 2, 60) is False  # the same claim as claim's
        # answered (1) or out of turn (3, 4), with or without first: returned, never claimed
        for seq in (1, 3, 4):
            for first in (False, True):
                assert await store.claim_and_get("CA1", seq, 60, first=first) == (
                    False,
                    record(seq=2),
                )
        assert await store.replace("CA1", 2, record(seq=3))
        # the early webhook for 3 claimed nothing: the genuine one has its turn
        assert await store.claim_and_get("CA1", 3, 60) == (True, record(seq=3))
        assert await store.claim("CA1", 4, 60) is True  # claim alone asks for no record

    kit.run(body)


def test_claim_and_get_respects_claim_and_lapses_like_it(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        await store.create("CA9", record(seq=1))
        assert await store.claim("CA9", 1, 0.3) is True  # another webhook holds the turn
        assert await store.claim_and_get("CA9", 1, 0.3) == (False, record(seq=1))
        await kit.pass_time(0.5)
        assert await store.claim_and_get("CA9", 1, 0.3) == (True, record(seq=1))
        assert await store.claim("CA9", 1, 0.3) is False

    kit.run(body, ttl=5.0)


def test_fifty_concurrent_claim_and_gets_one_wins_and_all_see_the_record(kit: Kit) -> None:
    async def body(store: CallStore) -> list[tuple[bool, CallRecord | None]]:
        await store.create("CA1", record(seq=3))
        return list(await asyncio.gather(*(store.claim_and_get("CA1", 3, 60) for _ in range(50))))

    results = kit.run(body)
    assert sorted(claimed for claimed, _ in results) == [False] * 49 + [True]
    assert all(got == record(seq=3) for _, got in results)


def test_fifty_concurrent_first_claims_of_a_new_call_one_wins(kit: Kit) -> None:
    async def body(store: CallStore) -> list[tuple[bool, CallRecord | None]]:
        return list(
            await asyncio.gather(
                *(store.claim_and_get("CA1", 0, 60, first=True) for _ in range(50))
            )
        )

    assert sorted(kit.run(body)) == [(False, None)] * 49 + [(True, None)]


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


def test_a_claim_lapses_after_its_seconds_so_a_dead_holder_blocks_no_one_for_long(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.claim("CA9", 1, 0.3)
        assert await store.claim("CA9", 1, 0.3) is False
        await kit.pass_time(0.5)
        assert await store.claim("CA9", 1, 0.3) is True  # the holder died: another may run it
        assert await store.claim("CA9", 1, 0.3) is False

    kit.run(body, ttl=5.0)


def test_records_and_claims_expire_and_every_write_renews(kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        assert await store.create("CA1", record(seq=1))
        assert await store.claim("CA1", 1, 60)
        await kit.pass_time(0.6)
        assert await store.replace("CA1", 1, record(seq=2))  # lives 1 s from now
        assert await store.claim("CA1", 2, 60)
        await kit.pass_time(0.6)  # past the first write's time to live
        assert await store.get("CA1") == record(seq=2)
        assert await store.waiting() == 1
        assert await store.claim("CA1", 2, 60) is False
        await kit.pass_time(0.5)
        deadline = time.monotonic() + 3
        while await store.get("CA1") is not None and time.monotonic() < deadline:
            await kit.pass_time(0.05)
        assert await store.get("CA1") is None
        assert await store.waiting() == 0
        assert await store.replace("CA1", 2, record(seq=3)) is False
        assert await store.claim("CA1", 2, 60) is True  # the claim expired with the call
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
def test_any_json_state_round_trips_in_redis(
    redis_server: RedisServer, state: dict[str, Any]
) -> None:
    same_state_back(Kit("redis", url=redis_server.url), state)


# ---------------------------------------------------------------------------------------------
# Redis only: the keys, two connections, hostile keys and data, a server down or restarted


def test_keys_have_the_documented_names_and_times_to_live(redis_kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        await store.create("CA1", record(seq=1))
        await store.claim("CA1", 1, 60)
        await store.keep_flow("fp-1", "source")

    redis_kit.run(body, ttl=600.0, flow_ttl=7200.0)
    prefix = redis_kit.prefix
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        keys = sorted(key.decode() for key in client.scan_iter(match=f"{prefix}*"))
        assert keys == [
            f"{prefix}{name}" for name in ("call:CA1", "claim:CA1:1", "flow:fp-1", "waiting")
        ]
        lives = {key.removeprefix(prefix): client.pttl(key) for key in keys}
        assert client.type(f"{prefix}waiting") == b"zset"
        assert client.zrange(f"{prefix}waiting", 0, -1) == [b"CA1"]
        assert client.get(f"{prefix}call:CA1") == record(seq=1).to_json()
    assert 590_000 < lives["call:CA1"] <= 600_000
    assert 50_000 < lives["claim:CA1:1"] <= 60_000  # the seconds the claim asked for
    assert 590_000 < lives["waiting"] <= 600_000
    assert 7_190_000 < lives["flow:fp-1"] <= 7_200_000


def test_keeping_a_flow_again_renews_its_time_to_live(redis_kit: Kit) -> None:
    key = f"{redis_kit.prefix}flow:fp-1"

    async def keep(store: CallStore) -> None:
        await store.keep_flow("fp-1", "source")

    redis_kit.run(keep, flow_ttl=7200.0)
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        client.pexpire(key, 1000)
        redis_kit.run(keep, flow_ttl=7200.0)
        assert client.pttl(key) > 7_100_000


def test_two_connections_fifty_claims_and_replaces_one_wins(redis_kit: Kit) -> None:
    async def body() -> tuple[list[bool], list[bool]]:
        first, second = redis_kit.store(), redis_kit.store()
        try:
            await first.create("CA1", record(seq=1))
            claims = await asyncio.gather(
                *((first, second)[n % 2].claim("CA1", 1, 60) for n in range(50))
            )
            replaces = await asyncio.gather(
                *((first, second)[n % 2].replace("CA1", 1, record(seq=2)) for n in range(50))
            )
            return list(claims), list(replaces)
        finally:
            await first.aclose()
            await second.aclose()

    claims, replaces = run(body())
    assert sorted(claims) == [False] * 49 + [True]
    assert sorted(replaces) == [False] * 49 + [True]


def test_two_connections_fifty_claim_and_gets_one_wins(redis_kit: Kit) -> None:
    async def body() -> list[tuple[bool, CallRecord | None]]:
        first, second = redis_kit.store(), redis_kit.store()
        try:
            await first.create("CA1", record(seq=1))
            claims = [(first, second)[n % 2].claim_and_get("CA1", 1, 60) for n in range(50)] + [
                first.claim("CA1", 1, 60),
                second.claim("CA1", 1, 60),
            ]
            results = await asyncio.gather(*claims)
            return [(r, record(seq=1)) if isinstance(r, bool) else r for r in results]
        finally:
            await first.aclose()
            await second.aclose()

    results = run(body())
    assert sorted(claimed for claimed, _ in results) == [False] * 51 + [True]
    assert all(got == record(seq=1) for _, got in results)


def test_claim_and_get_is_one_round_trip_with_a_claim_that_lapses(redis_kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        await store.create("CA1", record(seq=5))
        with redis.Redis.from_url(str(redis_kit.url)) as client:
            before = client.info("commandstats")
            assert await store.claim_and_get("CA1", 5, 60) == (True, record(seq=5))
            after = client.info("commandstats")
            assert 50_000 < client.pttl(f"{redis_kit.prefix}claim:CA1:5") <= 60_000
            assert await store.claim_and_get("CA1", 5, 7200) == (False, record(seq=5))
            assert await store.claim_and_get("CA1", 6, 60) == (False, record(seq=5))
            assert client.exists(f"{redis_kit.prefix}claim:CA1:6") == 0

        def calls(stats: dict[str, Any]) -> int:
            return sum(int(value["calls"]) for value in stats.values())

        def delta(name: str) -> int:
            return int(after.get(name, {"calls": 0})["calls"]) - int(
                before.get(name, {"calls": 0})["calls"]
            )

        # one EVALSHA (its GET and SET count too), the INFO itself, SCRIPT LOAD the first time
        assert (delta("cmdstat_evalsha"), delta("cmdstat_get"), delta("cmdstat_set")) == (1, 1, 1)
        assert calls(after) - calls(before) - delta("cmdstat_script|load") == 4

    redis_kit.run(body, ttl=3600.0)


GARBAGE = {
    "not UTF-8": b"\xff\xfe\x00garbage",
    "empty": b"",
    "not JSON": b"<Response/>",
    "a JSON list": b"[1, 2]",
    "JSON null": b"null",
    "missing fields": b'{"seq": 1}',
    "unknown field": b'{"seq": 1, "flow": "f", "fingerprint": "x", "twiml": "", "evil": 1}',
    "seq as text": b'{"seq": "1", "flow": "f", "fingerprint": "x", "twiml": ""}',
    "seq as bool": b'{"seq": true, "flow": "f", "fingerprint": "x", "twiml": ""}',
    "state as list": b'{"seq": 1, "flow": "f", "fingerprint": "x", "twiml": "", "state": []}',
    "flow as number": b'{"seq": 1, "flow": 7, "fingerprint": "x", "twiml": ""}',
    "deep": b"[" * 5000 + b"]" * 5000,
    "huge number": b'{"seq": 1' + b"0" * 400 + b', "flow": "f", "fingerprint": "x", "twiml": ""}',
    "truncated": record(seq=1).to_json()[:-5],
}


#: Garbage whose ``seq`` can still be read: replace compares it (and may overwrite the garbage
#: with a good record); the others cannot be compared, so replace refuses them with ValueError.
SEQ_READABLE = {
    "missing fields",
    "unknown field",
    "state as list",
    "flow as number",
    "huge number",
    "truncated",
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_in_a_record_key_is_a_clear_error(redis_kit: Kit, case: str) -> None:
    key = f"{redis_kit.prefix}call:CA1"
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        client.set(key, GARBAGE[case])
    unreadable = r"^call record 'CA1' unreadable: "

    async def body(store: CallStore) -> list[str]:
        messages = []
        with pytest.raises(ValueError, match=unreadable) as caught:
            await store.get("CA1")
        messages.append(str(caught.value))
        for first in (False, True):
            with pytest.raises(ValueError, match=unreadable) as caught:
                await store.claim_and_get("CA1", 9, 60, first=first)
            messages.append(str(caught.value))
        if case in SEQ_READABLE:
            assert await store.replace("CA1", 9, record(seq=10)) is False
        else:
            with pytest.raises(ValueError, match=unreadable + "its seq cannot be read"):
                await store.replace("CA1", 9, record(seq=10))
        with pytest.raises(ValueError, match=unreadable) as caught:
            await store.delete("CA1")
        messages.append(str(caught.value))
        assert await store.get("CA1") is None  # delete removed it all the same
        assert await store.create("CA1", record(seq=1))
        return messages

    messages = redis_kit.run(body)
    assert all(len(message) < 300 for message in messages)


def test_a_record_key_of_another_redis_type_is_a_clear_error(redis_kit: Kit) -> None:
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        client.rpush(f"{redis_kit.prefix}call:CA1", b"x")

    async def body(store: CallStore) -> None:
        assert await store.create("CA1", record(seq=1)) is False  # the key is taken
        for attempt in (
            lambda: store.get("CA1"),
            lambda: store.claim_and_get("CA1", 1, 60),
            lambda: store.replace("CA1", 1, record(seq=2)),
            lambda: store.delete("CA1"),
        ):
            with pytest.raises(
                ValueError, match="call record 'CA1' unreadable: its key holds another"
            ):
                await attempt()

    redis_kit.run(body)


def test_a_record_json_cannot_hold_is_refused_before_storing(redis_kit: Kit) -> None:
    async def body(store: CallStore) -> None:
        with pytest.raises(ValueError, match="call record 'CA1' cannot be stored"):
            await store.create("CA1", record(state={"text": "lone \ud800 surrogate"}))
        with pytest.raises(ValueError, match="call record 'CA1' cannot be stored"):
            await store.create("CA1", record(state={"n": 2**64}))
        with pytest.raises(ValueError, match="seq must be an integer"):
            await store.create("CA1", record(seq=-1))
        assert await store.get("CA1") is None

    redis_kit.run(body)


HOSTILE_IDS = {
    "empty": "",
    "space": "CA 1",
    "newline": "CA1\nFLUSHALL",
    "carriage return": "CA1\r\n",
    "star": "*",
    "glob": "CA[1]?",
    "NUL": "CA\x001",
    "hash tag": "{CA1}",
    "slash": "../CA1",
    "129 characters": "C" * 129,
    "10 KB": "C" * 10_240,
    "non-ASCII": "CÄ1",
    "full-width digits": "CA１",
    "emoji": "CA🎧",
    "bytes": b"CA1",
    "number": 17,
    "None": None,
}


@pytest.mark.parametrize("case", list(HOSTILE_IDS))
def test_hostile_call_ids_are_refused_before_any_redis_command(case: str) -> None:
    call_id: Any = HOSTILE_IDS[case]
    # Nothing listens on this port: a command sent would fail with CallStoreError instead.
    store = RedisCallStore.from_url(f"redis://127.0.0.1:{free_port()}/0")

    async def body() -> None:
        try:
            for attempt in (
                lambda: store.get(call_id),
                lambda: store.create(call_id, record()),
                lambda: store.replace(call_id, 1, record()),
                lambda: store.claim(call_id, 1, 60),
                lambda: store.claim_and_get(call_id, 1, 60),
                lambda: store.claim_and_get(call_id, 0, 60, first=True),
                lambda: store.delete(call_id),
                lambda: store.keep_flow(call_id, "source"),
                lambda: store.flow_source(call_id),
            ):
                with pytest.raises(ValueError, match=r"must be 1 to 128 characters") as caught:
                    await attempt()
                assert len(str(caught.value)) < 200
        finally:
            await store.aclose()

    run(body())


@pytest.mark.parametrize("seq", [-1, 2**53 + 1, True, "1", 1.0, None])
def test_hostile_seqs_are_refused_before_any_redis_command(seq: Any) -> None:
    store = RedisCallStore.from_url(f"redis://127.0.0.1:{free_port()}/0")

    async def body() -> None:
        try:
            with pytest.raises(ValueError, match="seq must be an integer from 0"):
                await store.claim("CA1", seq, 60)
            with pytest.raises(ValueError, match="seq must be an integer from 0"):
                await store.claim_and_get("CA1", seq, 60)
            with pytest.raises(ValueError, match="expected_seq must be an integer from 0"):
                await store.replace("CA1", seq, record())
        finally:
            await store.aclose()

    run(body())


@settings(max_examples=200)
@given(call_id=st.text(max_size=140) | st.text("AZaz09_.:-", min_size=1, max_size=130))
def test_any_text_is_a_call_id_or_a_value_error(call_id: str) -> None:
    allowed = 0 < len(call_id) <= 128 and all(
        c in "_.:-" or (c.isascii() and c.isalnum()) for c in call_id
    )
    if allowed:
        assert check_key_part("call id", call_id) == call_id
    else:
        with pytest.raises(ValueError, match="call id must be 1 to 128 characters"):
            check_key_part("call id", call_id)


SECRET = "s3cret-Pa55word"


def secret_free(error: BaseException) -> None:
    """Neither the error, its cause nor its formatted traceback shows the password."""
    shown = "".join(traceback.format_exception(error))
    assert SECRET not in shown
    assert SECRET not in repr(error.__cause__)


def test_a_redis_that_is_down_fails_quickly_without_the_password() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    store = RedisCallStore.from_url(url)
    assert SECRET not in repr(store)
    assert "***" in repr(store)

    async def body() -> list[tuple[CallStoreError, float]]:
        failures = []
        try:
            for attempt in (
                lambda: store.get("CA1"),
                lambda: store.create("CA1", record()),
                lambda: store.replace("CA1", 1, record()),
                lambda: store.claim("CA1", 1, 60),
                lambda: store.claim_and_get("CA1", 1, 60),
                lambda: store.delete("CA1"),
                lambda: store.keep_flow("fp-1", "source"),
                lambda: store.flow_source("fp-1"),
                lambda: store.waiting(),
            ):
                started = time.monotonic()
                with pytest.raises(CallStoreError) as caught:
                    await attempt()
                failures.append((caught.value, time.monotonic() - started))
        finally:
            await store.aclose()
        return failures

    failures = run(body())
    assert len(failures) == 9
    for error, seconds in failures:
        assert seconds < 5
        assert isinstance(error, RuntimeError)
        assert isinstance(error.__cause__, redis.ConnectionError)
        assert str(error).startswith("call store redis://:***@127.0.0.1:")
        secret_free(error)


def test_a_wrong_password_is_a_store_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_redis("--requirepass", "the-right-one") as server:
        wrong = RedisCallStore.from_url(server.url.replace("redis://", f"redis://:{SECRET}@"))
        right = RedisCallStore.from_url(server.url.replace("redis://", "redis://:the-right-one@"))

        async def body() -> CallStoreError:
            try:
                assert await right.create("CA1", record())
                with pytest.raises(CallStoreError) as caught:
                    await wrong.get("CA1")
                return caught.value
            finally:
                await wrong.aclose()
                await right.aclose()

        error = run(body())
    assert "get failed" in str(error)
    assert isinstance(error.__cause__, redis.AuthenticationError)
    secret_free(error)
    assert SECRET not in caplog.text


def test_a_password_in_the_query_is_masked_too() -> None:
    store = RedisCallStore.from_url(f"redis://127.0.0.1:{free_port()}/0?password={SECRET}")
    assert SECRET not in repr(store)

    async def body() -> CallStoreError:
        try:
            with pytest.raises(CallStoreError) as caught:
                await store.waiting()
            return caught.value
        finally:
            await store.aclose()

    secret_free(run(body()))


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@127.0.0.1:6379/0",
        f"{SECRET}",
        f"redis://:{SECRET}@127.0.0.1:notaport/0",
        f"redis://:{SECRET}@127.0.0.1:6379/0?max_connections=-1",
        f"redis://:{SECRET}@[::1/0",
        f"redis://127.0.0.1:6379/0?password={SECRET}&socket_timeout=abc",
        f"redis://:{SECRET}/more@127.0.0.1:6379/0",
        f"redis://:{SECRET}#more@127.0.0.1:6379/0",
        f"redis://:{SECRET}?more@127.0.0.1:6379/0",
    ],
)
def test_bad_urls_are_value_errors_without_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisCallStore.from_url(url)
    assert SECRET not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/0", "redis://user:***@host/0"),
        ("redis://lonetoken@host/0", "redis://***@host/0"),
        ("rediss://u:p@w@host:6380", "rediss://u:***@host:6380"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("unix:///run/redis.sock?db=1&password=pw#x", "unix:///run/redis.sock?db=1&password=***#x"),
        ("redis://host/0?PASSWORD=pw&password=pw2", "redis://host/0?PASSWORD=***&password=***"),
        ("not a url :pw@", "<not a URL>"),
        ("redis://:pa/ss@host/0", "redis://:***@host/0"),
        ("redis://:pa#ss@host/0", "redis://:***@host/0"),
        ("redis://:pa?ss@host/0", "redis://:***@host/0"),
        ("redis://us/er:pw@host/0", "redis://***@host/0"),
        ("redis://host/0?client_name=a@b", "redis://***@b"),
        ("redis://h:1/0?password=ab@cd", "redis://h:***"),  # unsure: masked
        ("redis://:pa?password=x@host/0", "redis://:***"),
        (
            "redis://h/0?db=1&Password=&password=x#password=y",
            "redis://h/0?db=1&Password=***&password=***#password=y",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


passwords = st.text(min_size=4, max_size=30).filter(
    lambda text: text not in "redis://127.0.0.1:6379/0"
)


@given(user=st.sampled_from(["", "user", "us:er"]), password=passwords)
def test_mask_url_hides_any_password_in_the_user_info(user: str, password: str) -> None:
    for url in (
        f"redis://{user}:{password}@127.0.0.1:6379/0",
        f"unix://{user}:{password}@/run/r.sock",
    ):
        assert password not in mask_url(url)


@given(password=passwords.filter(lambda text: "&" not in text and "#" not in text))
def test_mask_url_hides_any_password_in_the_query(password: str) -> None:
    assert password not in mask_url(f"redis://127.0.0.1:6379/0?db=1&password={password}&x=1")


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": float("nan")},
        {"ttl": True},
        {"flow_ttl": "1"},
        {"ttl": 1e12},
        {"prefix": "fl :"},
        {"prefix": "fl\n"},
        {"prefix": "x" * 65},
    ],
)
def test_bad_store_options_are_value_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RedisCallStore.from_url("redis://127.0.0.1:6379/0", **options)


def test_a_killed_and_restarted_server_serves_again_on_the_same_store() -> None:
    with running_redis() as server:
        store = RedisCallStore.from_url(server.url, prefix="crash:")

        async def body() -> None:
            try:
                assert await store.create("CA1", record(seq=1))
                await asyncio.gather(
                    *(store.get("CA1") for _ in range(5))
                )  # a few pooled connections
                await asyncio.to_thread(server.kill)
                started = time.monotonic()
                with pytest.raises(CallStoreError):
                    await store.get("CA1")
                assert time.monotonic() - started < 5
                await asyncio.to_thread(server.start)
                # The stale pooled connections are replaced; the server kept nothing (no AOF).
                assert await asyncio.gather(*(store.get("CA1") for _ in range(5))) == [None] * 5
                assert await store.create("CA1", record(seq=1))
                assert await store.replace("CA1", 1, record(seq=2))  # scripts loaded again
                assert await store.waiting() == 1
            finally:
                await store.aclose()

        run(body())


def test_a_store_given_a_client_leaves_it_open(redis_kit: Kit) -> None:
    async def body() -> bool:
        client = redis.asyncio.Redis.from_url(str(redis_kit.url))
        try:
            store = RedisCallStore(client, prefix=redis_kit.prefix)
            assert "redis://127.0.0.1:" in repr(store)
            await store.create("CA1", record())
            await store.aclose()
            return bool(await client.exists(f"{redis_kit.prefix}call:CA1"))
        finally:
            await client.aclose()

    assert run(body()) is True


def test_a_client_that_decodes_responses_still_reads_records(redis_kit: Kit) -> None:
    async def body() -> tuple[CallRecord | None, str | None]:
        client = redis.asyncio.Redis.from_url(str(redis_kit.url), decode_responses=True)
        try:
            store = RedisCallStore(client, prefix=redis_kit.prefix)
            await store.create("CA1", ROUND_TRIPS["unicode"])
            await store.keep_flow("fp-1", "Grüße")
            return await store.get("CA1"), await store.flow_source("fp-1")
        finally:
            await client.aclose()

    assert run(body()) == (ROUND_TRIPS["unicode"], "Grüße")


def test_a_flow_source_that_is_not_utf8_is_a_clear_error(redis_kit: Kit) -> None:
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        client.set(f"{redis_kit.prefix}flow:fp-1", b"\xff\xfe")

    async def body(store: CallStore) -> None:
        with pytest.raises(ValueError, match="flow source 'fp-1' unreadable: not UTF-8"):
            await store.flow_source("fp-1")
        with pytest.raises(ValueError, match="flow source 'fp-2' is not valid text"):
            await store.keep_flow("fp-2", "lone \udc80")

    redis_kit.run(body)


def test_more_concurrent_calls_than_connections_wait_for_one(redis_kit: Kit) -> None:
    async def body() -> list[bool]:
        store = RedisCallStore.from_url(
            str(redis_kit.url), prefix=redis_kit.prefix, max_connections=2
        )
        try:
            return list(
                await asyncio.gather(*(store.create(f"CA{n}", record()) for n in range(200)))
            )
        finally:
            await store.aclose()

    assert run(body()) == [True] * 200


def start_missing_redis() -> None:
    with running_redis(binary="/nonexistent/redis-server"):
        pytest.fail("a server without a binary started")


def test_a_missing_service_skips_or_fails_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLOWLANG_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/redis-server is not installed"):
        start_missing_redis()
    monkeypatch.setenv("FLOWLANG_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=r"installed \(FLOWLANG_REQUIRE_SERVICES=1\)"):
        start_missing_redis()


def test_a_service_is_killed_with_its_group_and_leaves_no_folder() -> None:
    with running_redis() as server:
        process = server.process
        assert process is not None
        assert os.getpgid(process.pid) == process.pid  # a group of its own
        assert redis_ping(server.port)
    assert process.poll() is not None
    assert not redis_ping(server.port)
    assert not server.folder.exists()


def test_a_record_written_in_another_key_order_is_compared_by_its_seq(redis_kit: Kit) -> None:
    fields = orjson.loads(record(seq=7).to_json())
    reordered = {name: fields[name] for name in reversed(fields)}
    with redis.Redis.from_url(str(redis_kit.url)) as client:
        client.set(
            f"{redis_kit.prefix}call:CA1", orjson.dumps(reordered, option=orjson.OPT_INDENT_2)
        )

    async def body(store: CallStore) -> None:
        assert await store.get("CA1") == record(seq=7)
        assert await store.replace("CA1", 6, record(seq=8)) is False
        assert await store.replace("CA1", 7, record(seq=8)) is True
        assert await store.get("CA1") == record(seq=8)

    redis_kit.run(body)


def test_a_unix_socket_url_works(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with running_redis("--unixsocket", str(socket_path), "--unixsocketperm", "700"):
        store = RedisCallStore.from_url(f"unix://{socket_path}?db=0")
        assert repr(store) == f"RedisCallStore('unix://{socket_path}?db=0', prefix='fl:')"

        async def body() -> CallRecord | None:
            try:
                assert await store.create("CA1", record())
                return await store.get("CA1")
            finally:
                await store.aclose()

        assert run(body()) == record()


def test_a_server_that_never_answers_times_out() -> None:
    store = RedisCallStore.from_url("redis://127.0.0.1:6379/0")
    defaults = store._client.connection_pool.connection_kwargs
    assert (defaults["socket_connect_timeout"], defaults["socket_timeout"]) == (2.0, 2.0)
    assert store._client.connection_pool.max_connections == MAX_CONNECTIONS
    run(store.aclose())
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = RedisCallStore.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)

        async def body() -> tuple[CallStoreError, float]:
            started = time.monotonic()
            try:
                with pytest.raises(CallStoreError) as caught:
                    await store.get("CA1")
                return caught.value, time.monotonic() - started
            finally:
                await store.aclose()

        error, seconds = run(body())
    assert seconds < 3
    assert "get failed: TimeoutError" in str(error)


def test_an_event_id_is_claimed_once_across_connections_and_can_be_released(
    redis_kit: Kit,
) -> None:
    async def body(store: CallStore) -> None:
        assert isinstance(store, RedisCallStore)
        other = RedisCallStore.from_url(redis_kit.url or "", prefix=store.prefix)
        try:
            hostile = "evt\n*" + "é" * 500 + "\ud800"  # any text: the key is its hash
            claims = await asyncio.gather(
                *((store, other)[n % 2].claim_event(hostile, 60) for n in range(20))
            )
            assert claims.count(True) == 1
            await store.release_event(hostile)  # it could not be recorded
            assert await other.claim_event(hostile, 60) is True
            assert await store.claim_event("evt-short", 0.3)
            await asyncio.sleep(0.5)
            assert await store.claim_event("evt-short", 0.3) is True  # the window passed
        finally:
            await other.aclose()

    redis_kit.run(body)
