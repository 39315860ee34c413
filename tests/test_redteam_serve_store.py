"""Red team: serve's shared events store (LocalStore(sync=True) shared by every worker).

Each test here reproduces a defect found by review and fails until it is fixed: events run
twice or left unresumed across processes sharing one store, the event loop held up by a
store locked by another process, events accepted into a file that is gone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from support import NOW, FakeClock, StatusHttp

from flowlang import MappingSecrets, StoreError
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import DeadLetterStore
from flowlang.automations.store import LocalStore

WINDOW = 3600.0
ONE = """\
workflow: one
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
"""


def call(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": "call.ended", "properties": {}}


def engine(store: LocalStore, http: StatusHttp) -> Automations:
    return Automations(
        [load_workflow_text(ONE)],
        settings=DeliverySettings(schedule=(0,)),
        http=http,
        secrets=MappingSecrets({}),
        clock=FakeClock(),
        store=store,
        dead_letters=DeadLetterStore(store=store),
    )


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's long write transaction (a sqlite3 shell, an import batch...)."""
    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


# --- owners folder tampered with ------------------------------------------------------------


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


# --- a take-over that fails part-way --------------------------------------------------------


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


# --- a live process's own event left open ---------------------------------------------------


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
    automations = engine(store, http)

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


# --- the event loop held up by a locked store -----------------------------------------------


# Still failing after branch fixi (serve's half of finding 5 is fixed: the periodic take-over
# and the recording of events run on the store's own threads, see test_serve_e2e): here the
# stall is the dispatch's own write, Automations.run -> _dispatch -> _run_workflow -> _settle
# -> _record (dispatch.py:511) -> LocalStore.settle (store.py:555), on the event loop: the
# loop stands still for busy_timeout (1.51 s of 1.5 s), then StoreError. Left for a decision.
def test_a_store_locked_by_another_process_does_not_stop_the_event_loop(tmp_path: Path) -> None:
    """Only accept runs in a thread: a dispatch's settle / finish / dead letter (and the
    periodic take-over) write to the store on the event loop itself. With another process
    holding the write lock, every request of the server (health checks, voice webhooks,
    events) waits busy_timeout (5 s by default) per write."""
    path = tmp_path / "s.db"
    store = LocalStore(path, sync=True, busy_timeout=1.5)
    automations = engine(store, StatusHttp())

    async def scenario() -> float:
        plain = automations.accept(call("e1"))
        assert plain is not None
        blocker = hold_write_lock(path)
        worst = 0.0

        async def ticker() -> None:
            nonlocal worst
            for _ in range(60):  # bounded: 60 ticks of 50 ms
                before = time.monotonic()
                await asyncio.sleep(0.05)
                worst = max(worst, time.monotonic() - before - 0.05)

        ticks = asyncio.create_task(ticker())
        await asyncio.sleep(0.1)
        try:
            await automations.run(plain)
        except Exception:  # what it does with the StoreError is not the point here
            pass
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await ticks
        return worst

    try:
        worst = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert worst < 0.5, f"the event loop stood still for {worst:.2f} s"
    finally:
        asyncio.run(automations.aclose())
        store.close()


# --- the store file deleted while serving ---------------------------------------------------


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


# Still failing after branch fixi: the take-over itself now reads the 1 500 events on the
# store's own thread (the loop lags at most ~15 ms during its 2-3 s), but Automations.resume
# (dispatch.py:526) then dispatches them one after another, each ending in _record
# (dispatch.py:503) -> LocalStore.finish (store.py:628), a synced commit on the event loop,
# with no await between them that yields: ~1.2 s in-process, /healthz waited 3.5 s in this
# test. Also left: the take-over reads every orphan at once (memory; store.py). Left for a
# decision.
def test_the_periodic_take_over_of_many_orphaned_events_does_not_stop_the_event_loop(
    tmp_path: Path,
) -> None:
    """A worker that died with many accepted events (max_pending_events is 10 000, each up to
    256 KiB): the next periodic take-over reads every one of them at once (fetchall, then
    three queries each, then decoded into memory) on the event loop, with no batch: the
    server stops answering for as long (1 500 events of 100 KB: over a second; the 10 000 x
    256 KiB it allows: gigabytes of memory and minutes)."""
    import httpx

    from tests.serve_process import ServeProcess, serve_arguments

    path = tmp_path / "events.db"
    server = ServeProcess(serve_arguments(tmp_path, "--events-store", str(path))).start()
    try:
        gone = LocalStore(path)
        pad = "x" * 100_000
        now = time.time()
        for number in range(1500):
            event_id = f"orphan-{number}"
            event = {"id": event_id, "type": "other.kind", "properties": {"pad": pad}}
            assert gone.accept(event_id, event, now, WINDOW)
        gone.close()  # the worker died: the next take-over (within 10 s) takes them all
        worst = 0.0
        deadline = time.monotonic() + 14.0
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
            for _ in range(300):  # bounded: 300 checks or 14 s
                if time.monotonic() > deadline:
                    break
                before = time.monotonic()
                assert client.get("/healthz").status_code == 200
                worst = max(worst, time.monotonic() - before)
                time.sleep(0.05)
        assert worst < 0.5, f"/healthz waited {worst:.2f} s while the take-over read the store"
    finally:
        server.kill()


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
