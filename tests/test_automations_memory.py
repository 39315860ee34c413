"""Memory on long streams: bounded by configuration (``max_remembered_events``, the store's
pruning of finished events), not by how many events went by."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import NOW, FakeClock, automate_argv
from test_cli_automate_stream import GENERATOR, automate, next_line

from flowlang.automations import Automations, DeliverySettings
from flowlang.automations.dispatch import MAX_REMEMBERED_EVENTS
from flowlang.automations.store import PRUNE_BATCH, PRUNE_EVERY, LocalStore
from flowlang.cli import main

DAY = 86_400.0


def duplicates(automations: Automations, ids: list[str]) -> list[bool]:
    async def feed() -> list[bool]:
        return [(await automations.dispatch({"id": i, "type": "x"})).duplicate for i in ids]

    return asyncio.run(feed())


def test_the_cap_forgets_the_oldest_event_ids_first() -> None:
    clock = FakeClock()
    remembered = Automations([], settings=DeliverySettings(max_remembered_events=3), clock=clock)
    for number in range(5):
        clock.current += 1
        assert duplicates(remembered, [f"e{number}"]) == [False]
    # e2, e3, e4 are remembered; e0 and e1 were forgotten, oldest first
    assert duplicates(remembered, ["e4", "e3", "e2"]) == [True, True, True]
    assert duplicates(remembered, ["e1"]) == [False]  # runs again: now e3, e4, e1
    assert duplicates(remembered, ["e2", "e1"]) == [False, True]


def test_the_window_still_forgets_before_the_cap() -> None:
    clock = FakeClock()
    settings = DeliverySettings(dedup_window=60, max_remembered_events=100)
    automations = Automations([], settings=settings, clock=clock)
    assert duplicates(automations, ["a", "b"]) == [False, False]
    clock.current += 61
    assert duplicates(automations, ["a", "b"]) == [False, False]


def test_the_store_keeps_about_the_cap_and_a_restart_still_finds_the_newest(
    tmp_path: Path,
) -> None:
    """Finished events beyond ``max_remembered_events`` are pruned a few at a time (at most
    PRUNE_EVERY finishes late); the newest are still duplicates after a restart."""
    path = tmp_path / "store.db"
    clock = FakeClock()
    settings = DeliverySettings(max_remembered_events=5)
    store = LocalStore(path)
    automations = Automations([], settings=settings, store=store, clock=clock)
    for number in range(60):
        clock.current += 1
        assert duplicates(automations, [f"e{number}"]) == [False]
        assert store.counts()["events"] <= 5 + PRUNE_EVERY
    store.close()
    with LocalStore(path) as again:
        later = Automations([], settings=settings, store=again, clock=clock)
        assert duplicates(later, ["e59", "e55", "e40"]) == [True, True, False]


def test_a_store_from_before_a_lower_cap_is_cut_to_it_with_open_events_kept(
    tmp_path: Path,
) -> None:
    """A store written with a cap of 100,000 (3,000 finished events, one open event with
    non-ASCII text) is run with a cap of 100: each prune removes up to PRUNE_BATCH of the
    oldest, so it reaches the cap within 3,000 / (PRUNE_BATCH - PRUNE_EVERY) prunes, well
    before 3,000 new events;
    the open event is kept and resumed."""
    path = tmp_path / "store.db"
    with LocalStore(path) as old:
        for number in range(3000):
            old.accept(f"s{number}", {"id": f"s{number}", "type": "x"}, NOW - 5000 + number, DAY)
            old.finish(f"s{number}", NOW, DAY, 100_000)
        assert old.accept("open", {"id": "open", "type": "x", "name": "Zoë"}, NOW, DAY)
    store = LocalStore(path)
    clock = FakeClock()
    settings = DeliverySettings(max_remembered_events=100, dedup_window=DAY)
    automations = Automations([], settings=settings, store=store, clock=clock)
    [result] = asyncio.run(automations.resume())  # the open event: taken over and finished
    assert result.event_id == "open" and store.counts()["open"] == 0
    finishes = PRUNE_EVERY * (3000 // (PRUNE_BATCH - PRUNE_EVERY) + 2)  # net removed per prune
    for number in range(finishes):
        assert duplicates(automations, [f"n{number}"]) == [False]
    counts = store.counts()
    store.close()
    assert counts["events"] <= 100 + PRUNE_EVERY, counts
    assert finishes < 3000


#: Operations on a store: accept an id (at an hour), or finish an open one.
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["accept", "finish"]),
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        st.integers(min_value=0, max_value=5),
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS, st.integers(min_value=1, max_value=6))
def test_the_stores_duplicate_check_agrees_with_the_plain_reading(
    operations: list[tuple[str, str, int]], limit: int
) -> None:
    """Against a plain model: an open id is a duplicate; an id accepted outside the window is
    not; one finished inside the window among the last ``limit`` finished is; one beyond the
    limit may be either (forgotten a few finishes late: pruning is amortized)."""
    window = 3 * 3600.0
    accepted: dict[str, float] = {}  # id -> when accepted
    open_ids: set[str] = set()
    finished: list[str] = []  # finish order, newest last
    with tempfile_store() as store:
        for action, event_id, hours in operations:
            now = NOW + hours * 3600.0
            if action == "finish":
                if event_id in open_ids:
                    open_ids.discard(event_id)
                    if event_id in finished:
                        finished.remove(event_id)
                    finished.append(event_id)
                    store.finish(event_id, now, window, limit)
                continue
            got = store.accept(event_id, {"id": event_id}, now, window)
            if event_id in open_ids:
                assert not got, "an open event was accepted again"
            elif event_id not in accepted or accepted[event_id] <= now - window:
                assert got, "an event outside the window was refused"
            elif event_id in finished[-limit:]:
                assert not got, "a recent finished event inside the window was accepted"
            if got:
                accepted[event_id] = now
                open_ids.add(event_id)
                if event_id in finished:
                    finished.remove(event_id)


class tempfile_store:  # noqa: N801 - used as a context manager, as tempfile's are
    """A LocalStore in a temporary folder, closed and removed afterwards."""

    def __enter__(self) -> LocalStore:
        import tempfile

        self._folder = tempfile.TemporaryDirectory()
        self._store = LocalStore(Path(self._folder.name) / "s.db")
        return self._store

    def __exit__(self, *_: object) -> None:
        self._store.close()
        self._folder.cleanup()


def test_a_cap_that_is_not_a_positive_count_is_refused() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_remembered_events"):
            DeliverySettings(max_remembered_events=bad)  # type: ignore[arg-type]
    assert DeliverySettings().max_remembered_events == MAX_REMEMBERED_EVENTS == 100_000


def _peak_memory(pid: int) -> int:
    """The peak resident set of a running process, in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


