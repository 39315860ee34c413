"""A closed output pipe (``| head``) and Ctrl-C end every command quietly: no traceback, no
"Exception ignored" at exit; 141 and 130. Real child processes, each bounded in time and
killed (with what it started) in ``finally``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import Server

FLOWS = Path(__file__).parent.parent / "examples" / "flows"


@contextmanager
def child(argv: list[str], **options: object) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv],
        start_new_session=True,
        **options,  # type: ignore[call-overload]
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def read_until(stream: object, marker: bytes, seconds: float = 60) -> bytes:
    """What ``stream`` (a pipe) gives until ``marker`` appears, within ``seconds``."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    seen = b""
    deadline = time.monotonic() + seconds
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    assert marker in seen, seen[-500:]
    return seen


def many_errors(tmp_path: Path) -> Path:
    """A flow whose check prints far more than a pipe holds (about 1 MB of findings)."""
    lines = ["flow: t", "start: s0", "steps:"]
    lines += [f"  s{i}: {{type: say, text: hi, next: nowhere{i}}}" for i in range(4000)]
    path = tmp_path / "many.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def big_context(tmp_path: Path) -> Path:
    path = tmp_path / "context.json"
    path.write_text('{"a": "' + "x" * 100_000 + '"}')
    return path


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["check", "MANY"], id="check-many-findings"),
        pytest.param(["eval", *["<<a>>"] * 40, "--context", "BIG"], id="eval"),
        pytest.param(
            [
                "run",
                str(FLOWS / "after_hours.yaml"),
                "--context",
                str(FLOWS / "data" / "after_hours.context.json"),
                "--responses",
                str(FLOWS / "data" / "after_hours.responses.yaml"),
                "--json",
            ],
            id="run-json",
        ),
    ],
)
def test_a_pipe_closed_early_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    """The reader takes one line and closes the pipe (as ``| head -1`` does)."""
    argv = [
        str(many_errors(tmp_path))
        if a == "MANY"
        else str(big_context(tmp_path))
        if a == "BIG"
        else a
        for a in argv
    ]
    with child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        assert first.strip()
        process.stdout.close()  # the reader is gone
        process.wait(timeout=60)
        err = process.stderr.read().decode()
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err
    assert process.returncode in (0, 1, 141)  # 0 or 1 when it finished before the close
    if argv[0] == "check":
        assert process.returncode == 141  # a megabyte cannot fit in the pipe


def test_the_installed_console_entry_ends_quietly_on_a_closed_pipe(tmp_path: Path) -> None:
    """The same through the ``flowlang`` script pip installs (``flowlang.cli:main``), in a
    shell pipeline with ``head``."""
    script = Path(sys.executable).parent / "flowlang"
    if not script.exists():
        pytest.skip("no installed flowlang script next to this interpreter")
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'"{script}" check "{many_errors(tmp_path)}" | head -1; '
            'echo "status ${PIPESTATUS[0]}" >&2',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )
    assert result.stdout.startswith("error: next goes to step 'nowhere0'")
    assert result.stderr.strip() == "status 141", result.stderr[-1000:]


def test_ctrl_c_while_run_interactive_waits_for_digits() -> None:
    argv = [
        "run",
        str(FLOWS / "account_verification.yaml"),
        "--context",
        str(FLOWS / "data" / "account_verification.context.json"),
        "--responses",
        str(FLOWS / "data" / "account_verification.responses.yaml"),
        "--interactive",
    ]
    with child(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        read_until(process.stdout, b"caller hears:")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.stderr is not None
        err = process.stderr.read().decode()
    assert process.returncode == 130
    assert err == "flowlang: interrupted\n"


def test_ctrl_c_while_check_waits_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "flow.fifo"
    os.mkfifo(fifo)
    with child(["check", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        wchan = Path(f"/proc/{process.pid}/wchan")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if wchan.exists() and wchan.read_text() == "wait_for_partner":
                break  # blocked in open(), waiting for a writer
            time.sleep(0.05)
        else:
            pytest.skip("cannot see the child block on the FIFO")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.stderr is not None
        err = process.stderr.read().decode()
    assert process.returncode == 130
    assert err == "flowlang: interrupted\n"


def test_ctrl_c_while_run_waits_for_a_server(server: Server, tmp_path: Path) -> None:
    """The event loop's own handler cancels the run; the command still ends with 130."""
    flow = tmp_path / "silent.yaml"
    flow.write_text(
        "flow: t\nstart: get\nsteps:\n  get:\n    type: http_request\n"
        f"    endpoint: {server.url('127.0.0.1', '/silent')}\n"
        "    method: GET\n    timeout: 8s\n    next: bye\n    on_failure: bye\n"
        "  bye: {type: hangup}\n"
    )
    pem = tmp_path / "ca.pem"
    server.ca.cert_pem.write_to_path(str(pem))
    argv = ["run", str(flow), "--allow-host", "127.0.0.1", "--ca-file", str(pem)]
    with child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + 60
        while not server.received.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received.requests, "the request never arrived"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.stderr is not None
        err = process.stderr.read().decode()
    assert process.returncode == 130
    assert err == "flowlang: interrupted\n"
