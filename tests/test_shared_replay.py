"""Replay of the shared dead letters (flowlang.distributed.replay, ``flowlang replay redis://``)
on a real Redis: each record claimed by one replay at a time, its outcome (settlements, new
dead letters, the record's removal) written in one step, claims that lapse or are lost, and
hostile claim keys and arguments.

Every test uses its own random key prefix on the session's Redis, removed afterwards, and runs
with a deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from distributed_support import Kit, fail_once
from support import ONE_ACTION, StatusHttp, one_action_automations

from flowlang.automations import Automations
from flowlang.automations.dispatch import idempotency_key
from flowlang.distributed import shared, tasks
from flowlang.distributed.deliverer import Deliverer
from flowlang.distributed.replay import replay_all, replay_record
from flowlang.distributed.shared import SharedStore

KEY = idempotency_key("evt-rt-1", "one_action", "first")


async def _dead_letter(event_id: str = "evt-rt-1", text: str = ONE_ACTION) -> dict[str, Any]:
    """A real dead letter of the one-action workflow ``text`` (a permanent 400)."""
    failing = one_action_automations(StatusHttp(400), text)
    async with failing:
        await failing.dispatch({"id": event_id, "type": "call.ended", "properties": {}})
    (record,) = failing.dead_letters.records
    return dict(record)


def _run(kit: Kit, work: Any, seconds: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(work(), seconds))


# --- two replays at once (issue 13, known defect 2) -------------------------------------------


def test_two_shared_replays_at_once_send_a_dead_letter_once(kit: Kit) -> None:
    """Two ``flowlang replay redis://`` started together: the record is claimed by one, the
    other leaves it (held); it is sent once and removed."""

    async def work() -> tuple[int, list[str], list[Any]]:
        record = await _dead_letter()
        first_store, second_store = kit.store(), kit.store()
        http = StatusHttp(200, delay=0.3)
        try:
            await first_store.add_dead(record)
            one, two = one_action_automations(http), one_action_automations(http)
            async with one, two:
                counts = await asyncio.gather(
                    replay_all(one, first_store), replay_all(two, second_store)
                )
            return await first_store.dead_count(), http.sent, counts
        finally:
            await first_store.aclose()
            await second_store.aclose()

    left, sent, counts = _run(kit, work)
    assert left == 0
    assert len(sent) == 1, f"the dead letter was delivered {len(sent)} times by two replays"
    assert sorted((c.records, c.delivered, c.removed, c.held) for c in counts) == [
        (0, 0, 0, 1),
        (1, 1, 1, 0),
    ]
    assert kit.raw.hget(f"{kit.prefix}act:{KEY}", "outcome") == b"delivered"
    assert not [key for key in kit.stored() if ":replaying:" in key]  # the claim given back


def test_five_replays_of_ten_records_send_each_once(kit: Kit) -> None:
    async def work() -> tuple[int, list[str]]:
        stores = [kit.store() for _ in range(5)]
        http = StatusHttp(200, delay=0.02)
        try:
            for n in range(10):
                await stores[0].add_dead(await _dead_letter(f"evt-many-{n}"))
            engines = [one_action_automations(http) for _ in stores]
            await asyncio.gather(*(replay_all(a, s) for a, s in zip(engines, stores, strict=True)))
            for engine in engines:
                await engine.aclose()
            return await stores[0].dead_count(), http.sent
        finally:
            for store in stores:
                await store.aclose()

    left, sent = _run(kit, work)
    assert left == 0 and len(sent) == 10


def test_a_replay_that_fails_again_replaces_the_record_in_one_step(kit: Kit) -> None:
    """The new dead letter is added and the old one removed together; the new one waits for
    the next replay (a replay stops at the newest record it found when it started)."""

    async def work() -> tuple[Any, list[tuple[str, dict[str, Any]]], list[str]]:
        store = kit.store()
        http = StatusHttp(400)
        try:
            first = await store.add_dead(await _dead_letter())
            async with one_action_automations(http) as engine:
                counts = await replay_all(engine, store)
            return counts, await store.dead_letters(), [first, *http.sent]
        finally:
            await store.aclose()

    counts, letters, (first, *sent) = _run(kit, work)
    assert (counts.records, counts.dead_lettered, counts.removed) == (1, 1, 1)
    assert len(sent) == 1  # not replayed again in the same run
    assert len(letters) == 1 and letters[0][0] != first
    assert "400" in letters[0][1]["error"]


def test_a_replay_that_crashes_keeps_the_record_and_gives_its_claim_back(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work() -> tuple[int, int, list[str]]:
        store = kit.store()
        http = StatusHttp(200)
        try:
            await store.add_dead(await _dead_letter())

            async def crash(*_: Any, **__: Any) -> None:
                raise RuntimeError("the process died here")

            with monkeypatch.context() as patch:
                patch.setattr(store, "finish_replay", crash)
                async with one_action_automations(http) as engine:
                    with pytest.raises(RuntimeError):
                        await replay_all(engine, store)
            kept = await store.dead_count()
            async with one_action_automations(http) as engine:
                counts = await replay_all(engine, store)  # at once: the claim was given back
            return kept, counts.removed, http.sent
        finally:
            await store.aclose()

    kept, removed, sent = _run(kit, work)
    assert kept == 1 and removed == 1
    assert len(sent) == 2  # at least once, with the same Idempotency-Key


def test_a_lapsed_claim_taken_by_another_replay_writes_only_the_settlement(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay whose claim lapsed (a long pause) and was taken by another: its delivery is
    settled, but it neither removes the record nor adds dead letters: the holder does."""

    async def work() -> tuple[str, str, int, bytes | None]:
        store = kit.store()
        try:
            entry = await store.add_dead(await _dead_letter())
            assert await store.claim_dead(entry, "replay:a", 0.05) == "claimed"
            await asyncio.sleep(0.1)
            assert await store.claim_dead(entry, "replay:b", 10.0) == "claimed"
            lost = await store.finish_replay(
                [{"n": 1}], [(KEY, {"ok": True}, 1)], entry_id=entry, holder="replay:a"
            )
            ours = await store.finish_replay([], [], entry_id=entry, holder="replay:b")
            return (
                lost,
                ours,
                await store.dead_count(),
                kit.raw.hget(f"{kit.prefix}act:{KEY}", "outcome"),
            )
        finally:
            await store.aclose()

    lost, ours, left, outcome = _run(kit, work)
    assert (lost, ours, left, outcome) == ("lost", "ok", 0, b"delivered")
    assert not [key for key in kit.stored() if ":replaying:" in key]