#: Events in the long-stream test, and the peak memory it allows: before the cap and the
#: streaming compaction, automate peaked at about 105 MiB on this stream (every offline request
#: kept, the whole JSON-lines journal read to compact it); now about 50 MiB (both backends).
STREAM_EVENTS = 40_000
PEAK_BOUND = 80 * 1024 * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_memory_stays_bounded_on_a_long_stream(tmp_path: Path) -> None:
    """40,000 small events through ``automate --events -`` (offline), fed by a child process
    that keeps the stream open; the peak memory is read when every event has its line."""
    generator = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(GENERATOR), str(STREAM_EVENTS), "16"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with automate(tmp_path, generator.stdout) as (process, output):
            assert generator.stdout is not None
            generator.stdout.close()  # automate holds the only reading end
            delivered = 0
            for _ in range(STREAM_EVENTS):
                line = next_line(output, 120)
                delivered += line["deliveries"][0]["outcome"] == "delivered"
            assert delivered == STREAM_EVENTS
            peak = _peak_memory(process.pid)
            generator.kill()  # the end of the stream
            summary = next_line(output, 120)
            assert process.wait(timeout=60) == 0
        assert summary["events"] == STREAM_EVENTS and summary["exit"] == 0
        assert peak < PEAK_BOUND, f"peak memory {peak / 2**20:.0f} MiB"
        with LocalStore(tmp_path / "store.db") as store:  # finished events: only their ids
            counts = store.counts()
        assert counts["events"] == STREAM_EVENTS and counts["open"] == 0
        assert counts["settled"] == counts["workflows_done"] == counts["retries"] == 0
    finally:
        if generator.poll() is None:
            generator.kill()
        generator.wait(timeout=30)


