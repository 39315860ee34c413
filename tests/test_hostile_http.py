"""Hostile input for the outbound HTTP layer (issue 8, items 1-6 and 14): endpoints that try to
move the host, decompression bombs, redirects that try to carry credentials or bodies away,
control characters in header values, special-purpose addresses, responses that cannot be read
and certificates that do not verify. Every server is on loopback and stopped after its test.
"""

from __future__ import annotations

import asyncio
import codecs
import encodings
import gzip
import ipaddress
import json
import pkgutil
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import Server, serve
from support import FakeClock

import flowlang
from flowlang import MappingSecrets, Runtime, RuntimeSettings
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    load_workflow_text,
)
from flowlang.flow.model import Endpoint
from flowlang.http_rules import (
    PreparedRequest,
    RequestError,
    header_value_problem,
    render_endpoint,
    sent_origin_problem,
    url_origin,
)
from flowlang.runtime.addresses import (
    IPV4_REFUSED,
    IPV6_ALLOWED,
    IPV6_REFUSED,
    AddressPolicy,
    refusal_reason,
)
from flowlang.runtime.http import (
    GuardedHttp,
    HttpResult,
    _Inflater,
    _TooLargeError,
    decode_body,
)


def _has_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


SECRET = "hostile-secret-value"
_TEXT_CODECS = {
    codecs.lookup(module.name).name
    for module in pkgutil.iter_modules(encodings.__path__)
    if module.name not in ("aliases", "mbcs", "oem", "cp65001") and _has_codec(module.name)
}
LIMIT = 64 * 1024


# --- a raw loopback server: canned bytes per path --------------------------------------------


@dataclass
class RawServer:
    """A plain-HTTP loopback server answering each path with canned response bytes."""

    port: int
    responses: dict[str, bytes]
    requests: list[bytes] = field(default_factory=list)

    def url(self, path: str, host: str = "raw.test") -> str:
        return f"http://{host}:{self.port}{path}"


def response(status: int, headers: Mapping[str, str], body: bytes) -> bytes:
    """The bytes of one HTTP/1.1 response with a Content-Length."""
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


