"""Progress of `flowlang automate`: a status line on a terminal (a real pty), none into a pipe
or with -q; the line never mixes with other output."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import trustme
from servers import serve
from support import automate_argv, clean_env

from flowlang.automations.dispatch import Attempt
from flowlang.cli.automate_progress import Progress

WORKFLOW = """
workflow: one
trigger: call.ended
actions:
  - {name: post, type: api_request, endpoint: "http://127.0.0.1:{port}/script/<<event.id>>"}
"""


def _event(number: int) -> bytes:
    return json.dumps({"id": f"evt-{number}", "type": "call.ended"}).encode() + b"\n"


def _read_until(fd: int, pattern: str, seconds: float = 60) -> str:
    """What ``fd`` (a pty's master side) shows until ``pattern`` (a regex, matched without
    colours) appears."""
    seen = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, re.sub(r"\x1b\[[0-9;]*m", "", seen.decode("utf-8", "replace"))):
                break
    return seen.decode("utf-8", "replace")


def _run(tmp: Path, port: int, stderr: int, *extra: str) -> subprocess.Popen[bytes]:
    (tmp / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(port)))
    argv = automate_argv(tmp, responses=False)
    argv[argv.index("--events") + 1] = "-"
    env = clean_env() | {"TERM": "xterm", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv, "--allow-host", "127.0.0.1", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_on_a_terminal_progress_shows_events_deliveries_and_waiting_retries(
    tmp_path: Path,
) -> None:
    with serve(trustme.CA(), tls=False) as server:
        server.received.script("evt-2", (503, {"Retry-After": "3600"}, {}))
        master, slave = os.openpty()
        try:
            process = _run(tmp_path, server.port, slave)
            os.close(slave)
            slave = -1
            try:
                assert process.stdin is not None
                shown = _read_until(master, "waiting for events")  # nothing read yet
                process.stdin.write(_event(1))
                process.stdin.flush()
                shown += _read_until(master, r"1 read, 1 done; 1 delivered; waiting for events")
                process.stdin.write(_event(2))
                process.stdin.flush()
                shown += _read_until(master, r"waiting for 1 retry, next at \d\d:\d\d:\d\d")
                status = _stop(process)
                shown += _read_until(master, "rerun the same command", 10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
                for stream in (process.stdin, process.stdout):
                    if stream is not None:
                        with suppress(OSError):  # a pipe the process no longer reads
                            stream.close()
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
    assert status == 130, shown[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "\r\x1b[Kevents 0 read, 0 done; 0 delivered; waiting for events" in plain
    assert "events 1 read, 1 done; 1 delivered; waiting for events" in plain
    due = re.search(
        r"events 2 read, 1 done; 1 delivered; waiting for 1 retry, next at (\S+)", plain
    )
    assert due is not None, plain
    expected = time.strftime("%H:%M", time.localtime(time.time() + 3600))  # about an hour on
    assert due.group(1)[:5] in (
        expected,
        time.strftime("%H:%M", time.localtime(time.time() + 3540)),
    )
    assert "\x1b[1;33mwaiting for 1 retry" in shown  # colour on a terminal
    # the message starts on a clean line: the status line is erased first
    assert "\r\x1b[Kflowlang: interrupted; store kept at" in shown
    assert "Traceback" not in shown


@pytest.mark.parametrize("how", ["pipe", "quiet-on-a-terminal"])
def test_no_progress_into_a_pipe_or_with_quiet(tmp_path: Path, how: str) -> None:
    with serve(trustme.CA(), tls=False) as server:
        server.received.script("evt-2", (503, {"Retry-After": "3600"}, {}))
        master, slave = os.openpty()
        try:
            if how == "pipe":
                process = _run(tmp_path, server.port, subprocess.PIPE)
            else:
                process = _run(tmp_path, server.port, slave, "-q")
            os.close(slave)
            slave = -1
            try:
                assert process.stdin is not None
                process.stdin.write(_event(1) + _event(2))
                process.stdin.flush()
                deadline = time.monotonic() + 60
                while len(server.received.requests) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(server.received.requests) == 2
                time.sleep(0.6)  # long enough for two redraws, were there any
                status = _stop(process)
                if how == "pipe":
                    assert process.stderr is not None
                    shown = process.stderr.read().decode()
                else:
                    shown = _read_until(master, "rerun the same command")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
                for stream in (process.stdin, process.stdout, process.stderr):
                    if stream is not None:
                        with suppress(OSError):  # a pipe the process no longer reads
                            stream.close()
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
    assert status == 130
    assert shown.replace("\r\n", "\n") == (
        f"flowlang: interrupted; store kept at {tmp_path / 'store.db'}: "
        "rerun the same command to resume\n"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_drawn_only_when_it_changes_and_cleared_before_other_output() -> None:
    stream = _Terminal()
    progress = Progress(stream, enabled=True, real_time=True)
    progress.draw()
    progress.draw()  # unchanged: nothing written
    assert stream.getvalue().count("\r\x1b[K") == 1
    progress.read = 1
    progress.draw()
    progress.clear()
    progress.clear()  # already clear: nothing written
    assert stream.getvalue().count("\r\x1b[K") == 3
    progress.attempted(Attempt("evt-1", "wf", "post", 1, "retry", "HTTP 503", 86400 * 3))
    assert re.search(r"next at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", progress.text())  # not today
    progress.attempted(Attempt("evt-2", "wf", "post", 1, "retry", "HTTP 503", 60))
    assert "waiting for 2 retries, next at " in progress.text()
    progress.now = lambda: time.time() + 120  # evt-2's retry is being attempted: not waiting
    assert "waiting for 1 retry, next at " in progress.text()
    progress.event_done("evt-1")
    progress.attempted(Attempt("evt-2", "wf", "post", 2, "delivered"))
    assert "waiting for" not in progress.text()
    silent = _Terminal()
    Progress(silent, enabled=False, real_time=True).draw()
    assert silent.getvalue() == ""
