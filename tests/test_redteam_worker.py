"""Red-team reproductions for issue 13's worker changes (6b546d8..1e8a6c1): each test here
fails against that code and states the invariant it breaks (see each docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from celery_support import (  # noqa: F401 (the fixtures receiver, store)
    HOLD,
    Broker,
    Ledger,
    Receiver,
    muting_proxy,
    one_event,
    receiver_fixture,
    redis_broker_on,
    start_worker,
    store_fixture,
    wait_until,
    worker_command,
    write_workflow,
)
from services import RabbitMQ, RedisServer, rabbitmq  # noqa: F401 (the fixture rabbitmq)
from support import clean_env, cli

# --- flowlang worker --metrics-port with PROMETHEUS_MULTIPROC_DIR in the environment -----------


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
    """FINDING (traceback on hostile input). With ``--pool threads`` (the default)
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
    """FINDING (metrics files leak into someone else's folder). An inherited
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


# --- serve --broker when the broker stalls ---------------------------------------------------


def test_serve_broker_answers_503_in_bounded_time_to_concurrent_senders_when_the_broker_stalls(
    redis_server: RedisServer,
) -> None:
    """FINDING (hang / starvation). ``serve --broker`` publishes each event with
    ``asyncio.to_thread`` (worker_console.py:465) through a publisher whose bound is
    publish_timeout (10 s) per Redis command, redis-py's own retries and kombu's
    task_publish_retry_policy (4 tries): measured 52 s for ONE 503 on a black-holed Redis
    broker (28 s on RabbitMQ). Worse, each stalled publish holds a thread of the loop's
    default executor (min(32, cpus + 4): 6 on 2 cores), so a few concurrent senders queue
    behind each other (the 7th waits two whole stalls) and so does everything else on that
    executor: loop.getaddrinfo (DNS for the calls' own HTTP requests). Invariant: every
    sender gets its 503 within a webhook sender's patience (15 s, Twilio's), and the server's
    loop keeps resolving names meanwhile."""
    from flowlang.cli.worker_console import event_publisher
    from tests.serve_support import EVENT_TOKEN, example_workflows, serving

    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
    senders = 8

    def body(number: int) -> bytes:
        return json.dumps({"id": f"evt-st-{number}", "type": "contact.updated"}).encode()

    answers: dict[int, tuple[int, float]] = {}
    lookup: list[float] = []
    with muting_proxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/7"
        publish = event_publisher(url, f"flrt{os.getpid()}.")

        async def main() -> None:
            async with serving(workflows=example_workflows(), publish_events=publish) as served:
                first = await served.client.post("/events", content=body(0), headers=auth)
                assert first.status_code == 202, first.text  # connected
                proxy.black_hole()

                async def send(number: int) -> None:
                    began = time.monotonic()
                    answer = await served.client.post(
                        "/events", content=body(number), headers=auth, timeout=200
                    )
                    answers[number] = (answer.status_code, time.monotonic() - began)

                async def resolve() -> None:
                    await asyncio.sleep(1.0)
                    began = time.monotonic()
                    await asyncio.get_running_loop().getaddrinfo("localhost", 80)
                    lookup.append(time.monotonic() - began)

                jobs = [asyncio.ensure_future(send(n)) for n in range(1, senders + 1)]
                jobs.append(asyncio.ensure_future(resolve()))
                await asyncio.wait(jobs, timeout=20)
                proxy.stop.set()  # the stalled publishes end (connection lost) for the cleanup
                for sock in proxy.sockets:
                    sock.close()
                await asyncio.wait(jobs, timeout=120)

        asyncio.run(main())
    late = {n: a for n, a in answers.items() if a[1] > 15}
    assert len(answers) == senders
    assert all(code == 503 for code, _ in answers.values()), answers
    assert not late, f"503s after more than 15 s: {late}; all {answers}; getaddrinfo {lookup}"
    assert lookup and lookup[0] < 2, f"getaddrinfo waited {lookup} s behind stalled publishes"


# --- idle connections to the metrics endpoint ------------------------------------------------


def test_idle_connections_to_the_metrics_port_do_not_stop_deliveries(
    tmp_path: Path, redis_server: RedisServer, store: tuple[str, str, Ledger], receiver: Receiver
) -> None:
    """FINDING (denial of service through --metrics-port). prometheus_client's
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
