"""Hostile-input suite for secrets (issue 8, items 23-26): every form, every output, every log.

A secret is masked in every form the runtime and its libraries write it (percent-encoded,
JSON-escaped, repr'd, inside base64), without ever changing the shape of data; records of the
HTTP libraries' child loggers are masked; and a secret a server echoes back (in a body or a
header) reaches no output of a run, on both step loops.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import Server
from support import automate_argv, cli

import flowlang
from flowlang import MappingSecrets, Runtime, RuntimeSettings
from flowlang.runtime.secrets import (
    MIN_SUBSTRING,
    REDACTED,
    Redactor,
    install_log_redaction,
    secret_forms,
)

#: A key with the characters that percent-encoding and base64 change.
SECRET = "k3y+with/slash=end"
#: Characters JSON and repr escape (and a non-ASCII one).
ODD = 'pa"ss\\wörd\x01\u2028'


def produced_forms(value: str) -> list[str]:
    """Forms of ``value`` the runtime, its libraries or an echoing server write (independent of
    the implementation's own list)."""
    raw = value.encode()
    forms = [
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        quote(value, safe="").lower().replace(value.lower(), value),  # lower-case escapes
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        repr(raw)[2:-1],
        quote(json.dumps(value)[1:-1], safe=""),  # JSON text in a URL
        repr(json.dumps(value)[1:-1])[1:-1],  # JSON text in an exception message
    ]
    return [form for form in forms if form]


def redactor_for(*values: str) -> Redactor:
    redactor = Redactor()
    for value in values:
        redactor.add(value)
    return redactor


def leaked(text: str, *values: str) -> list[str]:
    return [form for value in values for form in produced_forms(value) if form in text]


# --- 23: every form the runtime produces ------------------------------------------------------


@pytest.mark.parametrize("secret", [SECRET, ODD, "plain-alnum-token-123", "a+b/"])
def test_every_produced_form_is_masked_inside_text(secret: str) -> None:
    redactor = redactor_for(secret)
    for form in produced_forms(secret):
        masked = redactor.text(f"GET https://crm.test/x?key={form}&n=1 said: {form}.")
        assert form not in masked and REDACTED in masked, form
        assert masked.startswith("GET https://crm.test/x?key=") and masked.endswith(".")


def test_percent_escapes_in_any_case_are_one_form() -> None:
    redactor = redactor_for(SECRET, "ab%2bcd%2F")
    assert redactor.text("k3y%2bwith%2Fslash%3dend!") == f"{REDACTED}!"
    assert redactor.text("x ab%2Bcd%2f y") == f"x {REDACTED} y"
    assert redactor.text(f"{SECRET}{SECRET} {SECRET}") == f"{REDACTED} {REDACTED}"


@pytest.mark.parametrize("key_id", ["", "A", "AC", "AC1", "AC12", "AC123"])
def test_basic_credentials_built_from_a_secret_are_masked(key_id: str) -> None:
    """send_sms builds ``Basic base64(key_id:key_secret)``: whatever the key id's length (so
    the secret's alignment in base64), the part of the token that encodes it is masked."""
    secret = "sms-secret-value+/="
    token = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    masked = redactor_for(secret).text(f"Authorization: Basic {token}")
    assert token not in masked and REDACTED in masked
    kept = len(masked) - len("Authorization: Basic ") - len(REDACTED)
    prefix = len(base64.b64encode(f"{key_id}:".encode()).rstrip(b"="))
    assert kept <= prefix + 4  # at most a character of the secret's edges on each side
    urlsafe = base64.urlsafe_b64encode(f"{key_id}:{secret}".encode()).decode()
    assert urlsafe not in redactor_for(secret).text(urlsafe)


def test_short_secrets_are_judged_once_trimmed() -> None:
    assert MIN_SUBSTRING == 4
    redactor = redactor_for("ab", " cd\n", "wxyz")
    assert redactor.text("cabbage, scd, AB") == "cabbage, scd, AB"
    assert [redactor.text(text) for text in ("ab", "AB", "cd", " cd\n", "%20cd%0A")] == [
        REDACTED
    ] * 5
    assert redactor.text("the wxyz key, WXYZ") == f"the {REDACTED} key, {REDACTED}"


@pytest.mark.parametrize("flt", ["trim", "lower", "upper"])
def test_what_text_filters_make_of_a_secret_is_masked(flt: str) -> None:
    secret = " MiXed+Key/Value==\n"
    made = getattr(str, {"trim": "strip"}.get(flt, flt))(secret)
    redactor = redactor_for(secret)
    for form in [*produced_forms(made), quote(quote(made, safe=""), safe="")]:
        masked = redactor.text(f"x={form}&y=1")
        assert form.strip() not in masked, form
    assert secret_forms(secret)[0]  # longest first, never empty


def echo_flow(server: Server, endpoint: str, **step: Any) -> flowlang.CompiledFlow:
    """One request `call`, then a say and a prompt that show what came back, then a transfer
    to it all."""
    seen = "<<steps.call | json>>"
    document = {
        "flow": "echo",
        "start": "call",
        "steps": {
            "call": {
                "type": "http_request",
                "endpoint": server.url("crm.test", endpoint),
                "headers": {"X-Key": "<<secrets.api_key>>"},
                "next": "tell",
                "on_failure": "tell",
                **step,
            },
            "tell": {"type": "say", "text": f"heard {seen}", "next": "ask"},
            "ask": {
                "type": "collect_input",
                "prompt": f"enter digits after {seen}",
                "next": "done",
                "on_no_input": "done",
            },
            "done": {"type": "transfer", "target": "queue:<<steps.call | json>>"},
        },
    }
    return flowlang.load_flow_text(json.dumps(document))


def run_on(
    server: Server,
    flow: flowlang.CompiledFlow,
    backend: str,
    secret: str = SECRET,
    host: Any = None,
    digits: list[str | None] | None = None,
    secrets: dict[str, str] | None = None,
) -> list[flowlang.RunResult]:
    """Start ``flow`` (then resume it with ``digits``) on a loopback runtime whose secrets are
    ``secrets`` (``api_key`` = ``secret`` when not given)."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> list[flowlang.RunResult]:
        runtime = Runtime(
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets(secrets or {"api_key": secret}),
            settings=RuntimeSettings(allow_hosts=frozenset({"crm.test", "other.test"})),
            backend=backend,
            host=host,
        )
        async with runtime:
            results = [await runtime.start(flow, {})]
            for entered in digits or []:
                state = json.loads(json.dumps(results[-1].state))
                results.append(await runtime.resume(flow, state, entered))
        return results

    return asyncio.run(main())


def everything(result: flowlang.RunResult) -> str:
    """Every output of a result, as text."""
    return "\n".join(
        [
            json.dumps(result.to_json(), ensure_ascii=False),
            json.dumps(result.to_json()),
            repr(result),
            repr(result.awaiting),
            repr(result.instructions),
            repr(result.trace),
            repr(result.state),
            str(result.error),
        ]
    )


def test_a_percent_encoded_secret_is_masked_in_the_trace_url(
    server: Server, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = echo_flow(server, "/echo?key=<<secrets.api_key>>")
    [result] = run_on(server, flow, backend)
    assert server.received.requests[0]["query"] == "key=" + quote(SECRET, safe="")
    request = result.trace[0]["detail"]["request"]
    assert request["url"].endswith("/echo?key=[redacted]")
    assert request["headers"]["X-Key"] == REDACTED
    assert result.status == "waiting_for_input"
    assert not leaked(everything(result), SECRET)
    assert "flowlang.http" in caplog.text  # the HTTP client logged the exchange
    assert not leaked(caplog.text, SECRET)


def test_a_redirect_to_the_secret_is_masked_in_the_error(server: Server, backend: str) -> None:
    for location in (
        f"https://other.test/?k={quote(SECRET, safe='')}",
        f"https://other.test/?k={quote(SECRET, safe='').lower()}",
        f"https://other.test/{quote_plus(SECRET)}",
    ):
        server.received.script("go", (302, {"Location": location}, {}))
        [result] = run_on(server, echo_flow(server, "/script/go?k=<<secrets.api_key>>"), backend)
        assert result.trace[0]["outcome"] != "success"
        assert "redirect" in result.trace[0]["detail"]["error"]
        assert not leaked(everything(result), SECRET), location


def test_a_redirect_error_in_a_dead_letter_is_masked(server: Server, tmp_path: Path) -> None:
    from flowlang.automations import (
        Automations,
        DeadLetterStore,
        DeliverySettings,
        load_workflow_text,
    )

    workflow = load_workflow_text(
        textwrap.dedent(f"""
        workflow: leaky
        trigger: call.ended
        actions:
          - name: notify
            type: api_request
            endpoint: https://crm.test:{server.port}/script/crm?key=<<secrets.api_key>>
            values:
              - {{key: id, value: "<<event.id>>", format: string}}
        """)
    )
    location = f"https://crm.test/next?key={quote(SECRET, safe='')}"
    server.received.script("crm", *[(302, {"Location": location}, {})] * 8)
    store = DeadLetterStore(tmp_path / "dead.jsonl")

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> Any:
        automations = Automations(
            [workflow],
            settings=DeliverySettings(allow_hosts=frozenset({"crm.test"})),
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets({"api_key": SECRET}),
            dead_letters=store,
        )
        async with automations:
            return await automations.dispatch({"id": "evt-1", "type": "call.ended"})

    result = asyncio.run(main())
    assert [d.outcome for d in result.deliveries] == ["dead_lettered"]
    text = (tmp_path / "dead.jsonl").read_text()
    assert "redirect" in text and not leaked(text + repr(result), SECRET)


# --- 24: structure never changes --------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
LONG = 's3cr3t+/="é'
SHORT = "ab"


@st.composite
def strings_with_secrets(draw: Any) -> str:
    pieces = draw(
        st.lists(st.text(max_size=5) | st.sampled_from([*produced_forms(LONG), SHORT]), max_size=4)
    )
    return "".join(pieces)


json_data = st.recursive(
    json_scalars | strings_with_secrets(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=4) | strings_with_secrets(), children, max_size=4)
    ),
    max_leaves=25,
)


def same_shape(before: Any, after: Any, masks: Any) -> bool:
    """Same types everywhere, same number of entries, same list lengths; numbers and booleans
    unchanged; a key changes only where it held a secret, and then into its masked text (with
    a number when that name was taken)."""
    pending = [(before, after)]
    while pending:
        left, right = pending.pop()
        if type(left) is not type(right):
            return False
        if isinstance(left, dict):
            if len(left) != len(right):
                return False
            for key, name in zip(left, right, strict=True):
                if masks.found(key) is None:
                    if name != key:
                        return False
                elif not (name == masks.mask(key) or name.startswith(masks.mask(key) + " ")):
                    return False
            pending.extend(zip(left.values(), right.values(), strict=True))
        elif isinstance(left, list):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
        elif not isinstance(left, str) and left != right:
            return False
    return True


def string_values(data: Any) -> Iterator[str]:
    """Every string value and every key inside ``data``."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


@settings(max_examples=300, deadline=None)
@given(json_data)
def test_redaction_keeps_the_shape_and_leaves_no_secret(data: Any) -> None:
    original = json.loads(json.dumps(data))
    redactor = redactor_for(LONG, SHORT)
    masked = redactor.data(data)
    assert data == original  # the input is never changed in place
    assert same_shape(data, masked, redactor._compiled())
    for text in string_values(masked):
        assert not leaked(text, LONG), text
        assert text != SHORT


MANY = [f"tenant-{index}-key+/{index * 7919}" for index in range(12)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(max_size=6) | st.sampled_from([form for v in MANY for form in produced_forms(v)]),
        max_size=6,
    )
)
def test_text_keeps_no_form_and_the_index_agrees(pieces: list[str]) -> None:
    """Masking leaves no form of any secret; with many secrets a text is scanned through an
    index of the forms' starts, which must mask exactly what the plain scan masks."""
    from flowlang.runtime.secrets import _Masks

    class Indexed(_Masks):
        INDEXED = 0

    class Unindexed(_Masks):
        INDEXED = 10**6

    text = "".join(pieces)
    indexed = Indexed(MANY)
    assert indexed.index is not None
    masked = indexed.mask(text)
    assert not leaked(masked, *MANY), masked
    plain = Unindexed(MANY)
    assert plain.index is None
    assert plain.mask(text) == masked == redactor_for(*MANY).text(text)


