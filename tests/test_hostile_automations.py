"""Hostile input and faults against automations: nothing an event, a server, a record or a second
process does may end the run, lose an action, or leak a secret (issue 8, items 6-15, 22, 26)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from servers import serve
from support import (
    FakeClock,
    automate_argv,
    automate_command,
    clean_env,
    cli,
    kill_group,
    run_automate,
    start_automate,
    store_accepted,
    stored_dead_letters,
    wait_for,
)

from flowlang import MappingSecrets
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    load_workflow,
    load_workflow_text,
)
from flowlang.automations import dispatch as dispatch_module
from flowlang.automations.dispatch import EventError, retry_after_seconds
from flowlang.automations.records import (
    LineTooLongError,
    bounded_lines,
    decode_record,
    encode_record,
)
from flowlang.automations.store import LocalStore
from flowlang.cli import automate_console as automations_console
from flowlang.flow.model import FlowDocumentError
from flowlang.flow.source import DocumentError
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult

SCHEDULE = (0, 5, 300)
TOKEN = "tok+en/with=chars-8f3a"

TWO = """
workflow: two
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "https://crm.example.com/first", stop_on_failure: false}
  - {name: second, type: api_request, endpoint: "https://crm.example.com/second"}
"""

ECHO = """
workflow: echo
trigger: call.ended
actions:
  - name: lookup
    type: api_request
    endpoint: https://crm.example.com/api/lookup
    headers: {Authorization: "Bearer <<secrets.crm_token>>"}
  - name: store
    type: api_request
    endpoint: https://crm.example.com/api/store
    headers: {Authorization: "Bearer <<secrets.crm_token>>"}
"""


Answer = Callable[[PreparedRequest], "HttpResult | BaseException"]


class FakeHttp:
    """An HttpSender whose answer (or exception) a test chooses per request."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent: list[PreparedRequest] = []

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.sent.append(request)
        result = self.answer(request)
        if isinstance(result, BaseException):
            raise result
        return result


def ok(request: PreparedRequest) -> HttpResult:
    return HttpResult("success", 200, {}, {"ok": True})


def automations(
    workflows: list[str],
    answer: Answer = ok,
    *,
    dead_letters: DeadLetterStore | None = None,
    store: LocalStore | None = None,
) -> tuple[Automations, FakeHttp]:
    http = FakeHttp(answer)
    return (
        Automations(
            [load_workflow_text(text) for text in workflows],
            settings=DeliverySettings(schedule=SCHEDULE),
            http=http,
            secrets=MappingSecrets({"crm_token": TOKEN}),
            clock=FakeClock(),
            dead_letters=dead_letters,
            store=store,
        ),
        http,
    )


def call(number: int | str, **properties: Any) -> dict[str, Any]:
    return {"id": f"evt-{number}", "type": "call.ended", "properties": properties}


# --- item 7: an unexpected exception is a failed attempt ------------------------------------


