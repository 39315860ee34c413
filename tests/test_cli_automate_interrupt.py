"""Ctrl-C during `flowlang automate` and `replay`: a short message saying what is safe, exit
130, and nothing lost: the same command, run again, delivers every action, each with the same
idempotency key as before (real processes, SIGINT, a loopback server)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trustme
from servers import Received, serve
from support import automate_argv, clean_env, stored_dead_letters, wait_for

WORKFLOW = """
workflow: two
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "http://127.0.0.1:{port}/script/<<event.id>>-first", timeout: 20s}
  - {name: second, type: api_request, endpoint: "http://127.0.0.1:{port}/script/<<event.id>>-second", timeout: 20s}
"""
EVENTS = "".join(
    json.dumps({"id": f"evt-{n}", "type": "call.ended", "properties": {}}) + "\n"
    for n in range(1, 7)
)


def _requests(received: Received) -> Counter[str]:
    return Counter(r["path"].removeprefix("/script/") for r in received.requests)


def _keys(received: Received, name: str) -> set[str]:
    return {
        r["headers"]["idempotency-key"] for r in received.requests if r["path"] == f"/script/{name}"
    }


def _start(argv: list[str], stdin: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        start_new_session=True,
    )


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs, wait for it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with suppress(OSError):
                stream.close()


def _interrupt(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """SIGINT, then wait (bounded) for the process to end: its status, stdout and stderr."""
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("source", ["file", "open-pipe"])
def test_ctrl_c_keeps_the_store_and_the_same_command_resumes_it(
    tmp_path: Path, source: str
) -> None:
    """Three events at once: evt-1 waits for a retry (Retry-After: 120, recorded in the store),
    evt-2 and evt-4 hang in flight, evt-3 is delivered, evt-5 and evt-6 are read but wait for a
    slot. After Ctrl-C (and the retry's wait), the same command delivers every action; each action that reached the server is sent again
    only when its attempt had not finished, and always with its key."""
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(EVENTS)
        server.received.script("evt-1-first", (503, {"Retry-After": "120"}, {}))
        server.received.script("evt-2-first", (0, {}, {}))
        server.received.script("evt-4-first", (0, {}, {}))
        argv = [
            *automate_argv(tmp_path, responses=False),
            "--allow-host",
            "127.0.0.1",
            "--concurrency",
            "3",
            "-v",
        ]
        if source == "open-pipe":
            argv[argv.index("--events") + 1] = "-"
        first = _start(argv, subprocess.PIPE if source == "open-pipe" else subprocess.DEVNULL)
        try:
            if first.stdin is not None:
                first.stdin.write(EVENTS.encode())  # and the pipe stays open
                first.stdin.flush()
            wanted = ("evt-1-first", "evt-2-first", "evt-3-second", "evt-4-first")
            wait_for(
                lambda: all(_requests(server.received)[name] for name in wanted),
                why=f"the first run never got going: {_requests(server.received)}",
            )
            status, _, err = _interrupt(first)
        finally:
            _reap(first)
        store = tmp_path / "store.db"
        assert status == 130, err
        assert err.endswith(
            f"flowlang: interrupted; store kept at {store}: rerun the same command to resume\n"
        ), err
        assert "Traceback" not in err
        assert "evt-1 two/first: attempt 1 retry (HTTP 503); next attempt in 120s" in err
        # Waiting is data: the rerun would wait what remains of the 120 s; time passes here.
        with contextlib.closing(sqlite3.connect(store)) as db:
            [(number, due)] = db.execute("SELECT number, due FROM retries").fetchall()
            assert number == 2 and due > time.time() + 100
            db.execute("UPDATE retries SET due = 0")
            db.commit()

        second = subprocess.run(
            [sys.executable, "-m", "flowlang.cli", *argv],
            input=EVENTS.encode() if source == "open-pipe" else None,
            capture_output=True,
            timeout=120,
            env=clean_env(),
        )
        out = second.stdout.decode()
        assert second.returncode == 0, second.stderr.decode()
        assert "resumed 5 unfinished events" in out
        assert (
            "events 11, duplicates 6, matched 5; actions delivered 10 (retried 1)" in out
        )  # attempt 2

        sent = _requests(server.received)
        assert sent == {
            # an attempt that had not finished is sent again
            "evt-1-first": 2,
            "evt-2-first": 2,
            "evt-4-first": 2,
            # whatever was delivered is not
            "evt-1-second": 1,
            "evt-2-second": 1,
            "evt-3-first": 1,
            "evt-3-second": 1,
            "evt-4-second": 1,
            "evt-5-first": 1,
            "evt-5-second": 1,
            "evt-6-first": 1,
            "evt-6-second": 1,
        }
        for name in sent:
            assert len(_keys(server.received, name)) == 1, name  # one key per action


def test_ctrl_c_during_replay_keeps_the_dead_letters(tmp_path: Path) -> None:
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(EVENTS[: EVENTS.index("evt-4") - 8])
        for number in (1, 2, 3):
            server.received.script(f"evt-{number}-first", (404, {}, {}))
        argv = [*automate_argv(tmp_path, responses=False), "--allow-host", "127.0.0.1"]
        made = subprocess.run(
            [sys.executable, "-m", "flowlang.cli", *argv],
            capture_output=True,
            timeout=120,
            env=clean_env(),
        )
        assert made.returncode == 1, made.stderr.decode()
        dead = tmp_path / "store.db"
        assert len(stored_dead_letters(dead)) == 3

        # Dead letters are written as events finish (concurrently): replay takes them in the
        # store's order and hangs on the second record, whichever event it is.
        order = [record["event"]["id"] for record in stored_dead_letters(dead)]
        assert sorted(order) == ["evt-1", "evt-2", "evt-3"]
        hung = order[1]
        server.received.script(f"{hung}-first", (0, {}, {}))
        replay = ["replay", str(dead), "--allow-host", "127.0.0.1"]
        first = _start(replay, subprocess.DEVNULL)
        try:
            wait_for(lambda: _requests(server.received)[f"{hung}-first"] == 2, why="no replay")
            status, _, err = _interrupt(first)
        finally:
            _reap(first)
        assert status == 130, err
        assert err == (
            f"flowlang: interrupted; dead letters kept in {dead}: rerun the same command to "
            "resume\n"
        )
        left = [record["event"]["id"] for record in stored_dead_letters(dead)]
        assert left == order[1:]  # the first record was replayed and left the store

        second = subprocess.run(
            [sys.executable, "-m", "flowlang.cli", *replay],
            capture_output=True,
            timeout=120,
            env=clean_env(),
        )
        assert second.returncode == 0, second.stderr.decode()
        assert stored_dead_letters(dead) == []
        sent = _requests(server.received)
        expected = {f"{event}-{action}": 1 for event in order for action in ("first", "second")}
        for event in order:
            expected[f"{event}-first"] = 3 if event == hung else 2  # 404, (hang,) then delivered
        assert sent == expected
        for name in sent:
            assert len(_keys(server.received, name)) == 1, name
