"""``flowlang run`` options: ``--input`` answers in order, ``-`` for the flow, ``--json`` with
``--interactive``, ``--syntax cloudtalk``, ``--ca-file`` and ``SSL_CERT_FILE`` against a
loopback HTTPS server, missing secrets on standard error, and colour."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from servers import Server
from support import cli

from flowlang.cli import main

FLOWS = Path(__file__).parent.parent / "examples" / "flows"

#: A collect_input step that asks again after invalid digits (at most three times).
RETRY = """\
flow: retry
start: ask
steps:
  ask:
    type: collect_input
    prompt: Enter four digits
    min_digits: 4
    max_digits: 4
    next: thanks
    on_invalid: again
    on_no_input: other
  again:
    type: say
    text: That was not four digits.
    next: ask
  thanks:
    type: say
    text: Thanks, <<input.ask.value>>.
    next: bye
  other:
    type: collect_input
    prompt: Other
    next: bye
    on_no_input: bye
  bye:
    type: hangup
"""


@pytest.fixture
def retry(tmp_path: Path) -> Path:
    path = tmp_path / "retry.yaml"
    path.write_text(RETRY)
    return path


def test_repeated_inputs_answer_the_prompts_in_order(retry: Path) -> None:
    status, out = cli(
        "run", str(retry), "--input", "ask=1", "--input", "ask=22", "--input", "ask=4321"
    )
    assert status == 0, out
    assert out.count("ask            collect_input       invalid") == 2
    assert "host <- say(text='Thanks, 4321.')" in out
    assert out.rstrip().endswith("result: ended by a call-control step")


def test_unknown_input_step_is_a_usage_error(
    retry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("run", str(retry), "--input", "aks=1234")[0] == 2
    err = capsys.readouterr().err
    assert "--input 'aks': the flow has no step of that name that takes input" in err
    assert "(collect_input and menu steps do; its steps that take input: 'ask', 'other')" in err
    assert cli("run", str(retry), "--input", "again=1")[0] == 2  # a say step, not collect_input
    assert cli("run", str(retry), "--input", "1234")[0] == 2
    assert "--input takes STEP=DIGITS, not '1234'" in capsys.readouterr().err


def test_answers_left_over_wait(retry: Path) -> None:
    """More answers than prompts: the run ends and the rest is unused (not an error)."""
    status, out = cli("run", str(retry), "--input", "ask=1234", "--input", "ask=5678")
    assert status == 0 and "Thanks, 1234." in out


def test_the_flow_from_standard_input(retry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = cli("run", "-", "--input", "ask=1234", stdin=RETRY)
    assert status == 0 and out.startswith("flow retry (<stdin>)")
    assert cli("run", "-", "--context", "-", stdin=RETRY)[0] == 2
    assert "FLOW and --context cannot all read standard input" in capsys.readouterr().err
    assert cli("run", "-", "--interactive", stdin=RETRY)[0] == 2
    assert cli("run", str(retry), "--context", "-", "--interactive", stdin="{}")[0] == 2
    assert (
        cli("run", "-", stdin="flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi, next: b}\n")[0]
        == 2
    )
    assert "<stdin>:4:" in capsys.readouterr().err


def test_json_with_interactive_prompts_on_standard_error(
    retry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    status = main(
        ["run", str(retry), "--json", "--interactive"], stdout=out, stdin=io.StringIO("12\n1234\n")
    )
    assert status == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]  # JSON lines only
    assert events[-1]["event"] == "result" and events[-1]["status"] == "ended"
    err = capsys.readouterr().err
    assert err.count("caller hears: Enter four digits") == 2


def test_cloudtalk_syntax_for_run(tmp_path: Path) -> None:
    flow = tmp_path / "ct.yaml"
    flow.write_text(
        "flow: t\nstart: a\nsteps:\n  a: {type: say, text: 'Hi {{contact.name}} <<x>>', next: b}\n  b: {type: hangup}\n"
    )
    context = tmp_path / "c.json"
    context.write_text('{"contact": {"name": "Ann"}}')
    status, out = cli("run", str(flow), "--syntax", "cloudtalk", "--context", str(context))
    assert status == 0 and "say(text='Hi Ann <<x>>')" in out
    status, out = cli("run", str(flow), "--context", str(context))
    assert status == 0 and "say(text='Hi {{contact.name}} ')" in out


def test_a_missing_secret_is_named_on_standard_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLOWLANG_SECRET_CALENDAR_KEY", raising=False)
    status, out = cli(
        "run",
        str(FLOWS / "after_hours.yaml"),
        "--context",
        str(FLOWS / "data" / "after_hours.context.json"),
        "--responses",
        str(FLOWS / "data" / "after_hours.responses.yaml"),
        "--now",
        "2026-11-21T22:15:00+01:00",  # closed: the on-call service is asked
    )
    assert status == 0
    assert "invalid_request" in out
    assert capsys.readouterr().err == (
        "flowlang: secret 'calendar_key' is not set: "
        "set the environment variable FLOWLANG_SECRET_CALENDAR_KEY\n"
    )


# --- trust --------------------------------------------------------------------------------------


@pytest.fixture
def https_flow(tmp_path: Path, server: Server) -> Path:
    flow = tmp_path / "tls.yaml"
    flow.write_text(
        "flow: tls\nstart: get\nsteps:\n"
        "  get:\n    type: http_request\n"
        f"    endpoint: {server.url('127.0.0.1', '/json')}\n"
        "    method: GET\n    next: bye\n    on_failure: bye\n"
        "  bye: {type: hangup}\n"
    )
    return flow


def run_tls(flow: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    status, out = cli("run", str(flow), "--json", "--allow-host", "127.0.0.1", *extra)
    return status, [json.loads(line) for line in out.splitlines()]


def test_a_private_ca_is_trusted_with_ca_file(
    https_flow: Path, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    status, events = run_tls(https_flow)
    assert status == 0 and events[0]["outcome"] == "tls_error"
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    status, events = run_tls(https_flow, "--ca-file", str(pem))
    assert status == 0 and events[0]["outcome"] == "success", events[0]
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    status, events = run_tls(https_flow)
    assert status == 0 and events[0]["outcome"] == "success", events[0]


@pytest.mark.parametrize(
    "content", [None, b"not a certificate\n", b"\xff\xfe"], ids=["missing", "text", "binary"]
)
def test_an_unusable_ca_file_exits_2(
    content: bytes | None, https_flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = tmp_path / "ca.pem"
    if content is not None:
        pem.write_bytes(content)
    assert cli("run", str(https_flow), "--ca-file", str(pem))[0] == 2
    err = capsys.readouterr().err
    assert f"certificate authority file {pem}" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_ca_file_that_is_not_a_regular_file_exits_2_at_once(
    kind: str, https_flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO without a writer would block the loader forever (found by review)."""
    path = tmp_path / "ca"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    assert cli("run", str(https_flow), "--ca-file", str(path))[0] == 2
    err = capsys.readouterr().err
    assert f"certificate authority file {path}" in err and "Traceback" not in err