@pytest.mark.parametrize(
    "where", ["send", "interpret", "prepare", "result"], ids=lambda where: f"raises-in-{where}"
)
def test_an_unexpected_exception_in_an_action_is_a_failed_attempt_then_a_dead_letter(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_interpret = dispatch_module.interpret
    real_prepare = dispatch_module.prepare_action
    real_plain = dispatch_module.plain_json
    poison = {"poison": True}

    def answer(request: PreparedRequest) -> HttpResult | BaseException:
        if b"bad" in (request.body or b""):
            return (
                RuntimeError("a bug in the sender")
                if where == "send"
                else (HttpResult("success", 200, {}, poison))
            )
        return HttpResult("success", 200, {}, {"ok": True})

    def interpret(action: Any, sent: HttpResult) -> Any:
        if where == "interpret" and sent.body == poison:
            raise KeyError("a bug in interpret")
        return real_interpret(action, sent)

    def prepare(action: Any, scope: Any, *args: Any) -> Any:
        if where == "prepare" and scope["event"]["id"] == "evt-bad" and action.id == "first":
            raise TypeError("a bug in prepare")
        return real_prepare(action, scope, *args)

    def plain(value: Any) -> Any:
        if where == "result" and value == poison:
            raise OverflowError("a bug in result handling")
        return real_plain(value)

    monkeypatch.setattr(dispatch_module, "interpret", interpret)
    monkeypatch.setattr(dispatch_module, "prepare_action", prepare)
    monkeypatch.setattr(dispatch_module, "plain_json", plain)
    workflow = TWO.replace(
        'endpoint: "https://crm.example.com/first"',
        'endpoint: "https://crm.example.com/first", values: [{key: k, value: "<<event.id>>"}]',
    )
    engine, _ = automations([workflow], answer)

    async def feed() -> list[Any]:
        async with engine:
            return [await engine.dispatch(call(n)) for n in ("bad", 2)]

    bad, good = asyncio.run(feed())
    first, second = bad.deliveries
    assert (first.action, first.outcome, first.attempts) == ("first", "dead_lettered", 3)
    assert "unexpected error" in (first.error or "")
    assert second.outcome == "delivered"  # stop_on_failure: false
    assert [r["action"] for r in engine.dead_letters.records] == ["first"]
    assert [d.outcome for d in good.deliveries] == ["delivered", "delivered"]


def test_cancellation_still_propagates() -> None:
    started = asyncio.Event()

    async def scenario() -> bool:
        class Hanging(FakeHttp):
            async def send(self, request: PreparedRequest, **_: Any) -> HttpResult:
                started.set()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

        engine = Automations(
            [load_workflow_text(TWO)],
            http=Hanging(ok),
            clock=FakeClock(),
            secrets=MappingSecrets({}),
        )
        task = asyncio.create_task(engine.dispatch(call(1)))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(scenario())


def test_a_condition_that_raises_is_reported_and_the_event_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, _ = automations([TWO, TWO.replace("workflow: two", "workflow: other")])
    broken = engine.workflows[0]

    def condition(scope: Any) -> bool:
        raise RecursionError("hostile")

    object.__setattr__(broken, "condition", condition)
    result = asyncio.run(engine.dispatch(call(1)))
    assert result.matched == ["other"]
    assert "workflow 'two': its conditions failed: RecursionError" in result.errors[0]


def test_cli_an_exception_in_one_event_ends_neither_this_run_nor_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/first, status: 200, body: {}}\n"
        "- {request: POST https://crm.example.com/second, status: 200, body: {}}\n"
    )
    events = "".join(json.dumps(call(n)) + "\n" for n in (1, "bad", 3))
    (tmp_path / "events.jsonl").write_text(events)
    real_interpret, real_prepare = dispatch_module.interpret, dispatch_module.prepare_action
    state = {"event": "", "raised": 0}

    def prepare(action: Any, scope: Any, *args: Any) -> Any:
        state["event"] = scope["event"]["id"]
        return real_prepare(action, scope, *args)

    def interpret(action: Any, sent: HttpResult) -> Any:
        if state["event"] == "evt-bad" and action.id == "first" and not state["raised"]:
            state["raised"] = 1
            raise ZeroDivisionError("boom")
        return real_interpret(action, sent)

    monkeypatch.setattr(dispatch_module, "interpret", interpret)
    monkeypatch.setattr(dispatch_module, "prepare_action", prepare)
    argv = [*automate_argv(tmp_path), "--concurrency", "1"]
    status, out = cli(*argv)
    assert status == 0, out
    assert "events 3, duplicates 0, matched 3; actions delivered 6 (retried 1)" in out
    state["raised"] = 0
    status, out = cli(*argv)  # the rerun does not stop where the first run had trouble
    assert status == 0 and "events 3, duplicates 3" in out


# --- item 8: events at the door; the store and dead letters always read back ----------------


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