def test_a_file_backed_dead_letter_store_keeps_only_recent_records_in_memory(
    tmp_path: Path,
) -> None:
    """The file holds every dead letter; memory holds the last RECENT_DEAD_LETTERS, so a
    never-ending stream whose deliveries keep failing does not grow the process."""
    from flowlang.automations.dispatch import RECENT_DEAD_LETTERS, DeadLetterStore

    store = DeadLetterStore(tmp_path / "dead.jsonl")
    total = RECENT_DEAD_LETTERS + 50
    for number in range(total):
        store.add({"event": {"id": f"e{number}"}, "action": "a"})
    assert len(store.records) == RECENT_DEAD_LETTERS
    assert store.records[-1]["event"]["id"] == f"e{total - 1}"
    assert len(DeadLetterStore.read(tmp_path / "dead.jsonl")) == total
    in_memory = DeadLetterStore()
    for number in range(total):
        in_memory.add({"event": {"id": f"e{number}"}})
    assert len(in_memory.records) == total  # without a file, memory is the only place


class _Lines(io.TextIOBase):
    """A standard output that keeps only the last line written and counts the lines."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.count += text.count("\n")
        self.last = text
        return len(text)


#: The workflow, recorded responses and events of the in-process offline runs below (and of
#: benchmarks/test_growth_automate.py): one request per event, delivered or (status 500)
#: retried in simulated time, then dead-lettered.
OFFLINE_WORKFLOW = """
workflow: log
trigger: call.ended
actions:
  - name: log
    type: api_request
    endpoint: https://crm.example.com/log
    values: [{key: id, value: "<<event.id>>"}, {key: note, value: "<<event.properties.note>>"}]
"""


def offline_files(folder: Path, events: int, *, status: int = 200) -> Path:
    """Write the workflow, the recorded response (``status``) and ``events`` events (each a
    distinct id, about 200 bytes) into ``folder``, without a store or dead letters yet."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wf.yaml").write_text(OFFLINE_WORKFLOW)
    (folder / "responses.yaml").write_text(
        f"- {{request: POST https://crm.example.com/log, status: {status}, body: {{ok: true}}}}\n"
    )
    note = "n" * 120
    with (folder / "events.jsonl").open("w", encoding="utf-8") as handle:
        for number in range(events):
            record = {"id": f"evt-{number}", "type": "call.ended", "properties": {"note": note}}
            handle.write(json.dumps(record) + "\n")
    for name in ("store.db", "store.db-wal", "store.db-shm", "dead.jsonl"):
        (folder / name).unlink(missing_ok=True)
    return folder


def offline_automate(folder: Path) -> dict[str, Any]:
    """``flowlang automate --responses --json`` in this process on the files of ``folder``
    (``offline_files``); the summary line it ends with (checked to follow a line per event)."""
    output = _Lines()
    status = main([*automate_argv(folder), "--json"], stdout=output, stdin=io.StringIO(""))
    summary: dict[str, Any] = json.loads(output.last)
    assert summary["kind"] == "summary" and output.count == summary["events"] + 1
    assert status == summary["exit"]
    return summary


def offline_peak(folder: Path, events: int) -> int:
    """The peak traced memory of ``offline_automate`` on ``events`` events (bytes)."""
    offline_files(folder, events)
    gc.collect()
    tracemalloc.start()
    try:
        summary = offline_automate(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["events"] == summary["delivered"] == events and summary["exit"] == 0
    return peak


def test_offline_memory_is_flat_in_the_number_of_events(tmp_path: Path) -> None:
    """Ten times the events, about the same peak: nothing per event is kept but the ids that
    duplicates are recognised by (bounded by ``max_remembered_events``; a few hundred bytes
    each). Keeping each recorded request (a few kilobytes each) broke this."""
    small = offline_peak(tmp_path / "small", 2_000)
    large = offline_peak(tmp_path / "large", 20_000)
    assert large < 2 * small, f"{small / 1e6:.1f} MB, then {large / 1e6:.1f} MB"