def test_short_secrets_are_masked_only_as_whole_values() -> None:
    redactor = redactor_for("ab", "x")
    data = {"ab": "ab", "cabbage": ["cabbage", "x", 1, True, None], "x": {"n": 12.5}}
    assert redactor.data(data) == {
        REDACTED: REDACTED,
        "cabbage": ["cabbage", REDACTED, 1, True, None],
        f"{REDACTED} 2": {"n": 12.5},
    }
    assert redactor.data({"grab": "a box", "AB": 1, "ab": 2, " ab ": 3}) == {
        "grab": "a box",
        REDACTED: 1,
        f"{REDACTED} 2": 2,
        " ab ": 3,  # not a form of the secret (as a value it stays too)
    }
    assert redactor.text("grab a box") == "grab a box"
    assert redactor.text("ab") == REDACTED


def test_numbers_and_booleans_are_never_touched_keys_are_masked_as_values() -> None:
    redactor = redactor_for("1234", "true-secret")
    data = {"1234": 1234, "true-secret": True, "pin 1234": ["pin 1234", 12345.0], 1234: False}
    assert redactor.data(data) == {
        REDACTED: 1234,
        f"{REDACTED} 2": True,
        f"pin {REDACTED}": [f"pin {REDACTED}", 12345.0],
        1234: False,
    }