@contextmanager
def raw_server(responses: dict[str, bytes]) -> Iterator[RawServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = RawServer(listener.getsockname()[1], responses)
    stop = threading.Event()

    def serve_one(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = connection.recv(4096)
                if not chunk:
                    return
                data += chunk
                if data.startswith(b"\x16"):  # a TLS handshake: answer in plain HTTP
                    connection.sendall(response(400, {}, b"plain http here"))
                    return
            server.requests.append(data)
            path = data.split(b" ", 2)[1].decode("latin-1").split("?")[0]
            connection.sendall(server.responses.get(path, response(404, {}, b"")))

    def loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            serve_one(connection)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


async def _resolve_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def guarded(
    *, allow: tuple[str, ...] = ("raw.test", "crm.test", "other.test"), ssl_context: Any = None
) -> GuardedHttp:
    return GuardedHttp(AddressPolicy(frozenset(allow)), ssl_context, _resolve_loopback)


def send(
    url: str,
    *,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes | None = None,
    follow_redirects: bool = False,
    ssl_context: Any = None,
    max_body: int = LIMIT,
) -> HttpResult:
    async def main() -> HttpResult:
        sender = guarded(ssl_context=ssl_context)
        try:
            request = PreparedRequest(method, url, headers, body)
            return await sender.send(
                request, timeout=5, max_body=max_body, follow_redirects=follow_redirects
            )
        finally:
            await sender.aclose()

    return asyncio.run(main())


def run_flow(
    flow: flowlang.CompiledFlow,
    context: Mapping[str, Any] | None = None,
    *,
    ssl_context: Any = None,
    allow: tuple[str, ...] = ("raw.test", "crm.test", "other.test"),
) -> flowlang.RunResult:
    async def main() -> flowlang.RunResult:
        runtime = Runtime(
            ssl_context=ssl_context,
            resolver=_resolve_loopback,
            secrets=MappingSecrets({"api_key": SECRET}),
            settings=RuntimeSettings(allow_hosts=frozenset(allow)),
        )
        async with runtime:
            return await runtime.start(flow, context or {})

    return asyncio.run(main())


def http_flow(step: Mapping[str, Any]) -> flowlang.CompiledFlow:
    document = {
        "flow": "hostile",
        "start": "call",
        "steps": {
            "call": {"type": "http_request", "next": "ok", "on_failure": "failed", **step},
            "ok": {"type": "say", "text": "ok"},
            "failed": {"type": "say", "text": "failed <<steps.call.outcome>>"},
        },
    }
    # A plain http endpoint passes the check for its own host: the runtime's guard is under test.
    hosts = [urlsplit(str(step["endpoint"])).hostname or ""] if "endpoint" in step else []
    return flowlang.load_flow_text(json.dumps(document), allow_hosts=hosts)


def took_failure_edge(result: flowlang.RunResult, outcome: str) -> str:
    """The step's error, after checking the run completed through the failure edge."""
    assert result.status == "completed", result.error
    assert result.trace[0]["outcome"] == outcome, result.trace[0]
    assert [i["text"] for i in result.instructions] == [f"failed {outcome}"]
    return str(result.trace[0]["detail"]["error"])


# --- 1. the endpoint's origin is fixed text --------------------------------------------------


def load_errors(endpoint: str) -> str:
    text = (
        "flow: t\nstart: call\nsteps:\n  call:\n    type: http_request\n"
        f"    endpoint: {endpoint}\n    next: end\n    on_failure: end\n  end: {{type: hangup}}\n"
    )
    with pytest.raises(flowlang.FlowDocumentError) as caught:
        flowlang.load_flow_text(text, name="t.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "column"),
    [
        ("https://crm.example.com<<vars.sub>>/api", 38),
        ("https://crm.example.com:<<contact.port>>/x", 39),
        ("https://api-<<vars.region>>.example.com/", 27),
        ("https://user<<vars.x>>@host/", 27),
        ("https://crm.example.com<<vars.path>>", 38),
        ('https://crm.example.com<<"/x">>', 38),
    ],
)
def test_a_templated_host_or_port_is_refused_at_load(endpoint: str, column: int) -> None:
    errors = load_errors(endpoint)
    assert "the host and port of an endpoint must be fixed text" in errors
    assert f"t.yaml:6:{column}" in errors
    caret_line = errors.splitlines()[-1]
    assert caret_line.index("^") - caret_line.index("|") - 2 == column - 1  # under the '<<'


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("https://crm.example.com:80a/x", "the port '80a' is not a number from 1 to 65535"),
        ("https://crm.example.com:99999/x", "the port '99999' is not a number from 1 to 65535"),
        ("https://crm.example.com:0/x", "the port '0' is not a number from 1 to 65535"),
        ("https://crm.example.com:/x", "the port '' is not a number"),
        ("https://user:pw@crm.example.com/x", "cannot carry credentials"),
        ("https://crm.example.com@evil.example/x", "cannot carry credentials"),
        ('"https://[::1/x"', "has no closing ']'"),
        ('"https://[::1]x/"', "unexpected 'x'"),
        ("https://0177.0.0.1/x", "not a valid URL"),
        ("https://crm%2eexample.com/x", "is not a valid host name"),
        ('"https://crm.example.com\\\\@evil.example/"', "cannot carry credentials"),
    ],
)
def test_a_malformed_fixed_origin_is_a_load_error(endpoint: str, problem: str) -> None:
    errors = load_errors(endpoint)
    assert "invalid endpoint" in errors and problem in errors
    assert "t.yaml:6:" in errors


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://crm.example.com/<<vars.x>>",
        "https://crm.example.com?q=<<vars.x>>",
        "https://crm.example.com#<<vars.x>>",
        "https://crm.example.com:8443/a/<<vars.x>>",
        "https://[2001:db8::1]:8443/<<vars.x>>",
        "https://crm.example.com",
        "HTTPS://CRM.example.com/x",
    ],
)
def test_fixed_origins_ended_by_fixed_text_load(endpoint: str) -> None:
    flow = http_flow({"endpoint": endpoint})
    assert flow.steps["call"].fields["endpoint"].scheme == "https"


