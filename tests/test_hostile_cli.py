"""Hostile command-line input: endless files and pipes, numbers Python will not read, bytes that
are not UTF-8. The real command runs in a subprocess (on the backend of the test run: the
FLOWLANG_* environment is inherited); every input is bounded by the 4 MiB document limit, so
each case ends quickly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

FLOWS = Path(__file__).parent.parent / "examples" / "flows"
FLOW = str(FLOWS / "account_verification.yaml")
LIMIT = "larger than 4194304 bytes"


def flowlang(
    *argv: str, stdin: int | None = subprocess.DEVNULL, data: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowlang.cli", *argv],
        stdin=None if data is not None else stdin,
        input=data.decode("latin-1") if data is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "/dev/zero"],
        ["run", "/dev/zero"],
        ["eval", "<<a>>", "--context", "/dev/zero"],
        ["run", FLOW, "--context", "/dev/zero"],
        ["run", FLOW, "--responses", "/dev/zero"],
    ],
    ids=["check", "run", "eval-context", "run-context", "run-responses"],
)
def test_endless_files_end_with_a_message_and_status_2(argv: list[str]) -> None:
    result = flowlang(*argv)
    assert result.returncode == 2, result.stderr[-500:]
    assert LIMIT in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_endless_standard_input_is_read_with_the_limit() -> None:
    with open("/dev/zero", "rb") as zeros:
        result = flowlang("eval", "<<a>>", "--context", "-", stdin=zeros.fileno())
    assert result.returncode == 2
    assert f"<stdin>: context is {LIMIT}" in result.stderr


@pytest.fixture
def endless_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO fed with zeros until the reader closes it (10 MB at most)."""
    path = tmp_path / "context.fifo"
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "wb") as pipe:
                for _ in range(160):
                    pipe.write(b"\0" * 65536)
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path
    writer.join(timeout=30)
    assert not writer.is_alive()


def test_an_endless_fifo_is_read_with_the_limit(endless_fifo: Path) -> None:
    result = flowlang("eval", "<<a>>", "--context", str(endless_fifo))
    assert result.returncode == 2
    assert f"context is {LIMIT}" in result.stderr


def test_a_huge_integer_in_the_context_is_a_message(tmp_path: Path) -> None:
    """Python reads at most 4,300 digits into an int; json raised ValueError (a traceback)."""
    context = tmp_path / "context.json"
    context.write_text('{"a": ' + "7" * 5000 + "}")
    result = flowlang("eval", "<<a>>", "--context", str(context))
    assert result.returncode == 2
    assert "a number in the context has 5000 digits, more than 4300" in result.stderr
    assert "Traceback" not in result.stderr
    piped = flowlang("eval", "<<a>>", "--context", "-", data=b'{"a": ' + b"7" * 5000 + b"}")
    assert piped.returncode == 2
    assert "<stdin>: a number in the context has 5000 digits" in piped.stderr


def test_a_context_that_is_not_utf8_is_a_message(tmp_path: Path) -> None:
    context = tmp_path / "context.json"
    context.write_bytes(b'{"a": "caf\xe9"}')
    result = flowlang("eval", "<<a>>", "--context", str(context))
    assert result.returncode == 2
    assert "context is not UTF-8 text (invalid continuation byte at byte 10)" in result.stderr


def test_a_flow_that_is_not_utf8_is_a_message(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_bytes(b"flow: t\nstart: a\nsteps:\n  a: {type: say, text: caf\xe9}\n")
    for argv in (["check", str(flow)], ["run", str(flow)]):
        result = flowlang(*argv)
        assert result.returncode == 2
        assert "is not UTF-8 text" in result.stdout + result.stderr


def test_check_reads_every_file_then_exits_2_for_an_unreadable_one(tmp_path: Path) -> None:
    result = flowlang("check", str(tmp_path), "/dev/zero", FLOW)
    assert result.returncode == 2
    assert f"error: cannot read document {tmp_path}: Is a directory" in result.stdout
    assert result.stdout.rstrip().endswith("3 files checked: 2 errors, 0 warnings")


def test_a_huge_integer_in_a_flow_is_a_finding(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("flow: t\nstart: a\nsteps:\n  a: {type: say, text: " + "9" * 5000 + "}\n")
    result = flowlang("check", str(flow))
    assert result.returncode == 1
    assert "a whole number has at most 1000 digits" in result.stdout
    assert "Traceback" not in result.stderr


def test_interactive_digits_are_read_in_bounded_lines() -> None:
    """`--interactive` with an endless line: each answer is read up to 1,024 characters."""
    with open("/dev/zero", "rb") as zeros:
        result = flowlang(
            "run",
            FLOW,
            "--context",
            str(FLOWS / "data" / "account_verification.context.json"),
            "--responses",
            str(FLOWS / "data" / "account_verification.responses.yaml"),
            "--interactive",
            stdin=zeros.fileno(),
        )
    assert result.returncode == 0, result.stderr[-500:]
    assert "ask_account    collect_input       invalid" in result.stdout
    assert result.stdout.rstrip().endswith("result: ended by a call-control step")
