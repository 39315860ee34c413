"""Hostile-input suite for the red-team findings on automations (issue 8, items 8, 11/15, 22,
23): mask first then cut, store columns checked, bounded reads and paths, one replay at a time.

Every evaluation here runs on the backend the process uses; the suite runs once with
FLOWLANG_NO_EXTENSIONS=1 and once with FLOWLANG_REQUIRE_EXTENSIONS=1 (``make test``), and the
flow tests also take the ``backend`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import serve
from support import FakeClock, automate_argv, clean_env, cli, store_text, stored_dead_letters

import flowlang
from flowlang import Engine, MappingSecrets, Runtime, RuntimeSettings
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    LocalStore,
    load_workflow_text,
)
from flowlang.automations import records as records_module
from flowlang.automations.dispatch import idempotency_key
from flowlang.automations.formats import ValueFormatError
from flowlang.automations.records import EventError, LineTooLongError, check_event, read_records
from flowlang.cli import automate_console as automations_console
from flowlang.expr import shared
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult

#: A JWT of 120 characters, as in the red-team reproducer.
JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjcm0tc2VydmljZSIsInNjb3BlIjoiYWRtaW4ifQ."
    "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6"
)
#: A secret longer than every cut the code had (80, 200, 500 characters).
LONG = "sk_live_" + "".join(f"{n:04d}Zq" for n in range(100))  # 608 characters


def leaked(secret: str, text: str, piece: int = 16) -> list[str]:
    """Every stretch of ``piece`` characters of ``secret`` found in ``text``."""
    return [
        secret[start : start + piece]
        for start in range(0, len(secret) - piece + 1)
        if secret[start : start + piece] in text
    ]


def flowlang_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flowlang.cli", *argv]


def no_responses(folder: Path) -> str:
    """A recorded-responses file with none (an offline run that sends nothing)."""
    path = folder / "none.yaml"
    path.write_text("[]\n")
    return str(path)


# --- item 23: mask first, then cut ----------------------------------------------------------


def boom(value: Any) -> Any:
    raise ValueError(f"cannot use {value}")


def test_shorten_cuts_only_long_text() -> None:
    assert shared.shorten("abc", 3) == "abc"
    assert shared.shorten("abcd", 3) == "abc…"


def test_a_filter_error_keeps_the_whole_value(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(filters={"boom": boom})
    with pytest.raises(flowlang.FlowError) as caught:
        engine.render("<<value | boom>>", {"value": LONG})
    assert LONG in shared.whole_text(caught.value)  # whole: a run masks it, then cuts it
    assert len(str(caught.value)) < 300  # shown cut, for readers without a redactor


def test_a_huge_filter_message_is_left_out_not_cut(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(filters={"boom": boom}, limits=flowlang.Limits(max_output=10**7))
    with pytest.raises(flowlang.FlowError) as caught:
        engine.render("<<value | boom>>", {"value": "x" * (2 * 1024 * 1024)})
    whole = shared.whole_text(caught.value)
    assert "characters, not shown" in whole and len(whole) < 200


@pytest.mark.parametrize("padding", [0, 150, 190, 1990])
def test_a_long_secret_in_a_flow_error_is_masked_before_the_cut(backend: str, padding: int) -> None:
    """A filter error holding a secret longer than the old 200-character cut, at offsets that
    straddle the cuts (200 in the filter error, shared.MAX_SHOWN_ERROR in the run's error)."""
    engine = Engine(backend=backend, strict=True, filters={"boom": boom})
    flow = flowlang.load_flow_text(
        "flow: f\nstart: s\nsteps:\n  s:\n    type: http_request\n"
        "    endpoint: https://crm.test/x\n"
        f"    headers: {{X-Key: '{'p' * padding}<<secrets.api_key | boom>>'}}\n"
        "    next: e\n    on_failure: e\n  e: {type: hangup}\n",
        engine=engine,
    )

    async def run() -> flowlang.RunResult:
        runtime = Runtime(
            secrets=MappingSecrets({"api_key": LONG}),
            settings=RuntimeSettings(allow_hosts=frozenset({"crm.test"})),
            backend=backend,
        )
        async with runtime:
            return await runtime.start(flow, {})

    result = asyncio.run(run())
    assert result.status == "failed"
    assert result.error is not None and "[redacted]" in result.error
    assert len(result.error) <= shared.MAX_SHOWN_ERROR + 1
    everything = json.dumps(result.to_json()) + repr(result)
    assert leaked(LONG, everything) == []


def test_a_value_format_error_carries_the_whole_value() -> None:
    assert JWT in str(ValueFormatError("score", "number", JWT))


def test_an_event_error_names_the_whole_id() -> None:
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(EventError) as caught:
        check_event({"id": LONG, "type": "t", "deep": deep})
    assert ascii(LONG) in str(caught.value)


SCORE = """
workflow: wf
trigger: call.missed
actions:
  - name: note
    type: api_request
    endpoint: https://crm.example.com/api/activities
    headers: {Authorization: "Bearer <<secrets.crm_token>>"}
    values:
      - {key: score, value: "<<secrets.crm_token>>", format: number}
"""


@pytest.mark.parametrize("as_json", [True, False])
def test_a_long_secret_in_a_value_format_error_is_masked_everywhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    """The red-team reproducer: a 120-character JWT as a number showed its first 80
    characters in --json, the summary and the dead letter."""
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", JWT)
    (tmp_path / "wf.yaml").write_text(SCORE)
    (tmp_path / "events.jsonl").write_text('{"id": "e1", "type": "call.missed"}\n')
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/api/activities, status: 200, body: {}}\n"
    )
    status, out = cli(
        *automate_argv(tmp_path, store="s.db"),
        *(["--json"] if as_json else []),
    )
    assert status == 1  # 1: dead-lettered
    written = out + capsys.readouterr().err
    written += json.dumps(stored_dead_letters(tmp_path / "s.db")) + store_text(tmp_path / "s.db")
    assert "[redacted]" in written and "not a number" in written
    assert leaked(JWT, written) == []