def test_automation_endpoints_have_the_same_rule() -> None:
    text = (
        "workflow: w\ntrigger: call.ended\nactions:\n  - name: a\n    type: api_request\n"
        "    endpoint: https://crm.example.com<<event.id>>/x\n"
    )
    with pytest.raises(flowlang.FlowDocumentError) as caught:
        load_workflow_text(text)
    assert "the host and port of an endpoint must be fixed text" in str(caught.value)


@pytest.mark.parametrize("name", ["Host", "HOST", "host"])
def test_a_host_header_is_refused_at_check_time_in_flows_and_workflows(name: str) -> None:
    flow = (
        "flow: t\nstart: call\nsteps:\n  call:\n    type: http_request\n"
        "    endpoint: https://crm.example.com/x\n"
        f"    headers: {{{name}: internal.example.com}}\n"
        "    next: end\n    on_failure: end\n  end: {type: hangup}\n"
    )
    workflow = (
        "workflow: w\ntrigger: call.ended\nactions:\n  - name: a\n    type: api_request\n"
        f"    endpoint: https://crm.example.com/x\n    headers: {{{name}: <<event.id>>}}\n"
    )
    for load in (
        lambda: flowlang.load_flow_text(flow, name="t.yaml"),
        lambda: load_workflow_text(workflow),
    ):
        with pytest.raises(flowlang.FlowDocumentError) as caught:
            load()
        assert f"the {name} header cannot be set" in str(caught.value)


class _Raw:
    """A template stand-in whose text goes into the URL as it is (a broken encoder)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self, context: Mapping[str, Any]) -> str:
        return self.text


def test_an_endpoint_without_a_fixed_origin_is_refused_when_rendered() -> None:
    """Defence in depth: an endpoint built around the loader's check (no terminator after the
    host) is refused when rendered, whatever its values."""
    with pytest.raises(RequestError, match="host and port are not fixed text"):
        render_endpoint(("https://crm.example.com", _Raw(".evil.test"), "/x"), {})
    with pytest.raises(RequestError, match="does not start with a fixed"):
        render_endpoint((_Raw("https://evil.test/"), "x"), {})
    assert render_endpoint(("https://crm.example.com/", _Raw("a b")), {}) == (
        "https://crm.example.com/a%20b"
    )


def test_a_step_whose_origin_is_not_fixed_takes_its_failure_edge() -> None:
    with raw_server({"/x": response(200, {}, b"{}")}) as server:
        flow = http_flow({"endpoint": server.url("/x")})
        moved = (f"http://raw.test:{server.port}", _Raw("1"), "/x")
        flow.steps["call"].fields["endpoint"] = Endpoint(moved, "http", "raw.test")
        result = run_flow(flow)
        error = took_failure_edge(result, "invalid_request")
        assert "host and port are not fixed text" in error
        assert server.requests == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://crm.test:99999999/x", "the port '99999999' is not a number from 1 to 65535"),
        ("https://crm.test:0/x", "the port '0' is not"),
        ("https://crm.test: 443/x", "the port ' 443' is not"),
        ("https://crm.test:+443/x", "the port '+443' is not"),
        ("https://[::1/x", "not a valid URL"),
        ("https://user:pw@crm.test/x", "credentials"),
        ("https://crm.test\\@evil.test/x", "credentials"),
        ("https://crm.test/\ud800", "not a valid URL"),
        ("https://crm%2etest/x", "not a valid host name"),
    ],
)
def test_the_sender_checks_the_origin_httpx_reads_is_the_one_written(
    url: str, problem: str
) -> None:
    """Applications can hand GuardedHttp any PreparedRequest: before anything is resolved or
    sent, the URL's authority text must be well formed and httpx must read the same origin."""
    result = send(url)
    assert result.outcome == "invalid_request" and problem in str(result.error)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(), st.sampled_from(["\ud800", "\udfff", "..", "@evil:1/", "\\"])),
        min_size=1,
        max_size=3,
    )
)
def test_no_value_changes_the_origin_or_raises_anything_but_request_error(
    values: list[str],
) -> None:
    engine = flowlang.Engine()
    parts: list[Any] = ["https://crm.example.com:8443/a/"]
    for index in range(len(values)):
        parts += [engine.compile(f"<<vars.v{index}>>"), "/"]
    context = {"vars": {f"v{index}": value for index, value in enumerate(values)}}
    try:
        url = render_endpoint(tuple(parts), context)
    except RequestError as error:
        assert "lone surrogate" in str(error)
        return
    assert url_origin(url) == ("https", "crm.example.com", 8443)
    assert sent_origin_problem(url, httpx.URL(url)) is None


