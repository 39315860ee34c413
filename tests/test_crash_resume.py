"""Nothing lost: a killed `flowlang automate` is resumed from its store by the next run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trustme
from servers import serve
from support import kill_group, run_automate, start_automate, wait_for

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


def _keys(requests: list[dict[str, Any]], name: str) -> list[str]:
    return [r["headers"]["idempotency-key"] for r in requests if r["path"] == f"/script/{name}"]


def test_a_killed_run_resumes_without_losing_or_repeating_actions(tmp_path: Path) -> None:
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(EVENTS)
        server.received.script(
            "second", (0, {}, {})
        )  # the first run hangs on evt-1's second action
        first = start_automate(tmp_path)
        try:
            wait_for(
                lambda: bool(_keys(server.received.requests, "second")),
                why="the first run never reached the second action",
            )
        finally:
            kill_group(first)
        hung_key = _keys(server.received.requests, "second")[0]

        second = run_automate(tmp_path)

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
