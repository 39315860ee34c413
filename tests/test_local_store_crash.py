"""Crashes and concurrency of ``flowlang automate`` on one store, against a loopback receiver
that counts Idempotency-Key: two processes at once send nothing twice; SIGKILL at seeded
random points, then a rerun, loses nothing (repeats only with the same key)."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import trustme
from servers import Received, serve
from support import (
    automate_command,
    clean_env,
    kill_group,
    start_automate,
    stored_dead_letters,
    wait_for,
)

from flowlang.cli.automate_console import TAKEOVER_INTERVAL

WORKFLOW = """
workflow: two
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "http://127.0.0.1:{port}/script/<<event.id>>-first"}
  - {name: second, type: api_request, endpoint: "http://127.0.0.1:{port}/script/<<event.id>>-second"}
"""


def _files(tmp: Path, port: int, events: int) -> None:
    (tmp / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(port)))
    lines = [{"id": f"evt-{n}", "type": "call.ended", "properties": {}} for n in range(events)]
    (tmp / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _command(tmp: Path) -> list[str]:
    return automate_command(tmp, "-q", concurrency=4)


def _start(tmp: Path) -> subprocess.Popen[bytes]:
    return start_automate(tmp, "-q", concurrency=4, stderr=subprocess.PIPE)


def _tally(received: Received, events: int) -> dict[str, int]:
    """events, deliveries expected, delivered, repeats, lost; and keys per action."""
    by_action: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for request in list(received.requests):
        name = request["path"].removeprefix("/script/")
        by_action.setdefault(name, set()).add(request["headers"]["idempotency-key"])
        counts[name] += 1
    expected = {f"evt-{n}-{action}" for n in range(events) for action in ("first", "second")}
    assert all(len(keys) == 1 for keys in by_action.values()), "an action with two keys"
    keys = [next(iter(k)) for k in by_action.values()]
    assert len(set(keys)) == len(keys), "two actions with one key"
    return {
        "events": events,
        "expected": len(expected),
        "delivered": len(expected & set(counts)),
        "repeats": sum(count - 1 for count in counts.values()),
        "lost": len(expected - set(counts)),
    }


def test_two_processes_on_one_store_with_the_same_events_send_nothing_twice(
    tmp_path: Path,
) -> None:
    events = 150
    with serve(trustme.CA(), tls=False) as server:
        _files(tmp_path, server.port, events)
        processes = [_start(tmp_path), _start(tmp_path)]
        try:
            for process in processes:
                assert process.wait(timeout=120) == 0, (
                    process.stderr.read() if process.stderr else ""
                )
        finally:
            for process in processes:
                if process.poll() is None:
                    kill_group(process)
                if process.stderr is not None:
                    process.stderr.close()
        figures = _tally(server.received, events)
    print(f"two processes: {figures}")
    assert figures == {"events": events, "expected": 300, "delivered": 300, "repeats": 0, "lost": 0}


def test_sigkill_at_random_points_and_a_rerun_lose_nothing(tmp_path: Path) -> None:
    events = 300
    chance = random.Random(20261206)
    points = [chance.uniform(0.3, 1.6) for _ in range(5)]
    with serve(trustme.CA(), tls=False) as server:
        _files(tmp_path, server.port, events)
        for point in points:
            process = _start(tmp_path)
            try:
                time.sleep(point)
            finally:
                kill_group(process)
                if process.stderr is not None:
                    process.stderr.close()
        final = subprocess.run(
            _command(tmp_path), capture_output=True, text=True, timeout=180, env=clean_env()
        )
        assert final.returncode == 0, final.stderr
        figures = _tally(server.received, events)
    print(f"SIGKILL at {[round(p, 2) for p in points]} s, then a rerun: {figures}")
    assert figures["delivered"] == figures["expected"] == 2 * events and figures["lost"] == 0
    assert stored_dead_letters(tmp_path / "store.db") == []
    assert figures["repeats"] <= 4 * len(points)  # at most the actions in flight at each kill


def test_a_running_automate_takes_over_the_events_of_one_that_died(tmp_path: Path) -> None:
    """A holds evt-0 in flight and is killed; B, already running on the same store (its
    events from a pipe that stays open), takes evt-0 over within TAKEOVER_INTERVAL and
    finishes it with the same key."""
    with serve(trustme.CA(), tls=False) as server:
        _files(tmp_path, server.port, 1)
        server.received.script("evt-0-first", (0, {}, {}))  # A's attempt never ends
        first = _start(tmp_path)
        wait_for(lambda: any(r["path"] == "/script/evt-0-first" for r in server.received.requests))
        command = _command(tmp_path)
        command[command.index("--events") + 1] = "-"
        second = subprocess.Popen(
            [*command[:-1]],  # not -q: its notes say what it resumed
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: any(r["path"] == "/script/evt-0-first" for r in server.received.requests)
            )
            assert second.stdin is not None
            second.stdin.write(b'{"id": "evt-1", "type": "call.ended", "properties": {}}\n')
            second.stdin.flush()  # B runs (its start's look for orphans is behind it)
            wait_for(
                lambda: any(r["path"] == "/script/evt-1-second" for r in server.received.requests)
            )
            kill_group(first)
            started = time.monotonic()
            wait_for(
                lambda: any(r["path"] == "/script/evt-0-second" for r in server.received.requests),
                seconds=TAKEOVER_INTERVAL + 20,
                why="B never took evt-0 over",
            )
            took = time.monotonic() - started
            second.stdin.close()  # the end of B's stream
            second.wait(timeout=60)
            assert second.stdout is not None and second.stderr is not None
            out, err = second.stdout.read(), second.stderr.read()
        finally:
            for process in (first, second):
                if process.poll() is None:
                    kill_group(process)
            for stream in (first.stderr, second.stdout, second.stderr):
                if stream is not None:
                    stream.close()
        figures = _tally(server.received, 2)
    assert second.returncode == 0, err
    assert b"resumed 1 unfinished event" in out, (out, err)
    assert took <= TAKEOVER_INTERVAL + 15
    assert figures == {"events": 2, "expected": 4, "delivered": 4, "repeats": 1, "lost": 0}