def test_events_too_deep_or_too_large_are_refused_at_the_door_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = LocalStore(path)
    engine, _ = automations([TWO], store=store)

    async def feed() -> list[str]:
        outcomes = []
        for item in (
            call(1, nested=deep(977)),
            call(2, big="x" * (1024 * 1024 + 1)),
            {"id": 7, "type": "call.ended"},
            call(3),
        ):
            try:
                outcomes.append(str((await engine.dispatch(item)).matched))
            except EventError as error:
                outcomes.append(str(error))
        return outcomes

    outcomes = asyncio.run(feed())
    assert outcomes == [
        "event 'evt-1' nests deeper than 64 levels",
        "event 'evt-2' is larger than 1048576 bytes as JSON",
        "an event needs an id (text) so that it is delivered once",
        "['two']",
    ]
    store.close()
    with LocalStore(path) as again_store:
        again, _ = automations([TWO], store=again_store)  # the store reads back
        assert again.problems == [] and again_store.counts()["open"] == 0
        assert asyncio.run(again.dispatch(call(3))).duplicate


def test_an_event_with_a_lone_surrogate_is_stored_and_read_back(tmp_path: Path) -> None:
    """Accepted (not run) by a process that then dies: the next one reads the event back
    exactly, runs it, and finds it a duplicate afterwards."""
    path = tmp_path / "store.db"
    store = LocalStore(path)
    engine, _ = automations([TWO], store=store)
    event = json.loads(
        '{"id": "evt-\\ud800", "type": "call.ended", "properties": {"n": "\\udfff"}}'
    )
    assert engine.accept(event) == event
    store.close()
    with LocalStore(path) as again_store:
        again, _ = automations([TWO], store=again_store)
        assert again.problems == []
        [result] = asyncio.run(again.resume())
        assert result.event_id == event["id"]
        assert [d.outcome for d in result.deliveries] == ["delivered", "delivered"]
        assert asyncio.run(again.dispatch(event)).duplicate


def test_bad_open_events_in_the_store_are_reported_and_skipped(tmp_path: Path) -> None:
    """Open events written into the store by hand (not JSON, not UTF-8, nested 5,000 deep, not
    an object, an id that is not text, nested deeper than an event may be): each is a problem
    naming the store, never a traceback; the good open event is still resumed."""
    path = tmp_path / "store.db"
    with LocalStore(path) as store:
        assert store.accept("evt-open", call("open"), 1_800_000_000.0, 86400.0)
    bad = [
        "not json",
        "[1, 2]",
        b'{"id": "\xff\xfe", "type": "call.ended"}',
        "[" * 5000 + "]" * 5000,
        json.dumps({"id": "deep", "type": "call.ended", "nested": deep(300)}),
        '{"type": "call.ended", "id": ["x"]}',
        None,
    ]
    with sqlite3.connect(path) as db:
        for number, text in enumerate(bad):
            db.execute(
                "INSERT INTO events (key, at, owner, event) VALUES (?, 1, NULL, ?)",
                (bytes([number]) * 16, text),
            )
    store = LocalStore(path)
    try:
        engine, _ = automations([TWO], store=store)
        problems = engine.problems
        assert len(problems) == len(bad), problems
        assert all(str(path) in problem for problem in problems), problems
        [result] = asyncio.run(engine.resume())  # the good open event is still resumed
    finally:
        store.close()
    assert result.event_id == "evt-open" and [d.outcome for d in result.deliveries] == [
        "delivered",
        "delivered",
    ]


def test_bounded_lines_never_hold_a_long_line() -> None:
    stream = io.BytesIO(b"short\n" + b"x" * 10_000 + b"\nafter\nlast")
    assert list(bounded_lines(stream, 100, max_skip=20_000)) == [
        (1, b"short"),
        (2, None),
        (3, b"after"),
        (4, b"last"),
    ]
    with pytest.raises(LineTooLongError, match="line 1 goes on past 5000 bytes"):
        list(bounded_lines(io.BytesIO(b"\0" * 20_000), 100, max_skip=5000))


#: Any code point, lone surrogates included (hypothesis leaves them out unless told).
ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(ANY_CHARACTER),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(ANY_CHARACTER, max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON)
def test_any_json_written_as_a_record_reads_back_the_same(value: Any) -> None:
    record = {"kind": "settled", "result": value}
    line = encode_record(record)
    assert line.isascii() and line.endswith("\n") and line.count("\n") == 1
    assert decode_record(line[:-1].encode("ascii")) == record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON)