def test_a_lone_surrogate_in_an_endpoint_value_fails_the_step() -> None:
    with raw_server({}) as server:
        # A context cannot carry a lone surrogate (the run refuses it at start), but an
        # expression's string escape can make one.
        flow = http_flow({"endpoint": server.url('/x/<<"a\\ud800b">>')})
        result = run_flow(flow, {})
        assert "lone surrogate" in took_failure_edge(result, "invalid_request")
        assert server.requests == []


# --- 2. decompression bombs --------------------------------------------------------------------


def _bomb() -> bytes:
    return gzip.compress(bytes(10 * 1024 * 1024), compresslevel=9)


def _measure(url: str) -> tuple[HttpResult, int]:
    tracemalloc.start()
    try:
        result = send(url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_gzip_bomb_stops_at_the_limit_in_bounded_memory() -> None:
    bomb = _bomb()
    assert len(bomb) < 20_000
    with raw_server({"/bomb": response(200, {"Content-Encoding": "gzip"}, bomb)}) as server:
        result, peak = _measure(server.url("/bomb"))
    assert result.outcome == "too_large" and "inflated" in str(result.error)
    assert peak < 5 * 1024 * 1024, peak


@pytest.mark.parametrize("coding", ["gzip, gzip", "gzip,deflate", "br", "zstd", "compress"])
def test_stacked_or_unasked_codings_are_refused_in_bounded_memory(coding: str) -> None:
    body = gzip.compress(_bomb())
    with raw_server({"/x": response(200, {"Content-Encoding": coding}, body)}) as server:
        result, peak = _measure(server.url("/x"))
    assert result.outcome == "invalid_response"
    assert "stacked" in str(result.error) or "not asked for" in str(result.error)
    assert peak < 5 * 1024 * 1024, peak


def test_two_content_encoding_lines_are_a_stack_too() -> None:
    body = gzip.compress(gzip.compress(b"{}"))
    raw = response(200, {"Content-Encoding": "gzip", "content-encoding": "gzip"}, body)
    with raw_server({"/x": raw}) as server:
        result = send(server.url("/x"))
    assert result.outcome == "invalid_response" and "stacked" in str(result.error)


def test_gzip_of_gzip_declared_once_is_inflated_once() -> None:
    inner = gzip.compress(bytes(10 * 1024 * 1024))
    raw = response(200, {"Content-Encoding": "gzip"}, gzip.compress(inner))
    with raw_server({"/x": raw}) as server:
        result, peak = _measure(server.url("/x"))
    assert result.outcome == "success" and isinstance(result.body, str)
    assert peak < 5 * 1024 * 1024


def test_what_is_asked_for_is_gzip_and_deflate_only() -> None:
    with raw_server({"/x": response(200, {}, b"{}")}) as server:
        send(server.url("/x"), headers=(("Accept-Encoding", "br, zstd"),))
        [request] = server.requests
    lines = [line.lower() for line in request.split(b"\r\n")]
    assert lines.count(b"accept-encoding: gzip, deflate") == 1
    assert not any(b"br" in line for line in lines if line.startswith(b"accept-encoding"))


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(b'{"tier": "gold"}')),
        ("x-gzip", gzip.compress(b'{"tier": "gold"}')),
        ("GZIP", gzip.compress(b'{"tier": ') + gzip.compress(b'"gold"}')),  # two members
        ("deflate", zlib.compress(b'{"tier": "gold"}')),
        ("deflate", zlib.compress(b'{"tier": "gold"}')[2:-4]),  # raw deflate, as some send
        ("identity", b'{"tier": "gold"}'),
    ],
)
def test_honest_compressed_responses_are_read(coding: str, body: bytes) -> None:
    headers = {"Content-Encoding": coding, "Content-Type": "application/json"}
    with raw_server({"/x": response(200, headers, body)}) as server:
        result = send(server.url("/x"))
    assert (result.outcome, result.body) == ("success", {"tier": "gold"})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (gzip.compress(b"x" * 1000)[:-12], "truncated"),
        (b"\x1f\x8b\x08\x00garbage-not-gzip", "broken"),
        (gzip.compress(b"{}") + b"trailing", "broken"),
    ],
)
def test_broken_gzip_is_an_invalid_response(body: bytes, problem: str) -> None:
    with raw_server({"/x": response(200, {"Content-Encoding": "gzip"}, body)}) as server:
        result = send(server.url("/x"))
    assert result.outcome == "invalid_response" and problem in str(result.error)