CUSTOM = """
workflow: custom
trigger: call.ended
actions:
  - name: send
    type: api_request
    endpoint: https://crm.example.com/send
    headers: {X-Key: "{pad}<<secrets.crm_token | boom>>"}
"""


@pytest.mark.parametrize("padding", [0, 420, 1950])
def test_an_unexpected_error_holding_a_long_secret_is_masked_before_the_cut(
    tmp_path: Path, padding: int
) -> None:
    """An unexpected exception (here a filter's) whose message holds a secret across the old
    500-character cut and the output's MAX_SHOWN_ERROR: the delivery and the dead letter."""
    workflow = load_workflow_text(
        CUSTOM.replace("{pad}", "p" * padding), engine=Engine(filters={"boom": boom})
    )
    sent: list[PreparedRequest] = []

    class Http:
        async def send(self, request: PreparedRequest, **_: Any) -> HttpResult:
            sent.append(request)
            return HttpResult("success", 200, {}, {})

    class Clock:
        def now(self) -> float:
            return 1_800_000_000.0

        async def sleep(self, seconds: float) -> None:
            return None

    dead = tmp_path / "dead.jsonl"
    engine = Automations(
        [workflow],
        settings=DeliverySettings(schedule=(0, 1)),
        http=Http(),
        secrets=MappingSecrets({"crm_token": LONG}),
        clock=Clock(),
        dead_letters=DeadLetterStore(dead),
    )
    result = asyncio.run(engine.dispatch({"id": "e1", "type": "call.ended"}))
    [delivery] = result.deliveries
    assert delivery.outcome == "dead_lettered" and not sent
    assert delivery.error is not None and "[redacted]" in delivery.error
    assert leaked(LONG, delivery.error) == []
    [record] = DeadLetterStore.read(dead)
    assert "[redacted]" in record["error"] and len(record["error"]) <= shared.MAX_SHOWN_ERROR + 1
    assert leaked(LONG, dead.read_text()) == []


# --- item 8: every store column is type- and range-checked ----------------------------------

