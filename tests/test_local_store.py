"""The local store (flowlang.automations.store): exact round trips, the duplicate window, owners
and takeover, recorded retries, and hostile files and conditions ending in a clear StoreError."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import NOW, FakeClock, StatusHttp, cli, hold_write_lock, one_action_automations

from flowlang import MappingSecrets, StoreError
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import DeadLetterStore, idempotency_key
from flowlang.automations.records import MAX_EVENT_BYTES, MAX_EVENT_DEPTH
from flowlang.automations.store import PRUNE_EVERY, LocalStore, is_store_file
from flowlang.cli.automate_console import replay_lock

#: What the stand-in receiver answers: text with a lone surrogate, which the store must keep.
ODD_TEXT = {"ok": "\udcff"}

TWO = """
workflow: two
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
  - {name: second, type: api_request, endpoint: https://crm.example.com/second}
"""
WINDOW = 3600.0


def engine(store: LocalStore, http: StatusHttp, clock: FakeClock | None = None) -> Automations:
    return Automations(
        [load_workflow_text(TWO)],
        settings=DeliverySettings(schedule=(0, 30, 300)),
        http=http,
        secrets=MappingSecrets({}),
        clock=clock or FakeClock(),
        store=store,
        dead_letters=DeadLetterStore(store=store),
    )


ONE = """\
workflow: one
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
"""


def engine_one(store: LocalStore, http: StatusHttp) -> Automations:
    """One action, no retry: a failure is dead-lettered at once."""
    return one_action_automations(http, ONE, store)


def call(event_id: str, **properties: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "call.ended", "properties": properties}


# --- round trips ---------------------------------------------------------------------------


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


@pytest.mark.parametrize(
    "event",
    [
        call("\ud800lone-\udcff", text="caf\xe9 \U0001f600 \ud800", nul="\x00"),
        call("i" * 100_000),
        call("big", pad="p" * (MAX_EVENT_BYTES - 200)),
        call("deep", deep=_deep(MAX_EVENT_DEPTH - 3)),
    ],
    ids=["lone-surrogates", "id-of-100k", "at-1MiB", "deep"],
)
def test_an_open_event_reads_back_exactly_in_the_next_process(tmp_path: Path, event: Any) -> None:
    path = tmp_path / "s.db"
    first = LocalStore(path)
    assert first.accept(event["id"], event, NOW, WINDOW)
    first.settle(event["id"], "two", "first", "delivered", {"r": "\udcff\ud800", "n": 10**30})
    first.operation(event["id"], "key-1", "operations/\ud800")
    first.close()  # the process dies: its events are orphans
    second = LocalStore(path)
    [found] = second.take_over()
    assert found.event == event and found.event_id == event["id"]
    assert found.settled == {("two", "first"): ("delivered", {"r": "\udcff\ud800", "n": 10**30})}
    assert found.operations == {"key-1": "operations/\ud800"}
    assert not second.accept(event["id"], event, NOW + 1, WINDOW)  # still open: a duplicate
    second.close()


def test_dead_letters_read_back_exactly_and_export_import_round_trip(tmp_path: Path) -> None:
    record = {"format": "flowlang.deadletter/1", "event": call("\ud800"), "error": "\udcff\x1b"}
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        store.add_dead(record)
    exported = tmp_path / "dead.jsonl"
    assert cli("deadletters", "export", str(path), "-o", str(exported)) == (0, "")
    assert exported.read_bytes().isascii()
    assert json.loads(exported.read_text()) == record
    other = tmp_path / "other.db"
    exported.write_text(exported.read_text() + '{"not": "a record"}\nnot json\n')
    assert cli("deadletters", "import", str(other), str(exported))[0] == 1  # 2 lines skipped
    with LocalStore(other) as store:
        assert [r for _, r in store.dead_letters()] == [record]


# --- duplicates, window, size ----------------------------------------------------------------


def test_many_duplicates_are_accepted_once(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s.db") as store:
        event = call("same")
        assert [store.accept("same", event, NOW + n, WINDOW) for n in range(500)].count(True) == 1
        store.finish("same", NOW, WINDOW, 100)
        assert not store.accept("same", event, NOW + WINDOW - 1, WINDOW)  # inside the window
        assert store.accept("same", event, NOW + WINDOW, WINDOW)  # out of it: accepted again


def test_the_store_follows_the_window_and_the_limit_not_the_history(tmp_path: Path) -> None:
    limit = 50
    with LocalStore(tmp_path / "s.db") as store:
        for number in range(2000):
            event_id = f"e{number}"
            assert store.accept(event_id, call(event_id), NOW, WINDOW)
            store.settle(event_id, "two", "first", "delivered", {"x": 1})
            store.workflow_done(event_id, "two")
            store.finish(event_id, NOW, WINDOW, limit)
        counts = store.counts()
        assert limit <= counts["events"] < limit + PRUNE_EVERY and counts["open"] == 0
        assert counts["settled"] == counts["workflows_done"] == 0
        # later, the window passes: each finish prunes a few of the old ones
        for number in range(20):
            event_id = f"late{number}"
            store.accept(event_id, call(event_id), NOW + 2 * WINDOW, WINDOW)
            store.finish(event_id, NOW + 2 * WINDOW, WINDOW, limit)
        assert store.counts()["events"] == 20
    assert (tmp_path / "s.db").stat().st_size < 1024 * 1024


def test_processes_accepting_the_same_ids_at_once_accept_each_once(tmp_path: Path) -> None:
    """Eight stores (each an owner, as eight processes would be), eight threads, one file."""
    path = tmp_path / "s.db"
    LocalStore(path).close()
    ids = [f"evt-{n}" for n in range(200)]
    won: list[str] = []
    guard = threading.Lock()

    def worker() -> None:
        with LocalStore(path, busy_timeout=30) as store:
            for event_id in ids:
                if store.accept(event_id, call(event_id), NOW, WINDOW):
                    with guard:
                        won.append(event_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == sorted(ids)


# --- owners and takeover ---------------------------------------------------------------------


def test_only_the_events_of_a_gone_owner_are_taken_over_and_only_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    alive, gone = LocalStore(path), LocalStore(path)
    assert alive.accept("a", call("a"), NOW, WINDOW) and gone.accept("g", call("g"), NOW, WINDOW)
    gone.close()
    taker, other = LocalStore(path), LocalStore(path)
    assert [found.event_id for found in taker.take_over()] == ["g"]
    assert other.take_over() == []  # the alive owner's event, and g is taken
    assert not any(name.startswith(gone.owner) for name in os.listdir(f"{path}.owners"))
    for store in (alive, taker, other):
        store.close()


def test_a_recorded_retry_is_waited_for_only_what_remains(tmp_path: Path) -> None:
    """Attempt 1 failed and attempt 2 is due 30 s later; the process dies 10 s into the wait.
    The next one waits the remaining 20 s and makes attempt 2 (the same key)."""
    path = tmp_path / "s.db"
    first = LocalStore(path)
    assert first.accept("r", call("r"), NOW, WINDOW)
    first.schedule_retry("r", idempotency_key("r", "two", "first"), 2, NOW + 30)
    first.close()
    store = LocalStore(path)
    clock = FakeClock()
    clock.current = NOW + 10
    automations = engine(store, StatusHttp(body=ODD_TEXT), clock)  # takes the event over
    [result] = asyncio.run(automations.resume())
    store.close()
    assert clock.waits == [20.0]
    assert [(d.action, d.outcome, d.attempts) for d in result.deliveries] == [
        ("first", "delivered", 2),
        ("second", "delivered", 1),
    ]


def test_two_automations_on_one_store_run_an_event_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first_store, second_store = LocalStore(path), LocalStore(path)
    first_http, second_http = StatusHttp(body=ODD_TEXT), StatusHttp(body=ODD_TEXT)
    first, second = engine(first_store, first_http), engine(second_store, second_http)

    async def both() -> list[Any]:
        events = [call(f"e{n}") for n in range(30)]
        return await asyncio.gather(
            *(first.dispatch(event) for event in events),
            *(second.dispatch(event) for event in events),
        )

    results = asyncio.run(both())
    first_store.close()
    second_store.close()
    assert sum(not result.duplicate for result in results) == 30
    assert len(first_http.sent) + len(second_http.sent) == 60  # two actions per event, once


def test_a_death_between_the_dead_letter_and_its_settlement_keeps_one_dead_letter(
    tmp_path: Path,
) -> None:
    """The dead letter and the settlement of its action are one transaction: a process
    killed after the dead letter's row, before the commit (here, an exception from inside the
    transaction: its rollback is what SIGKILL leaves), keeps neither; the process that takes
    the event over makes the attempt again and keeps one dead letter, so `flowlang replay
    STORE` sends it once (defect 5 of issue 13)."""
    path = tmp_path / "s.db"
    first = LocalStore(path)

    def dies(db: sqlite3.Connection, values: tuple[Any, ...]) -> None:
        if values[3] != "delivered":  # the dead letter's row is written: die before COMMIT
            raise KeyboardInterrupt
        LocalStore._settled_row(db, values)

    first._settled_row = dies  # type: ignore[assignment,method-assign]
    http = StatusHttp(400)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(engine(first, http).dispatch(call("evt-dead")))
    assert first.counts()["dead"] == 0 and first.counts()["settled"] == 0
    first.close()  # the process is gone: its owner lock with it
    second = LocalStore(path)
    try:
        [result] = asyncio.run(asyncio.wait_for(engine(second, http).resume(), 20))
        assert [(d.action, d.outcome) for d in result.deliveries] == [
            ("first", "dead_lettered"),
            ("second", "skipped"),  # stop_on_failure: the dead letter names it
        ]
        counts = second.counts()
        dead = [record for _, record in second.dead_letters()]
    finally:
        second.close()
    assert counts["dead"] == 1 and counts["open"] == 0, counts
    assert isinstance(dead[0], dict) and dead[0]["action"] == "first"
    assert http.sent.count("https://crm.example.com/first") == 2  # the same key both times


def test_a_dead_letter_that_cannot_be_kept_leaves_its_action_unsettled(tmp_path: Path) -> None:
    """When the one transaction fails (the disk is full), neither is written: the action is
    unsaved, stays open and is dead-lettered once by the next run."""
    path = tmp_path / "s.db"
    store = LocalStore(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON dead "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
    result = asyncio.run(engine(store, StatusHttp(400)).dispatch(call("evt-full")))
    assert [d.outcome for d in result.deliveries] == ["unsaved"]
    assert "disk is full" in str(result.deliveries[0].error)
    counts = store.counts()
    assert counts["dead"] == 0 and counts["settled"] == 0 and counts["open"] == 1
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER full")
        db.commit()
    store.close()
    with LocalStore(path) as again:
        asyncio.run(engine(again, StatusHttp(400)).resume())
        assert again.counts()["dead"] == 1 and again.counts()["open"] == 0


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("UPDATE settled SET workflow = '{not json'", "settled"),
        ("UPDATE settled SET action = '[1]'", "settled"),
        ("UPDATE settled SET result = x'ff00'", "settled"),
        ("UPDATE settled SET outcome = 7", "settled"),
        ("UPDATE operations SET name = 'nope['", "operations"),
        ("UPDATE operations SET key = x'ff'", "operations"),
        ("UPDATE workflows_done SET workflow = '\"' || char(55296) || '\"'", "workflows_done"),
        ("UPDATE workflows_done SET workflow = 'null'", "workflows_done"),
    ],
)
def test_a_damaged_ledger_row_is_reported_and_its_event_still_resumed(
    tmp_path: Path, statement: str, table: str
) -> None:
    """A settled, operations or workflows_done row that does not read back (damaged, edited
    by hand) is a problem naming the store and the event, never a traceback from take_over
    (whose new owner is already committed); the event is still resumed (nothing lost), the
    damaged row skipped: its action runs again with the same idempotency key (defect 6)."""
    path = tmp_path / "s.db"
    gone = LocalStore(path)
    assert gone.accept("evt-4", call("evt-4"), NOW, WINDOW)
    gone.settle("evt-4", "two", "first", "delivered", {"ok": True})
    gone.operation("evt-4", "op-key", "op-name")
    gone.workflow_done("evt-4", "other")
    gone.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(statement)
        raw.commit()
    taker = LocalStore(path)
    try:
        [found] = taker.take_over()
        assert found.event_id == "evt-4" and found.event == call("evt-4")
        assert len(found.problems) == 1, found.problems
        assert str(path) in found.problems[0] and "'evt-4'" in found.problems[0]
        http = StatusHttp(body=ODD_TEXT)
        automations = engine(taker, http)  # nothing left to take over: taken above
        assert automations.problems == []
        taker.close()
        again = LocalStore(path)
        automations = engine(again, http)  # what the next process sees
        assert len(automations.problems) == 1
        [result] = asyncio.run(automations.resume())
        assert again.counts()["open"] == 0
        again.close()
    finally:
        taker.close()
    outcomes = [(d.action, d.outcome) for d in result.deliveries]
    assert ("second", "delivered") in outcomes
    if table == "settled":
        assert http.sent.count("https://crm.example.com/first") == 1  # ran again: same key


DAY = 86_400.0


def test_a_restart_keeps_open_events_and_the_window_and_forgets_the_rest(tmp_path: Path) -> None:
    """After a restart: an event finished two days ago runs again, one finished an hour ago is
    a duplicate, an open one (accepted three days ago, its first action settled) is a
    duplicate and is resumed from its second action; a new one runs."""
    path = tmp_path / "s.db"
    with LocalStore(path) as before:
        for event_id, at in (
            ("old", NOW - 2 * DAY),
            ("open", NOW - 3 * DAY),
            ("recent", NOW - 3600),
        ):
            assert before.accept(event_id, call(event_id), at, DAY)
        before.finish("old", NOW - 2 * DAY, DAY, 100)
        before.settle("open", "two", "first", "delivered", {"id": 1})
        before.finish("recent", NOW - 3600, DAY, 100)
    # closed: its process is gone, and "open" is an orphan the next one takes over
    store = LocalStore(path)
    http = StatusHttp(body=ODD_TEXT)
    automations = Automations(
        [load_workflow_text(TWO)],
        settings=DeliverySettings(dedup_window=DAY),
        http=http,
        secrets=MappingSecrets({}),
        clock=FakeClock(),
        store=store,
    )

    async def feed() -> list[bool]:
        ids = ["old", "open", "recent", "new"]
        return [(await automations.dispatch(call(i))).duplicate for i in ids]

    try:
        assert asyncio.run(feed()) == [False, True, True, False]
        [resumed] = asyncio.run(automations.resume())
    finally:
        store.close()
    assert resumed.event_id == "open"
    assert [(d.action, d.outcome) for d in resumed.deliveries] == [("second", "delivered")]


def test_the_store_stays_bounded_while_duplicates_inside_the_window_are_caught(
    tmp_path: Path,
) -> None:
    """One event an hour for 600 hours with a day's window: the store holds about a day of
    finished events (pruned a few at a time), duplicates inside the window are caught, and
    still after a restart."""
    path = tmp_path / "s.db"
    clock = FakeClock()
    settings = DeliverySettings(dedup_window=DAY)
    store = LocalStore(path)
    automations = Automations([], settings=settings, store=store, clock=clock)

    async def run() -> list[int]:
        sizes = []
        for number in range(600):
            clock.current += 3600  # one event an hour: 24 inside the window at any time
            result = await automations.dispatch({"id": f"e{number}", "type": "x"})
            assert not result.duplicate
            sizes.append(store.counts()["events"])
        again = [
            (await automations.dispatch({"id": f"e{n}", "type": "x"})).duplicate
            for n in (599, 577, 500)
        ]
        assert again == [True, True, False]  # 0 h, 22 h and 99 h ago
        return sizes

    sizes = asyncio.run(run())
    store.close()
    assert max(sizes) <= 25 + PRUNE_EVERY  # the window, and the finishes since the last prune
    with LocalStore(path) as again:
        later = Automations([], settings=settings, store=again, clock=clock)

        async def after_restart() -> list[bool]:
            ids = ["e599", "e580", "e560"]
            return [(await later.dispatch({"id": i, "type": "x"})).duplicate for i in ids]

        assert asyncio.run(after_restart()) == [True, True, False]


# --- hostile files and conditions --------------------------------------------------------------


def _error(path: Path, **options: Any) -> str:
    with pytest.raises(StoreError) as caught:
        LocalStore(path, **options).close()
    message = str(caught.value)
    assert f"store {path} " in message
    return message


def test_not_a_store(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"kind": "event"}\n')
    assert "not an SQLite database" in _error(journal) and "deadletters import" in _error(journal)
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
    assert "not a flowlang store" in _error(other)
    assert not is_store_file(journal) and is_store_file(other)


def test_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        for number in range(300):
            store.accept(f"e{number}", call(f"e{number}", pad="x" * 500), NOW, WINDOW)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(StoreError, match=r"damaged|not an SQLite"), LocalStore(path) as store:
        store.counts()
        store.take_over()
    path.write_bytes(data[:100] + os.urandom(len(data) - 100))  # garbage after the header
    with pytest.raises(StoreError), LocalStore(path) as store:
        store.counts()


@pytest.mark.parametrize("version", [99, 0])
def test_a_store_of_another_schema_version_says_what_to_do(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.db"
    LocalStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE flowlang_store SET value = ? WHERE name = 'schema'", (version,))
        db.commit()
    message = _error(path)
    assert ("newer flowlang" if version == 99 else "older store schema") in message


def test_a_symlinked_write_ahead_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    LocalStore(path).close()
    Path(f"{path}-wal").symlink_to(tmp_path / "elsewhere")
    assert "symbolic link" in _error(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    LocalStore(path).close()
    path.chmod(0o400)
    assert "read-only" in _error(path)


def test_a_store_locked_by_a_long_transaction_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = LocalStore(path, busy_timeout=0.3)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"locked by another process for more than 0\.3 s"):
            store.accept("e", call("e"), NOW, WINDOW)
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
    assert store.accept("e", call("e"), NOW, WINDOW)  # not accepted before: accepted now
    store.close()


def test_a_write_that_fails_accepts_nothing_and_loses_nothing(tmp_path: Path) -> None:
    """A full disk, as the store sees it (a trigger raises what SQLite would): the event is
    not accepted (its sender may send it again), and it is accepted once the disk has room."""
    path = tmp_path / "s.db"
    store = LocalStore(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
    http = StatusHttp(body=ODD_TEXT)
    automations = engine(store, http)
    with pytest.raises(StoreError, match="the disk is full"):
        asyncio.run(automations.dispatch(call("e1")))
    assert http.sent == []
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER full")
        db.commit()
    result = asyncio.run(automations.dispatch(call("e1")))
    assert not result.duplicate and [d.outcome for d in result.deliveries] == ["delivered"] * 2
    store.close()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "newer", "json-lines"])
def test_automate_and_replay_on_an_unusable_store_exit_2_naming_it(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.db"
    if kind == "json-lines":
        path.write_text('{"format": "flowlang.deadletter/1"}\n')
    else:
        with LocalStore(path) as store:
            for number in range(200):
                store.add_dead({"format": "flowlang.deadletter/1", "n": number, "pad": "x" * 300})
        data = path.read_bytes()
        if kind == "garbage":
            path.write_bytes(b"SQLite format 3\x00" + os.urandom(len(data) - 16))
        elif kind == "truncated":
            path.write_bytes(data[: len(data) // 2])
        else:
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("UPDATE flowlang_store SET value = 7 WHERE name = 'schema'")
                db.commit()
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "events.jsonl").write_text(json.dumps(call("e1")) + "\n")
    (tmp_path / "r.yaml").write_text("[]\n")
    automate = ["automate", str(tmp_path / "wf.yaml"), "--events", str(tmp_path / "events.jsonl")]
    automate += ["--responses", str(tmp_path / "r.yaml"), "--store", str(path)]
    commands = [automate, ["deadletters", "export", str(path)]]
    if kind != "json-lines":  # a JSON-lines file is replayed as one (tests/test_cli_automations)
        commands.append(["replay", str(path), "--responses", str(tmp_path / "r.yaml")])
    for argv in commands:
        status, _ = cli(*argv)
        err = capsys.readouterr().err
        assert status == 2, (argv, err)
        assert str(path) in err and "Traceback" not in err, err


def test_one_replay_at_a_time_per_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        store.add_dead({"format": "flowlang.deadletter/1"})
    with replay_lock(path):
        assert cli("replay", str(path))[0] == 2
    assert "being replayed by another flowlang replay" in capsys.readouterr().err
    status, out = cli("replay", str(path))  # a record that cannot be replayed stays
    assert status == 1 and "replayed 1 records" in out
    assert "cannot replay" in capsys.readouterr().err
    status, out = cli("deadletters", "export", str(path))
    assert (status, json.loads(out)) == (0, {"format": "flowlang.deadletter/1"})


@pytest.mark.parametrize("what", ["missing", "directory", "dev-zero"])
def test_deadletters_on_unusable_files_exit_2(
    tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = {"missing": tmp_path / "none", "directory": tmp_path, "dev-zero": Path("/dev/zero")}
    path = target[what]
    for argv in (
        ["deadletters", "export", str(path)],
        ["deadletters", "import", str(tmp_path / "s.db"), str(path)],
        ["deadletters", "export", str(tmp_path / "s.db"), "-o", str(path)]
        if what != "missing"
        else ["deadletters", "import", str(path), str(tmp_path / "none.jsonl")],
    ):
        LocalStore(tmp_path / "s.db").close()
        assert cli(*argv)[0] == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err, argv


def test_deadletters_import_interrupted_then_rerun_adds_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowlang deadletters import` commits a batch per transaction and leaves out records
    the store holds: killed part-way (an exception as the third record is read, batches of
    two: the open batch's rollback is what SIGKILL leaves) it kept the first batch; the rerun
    adds the rest once, and a third run adds none (defect 8 of issue 13). Lines that are not
    records (non-UTF-8, not JSON, not a dead letter) are skipped and reported."""
    from flowlang.automations import store as store_module
    from flowlang.cli import store_console

    monkeypatch.setattr(store_module, "IMPORT_BATCH", 2)
    path, source = tmp_path / "s.db", tmp_path / "dead.jsonl"
    records = [
        {"format": "flowlang.deadletter/1", "event": call(f"e{n}\ud800"), "recorded_at": n}
        for n in range(6)
    ]
    lines = [json.dumps(record).encode() + b"\n" for record in records]
    hostile = [b"\xff\xfe not utf-8\n", b"{torn\n", b"[1]\n", b"{}\n"]
    source.write_bytes(b"".join(lines[:3] + hostile + lines[3:] + lines[:1]))  # e0 twice
    real = store_console.decoded_lines

    def dies_at_the_third(*args: Any) -> Any:
        for seen, line in enumerate(real(*args)):
            if seen == 2:  # two records read and committed: the process dies
                raise KeyboardInterrupt
            yield line

    monkeypatch.setattr(store_console, "decoded_lines", dies_at_the_third)
    assert cli("deadletters", "import", str(path), str(source))[0] == 130  # interrupted
    with LocalStore(path) as store:
        assert [r for _, r in store.dead_letters()] == records[:2]
    monkeypatch.setattr(store_console, "decoded_lines", real)
    capsys.readouterr()
    assert cli("deadletters", "import", str(path), str(source))[0] == 1  # 4 lines skipped
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("(skipped)") == 4
    assert "imported 4 dead letters" in err and "3 already in it" in err
    assert cli("deadletters", "import", str(path), str(source))[0] == 1
    assert "imported 0 dead letters" in capsys.readouterr().err
    with LocalStore(path) as store:
        assert [r for _, r in store.dead_letters()] == records