def test_raw_bytes_count_too_even_when_they_inflate_to_nothing() -> None:
    empty_members = gzip.compress(b"") * 5000  # ~100 KB that inflates to nothing
    with raw_server({"/x": response(200, {"Content-Encoding": "gzip"}, empty_members)}) as server:
        result = send(server.url("/x"))
    assert result.outcome == "too_large"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=3000), min_size=1, max_size=3),
    st.sampled_from(["gzip", "deflate", "raw-deflate"]),
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=0, max_value=9000),
)
def test_inflating_in_any_chunking_gives_the_data_or_stops_at_the_limit(
    members: list[bytes], coding: str, chunk: int, limit: int
) -> None:
    if coding == "gzip":
        encoded = b"".join(gzip.compress(member) for member in members)
        data = b"".join(members)
    else:
        data = members[0]
        encoded = zlib.compress(data)
        encoded = encoded[2:-4] if coding == "raw-deflate" else encoded
    inflater = _Inflater("gzip" if coding == "gzip" else "deflate", limit)
    out: list[bytes] = []
    try:
        for start in range(0, len(encoded), chunk):
            out.extend(inflater.feed(encoded[start : start + chunk]))
    except _TooLargeError:
        assert len(data) > limit
        return
    assert b"".join(out) == data and len(data) <= limit
    assert inflater.complete


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["gzip", "deflate"]))
def test_garbage_never_inflates_to_more_than_the_limit_or_raises_anything_but_zlib_error(
    garbage: bytes, coding: str
) -> None:
    inflater = _Inflater(coding, 1000)
    try:
        produced = sum(len(piece) for piece in inflater.feed(garbage))
    except (zlib.error, _TooLargeError):
        return
    assert produced <= 1000


def test_a_bomb_in_a_flow_takes_the_failure_edge() -> None:
    with raw_server({"/bomb": response(200, {"Content-Encoding": "gzip"}, _bomb())}) as server:
        result = run_flow(http_flow({"endpoint": server.url("/bomb")}))
    assert "larger than the limit" in took_failure_edge(result, "too_large")


# --- 3. redirects --------------------------------------------------------------------------------


def redirect_flow(server: Server, status: int, target: str, method: str) -> flowlang.CompiledFlow:
    server.received.script("hop", (status, {"Location": target}, {}))
    step: dict[str, Any] = {
        "endpoint": server.url("crm.test", "/script/hop"),
        "method": method,
        "follow_redirects": True,
        "headers": {
            "Authorization": "Bearer <<secrets.api_key>>",
            "X-Api-Key": "<<secrets.api_key>>",
            "X-Custom": "custom",
            "Accept": "application/json",
        },
    }
    if method != "GET":
        step["body"] = {"card": "4111"}
    return http_flow(step)