def test_masked_keys_never_merge_entries_and_are_named_the_same_each_time() -> None:
    """Items 23/26: a secret a server echoes as a map key is masked; keys that meet take
    ``[redacted] 2``, ``[redacted] 3``... in the map's order, after the keys that stay."""
    redactor = redactor_for(LONG)
    data = {
        LONG: 1,
        "[redacted] 2": 2,  # a key that held no secret keeps its name
        quote(LONG, safe=""): 3,
        f"x-{LONG}": 4,
        f"x-{LONG.upper()}": 5,
        REDACTED: 6,
        "plain": 7,
    }
    masked = redactor.data(data)
    assert masked == {
        f"{REDACTED} 3": 1,
        "[redacted] 2": 2,
        f"{REDACTED} 4": 3,
        f"x-{REDACTED}": 4,
        f"x-{REDACTED} 2": 5,
        REDACTED: 6,
        "plain": 7,
    }
    assert list(masked.values()) == list(data.values())
    assert redactor.data(dict(data)) == masked
    clean = {"a": {"b": [1, {"c": "d"}]}}
    assert redactor.data(clean) is clean
    assert redactor.data({"deep": [{f"k{LONG}": None}]}) == {"deep": [{f"k{REDACTED}": None}]}


@pytest.mark.parametrize("depth", [3000, 20_000])
def test_deep_data_is_redacted_without_recursion(depth: int) -> None:
    redactor = redactor_for(LONG)
    data: Any = [f"x{LONG}"]
    for level in range(depth):
        data = {"level": level, "inside": data} if level % 2 else [data, "y"]
    masked = redactor.data(data)
    item = masked
    while not isinstance(item, str):
        item = item["inside"] if isinstance(item, dict) else item[0]
    assert item == f"x{REDACTED}"
    assert redactor.data({"deep": data, "clean": 1})["clean"] == 1