def test_two_imports_of_one_file_at_once_add_each_record_once(tmp_path: Path) -> None:
    """Each batch learns what was committed since the last one, so two imports of one file
    running together (threads, each its own store connection) add each record once."""
    path, source = tmp_path / "s.db", tmp_path / "dead.jsonl"
    records = [{"format": "flowlang.deadletter/1", "event": call(f"e{n}")} for n in range(300)]
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    LocalStore(path).close()

    def one() -> None:
        with LocalStore(path, busy_timeout=30) as store:
            store.import_dead(((record, 0.0) for record in records), batch=7)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with LocalStore(path) as store:
        assert sorted(json.dumps(r) for _, r in store.dead_letters()) == sorted(
            json.dumps(r) for r in records
        )


# --- red-team findings: owners, take-over, run again, the file itself -------------------


@pytest.mark.parametrize("tamper", ["lock-file-deleted", "owners-folder-deleted"])
def test_a_live_owners_event_is_not_taken_over_when_its_lock_file_goes(
    tmp_path: Path, tamper: str
) -> None:
    """A worker's lock file removed while it runs (a tmp cleaner, an operator's rm -r of
    ``*.owners``) makes it look dead: another worker's take-over takes the event it is running
    right now, and both run it (actions delivered twice)."""
    path = tmp_path / "s.db"
    alive = LocalStore(path, sync=True)
    try:
        assert alive.accept("a", call("a"), NOW, WINDOW)
        if tamper == "lock-file-deleted":
            os.unlink(f"{path}.owners/{alive.owner}.lock")
        else:
            shutil.rmtree(f"{path}.owners")
        with LocalStore(path, sync=True) as taker:
            stolen = [found.event_id for found in taker.take_over()]
        assert stolen == [], "a live worker's open event was taken over: it runs twice"
    finally:
        alive.close()


