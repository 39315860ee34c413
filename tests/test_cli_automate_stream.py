"""`flowlang automate --events -`: events processed as they arrive, from a stream that may never
end, with bounded memory (real child processes and pipes)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import pytest
from support import automate_argv, clean_env, store_accepted, write_log_workflow


def call(number: int, padding: int = 0) -> bytes:
    event = {"id": f"evt-{number}", "type": "call.ended", "properties": {"pad": "x" * padding}}
    return json.dumps(event).encode() + b"\n"


def _lines(stream: IO[bytes], into: queue.Queue[bytes | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@contextmanager
def automate(
    tmp: Path, stdin: Any
) -> Iterator[tuple[subprocess.Popen[bytes], queue.Queue[bytes | None]]]:
    """``flowlang automate --events - --json`` offline, reading ``stdin``; its stdout lines
    arrive in the queue (None at the end). The process is killed if still running at the end."""
    write_log_workflow(tmp)
    argv = automate_argv(tmp)
    argv[argv.index("--events") + 1] = "-"
    process = subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv, "--json"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        start_new_session=True,
    )
    lines: queue.Queue[bytes | None] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=10)
        for stream in (process.stdout, process.stderr, process.stdin):
            if stream is not None:
                with suppress(OSError):  # a pipe the process no longer reads
                    stream.close()


def next_line(lines: queue.Queue[bytes | None], seconds: float = 60) -> dict[str, Any]:
    line = lines.get(timeout=seconds)
    assert line is not None, "the output ended early"
    return dict(json.loads(line))


def test_each_event_is_processed_before_the_next_one_is_written(tmp_path: Path) -> None:
    with automate(tmp_path, subprocess.PIPE) as (process, lines):
        assert process.stdin is not None
        for number in range(1, 6):
            process.stdin.write(call(number))
            process.stdin.flush()
            line = next_line(lines)  # the stream stays open: no batch waits to fill
            assert (line["kind"], line["event"]) == ("event", f"evt-{number}")
            assert [d["outcome"] for d in line["deliveries"]] == ["delivered"]
            assert lines.empty()
        process.stdin.close()
        summary = next_line(lines)
        assert lines.get(timeout=60) is None
        assert process.wait(timeout=60) == 0
    assert summary["kind"] == "summary" and summary["events"] == 5 and summary["delivered"] == 5


def _peak_memory(pid: int) -> int:
    """The peak resident set of a running process, in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


GENERATOR = """
import sys, time
count, padding = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
pad = "x" * padding
for number in range(count):
    out.write(('{"id": "evt-%d", "type": "call.ended", "properties": {"pad": "%s"}}\\n'
               % (number, pad)).encode())
out.flush()
time.sleep(600)  # the stream stays open until the test ends it
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize(
    ("count", "padding"),
    [(20_000, 16), (300, 700_000)],
    ids=["20k-small-events", "300-events-of-700KB"],
)
def test_a_long_stream_that_stays_open_keeps_memory_bounded(
    tmp_path: Path, count: int, padding: int
) -> None:
    """The stream is made by a child process and never ends by itself; when every event has
    its line, the peak memory of automate is read, then the stream is closed. The 300 large
    events are 210 MB of input: a reader that held a batch of them would show it."""
    generator = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(GENERATOR), str(count), str(padding)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with automate(tmp_path, generator.stdout) as (process, lines):
            assert generator.stdout is not None
            generator.stdout.close()  # automate holds the only reading end
            seen = 0
            for _ in range(count):
                line = next_line(lines, 120)
                seen += line["kind"] == "event" and line["deliveries"][0]["outcome"] == "delivered"
            assert seen == count
            assert process.poll() is None  # still waiting for more events
            peak = _peak_memory(process.pid)
            generator.kill()  # the end of the stream
            summary = next_line(lines, 120)
            assert process.wait(timeout=60) == 0
        assert summary["events"] == count and summary["exit"] == 0
        assert peak < 150 * 1024 * 1024, f"peak memory {peak / 2**20:.0f} MiB"
    finally:
        if generator.poll() is None:
            generator.kill()
        generator.wait(timeout=30)


def test_a_closed_output_pipe_ends_the_run_quietly_and_keeps_the_store(tmp_path: Path) -> None:
    """`| head -2` on a stream that never ends: automate stops (141) instead of processing on
    into a closed pipe, without a traceback; what it accepted is in the store."""
    write_log_workflow(tmp_path)
    argv = automate_argv(tmp_path)
    argv[argv.index("--events") + 1] = "-"
    process = subprocess.Popen(
        [sys.executable, "-m", "flowlang.cli", *argv, "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(call(1) + call(2))
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["kind"] == "event"
        process.stdout.close()  # the reader goes away
        for number in range(3, 200):  # more events, until automate stops reading
            try:
                process.stdin.write(call(number))
                process.stdin.flush()
            except BrokenPipeError:
                break
            if process.poll() is not None:
                break
        status = process.wait(timeout=60)
        assert process.stderr is not None
        err = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for stream in (process.stdin, process.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
    assert status == 141, err
    assert "Traceback" not in err
    store = tmp_path / "store.db"
    assert store_accepted(store, "evt-1") and store_accepted(store, "evt-2")
