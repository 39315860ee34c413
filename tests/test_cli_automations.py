"""`flowlang automate` and `flowlang replay` on the examples, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import cli, stored_dead_letters

EXAMPLES = Path(__file__).parent.parent / "examples" / "workflows"
WORKFLOWS = [str(path) for path in sorted(EXAMPLES.glob("*.yaml"))]
EVENTS = str(EXAMPLES / "data" / "events.jsonl")
RESPONSES = str(EXAMPLES / "data" / "responses.yaml")
SECRETS = {
    "CRM_BASIC": "crm-basic-9f2c",
    "SMS_KEY_ID": "sms-id-41aa",
    "SMS_KEY_SECRET": "sms-secret-77bd",
    "SLACK_TOKEN": "xoxb-slack-5e1f",
    "SPEECH_API_KEY": "speech-key-90c3",
    "CRM_TOKEN": "crm-token-2d8e",
}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"FLOWLANG_SECRET_{name}", value)


def automate(
    tmp: Path, *workflows: str, events: str = EVENTS, responses: str = RESPONSES, stdin: str = ""
) -> tuple[int, str]:
    """Run `flowlang automate` with its store in ``tmp``."""
    return cli(
        "automate",
        *workflows,
        "--events",
        events,
        "--responses",
        responses,
        "--store",
        str(tmp / "store.db"),
        stdin=stdin,
    )


def test_automate_examples_offline(tmp_path: Path) -> None:
    status, out = automate(tmp_path, *WORKFLOWS)
    assert status == 1  # a dead letter was written
    assert (
        "events 7, duplicates 1, matched 5; actions delivered 8 (retried 0), dead-lettered 1, skipped 2"
        in out
    )
    assert "value of 'call.waited' is not a number: 'n/a'" in out
    [record] = stored_dead_letters(tmp_path / "store.db")
    dead = json.dumps(record)
    assert record["action"] == "log_in_crm" and record["then"] == ["text_back", "tell_team"]
    assert not any(value in out + dead for value in SECRETS.values())


def test_events_seen_before_are_not_run_again(tmp_path: Path) -> None:
    automate(tmp_path, *WORKFLOWS)
    status, out = automate(tmp_path, *WORKFLOWS)  # the same stream, fed again
    assert status == 0
    assert "events 7, duplicates 7, matched 0; actions delivered 0" in out


def test_retries_run_in_simulated_time_offline(tmp_path: Path) -> None:
    responses = tmp_path / "responses.yaml"
    responses.write_text(
        "- request: POST https://slack.com/api/chat.postMessage\n  status: 503\n  body: {}\n"
    )
    events = '{"id": "v1", "type": "contact.updated", "properties": {"name": "Cid", "tags": ["Vip"], "changes": {"tags": ["Vip"]}}}\n'
    status, out = automate(
        tmp_path,
        str(EXAMPLES / "vip_contact_updated.yaml"),
        events="-",
        responses=str(responses),
        stdin=events,
    )
    assert status == 1
    assert "dead-lettered 1" in out
    waited = float(out.split("; waited ")[1].split("s of simulated time")[0].replace(",", ""))
    planned = sum((5, 300, 1800, 7200, 18000, 36000, 36000))
    assert 0.9 * planned <= waited <= 1.1 * planned


def test_replay_delivers_and_empties_the_file(tmp_path: Path) -> None:
    """Exported as JSON lines, fixed, replayed from the file; imported into a store and
    replayed from it: both delivered, both left empty."""
    automate(tmp_path, *WORKFLOWS)
    dead, store = tmp_path / "dead.jsonl", tmp_path / "store.db"
    assert cli("deadletters", "export", str(store), "-o", str(dead)) == (0, "")
    record = json.loads(dead.read_text())
    record["event"]["properties"]["waiting_time"] = 61  # the data was fixed upstream
    dead.write_text(json.dumps(record) + "\n")
    fixed = tmp_path / "fixed.db"
    assert cli("deadletters", "import", str(fixed), str(dead))[0] == 0
    for replayed in (dead, fixed):
        status, out = cli("replay", str(replayed), "--responses", RESPONSES)
        assert (status, out) == (
            0,
            "replayed 1 records: delivered 3, dead-lettered again 0, skipped 0\n",
        )
    assert dead.read_text() == "" and stored_dead_letters(fixed) == []


def test_replay_keeps_what_fails_again(tmp_path: Path) -> None:
    automate(tmp_path, *WORKFLOWS)
    store = tmp_path / "store.db"
    [before] = stored_dead_letters(store)
    status, out = cli("replay", str(store), "--responses", RESPONSES)
    assert status == 1 and "dead-lettered again 1" in out
    [after] = stored_dead_letters(store)
    assert after["idempotency_key"] == before["idempotency_key"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ('{"id": 1, "type": "x"}\n', "<stdin>:1: an event is an object with an id and a type"),
        ('{"id": "a", "type": \n', "<stdin>:1:21: invalid JSON"),
    ],
)
def test_bad_event_lines_name_the_line(
    tmp_path: Path, events: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = automate(tmp_path, WORKFLOWS[0], events="-", stdin=events)
    assert status == 2 and message in capsys.readouterr().err
