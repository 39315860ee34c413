"""flowlang serve --workers N: one socket bound by a supervising parent, N worker processes
sharing Redis; calls spread over the workers, metrics summed across them, a killed worker
started again, a clean stop on SIGTERM with nothing left in the process group, a worker that
cannot start stopping the server, and the usage errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from flowlang.automations.store import event_key
from flowlang.cli import main
from flowlang.cli.inputs import UsageError
from flowlang.cli.serve import MAX_WORKERS, worker_count
from flowlang.cli.serve_workers import metric_file, metrics_folder
from tests.serve_process import ServeProcess, secret_environment, serve_arguments
from tests.serve_support import (
    EVENT_TOKEN,
    PUBLIC_URL,
    SECRETS,
    TWILIO_TOKEN,
    open_events,
    store_event,
    store_rows,
)
from tests.services import RedisServer, free_port
from tests.twilio_sim import SimulatedTwilio

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Seconds a bounded wait in these tests lasts at most.
WAIT = 30.0
#: Calls placed at once in one round.
ROUND = 10
#: Rounds placed at most until both workers have answered some calls.
MAX_ROUNDS = 6


def _pids(server: ServeProcess) -> list[int]:
    """The worker pids the "listening on" line names, by index."""
    for line in server.lines:
        found = re.search(r"workers: \d+, pids ([\d, ]+);", line)
        if found:
            return [int(pid) for pid in found.group(1).split(", ")]
    raise AssertionError(f"no worker pids in:\n{server.output()}")


def _wait_for_line(server: ServeProcess, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if any(text in line for line in server.lines):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never said:\n{server.output()}")


def _runs_of(folder: Path, pid: int) -> float:
    """The runs the worker ``pid`` started, read from its own prometheus_client counter file
    in the multiprocess folder ``folder``."""
    path = folder / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    total = 0.0
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
        if json.loads(key)[1] == "flowlang_runs_started_total":
            total += value
    return total


def _all_finished(store: Path) -> None:
    """Wait (bounded) until the store ``store`` holds no open event."""
    deadline = time.monotonic() + WAIT
    while open_events(store):
        assert time.monotonic() < deadline, open_events(store)
        time.sleep(0.05)


def _group_is_empty(pgid: int) -> bool:
    """True once no process is left in group ``pgid`` (bounded wait)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _redis(redis: RedisServer) -> tuple[str, ...]:
    return (
        "--store",
        redis.url,
        "--key-prefix",
        f"fl-w-{secrets.token_hex(4)}:",
        "--state-key",
        "state_key",
    )


def _client(server: ServeProcess) -> httpx.AsyncClient:
    # no kept-alive connections: every request is a new connection, accepted by any worker
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=server.url, timeout=20, trust_env=False, limits=limits)


async def _place(server: ServeProcess, count: int) -> None:
    """``count`` calls at once through one client; every one reaches the operator queue."""
    async with _client(server) as client:
        twilio = SimulatedTwilio(client, PUBLIC_URL, TWILIO_TOKEN)
        calls = await asyncio.gather(
            *(twilio.call("support-menu", ["3", "0"]) for _ in range(count))
        )
    for call in calls:
        assert (call.ended_by, call.target) == ("Enqueue", "operator"), call
        assert all(status < 500 for status in call.statuses), call.statuses


async def _runs_started(server: ServeProcess) -> list[float]:
    """flowlang_runs_started_total summed over flows, read from /metrics three times (each
    read answered by whichever worker accepts it)."""
    totals = []
    async with _client(server) as client:
        for _ in range(3):
            page = (await client.get("/metrics")).text
            total = 0.0
            for family in text_string_to_metric_families(page):
                if family.name == "flowlang_runs_started":
                    total += sum(s.value for s in family.samples if s.name.endswith("_total"))
            totals.append(total)
    return totals


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer) -> Iterator[ServeProcess]:
    prefix = f"fl-workers-{secrets.token_hex(4)}:"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**secret_environment(), "TMPDIR": str(temporary)}
    arguments = serve_arguments(
        tmp_path,
        "--workers", "2",
        "--store", redis_server.url,
        "--key-prefix", prefix,
        "--state-key", "state_key",
        "--events-store", str(tmp_path / "events.db"),
    )  # fmt: skip
    server = ServeProcess(arguments, env)
    try:
        yield server.start()
    finally:
        server.kill()