def test_a_take_over_that_fails_part_way_loses_no_event(tmp_path: Path) -> None:
    """Two gone owners; the take-over commits the first owner's events to us, then the store
    is locked by another process for longer than busy_timeout when it takes the second: the
    StoreError drops the first owner's events, now ours, from what is returned, and no later
    take-over (ours skips our own events, the others see us alive) ever resumes them."""
    path = tmp_path / "s.db"
    for name in ("g1", "g2"):
        gone = LocalStore(path)
        assert gone.accept(name, call(name), NOW, WINDOW)
        gone.close()  # the process died: its events are orphans
    taker = LocalStore(path, busy_timeout=0.2)
    blockers: list[sqlite3.Connection] = []
    orphaned = taker._orphaned
    calls = {"n": 0}

    def orphaned_then_locked(owner: object) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # between the two owners' transactions, another process writes
            blockers.append(hold_write_lock(path))
        return orphaned(owner)

    taker._orphaned = orphaned_then_locked  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreError):
            taker.take_over()
        for blocker in blockers:
            blocker.execute("ROLLBACK")
            blocker.close()
        taker._orphaned = orphaned  # type: ignore[method-assign]
        again = [found.event_id for found in taker.take_over()]
        with LocalStore(path) as other:
            again += [found.event_id for found in other.take_over()]
        assert sorted(again) == ["g1", "g2"], (
            f"only {again} are resumed: the other event stays open, owned by a live process, "
            "never run"
        )
    finally:
        taker.close()


