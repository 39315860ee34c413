"""``flowlang worker --metrics-port``: the endpoint is bounded (connections at once, seconds and
bytes per request: idle or slow clients cannot take the worker's descriptors and so its
deliveries), and the worker never writes metrics files in an inherited
PROMETHEUS_MULTIPROC_DIR (a private folder for the prefork pool, none for threads)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import (
    Ledger,
    Receiver,
    one_event,
    receiver_fixture,  # noqa: F401 (the fixture receiver)
    redis_broker_on,
    store_fixture,  # noqa: F401 (the fixture store)
    wait_until,
    worker_command,
    write_workflow,
)
from services import RedisServer
from support import clean_env, cli

prometheus_client = pytest.importorskip("prometheus_client")

from flowlang.observe.worker_metrics import MetricsServer, WorkerMetrics  # noqa: E402

# --- the endpoint's bounds, in process ---------------------------------------------------------


@contextlib.contextmanager
def _server(**bounds: Any) -> Iterator[tuple[MetricsServer, int]]:
    recorder = WorkerMetrics()
    recorder.task("flowlang.deliver", "delivered")
    server = MetricsServer("127.0.0.1", 0, recorder.registry(), **bounds)
    try:
        yield server, int(server.server_address[1])
    finally:
        server.close()


def _ask(port: int, request: bytes) -> bytes:
    """What the endpoint answers ``request`` (all of it, until it closes; bounded: 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        data = b""
        while len(data) < 1_000_000:
            chunk = raw.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _closed_within(connection: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``connection`` (AssertionError past ``seconds``)."""
    began = time.monotonic()
    connection.settimeout(seconds)
    try:
        while connection.recv(1024):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - began


def test_the_endpoint_serves_the_page_and_refuses_what_is_not_a_get() -> None:
    with _server() as (_, port):
        page = _ask(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        posted = _ask(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        garbage = _ask(port, b"\xff\xfe\x00garbage\r\n\r\n")
        huge = _ask(port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
        headers = _ask(port, b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n")
        zipped = _ask(port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
    assert page.startswith(b"HTTP/1.0 200 OK\r\n"), page[:200]
    assert b'flowlang_worker_steps_total{outcome="delivered",task="deliver"} 1.0' in page
    assert posted.startswith(b"HTTP/1.0 405 "), posted[:200]
    assert garbage.startswith(b"HTTP/1.0 400 "), garbage[:200]
    assert huge.startswith(b"HTTP/1.0 431 ") and headers.startswith(b"HTTP/1.0 431 ")
    assert zipped.startswith(b"HTTP/1.0 200 OK") and b"Content-Encoding: gzip" in zipped


def test_a_connection_that_says_nothing_or_trickles_is_closed_after_the_timeout() -> None:
    with _server(timeout=0.5) as (_, port):
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        with silent, slow:
            assert _closed_within(silent, 5) < 3
            began = time.monotonic()
            with contextlib.suppress(OSError):
                for _ in range(40):  # bounded: a byte each 0.1 s, never a whole request
                    slow.sendall(b"G")
                    time.sleep(0.1)
            assert time.monotonic() - began < 3, "a trickling request was served for ever"
        assert _ask(port, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")


def test_connections_beyond_the_cap_are_closed_at_once_and_the_cap_frees_up() -> None:
    with _server(max_connections=2, timeout=30) as (_, port):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.3)  # both accepted and held
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                assert _closed_within(extra, 3) < 2
        finally:
            for connection in held:
                connection.close()
        deadline = time.monotonic() + 5
        answer = b""
        while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.0 200"):
            with contextlib.suppress(ConnectionResetError):  # a slot not yet freed: closed
                answer = _ask(port, b"GET /metrics HTTP/1.0\r\n\r\n")
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.0 200"), answer[:200]


def test_a_closed_endpoint_no_longer_listens() -> None:
    with _server() as (server, port):
        pass
    server.close()  # again: nothing happens
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_no_private_folder_for_the_prefork_pool_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse
    import tempfile

    from flowlang.cli.inputs import UsageError
    from flowlang.cli.worker_console import _start_metrics

    def refused(*_: Any, **__: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.delitem(sys.modules, "prometheus_client")  # as in a fresh worker
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/somewhere/else")
    arguments = argparse.Namespace(metrics_port=0, metrics_host="127.0.0.1", pool="prefork")
    with pytest.raises(UsageError, match=r"cannot make a private folder.*Permission denied"):
        _start_metrics(arguments)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


# --- an inherited PROMETHEUS_MULTIPROC_DIR -----------------------------------------------------


def _run_worker(
    tmp_path: Path, flow: Path, url: str, env: dict[str, str], *extra: str
) -> tuple[int | None, str]:
    """``flowlang worker`` until it consumes or exits (bounded), then SIGTERM (its group)."""
    log = tmp_path / f"worker-{time.monotonic_ns()}.log"
    command = [
        sys.executable, "-m", "flowlang", "worker", str(flow), "--broker", url, "--store", url,
        "--queue-prefix", f"flrt{os.getpid()}.", "--allow-host", "127.0.0.1", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**clean_env(), **env},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            if "flowlang worker: consuming" in log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return code, log.read_text(errors="replace")


def test_metrics_with_an_inherited_multiprocess_dir_that_is_missing_is_no_traceback(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    """Red team, issue 13 (was a traceback). With ``--pool threads`` (the default)
    _start_metrics leaves PROMETHEUS_MULTIPROC_DIR as the environment has it (a shell that
    also runs a multiprocess exporter, a stale value): prometheus_client then writes every
    counter to mmap files in that folder, and when it does not exist WorkerMetrics() dies
    with FileNotFoundError, a traceback (worker_console.py:339, outside any try). Invariant:
    a clear error (exit 2) or a worker that serves its metrics; never a traceback."""
    flow = write_workflow(tmp_path, receiver)
    missing = tmp_path / "no-such-folder"
    code, text = _run_worker(
        tmp_path, flow, f"{redis_server.url[:-2]}/6", {"PROMETHEUS_MULTIPROC_DIR": str(missing)},
        "--pool", "threads", "--metrics-port", "0",
    )  # fmt: skip
    assert "Traceback" not in text, text[-3000:]
    assert code in (0, 2), text[-3000:]


def test_metrics_of_a_threads_worker_leave_no_files_in_an_inherited_multiprocess_dir(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    """Red team, issue 13 (files leaked into someone else's folder). An inherited
    PROMETHEUS_MULTIPROC_DIR that exists (say, the folder of a gunicorn-served exporter on the
    same host) gets the threads worker's counter_PID.db / histogram_PID.db files, never removed
    at exit (only the prefork pool's private folder is): they pile up per worker pid, and the
    other exporter's MultiProcessCollector then serves flowlang_worker_* series it does not
    own. Invariant: a worker writes metrics files only in a folder of its own, removed at
    exit."""
    flow = write_workflow(tmp_path, receiver)
    shared = tmp_path / "someone-elses-multiproc"
    shared.mkdir()
    code, text = _run_worker(
        tmp_path, flow, f"{redis_server.url[:-2]}/6", {"PROMETHEUS_MULTIPROC_DIR": str(shared)},
        "--pool", "threads", "--metrics-port", "0",
    )  # fmt: skip
    assert "flowlang worker: consuming" in text and code == 0, text[-3000:]
    assert sorted(p.name for p in shared.iterdir()) == []


# --- idle connections to the metrics endpoint, end to end --------------------------------------


def test_idle_connections_to_the_metrics_port_do_not_stop_deliveries(
    tmp_path: Path, redis_server: RedisServer, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    """Red team, issue 13 (was a denial of service through --metrics-port). prometheus_client's
    start_wsgi_server (worker_console.py:333) is a ThreadingWSGIServer with no timeout and no
    connection limit: each connection that sends nothing holds a thread and a file descriptor
    of the worker process for ever. Whoever reaches the port (``--metrics-host 0.0.0.0`` for a
    Prometheus in the cluster: the exact setup the option is for) opens connections until
    the worker's descriptors run out; then the worker cannot open a connection to the
    receiver, the store or the broker, and nothing is delivered. Scaled down: the worker's
    RLIMIT_NOFILE is 256 and 300 idle connections are opened. Invariant: a metrics client,
    however many connections it holds open, does not stop the worker's deliveries."""
    import resource
    import socket
    import subprocess as sp

    url, prefix, ledger = store
    flow, events, first, _ = one_event(tmp_path, receiver, 41)
    log = tmp_path / "worker.log"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    idle: list[socket.socket] = []
    with redis_broker_on(redis_server, 9) as broker:
        command = worker_command([flow], broker, url, prefix, "--metrics-port", "0")
        with log.open("wb") as sink:
            process = sp.Popen(
                command,
                stdin=sp.DEVNULL,
                stdout=sink,
                stderr=sp.STDOUT,
                env=clean_env(),
                start_new_session=True,
                preexec_fn=limited,
            )
        try:
            wait_until(
                lambda: (
                    "flowlang worker: consuming" in log.read_text(errors="replace")
                    or process.poll() is not None
                ),
                30,
                "the worker did not start",
            )
            text = log.read_text(errors="replace")
            port = int(text.split("metrics on http://127.0.0.1:", 1)[1].split("/", 1)[0])
            for _ in range(300):  # bounded: each an open connection that says nothing
                try:
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                except OSError:
                    break
            time.sleep(1.0)
            status, _ = cli(
                "automate", str(flow), "--events", str(events), "--executor", "celery",
                "--broker", broker.url, "--queue-prefix", broker.queue_prefix,
            )  # fmt: skip
            assert status == 0
            try:
                wait_until(lambda: ledger.settled().get(first) == "delivered", 30, "")
                delivered = True
            except AssertionError:
                delivered = False
        finally:
            for connection in idle:
                connection.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    text = log.read_text(errors="replace")
    assert delivered, (
        f"nothing delivered with {len(idle)} idle metrics connections:\n{text[-2500:]}"
    )


def test_the_watchdogs_exit_removes_the_prefork_metrics_folder(tmp_path: Path) -> None:
    """Red team round 2, R2-2: `flowlang worker --pool prefork --metrics-port` makes a private
    multiprocess folder (flowlang-worker-metrics-*) that only _Metrics.close removes, in the
    `finally` of worker_from_command_line. The shutdown watchdog ends the process with
    os._exit(0) (loop._end_process), which skips that `finally`: every worker the watchdog
    ends leaves its folder (and its processes' .db files) behind in TMPDIR. Invariant: the
    folder is removed however the worker ends, the watchdog's exit included (now a cleanup
    given to loop.on_exit, run by _end_process before os._exit)."""
    script = textwrap.dedent(
        """
        import argparse
        from flowlang.cli import worker_console
        from flowlang.distributed import loop
        arguments = argparse.Namespace(metrics_port=0, metrics_host="127.0.0.1", pool="prefork")
        metrics = worker_console._start_metrics(arguments)
        assert metrics.folder is not None and metrics.folder.is_dir()
        loop._end_process()  # what the watchdog calls SHUTDOWN_GRACE after the last task
        """
    )
    env = {**clean_env(), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    left = sorted(p.name for p in tmp_path.glob("flowlang-worker-metrics-*"))
    assert left == [], f"the watchdog's os._exit left the metrics folder behind: {left}"