def final_request(server: Server) -> dict[str, Any]:
    return dict(server.received.requests[-1])


@pytest.mark.parametrize(
    ("status", "method", "sent"),
    [(301, "POST", "GET"), (302, "POST", "GET"), (303, "POST", "GET"), (303, "PUT", "GET")],
)
def test_a_redirect_that_becomes_get_drops_the_body(
    server: Server, status: int, method: str, sent: str
) -> None:
    flow = redirect_flow(server, status, "/echo", method)
    result = run_flow(flow, ssl_context=server.client_ssl_context())
    assert result.trace[0]["outcome"] == "success"
    final = final_request(server)
    assert (final["method"], final["body"]) == (sent, "")
    assert "content-type" not in final["headers"] and "content-length" not in final["headers"]
    assert final["headers"]["x-custom"] == "custom"  # same origin: the headers stay


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_keep_method_and_body_on_the_same_origin(server: Server, status: int) -> None:
    flow = redirect_flow(server, status, "/echo", "POST")
    result = run_flow(flow, ssl_context=server.client_ssl_context())
    assert result.trace[0]["outcome"] == "success"
    final = final_request(server)
    assert final["method"] == "POST" and json.loads(final["body"]) == {"card": "4111"}


@pytest.mark.parametrize("status", [307, 308])
def test_a_body_never_follows_a_redirect_to_another_origin(server: Server, status: int) -> None:
    flow = redirect_flow(server, status, server.url("other.test", "/echo"), "POST")
    result = run_flow(flow, ssl_context=server.client_ssl_context())
    error = took_failure_edge(result, "refused")
    assert "would resend the request body" in error
    assert len(server.received.requests) == 1


@pytest.mark.parametrize(("status", "method"), [(302, "GET"), (301, "POST"), (303, "POST")])
def test_across_origins_only_harmless_headers_go(server: Server, status: int, method: str) -> None:
    flow = redirect_flow(server, status, server.url("other.test", "/echo"), method)
    result = run_flow(flow, ssl_context=server.client_ssl_context())
    assert result.trace[0]["outcome"] == "success"
    final = final_request(server)
    assert final["method"] == "GET" and final["body"] == ""
    assert final["headers"]["host"] == f"other.test:{server.port}"
    sent = set(final["headers"])
    assert sent <= {"host", "accept", "accept-encoding", "user-agent", "accept-language"}
    assert final["headers"]["accept"] == "application/json"
    assert SECRET not in json.dumps(final)


# --- 4. header values ---------------------------------------------------------------------------


@pytest.mark.parametrize("char", [chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]])
def test_every_control_character_but_tab_is_refused(char: str) -> None:
    assert header_value_problem(f"a{char}b") is not None


def test_tab_is_allowed() -> None:
    assert header_value_problem("a\tb") is None


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_header_values_are_refused_exactly_when_rfc_9110_forbids_them(value: str) -> None:
    allowed = all(char == "\t" or 0x20 <= ord(char) < 0x7F for char in value)
    assert (header_value_problem(value) is None) == allowed


@pytest.mark.parametrize("value", ["a\x01b", "a\x7fb", "\x1b[31m"])
def test_control_characters_in_templated_header_values_fail_the_step(value: str) -> None:
    with raw_server({"/x": response(200, {}, b"{}")}) as server:
        flow = http_flow({"endpoint": server.url("/x"), "headers": {"X-V": "<<vars.v>>"}})
        result = run_flow(flow, {"vars": {"v": value}})
        assert "control character" in took_failure_edge(result, "invalid_request")
        assert server.requests == []


def test_control_characters_in_fixed_header_values_are_load_errors() -> None:
    with pytest.raises(flowlang.FlowDocumentError, match="control character"):
        http_flow({"endpoint": "https://crm.example.com/x", "headers": {"X-V": "a\x01b"}})