GOOD = {"kind": "event", "event": {"id": "good", "type": "x"}, "at": 1.0}
#: Workflows of the store tests: one action each, so a resumed event sends one request.
ONE_ACTION = """
workflow: w
trigger: call.ended
actions:
  - {name: a, type: api_request, endpoint: https://crm.example.com/a}
"""
#: Hostile values written by hand into one column of a store holding one open event (its
#: action settled in another workflow, a speech operation, a recorded retry), each a
#: (table, column, SQL value) triple.
HOSTILE_COLUMNS: list[tuple[str, str, str]] = [
    ("events", "at", "1" + "0" * 400),
    ("events", "at", "-1e400"),
    ("events", "at", "'yesterday'"),
    ("events", "owner", "x'00ff'"),
    ("events", "owner", "'../../etc/passwd'"),
    ("events", "owner", "CAST(x'ff' AS TEXT)"),
    ("events", "owner", "42"),
    ("events", "event", '\'{"id": 5, "type": "x"}\''),
    ("events", "event", "'[1, 2]'"),
    ("events", "event", "x'ff'"),
    ("events", "done_no", "'soon'"),
    ("settled", "workflow", "'[\"w\"]'"),
    ("settled", "outcome", "7"),
    ("settled", "result", "'{'"),
    ("settled", "action", "x'c0'"),
    ("workflows_done", "workflow", "'1' || '" + "0" * 400 + "'"),
    ("operations", "name", "'{}'"),
    ("operations", "key", "x'80'"),
    ("retries", "number", "'second'"),
    ("retries", "number", "-3"),
    ("retries", "number", "1" + "0" * 30),
    ("retries", "due", "'yesterday'"),
    ("retries", "due", "1e400"),
    ("retries", "due", "1e300"),
    ("flowlang_store", "value", "'many'"),
]


def _hostile_store(path: Path, table: str, column: str, value: str) -> None:
    """A store with one open event of a gone process, then ``table.column`` set to ``value``."""
    with LocalStore(path) as store:
        event = {"id": "good", "type": "call.ended"}
        assert store.accept("good", event, 1.0, 10.0)
        store.settle("good", "other", "b", "delivered", {"ok": 1})
        store.workflow_done("good", "other")
        store.operation("good", "op-key", "operations/1")
        store.schedule_retry("good", idempotency_key("good", "w", "a"), 2, 5.0)
    with sqlite3.connect(path) as db:
        if table == "flowlang_store":
            db.execute(f"UPDATE flowlang_store SET value = {value} WHERE name = 'finished'")
        else:
            db.execute(f"UPDATE {table} SET {column} = {value}")


def _resume_from(path: Path, http: Any) -> tuple[list[str], list[Any]]:
    """What a new process on the store reports and resumes (checked to end within 20 s)."""
    with LocalStore(path) as store:
        engine = Automations(
            [load_workflow_text(ONE_ACTION)],
            settings=DeliverySettings(schedule=(0, 1, 1), dedup_window=10.0),
            http=http,
            secrets=MappingSecrets({}),
            clock=FakeClock(),
            store=store,
        )

        async def resume() -> list[Any]:
            return await asyncio.wait_for(engine.resume(), 20)

        results = asyncio.run(resume())
        return list(engine.problems), results


@pytest.mark.parametrize(
    ("table", "column", "value"),
    HOSTILE_COLUMNS,
    ids=[f"{t}.{c}={v[:12]}" for t, c, v in HOSTILE_COLUMNS],
)
def test_a_hostile_store_column_is_reported_or_harmless_never_a_traceback(
    tmp_path: Path, table: str, column: str, value: str
) -> None:
    """A damaged or hand-edited row never ends a run with a traceback nor a hang (a recorded
    due time 10^300 s away is waited for at most the longest wait): what cannot be read is
    a problem naming the store; the open event, when it reads back, is delivered (an owner
    that is not one a store writes counts as gone: its event is taken over)."""
    path = tmp_path / "s.db"
    _hostile_store(path, table, column, value)
    http = _CountingHttp()
    problems, results = _resume_from(path, http)
    assert all(str(path) in problem or "unfinished event" in problem for problem in problems)
    if table == "events" and column == "event":
        assert results == [] and len(problems) == 1  # the event itself is gone: reported
    elif not (table == "events" and column == "done_no"):  # finished, as far as it says
        [result] = results
        assert [d.outcome for d in result.deliveries] == ["delivered"], result.deliveries
        assert http.sent == 1