def test_two_workers_share_calls_metrics_restart_and_stop(
    workers: ServeProcess, tmp_path: Path
) -> None:
    assert workers.process is not None
    first, second = _pids(workers)
    store = tmp_path / "events.db"
    (folder,) = [path for path in (tmp_path / "tmp").iterdir() if path.name.startswith("flowlang")]
    # calls through one client to the shared port, until both workers answered some
    placed = 0
    for _ in range(MAX_ROUNDS):
        asyncio.run(_place(workers, ROUND))
        placed += ROUND
        if placed >= 20 and all(_runs_of(folder, pid) for pid in (first, second)):
            break
    runs = [_runs_of(folder, pid) for pid in (first, second)]
    assert all(runs), f"one worker answered nothing: {runs}"
    assert sum(runs) == placed
    # one store for both: every call's end recorded once in it (only call.ended), finished
    _all_finished(store)
    assert store_rows(store, "events") == placed
    assert not list(tmp_path.glob("events.[0-9]*"))  # no file per worker
    # every worker's /metrics page counts every worker's runs
    assert asyncio.run(_runs_started(workers)) == [placed] * 3
    assert any(folder.glob(f"*_{first}.db"))

    # a worker killed like a crash is started again; calls go on meanwhile
    os.kill(first, signal.SIGKILL)
    asyncio.run(_place(workers, ROUND))
    _wait_for_line(workers, "worker 1 is ready again")
    restarted = f"worker 1 (pid {first}) was killed by SIGKILL; starting it again"
    assert restarted in workers.output()
    asyncio.run(_place(workers, ROUND))
    placed += 2 * ROUND
    assert asyncio.run(_runs_started(workers)) == [placed] * 3
    _all_finished(store)
    assert store_rows(store, "events") == placed

    # SIGTERM to the parent alone: it stops every worker, says so once and exits 0
    os.kill(workers.process.pid, signal.SIGTERM)
    assert workers.process.wait(WAIT + 30) == 0
    workers._reader.join(5)
    assert workers.output().count("flowlang serve: stopped") == 1
    assert workers.output().count("listening on") == 1  # by the parent, once all were ready
    assert _group_is_empty(workers.process.pid)
    for pid in (first, second):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert list((tmp_path / "tmp").iterdir()) == []  # the metrics folder is removed
    log = workers.output()
    assert "Traceback" not in log
    for secret in SECRETS.values():
        assert secret not in log


