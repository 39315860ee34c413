"""`flowlang automate` and `replay` point the SMS, Slack and speech providers at a sandbox or a
regional endpoint: `--sms-url`/`--slack-url`/`--speech-url`, else FLOWLANG_*_URL, else the
provider's own (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import automate_argv, cli, stored_dead_letters

WORKFLOW = """\
workflow: text-and-tell
trigger: call.ended
actions:
  - name: text_back
    type: send_sms
    sender: "+14155550100"
    recipient: "+14155550111"
    text: hello
    auth: {key_id: id, key_secret: secret}
  - name: tell_team
    type: slack_notification
    channel: "#calls"
    text: a call ended
    token: slack
"""
SANDBOX_SMS = "https://sms-sandbox.example.org/v2"
REGIONAL_SLACK = "https://slack-eu.example.net/api"


def _files(tmp: Path, responses: list[dict[str, object]]) -> None:
    (tmp / "wf.yaml").write_text(WORKFLOW)
    (tmp / "events.jsonl").write_text(
        json.dumps({"id": "e1", "type": "call.ended", "properties": {}}) + "\n"
    )
    (tmp / "responses.yaml").write_text(json.dumps(responses))


def _sent_to(tmp: Path, *extra: str) -> tuple[int, list[str]]:
    """Exit status and the outcome of each action, reading the --json lines."""
    status, out = cli(*automate_argv(tmp), "--json", *extra)
    lines = [json.loads(line) for line in out.splitlines()]
    [event] = [line for line in lines if line.get("kind") == "event"]
    return status, [delivery["outcome"] for delivery in event["deliveries"]]


RESPONSES = [
    {"request": f"POST {SANDBOX_SMS}/messages", "status": 201, "body": {"id": "sms-1"}},
    {"request": f"POST {REGIONAL_SLACK}/chat.postMessage", "status": 200, "body": {"ok": True}},
]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("id", "secret", "slack"):
        monkeypatch.setenv(f"FLOWLANG_SECRET_{name.upper()}", f"value-of-{name}-secret")
    for variable in ("FLOWLANG_SMS_URL", "FLOWLANG_SLACK_URL", "FLOWLANG_SPEECH_URL"):
        monkeypatch.delenv(variable, raising=False)


def test_the_options_send_each_provider_to_its_url(tmp_path: Path) -> None:
    _files(tmp_path, RESPONSES)
    status, outcomes = _sent_to(
        tmp_path, "--sms-url", SANDBOX_SMS + "/", "--slack-url", REGIONAL_SLACK
    )
    assert (status, outcomes) == (0, ["delivered", "delivered"])


def test_the_environment_is_used_and_an_option_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _files(tmp_path, RESPONSES)
    monkeypatch.setenv("FLOWLANG_SMS_URL", SANDBOX_SMS)
    monkeypatch.setenv("FLOWLANG_SLACK_URL", "https://slack-us.example.net/api")
    # The environment's Slack URL has no recorded response: that action is not delivered...
    status, outcomes = _sent_to(tmp_path)
    assert status == 1 and outcomes[0] == "delivered" and outcomes[1] != "delivered"
    # ...and the option replaces it.
    (tmp_path / "store.db").unlink()
    assert _sent_to(tmp_path, "--slack-url", REGIONAL_SLACK) == (0, ["delivered", "delivered"])


def test_without_options_or_environment_the_providers_own_urls_are_used(tmp_path: Path) -> None:
    own = [
        {"request": "POST https://sms.example.com/v1/messages", "status": 201, "body": {}},
        {
            "request": "POST https://slack.com/api/chat.postMessage",
            "status": 200,
            "body": {"ok": True},
        },
    ]
    _files(tmp_path, own)
    assert _sent_to(tmp_path) == (0, ["delivered", "delivered"])


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--sms-url", "http://sms.example.org/v1", "https"),
        ("--slack-url", "https://user:pw@slack.example.net/api", "--slack-url"),
        ("--speech-url", "https://speech.example.net/v1?key=x", "without a query"),
        ("--sms-url", "sms.example.org", "--sms-url"),
        ("--sms-url", "https://sms.example.org/<<event.id>>", "template"),
        ("--sms-url", "https://sms.example.org/\x1b[31m", "--sms-url"),
        ("--sms-url", "https://" + "a" * 5000 + ".org", "longer than"),
    ],
)
def test_a_bad_url_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, said: str
) -> None:
    _files(tmp_path, RESPONSES)
    status, out = cli(*automate_argv(tmp_path), option, value)
    err = capsys.readouterr().err
    assert status == 2 and out == ""
    assert option in err and said in err
    assert "\x1b" not in err and "Traceback" not in err
    assert not (tmp_path / "store.db").exists()


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _files(tmp_path, RESPONSES)
    monkeypatch.setenv("FLOWLANG_SLACK_URL", "ftp://slack.example.net")
    status, _ = cli(*automate_argv(tmp_path))
    assert status == 2 and "FLOWLANG_SLACK_URL" in capsys.readouterr().err


def test_plain_http_only_for_an_allowed_host(tmp_path: Path) -> None:
    local = "http://sms.localtest/v1"
    _files(tmp_path, [{"request": f"POST {local}/messages", "status": 201, "body": {}}])
    status, _ = cli(*automate_argv(tmp_path), "--sms-url", local)
    assert status == 2
    status, outcomes = _sent_to(tmp_path, "--sms-url", local, "--allow-host", "sms.localtest")
    assert outcomes[0] == "delivered"


def test_replay_takes_the_options_too(tmp_path: Path) -> None:
    """A dead letter made without a sandbox URL (no recorded answer) is delivered by replay
    with the options, and the action after it runs too."""
    _files(tmp_path, [RESPONSES[1]])
    status, outcomes = _sent_to(tmp_path, "--slack-url", REGIONAL_SLACK)
    assert status == 1 and outcomes == ["dead_lettered", "skipped"]  # actions run in order
    (tmp_path / "responses.yaml").write_text(json.dumps(RESPONSES))
    status, out = cli(
        "replay",
        str(tmp_path / "store.db"),
        "--responses",
        str(tmp_path / "responses.yaml"),
        "--sms-url",
        SANDBOX_SMS,
        "--slack-url",
        REGIONAL_SLACK,
    )
    assert status == 0, out
    assert stored_dead_letters(tmp_path / "store.db") == []