class _CountingHttp:
    """Delivers everything, counting the requests."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.sent += 1
        return HttpResult("success", 200, {}, {"ok": True})


#: JSON of the kind the store writes (and would read back).
STORE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)


def _sql_text(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


#: Values an edit may write into a column (SQL literals): odd types, bytes, JSON, text.
SQL_VALUES = st.one_of(
    st.sampled_from(["NULL", "x'ff'", "x''", "'{'", "'[]'", "'null'", "1e400", "-1e400", "0"]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.text(max_size=8).map(lambda t: _sql_text(t.replace("\x00", ""))),
    STORE_JSON.map(json.dumps).map(_sql_text),
)
COLUMNS = st.sampled_from(
    [(t, c) for t, c, _ in HOSTILE_COLUMNS if t != "flowlang_store"]
    + [("settled", "event_key"), ("retries", "key"), ("events", "key")]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(COLUMNS, SQL_VALUES), min_size=1, max_size=4))
def test_no_store_content_ends_a_takeover(edits: list[tuple[tuple[str, str], str]]) -> None:
    with __import__("tempfile").TemporaryDirectory() as folder:
        path = Path(folder) / "s.db"
        _hostile_store(path, "settled", "outcome", "'delivered'")
        with sqlite3.connect(path) as db:
            for (table, column), value in edits:
                with contextlib.suppress(sqlite3.IntegrityError):  # a duplicate key: refused
                    db.execute(f"UPDATE {table} SET {column} = {value}")
        _resume_from(path, _CountingHttp())


@pytest.mark.parametrize(
    "fields",
    [
        {"action": 10**400},
        {"then": 10**300},
        {"results": [1, 2]},
        {"event": {"id": 10**300, "type": "x"}},
        {"workflow_source": 10**300},
        {"workflow_file": ["a"]},
    ],
)
def test_a_hostile_dead_letter_record_is_left_in_the_file(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    record = {
        "format": "flowlang.deadletter/1",
        "workflow_source": "workflow: w\ntrigger: x\nactions:\n"
        "  - {name: a, type: api_request, endpoint: 'https://crm.example.com/a'}\n",
        "action": "a",
        "event": {"id": "e", "type": "x"},
    } | fields
    dead = tmp_path / "dead.jsonl"
    dead.write_text(json.dumps(record) + "\n")
    status, _ = cli("replay", str(dead), "--responses", no_responses(tmp_path))
    assert status == 1
    assert json.loads(dead.read_text()) == json.loads(json.dumps(record))


# --- item 22: bounded reads, regular files only ----------------------------------------------


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=clean_env(), cwd=cwd
    )


def test_replay_of_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    existed = Path("/dev/zero.replay.lock").exists()
    process = _run(flowlang_command("replay", "/dev/zero"), tmp_path)
    assert process.returncode == 2
    assert "/dev/zero is not a regular file" in process.stderr
    assert existed or not Path("/dev/zero.replay.lock").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "dangling-link"])
def test_automate_refuses_a_store_path_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    """A FIFO blocked the run forever (and a lock was made next to it)."""
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "dev-zero":
        target = Path("/dev/zero")
    else:
        target.symlink_to(tmp_path / "nowhere.db")
    (tmp_path / "wf.yaml").write_text(SCORE.replace("<<secrets.crm_token>>", "1"))
    (tmp_path / "events.jsonl").write_text('{"id": "e1", "type": "call.missed"}\n')
    argv = ["automate", str(tmp_path / "wf.yaml"), "--events", str(tmp_path / "events.jsonl")]
    argv += ["--store", str(target)]
    process = _run(flowlang_command(*argv, "--responses", no_responses(tmp_path)), tmp_path)
    assert process.returncode == 2
    assert f"store {target} " in process.stderr and "Traceback" not in process.stderr
    assert "not a regular file" in process.stderr or "symbolic link" in process.stderr
    assert not Path(f"{target}.owners").exists() and not (tmp_path / "nowhere.db").exists()


def test_a_line_that_never_ends_refuses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b"\0" * 20_000)
    with pytest.raises(LineTooLongError, match=f"{path}:2 goes on past 5000 bytes"):
        read_records(path, limit=100, max_skip=5000)
    found, problems = read_records(path, limit=100, max_skip=50_000)
    assert [record for _, record in found] == [GOOD] and "longer than 100" in problems[0]
    with pytest.raises(records_module.RecordFileError):
        read_records(Path("/dev/zero"))


def test_replay_stops_at_a_line_that_never_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(automations_console, "MAX_RECORD_BYTES", 100)
    monkeypatch.setattr(automations_console, "MAX_RECORD_SKIP", 5000)
    dead = tmp_path / "dead.jsonl"
    dead.write_bytes(b"\n" + b"\0" * 20_000)
    status, _ = cli("replay", str(dead), "--responses", no_responses(tmp_path))
    assert status == 2
    assert "goes on past 5000 bytes" in capsys.readouterr().err
    assert dead.stat().st_size == 20_001  # left as it was


# --- items 11/15: one replay at a time per dead-letter file ----------------------------------

SCRIPTED = """
workflow: scripted
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "http://127.0.0.1:{port}/script/first"}
"""


def test_a_second_replay_of_one_file_is_refused_and_appends_go_on(tmp_path: Path) -> None:
    """Two real replays: the second exits 2 while the first holds the file; the first's
    request is the only one; an append (what automate does) is not held up meanwhile."""
    dead = tmp_path / "dead.jsonl"
    with serve(trustme.CA(), tls=False) as server:
        workflow = load_workflow_text(
            SCRIPTED.replace("{port}", str(server.port)), allow_hosts=["127.0.0.1"]
        )

        class Refusing:
            async def send(self, request: PreparedRequest, **_: Any) -> HttpResult:
                return HttpResult("http_error", 404, {}, {}, "HTTP 404")

        engine = Automations([workflow], http=Refusing(), dead_letters=DeadLetterStore(dead))
        for number in (1, 2):
            asyncio.run(engine.dispatch({"id": f"e{number}", "type": "call.ended"}))
        assert len(DeadLetterStore.read(dead)) == 2
        server.received.script("first", (0, {}, {}))  # the first replay hangs in its request
        replay = flowlang_command("replay", str(dead), "--allow-host", "127.0.0.1")
        first = subprocess.Popen(
            replay,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not server.received.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.received.requests, "the first replay did not send"
            second = subprocess.run(
                replay, capture_output=True, text=True, timeout=60, env=clean_env()
            )
            began = time.monotonic()
            DeadLetterStore(dead).add({"format": "flowlang.deadletter/1", "note": "appended"})
            assert time.monotonic() - began < 5  # the append lock is not the replay's
            requests = len(server.received.requests)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "is being replayed by another flowlang replay" in second.stderr
    assert requests == 1
    assert len(DeadLetterStore.read(dead)) == 3  # the killed replay removed nothing


# --- 17 class: action and format texts are measured before they are built -------------------


#: A list whose JSON is about 2 GB: one sublist of 10,000 items, shared 20,000 times.
def _huge() -> list[Any]:
    inner = ["x" * 8] * 10_000
    return [inner] * 20_000


BIG_ACTIONS = """
workflow: big
trigger: call.missed
actions:
  - name: sms
    type: send_sms
    sender: "+14155550100"
    recipient: "+14155550101"
    text: "<<event.big>>"
    auth: {key_id: "id", key_secret: "secret"}
  - name: slack
    type: slack_notification
    token: "<<event.big>>"
    channel: "#support"
    text: "hi"
  - name: note
    type: api_request
    endpoint: https://crm.example.com/api/activities
    values:
      - {key: note, value: "<<event.big>>", format: string}
"""


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_huge_list_in_an_action_field_is_refused_before_its_text_is_built(index: int) -> None:
    """A list or map whose text would pass the request-body limit is an ActionError (or a
    ValueFormatError): a failure, never a retry, in bounded memory."""
    import tracemalloc

    from flowlang.automations.actions import ActionError, Providers, prepare_action
    from flowlang.runtime.secrets import SecretsView

    workflow = load_workflow_text(BIG_ACTIONS)
    action = workflow.actions[index]
    scope = {"event": {"big": _huge()}, "actions": {}, "secrets": SecretsView(MappingSecrets({}))}
    tracemalloc.start()
    try:
        with pytest.raises((ActionError, ValueFormatError), match="longer than"):
            prepare_action(action, scope, Providers(), "key", 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_a_value_format_error_on_a_huge_list_is_bounded() -> None:
    import tracemalloc

    from flowlang.automations.formats import convert

    tracemalloc.start()
    try:
        with pytest.raises(ValueFormatError, match="not shown"):
            convert("score", "number", _huge())
        with pytest.raises(ValueFormatError, match="longer than"):
            convert("note", "string", _huge())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    assert convert("note", "string", [1, "a"]) == '[1,"a"]'