def test_any_json_in_an_event_goes_through_the_store_and_dead_letters_unchanged(
    value: Any,
) -> None:
    event = {"id": "evt-\ud800", "type": "call.ended", "properties": {"v": value}}
    record = {"format": "flowlang.deadletter/1", "event": event}
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        with LocalStore(folder / "s.db") as store:
            assert store.accept(event["id"], event, 1.0, 60.0)
            store.settle(event["id"], "w", "\udfff", "delivered", value)
            store.add_dead(record)
        with LocalStore(folder / "s.db") as reread:
            [found] = reread.take_over()
            assert found.event == event and found.problems == []
            assert found.settled == {("w", "\udfff"): ("delivered", value)}
            assert [r for _, r in reread.dead_letters()] == [record]
        file_store = DeadLetterStore(folder / "dead.jsonl")
        file_store.add(record)
        assert DeadLetterStore.read(folder / "dead.jsonl") == [record]


def test_the_strategy_makes_lone_surrogates() -> None:
    found = find(st.text(ANY_CHARACTER), lambda text: any(0xD800 <= ord(c) < 0xE000 for c in text))
    assert decode_record(encode_record({"s": found})[:-1].encode()) == {"s": found}


# --- item 9: resume does not stop at a failure that did not stop the workflow ----------------


