"""Hostile command-line input: endless files and pipes, numbers Python will not read, bytes that
are not UTF-8. The real command runs in a subprocess (on the backend of the test run: the
FLOWLANG_* environment is inherited); every input is bounded by the 4 MiB document limit, so
each case ends quickly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlang.cli.reports import FORMATS, Report, render_reports
from flowlang.cli.terminal import Colours, printable
from flowlang.errors import SourcePosition
from flowlang.flow.model import Finding

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


# --- outside text in check's formats ----------------------------------------------------------

#: Text a document or a file name can carry: a workflow command after a newline, a percent
#: escape, terminal escapes (erase the screen, retitle the window), bidirectional overrides and
#: isolates, a lone surrogate, a carriage return and a NUL.
HOSTILE = "x\n::error file=a,line=1::pwned %0A\x1b[2J\x1b]0;t\x07\u202e\u2067\ud800\r\x00y"
#: What none of the formats may write raw.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def hostile_reports() -> list[Report]:
    """A finding whose file name, message, step and field are hostile, with the caret under a
    hostile source line; and an unreadable file of that name."""
    one_line = HOSTILE.replace("\n", " ").replace("\r", " ")
    document = f"a: 1\nb: 2\nc: {one_line}\n"
    position = SourcePosition(HOSTILE, 3, 7, HOSTILE, HOSTILE)
    finding = Finding(HOSTILE, position).with_caret(document)
    return [
        Report.of_finding(HOSTILE, finding),
        Report.unreadable(HOSTILE, f"cannot read document {HOSTILE}"),
    ]


@pytest.mark.parametrize("output_format", sorted(FORMATS))
@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
def test_every_format_escapes_outside_text(output_format: str, colour: bool) -> None:
    out = render_reports(hostile_reports(), 1, output_format, Colours(colour))
    out.encode("utf-8")  # strictly: no lone surrogate survives
    without_colour = re.sub("\x1b\\[[0-9;]*m", "", out) if output_format == "text" else out
    assert not UNSAFE.search(without_colour), ascii(UNSAFE.search(without_colour))
    assert "\\x1b[2J" in out and "\\u202e" in out and "\\ud800" in out  # shown, as escapes
    if output_format == "github":
        lines = out.splitlines()
        assert len(lines) == 2 and all(line.startswith("::error ") for line in lines)
        assert "%250A" in out  # the document's own "%0A" stays text
        command, properties = lines[0].split("::")[1].split(" ", 1)  # up to the message
        assert command == "error"
        keys = [item.split("=", 1)[0] for item in properties.split(",")]
        assert keys == ["file", "line", "col", "title"]
        assert "line=3,col=7" in properties and "%3A%3Aerror file=a%2Cline=1" in properties
    elif output_format == "text":
        assert not any(line.startswith("::") for line in out.splitlines())
    else:
        document = json.loads(out)
        if output_format == "json":
            assert document["findings"][0]["message"] == printable(HOSTILE, one_line=True)
        else:
            result = document["runs"][0]["results"][0]
            assert result["message"]["text"] == printable(HOSTILE, one_line=True)
            uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            assert re.fullmatch(r"[A-Za-z0-9._~:/%!$&'()*+,;=@-]+", uri)


def test_hostile_document_and_file_names_through_the_command(tmp_path: Path) -> None:
    """A real file whose name and keys carry escapes, a bidi override in a value (YAML allows
    it raw), and a file name that is not UTF-8, in every format, in a child process."""
    name = os.fsencode(tmp_path) + b"/evil\x1b[31m\xff\n::error::%0A.yaml"
    with open(name, "wb") as stream:
        stream.write(
            b'flow: t\nstart: a\n"k\\e[2J\\n::error::x %0A": 1\nsteps:\n'
            b'  a: {type: say, text: "hi \xe2\x80\xae<<1 +>>", next: a}\n'
        )
    for output_format in sorted(FORMATS):
        result = subprocess.run(
            [sys.executable, "-m", "flowlang.cli", "check", "--format", output_format, name],
            capture_output=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
        assert result.returncode == 1, result.stderr[-500:]
        out = result.stdout.decode("utf-8")  # strictly UTF-8
        assert not UNSAFE.search(out), (output_format, ascii(out))
        assert "\\x1b[2J" in out  # the key, in every message
        if output_format == "text":
            assert "\\u202e" in out  # the source line under the caret
            assert not any(line.startswith("::") for line in out.splitlines())
        if output_format == "github":
            assert all(line.startswith("::error ") for line in out.splitlines())
        if output_format in ("json", "sarif"):
            json.loads(out)


@given(text=st.text(max_size=60), output_format=st.sampled_from(sorted(FORMATS)))
@settings(max_examples=200, deadline=None)
def test_any_text_in_a_finding_is_escaped(text: str, output_format: str) -> None:
    """Whatever a document's text holds, every format writes strict UTF-8 with no character a
    terminal acts on, one line per GitHub command, and JSON that gives the shown text back."""
    report = Report(text or "x", "warning", text, 2, 3, text, text)
    out = render_reports([report], 1, output_format, Colours(False))
    out.encode("utf-8")
    assert not UNSAFE.search(out)
    if output_format == "github":
        assert out.count("\n") == 1 and out.startswith("::warning ")
    elif output_format == "json":
        assert json.loads(out)["findings"][0]["message"] == printable(text, one_line=True)
    elif output_format == "sarif":
        assert json.loads(out)["runs"][0]["results"][0]["message"]["text"] == printable(
            text, one_line=True
        )
