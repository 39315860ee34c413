"""OpenTelemetry spans of `flowlang serve` (captured with the SDK's InMemorySpanExporter): a
span per run segment with a span event per step, a CLIENT span per request as a child of it,
the stable HTTP conventions, redacted URLs, no propagation headers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode
from servers import Server
from test_observe_support import billing_flow, call_through, observer, span_capture

from flowlang.http_rules import PreparedRequest
from flowlang.observe import tracing
from flowlang.observe.observer import Observability
from flowlang.observe.tracing import REDACTED_URL_PART, TracedSender, redact_url
from flowlang.runtime.secrets import Redactor


@pytest.mark.parametrize(
    "finished_inside", [False, True], ids=["finished-after", "finished-inside"]
)
def test_segment_spans_step_events_and_a_client_child(
    server: Server, backend: str, finished_inside: bool
) -> None:
    spans = span_capture()
    obs = observer(spans)
    flow = billing_flow(server.url("crm.test", ""))
    call_through(server, obs, flow, ["1"], backend=backend, finished_inside=finished_inside)
    first, second = spans.named("flowlang.run billing")
    [client] = spans.named("POST")
    assert first.kind == second.kind == SpanKind.INTERNAL
    assert client.kind == SpanKind.CLIENT
    assert client.parent is not None and client.parent.span_id == first.context.span_id
    assert client.context.trace_id == first.context.trace_id
    assert second.context.trace_id != first.context.trace_id  # one webhook, one segment
    assert first.attributes["flowlang.flow.name"] == "billing"
    assert first.attributes["flowlang.call.id"] == "CA0001"
    assert first.attributes["flowlang.run.resumed"] is False
    assert first.attributes["flowlang.run.status"] == "waiting_for_input"
    assert first.attributes["flowlang.waiting_at"] == "ask"
    assert first.attributes["flowlang.run.steps"] == 2
    assert first.attributes["flowlang.flow.fingerprint"] == flow.fingerprint
    assert second.attributes["flowlang.run.resumed"] is True
    assert second.attributes["flowlang.run.status"] == "ended"
    assert "flowlang.waiting_at" not in second.attributes
    steps = [
        (
            event.name,
            event.attributes["flowlang.step.id"],
            event.attributes["flowlang.step.outcome"],
        )
        for event in second.events
    ]
    assert steps == [
        ("flowlang.step", "ask", "collected"),
        ("flowlang.step", "route", "branch 0"),
        ("flowlang.step", "sales", "transferred"),
    ]
    assert {event.attributes["flowlang.step.type"] for event in first.events} == {
        "http_request",
        "collect_input",
    }
    assert all(isinstance(event.attributes["duration_ms"], float) for event in first.events)
    attributes = dict(client.attributes)
    assert attributes == {
        "http.request.method": "POST",
        "server.address": "crm.test",
        "server.port": server.port,
        "url.full": f"https://crm.test:{server.port}/json?caller=REDACTED&key=REDACTED",
        "http.response.status_code": 200,
    }
    assert client.status.status_code == StatusCode.UNSET
    assert all(span.end_time is not None for span in spans.all())


def test_no_trace_header_is_sent(server: Server) -> None:
    spans = span_capture()
    call_through(server, observer(spans), billing_flow(server.url("crm.test", "")), [])
    [request] = server.received.requests
    assert not {"traceparent", "tracestate", "baggage", "b3"} & set(request["headers"])
    assert spans.named("POST")


@pytest.mark.parametrize(
    ("path", "error_type", "status"),
    [
        ("/silent", "timeout", None),
        ("/status/500", "500", 500),
        ("/status/404", "404", 404),
        ("/reset", "connection_error", None),
        ("/invalid-json", "invalid_json", 200),
    ],
    ids=["timeout", "500", "404", "reset", "invalid-json"],
)
def test_failed_requests_carry_error_type(
    server: Server, path: str, error_type: str, status: int | None
) -> None:
    spans = span_capture()
    flow = billing_flow(server.url("crm.test", ""), path=path, timeout="300ms")
    call_through(server, observer(spans), flow, [])
    [client] = spans.named("POST")
    assert client.attributes["error.type"] == error_type
    assert client.attributes.get("http.response.status_code") == status
    assert client.status.status_code == StatusCode.ERROR


def test_a_block_that_raises_ends_its_span_with_the_error_and_the_error_goes_on() -> None:
    spans = span_capture()
    obs = observer(spans)
    with pytest.raises(KeyError), obs.segment("billing", "CA1", False):
        raise KeyError("boom")
    [span] = spans.all()
    assert span.attributes["error.type"] == "KeyError"
    assert span.status.status_code == StatusCode.ERROR


def test_a_segment_whose_result_never_comes_is_ended_when_the_next_one_is_kept() -> None:
    spans = span_capture()
    obs = observer(spans)
    with obs.segment("billing", "CA1", False):
        pass
    assert spans.all() == []  # kept open for segment_finished
    with obs.segment("billing", "CA1", True):
        pass
    assert len(spans.all()) == 1


def test_pending_segments_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "MAX_PENDING", 5)
    spans = span_capture()
    obs = observer(spans)
    for index in range(12):
        with obs.segment("billing", f"CA{index}", False):
            pass
    assert len(spans.all()) == 7


def test_without_the_api_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_otel", lambda: None)
    obs = Observability.create()
    sender: Any = object()
    assert obs.sender(sender) is sender
    with obs.segment("billing", "CA1", False):
        pass
    assert obs.tracing.enabled is False and obs.tracing.ids() is None


def test_unknown_methods_are_other_and_named_http() -> None:
    spans = span_capture()
    obs = observer(spans)

    class Answer:
        async def send(self, request: PreparedRequest, **options: Any) -> Any:
            from flowlang.runtime.http import HttpResult

            return HttpResult("success", 200, duration=0.01)

    sender = obs.sender(Answer())
    request = PreparedRequest("BREW", "https://pot.test/coffee", ())
    asyncio.run(sender.send(request, timeout=1, max_body=10, follow_redirects=False))
    [span] = spans.all()
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "BREW"
    assert span.attributes["server.port"] == 443


def test_a_sender_that_raises_ends_its_span_and_the_error_goes_on() -> None:
    spans = span_capture()
    obs = observer(spans)

    class Broken:
        async def send(self, request: PreparedRequest, **options: Any) -> Any:
            raise ConnectionAbortedError("gone")

    sender = obs.sender(Broken())
    assert isinstance(sender, TracedSender)
    with pytest.raises(ConnectionAbortedError):
        asyncio.run(
            sender.send(
                PreparedRequest("GET", "https://a.test/", ()),
                timeout=1,
                max_body=10,
                follow_redirects=False,
            )
        )
    [span] = spans.all()
    assert span.attributes["error.type"] == "ConnectionAbortedError"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # names no earlier test registers as a secret value (masks are process-wide)
        ("https://crm.test/a?color=1&shade=2", "https://crm.test/a?color=REDACTED&shade=REDACTED"),
        ("https://u:p@crm.test:8443/a", "https://REDACTED:REDACTED@crm.test:8443/a"),
        ("https://crm.test/a?flag&color=", "https://crm.test/a?flag&color=REDACTED"),
        ("https://crm.test/a#frag", "https://crm.test/a"),
        ("https://[::1/", REDACTED_URL_PART),
    ],
    ids=["query-values", "userinfo", "flag-and-empty", "fragment", "malformed"],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_masks_a_path_segment_holding_a_secret() -> None:
    secret = "pathSecret-93a7c"
    Redactor().add(secret)
    assert redact_url(f"https://crm.test/v1/{secret}/calls") == "https://crm.test/v1/REDACTED/calls"
    assert redact_url(f"https://crm.test/v1?{secret}=1") == "https://crm.test/v1?REDACTED=REDACTED"


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
def test_no_query_value_survives_redaction(values: list[str]) -> None:
    from urllib.parse import quote

    query = "&".join(f"p{index}={quote(text, safe='')}" for index, text in enumerate(values))
    shown = redact_url(f"https://crm.test/calls?{query}")
    assert shown == "https://crm.test/calls?" + "&".join(
        f"p{index}=REDACTED" for index in range(len(values))
    )


def test_log_lines_carry_the_segment_span_ids(server: Server) -> None:
    import json

    from test_observe_support import captured

    spans = span_capture()
    obs = observer(spans)
    with captured() as lines:
        call_through(server, obs, billing_flow(server.url("crm.test", "")), [])
    [segment] = spans.named("flowlang.run billing")
    records = [json.loads(line) for line in lines if '"flowlang.serve"' in line]
    assert [record["event"] for record in records] == ["run.started", "run.suspended"]
    for record in records:
        assert record["trace_id"] == f"{segment.context.trace_id:032x}"
        assert record["span_id"] == f"{segment.context.span_id:016x}"


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.test/" + "a/" * 500_000 + "?q=" + "v" * 100_000,
        "https://" + "h" * 100_000 + ".test/",
        "https://crm.test/\ud800/caf\u00e9?x=\udcff",
        "https://crm.test:99999999/x",
        "not a url at all \x00\r\n",
        "",
    ],
    ids=["huge-path-and-query", "huge-host", "surrogates", "bad-port", "garbage", "empty"],
)
def test_hostile_urls_make_bounded_attributes(url: str) -> None:
    spans = span_capture()
    obs = observer(spans)

    class Answer:
        async def send(self, request: PreparedRequest, **options: Any) -> Any:
            from flowlang.runtime.http import HttpResult

            return HttpResult("invalid_request", None, error="refused")

    sender = obs.sender(Answer())
    request = PreparedRequest("GET", url, ())
    result = asyncio.run(sender.send(request, timeout=1, max_body=10, follow_redirects=False))
    assert result.outcome == "invalid_request"
    [span] = spans.all()
    for value in span.attributes.values():
        assert len(str(value)) <= 2048
    assert span.attributes["error.type"] == "invalid_request"
    assert "v" * 100 not in span.attributes["url.full"]


def test_an_oversized_url_shows_its_origin_only() -> None:
    url = "https://u:p@crm.test:8443/" + "a" * 10_000 + "?k=v"
    assert redact_url(url) == "https://REDACTED:REDACTED@crm.test:8443/REDACTED"


def test_with_the_api_alone_segments_and_requests_work_and_record_nothing() -> None:
    from opentelemetry.trace import NoOpTracerProvider

    obs = Observability.create(tracer_provider=NoOpTracerProvider())
    flow = billing_flow("https://crm.test")
    with obs.segment("billing", "CA1", False):
        pass
    result = SimpleNamespace(status="completed", error=None, trace=[{"step": "lookup"}])
    obs.segment_finished(flow, result, 0.1, call_id="CA1", resumed=False)  # type: ignore[arg-type]
    assert obs.tracing._pending == {}