def test_resume_runs_the_action_after_a_failure_that_does_not_stop(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with LocalStore(path) as gone:
        assert gone.accept("evt-1", call(1), 1_800_000_000.0, 86400.0)
        gone.settle("evt-1", "two", "first", "dead_lettered", None)
    store = LocalStore(path)
    try:
        engine, http = automations([TWO], store=store)
        [result] = asyncio.run(engine.resume())
    finally:
        store.close()
    assert [(d.action, d.outcome) for d in result.deliveries] == [("second", "delivered")]
    assert [request.url for request in http.sent] == ["https://crm.example.com/second"]


def _paths(requests: list[dict[str, Any]]) -> list[str]:
    return [request["path"] for request in requests]


SCRIPTED = """
workflow: scripted
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: "http://127.0.0.1:{port}/script/first", stop_on_failure: false}
  - {name: second, type: api_request, endpoint: "http://127.0.0.1:{port}/script/second", timeout: 20s}
"""


def test_a_kill_while_the_action_after_a_non_stopping_failure_is_in_flight_loses_nothing(
    tmp_path: Path,
) -> None:
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(SCRIPTED.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(json.dumps(call(1)) + "\n")
        server.received.script("first", (404, {}, {}))  # fails for good: dead-lettered at once
        server.received.script("second", (0, {}, {}))  # hangs: the process is killed here
        first = start_automate(tmp_path)
        try:
            wait_for(lambda: "/script/second" in _paths(server.received.requests))
        finally:
            kill_group(first)
        second = run_automate(tmp_path)
    assert second.returncode == 0, second.stderr
    assert _paths(server.received.requests).count("/script/second") == 2
    assert _paths(server.received.requests).count("/script/first") == 1  # not repeated
    assert "resumed 1 unfinished event" in second.stdout


# --- item 10: the dead letter is written with (never after) the action's settlement ----------


def test_a_kill_at_the_dead_letter_write_loses_nothing(tmp_path: Path) -> None:
    """The process dies as it writes the dead letter and settles its action (one transaction;
    a SystemExit there, its store closed as death closes it): the next process on the store takes the event over, dead-letters the
    action and delivers the next one once."""
    answers = {"first": HttpResult("http_error", 404, {}, {}, "HTTP 404")}

    def answer(request: PreparedRequest) -> HttpResult:
        return answers.get(request.url.rsplit("/", 1)[1], ok(request))

    class Killed(BaseException):
        pass

    def killed(*_: Any) -> int:
        raise Killed

    path = tmp_path / "store.db"
    store = LocalStore(path)
    engine, http = automations(
        [TWO], answer, store=store, dead_letters=DeadLetterStore(store=store)
    )
    store.settle_dead = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        asyncio.run(engine.dispatch(call(1)))
    store.close()  # what the process's death does
    assert stored_dead_letters(path) == []
    again_store = LocalStore(path)
    again, again_http = automations(
        [TWO], answer, store=again_store, dead_letters=DeadLetterStore(store=again_store)
    )
    [result] = asyncio.run(again.resume())
    again_store.close()
    assert [(d.action, d.outcome) for d in result.deliveries] == [
        ("first", "dead_lettered"),
        ("second", "delivered"),
    ]
    [record] = stored_dead_letters(path)
    assert record["action"] == "first"
    assert [r.url.rsplit("/", 1)[1] for r in http.sent + again_http.sent].count("second") == 1


# --- item 11: replay never erases what automate appends meanwhile ----------------------------


def test_replay_keeps_records_appended_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = tmp_path / "dead.jsonl"
    store = DeadLetterStore(dead)
    engine, _ = automations(
        [TWO], lambda request: HttpResult("http_error", 404, {}, {}, "HTTP 404")
    )
    engine.dead_letters = store
    asyncio.run(engine.dispatch(call(1)))
    asyncio.run(engine.dispatch(call(2)))
    assert len(DeadLetterStore.read(dead)) == 4
    appended: list[str] = []

    def sender(request: PreparedRequest) -> HttpResult:
        if not appended:  # a flowlang automate appends while replay runs
            record = dict(DeadLetterStore.read(dead)[0], action="second", recorded_at=1.0)
            DeadLetterStore(dead).add(record)
            appended.append(record["idempotency_key"])
        if request.url.endswith("/second"):
            return HttpResult("http_error", 404, {}, {}, "HTTP 404")
        return HttpResult("success", 200, {}, {})

    monkeypatch.setattr(automations_console, "load_recorded_responses", lambda _: FakeHttp(sender))
    status, out = cli("replay", str(dead), "--responses", "unused.yaml")
    assert status == 1 and "replayed 4 records: delivered 2, dead-lettered again 2" in out
    kept = DeadLetterStore.read(dead)
    assert [r["action"] for r in kept].count("second") == 3  # 1 appended + 2 failed again
    assert any(r["recorded_at"] == 1.0 for r in kept)  # the appended one survived


# --- item 12: workflow names are unique across the loaded set -------------------------------


def test_two_workflows_with_one_name_are_a_load_error_naming_both_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(TWO)
    (tmp_path / "b.yaml").write_text("# the same name\n" + TWO)
    (tmp_path / "events.jsonl").write_text(json.dumps(call(1)) + "\n")
    status, _ = cli(
        *automate_argv(
            tmp_path, workflows=[tmp_path / "a.yaml", tmp_path / "b.yaml"], responses=False
        )
    )
    err = capsys.readouterr().err
    assert status == 2
    assert f"{tmp_path / 'a.yaml'}:2:11" in err and f"{tmp_path / 'b.yaml'}:3:11" in err
    with pytest.raises(FlowDocumentError, match="used twice"):
        Automations([load_workflow_text(TWO), load_workflow_text(TWO)])


# --- item 13: replay trusts no record; a document is never a path ----------------------------


def test_a_workflow_text_is_never_taken_for_a_path(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(TWO)
    with pytest.raises(FlowDocumentError, match="to read a file, use load_flow or load_workflow"):
        load_workflow_text(str(path))
    assert load_workflow(str(path)).name == "two"
    assert load_workflow(path).name == "two"
    with pytest.raises(DocumentError, match="No such file"):
        load_workflow(str(tmp_path / "ww.yaml"))
    with pytest.raises(TypeError):
        load_workflow_text(path)  # type: ignore[arg-type]


def test_replay_reports_malformed_records_and_never_reads_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET: [unclosed\n")
    dead = tmp_path / "dead.jsonl"
    base = {
        "format": "flowlang.deadletter/1",
        "workflow_source": TWO,
        "event": call(1),
        "action": "first",
        "then": [],
        "results": {},
    }
    lines = [
        json.dumps(base | {"workflow_source": str(secret)}),
        json.dumps(base | {"workflow_source": 5}),
        json.dumps(base | {"action": ["first"]}),
        json.dumps(base | {"event": "evt-1"}),
        json.dumps(base | {"event": call(1, nested=deep(100))}),
        json.dumps(base | {"results": [1]}),
        json.dumps(base | {"then": "second"}),
        json.dumps(base | {"action": "nope"}),
        json.dumps(base | {"workflow_file": {"a": 1}}),
        json.dumps([base]),
        "{not json",
    ]
    dead.write_text("\n".join(lines) + "\n")
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/first, status: 200, body: {}}\n"
    )
    status, out = cli("replay", str(dead), "--responses", str(tmp_path / "responses.yaml"))
    err = capsys.readouterr().err
    assert status == 1
    assert "TOPSECRET" not in out + err and "Traceback" not in err
    for number in range(1, len(lines) + 1):
        assert f"dead.jsonl:{number}" in err, (number, err)
    assert dead.read_text() == "\n".join(lines) + "\n"  # nothing replayed: all left in the file


# --- item 15: processes sharing one store send nothing twice --------------------------------


def test_a_second_automate_on_the_same_store_sends_nothing_twice(tmp_path: Path) -> None:
    """While the first process holds its event in flight, a second on the same store and
    events finds it a duplicate (owned by the first, which is alive)."""
    with serve(trustme.CA(), tls=False) as server:
        (tmp_path / "wf.yaml").write_text(SCRIPTED.replace("{port}", str(server.port)))
        (tmp_path / "events.jsonl").write_text(json.dumps(call(1)) + "\n")
        server.received.script("first", (0, {}, {}))  # the first process holds on
        first = start_automate(tmp_path)
        try:
            wait_for(lambda: "/script/first" in _paths(server.received.requests))
            second = run_automate(tmp_path)
        finally:
            kill_group(first)
    assert second.returncode == 0, second.stderr
    assert "events 1, duplicates 1" in second.stdout
    assert _paths(server.received.requests).count("/script/first") == 1


# --- item 6 (automations): absurd Retry-After values ----------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Fri, 01 Jan 10000000000 00:00:00 GMT",
        "Sat, 01 Jan 9999 23:59:59 -9999",
        "Mon, 01 Jan 0001 00:00:00 +2359",
        "Thu, 32 Foo 2026 25:61:61 GMT",
        "9" * 400,
        "9" * 60,
        "1e309",
        "-5",
        "\x00\udcff",
        "",
    ],
)
def test_an_absurd_retry_after_never_raises(header: str) -> None:
    seconds = retry_after_seconds(header, 1_800_000_000.0)
    assert seconds is None or 0 <= seconds < float("inf")