def test_a_claim_lost_during_replay_all_is_logged_and_the_record_left(
    kit: Kit, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work() -> tuple[Any, int]:
        store = kit.store()
        try:
            entry = await store.add_dead(await _dead_letter())
            taken = store.claim_dead

            async def claimed_then_stolen(entry_id: str, holder: str, seconds: float) -> str:
                state = await taken(entry_id, holder, seconds)
                kit.raw.set(f"{kit.prefix}replaying:{entry}", "replay:other", px=10_000)
                return state

            monkeypatch.setattr(store, "claim_dead", claimed_then_stolen)
            async with one_action_automations(StatusHttp(200)) as engine:
                counts = await replay_all(engine, store)
            return counts, await store.dead_count()
        finally:
            await store.aclose()

    with caplog.at_level(logging.WARNING, "flowlang.replay"):
        counts, left = _run(kit, work)
    assert (counts.records, counts.delivered, counts.removed, left) == (1, 1, 0, 1)
    assert "was lost during its replay" in caplog.text


def test_claim_dead_claimed_held_gone_and_renewed_only_by_its_holder(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[Any]:
        entry = await store.add_dead({"format": "flowlang.deadletter/1"})
        seen: list[Any] = [await store.claim_dead(entry, "replay:a", 5.0)]
        seen.append(await store.claim_dead(entry, "replay:b", 5.0))
        seen.append(await store.renew_dead_claim(entry, "replay:a", 5.0))
        seen.append(await store.renew_dead_claim(entry, "replay:b", 5.0))
        await store.release_dead_claim(entry, "replay:b")  # not theirs: kept
        seen.append(await store.claim_dead(entry, "replay:b", 5.0))
        await store.release_dead_claim(entry, "replay:a")
        seen.append(await store.claim_dead(entry, "replay:b", 5.0))
        await store.remove_dead(entry)
        seen.append(await store.claim_dead(entry, "replay:c", 5.0))
        seen.append(await store.claim_dead("1-0", "replay:c", 5.0))  # never there
        return seen

    assert kit.run(work) == ["claimed", "held", True, False, "held", "claimed", "gone", "gone"]


def test_a_foreign_claim_without_a_time_to_live_gets_one(kit: Kit) -> None:
    async def work(store: SharedStore) -> tuple[str, str]:
        entry = await store.add_dead({"format": "flowlang.deadletter/1"})
        kit.raw.set(f"{kit.prefix}replaying:{entry}", "someone else")
        return entry, await store.claim_dead(entry, "replay:a", 3.0)

    entry, state = kit.run(work)
    assert state == "held"
    assert 0 < kit.raw.pttl(f"{kit.prefix}replaying:{entry}") <= 3000


def test_claim_keys_and_ledger_keys_of_another_type_are_moved_aside(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    async def work(store: SharedStore) -> tuple[str, str, str]:
        entry = await store.add_dead({"format": "flowlang.deadletter/1"})
        kit.raw.rpush(f"{kit.prefix}replaying:{entry}", "x")
        kit.raw.rpush(f"{kit.prefix}act:{KEY}", "y")
        claimed = await store.claim_dead(entry, "replay:a", 5.0)
        done = await store.finish_replay(
            [], [(KEY, {"id": 1}, 2)], entry_id=entry, holder="replay:a"
        )
        return entry, claimed, done

    with caplog.at_level(logging.WARNING, "flowlang.distributed"):
        entry, claimed, done = kit.run(work)
    assert (claimed, done) == ("claimed", "ok")
    assert kit.raw.type(f"{kit.prefix}bad:replaying:{entry}") == b"list"
    assert kit.raw.type(f"{kit.prefix}bad:act:{KEY}") == b"list"
    assert kit.raw.hget(f"{kit.prefix}act:{KEY}", "outcome") == b"delivered"
    assert kit.raw.xlen(f"{kit.prefix}dead") == 0
    assert "moved" in caplog.text


def test_finish_replay_never_overwrites_a_delivered_entry(kit: Kit) -> None:
    async def work(store: SharedStore) -> Any:
        await store.settle(KEY, "delivered", {"id": 1}, 3)
        await store.finish_replay([], [(KEY, {"id": 2}, 1)])
        return await store.settled(KEY)

    entry = kit.run(work)
    assert entry is not None and entry["result"] == {"id": 1} and entry["attempts"] == 3


def test_finish_replay_refuses_what_it_cannot_keep_and_writes_nothing(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared, "MAX_MEMBER_BYTES", 1024 * 1024)  # 128 MiB in production
    huge = {"format": "flowlang.deadletter/1", "blob": "x" * (3 * 1024 * 1024)}
    deep: Any = {}
    for _ in range(200):
        deep = {"a": deep}

    async def work(store: SharedStore) -> int:
        entry = await store.add_dead({"format": "flowlang.deadletter/1"})
        for bad in (
            lambda: store.finish_replay([huge], []),
            lambda: store.finish_replay([deep], []),
            lambda: store.finish_replay([], [(KEY, float("nan"), 1)]),
            lambda: store.finish_replay([], [(KEY, object(), 1)]),
            lambda: store.finish_replay([], [(KEY, {}, -1)]),
            lambda: store.finish_replay([], [("bad key\n", {}, 1)]),
            lambda: store.finish_replay([], [], entry_id=entry),  # no holder
            lambda: store.finish_replay([], [], entry_id="1-x", holder="replay:a"),
            lambda: store.finish_replay([], [], entry_id=entry, holder="not a key part"),
            lambda: store.claim_dead("../x", "replay:a", 1.0),
            lambda: store.claim_dead(entry, "replay:a", float("inf")),
            lambda: store.claim_dead(entry, "\udcff", 1.0),
            lambda: store.renew_dead_claim(entry, "replay:a", 0.0),
            lambda: store.release_dead_claim("9" * 100, "replay:a"),
        ):
            with pytest.raises(ValueError):
                await bad()
        return await store.dead_count()

    assert kit.run(work) == 1
    assert not [key for key in kit.stored() if ":act:" in key or ":replaying:" in key]


def test_replay_record_writes_its_outcome_in_one_step(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path the workers' replay task takes (no stream entry): the settlement and the new
    dead letters are one call to the store."""
    calls: list[str] = []

    async def work() -> tuple[int, Any]:
        store = kit.store()
        finish = store.finish_replay

        async def counted(*args: Any, **kwargs: Any) -> str:
            calls.append("finish_replay")
            return await finish(*args, **kwargs)

        monkeypatch.setattr(store, "finish_replay", counted)
        try:
            record = await _dead_letter()
            async with one_action_automations(StatusHttp(200)) as engine:
                deliveries, added = await replay_record(engine, store, record)
            assert [d.outcome for d in deliveries] == ["delivered"] and added == []
            return await store.dead_count(), await store.settled(KEY)
        finally:
            await store.aclose()

    left, entry = _run(kit, work)
    assert calls == ["finish_replay"] and left == 0
    assert entry is not None and entry["outcome"] == "delivered"


def test_a_long_replay_keeps_its_claim_renewed(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose replay takes longer than the claim's lease: the claim is renewed every
    third of it, so a second replay leaves the record alone."""

    async def work() -> tuple[list[str], list[Any]]:
        first_store, second_store = kit.store(), kit.store()
        http = StatusHttp(200, delay=0.6)
        try:
            await first_store.add_dead(await _dead_letter())
            one, two = one_action_automations(http), one_action_automations(http)
            async with one, two:
                slow = asyncio.create_task(replay_all(one, first_store, lease=0.15))
                await asyncio.sleep(0.4)  # well past one lease
                late = await replay_all(two, second_store, lease=0.15)
                return http.sent, [await slow, late]
        finally:
            await first_store.aclose()
            await second_store.aclose()

    sent, (slow, late) = _run(kit, work)
    assert len(sent) == 1
    assert (slow.removed, late.held) == (1, 1)


def test_replay_all_on_an_empty_or_foreign_stream_replays_nothing(kit: Kit) -> None:
    async def work(store: SharedStore) -> list[int]:
        async with one_action_automations(StatusHttp(200)) as engine:
            empty = await replay_all(engine, store)
            kit.raw.set(f"{kit.prefix}dead", "not a stream")
            foreign = await replay_all(engine, store)
        return [empty.records, foreign.records, foreign.held]

    assert kit.run(work) == [0, 0, 0]


# --- a worker's replay from a dead letter's own text (issue 13 red team, findings 1 and 4) ---

V1 = """\
workflow: redteam_replay
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/v1}
"""
#: The same workflow, a newer version: the worker does not have V1's fingerprint loaded.
V2 = V1.replace("/v1", "/v2")


class _Runner:
    """A worker loop's objects for tasks._replay: automations, a store, a deliverer."""

    def __init__(self, automations: Automations, store: Any, lease: float = 60.0) -> None:
        self.automations = automations
        self.store = store
        self.deliverer = Deliverer(automations, store, "redteam:1:abcd", lease=lease)


@pytest.mark.parametrize(
    ("blip", "after"),
    [("finish_replay", False), ("finish_replay", True), ("start_replay", False),
     ("start_replay", True), ("take_lease", False), ("settle", False)],
)  # fmt: skip
def test_a_replay_whose_ledger_write_fails_after_the_send_is_not_sent_again(
    kit: Kit, blip: str, after: bool
) -> None:
    """Issue 13 red team (double send; finding 1). A dead letter of a workflow version this worker does not load is
    replayed from its own text (tasks._replay -> replay_record): the action is SENT, then the
    shared store fails once writing the ledger (settle). tasks._replay catches that store
    error as if the record could not be replayed ("refused") and _kept puts the record back
    in the shared dead letters, then the message is acknowledged. The next replay (the
    operator's ``flowlang replay --broker``, or a redelivery) sends the action again.

    The outcome is now written by finish_replay (tried again on a store error: the action was
    sent); a store error before the send requeues the message (nothing sent). Each store call
    of the path fails once here, before Redis or (``after``) with its reply lost.

    Invariant: across the replay and whatever it leaves to replay (kept dead letters,
    requeued messages), the action is sent at most once."""

    async def work() -> tuple[list[str], list[str]]:
        record = await _dead_letter("evt-rt-9", V1)
        http = StatusHttp(200)
        worker = one_action_automations(http, V2)
        store = kit.store()
        outcomes: list[str] = []
        try:
            async with worker:
                runner = _Runner(worker, store)
                fail_once(store, blip, after=after)  # the store blips once
                pending = [dict(record)]
                for _ in range(3):  # bounded: this replay, then what it left to replay
                    later: list[dict[str, Any]] = []
                    for body in pending:
                        try:
                            step = await tasks._replay(runner, body)  # type: ignore[arg-type]
                            outcomes.append(step.outcome)
                        except Exception as problem:  # requeued: redelivered next round
                            outcomes.append(f"requeued: {type(problem).__name__}")
                            later.append(body)
                    for entry, kept in await store.dead_letters("-", 10):  # replay --broker
                        await store.remove_dead(entry)
                        later.append(kept)
                    pending = later
                    if not pending:
                        break
        finally:
            await store.aclose()
        return http.sent, outcomes

    sent, outcomes = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1, f"the action was sent {len(sent)} times; outcomes {outcomes}"


def test_a_redelivered_replay_from_a_dead_letters_own_text_is_not_sent_again(kit: Kit) -> None:
    """Issue 13 red team (double send on redelivery; finding 4). The same path as above without any store
    failure: a flowlang.replay message is acknowledged only after its work (acks_late), so
    a worker that dies after replay_record sent and settled the action, before the ack,
    leaves the message to be redelivered; the next worker runs replay_record again, which
    never looks at the ledger (replay.py:88, unlike Deliverer.replay's forget_dead), and
    sends the action a second time although the ledger says delivered. Simulated by
    running the same message's task body twice. Invariant: a redelivered message sends
    nothing the ledger has settled."""

    async def work() -> tuple[list[str], list[str]]:
        record = await _dead_letter("evt-rt-10", V1)
        http = StatusHttp(200)
        worker = one_action_automations(http, V2)
        store = kit.store()
        outcomes: list[str] = []
        try:
            async with worker:
                runner = _Runner(worker, store)
                for _ in range(2):  # the message, then its redelivery
                    step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                    outcomes.append(step.outcome)
        finally:
            await store.aclose()
        return http.sent, outcomes

    sent, outcomes = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1, f"the action was sent {len(sent)} times; outcomes {outcomes}"


def test_a_replay_whose_outcome_cannot_be_written_keeps_the_lease_and_sends_nothing_more(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stays down after the send (every finish_replay try fails): the message is
    requeued (the error propagates) and the action's lease is kept, so its redelivery is
    deferred until the lease lapses (scheduled, nothing sent) instead of sending at once."""
    from flowlang.distributed import replay as replay_module
    from flowlang.errors import SharedStoreError

    monkeypatch.setattr(replay_module, "FINISH_PAUSE", 0.01)

    async def work() -> tuple[list[str], list[str]]:
        record = await _dead_letter("evt-rt-11", V1)
        http = StatusHttp(200)
        worker = one_action_automations(http, V2)
        store = kit.store()
        outcomes: list[str] = []
        try:
            async with worker:
                runner = _Runner(worker, store)

                async def down(*_: Any, **__: Any) -> str:
                    raise SharedStoreError("shared store: finish_replay failed: down")

                store.finish_replay = down  # type: ignore[method-assign]
                with pytest.raises(SharedStoreError):
                    await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                for _ in range(2):  # redeliveries while the lease is held
                    step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                    outcomes.append(step.outcome)
        finally:
            await store.aclose()
        return http.sent, outcomes

    sent, outcomes = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1
    assert outcomes == ["deferred", "deferred"]


def test_a_replay_whose_outcome_write_outlasts_its_tries_is_not_sent_again_after_the_lease(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team round 2, R2-6: replay_leased forgot the ledger's dead_lettered entry before
    the send; when the store was down for every try of the outcome's write, the message was
    requeued with the lease kept and an empty ledger, so once the lease lapsed its
    redelivery found nothing and sent the action again. Now the entry is marked
    ``replaying`` before the send (start_replay) and the mark outlives the lease: the
    redelivery sends nothing and keeps the record as a dead letter saying its outcome is
    unknown (its ledger entry dead_lettered again); the operator's replay of that dead letter
    sends it again, on purpose. Invariant: across the replay and its redeliveries, the action
    is sent at most once. (A copy of the message after that keep, which only a worker dying
    between the keep and its ack makes, replays it again: at least once, the same key.)"""
    from flowlang.distributed import replay as replay_module
    from flowlang.errors import SharedStoreError

    monkeypatch.setattr(replay_module, "FINISH_PAUSE", 0.01)

    async def work() -> tuple[list[str], list[str], list[dict[str, Any]], Any, list[str]]:
        record = await _dead_letter("evt-r2-6", V1)
        key = idempotency_key("evt-r2-6", "redteam_replay", "first")
        http = StatusHttp(200)
        worker = one_action_automations(http, V2)
        store = kit.store()
        outcomes: list[str] = []
        try:
            async with worker:
                runner = _Runner(worker, store, lease=1.0)

                async def down(*_: Any, **__: Any) -> str:
                    raise SharedStoreError("shared store: finish_replay failed: down")

                store.finish_replay = down  # type: ignore[method-assign]
                try:
                    step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                    outcomes.append(step.outcome)
                except SharedStoreError:
                    outcomes.append("requeued")
                del store.finish_replay  # the store answers again
                await asyncio.sleep(1.5)  # the lease kept by the first try lapses
                step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                outcomes.append(step.outcome)  # the redelivery, once the lease lapsed
                kept = [kept for _, kept in await store.dead_letters("-", 10)]
                ledger = await store.settled(key)
                sent_before = list(http.sent)
                for entry, again in await store.dead_letters("-", 10):  # the operator's replay
                    await store.remove_dead(entry)
                    outcomes.append((await tasks._replay(runner, again)).outcome)  # type: ignore[arg-type]
        finally:
            await store.aclose()
        return sent_before, outcomes, kept, ledger, http.sent

    sent, outcomes, kept, ledger, after = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1, f"the action was sent {len(sent)} times; outcomes {outcomes}"
    assert outcomes[:2] == ["requeued", "dead"], outcomes
    assert len(kept) == 1 and kept[0]["error"] == replay_module.UNKNOWN_OUTCOME
    assert ledger is not None and ledger["outcome"] == "dead_lettered"
    assert outcomes[2:] == ["delivered"] and len(after) == 2  # sent again only on purpose


def test_a_replay_that_fails_again_whose_outcome_reply_is_lost_adds_its_dead_letter_once(
    kit: Kit,
) -> None:
    """The outcome of a replay that failed again is written (the new dead letter, the mark
    replaced by dead_lettered) but the reply is lost: the write's next try finds its mark gone
    (``lost``) and adds nothing twice."""

    async def work() -> tuple[list[str], int, Any, str]:
        record = await _dead_letter("evt-r2-6b", V1)
        key = idempotency_key("evt-r2-6b", "redteam_replay", "first")
        http = StatusHttp(400)
        worker = one_action_automations(http, V2)
        store = kit.store()
        try:
            async with worker:
                runner = _Runner(worker, store)
                fail_once(store, "finish_replay", after=True)
                step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                return http.sent, await store.dead_count(), await store.settled(key), step.outcome
        finally:
            await store.aclose()

    sent, dead, ledger, outcome = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1 and outcome == "dead" and dead == 1
    assert ledger is not None and ledger["outcome"] == "dead_lettered"


def test_a_replay_mark_left_by_a_dead_worker_is_kept_by_a_worker_that_loads_the_version(
    kit: Kit,
) -> None:
    """A replay from a record's own text marked its action and its worker died; the message
    is redelivered to a worker that loads that workflow version (Deliverer.replay): it is
    not dropped as settled, but left to the leased replay, which keeps it as a dead letter
    whose outcome is unknown; nothing is sent."""

    async def work() -> tuple[list[str], str, list[dict[str, Any]]]:
        record = await _dead_letter("evt-r2-6c", V1)
        key = idempotency_key("evt-r2-6c", "redteam_replay", "first")
        http = StatusHttp(200)
        worker = one_action_automations(http, V1)
        store = kit.store()
        try:
            await store.start_replay(key, "gone:1:dead")
            async with worker:
                step = await tasks._replay(_Runner(worker, store), dict(record))  # type: ignore[arg-type]
            return http.sent, step.outcome, [kept for _, kept in await store.dead_letters()]
        finally:
            await store.aclose()

    from flowlang.distributed.replay import UNKNOWN_OUTCOME

    sent, outcome, kept = asyncio.run(asyncio.wait_for(work(), 30))
    assert sent == [] and outcome == "dead"
    assert [k["error"] for k in kept] == [UNKNOWN_OUTCOME]


def test_start_replay_marks_only_an_absent_or_dead_lettered_entry(kit: Kit) -> None:
    """start_replay: an absent or dead_lettered entry is marked ``replaying`` (a settled
    outcome to a deliver message meanwhile); a delivered one is left; a marked one names its
    holder; finish_replay replaces only its own mark (another holder's write is ``lost``);
    a successful replay leaves it delivered, one with nothing to keep forgets it."""

    async def work() -> list[Any]:
        store = kit.store()
        seen: list[Any] = []
        try:
            seen.append(await store.start_replay(KEY, "w:1"))
            seen.append(await store.start_replay(KEY, "w:2"))
            seen.append((await store.settled(KEY) or {}).get("outcome"))
            seen.append(await store.start_attempt(KEY, 1, "w:3", 5.0))
            seen.append(await store.finish_replay([], [], replayed=(KEY, "w:2")))
            seen.append(await store.finish_replay([], [], replayed=(KEY, "w:1")))
            seen.append(await store.settled(KEY))
            record = await _dead_letter()
            await store.record_dead(KEY, record, 1)
            seen.append(await store.start_replay(KEY, "w:4"))
            seen.append(await store.finish_replay([], [(KEY, {"ok": 1}, 1)], replayed=(KEY, "w:4")))
            seen.append((await store.settled(KEY) or {}).get("outcome"))
            seen.append(await store.start_replay(KEY, "w:5"))
        finally:
            await store.aclose()
        return seen

    seen = _run(kit, work)
    assert seen[0] == ("started", "") and seen[1] == ("replaying", "w:1")
    assert seen[2] == "replaying" and seen[3][0] == "settled"
    assert seen[4:7] == ["lost", "ok", None]
    assert seen[7] == ("started", "") and seen[8] == "ok" and seen[9] == "delivered"
    assert seen[10] == ("delivered", "")


@pytest.mark.parametrize("holder", ["", "a b", "x" * 300, "\udcff"])
def test_start_replay_and_finish_replay_refuse_a_holder_that_is_no_key_part(
    kit: Kit, holder: str
) -> None:
    """A mark's holder is a checked key part: ValueError, nothing written."""

    async def work() -> list[str]:
        store = kit.store()
        try:
            with pytest.raises(ValueError):
                await store.start_replay(KEY, holder)
            with pytest.raises(ValueError):
                await store.finish_replay([], [], replayed=(KEY, holder))
        finally:
            await store.aclose()
        return kit.stored()

    assert _run(kit, work) == []


@pytest.mark.parametrize(
    "change",
    [
        {"event": "not an event"},
        {"event": {"type": "call.ended"}},
        {"workflow": ["x"]},
        {"action": None},
        {"action": "x" * 100_000},
        {"workflow_source": "\udcff: not yaml ["},
    ],
)
def test_a_hostile_record_replayed_from_its_own_text_is_refused_kept_and_sends_nothing(
    kit: Kit, change: dict[str, Any]
) -> None:
    """A record that cannot be replayed (no event id, a workflow or action that is not a
    name, a huge name, a workflow text that does not load) is refused before anything is
    sent, its lease given back, and kept in the shared dead letters."""

    async def work() -> tuple[list[str], str, int, list[str]]:
        record = await _dead_letter("evt-rt-12", V1)
        http = StatusHttp(200)
        worker = one_action_automations(http, V2)
        store = kit.store()
        try:
            async with worker:
                runner = _Runner(worker, store)
                step = await tasks._replay(runner, dict(record) | change)  # type: ignore[arg-type]
                kept = await store.dead_letters("-", 10)
        finally:
            await store.aclose()
        return http.sent, step.outcome, len(kept), kit.stored()

    sent, outcome, kept, keys = asyncio.run(asyncio.wait_for(work(), 30))
    assert sent == [] and outcome == "refused" and kept == 1
    assert not [key for key in keys if ":lease:" in key]


def test_replay_all_keeps_a_record_whose_workflow_text_is_no_document(kit: Kit) -> None:
    """A record whose workflow text is not YAML (DocumentError, not FlowDocumentError) is a
    problem counted and kept, not a traceback out of replay_all."""

    async def work() -> tuple[int, int, int, list[str]]:
        record = await _dead_letter("evt-rt-13") | {"workflow_source": "\udcff: not yaml ["}
        http = StatusHttp(200)
        store = kit.store()
        try:
            await store.add_dead(record)
            async with one_action_automations(http) as automations:
                counts = await replay_all(automations, store)
            kept = await store.dead_letters("-", 10)
        finally:
            await store.aclose()
        return counts.records, counts.problems, len(kept), http.sent

    records, problems, kept, sent = asyncio.run(asyncio.wait_for(work(), 30))
    assert (records, problems, kept, sent) == (1, 1, 1, [])