def test_sigint_stops_the_workers_with_130(tmp_path: Path, redis_server: RedisServer) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir(mode=0o700)
    (metrics / "counter_1.db").write_bytes(b"stale")
    (metrics / "keep.txt").write_text("not a metrics file")
    server = ServeProcess(
        serve_arguments(
            tmp_path, "--workers", "2", *_redis(redis_server), "--metrics-dir", str(metrics)
        )
    ).start()
    try:
        assert server.process is not None
        assert not (metrics / "counter_1.db").exists()  # emptied of metrics files at start
        os.kill(server.process.pid, signal.SIGINT)
        assert server.process.wait(WAIT) == 130
        assert _group_is_empty(server.process.pid)
        assert (metrics / "keep.txt").exists()  # a given folder stays, with other files
        assert "flowlang serve: stopped" in server.output()
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("workers", "breakage", "status", "said"),
    [
        ("3", "redis-down", 1, "exited with status 1 before it was ready"),
        # both workers fail alike; whichever reports first names itself
        ("2", "no-state-key", 1, ": state key 'state_key' is not set"),
        ("1", "redis-down", 1, "flowlang serve: the server could not start"),
        ("1", "no-state-key", 2, "flowlang: state key 'state_key' is not set"),
    ],
)
def test_a_server_that_cannot_start_says_why_and_leaves_nothing(
    workers: str, breakage: str, status: int, said: str, tmp_path: Path
) -> None:
    store = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {**secret_environment(), "TMPDIR": str(tmp_path)}
    if breakage == "no-state-key":
        del env["FLOWLANG_SECRET_STATE_KEY"]
    arguments = serve_arguments(
        tmp_path, "--workers", workers, "--store", store, "--state-key", "state_key"
    )
    server = ServeProcess(arguments, env)
    process = subprocess.Popen(
        [sys.executable, "-m", "flowlang", "serve", *server.arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _, errors = process.communicate(timeout=WAIT)
        text = errors.decode()
        assert process.returncode == status, text
        assert said in text
        assert "listening on" not in text
        assert "Traceback" not in text
        assert _group_is_empty(process.pid)
        assert [path for path in tmp_path.iterdir() if path.name.startswith("flowlang-")] == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.parametrize(
    "count", ["0", "-1", "1000", "65", "abc", "", "1.5", "٣", "1_0", " 2", "2\x1b[31m"]
)
def test_a_bad_worker_count_is_a_usage_error(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "x.yaml", "--public-url", PUBLIC_URL, "--workers", count])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"from 1 to {MAX_WORKERS}" in error
    assert "\x1b" not in error


@given(st.text(max_size=8))
def test_a_worker_count_is_one_to_the_cap_or_refused(text: str) -> None:
    try:
        number = worker_count(text)
    except argparse.ArgumentTypeError:
        pass
    else:
        assert 1 <= number <= MAX_WORKERS and str(number) == text.lstrip("0")


def test_several_workers_need_a_shared_store(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "x.yaml", "--public-url", PUBLIC_URL, "--workers", "2"])
    assert status == 2
    assert "in-process store cannot be shared" in capsys.readouterr().err


def test_a_metrics_folder_needs_several_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["serve", "x.yaml", "--public-url", PUBLIC_URL, "--metrics-dir", str(tmp_path)]
    assert main(arguments) == 2
    assert "--metrics-dir is for --workers above 1" in capsys.readouterr().err


def test_a_metrics_folder_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "metrics"
    file.write_text("x")
    arguments = serve_arguments(
        tmp_path, "--workers", "2", "--store", "redis://127.0.0.1:1/0", "--state-key", "k"
    )
    assert main(["serve", *arguments, "--metrics-dir", str(file)]) == 2
    assert "--metrics-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec",
    [b"", b"not json\n", b"\xff\xfe\n", b'{"index": 2}\n', b"[" * 100_000 + b"\n", b"{}\n"],
    ids=["empty", "malformed", "non-utf8", "other-index", "deep", "no-fields"],
)
def test_a_worker_started_by_hand_says_how_it_is_started(spec: bytes) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "flowlang.cli.serve_console", "1"],
        input=spec,
        capture_output=True,
        timeout=WAIT,
        start_new_session=True,
        env={**os.environ, "FLOWLANG_SECRET_STATE_KEY": "s" * 40},
    )
    assert process.returncode == 2
    assert b"started by flowlang serve --workers" in process.stderr
    assert b"Traceback" not in process.stderr
    assert b"s" * 40 not in process.stderr


#: A stand-in worker for the supervisor's own tests: reads its spec, then behaves as told.
FAKE_WORKER = """
import json, os, signal, sys, time
spec = json.loads(sys.stdin.readline())
mode = sys.argv[1]
if mode == "fails-at-start":
    sys.exit(3)
if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode != "silent":
    os.write(spec["ready"], b"ready\\n")
if mode == "dies":
    time.sleep(0.2)
    sys.exit(1)
time.sleep(60)
"""