def test_data_without_a_secret_comes_back_as_it_is_and_cycles_end() -> None:
    redactor = redactor_for(LONG)
    clean = {"a": [1, "two", {"three": 3.0}]}
    assert redactor.data(clean) is clean
    cyclic: dict[str, Any] = {"note": LONG}
    cyclic["self"] = cyclic
    masked = redactor.data(cyclic)
    assert masked["note"] == REDACTED and masked["self"] is masked


# --- 25: the HTTP libraries' child loggers ----------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def http_records() -> Iterator[list[logging.LogRecord]]:
    """Records of flowlang and its children (the HTTP client logs as ``flowlang.http``) at
    DEBUG, as an application's handler sees them."""
    capture = Capture()
    logger = logging.getLogger("flowlang")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        yield capture.records
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)


def test_secrets_echoed_in_headers_are_masked_in_child_logger_records(
    server: Server, backend: str, http_records: list[logging.LogRecord]
) -> None:
    server.received.script("hdr", (200, {"X-Echo": SECRET, "X-Echo-Url": quote(SECRET)}, {}))
    [result] = run_on(server, echo_flow(server, "/script/hdr"), backend)
    assert result.trace[0]["outcome"] == "success"
    names = {record.name for record in http_records}
    assert "flowlang.http" in names
    headers = [r for r in http_records if r.msg.startswith("response ")]
    assert headers and "X-Echo" in headers[0].getMessage()
    requests = [r for r in http_records if r.msg.startswith("request ")]
    assert requests and "X-Key" in requests[0].getMessage()  # a header carrying the secret
    for record in http_records:
        shown = f"{record.getMessage()} {record.msg} {record.args!r}"
        assert not leaked(shown, SECRET), record.name


