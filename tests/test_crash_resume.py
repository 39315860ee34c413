"""Nothing lost: a killed `flowlang automate` is resumed from its journal by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trustme
from servers import serve

WORKFLOW = """
workflow: three-steps
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "http://127.0.0.1:{port}/script/first", timeout: 20s}
  - {name: second, type: api_request, endpoint: "http://127.0.0.1:{port}/script/second", timeout: 20s}
  - {name: third, type: api_request, endpoint: "http://127.0.0.1:{port}/script/third", timeout: 20s}
"""
EVENTS = (
    '{"id": "evt-1", "type": "call.ended", "properties": {}}\n'
    '{"id": "evt-2", "type": "call.ended", "properties": {}}\n'
)


def _command(tmp: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flowlang.cli",
        "automate",
        str(tmp / "wf.yaml"),
        "--events",
        str(tmp / "events.jsonl"),
        "--journal",
        str(tmp / "journal.jsonl"),
        "--dead-letter",
        str(tmp / "dead.jsonl"),
        "--allow-host",
        "127.0.0.1",
        "--concurrency",
        "1",
    ]


def _keys(requests: list[dict[str, Any]], name: str) -> list[str]:
    return [r["headers"]["idempotency-key"] for r in requests if r["path"] == f"/script/{name}"]


def test_a_killed_run_resumes_without_losing_or_repeating_actions(tmp_path: Path) -> None:
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(EVENTS)
        server.received.script(
            "second", (0, {}, {})
        )  # the first run hangs on evt-1's second action
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_SECRET_")}
        first = subprocess.Popen(
            _command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean
        )
        deadline = time.monotonic() + 30
        while not _keys(server.received.requests, "second") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _keys(server.received.requests, "second"), (
            "the first run never reached the second action"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        first.stdout.close()  # type: ignore[union-attr]
        first.stderr.close()  # type: ignore[union-attr]
        hung_key = _keys(server.received.requests, "second")[0]

        second = subprocess.run(
            _command(tmp_path), capture_output=True, text=True, timeout=60, env=clean
        )

    assert second.returncode == 0, second.stderr
    assert "resumed 1 unfinished event" in second.stdout
    assert (
        "events 3, duplicates 1, matched 2; actions delivered 5 (retried 0), dead-lettered 0"
        in second.stdout
    )
    requests = server.received.requests
    first_keys, second_keys, third_keys = (
        _keys(requests, name) for name in ("first", "second", "third")
    )
    assert (
        len(first_keys) == 2 == len(set(first_keys))
    )  # evt-1 once (not repeated after the crash), evt-2 once
    assert second_keys.count(hung_key) == 2  # the interrupted attempt, retried with the same key
    assert len(third_keys) == 2
