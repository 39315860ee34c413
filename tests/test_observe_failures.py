"""An observer whose internals raise never raises into the caller: calls go on, the failure is
logged as ``observe.failed`` (its method and exception type, never its message)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from test_observe_support import (
    SECRET,
    RecordedSender,
    billing_flow,
    drive_call,
    observer,
    span_capture,
)

from flowlang.automations.dispatch import Attempt, DispatchResult
from flowlang.http_rules import PreparedRequest
from flowlang.observe.observer import Observability
from flowlang.runtime.runner import Runtime
from flowlang.runtime.secrets import MappingSecrets


class Exploding:
    """Anything: every attribute and call raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"internal {name} {SECRET}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal call")


def broken_observer(**parts: bool) -> Observability:
    obs = observer(span_capture())
    if parts.get("metrics", True):
        obs.prometheus = Exploding()  # type: ignore[assignment]
    if parts.get("tracing", True):
        obs.tracing.tracer = Exploding()
        obs.tracing._pending = Exploding()  # type: ignore[assignment]
    if parts.get("log", True):
        obs.log = Exploding()  # type: ignore[assignment]
    return obs


def run_billing(obs: Observability) -> list[Any]:
    flow = billing_flow("https://crm.test")

    async def main() -> list[Any]:
        runtime = Runtime(
            http=obs.sender(RecordedSender()), secrets=MappingSecrets({"token": SECRET})
        )
        async with runtime:
            context = {"call": {"id": "CA1", "external_number": "+1555"}}
            return await drive_call(obs, runtime, flow, "CA1", context, ["1"])

    return asyncio.run(main())


@pytest.mark.parametrize(
    "parts",
    [{}, {"metrics": False}, {"tracing": False}, {"log": False}],
    ids=["all-broken", "metrics-work", "tracing-works", "logs-work"],
)
def test_calls_go_on_whatever_breaks(
    parts: dict[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    obs = broken_observer(**parts)
    results = run_billing(obs)
    assert [result.status for result in results] == ["waiting_for_input", "ended"]
    obs.calls_waiting("billing", 1)
    obs.webhook_rejected("voice", "bad")
    obs.event("call.ended", "accepted")
    obs.attempt(Attempt("e", "w", "a", 1, "delivered"))
    obs.dispatched(DispatchResult("e"))
    obs.know_triggers(["x"])
    assert obs.metrics()[0] in (b"",) or parts.get("metrics") is False
    failures = [r for r in caplog.records if r.getMessage() == "observe.failed"]
    assert failures
    assert all(SECRET not in f"{r.getMessage()} {r.__dict__}" for r in failures)


def test_garbage_arguments_never_raise() -> None:
    obs = observer(span_capture())
    obs.segment_finished(None, None, "soon", call_id=None, resumed=None)  # type: ignore[arg-type]

    odd = SimpleNamespace(
        status="failed",
        error=12,
        trace=[
            {"step": None, "type": 3, "outcome": ["x"], "detail": "nope"},
            {},
            {"detail": {}},
            7,
        ],
    )

    obs.segment_finished(object(), odd, float("nan"), call_id="x" * 10_000, resumed=False)  # type: ignore[arg-type]
    for trace in (7, "rows", None, {"step": "a"}):
        weird = SimpleNamespace(status="waiting_for_input", error=None, trace=trace)
        with obs.segment("flow", "CA2", False):
            obs.segment_finished(object(), weird, 1, call_id="CA2", resumed=True)  # type: ignore[arg-type]
    obs.calls_waiting(None, "many")  # type: ignore[arg-type]
    obs.event(None, None)  # type: ignore[arg-type]
    obs.attempt(None)  # type: ignore[arg-type]
    obs.dispatched(None)  # type: ignore[arg-type]
    obs.webhook_rejected(None, None)  # type: ignore[arg-type]
    with obs.segment(None, None, None):  # type: ignore[arg-type]
        pass
    page = obs.metrics()[0].decode()
    assert 'flowlang_runs_started_total{flow="other"}' in page


def test_a_tracer_that_raises_never_stops_a_request() -> None:
    obs = observer(span_capture())
    obs.tracing.tracer = Exploding()
    sender = obs.sender(RecordedSender())
    result = asyncio.run(
        sender.send(
            PreparedRequest("GET", "https://crm.test/x", ()),
            timeout=1,
            max_body=10,
            follow_redirects=False,
        )
    )
    assert result.outcome == "success"


def test_a_span_that_raises_at_the_end_never_stops_a_request() -> None:
    obs = observer(span_capture())

    class Span:
        def set_attribute(self, *args: Any) -> None:
            raise RuntimeError("no")

        def end(self) -> None:
            pass

    obs.tracing.tracer.start_span = lambda *args, **kwargs: Span()
    sender = obs.sender(RecordedSender(outcome="timeout", status=None))
    result = asyncio.run(
        sender.send(
            PreparedRequest("GET", "https://crm.test/x", ()),
            timeout=1,
            max_body=10,
            follow_redirects=False,
        )
    )
    assert result.outcome == "timeout"


def test_failures_log_no_message(caplog: pytest.LogCaptureFixture) -> None:
    obs = broken_observer()
    caplog.set_level(logging.DEBUG)
    obs.calls_waiting("billing", 1)
    [record] = [r for r in caplog.records if r.getMessage() == "observe.failed"]
    assert record.__dict__["method"] == "calls_waiting"
    assert record.__dict__["error_type"] == "RuntimeError"


def test_rows_of_any_shape_still_end_the_segment_span() -> None:
    spans = span_capture()
    obs = observer(spans)
    rows = [7, {"step": "a", "duration_ms": "slow"}, {"step": "b", "outcome": "said"}]
    with obs.segment("flow", "CA1", False):
        pass
    obs.segment_finished(
        SimpleNamespace(name="flow", fingerprint="f"),  # type: ignore[arg-type]
        SimpleNamespace(status="completed", error=None, trace=rows),  # type: ignore[arg-type]
        0.1,
        call_id="CA1",
        resumed=False,
    )
    [span] = spans.all()
    assert [event.attributes["flowlang.step.id"] for event in span.events] == ["a", "b"]
    assert span.events[0].attributes["duration_ms"] == 0.0
    assert span.attributes["flowlang.run.status"] == "completed"