def test_log_redaction_is_installed_once_and_chains_the_factory() -> None:
    """In a fresh process: a factory set before is kept, a second install adds no wrapper, and
    records of any child of the named loggers are masked."""
    code = textwrap.dedent(f"""
        import logging
        from flowlang.runtime.secrets import Redactor, install_log_redaction
        base = logging.getLogRecordFactory()
        def tagging(*args, **kwargs):
            record = base(*args, **kwargs)
            record.tagged = True
            return record
        logging.setLogRecordFactory(tagging)
        install_log_redaction()
        installed = logging.getLogRecordFactory()
        install_log_redaction()
        assert logging.getLogRecordFactory() is installed
        Redactor().add({SECRET!r})
        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append(record)
        logging.getLogger().addHandler(Keep())
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("httpcore.http11.deeper").debug("got %s", {SECRET!r})
        logging.getLogger("httpx").info("url %s", {quote(SECRET)!r})
        try:
            raise ValueError({SECRET!r})
        except ValueError:
            logging.getLogger("h11").exception("failed")
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=(
            RuntimeError, RuntimeError({quote(SECRET, safe="")!r}), None))
        logging.getLogger("myapp").info("not ours %s", "kept")
        for record in seen:
            assert record.tagged
        text = "\\n".join(logging.Formatter().format(record) for record in seen)
        assert {SECRET!r} not in text and {quote(SECRET)!r} not in text, text
        assert text.count("[redacted]") == 4 and "not ours kept" in text, text
        print("ok")
    """)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_installing_log_redaction_twice_in_this_process_keeps_one_factory() -> None:
    install_log_redaction()
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    install_log_redaction(("httpx",))
    assert logging.getLogRecordFactory() is factory


# --- 26: a secret a server echoes reaches no output -------------------------------------------


def test_an_echoed_secret_reaches_no_output_of_a_run(server: Server, backend: str) -> None:
    body = {"token": SECRET, "odd": ODD, "nested": [{"again": f"Bearer {SECRET}"}]}
    server.received.script("echo", (200, {"X-Echo": SECRET, "X-Odd": quote(ODD)}, body))
    # the run sends secrets.odd too, so that the redactor knows it
    flow = echo_flow(server, "/script/echo", method="POST", body={"o": "<<secrets.odd>>"})
    first, resumed = run_on(
        server, flow, backend, digits=["12"], secrets={"api_key": SECRET, "odd": ODD}
    )
    assert first.status == "waiting_for_input"
    assert first.awaiting is not None and REDACTED in first.awaiting["prompt"]
    assert REDACTED in first.instructions[0]["text"]
    assert first.state is not None
    assert first.state["scope"]["steps"]["call"]["response"]["headers"]["x-echo"] == REDACTED
    assert resumed.status == "ended"
    for result in (first, resumed):
        assert not leaked(everything(result), SECRET, ODD)


