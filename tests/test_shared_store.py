"""The automations' shared store (flowlang.distributed.shared) on a real Redis: event claims and
their times to live, the settled ledger, leases, the due set and its pump hand-off, dead
letters, hostile data left by other programs, and an unreachable server.

Every test uses its own random key prefix on the session's Redis (tests/services.py), removed
afterwards, and runs with a deadline."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis
from distributed_support import Kit

from flowlang import SharedStoreError
from flowlang.distributed.connection import connect
from flowlang.distributed.shared import SharedStore, event_part

DEADLINE = 20.0


# --- events -----------------------------------------------------------------------------------


def test_claim_event_new_then_accepting_then_fanned_out_with_their_times_to_live(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[tuple[str, float]]:
        first = await store.claim_event("evt-1", "worker-a", 30.0)
        second = await store.claim_event("evt-1", "worker-b", 30.0)
        await store.mark_fanned_out("evt-1")
        third = await store.claim_event("evt-1", "worker-b", 30.0)
        return [first, second, third]

    key = f"{kit.prefix}ev:{event_part('evt-1')}"
    first, second, third = kit.run(work, dedup_window=600.0)
    assert first == ("new", 0)
    assert second[0] == "accepting" and 29.0 < second[1] <= 30.0
    assert third == ("fanned_out", 0)
    assert kit.raw.get(key) == b"fanned_out"
    assert 599_000 < kit.raw.pttl(key) <= 600_000


def test_an_accepting_claim_holds_its_owner_and_lease(kit: Kit) -> None:
    key = f"{kit.prefix}ev:{event_part('evt-2')}"
    assert kit.run(lambda store: store.claim_event("evt-2", "worker-a", 5.0)) == ("new", 0)
    assert kit.raw.get(key) == b"accepting:worker-a"
    assert 4000 < kit.raw.pttl(key) <= 5000


def test_a_claim_that_lapses_can_be_taken_again(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[tuple[str, float]]:
        first = await store.claim_event("evt-3", "worker-a", 0.1)
        await asyncio.sleep(0.2)
        return [first, await store.claim_event("evt-3", "worker-b", 0.1)]

    assert kit.run(work) == [("new", 0), ("new", 0)]


def test_fifty_concurrent_claims_of_one_event_one_is_new(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[tuple[str, float]]:
        return list(
            await asyncio.gather(
                *(store.claim_event("evt-many", f"worker-{n}", 30.0) for n in range(50))
            )
        )

    states = [state for state, _ in kit.run(work)]
    assert states.count("new") == 1 and states.count("accepting") == 49


@pytest.mark.parametrize(
    "event_id",
    ["plain", "caf\u00e9 \u2603", "\ud800 lone surrogate", "*" * 10_000, "a:b {x} \x00 \n"],
    ids=["plain", "unicode", "surrogate", "long", "separators"],
)
def test_any_event_id_is_hashed_into_a_safe_key(kit: Kit, event_id: str) -> None:
    assert kit.run(lambda store: store.claim_event(event_id, "worker-a", 5.0)) == ("new", 0)
    [key] = kit.stored()
    part = key.removeprefix(f"{kit.prefix}ev:")
    assert len(part) == 32 and set(part) <= set("0123456789abcdef")


def test_an_event_id_must_be_text_and_an_owner_a_key_part(kit: Kit) -> None:
    with pytest.raises(ValueError, match="event id"):
        kit.run(lambda store: store.claim_event("", "worker-a", 5.0))
    with pytest.raises(ValueError, match="owner"):
        kit.run(lambda store: store.claim_event("evt", "a worker", 5.0))
    with pytest.raises(ValueError, match="lease"):
        kit.run(lambda store: store.claim_event("evt", "worker", float("nan")))


# --- the settled ledger ---------------------------------------------------------------------

KEY = "0123456789abcdef0123456789abcdef"


def test_settle_and_read_back_with_its_time_to_live(kit: Kit) -> None:
    result = {"id": 42, "name": "caf\u00e9", "nested": [1, 2.5, None, True]}

    async def work(store: SharedStore) -> list[Any]:
        before = await store.settled(KEY)
        await store.settle(KEY, "delivered", result, 3, at=1_800_000_000.5)
        return [before, await store.settled(KEY)]

    before, after = kit.run(work, ledger_ttl=120.0)
    assert before is None
    assert after == {
        "outcome": "delivered",
        "result": result,
        "attempts": 3,
        "at": 1_800_000_000.5,
    }
    assert 119_000 < kit.raw.pttl(f"{kit.prefix}act:{KEY}") <= 120_000


def test_unsettle_forgets_the_entry(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        await store.settle(KEY, "dead_lettered", None, 2)
        before = await store.settled(KEY)
        await store.unsettle(KEY)
        return [before, await store.settled(KEY)]

    before, after = kit.run(work)
    assert before is not None and before["outcome"] == "dead_lettered" and after is None
    assert kit.stored() == []


def test_a_result_json_cannot_hold_is_refused_before_writing(kit: Kit) -> None:
    with pytest.raises(ValueError, match="cannot be kept as JSON"):
        kit.run(lambda store: store.settle(KEY, "delivered", {"n": float("nan")}, 1))
    assert kit.stored() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"outcome": "delivered", "result": "{truncated", "attempts": "1", "at": "1"},
        {"outcome": "delivered", "result": "null", "attempts": "one", "at": "1"},
        {"outcome": "delivered"},
        {"something": "else"},
        {"outcome": b"\xff\xfe", "result": "null", "attempts": "1", "at": "1"},
    ],
    ids=["truncated-json", "attempts-no-number", "missing-fields", "foreign-hash", "non-utf8"],
)
def test_a_ledger_entry_that_cannot_be_read_counts_as_unsettled(
    kit: Kit, fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    kit.raw.hset(f"{kit.prefix}act:{KEY}", mapping=fields)
    assert kit.run(lambda store: store.settled(KEY)) is None
    assert "cannot be read" in caplog.text


def test_a_ledger_key_of_another_type_is_unsettled_and_moved_aside_when_settled(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"{kit.prefix}act:{KEY}"
    kit.raw.rpush(name, "foreign")

    async def work(store: SharedStore) -> list[Any]:
        before = await store.settled(KEY)
        await store.settle(KEY, "delivered", None, 1)
        return [before, await store.settled(KEY)]

    before, after = kit.run(work)
    assert before is None and after is not None and after["outcome"] == "delivered"
    assert kit.raw.lrange(f"{kit.prefix}bad:act:{KEY}", 0, -1) == [b"foreign"]
    assert "did not write" in caplog.text


# --- leases -----------------------------------------------------------------------------------


def test_a_lease_is_held_until_released_by_its_owner_or_it_lapses(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        seen = [await store.take_lease(KEY, "worker-a", 10.0)]
        seen.append(await store.take_lease(KEY, "worker-b", 10.0))
        seen.append(await store.take_lease(KEY, "worker-a", 10.0))  # one attempt at a time
        await store.release_lease(KEY, "worker-b")  # not theirs: nothing happens
        seen.append(await store.take_lease(KEY, "worker-b", 10.0))
        await store.release_lease(KEY, "worker-a")
        seen.append(await store.take_lease(KEY, "worker-b", 0.1))
        await asyncio.sleep(0.2)
        seen.append(await store.take_lease(KEY, "worker-c", 10.0))
        return seen

    taken, other, same, still, released, lapsed = kit.run(work)
    assert taken is None and released is None and lapsed is None
    for left in (other, same, still):
        assert left is not None and 9.0 < left <= 10.0
    assert kit.raw.get(f"{kit.prefix}lease:{KEY}") == b"worker-c"


def test_fifty_concurrent_lease_takers_one_wins(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[float | None]:
        return list(
            await asyncio.gather(*(store.take_lease(KEY, f"worker-{n}", 10.0) for n in range(50)))
        )

    assert kit.run(work).count(None) == 1


def test_a_lease_without_a_time_to_live_gets_one(kit: Kit) -> None:
    kit.raw.set(f"{kit.prefix}lease:{KEY}", "someone-forever")
    left = kit.run(lambda store: store.take_lease(KEY, "worker-a", 3.0))
    assert left == 3.0
    assert 0 < kit.raw.pttl(f"{kit.prefix}lease:{KEY}") <= 3000


# --- scheduled messages and the pump hand-off -------------------------------------------------


def test_take_due_moves_what_is_due_in_order_and_at_most_the_limit(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        for n, due in enumerate((30.0, 10.0, 20.0, 99.0)):
            await store.schedule("flowlang.deliver", {"n": n}, due)
        first = await store.take_due(50.0, 2)
        second = await store.take_due(50.0, 10)
        return [first, second, await store.due_count()]

    first, second, left = kit.run(work)
    assert [(task, body) for _, task, body in first] == [
        ("flowlang.deliver", {"n": 1}),
        ("flowlang.deliver", {"n": 2}),
    ]
    assert [body for _, _, body in second] == [{"n": 0}]
    assert left == 1
    pumping = kit.raw.hgetall(f"{kit.prefix}pumping")
    assert {member.decode() for member in pumping} == {m for m, _, _ in first + second}
    assert set(pumping.values()) == {b"50.0"}


def test_the_same_body_twice_is_two_messages(kit: Kit) -> None:
    async def work(store: SharedStore) -> int:
        await store.schedule("flowlang.accept", {"same": True}, 1.0)
        await store.schedule("flowlang.accept", {"same": True}, 1.0)
        return await store.due_count()

    assert kit.run(work) == 2


def test_published_forgets_and_stale_pumping_returns_what_was_not(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        await store.schedule("flowlang.deliver", {"n": 1}, 1.0)
        await store.schedule("flowlang.deliver", {"n": 2}, 2.0)
        taken = await store.take_due(100.0, 10)
        await store.published(taken[0][0])
        fresh = await store.stale_pumping(110.0, 30.0)
        stale = await store.stale_pumping(131.0, 30.0)
        again = await store.stale_pumping(140.0, 30.0)  # stamped at 131: not stale yet
        return [fresh, stale, again]

    fresh, stale, again = kit.run(work)
    assert fresh == [] and again == []
    assert [body for _, _, body in stale] == [{"n": 2}]
    assert list(kit.raw.hgetall(f"{kit.prefix}pumping").values()) == [b"131.0"]


def test_concurrent_takers_never_get_the_same_member(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        for n in range(40):
            await store.schedule("flowlang.deliver", {"n": n}, float(n))
        pages = await asyncio.gather(*(store.take_due(100.0, 3) for _ in range(20)))
        return [body["n"] for page in pages for _, _, body in page]

    taken = kit.run(work)
    assert sorted(taken) == list(range(40))


def test_one_pump_holds_the_lock_renews_it_and_others_wait(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[bool]:
        seen = [await store.hold_pump("pump-a", 0.3), await store.hold_pump("pump-b", 0.3)]
        await asyncio.sleep(0.2)
        seen.append(await store.hold_pump("pump-a", 0.3))  # renewed
        await asyncio.sleep(0.2)
        seen.append(await store.hold_pump("pump-b", 0.3))  # still a's
        await store.release_pump("pump-b")
        await store.release_pump("pump-a")
        seen.append(await store.hold_pump("pump-b", 0.3))
        return seen

    assert kit.run(work) == [True, False, True, False, True]


def test_a_message_json_cannot_hold_is_refused(kit: Kit) -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"flowlang\.deliver"):
        kit.run(lambda store: store.schedule("flowlang.deliver", {"deep": deep}, 1.0))
    with pytest.raises(ValueError, match="due"):
        kit.run(lambda store: store.schedule("flowlang.deliver", {}, float("inf")))
    assert kit.stored() == []


def test_a_large_body_round_trips(kit: Kit) -> None:
    body = {"text": "\u2603" * 500_000, "list": list(range(10_000))}

    async def work(store: SharedStore) -> Any:
        await store.schedule("flowlang.deliver", body, 1.0)
        return await store.take_due(2.0, 1)

    [(_, _, back)] = kit.run(work)
    assert back == body


# --- hostile data in the due set and keys of another type -------------------------------------

FOREIGN = [
    b"not json at all",
    b'{"task": "t", "body": {"n": 1}, "id": "trunc',
    b"\xff\xfe\x00 binary",
    b'["a", "list"]',
    b'{"task": 7, "body": {}, "id": "x1"}',
    b'{"task": "t", "body": "text", "id": "x2"}',
    b'{"task": "t", "body": {}}',
    b"[" * 5000 + b"]" * 5000,
]


def test_foreign_due_members_are_moved_to_bad_and_ours_still_pumped(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    kit.raw.zadd(f"{kit.prefix}due", {member: 1.0 for member in FOREIGN})

    async def work(store: SharedStore) -> list[Any]:
        await store.schedule("flowlang.deliver", {"ours": True}, 1.0)
        taken = await store.take_due(10.0, 100)
        return [taken, await store.bad_count(), await store.due_count()]

    taken, bad, due = kit.run(work)
    assert [body for _, _, body in taken] == [{"ours": True}]
    assert bad == len(FOREIGN) and due == 0
    assert set(kit.raw.lrange(f"{kit.prefix}bad", 0, -1)) == set(FOREIGN)
    assert list(kit.raw.hkeys(f"{kit.prefix}pumping")) == [taken[0][0].encode()]
    assert caplog.text.count("did not write") == len(FOREIGN)


def test_foreign_pumping_members_and_times_are_handled(kit: Kit) -> None:
    pumping = f"{kit.prefix}pumping"
    ours = json.dumps({"task": "flowlang.deliver", "body": {"n": 1}, "id": "abc"})
    kit.raw.hset(pumping, mapping={ours: "not a time", b"\xff garbage": "1"})
    stale = kit.run(lambda store: store.stale_pumping(100.0, 30.0))
    assert [body for _, _, body in stale] == [{"n": 1}]  # a time that is no number is stale
    assert kit.raw.lrange(f"{kit.prefix}bad", 0, -1) == [b"\xff garbage"]
    assert kit.raw.hkeys(pumping) == [ours.encode()]


@pytest.mark.parametrize(
    ("kind", "spoil"),
    [
        ("due", lambda raw, key: raw.set(key, "a string")),
        ("pumping", lambda raw, key: raw.rpush(key, "a list")),
        ("pump:lock", lambda raw, key: raw.hset(key, "a", "hash")),
    ],
)
def test_keys_of_another_type_are_moved_aside_and_the_step_goes_on(
    kit: Kit, kind: str, spoil: Callable[[redis.Redis, str], Any]
) -> None:
    spoil(kit.raw, f"{kit.prefix}{kind}")

    async def work(store: SharedStore) -> list[Any]:
        await store.published("whatever")
        counted = await store.due_count()
        held = await store.hold_pump("pump-a", 5.0)
        if kind != "due":
            await store.schedule("flowlang.deliver", {"n": 1}, 1.0)
        return [counted, held, await store.take_due(2.0, 10), await store.stale_pumping(99, 1)]

    counted, held, taken, _ = kit.run(work)
    assert counted == 0 and held is True
    assert f"{kit.prefix}bad:{kind}" in kit.stored()
    if kind != "due":
        assert [body for _, _, body in taken] == [{"n": 1}]


def test_a_dead_letter_stream_or_bad_list_of_another_type_is_moved_aside(kit: Kit) -> None:
    kit.raw.set(f"{kit.prefix}dead", "a string")
    kit.raw.hset(f"{kit.prefix}bad", "a", "hash")
    kit.raw.zadd(f"{kit.prefix}due", {b"junk": 1.0})

    async def work(store: SharedStore) -> list[Any]:
        entry = await store.add_dead(record(1))
        return [entry, await store.dead_letters(), await store.take_due(2.0, 10)]

    entry, dead, taken = kit.run(work)
    assert dead == [(entry, record(1))] and taken == []
    assert kit.raw.get(f"{kit.prefix}bad:dead") == b"a string"
    assert kit.raw.hgetall(f"{kit.prefix}bad:bad") == {b"a": b"hash"}
    assert kit.raw.lrange(f"{kit.prefix}bad", 0, -1) == [b"junk"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda raw, key: raw.set(key, "garbage"),
        lambda raw, key: raw.rpush(key, "a list"),
        lambda raw, key: raw.set(key, b"\xff\xfe"),
    ],
    ids=["garbage-string", "list", "non-utf8"],
)
def test_a_foreign_event_key_is_moved_aside_and_the_event_claimed(
    kit: Kit, spoil: Callable[[redis.Redis, str], Any], caplog: pytest.LogCaptureFixture
) -> None:
    key = f"{kit.prefix}ev:{event_part('evt-x')}"
    spoil(kit.raw, key)
    assert kit.run(lambda store: store.claim_event("evt-x", "worker-a", 5.0)) == ("new", 0)
    assert kit.raw.get(key) == b"accepting:worker-a"
    assert f"{kit.prefix}bad:ev:{event_part('evt-x')}" in kit.stored()
    assert "did not write" in caplog.text


# --- dead letters -----------------------------------------------------------------------------


def record(n: int) -> dict[str, Any]:
    return {"format": "flowlang.deadletter/1", "action": f"a{n}", "event": {"id": f"e{n}"}}


def test_dead_letters_are_added_listed_in_pages_and_removed(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        ids = [await store.add_dead(record(n)) for n in range(5)]
        first = await store.dead_letters(count=2)
        rest = await store.dead_letters(after=first[-1][0], count=10)
        await store.remove_dead(ids[0])
        return [ids, first, rest, await store.dead_count(), await store.dead_letters()]

    ids, first, rest, count, left = kit.run(work)
    assert [entry for entry, _ in first + rest] == ids
    assert [r for _, r in first + rest] == [record(n) for n in range(5)]
    assert count == 4 and [entry for entry, _ in left] == ids[1:]


def test_dead_letters_that_are_not_records_are_skipped_and_kept(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    stream = f"{kit.prefix}dead"
    for fields in (
        {"other": "field"},
        {"record": "{truncated"},
        {"record": b"\xff\xfe"},
        {"record": "[1, 2]"},
    ):
        kit.raw.xadd(stream, fields)

    async def work(store: SharedStore) -> list[Any]:
        await store.add_dead(record(1))
        return [await store.dead_letters(count=1), await store.dead_count()]

    found, count = kit.run(work)
    assert [r for _, r in found] == [record(1)]
    assert count == 5
    assert caplog.text.count("is not a record") == 4


def test_dead_letter_arguments_are_checked(kit: Kit) -> None:
    with pytest.raises(ValueError, match="after"):
        kit.run(lambda store: store.dead_letters(after="0-0; FLUSHALL"))
    with pytest.raises(ValueError, match="entry_id"):
        kit.run(lambda store: store.remove_dead("1-x"))
    with pytest.raises(ValueError, match="JSON"):
        kit.run(lambda store: store.add_dead({"n": float("inf")}))


# --- an unreachable or wrong server -----------------------------------------------------------

PASSWORD = "sh4red-store-pw/secret"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    url = f"redis://admin:{PASSWORD.replace('/', '%2F')}@127.0.0.1:{closed_port()}/0"

    async def work() -> None:
        store = SharedStore.from_url(url, prefix="fltest-x:")
        try:
            await store.claim_event("evt", "worker-a", 1.0)
        finally:
            await store.aclose()

    with pytest.raises(SharedStoreError) as caught:
        asyncio.run(asyncio.wait_for(work(), DEADLINE))
    text = str(caught.value)
    assert "claim_event failed" in text and "127.0.0.1" in text and "admin:***@" in text
    for form in (PASSWORD, "sh4red", "%2Fsecret", "secret"):
        assert form not in text


def test_a_wrong_password_is_a_clear_error_without_it() -> None:
    from services import running_redis

    with running_redis("--requirepass", "the-right-one") as server:
        url = f"redis://:{PASSWORD.replace('/', '%2F')}@127.0.0.1:{server.port}/0"

        async def work() -> None:
            store = SharedStore.from_url(url, prefix="fltest-x:")
            try:
                await store.due_count()
            finally:
                await store.aclose()

        with pytest.raises(SharedStoreError) as caught:
            asyncio.run(asyncio.wait_for(work(), DEADLINE))
    assert "due_count failed" in str(caught.value)
    assert "sh4red" not in str(caught.value) and "secret" not in str(caught.value)


def test_a_bad_url_or_prefix_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="redis://") as caught:
        SharedStore.from_url(f"http://user:{PASSWORD}@host/")
    assert "sh4red" not in str(caught.value)
    with pytest.raises(ValueError, match="prefix"):
        SharedStore(connect("redis://127.0.0.1:1/0"), prefix="has space:")
    with pytest.raises(ValueError, match="dedup_window"):
        SharedStore(connect("redis://127.0.0.1:1/0"), dedup_window=0)


def test_a_store_on_a_connection_made_elsewhere_leaves_it_open(kit: Kit) -> None:
    async def work() -> int:
        connection = connect(kit.url)
        store = SharedStore(connection, prefix=kit.prefix)
        connection.owned = False
        await store.schedule("flowlang.deliver", {}, 1.0)
        await store.aclose()
        count = await store.due_count()  # the client still works
        await connection.client.aclose()
        return count

    assert asyncio.run(asyncio.wait_for(work(), DEADLINE)) == 1


def test_logged_warnings_stay_on_the_flowlang_distributed_logger(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    kit.raw.zadd(f"{kit.prefix}due", {b"junk": 1.0})
    kit.run(lambda store: store.take_due(2.0, 10))
    assert [r.name for r in caplog.records if r.levelno == logging.WARNING] == [
        "flowlang.distributed"
    ]


# --- outcomes recorded with the attempt's mark, in one step ---------------------------------


def test_a_retry_is_scheduled_once_per_attempt_and_a_second_copy_is_stale(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        body = {"attempt": 2}
        first = await store.record_retry(KEY, 1, "flowlang.deliver", body, 5.0)
        again = await store.record_retry(KEY, 1, "flowlang.deliver", body, 5.0)
        return [first, again, await store.due_count(), await store.progress(KEY)]

    assert kit.run(work) == ["ok", "stale", 1, (None, 1)]


def test_a_delivered_entry_is_never_overwritten(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        await store.settle(KEY, "delivered", {"id": 1}, 1)
        await store.settle(KEY, "dead_lettered", None, 2)
        retry = await store.record_retry(KEY, 3, "flowlang.deliver", {}, 5.0)
        dead = await store.record_dead(KEY, {"format": "flowlang.deadletter/1"}, 4)
        again = await store.record_delivered(KEY, {"id": 2}, 5)
        entry = await store.settled(KEY)
        return [retry, dead, again, entry and entry["result"], await store.dead_count()]

    assert kit.run(work) == ["settled", ("settled", ""), "settled", {"id": 1}, 0]
    assert kit.raw.zcard(f"{kit.prefix}due") == 0


def test_a_dead_letter_and_its_ledger_entry_are_one_step_and_a_later_one_replaces_it(
    kit: Kit,
) -> None:
    async def work(store: SharedStore) -> list[Any]:
        status, first = await store.record_dead(KEY, {"n": 1}, 1)
        stale = await store.record_dead(KEY, {"n": 2}, 1)
        entry = await store.settled(KEY)
        forgotten = await store.forget_dead(KEY)  # a replay
        _, second = await store.record_dead(KEY, {"n": 3}, 1)
        letters = await store.dead_letters()
        return [status, stale, entry and entry["outcome"], forgotten, letters, first, second]

    status, stale, outcome, forgotten, letters, first, second = kit.run(work)
    assert (status, stale, outcome, forgotten) == (
        "ok",
        ("settled", ""),
        "dead_lettered",
        "forgotten",
    )
    assert letters == [(second, {"n": 3})] and first != second


def test_forget_dead_forgets_only_a_dead_lettered_entry(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        absent = await store.forget_dead(KEY)
        await store.settle(KEY, "delivered", None, 1)
        delivered = await store.forget_dead(KEY)
        return [absent, delivered, await store.settled(KEY) is not None]

    assert kit.run(work) == ["none", "delivered", True]


def test_leases_and_claims_are_renewed_only_by_their_holder(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        await store.take_lease(KEY, "worker-1:a", 5.0)
        await store.claim_event("evt-9", "worker-1:a", 5.0)
        renewals = [
            await store.renew_lease(KEY, "worker-1:a", 5.0),
            await store.renew_lease(KEY, "worker-1:b", 5.0),
            await store.renew_claim("evt-9", "worker-1:a", 5.0),
            await store.renew_claim("evt-9", "worker-2:c", 5.0),
        ]
        await store.release_lease(KEY, "worker-1:b")  # another attempt's token: kept
        return [*renewals, await store.take_lease(KEY, "worker-1:b", 5.0) is not None]

    assert kit.run(work) == [True, False, True, False, True]


def test_mark_fanned_out_with_an_owner_reports_a_lost_claim(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        await store.claim_event("evt-1", "worker-2", 5.0)
        other = await store.mark_fanned_out("evt-1", "worker-1")
        state = (await store.claim_event("evt-1", "worker-3", 5.0))[0]
        ours = await store.mark_fanned_out("evt-1", "worker-2")
        lapsed = await store.mark_fanned_out("evt-2", "worker-1")  # no claim: marked, reported
        return [other, state, ours, lapsed, (await store.claim_event("evt-2", "w", 5.0))[0]]

    assert kit.run(work) == [False, "accepting", True, False, "fanned_out"]


# --- the start of an attempt and its outcome: one round trip each ------------------------------


def test_start_attempt_is_leased_held_stale_or_settled_in_one_step(kit: Kit) -> None:
    lease = f"{kit.prefix}lease:{KEY}"

    async def work(store: SharedStore) -> list[Any]:
        seen: list[Any] = [await store.start_attempt(KEY, 1, "worker-1:a", 5.0)]
        seen.append(await store.start_attempt(KEY, 1, "worker-2:b", 5.0))  # a copy, at once
        seen.append(kit.raw.get(lease))
        seen.append(
            await store.record_retry(KEY, 1, "flowlang.deliver", {}, 5.0, holder="worker-1:a")
        )
        seen.append(kit.raw.exists(lease))  # given back in the same step
        seen.append(await store.start_attempt(KEY, 1, "worker-2:b", 5.0))  # the copy, later
        seen.append(await store.start_attempt(KEY, 2, "worker-2:b", 5.0))
        seen.append(await store.record_delivered(KEY, {"id": 7}, 2, at=9.0, holder="worker-2:b"))
        seen.append(kit.raw.exists(lease))
        seen.append(await store.start_attempt(KEY, 3, "worker-3:c", 5.0))
        seen.append(kit.raw.exists(lease))  # nothing taken for a settled action
        return seen

    seen = kit.run(work)
    assert seen[0] == ("leased", None, 0)
    assert seen[1][0] == "held" and 4.0 < seen[1][2] <= 5.0
    assert seen[2:5] == [b"worker-1:a", "ok", 0]
    assert seen[5] == ("stale", None, 1)
    assert seen[6] == ("leased", None, 1)
    assert seen[7:9] == ["ok", 0]
    assert seen[9] == (
        "settled",
        {"outcome": "delivered", "result": {"id": 7}, "attempts": 2, "at": 9.0},
        2,
    )
    assert seen[10] == 0


def test_an_outcome_gives_back_only_its_own_lease_whatever_its_status(kit: Kit) -> None:
    lease = f"{kit.prefix}lease:{KEY}"

    async def work(store: SharedStore) -> list[Any]:
        seen: list[Any] = [await store.start_attempt(KEY, 1, "worker-1:a", 5.0)]
        seen.append(await store.record_delivered(KEY, {}, 1, holder="worker-1:other"))
        seen.append(kit.raw.get(lease))  # another attempt's token: kept
        kit.raw.set(lease, "worker-1:a", px=5000)
        seen.append(await store.record_dead(KEY, {"n": 1}, 1, holder="worker-1:a"))  # settled
        seen.append(kit.raw.exists(lease))  # given back all the same
        kit.raw.set(lease, "worker-1:b", px=5000)
        seen.append(
            await store.record_retry(KEY, 1, "flowlang.deliver", {}, 1.0, holder="worker-1:b")
        )
        seen.append(kit.raw.exists(lease))
        return seen

    assert kit.run(work) == [
        ("leased", None, 0),
        "ok",
        b"worker-1:a",
        ("settled", ""),
        0,
        "settled",
        0,
    ]


def test_start_attempt_gives_a_lease_without_a_time_to_live_one_and_moves_a_foreign_one_aside(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    lease = f"{kit.prefix}lease:{KEY}"

    async def work(store: SharedStore) -> list[Any]:
        kit.raw.set(lease, "someone")
        seen: list[Any] = [await store.start_attempt(KEY, 1, "worker-1:a", 3.0)]
        seen.append(0 < kit.raw.pttl(lease) <= 3000)
        kit.raw.delete(lease)
        kit.raw.rpush(lease, "not a lease")
        seen.append(await store.start_attempt(KEY, 1, "worker-1:a", 3.0))
        seen.append(kit.raw.type(f"{kit.prefix}bad:lease:{KEY}"))
        return seen

    with caplog.at_level(logging.WARNING, "flowlang.distributed"):
        seen = kit.run(work)
    assert seen == [("held", None, 3.0), True, ("leased", None, 0), b"list"]
    assert "moved to" in caplog.text


@pytest.mark.parametrize(
    "fields",
    [
        {"outcome": "delivered", "result": "{not json", "attempts": "1", "at": "1"},
        {"outcome": "delivered", "attempts": "x"},
        {"outcome": b"\xff\xfe", "result": "1", "attempts": "1", "at": "1"},
        {"outcome": "delivered", "result": "[" * 100_000, "attempts": "1", "at": "1"},
    ],
)
def test_start_attempt_counts_an_unreadable_outcome_as_not_settled_and_takes_the_lease(
    kit: Kit, caplog: pytest.LogCaptureFixture, fields: dict[str, Any]
) -> None:
    kit.raw.hset(f"{kit.prefix}act:{KEY}", mapping=fields)
    with caplog.at_level(logging.WARNING, "flowlang.distributed"):
        state = kit.run(lambda store: store.start_attempt(KEY, 1, "worker-1:a", 3.0))
    assert state == ("leased", None, 0)
    assert kit.raw.get(f"{kit.prefix}lease:{KEY}") == b"worker-1:a"
    assert "cannot be read" in caplog.text


@pytest.mark.parametrize("tried", [b"2", b"2.5", b"-3", b"nan", b"1e400", b"\xff"])
def test_start_attempt_reads_a_tried_mark_or_counts_a_foreign_one_as_none(
    kit: Kit, tried: bytes
) -> None:
    kit.raw.hset(f"{kit.prefix}act:{KEY}", "tried", tried)
    state = kit.run(lambda store: store.start_attempt(KEY, 2, "worker-1:a", 3.0))
    assert state == (("stale", None, 2) if tried == b"2" else ("leased", None, 0))


def test_start_attempt_on_a_ledger_key_of_another_type_is_not_settled(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    kit.raw.rpush(f"{kit.prefix}act:{KEY}", "not a ledger entry")
    with caplog.at_level(logging.WARNING, "flowlang.distributed"):
        state = kit.run(lambda store: store.start_attempt(KEY, 1, "worker-1:a", 3.0))
    assert state == ("leased", None, 0)
    assert "not a ledger entry" in caplog.text


def test_start_attempt_arguments_are_checked(kit: Kit) -> None:
    async def work(store: SharedStore) -> None:
        for key, attempt, holder, seconds in (
            ("bad key\n", 1, "worker-1:a", 1.0),
            (KEY, 0, "worker-1:a", 1.0),
            (KEY, True, "worker-1:a", 1.0),
            (KEY, 1.5, "worker-1:a", 1.0),
            (KEY, 1, "", 1.0),
            (KEY, 1, "x" * 200, 1.0),
            (KEY, 1, "worker-1:a", float("nan")),
            (KEY, 1, "worker-1:a", 0.0),
        ):
            with pytest.raises(ValueError):
                await store.start_attempt(key, attempt, holder, seconds)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await store.record_delivered(KEY, {}, 1, holder="not a key part")

    kit.run(work)
    assert kit.stored() == []