#: Runs a Supervisor of fake workers in its own process (group), as the parent would.
SUPERVISE = """
import os, signal, socket, sys
from pathlib import Path
from flowlang.cli.serve_workers import Supervisor
mode, metrics = sys.argv[1], Path(sys.argv[2])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()

def ready(pids):
    print("all ready", pids, file=sys.stderr, flush=True)
    if mode == "deaf":
        os.kill(os.getpid(), signal.SIGTERM)

supervisor = Supervisor(
    count=2, sock=sock, spec={}, env=dict(os.environ), stop_wait=1.0, metrics=metrics,
    on_ready=ready, command=lambda index: [sys.executable, "-c", sys.argv[3], mode],
    start_timeout=1.0, max_restarts=3, backoff=0.0,
)
sys.exit(supervisor.run())
"""


@pytest.mark.parametrize(
    ("mode", "status", "said"),
    [
        ("dies", 1, "workers died 4 times within 60 s; stopping"),
        ("fails-at-start", 1, "exited with status 3 before it was ready"),
        ("silent", 1, "did not start within 1 s before it was ready"),
        ("deaf", 0, "did not stop in time; killed"),
    ],
)
def test_the_supervisor_bounds_deaths_starts_and_stops(
    mode: str, status: int, said: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, mode, str(tmp_path), FAKE_WORKER],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, errors = process.communicate(timeout=WAIT)
        text = errors.decode()
        assert process.returncode == status, text
        assert said in text
        assert ("flowlang serve: stopped" in text) == (status == 0)
        assert "Traceback" not in text
        assert _group_is_empty(process.pid)
        assert time.monotonic() - began < 15
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_workers_stop_when_the_parent_is_killed_alone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {**secret_environment(), "TMPDIR": str(tmp_path)}
    server = ServeProcess(
        serve_arguments(
            tmp_path, "--workers", "2", "--store", redis_server.url, "--state-key", "state_key"
        ),
        env,
    ).start()
    try:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(WAIT)
        assert _group_is_empty(server.process.pid)  # the workers saw their lifeline end
    finally:
        server.kill()


SLOW_WORKFLOW = """\
workflow: slow-note
trigger: test.slow
actions:
  - name: note
    type: api_request
    endpoint: https://crm.example.com/api/slow
    method: POST
    values:
      - {key: note, value: "<<event.properties.note>>", format: string}
"""


def _owner_pid(store: Path, event_id: str, pids: list[int]) -> int:
    """The pid of the worker that owns the open event ``event_id`` of ``store``: the one
    holding its owner's lock file open."""
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)) as db:
        (owner,) = db.execute(
            "SELECT owner FROM events WHERE key = ? AND done_no IS NULL", (event_key(event_id),)
        ).fetchone()
    lock = f"{store}.owners/{owner}.lock"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                    return pid
    raise AssertionError(f"no worker holds {lock}")


def _post_events(server: ServeProcess, events: list[dict[str, object]]) -> list[int]:
    async def post() -> list[int]:
        async with _client(server) as client:
            headers = {"Authorization": f"Bearer {EVENT_TOKEN}"}
            answers = await asyncio.gather(
                *(client.post("/events", json=event, headers=headers) for event in events)
            )
        return [answer.status_code for answer in answers]

    return asyncio.run(post())


def _slow_workers(tmp_path: Path, redis_server: RedisServer, delay: float) -> ServeProcess:
    workflow = tmp_path / "slow.yaml"
    workflow.write_text(SLOW_WORKFLOW)
    responses = tmp_path / "slow.responses.yaml"
    responses.write_text(
        "- {request: POST https://crm.example.com/api/slow, status: 200, body: {},"
        f" delay: {delay}}}\n"
    )
    arguments = serve_arguments(
        tmp_path,
        "--workers", "2",
        *_redis(redis_server),
        "--events-store", str(tmp_path / "events.db"),
        files=[str(workflow)],
    )  # fmt: skip
    arguments[arguments.index("--responses") + 1] = str(responses)
    return ServeProcess(arguments, {**secret_environment(), "TMPDIR": str(tmp_path)})


def _deliveries(server: ServeProcess) -> float:
    """Actions delivered, summed over every worker (its /metrics)."""
    page = httpx.get(f"{server.url}/metrics", timeout=10, trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        if family.name == "flowlang_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "delivered"
    )


