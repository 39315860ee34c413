"""`flowlang run` and `flowlang check` on the examples, offline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from flowlang.cli import main

FLOWS = Path(__file__).parent.parent / "examples" / "flows"


def cli(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), stdout=out, stdin=io.StringIO(stdin))
    return status, out.getvalue()


def example(name: str) -> list[str]:
    return [
        str(FLOWS / f"{name}.yaml"),
        "--context",
        str(FLOWS / "data" / f"{name}.context.json"),
        "--responses",
        str(FLOWS / "data" / f"{name}.responses.yaml"),
    ]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRM_TOKEN", "BILLING_TOKEN", "CALENDAR_KEY"):
        monkeypatch.setenv(f"FLOWLANG_SECRET_{name}", f"secret-{name.lower()}")


def test_run_shows_steps_branches_requests_and_the_host() -> None:
    status, out = cli("run", *example("vip_routing"))
    assert status == 0
    assert (
        "lookup         http_request        success  GET https://crm.example.com/api/contacts?phone=%2B14155550100 -> 200"
        in out
    )
    assert "Authorization: Bearer [redacted]" in out and "secret-crm_token" not in out
    assert "why: 'gold' equals 'gold'" in out
    assert "host <- transfer(target='queue:vip')" in out
    assert out.rstrip().endswith("result: ended by a call-control step")


def test_run_with_input_and_background_request() -> None:
    status, out = cli("run", *example("account_verification"), "--input", "ask_account=12345678#")
    assert status == 0
    assert "host <- say(text='Your balance is 42.5 dollars, due on 2026-12-01.')" in out
    assert "background log_call: success (201)" in out


def test_run_stops_where_input_is_needed() -> None:
    status, out = cli("run", *example("account_verification"))
    assert status == 0
    assert "waiting for input at step 'ask_account'" in out


def test_run_interactive_reads_digits_from_the_terminal() -> None:
    status, out = cli("run", *example("account_verification"), "--interactive", stdin="99\n")
    assert status == 0
    assert "caller hears: Please enter your eight digit account number" in out
    assert "invalid_number" in out and "queue:billing" in out


def test_run_json_lines() -> None:
    saturday_night = "2026-11-21T22:15:00+01:00"  # the office is closed
    status, out = cli("run", *example("after_hours"), "--json", "--now", saturday_night)
    events = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [event["step"] for event in events if event["event"] == "step"] == [
        "hours",
        "on_call",
        "decide",
        "closed_message",
        "voicemail",
    ]
    assert events[-1] == {"event": "result", "status": "ended", "error": None, "awaiting": None}
    assert "secret-calendar_key" not in out


def test_run_refuses_an_invalid_flow_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi, next: b}\n")
    assert cli("run", str(bad))[0] == 2
    assert "bad.yaml:4:34 (step 'a', field 'next')" in capsys.readouterr().err


def test_check_passes_the_examples() -> None:
    files = [
        str(path)
        for path in sorted(FLOWS.glob("*.yaml"))
        if not path.name.endswith(".responses.yaml")
    ]
    status, out = cli("check", *files)
    assert (status, out) == (0, f"{len(files)} files checked: 0 errors, 0 warnings\n")


def test_check_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow: t\nstart: a\nsteps:\n"
        "  a: {type: say, text: 'Hi <<contact.name', next: b}\n"
        "  b: {type: say, text: '<<input.c.value>>'}\n"
        "  c: {type: hangup}\n"
    )
    status, out = cli("check", str(bad))
    assert status == 1
    assert "bad.yaml:4:28 (step 'a', field 'text')" in out
    assert "expected '>>' to close the expression opened here" in out
    # the fault in a's text hides nothing beyond it: b's read and c's place are checked too
    assert "bad.yaml:5:27 (step 'b', field 'text')" in out
    assert "step 'c' is a hangup step, which takes no input" in out
    assert "step 'c' is unreachable from the start step 'a'" in out
    assert out.index("bad.yaml:4:28") < out.index("bad.yaml:5:27") < out.index("bad.yaml:6:3")
    assert out.rstrip().endswith("1 file checked: 3 errors, 0 warnings")