# --- colour -------------------------------------------------------------------------------------


def child_env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def flowlang_out(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flowlang.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
        start_new_session=True,
    )
    return result.stdout


def on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """What the command writes to a pseudo-terminal (its standard output and error)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the child is done
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        os.close(leader)
    return seen.decode()


@pytest.fixture
def two_problems(tmp_path: Path) -> list[str]:
    flow = tmp_path / "bad.yaml"
    flow.write_text("flow: t\nstart: a\nsteps:\n  a: {type: say, text: '{{x}}', next: nowhere}\n")
    return ["check", str(flow)]


RUN = [
    "run",
    str(FLOWS / "account_verification.yaml"),
    "--context",
    str(FLOWS / "data" / "account_verification.context.json"),
    "--responses",
    str(FLOWS / "data" / "account_verification.responses.yaml"),
    "--input",
    "ask_account=12345678#",
]


def test_colour_on_a_terminal(two_problems: list[str]) -> None:
    shown = on_a_terminal(two_problems, child_env(TERM="xterm"))
    assert "\x1b[1;31merror\x1b[0m: " in shown
    assert "\x1b[1;33mwarning\x1b[0m: " in shown
    assert "\x1b[1;31m^\x1b[0m" in shown  # the caret is painted
    ran = on_a_terminal(
        RUN,
        child_env(TERM="xterm", FLOWLANG_SECRET_BILLING_TOKEN="t", FLOWLANG_SECRET_CRM_TOKEN="t"),
    )
    assert "\x1b[32msuccess\x1b[0m" in ran
    assert "result: \x1b[32mended by a call-control step\x1b[0m" in ran


@pytest.mark.parametrize(
    ("env", "coloured"),
    [
        ({"TERM": "xterm", "NO_COLOR": "1"}, False),
        ({"TERM": "dumb"}, False),
    ],
    ids=["no-color", "dumb-terminal"],
)
def test_no_colour_on_a_terminal_when_asked(
    env: dict[str, str], coloured: bool, two_problems: list[str]
) -> None:
    shown = on_a_terminal(two_problems, child_env(**env))
    assert "error: next goes to step 'nowhere'" in shown
    assert ("\x1b[" in shown) is coloured


def test_no_colour_when_piped_unless_forced(two_problems: list[str]) -> None:
    assert "\x1b[" not in flowlang_out(two_problems, child_env())
    forced = flowlang_out(two_problems, child_env(FORCE_COLOR="1"))
    assert "\x1b[1;31merror\x1b[0m: " in forced
    assert "\x1b[" not in flowlang_out(two_problems, child_env(FORCE_COLOR="1", NO_COLOR="1"))
    ran = flowlang_out(RUN, child_env(FORCE_COLOR="1", FLOWLANG_SECRET_BILLING_TOKEN="t"))
    assert "result: \x1b[32mended by a call-control step\x1b[0m" in ran
    assert "\x1b[" not in flowlang_out([*RUN, "--json"], child_env(FORCE_COLOR="1"))
    assert "\x1b[" not in flowlang_out(
        [*two_problems, "--format", "json"], child_env(FORCE_COLOR="1")
    )
