"""`flowlang automate` and `replay`: the exit-code contract, `--json` lines, -q and -v, --help."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import automate_argv, cli, stored_dead_letters

from flowlang.automations.store import LocalStore
from flowlang.automations.workflow import CompiledWorkflow
from flowlang.cli import _parser, main

WORKFLOW = """
workflow: two
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "https://crm.example.com/first", stop_on_failure: false}
  - {name: second, type: api_request, endpoint: "https://crm.example.com/second"}
"""
OK = (
    "- {request: POST https://crm.example.com/first, status: 200, body: {}}\n"
    "- {request: POST https://crm.example.com/second, status: 200, body: {}}\n"
)
FIRST_FAILS = OK.replace("first, status: 200", "first, status: 404")


def call(number: int) -> str:
    return json.dumps({"id": f"evt-{number}", "type": "call.ended", "properties": {}}) + "\n"


def setup(
    tmp: Path, *, responses: str = OK, events: str = call(1) + call(2), workflow: str = WORKFLOW
) -> None:
    (tmp / "wf.yaml").write_text(workflow)
    (tmp / "responses.yaml").write_text(responses)
    (tmp / "events.jsonl").write_text(events)


def run(tmp: Path, *extra: str) -> tuple[int, str]:
    return cli(*automate_argv(tmp), *extra)


# --- the exit-code contract, row by row ----------------------------------------------------


def test_exit_0_when_every_action_is_delivered(tmp_path: Path) -> None:
    setup(tmp_path)
    status, out = run(tmp_path)
    assert status == 0, out
    assert "actions delivered 4 (retried 0), dead-lettered 0" in out


def test_exit_1_when_a_dead_letter_is_written(tmp_path: Path) -> None:
    setup(tmp_path, responses=FIRST_FAILS)
    status, out = run(tmp_path)
    assert status == 1
    assert "dead-lettered 2" in out and "evt-1 two/first: dead_lettered (HTTP 404)" in out
    assert len(stored_dead_letters(tmp_path / "store.db")) == 2


def test_exit_1_when_an_event_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def matches(self: CompiledWorkflow, event: Any) -> bool:
        raise RecursionError("hostile")

    monkeypatch.setattr(CompiledWorkflow, "matches", matches)
    setup(tmp_path, events=call(1))
    status, _ = run(tmp_path)
    assert status == 1
    assert "its conditions failed: RecursionError" in capsys.readouterr().err


def test_exit_1_when_a_dead_letter_cannot_be_written(tmp_path: Path) -> None:
    """The store refuses dead letters (a trigger stands in for a full disk): the action stays
    unsettled, and the next run, with the store fixed, dead-letters it."""
    setup(tmp_path, responses=FIRST_FAILS, events=call(1))
    store = tmp_path / "store.db"
    LocalStore(store).close()
    with contextlib.closing(sqlite3.connect(store)) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON dead BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()
    status, out = cli(*automate_argv(tmp_path))
    assert status == 1 and "unsaved" in out
    with contextlib.closing(sqlite3.connect(store)) as db:
        db.execute("DROP TRIGGER full")
        db.commit()
    status, out = cli(*automate_argv(tmp_path))
    assert status == 1 and "resumed 1 unfinished event" in out
    assert len(stored_dead_letters(store)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workflow": "workflow: x\ntrigger: call.ended\nactions: []\n"}, "expected a list"),
        ({"workflow": "workflow: [\n"}, "invalid YAML"),
        ({"events": '{"id": "evt-1", "type": \n'}, "events.jsonl:1:25: invalid JSON"),
        ({"events": b"\xff\xfe\n"}, "events.jsonl:1: not UTF-8"),
        ({"events": '{"id": 7, "type": "call.ended"}\n'}, "an event is an object with an id"),
    ],
    ids=["invalid-workflow", "workflow-not-yaml", "event-not-json", "event-not-utf8", "no-id"],
)
def test_exit_2_for_unusable_input(
    tmp_path: Path, change: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(tmp_path)
    if "workflow" in change:
        (tmp_path / "wf.yaml").write_text(change["workflow"])
    events = change.get("events")
    if isinstance(events, bytes):
        (tmp_path / "events.jsonl").write_bytes(events)
    elif events is not None:
        (tmp_path / "events.jsonl").write_text(events)
    status, _ = run(tmp_path)
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["automate", "missing.yaml", "--events", "e.jsonl"], "cannot read missing.yaml"),
        (["automate", "{wf}", "--events", "{tmp}/none.jsonl"], "cannot read events file"),
        (["automate", "{wf}", "--events", "-", "--ca-file", "{tmp}/none.pem"], "none.pem"),
        (["replay", "{tmp}/none.jsonl"], "does not exist"),
        (["replay", "{tmp}/dead.jsonl", "--ca-file", "{tmp}/wf.yaml"], "is unusable"),
    ],
    ids=["no-workflow", "no-events", "automate-bad-ca", "no-dead-letters", "replay-bad-ca"],
)
def test_exit_2_for_unreadable_files(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(tmp_path)
    (tmp_path / "dead.jsonl").write_text("")
    filled = [
        part.replace("{wf}", str(tmp_path / "wf.yaml")).replace("{tmp}", str(tmp_path))
        for part in argv
    ]
    if filled[0] == "automate":
        filled += ["--store", str(tmp_path / "s.db")]
    status, _ = cli(*filled)
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "s.db").exists()  # refused before any work


@pytest.mark.parametrize(
    "argv",
    [
        ["automate", "wf.yaml"],
        ["automate", "--events", "-"],
        ["automate", "wf.yaml", "--events", "-", "-q", "-v"],
        ["automate", "wf.yaml", "--events", "-", "--concurrency", "many"],
        ["automate", "wf.yaml", "--events", "-", "--concurrency", "0"],
        ["automate", "wf.yaml", "--events", "-", "--concurrency", "-5"],
        ["automate", "wf.yaml", "--events", "-", "--concurrency", "99999999999999999999"],
    ],
    ids=[
        "no-events",
        "no-workflow",
        "quiet-and-verbose",
        "concurrency-not-a-number",
        "concurrency-zero",
        "concurrency-negative",
        "concurrency-huge",
    ],
)
def test_exit_2_for_bad_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "usage: flowlang automate" in capsys.readouterr().err


def test_replay_exit_0_then_1_while_records_remain(tmp_path: Path) -> None:
    setup(tmp_path, responses=FIRST_FAILS)
    assert run(tmp_path)[0] == 1
    dead = tmp_path / "store.db"
    status, out = cli("replay", str(dead), "--responses", str(tmp_path / "responses.yaml"))
    assert status == 1 and "dead-lettered again 2" in out  # they stay in the store
    assert len(stored_dead_letters(dead)) == 2
    (tmp_path / "responses.yaml").write_text(OK)
    status, out = cli("replay", str(dead), "--responses", str(tmp_path / "responses.yaml"))
    assert (status, stored_dead_letters(dead)) == (0, [])


def test_replay_exit_1_when_a_line_is_not_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = tmp_path / "dead.jsonl"
    dead.write_text('{"not": "a record"}\n')
    status, _ = cli("replay", str(dead))
    assert status == 1 and "cannot replay" in capsys.readouterr().err
    assert dead.read_text() == '{"not": "a record"}\n'  # it remains


# --- --json: only JSON lines on standard output --------------------------------------------


def test_json_output_is_only_json_lines_with_failures_dead_letters_and_bad_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = CompiledWorkflow.matches

    def matches(self: CompiledWorkflow, event: Any) -> bool:
        if event["id"] == "evt-3":
            raise RecursionError("hostile")
        return bool(original(self, event))

    monkeypatch.setattr(CompiledWorkflow, "matches", matches)
    events = call(1) + "not json\n" + call(2) + call(1) + call(3) + '{"id": "x"}\n' + "\n"
    setup(tmp_path, responses=FIRST_FAILS, events=events)
    status, out = run(tmp_path, "--json")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in out.splitlines()]  # every line parses
    assert all(isinstance(line, dict) for line in lines)
    *event_lines, summary = lines
    assert [line["kind"] for line in event_lines] == ["event"] * 4
    assert sorted(line["event"] for line in event_lines) == ["evt-1", "evt-1", "evt-2", "evt-3"]
    assert summary == {
        "kind": "summary",
        "events": 4,
        "duplicates": 1,
        "matched": 2,
        "delivered": 2,
        "retried": 0,
        "dead_lettered": 2,
        "skipped": 0,
        "unsaved": 0,
        "failed": 1,
        "refused": 2,
        "simulated_wait": 0.0,
        "dead_letter_file": str(tmp_path / "store.db"),
        "exit": 2,
    }
    assert status == 2  # bad lines: unusable input outranks the problems found
    assert "events.jsonl:2:1: invalid JSON" in err and "events.jsonl:6" in err
    assert "dead letters kept in" in err  # notes go to standard error


def test_json_summary_says_exit_0_and_no_dead_letter_file(tmp_path: Path) -> None:
    setup(tmp_path)
    status, out = run(tmp_path, "--json", "-q")
    summary = json.loads(out.splitlines()[-1])
    assert status == 0 and summary["exit"] == 0 and summary["dead_letter_file"] is None
    assert len(out.splitlines()) == 3  # -q leaves the JSON lines as they are


# --- -q and -v -----------------------------------------------------------------------------


def test_quiet_prints_only_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, responses=FIRST_FAILS, events=call(1))
    status, out = run(tmp_path, "-q")
    err = capsys.readouterr().err
    assert status == 1
    assert out == "  evt-1 two/first: dead_lettered (HTTP 404)\n"  # no summary, no notes
    assert err == ""
    setup(tmp_path)
    status, out = cli(*automate_argv(tmp_path, store="s2.db"), "-q")
    assert (status, out) == (0, "")


def test_verbose_shows_each_attempt_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    responses = OK.replace("second, status: 200", "second, status: 503")
    setup(tmp_path, responses=responses, events=call(1))
    status, out = run(tmp_path, "-v")
    err = capsys.readouterr().err
    assert status == 1
    assert "flowlang: evt-1 two/first: attempt 1 delivered\n" in err
    assert "flowlang: evt-1 two/second: attempt 1 retry (HTTP 503); next attempt in " in err
    assert "flowlang: evt-1 two/second: attempt 8 failed (HTTP 503)\n" in err
    assert err.count("two/second: attempt") == 8
    assert "attempt" not in out


# --- --help --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["automate", "replay"])
def test_help_documents_every_option_and_the_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    actions = commands.choices[command]._actions
    assert len(actions) >= 5
    assert [action.dest for action in actions if not action.help] == []
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in text
    if command == "automate":
        assert '{"kind": "summary"' in text and "--ca-file FILE" in text


def test_a_workflow_that_is_not_utf8_exits_2_and_a_dead_letter_line_that_is_not_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(tmp_path)
    (tmp_path / "wf.yaml").write_bytes(WORKFLOW.replace("two", "caf\xe9").encode("latin-1"))
    status, out = run(tmp_path)
    err = capsys.readouterr().err
    assert (status, out) == (2, "") and "not UTF-8" in err and "wf.yaml" in err
    dead = tmp_path / "dead.jsonl"
    dead.write_bytes(b'{"a": "caf\xe9"}\n')
    status, _ = cli("replay", str(dead))
    err = capsys.readouterr().err
    assert status == 1 and f"{dead}:1: not UTF-8" in err  # it remains in the file
    assert dead.read_bytes() == b'{"a": "caf\xe9"}\n'