#: A token a server can echo in a header name (only token characters).
TOKEN = "sk_live_4f9a8b7c6d5e"


def test_a_secret_echoed_as_a_header_name_or_a_body_key_reaches_no_output(
    server: Server, backend: str
) -> None:
    """Items 23/26: a server that rejects the token by naming it (``X-Rejected-<token>: 1``,
    ``{"<token>": "unknown key"}``): masked in the trace, the state and the resumed run."""
    headers = {f"X-Rejected-{TOKEN}": "1", TOKEN: "2"}
    server.received.script("echo", (401, headers, {TOKEN: "unknown key", "error": "bad"}))
    flow = echo_flow(server, "/script/echo")
    first, resumed = run_on(server, flow, backend, secret=TOKEN, digits=["12"])
    assert first.status == "waiting_for_input" and resumed.status == "ended"
    assert first.state is not None
    response = first.state["scope"]["steps"]["call"]["response"]
    assert response["status"] == 401
    assert response["headers"][f"x-rejected-{REDACTED}"] == "1"
    assert response["headers"][REDACTED] == "2"
    assert response["body"] == {REDACTED: "unknown key", "error": "bad"}
    for result in (first, resumed):
        assert not leaked(everything(result), TOKEN)


def test_automate_json_masks_a_secret_echoed_as_a_body_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items 23/26: the CRM echoes the bearer token as a JSON key: not in ``automate --json``,
    nor in the store (its file and write-ahead log) or any file the run wrote."""
    examples = Path(__file__).parent.parent / "examples" / "workflows"
    token = "tok_3f9a8b7c6d"
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", token)
    monkeypatch.setenv("FLOWLANG_SECRET_SPEECH_API_KEY", "key12345")
    responses = (examples / "data" / "responses.yaml").read_text()
    assert "body: {id: note-1}" in responses
    (tmp_path / "responses.yaml").write_text(
        responses.replace("body: {id: note-1}", f'body: {{{token}: "unknown token"}}')
    )
    events = (examples / "data" / "events.jsonl").read_text().splitlines()
    (tmp_path / "events.jsonl").write_text(
        "\n".join(line for line in events if "recording.uploaded" in line) + "\n"
    )
    status, text = cli(
        *automate_argv(tmp_path, workflows=[examples / "recording_transcription.yaml"]), "--json"
    )
    assert status == 0, text
    assert f'{{"{REDACTED}": "unknown token"}}' in text
    inputs = {"responses.yaml", "events.jsonl"}  # the token is in the recorded response
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path.name not in inputs]
    assert any(path.name == "store.db" for path in files)
    written = "".join(path.read_bytes().decode("latin-1") for path in files)
    assert not leaked(text + written, token)


def test_an_exception_with_a_secret_fails_the_run_masked(server: Server, backend: str) -> None:
    class Leaky(flowlang.RecordingHost):
        async def say(self, text: str, *, step: str) -> None:
            raise RuntimeError(f"cannot speak {text!r} ({text.encode()!r})")

    flow = echo_flow(server, "/script/echo?k=<<secrets.api_key>>")
    server.received.script("echo", (200, {}, {"token": SECRET}))
    [result] = run_on(server, flow, backend, host=Leaky())
    assert result.status == "failed" and "RuntimeError" in (result.error or "")
    assert not leaked(everything(result), SECRET)


def test_flowlang_run_json_and_interactive_mask_an_echoed_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowlang.cli import main

    monkeypatch.setenv("FLOWLANG_SECRET_API_KEY", SECRET)
    flow = tmp_path / "echo.yaml"
    flow.write_text(
        textwrap.dedent("""
        flow: echo
        start: call
        steps:
          call:
            type: http_request
            endpoint: https://crm.example.com/echo?key=<<secrets.api_key>>
            next: ask
            on_failure: gone
          gone: {type: hangup}
          ask:
            type: collect_input
            prompt: "Your code is <<steps.call.response.body.token>>"
            next: done
            on_no_input: done
          done: {type: say, text: "<<steps.call.response.body.token>>"}
        """)
    )
    responses = tmp_path / "responses.json"
    url = f"https://crm.example.com/echo?key={quote(SECRET, safe='')}"
    responses.write_text(
        json.dumps(
            [
                {
                    "request": f"GET {url}",
                    "headers": {"x-echo": SECRET},
                    "body": {"token": SECRET, "url": url},
                }
            ]
        )
    )
    for options in (["--json"], ["--interactive"], ["--json", "--interactive"]):
        out = io.StringIO()
        status = main(
            ["run", str(flow), "--responses", str(responses), *options],
            stdout=out,
            stdin=io.StringIO("42\n"),
        )
        text = out.getvalue()
        assert status == 0, text
        assert REDACTED in text
        assert not leaked(text, SECRET), options
        if options == ["--interactive"]:
            assert f"caller hears: Your code is {REDACTED}" in text


def test_an_exception_whose_message_cannot_be_read_fails_the_run(
    server: Server, backend: str
) -> None:
    class UnreadableError(Exception):
        def __str__(self) -> str:
            raise ValueError("no message")

    class Broken(flowlang.RecordingHost):
        async def say(self, text: str, *, step: str) -> None:
            raise UnreadableError

    server.received.script("echo", (200, {}, {}))
    [result] = run_on(server, echo_flow(server, "/script/echo"), backend, host=Broken())
    assert result.status == "failed"
    assert result.error == "UnreadableError: (the message could not be read)"


def test_flowlang_run_prints_hostile_text_escaped(tmp_path: Path) -> None:
    """Control characters from a server (terminal escapes, bidi overrides) are shown escaped."""
    from flowlang.cli import main

    flow = tmp_path / "show.yaml"
    flow.write_text(
        textwrap.dedent("""
        flow: show
        start: call
        steps:
          call:
            type: http_request
            endpoint: https://crm.example.com/x
            next: ask
            on_failure: gone
          gone: {type: hangup}
          ask:
            type: collect_input
            prompt: "<<steps.call.response.body.text>>"
            next: done
            on_no_input: done
          done: {type: say, text: "<<steps.call.response.body.text>>"}
        """)
    )
    hostile = "\x1b]0;owned\x07\x1b[2J\u202eevil\r\nresult: completed"
    responses = tmp_path / "responses.json"
    responses.write_text(
        json.dumps([{"request": "GET https://crm.example.com/x", "body": {"text": hostile}}])
    )
    out = io.StringIO()
    status = main(
        ["run", str(flow), "--responses", str(responses), "--interactive"],
        stdout=out,
        stdin=io.StringIO("1\n"),
    )
    text = out.getvalue()
    assert status == 0, text
    assert not any(char in text for char in "\x1b\x07\r\u202e")
    assert "caller hears: \\x1b]0;owned\\x07" in text
    assert [line for line in text.splitlines() if line.startswith("result:")] == [
        "result: completed"
    ]


def two_suspension_flow(server: Server) -> flowlang.CompiledFlow:
    """``auth`` sends the token, the run suspends, then ``echo`` (which sends no secret) gets
    the token back in a body and a header, says it, and suspends again."""
    seen = "<<steps.echo | json>>"
    document = {
        "flow": "late",
        "start": "auth",
        "steps": {
            "auth": {
                "type": "http_request",
                "method": "POST",
                "endpoint": server.url("crm.test", "/script/auth"),
                "headers": {"Authorization": "Bearer <<secrets.crm_token>>"},
                "next": "ask",
                "on_failure": "ask",
            },
            "ask": {
                "type": "collect_input",
                "prompt": "PIN?",
                "next": "echo",
                "on_no_input": "echo",
            },
            "echo": {
                "type": "http_request",
                "endpoint": server.url("crm.test", "/script/echo"),
                "next": "tell",
                "on_failure": "tell",
            },
            "tell": {"type": "say", "text": f"heard {seen}", "next": "again"},
            "again": {
                "type": "collect_input",
                "prompt": f"after {seen}",
                "next": "done",
                "on_no_input": "done",
            },
            "done": {"type": "transfer", "target": f"queue:{seen}"},
        },
    }
    return flowlang.load_flow_text(json.dumps(document))


def test_a_secret_sent_before_a_suspension_and_echoed_after_it_is_masked(
    server: Server, backend: str
) -> None:
    """Item 26: the state names (never holds) the secrets used; the resumed run masks them."""
    server.received.script("auth", (200, {}, {"ok": True}))
    echoed = {"token": SECRET, "auth": f"Bearer {SECRET}"}
    server.received.script("echo", (200, {"X-Echo": SECRET}, echoed))
    flow = two_suspension_flow(server)
    first, resumed, last = run_on(
        server, flow, backend, digits=["12", "3"], secrets={"crm_token": SECRET}
    )
    assert first.state is not None and first.state["secrets_used"] == ["crm_token"]
    assert resumed.status == "waiting_for_input" and last.status == "ended"
    assert resumed.state is not None and resumed.state["secrets_used"] == ["crm_token"]
    echo = resumed.state["scope"]["steps"]["echo"]["response"]
    assert echo["headers"]["x-echo"] == REDACTED
    assert echo["body"] == {"token": REDACTED, "auth": f"Bearer {REDACTED}"}
    for result in (first, resumed, last):
        assert not leaked(everything(result), SECRET)


def key_header_flow(
    name: str, call: dict[str, Any], **steps: dict[str, Any]
) -> flowlang.CompiledFlow:
    """A flow whose first step ``call`` sends ``secrets.api_key`` in a header to
    https://crm.example.com/a (``call`` adds to that step), then ``steps``, then ``done``."""
    request = {
        "type": "http_request",
        "endpoint": "https://crm.example.com/a",
        "headers": {"X-Key": "<<secrets.api_key>>"},
        **call,
    }
    document = {
        "flow": name,
        "start": "call",
        "steps": {"call": request, **steps, "done": {"type": "hangup"}},
    }
    return flowlang.load_flow_text(json.dumps(document))