def test_an_event_whose_dead_letter_could_not_be_kept_is_run_again_while_the_process_lives(
    tmp_path: Path,
) -> None:
    """The store locked by another process for longer than busy_timeout while an action is
    dead-lettered: the delivery is "unsaved", the event "stays unsettled and runs again on the
    next run". But the event is owned by this live process: its own periodic take-over skips
    its own events and the other workers see it alive, so the event is never run again for as
    long as this server lives (days), although the lock went away a moment later."""
    path = tmp_path / "s.db"
    store = LocalStore(path, sync=True, busy_timeout=0.2)
    http = StatusHttp(status=400)
    automations = engine_one(store, http)

    async def scenario() -> None:
        plain = automations.accept(call("e1"))
        assert plain is not None
        blocker = hold_write_lock(path)
        try:
            result = await automations.run(plain)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        outcomes = [d.outcome for d in result.deliveries]
        assert outcomes == ["unsaved"], outcomes
        # The lock is gone. What serve does every takeover_interval:
        automations.take_over()
        await automations.resume()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 20))
        assert store.counts()["open"] == 0, (
            "the event stays open, owned by this live process, and is never run again "
            f"(dead letters: {store.counts()['dead']}, attempts: {len(http.sent)})"
        )
    finally:
        asyncio.run(automations.aclose())
        store.close()


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_an_event_is_not_accepted_into_a_store_file_that_was_deleted(
    tmp_path: Path, change: str
) -> None:
    """The store file removed (or replaced by another store: a restore from a backup, a
    ``mv new.db events.db``) while the server runs: the open connection writes on into the
    unlinked inode and accept says True (202), but the event is in no file any process can
    open; a worker restarted uses the file now at the path (a split brain: the same id
    accepted again, the old events never taken over)."""
    path = tmp_path / "s.db"
    store = LocalStore(path, sync=True)
    try:
        assert store.accept("before", call("before"), NOW, WINDOW)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if change == "replaced":
            other = tmp_path / "other.db"
            LocalStore(other).close()
            os.replace(other, path)
        try:
            accepted = store.accept("after", call("after"), NOW, WINDOW)
        except StoreError:
            return  # refused (503): the sender sends it again
        with LocalStore(path) as restarted:
            kept = [found.event_id for found in restarted.take_over()]
        assert not accepted or "after" in kept, (
            "accept answered True for an event written into a deleted file: it is lost"
        )
    finally:
        store.close()