def test_an_absurd_retry_after_is_capped_in_the_schedule() -> None:
    header = "Fri, 01 Jan 10000000000 00:00:00 GMT"
    engine, _ = automations(
        [TWO],
        lambda request: HttpResult("http_error", 503, {"retry-after": header}, {}, "HTTP 503"),
    )
    result = asyncio.run(engine.dispatch(call(1)))
    assert [d.attempts for d in result.deliveries] == [3, 3]


# --- item 22: events are read with a bound ---------------------------------------------------


def test_automate_events_from_dev_zero_ends_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(TWO)
    command = automate_command(tmp_path)
    command[command.index("--events") + 1] = "/dev/zero"
    process = subprocess.run(command, capture_output=True, text=True, timeout=120, env=clean_env())
    assert process.returncode == 2
    assert "/dev/zero: line 1 goes on past" in process.stderr and "not JSON lines" in process.stderr
    assert "Traceback" not in process.stderr


def test_bad_event_lines_are_reported_and_the_stream_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/first, status: 200, body: {}}\n"
        "- {request: POST https://crm.example.com/second, status: 200, body: {}}\n"
    )
    events = (
        b'{"id": "evt-1", "type": "call.ended", "properties": '
        + b'{"d": ' * 977
        + b"1"
        + b"}" * 978
        + b"\n"
        + b'{"id": "evt-2", "type": "call.ended", "s": "\\ud800"}\n'
        + b'{"id": "evt-3", "type": "call.ended", "s": "\xff"}\n'
        + b"x" * (3 * 1024 * 1024)
        + b"\n"
        + json.dumps(call(5, big="y" * (1024 * 1024))).encode()
        + b"\n"
        + b"[" * 100_000
        + b"\n"
        + json.dumps(call(7)).encode()
        + b"\n"
    )
    (tmp_path / "events.jsonl").write_bytes(events)
    status, out = cli(*automate_argv(tmp_path), "--json")
    err = capsys.readouterr().err
    assert status == 2
    lines = [json.loads(line) for line in out.splitlines()]
    delivered = [line["event"] for line in lines if line["kind"] == "event"]
    assert sorted(delivered) == ["evt-2", "evt-7"]
    for line in (1, 3, 4, 5, 6):
        assert f"events.jsonl:{line}" in err, (line, err)
    assert "Traceback" not in err
    store = tmp_path / "store.db"
    accepted = {f"evt-{n}" for n in range(1, 8) if store_accepted(store, f"evt-{n}")}
    assert accepted == {"evt-2", "evt-7"}


