"""Memory on long streams: bounded by configuration (``max_remembered_events``, the journal's
compaction), not by how many events went by."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import NOW, FakeClock, automate_argv, read_json_lines, write_json_lines
from test_cli_automate_stream import GENERATOR, automate, next_line

from flowlang.automations import Automations, DeliverySettings, Journal
from flowlang.automations.dispatch import MAX_REMEMBERED_EVENTS
from flowlang.automations.journal import MIN_TRIM_SLACK, summarize
from flowlang.automations.store import LocalStore
from flowlang.cli import main

DAY = 86_400.0


def event(event_id: str, at: float) -> dict[str, Any]:
    return {"kind": "event", "event": {"id": event_id, "type": "call.ended"}, "at": at}


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


def test_the_journal_keeps_at_most_the_cap_after_compaction(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    clock = FakeClock()
    settings = DeliverySettings(max_remembered_events=5)
    automations = Automations(
        [], settings=settings, journal=Journal(path, compact_after=10), clock=clock
    )
    for number in range(60):
        clock.current += 1
        assert duplicates(automations, [f"e{number}"]) == [False]
        assert (
            len(read_json_lines(path)) <= 10 + 1 + 2 * 5
        )  # appended since compaction + what it kept
    automations.close_journal()
    later = Automations([], settings=settings, journal=Journal(path), clock=clock)
    assert read_json_lines(path) == [
        {"kind": "seen", "event_id": f"e{n}", "at": NOW + n + 1} for n in range(55, 60)
    ]
    assert duplicates(later, ["e59", "e55", "e54"]) == [True, True, False]
    later.close_journal()


def test_a_journal_from_before_the_cap_is_cut_to_it_with_unfinished_events_kept(
    tmp_path: Path,
) -> None:
    """An old journal with many seen lines, a bad line and an unfinished event written by hand
    (non-ASCII UTF-8): compaction keeps the newest seen lines and copies the rest whole."""
    path = tmp_path / "journal.jsonl"
    records = [{"kind": "seen", "event_id": f"s{n}", "at": NOW - 5000 + n} for n in range(5000)]
    write_json_lines(path, records[:2500])
    unfinished = '{"kind": "event", "event": {"id": "open", "type": "x", "name": "Zoë"}, "at": 1}'
    with path.open("a", encoding="utf-8") as handle:
        handle.write(unfinished + "\n")
        handle.write("\xff not json\n")
        handle.write("".join(json.dumps(record) + "\n" for record in records[2500:]))
    settings = DeliverySettings(max_remembered_events=100)
    journal = Journal(path)
    automations = Automations([], settings=settings, journal=journal, clock=FakeClock())
    kept = read_json_lines(path)
    assert kept[0] == json.loads(unfinished)
    assert kept[1:] == records[-99:]  # the cap counts the unfinished event too
    assert len(journal.problems) == 1 and ":2502:" in journal.problems[0]
    assert "open" in automations._unfinished
    assert duplicates(automations, ["open", "s4999", "s4901", "s4900"]) == [True, True, True, False]
    automations.close_journal()


def test_a_cap_that_is_not_a_positive_count_is_refused() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_remembered_events"):
            DeliverySettings(max_remembered_events=bad)  # type: ignore[arg-type]
    assert DeliverySettings().max_remembered_events == MAX_REMEMBERED_EVENTS == 100_000


def reference(
    records: list[dict[str, Any]], now: float, window: float, limit: int
) -> tuple[list[tuple[str, float]], dict[str, list[dict[str, Any]]]]:
    """What compaction keeps, the plain way (every record in memory): the finished events as
    ``(id, at)``, oldest accepted first, and each unfinished event's records."""
    events: dict[str, tuple[float, list[dict[str, Any]], bool]] = {}
    for record in records:
        kind = record["kind"]
        event_id = record["event"]["id"] if kind == "event" else record["event_id"]
        if kind in ("event", "seen"):
            events.pop(event_id, None)
            events[event_id] = (record["at"], [record] if kind == "event" else [], kind == "seen")
            continue
        entry = events.get(event_id)
        if entry is None or entry[2]:
            continue
        if kind == "done":
            events[event_id] = (entry[0], [], True)
        else:
            entry[1].append(record)
    finished = [(i, e[0]) for i, e in events.items() if e[2] and now - e[0] < window]
    unfinished = {i: e[1] for i, e in events.items() if not e[2]}
    room = max(limit - len(unfinished), 0)  # the cap counts unfinished events too
    return finished[max(len(finished) - room, 0) :] if room else [], unfinished


IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
TIMES = st.integers(min_value=0, max_value=5).map(lambda hours: NOW - hours * 3600.0)
RECORDS = st.one_of(
    st.builds(event, IDS, TIMES),
    st.builds(lambda i, at: {"kind": "seen", "event_id": i, "at": at}, IDS, TIMES),
    st.builds(lambda i: {"kind": "done", "event_id": i}, IDS),
    st.builds(
        lambda i, w: {"kind": "workflow_done", "event_id": i, "workflow": w},
        IDS,
        st.sampled_from(["w1", "w2"]),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORDS, max_size=40), st.integers(min_value=1, max_value=6))
def test_streaming_compaction_keeps_what_the_plain_reading_keeps(
    records: list[dict[str, Any]], limit: int
) -> None:
    window = 3 * 3600.0
    finished, unfinished = reference(records, NOW, window, limit)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.jsonl"
        write_json_lines(path, records)
        journal = Journal(path)
        try:
            state = journal.compact(NOW, window, limit, remember=True)
            kept = read_json_lines(path)
            again = journal.compact(NOW, window, limit, remember=True)  # idempotent
            assert read_json_lines(path) == kept and again.seen == state.seen
        finally:
            journal.close()
    seen_lines = [(r["event_id"], r["at"]) for r in kept if r["kind"] == "seen"]
    assert seen_lines == finished
    assert state.unfinished == unfinished
    copied: dict[str, list[dict[str, Any]]] = {}
    for record in kept:
        if record["kind"] != "seen":
            event_id = record["event"]["id"] if record["kind"] == "event" else record["event_id"]
            copied.setdefault(event_id, []).append(record)
    assert copied == unfinished
    assert state.kept == len(kept)
    assert state.seen == dict([*finished, *((i, NOW) for i in unfinished)])
    assert list(state.seen.values()) == sorted(state.seen.values())  # oldest first
    memory = summarize(records, NOW, window, limit)
    assert memory.unfinished == unfinished and memory.seen == state.seen


def _peak_memory(pid: int) -> int:
    """The peak resident set of a running process, in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


#: Events in the long-stream test, and the peak memory it allows: before the cap and the
#: streaming compaction, automate peaked at about 105 MiB on this stream (every offline request
#: kept, the whole journal read to compact it); now about 50 MiB (both backends).
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
    distinct id, about 200 bytes) into ``folder``, without a journal or dead letters yet."""
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
    for name in ("journal.jsonl", "dead.jsonl"):
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


def test_a_trim_before_many_acceptances_again_keeps_fewer_never_others() -> None:
    """The one-pass ledger's documented limit: finished events accepted again after a trim
    (here outside the window, so they leave it) free places that the trimmed events would have
    filled; compaction then keeps fewer than the limit, and only events the plain reading keeps."""
    limit, window = 2, 3 * 3600.0
    count = limit + MIN_TRIM_SLACK + 10
    records: list[dict[str, Any]] = [
        {"kind": "seen", "event_id": f"e{number}", "at": NOW} for number in range(count)
    ]
    for number in range(count - MIN_TRIM_SLACK, count):  # the newest, accepted again, stale
        records += [event(f"e{number}", NOW - window), {"kind": "done", "event_id": f"e{number}"}]
    finished, _ = reference(records, NOW, window, limit)
    assert len(finished) == limit
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.jsonl"
        write_json_lines(path, records)
        journal = Journal(path)
        try:
            journal.compact(NOW, window, limit)
            kept = [(r["event_id"], r["at"]) for r in read_json_lines(path) if r["kind"] == "seen"]
        finally:
            journal.close()
    assert len(kept) < limit and set(kept) <= set(finished)