def test_a_store_reached_through_a_symbolic_link_shares_the_owners_of_its_file(
    tmp_path: Path,
) -> None:
    """A symbolic link to an existing store is accepted (``_check_path`` stats through it)
    and SQLite resolves it (one database, one WAL), but the owners folder is named after the
    path as given: ``current.db.owners`` beside ``events.db.owners``. A process on
    ``current.db -> events.db`` sees no lock file for the owners of the processes on
    ``events.db`` and takes over the event a live one is running: it runs twice."""
    real = tmp_path / "events.db"
    link = tmp_path / "current.db"
    alive = LocalStore(real, sync=True)
    try:
        assert alive.accept("a", call("a"), NOW, WINDOW)
        link.symlink_to(real.name)
        try:
            other = LocalStore(link, sync=True)
        except StoreError:
            return  # refused: a clear error, no second owners folder
        with other:
            stolen = [found.event_id for found in other.take_over()]
        assert stolen == [], "a live process's event was taken over through a link: runs twice"
    finally:
        alive.close()


def test_a_missing_lock_file_counts_as_gone_only_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner whose lock file is missing is gone only when one process saw it missing
    MISSING_LOCK_GRACE apart: a live owner re-creates its file before then (at its take-over
    or finish), a dead one does not and its events are then taken over, once."""
    from flowlang.automations import store as store_module

    path = tmp_path / "s.db"
    clock = {"now": 1000.0}
    monkeypatch.setattr(LocalStore, "_clock", staticmethod(lambda: clock["now"]))
    alive = LocalStore(path, sync=True)
    dead = LocalStore(path, sync=True)
    taker = LocalStore(path, sync=True)
    try:
        assert alive.accept("live", call("live"), NOW, WINDOW)
        assert dead.accept("dead", call("dead"), NOW, WINDOW)
        shutil.rmtree(f"{path}.owners")
        assert taker.take_over() == []  # first seen missing: not yet
        alive.take_over()  # the live owner's periodic take-over re-creates its lock file
        assert os.path.exists(f"{path}.owners/{alive.owner}.lock")
        clock["now"] += store_module.MISSING_LOCK_GRACE
        assert [found.event_id for found in taker.take_over()] == ["dead"]
        with LocalStore(path) as other:
            assert other.take_over() == []  # taken over once
    finally:
        for store in (alive, dead, taker):
            store.close()


def test_a_store_closed_with_open_events_is_taken_over_at_once(tmp_path: Path) -> None:
    """Closing keeps the lock file (unlocked) of a process that owns open events, as a
    SIGKILL does: the next process takes them over at once, not after a grace."""
    path = tmp_path / "s.db"
    first = LocalStore(path)
    assert first.accept("a", call("a"), NOW, WINDOW)
    assert first.accept("b", call("b"), NOW, WINDOW)
    first.finish("b", NOW, WINDOW, 100)
    owner = first.owner
    first.close()
    assert os.path.exists(f"{path}.owners/{owner}.lock")
    with LocalStore(path) as second:
        assert [found.event_id for found in second.take_over()] == ["a"]
    assert not os.path.exists(f"{path}.owners/{owner}.lock")
    empty = LocalStore(path)
    gone = empty.owner
    empty.close()  # owns nothing: its lock file goes
    assert not os.path.exists(f"{path}.owners/{gone}.lock")


def test_an_event_run_again_in_its_own_process_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_again: returned by the next take-over at once, then after 10 s, 20 s... (at most
    RUN_AGAIN_MAX_DELAY); forgotten once finished."""
    from flowlang.automations import store as store_module

    clock = {"now": 0.0}
    monkeypatch.setattr(LocalStore, "_clock", staticmethod(lambda: clock["now"]))
    with LocalStore(tmp_path / "s.db") as store:
        assert store.accept("e", call("e"), NOW, WINDOW)
        assert store.take_over() == []
        store.run_again("e")
        assert [found.event_id for found in store.take_over()] == ["e"]
        store.run_again("e")
        assert store.take_over() == []
        clock["now"] += store_module.RUN_AGAIN_DELAY
        assert [found.event_id for found in store.take_over()] == ["e"]
        for _ in range(20):  # bounded: the delay stops doubling
            store.run_again("e")
        clock["now"] += store_module.RUN_AGAIN_MAX_DELAY
        assert [found.event_id for found in store.take_over()] == ["e"]
        store.finish("e", NOW, WINDOW, 100)
        assert store.take_over() == []
        assert store._again == {}


