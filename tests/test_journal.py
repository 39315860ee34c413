"""The automations journal: compacted on load and as it grows, without losing an unfinished
event or forgetting a duplicate inside the window."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from support import NOW, FakeClock, read_json_lines, write_json_lines

from flowlang.automations import Automations, DeliverySettings, Journal
from flowlang.automations.journal import summarize

DAY = 86_400.0


def event(event_id: str, at: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "event", "event": {"id": event_id, "type": "call.ended"}}
    if at is not None:
        record["at"] = at
    return record


def test_loading_keeps_unfinished_events_and_the_window_and_forgets_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    settled = {
        "kind": "settled",
        "event_id": "open",
        "workflow": "w",
        "action": "a",
        "outcome": "delivered",
        "result": {"id": 1},
    }
    write_json_lines(
        path,
        [
            event("old", NOW - 2 * DAY),
            {"kind": "done", "event_id": "old"},
            event("open", NOW - 3 * DAY),  # unfinished: kept whatever its age
            settled,
            event("recent", NOW - 3600),
            {"kind": "workflow_done", "event_id": "recent", "workflow": "w"},
            {"kind": "done", "event_id": "recent"},
            event("legacy", None),  # written before records had times: seen now
            {"kind": "done", "event_id": "legacy"},
        ],
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "done", "event_')  # torn by a crash
    automations = Automations([], journal=Journal(path), clock=FakeClock())
    assert read_json_lines(path) == [
        event("open", NOW - 3 * DAY),
        settled,
        {"kind": "seen", "event_id": "recent", "at": NOW - 3600},
        {"kind": "seen", "event_id": "legacy", "at": NOW},
    ]

    async def feed() -> list[bool]:
        ids = ["old", "open", "recent", "legacy", "new"]
        return [(await automations.dispatch({"id": i, "type": "x"})).duplicate for i in ids]

    assert asyncio.run(feed()) == [False, True, True, True, False]


def test_the_journal_stays_bounded_while_duplicates_inside_the_window_are_still_caught(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    clock = FakeClock()
    settings = DeliverySettings(dedup_window=DAY)
    automations = Automations(
        [], settings=settings, journal=Journal(path, compact_after=50), clock=clock
    )

    async def run() -> list[int]:
        sizes = []
        for number in range(600):
            clock.current += 3600  # one event an hour: 24 inside the window at any time
            result = await automations.dispatch({"id": f"e{number}", "type": "x"})
            assert not result.duplicate
            sizes.append(len(path.read_text(encoding="utf-8").splitlines()))
        again = [
            (await automations.dispatch({"id": f"e{n}", "type": "x"})).duplicate
            for n in (599, 577, 500)
        ]
        assert again == [True, True, False]  # 0 h, 22 h and 99 h ago
        return sizes

    sizes = asyncio.run(run())
    assert max(sizes) <= 50 + 2 * 24 + 2  # appended since the last compaction, plus what it kept
    automations.close_journal()  # one writer per journal: the restart takes it over
    later = Automations([], settings=settings, journal=Journal(path), clock=clock)

    async def after_restart() -> list[bool]:
        ids = ["e599", "e580", "e560"]
        return [(await later.dispatch({"id": i, "type": "x"})).duplicate for i in ids]

    assert asyncio.run(after_restart()) == [True, True, False]


def test_a_summary_counts_an_event_accepted_again_after_its_window_once() -> None:
    records = [
        event("e", NOW - 3 * DAY),
        {"kind": "done", "event_id": "e"},
        event("e", NOW - 60),
    ]
    state = summarize(records, NOW, DAY)
    assert state.unfinished == {"e": [event("e", NOW - 60)]}
    assert state.seen == {"e": NOW}  # unfinished: a duplicate until it is done


def test_a_crash_while_compacting_leaves_a_whole_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write_json_lines(path, [event("a", NOW), {"kind": "done", "event_id": "a"}])
    (tmp_path / "journal.jsonl.compacting").write_text('{"kind": "seen", "ev', encoding="utf-8")
    Automations([], journal=Journal(path), clock=FakeClock())  # the stale partial file is replaced
    assert read_json_lines(path) == [{"kind": "seen", "event_id": "a", "at": NOW}]
    assert not (tmp_path / "journal.jsonl.compacting").exists()
