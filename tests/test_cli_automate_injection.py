"""`flowlang automate` writes one line per record: an event id, a workflow name or a server's
error holding a newline cannot start a line of its own (a forged GitHub `::error` annotation,
say), on standard output or with -v on standard error (found by review)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import automate_argv, cli

WORKFLOW = """\
workflow: "tell\\n::error file=w::WORKFLOW"
trigger: call.ended
actions:
  - name: tell_team
    type: slack_notification
    channel: "#calls"
    text: a call ended
    token: slack
"""
EVENT_ID = "e1\n::error file=a::EVENT"
SLACK_ERROR = "invalid_auth\n::error file=z::SERVER"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLANG_SECRET_SLACK", "value-of-the-slack-secret")
    monkeypatch.delenv("FLOWLANG_SLACK_URL", raising=False)


def test_outside_text_never_starts_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    (tmp_path / "events.jsonl").write_text(
        json.dumps({"id": EVENT_ID, "type": "call.ended", "properties": {}}) + "\n"
    )
    answer = {"ok": False, "error": SLACK_ERROR}
    (tmp_path / "responses.yaml").write_text(
        json.dumps(
            [
                {
                    "request": "POST https://slack.com/api/chat.postMessage",
                    "status": 200,
                    "body": answer,
                }
            ]
        )
    )
    status, out = cli(*automate_argv(tmp_path), "-v")
    err = capsys.readouterr().err
    assert status == 1  # a dead letter
    for line in (out + err).splitlines():
        assert not line.startswith("::"), line
    assert "e1\\x0a::error file=a::EVENT" in out  # shown, escaped, on the record's line
    assert "SERVER" in out and "SERVER" in err