def test_an_event_is_accepted_through_a_store_path_renamed_back(tmp_path: Path) -> None:
    """The identity check compares the file, not its name's history: the file moved away and
    back is still the file opened."""
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        os.replace(path, tmp_path / "away.db")
        with pytest.raises(StoreError, match="deleted while open"):
            store.accept("x", call("x"), NOW, WINDOW)
        os.replace(tmp_path / "away.db", path)
        assert store.accept("x", call("x"), NOW, WINDOW)


def test_a_take_over_is_made_in_bounded_batches_losing_nothing(tmp_path: Path) -> None:
    """take_over(limit): at most ``limit`` events per call, oldest first; the gone owner's
    rest is taken by the next calls at once (its lock file stays unlocked until then), by
    this process or another, each event by exactly one."""
    path = tmp_path / "s.db"
    gone = LocalStore(path)
    for number in range(7):
        assert gone.accept(f"e{number}", call(f"e{number}"), NOW + number, WINDOW)
    owner = gone.owner
    gone.close()
    with LocalStore(path) as taker, LocalStore(path) as other:
        first = [found.event_id for found in taker.take_over(limit=3)]
        second = [found.event_id for found in other.take_over(limit=1)]
        rest = [found.event_id for found in taker.take_over(limit=100)]
        assert (first, second, rest) == (["e0", "e1", "e2"], ["e3"], ["e4", "e5", "e6"])
        assert taker.take_over() == [] and other.take_over() == []
        assert taker.counts()["open"] == 7
        # the gone owner's file went with its last event
        assert not os.path.exists(f"{path}.owners/{owner}.lock")


def test_a_resume_stopped_by_a_locked_store_keeps_the_rest_for_the_next(tmp_path: Path) -> None:
    """The store locked by another process while resuming taken-over events: the StoreError
    stops this resume, and both the event it was running and those after it are resumed by
    the next take-over and resume (none left open by this live process)."""
    path = tmp_path / "s.db"
    gone = LocalStore(path)
    for name in ("r1", "r2", "r3"):
        assert gone.accept(name, call(name), NOW, WINDOW)
    gone.close()
    store = LocalStore(path, sync=True, busy_timeout=0.2)
    http = StatusHttp()
    automations = engine_one(store, http)

    async def scenario() -> None:
        blocker = hold_write_lock(path)
        try:
            with pytest.raises(StoreError):
                await automations.resume()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        automations.take_over()
        await automations.resume()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 20))
        assert store.counts()["open"] == 0
    finally:
        asyncio.run(automations.aclose())
        store.close()
