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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from flowlang.cli import main
from flowlang.cli.inputs import UsageError
from flowlang.cli.serve import MAX_WORKERS, worker_count
from flowlang.cli.serve_workers import (
    check_other_journals,
    indexed_path,
    metric_file,
    metrics_folder,
)
from tests.serve_process import ServeProcess, secret_environment, serve_arguments
from tests.serve_support import EVENT_TOKEN, PUBLIC_URL, SECRETS, TWILIO_TOKEN
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


def _ended(journal: Path) -> int:
    """How many call.ended events the journal ``journal`` recorded."""
    if not journal.exists():
        return 0
    records = [json.loads(line) for line in journal.read_text().splitlines() if line]
    return sum(
        1 for r in records if r.get("kind") == "event" and r["event"]["type"] == "call.ended"
    )


def _event_ids(journal: Path) -> set[str]:
    """The ids of the events the journal ``journal`` holds: recorded ones, and finished ones
    that a compaction (when a restarted worker reopens it) kept as ``seen`` lines."""
    if not journal.exists():
        return set()
    records = [json.loads(line) for line in journal.read_text().splitlines() if line]
    ids = {r["event"]["id"] for r in records if r.get("kind") == "event"}
    return ids | {r["event_id"] for r in records if r.get("kind") == "seen"}


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
        "--journal", str(tmp_path / "events.jsonl"),
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
    journals = [tmp_path / "events.1.jsonl", tmp_path / "events.2.jsonl"]
    # calls through one client to the shared port, until both workers answered some
    placed = 0
    for _ in range(MAX_ROUNDS):
        asyncio.run(_place(workers, ROUND))
        placed += ROUND
        if placed >= 20 and all(_ended(journal) for journal in journals):
            break
    ended = [_ended(journal) for journal in journals]
    assert all(ended), f"one worker answered nothing: {ended}"
    assert sum(ended) == placed
    assert len(_event_ids(journals[0]) | _event_ids(journals[1])) == placed  # only call.ended
    assert not (tmp_path / "events.jsonl").exists()
    # every worker's /metrics page counts every worker's runs
    assert asyncio.run(_runs_started(workers)) == [placed] * 3
    metrics = [path for path in (tmp_path / "tmp").iterdir() if path.name.startswith("flowlang")]
    assert len(metrics) == 1 and any(metrics[0].glob(f"*_{first}.db")), metrics

    # a worker killed like a crash is started again with its index; calls go on meanwhile
    os.kill(first, signal.SIGKILL)
    asyncio.run(_place(workers, ROUND))
    _wait_for_line(workers, "worker 1 is ready again")
    restarted = f"worker 1 (pid {first}) was killed by SIGKILL; starting it again"
    assert restarted in workers.output()
    asyncio.run(_place(workers, ROUND))
    placed += 2 * ROUND
    assert asyncio.run(_runs_started(workers)) == [placed] * 3
    assert len(_event_ids(journals[0]) | _event_ids(journals[1])) == placed

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
    ("given", "index", "expected"),
    [
        ("events.jsonl", 1, "events.1.jsonl"),
        ("/var/log/fl/events.jsonl", 12, "/var/log/fl/events.12.jsonl"),
        ("events", 2, "events.2"),
        ("events.tar.jsonl", 3, "events.tar.3.jsonl"),
        (".journal", 2, ".journal.2"),
    ],
)
def test_a_worker_journal_has_the_index_before_the_suffix(
    given: str, index: int, expected: str
) -> None:
    assert indexed_path(given, index) == Path(expected)
    assert indexed_path(None, index) is None


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


def _journal_has(journal: Path, event_id: str, kinds: set[str]) -> bool:
    if not journal.exists():
        return False
    for line in journal.read_text().splitlines():
        record = json.loads(line) if line else {}
        found = record.get("event_id") or record.get("event", {}).get("id")
        if found == event_id and record.get("kind") in kinds:
            return True
    return False