# --- 5. the address guard's tables ----------------------------------------------------------


def _inside(network: str) -> list[str]:
    net = ipaddress.ip_network(network)
    last = net.broadcast_address
    return [
        str(net.network_address),
        str(net.network_address + (net.num_addresses // 2)),
        str(last),
    ]


@pytest.mark.parametrize(
    ("network", "reason"),
    [*IPV4_REFUSED, *IPV6_REFUSED],
    ids=[text for text, _ in (*IPV4_REFUSED, *IPV6_REFUSED)],
)
def test_every_special_purpose_block_is_refused(network: str, reason: str) -> None:
    allowed = [ipaddress.ip_network(text) for text in IPV6_ALLOWED]
    for text in _inside(network):
        address = ipaddress.ip_address(text)
        if any(address in net for net in allowed):
            continue
        assert refusal_reason(address) is not None, text


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1",
        "feff::1",
        "192.0.0.9",
        "198.18.0.1",
        "198.19.255.255",
        "240.0.0.1",
        "255.255.255.255",
        "100::1",
        "2001:db8::1",
        "2001:2::1",
        "2001:10::1",
        "2001::1",
        "3fff::1",
        "5f00::1",
        "fd12::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "64:ff9b:1::8.8.8.8",
        "2002:a00:1::1",
        "::127.0.0.1",
        "::",
        "4000::1",
        "0.1.2.3",
    ],
)
def test_named_special_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "192.0.1.1",
        "198.20.0.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:1::1",
        "2001:3::1",
        "2001:4:112::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


async def _get_public(resolver: Any) -> HttpResult:
    """GET https://public.test/x through a GuardedHttp that resolves with ``resolver``."""
    sender = GuardedHttp(AddressPolicy(), None, resolver)
    try:
        request = PreparedRequest("GET", "https://public.test/x", ())
        return await sender.send(request, timeout=2, max_body=LIMIT, follow_redirects=False)
    finally:
        await sender.aclose()


def test_a_site_local_answer_is_refused_before_connecting() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["fec0::1"]

    result = asyncio.run(_get_public(resolver))
    assert result.outcome == "refused" and "site-local" in str(result.error)


# --- 6. a bad response fails the step --------------------------------------------------------


@pytest.mark.parametrize("charset", ["undefined", "idna", "punycode", "unicode_escape", "base64"])
def test_a_charset_that_is_no_character_set_fails_the_step(charset: str) -> None:
    headers = {"Content-Type": f"text/plain; charset={charset}"}
    with raw_server({"/x": response(200, headers, b"xn--\xff\xfe abc")}) as server:
        result = run_flow(http_flow({"endpoint": server.url("/x")}))
    assert "is not a character set" in took_failure_edge(result, "invalid_response")


def test_an_unknown_charset_is_read_as_utf8() -> None:
    assert decode_body("café".encode(), "text/plain; charset=utf8mb4") == ("success", "café")
    assert decode_body(b"a", "text/plain; charset=\x00") == ("success", "a")


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://crm.test:99999/", "is not a number from 1 to 65535"),
        ("https://[::1/", "IPv6"),
        ("https://0177.0.0.1/", "a loopback address"),
        ("https://user:pw@crm.test/", "cannot carry credentials"),
        ("https://crm.test:0/", "is not a number from 1 to 65535"),
        ("ftp://crm.test/", "must start with https://"),
    ],
)
def test_a_bad_location_fails_the_step_with_a_reason(
    server: Server, location: str, reason: str
) -> None:
    server.received.script("hop", (302, {"Location": location}, {}))
    flow = http_flow({"endpoint": server.url("crm.test", "/script/hop"), "follow_redirects": True})
    result = run_flow(flow, ssl_context=server.client_ssl_context())
    assert reason in took_failure_edge(result, "refused")
    assert len(server.received.requests) == 1