# --- item 26: automate --json and dead letters never carry a secret a server echoed ---------


def test_a_secret_echoed_by_a_server_stays_out_of_json_output_and_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", TOKEN)
    (tmp_path / "wf.yaml").write_text(ECHO)
    (tmp_path / "responses.yaml").write_text(
        "- request: POST https://crm.example.com/api/lookup\n"
        "  status: 200\n"
        f"  body: {{you_sent: 'Bearer {TOKEN}'}}\n"
        "- request: POST https://crm.example.com/api/store\n"
        "  status: 400\n"
        f"  body: {{error: 'bad token {TOKEN}'}}\n"
    )
    (tmp_path / "events.jsonl").write_text(json.dumps(call(1)) + "\n")
    status, out = cli(*automate_argv(tmp_path), "--json")
    assert status == 1, out  # 1: dead-lettered
    [line] = [json.loads(text) for text in out.splitlines() if '"kind": "event"' in text]
    assert [d["outcome"] for d in line["deliveries"]] == ["delivered", "dead_lettered"]
    dead = json.dumps(stored_dead_letters(tmp_path / "store.db"))
    assert TOKEN not in out + dead
    assert TOKEN.encode() not in b"".join(
        p.read_bytes() for p in tmp_path.glob("store.db*") if p.is_file()
    )
    assert "[redacted]" in json.dumps(line["deliveries"][0]["result"])


def test_text_output_never_sends_escape_sequences_or_lone_surrogates(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/first, status: 404, body: {}}\n"
        "- {request: POST https://crm.example.com/second, status: 200, body: {}}\n"
    )
    (tmp_path / "events.jsonl").write_text(
        '{"id": "evt-\\u001b]52;c;aGk=\\u0007-\\ud800", "type": "call.ended"}\n'
    )
    command = automate_command(tmp_path, "--responses", str(tmp_path / "responses.yaml"))
    process = subprocess.run(command, capture_output=True, timeout=120, env=clean_env())
    assert process.returncode == 1, process.stderr  # 1: dead-lettered
    out = process.stdout.decode("utf-8")  # strict: no lone surrogate reached the stream
    assert "\x1b" not in out and "\x07" not in out
    assert "evt-\\x1b]52;c;aGk=\\x07-\\ud800 two/first: dead_lettered" in out


def test_text_output_escapes_bidirectional_overrides(tmp_path: Path) -> None:
    """An event id with U+202E (right-to-left override) or U+2066 would reorder what the
    terminal shows of the line; it is printed as an escape, as `flowlang run` does."""
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "responses.yaml").write_text(
        "- {request: POST https://crm.example.com/first, status: 404, body: {}}\n"
        "- {request: POST https://crm.example.com/second, status: 200, body: {}}\n"
    )
    (tmp_path / "events.jsonl").write_text(
        '{"id": "evt-\\u202egpj.exe-\\u2066x", "type": "call.ended"}\n'
    )
    command = automate_command(tmp_path, "--responses", str(tmp_path / "responses.yaml"))
    process = subprocess.run(command, capture_output=True, timeout=120, env=clean_env())
    assert process.returncode == 1, process.stderr  # 1: dead-lettered
    out = process.stdout.decode("utf-8")
    assert "\u202e" not in out and "\u2066" not in out
    assert "evt-\\u202egpj.exe-\\u2066x two/first: dead_lettered" in out