def test_a_killed_workers_events_are_taken_over_once_it_is_restarted(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """One store for both workers: the worker holding an event is SIGKILLed while its delivery
    waits; the worker started again takes the event over (its owner's lock went with the
    process) and finishes it; nothing is dead-lettered."""
    server = _slow_workers(tmp_path, redis_server, 2).start()
    store = tmp_path / "events.db"
    try:
        pids = _pids(server)
        event = {"id": "evt-slow-1", "type": "test.slow", "properties": {"note": "hi"}}
        assert _post_events(server, [event]) == [202]
        owner = _owner_pid(store, "evt-slow-1", pids)
        os.kill(owner, signal.SIGKILL)  # while its delivery waits on the CRM
        assert store_event(store, "evt-slow-1") == "open"
        index = pids.index(owner) + 1
        _wait_for_line(server, f"worker {index} is ready again")
        deadline = time.monotonic() + WAIT
        while store_event(store, "evt-slow-1") != "done":
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        assert store_rows(store, "dead") == 0
        assert "resumed 1 unfinished events" in server.output()
        assert "Traceback" not in server.output()
    finally:
        server.kill()


def test_two_workers_on_one_store_run_each_event_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Each of 20 events sent three times at once, on new connections spread over both
    workers: each accepted once (202, then 200 duplicate), delivered once."""
    server = _slow_workers(tmp_path, redis_server, 0).start()
    store = tmp_path / "events.db"
    try:
        events = [
            {"id": f"evt-{number}", "type": "test.slow", "properties": {"note": str(number)}}
            for number in range(20)
        ]
        statuses = _post_events(server, [event for event in events for _ in range(3)])
        assert statuses.count(202) == 20 and statuses.count(200) == 40, statuses
        _all_finished(store)
        assert store_rows(store, "events") == 20
        deadline = time.monotonic() + WAIT
        while _deliveries(server) < 20:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        time.sleep(0.3)
        assert _deliveries(server) == 20
    finally:
        server.kill()


# -- the metrics folder: only a private real directory, only prometheus_client's files --------


def _metrics_refused(folder: Path, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        metrics_folder(str(folder))
    assert said in str(refused.value)
    assert "--metrics-dir" in str(refused.value)


def test_a_metrics_folder_holding_a_link_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim.conf"
    victim.write_text("important = yes\n")
    elsewhere = tmp_path / "elsewhere.bin"
    (folder / "histogram_4242.db").symlink_to(victim)
    (folder / "counter_4243.db").symlink_to(elsewhere)  # dangling: a worker would create it
    (folder / "counter_1.db").write_bytes(b"stale")
    _metrics_refused(folder, "holds symbolic links (counter_4243.db, histogram_4242.db)")
    assert victim.read_text() == "important = yes\n"
    assert not elsewhere.exists()
    assert (folder / "histogram_4242.db").is_symlink()  # nothing removed from a refused folder
    assert (folder / "counter_1.db").exists()
    arguments = serve_arguments(
        tmp_path, "--workers", "2", "--store", "redis://127.0.0.1:1/0", "--state-key", "k"
    )
    assert main(["serve", *arguments, "--metrics-dir", str(folder)]) == 2
    error = capsys.readouterr().err
    assert "holds symbolic links" in error and "Traceback" not in error


def test_a_metrics_folder_with_many_links_names_a_few(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir(mode=0o700)
    for pid in range(1000):
        (folder / f"counter_{pid}.db").symlink_to(tmp_path / "nowhere")
    _metrics_refused(folder, "and 997 more): refused")


def test_a_metrics_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "metrics"
    link.symlink_to(real)
    _metrics_refused(link, "not a directory (a symbolic link or a file)")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
def test_a_metrics_folder_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    folder.chmod(mode)
    (folder / "counter_1.db").write_bytes(b"stale")
    _metrics_refused(folder, f"writable by group or others (mode {mode:o})")
    assert (folder / "counter_1.db").exists()


def test_a_metrics_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: folder.stat().st_uid + 1)
    _metrics_refused(folder, "owned by another user")


def test_a_metrics_folder_loses_only_the_files_prometheus_client_writes(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir(mode=0o755)
    removed = [
        "counter_1.db", "histogram_22.db", "summary_333.db", "gauge_livesum_4.db",
        "gauge_all_5.db", "gauge_mostrecent_6.db",
    ]  # fmt: skip
    kept = [
        "keep.txt", "other.db", "counter_x.db", "counter_.db", "gauge_7.db", "counter_1.db.bak",
        "info_8.db", "gauge_LIVE_9.db", "counter_١.db", "notes_counter_1.db",
    ]  # fmt: skip
    for name in removed + kept:
        (folder / name).write_bytes(b"x")
    (folder / "summary_10.db").mkdir()  # not a regular file: kept
    assert metrics_folder(str(folder)) == (folder, False)
    assert sorted(path.name for path in folder.iterdir()) == sorted([*kept, "summary_10.db"])


def test_a_missing_metrics_folder_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "metrics"
    assert metrics_folder(str(folder)) == (folder, False)
    assert folder.is_dir() and folder.stat().st_mode & 0o077 == 0


@given(st.text(max_size=30))
def test_metric_file_names_match_prometheus_client_naming(name: str) -> None:
    if metric_file(name):
        prefix, _, pid = name.removesuffix(".db").rpartition("_")
        assert pid.isascii() and pid.isdigit()
        assert prefix in ("counter", "histogram", "summary") or (
            prefix.startswith("gauge_") and prefix[6:].isascii() and prefix[6:].isalpha()
        )


# -- the events store: one file for every worker; a hostile one is a clear usage error --------


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Make a file or folder read-only, even for root (``chattr +i``: immutable; skipped where
    it cannot be), and writable again at the end."""
    made: list[Path] = []

    def make(path: Path) -> None:
        path.chmod(0o500 if path.is_dir() else 0o444)
        if os.geteuid() != 0:
            return
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("root writes through read-only permissions, and chattr +i fails here")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
        path.chmod(0o700)


def _hostile_store(
    tmp_path: Path, kind: str, read_only: Callable[[Path], None]
) -> tuple[Path, str]:
    """A store path of the hostile ``kind`` and what the refusal says of it."""
    path = tmp_path / "events.db"
    if kind == "dangling-link":
        path.symlink_to(tmp_path / "nowhere.db")
        return path, "is a symbolic link to nothing: refused"
    if kind == "link-to-device":
        path.symlink_to("/dev/zero")
        return path, "is not a regular file (a device, FIFO or directory): refused"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block
        return path, "is not a regular file (a device, FIFO or directory): refused"
    if kind == "directory":
        path.mkdir()
        return path, "is not a regular file (a device, FIFO or directory): refused"
    if kind == "json-lines":  # an old journal given as the store
        path.write_text('{"kind": "event", "event": {"id": "e", "type": "t"}}\n')
        return path, "is not a flowlang store (not an SQLite database)"
    if kind == "binary":
        path.write_bytes(b"\xff\xfe\x00" * 1000)
        return path, "is not a flowlang store (not an SQLite database)"
    if kind == "other-sqlite":
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE customers (name TEXT)")
            db.commit()
        return path, "is an SQLite database that is not a flowlang store"
    if kind == "folder-is-a-file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "events.db", "cannot be"
    if kind == "read-only-folder":
        folder = tmp_path / "ro"
        folder.mkdir()
        read_only(folder)
        return folder / "events.db", "cannot be"
    if kind == "read-only-file":
        path.write_bytes(b"")
        read_only(path)
        return path, "is read-only"
    raise AssertionError(kind)


HOSTILE_STORES = [
    "dangling-link",
    "link-to-device",
    "fifo",
    "directory",
    "json-lines",
    "binary",
    "other-sqlite",
    "folder-is-a-file",
    "read-only-folder",
    "read-only-file",
]


@pytest.mark.parametrize("kind", HOSTILE_STORES)
def test_a_hostile_events_store_stops_workers_before_they_start(
    kind: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    read_only: Callable[[Path], None],
) -> None:
    """Checked once by the parent of --workers: exit 2 naming the file, nothing started."""
    path, said = _hostile_store(tmp_path, kind, read_only)
    arguments = serve_arguments(tmp_path, "--events-store", str(path))
    calls = ("--store", "redis://127.0.0.1:1/0", "--state-key", "state_key")
    assert main(["serve", *arguments, "--workers", "2", *calls]) == 2
    error = capsys.readouterr().err
    assert f"flowlang: store {path} " in error and said in error, error
    assert "Traceback" not in error


@pytest.mark.parametrize("kind", ["dangling-link", "fifo", "json-lines", "read-only-folder"])
def test_a_hostile_events_store_stops_one_process_before_it_listens(
    kind: str, tmp_path: Path, read_only: Callable[[Path], None]
) -> None:
    path, said = _hostile_store(tmp_path, kind, read_only)
    server = ServeProcess(serve_arguments(tmp_path, "--events-store", str(path)))
    process = subprocess.run(
        [sys.executable, "-m", "flowlang", "serve", *server.arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=WAIT,
        env=server.env,
        start_new_session=True,
    )
    error = process.stderr.decode()
    assert process.returncode == 2, error
    assert f"store {path} " in error and said in error, error
    assert "Traceback" not in error and "listening on" not in error
    for secret in SECRETS.values():
        assert secret not in error


def test_a_store_locked_by_a_long_transaction_is_refused_after_the_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.db"
    arguments = serve_arguments(tmp_path, "--events-store", str(path))
    calls = ("--store", "redis://127.0.0.1:1/0", "--state-key", "state_key")
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE held (x)")
        holder.execute("BEGIN EXCLUSIVE")
        began = time.monotonic()
        assert main(["serve", *arguments, "--workers", "2", *calls]) == 2
        assert time.monotonic() - began < WAIT
        holder.execute("ROLLBACK")
    error = capsys.readouterr().err
    assert f"store {path} " in error and "locked by another process" in error, error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ((), "give --events-store FILE"),
        (("--events-store", "e.db", "--no-events-store"), "cannot both be given"),
        (("--events-store", "e.db", "--broker", "redis://127.0.0.1:1/0"), "not used with --broker"),
    ],
)
def test_the_events_store_options_are_checked(
    extra: tuple[str, ...], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [a for a in serve_arguments(tmp_path) if a != "--no-events-store"]
    assert main(["serve", *arguments, *extra]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "e.db").exists()


def test_journal_options_are_gone(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--journal", "--no-journal", "--dead-letter"):
        with pytest.raises(SystemExit) as stopped:
            main(["serve", "x.yaml", "--public-url", PUBLIC_URL, option, "f"])
        assert stopped.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


# -- SIGHUP (a closed terminal) stops gracefully -------------------------------------------------


def test_sighup_stops_the_supervisor_and_its_workers_cleanly(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**secret_environment(), "TMPDIR": str(temporary)}
    arguments = serve_arguments(tmp_path, "--workers", "2", *_redis(redis_server))
    server = ServeProcess(arguments, env).start()
    try:
        assert server.process is not None
        assert len(list(temporary.iterdir())) == 1  # the temporary metrics folder
        os.kill(server.process.pid, signal.SIGHUP)  # the parent alone, as a terminal's hangup
        assert server.process.wait(WAIT) == 0
        assert _group_is_empty(server.process.pid)
        assert list(temporary.iterdir()) == []
        assert "flowlang serve: stopped" in server.output()
    finally:
        server.kill()


def test_sighup_stops_one_process_cleanly(tmp_path: Path) -> None:
    server = ServeProcess(serve_arguments(tmp_path)).start()
    try:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGHUP)
        assert server.process.wait(WAIT) == 0
        assert "flowlang serve: stopped" in server.output()
        assert "Traceback" not in server.output()
    finally:
        server.kill()