def test_a_restarted_worker_finishes_the_events_of_its_journal(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    workflow = tmp_path / "slow.yaml"
    workflow.write_text(SLOW_WORKFLOW)
    responses = tmp_path / "slow.responses.yaml"
    responses.write_text(
        "- {request: POST https://crm.example.com/api/slow, status: 200, body: {}, delay: 2}\n"
    )
    arguments = serve_arguments(
        tmp_path,
        "--workers", "2",
        *_redis(redis_server),
        "--journal", str(tmp_path / "events.jsonl"),
        files=[str(workflow)],
    )  # fmt: skip
    arguments[arguments.index("--responses") + 1] = str(responses)
    server = ServeProcess(arguments, {**secret_environment(), "TMPDIR": str(tmp_path)}).start()
    try:
        pids = _pids(server)
        event = {"id": "evt-slow-1", "type": "test.slow", "properties": {"note": "hi"}}

        async def post() -> httpx.Response:
            async with _client(server) as client:
                headers = {"Authorization": f"Bearer {EVENT_TOKEN}"}
                return await client.post("/events", json=event, headers=headers)

        assert asyncio.run(post()).status_code == 202
        journals = {index: tmp_path / f"events.{index}.jsonl" for index in (1, 2)}
        (index,) = [
            i for i, path in journals.items() if _journal_has(path, "evt-slow-1", {"event"})
        ]
        os.kill(pids[index - 1], signal.SIGKILL)  # while its delivery waits on the CRM
        assert not _journal_has(journals[index], "evt-slow-1", {"done", "seen"})
        _wait_for_line(server, f"worker {index} is ready again")
        deadline = time.monotonic() + WAIT
        while not _journal_has(journals[index], "evt-slow-1", {"done"}):
            assert time.monotonic() < deadline, journals[index].read_text()
            time.sleep(0.1)
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


# -- journals this run would never resume ------------------------------------------------------


def _event_line(event_id: str, secret: str = "") -> str:
    event = {"id": event_id, "type": "contact.updated", "properties": {"note": secret}}
    return json.dumps({"kind": "event", "at": time.time(), "event": event}) + "\n"


def _done_line(event_id: str) -> str:
    return json.dumps({"kind": "done", "event_id": event_id}) + "\n"


def test_journals_of_other_worker_counts_with_unfinished_events_are_refused(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "events.jsonl"
    secret = SECRETS["event_token"]
    journal.write_text(_event_line("left-by-one-process", secret))
    (tmp_path / "events.3.jsonl").write_text(_event_line("a") + _event_line("b"))
    (tmp_path / "events.1.jsonl").write_text(_event_line("read-by-worker-1"))  # this run's own
    (tmp_path / "events.4.jsonl").write_text(_event_line("c") + _done_line("c"))  # finished
    (tmp_path / "events.5.jsonl").write_text(json.dumps({"kind": "seen", "event_id": "d"}))
    (tmp_path / "events.6.jsonl").write_text("")
    with pytest.raises(UsageError) as refused:
        check_other_journals(str(journal), 2)
    said = str(refused.value)
    assert f"{journal} (1 unfinished event);" in said
    assert f"{tmp_path / 'events.3.jsonl'} (2 unfinished events)" in said
    for other in ("events.1.", "events.2.", "events.4.", "events.5.", "events.6."):
        assert other not in said
    assert "events.jsonl: without --workers; events.K.jsonl: --workers K or more" in said
    assert "it resumes the journal's unfinished events" in said
    assert secret not in said
    journal.write_text(_event_line("e") + _done_line("e"))  # finished now
    check_other_journals(str(journal), 3)  # events.3.jsonl is read by this run's worker 3
    with pytest.raises(UsageError):
        check_other_journals(str(journal), 2)


def test_one_process_refuses_unfinished_worker_journals(tmp_path: Path) -> None:
    journal = tmp_path / "events"
    journal.write_text(_event_line("its-own"))
    check_other_journals(str(journal), 1)
    (tmp_path / f"events.{MAX_WORKERS}").write_text(_event_line("left-by-the-last-worker"))
    with pytest.raises(UsageError) as refused:
        check_other_journals(str(journal), 1)
    assert f"events.{MAX_WORKERS} (1 unfinished event)" in str(refused.value)
    assert "events: without --workers; events.K: --workers K or more" in str(refused.value)
    check_other_journals(None, 1)


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not utf-8\n",
        b"{" * 100_000 + b"\n",
        b'{"kind": "event", "event": {"id": 5}}\n',
        b'{"kind": "event", "event": {"id": "torn"',
        b"[]\n" * 10_000,
    ],
)
def test_unreadable_journal_lines_are_skipped_as_the_journal_skips_them(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "events.3.jsonl").write_bytes(content)
    check_other_journals(str(tmp_path / "events.jsonl"), 2)


def test_a_journal_that_is_not_a_file_is_named_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "events.3.jsonl")  # reading a FIFO would block
    (tmp_path / "events.jsonl").mkdir()
    with pytest.raises(UsageError) as refused:
        check_other_journals(str(tmp_path / "events.jsonl"), 2)
    said = str(refused.value)
    assert f"{tmp_path / 'events.3.jsonl'} (cannot be read:" in said
    assert f"{tmp_path / 'events.jsonl'} (cannot be read:" in said


def test_many_events_are_counted_a_line_at_a_time(tmp_path: Path) -> None:
    lines = [_event_line(f"e{i}") + (_done_line(f"e{i}") if i % 2 else "") for i in range(5000)]
    (tmp_path / "events.2.jsonl").write_text("".join(lines))
    with pytest.raises(UsageError) as refused:
        check_other_journals(str(tmp_path / "events.jsonl"), 1)
    assert "(2500 unfinished events)" in str(refused.value)


def test_serve_refuses_a_start_that_would_leave_a_journal_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "events.jsonl"
    orphan = tmp_path / "events.3.jsonl"
    orphan.write_text(_event_line("left-by-worker-3"))
    arguments = serve_arguments(tmp_path, "--journal", str(journal))
    store = ("--store", "redis://127.0.0.1:1/0", "--state-key", "state_key")
    assert main(["serve", *arguments, "--workers", "2", *store]) == 2
    assert main(["serve", *arguments]) == 2  # one process: the same refusal
    error = capsys.readouterr().err
    assert error.count(f"{orphan} (1 unfinished event)") == 2
    assert "--workers K or more" in error
    assert "Traceback" not in error and not journal.exists()
    orphan.write_text(_event_line("left-by-worker-3") + _done_line("left-by-worker-3"))
    check_other_journals(str(journal), 2)  # finished (by serve --workers 3): serve starts now


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