def test_a_secret_the_provider_no_longer_has_is_skipped_on_resume(backend: str) -> None:
    """Item 26: a name in ``secrets_used`` the provider lost does not fail the resume."""
    from flowlang.runtime.http import RecordedHttp, RecordedResponse

    flow = key_header_flow(
        "gone",
        {"next": "ask", "on_failure": "ask"},
        ask={"type": "collect_input", "prompt": "PIN?", "next": "done", "on_no_input": "done"},
    )
    http = RecordedHttp({("GET", "https://crm.example.com/a"): RecordedResponse(200, {}, {})})
    provider = MappingSecrets({"api_key": SECRET})

    async def main() -> list[flowlang.RunResult]:
        async with Runtime(http=http, secrets=provider, backend=backend) as rt:
            first = await rt.start(flow, {})
            assert first.state is not None
            provider.values.clear()
            return [first, await rt.resume(flow, json.loads(json.dumps(first.state)), "1")]

    first, resumed = asyncio.run(main())
    assert first.state is not None and first.state["secrets_used"] == ["api_key"]
    assert resumed.status == "ended", resumed.error


def test_a_background_sender_that_raises_leaves_a_masked_failed_result(backend: str) -> None:
    """A custom sender's exception for a ``parse_response: false`` request is recorded in
    ``background_results`` (masked), not lost with the task."""

    class Raising:
        async def send(self, request: Any, **_: Any) -> Any:
            raise RuntimeError(f"cannot send {dict(request.headers)!r}")

    flow = key_header_flow("bg", {"parse_response": False, "next": "done"})

    async def main() -> tuple[flowlang.RunResult, list[dict[str, Any]]]:
        rt = Runtime(http=Raising(), secrets=MappingSecrets({"api_key": SECRET}), backend=backend)
        async with rt:
            result = await rt.start(flow, {})
        return result, list(rt.background_results)

    result, background = asyncio.run(main())
    assert result.status == "ended", result.error
    [entry] = background
    assert entry["outcome"] == "connection_error" and entry["step"] == "call"
    assert "RuntimeError" in entry["error"] and REDACTED in entry["error"]
    assert not leaked(json.dumps(background), SECRET)