def test_send_is_total_but_cancellation_propagates() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver bug")

    async def cancelled(host: str, port: int) -> list[str]:
        raise asyncio.CancelledError

    result = asyncio.run(_get_public(broken))
    assert result.outcome == "invalid_response" and "RuntimeError: resolver bug" in str(
        result.error
    )
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_get_public(cancelled))


@pytest.mark.parametrize(
    "header",
    [("X-V", "a\nb"), ("X-V", "a\x00b"), ("X-V", "\u20ac"), ("X V", "v"), ("X-V", "\ud800")],
)
def test_a_header_no_check_caught_is_a_permanent_invalid_request(header: tuple[str, str]) -> None:
    """Requests built by an application (or a provider action) that skipped the header checks:
    the sender refuses what h11 cannot write, permanently, never as a retryable failure."""
    with raw_server({"/x": response(200, {}, b"{}")}) as server:
        result = send(server.url("/x"), headers=(header,))
        assert result.outcome == "invalid_request", result
        assert server.requests == []


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(_TEXT_CODECS)),
    st.binary(max_size=64),
    st.sampled_from(["text/plain", "text/html", ""]),
)
def test_no_charset_raises_or_yields_text_that_is_not_unicode(
    codec: str, body: bytes, media: str
) -> None:
    outcome, value = decode_body(body, f"{media}; charset={codec}")
    if outcome == "success" and isinstance(value, str):
        value.encode("utf-8")  # no lone surrogate: the text can go anywhere a str goes
    else:
        assert outcome in ("invalid_response", "invalid_json", "success")


# --- 14. TLS failures are permanent ----------------------------------------------------------


def test_an_untrusted_certificate_is_a_tls_error(ca: trustme.CA) -> None:
    with serve(trustme.CA()) as impostor:
        result = send(impostor.url("crm.test", "/json"), ssl_context=impostor.client_ssl_context())
        assert result.outcome == "success"  # its own CA trusts it
        client = ssl_context_trusting(ca)
        result = send(impostor.url("crm.test", "/json"), ssl_context=client)
    assert result.outcome == "tls_error" and "CERTIFICATE_VERIFY_FAILED" in str(result.error)


def test_tls_to_a_plain_http_server_is_a_tls_error(ca: trustme.CA) -> None:
    with raw_server({"/x": response(200, {}, b"{}")}) as server:
        result = send(f"https://raw.test:{server.port}/x", ssl_context=ssl_context_trusting(ca))
    assert result.outcome == "tls_error"


def ssl_context_trusting(ca: trustme.CA) -> Any:
    import ssl

    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_an_untrusted_certificate_is_dead_lettered_at_once(ca: trustme.CA, tmp_path: Path) -> None:
    workflow = (
        "workflow: w\ntrigger: call.ended\nactions:\n  - name: log\n    type: api_request\n"
        "    endpoint: https://crm.test:{port}/script/crm/x\n"
        '    headers: {{Authorization: "Bearer <<secrets.api_key>>"}}\n'
    )
    clock = FakeClock()
    store = DeadLetterStore(tmp_path / "dead.jsonl")
    with serve(trustme.CA()) as impostor:

        async def main() -> Any:
            automations = Automations(
                [load_workflow_text(workflow.format(port=impostor.port))],
                settings=DeliverySettings(allow_hosts=frozenset({"crm.test"})),
                ssl_context=ssl_context_trusting(ca),
                resolver=_resolve_loopback,
                secrets=MappingSecrets({"api_key": SECRET}),
                clock=clock,
                dead_letters=store,
            )
            async with automations:
                return await automations.dispatch(
                    {"id": "evt-1", "type": "call.ended", "properties": {}}
                )

        result = asyncio.run(main())
        assert impostor.received.requests == []
    [delivery] = result.deliveries
    assert (delivery.outcome, delivery.attempts) == ("dead_lettered", 1)
    assert clock.waits == []
    [record] = DeadLetterStore.read(tmp_path / "dead.jsonl")
    assert "CERTIFICATE_VERIFY_FAILED" in json.dumps(record)
