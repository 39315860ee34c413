"""JSON log lines: one per state change, parseable, with their fields; hostile values stay one
line of valid JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_observe_support import (
    SECRET,
    RecordedSender,
    billing_flow,
    captured,
    drive_call,
    observer,
)

from flowlang.automations.dispatch import Attempt, Delivery, DispatchResult
from flowlang.observe.logs import MAX_FIELD, JsonLogFormatter, configure_json_logging
from flowlang.runtime.runner import Runtime
from flowlang.runtime.secrets import MappingSecrets

TS_LENGTH = len("2026-11-30T09:48:19.925Z")


def parsed(lines: list[str], logger: str = "flowlang.serve") -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines]
    return [record for record in records if record["logger"] == logger]


def test_one_line_per_state_change_with_its_fields(backend: str) -> None:
    obs = observer()
    flow = billing_flow("https://crm.test")

    async def main() -> None:
        runtime = Runtime(
            http=obs.sender(RecordedSender()),
            secrets=MappingSecrets({"token": SECRET}),
            backend=backend,
        )
        async with runtime:
            context = {"call": {"id": "CA77", "external_number": "+14155550199"}}
            await drive_call(obs, runtime, flow, "CA77", context, ["1"])

    with captured() as lines:
        asyncio.run(main())
    records = parsed(lines)
    assert [record["event"] for record in records] == [
        "run.started",
        "run.suspended",
        "run.resumed",
        "run.finished",
    ]
    for record in records:
        assert record["ts"].endswith("Z") and len(record["ts"]) == TS_LENGTH
        assert record["flow"] == "billing" and record["call_id"] == "CA77"
        assert record["fingerprint"] == flow.fingerprint
        assert "trace_id" not in record  # no tracer provider: no span
    started, suspended, resumed, finished = records
    # one INFO line per webhook: where the segment ended; its start only at DEBUG
    assert (started["level"], resumed["level"]) == ("debug", "debug")
    assert (suspended["level"], finished["level"]) == ("info", "info")
    assert suspended["step"] == "ask" and suspended["steps"] == 2
    assert suspended["resumed"] is False and finished["resumed"] is True
    assert finished["from_step"] == "ask"
    assert isinstance(suspended["duration_ms"], float)
    assert resumed["step"] == "ask"
    assert finished["status"] == "ended" and finished["step"] == "sales"
    text = "\n".join(lines)
    assert "+14155550199" not in text and "4155550199" not in text  # never a caller number


def test_a_failed_run_is_a_warning_with_its_reason_and_no_error_text() -> None:
    obs = observer()
    flow = billing_flow("https://crm.test")

    result = SimpleNamespace(
        status="failed",
        error="the run took longer than 12s",
        trace=[{"step": "lookup", "type": "http_request", "outcome": "timeout"}],
    )

    with captured() as lines:
        obs.segment_finished(flow, result, 12.5, call_id="CA1", resumed=False)  # type: ignore[arg-type]
    [_, failed] = parsed(lines)
    assert failed["event"] == "run.failed" and failed["level"] == "warning"
    assert failed["reason"] == "deadline" and failed["step"] == "lookup"
    assert "error" not in failed


def test_events_webhooks_and_deliveries_are_logged() -> None:
    obs = observer(known_triggers=["call.ended"])
    with captured() as lines:
        obs.event("call.ended", "accepted")
        obs.event("call.ended", "duplicate")
        obs.event("<script>", "rejected")
        obs.webhook_rejected("voice", "bad_signature")
        obs.attempt(Attempt("evt-1", "crm-sync", "post", 2, "retry", retry_in=300.0))
        obs.dispatched(
            DispatchResult("evt-1", deliveries=[Delivery("crm-sync", "post", "dead_lettered", 8)])
        )
    records = parsed(lines)
    assert [(r["event"], r["level"]) for r in records] == [
        ("event.accepted", "info"),
        ("event.duplicate", "info"),
        ("event.rejected", "warning"),
        ("webhook.rejected", "warning"),
        ("delivery.attempt", "info"),
        ("delivery.dead_lettered", "error"),
    ]
    assert records[2]["trigger"] == "other"  # a trigger no workflow has is never echoed
    assert records[3] | {"ts": ""} == {
        "ts": "",
        "level": "warning",
        "logger": "flowlang.serve",
        "event": "webhook.rejected",
        "endpoint": "voice",
        "reason": "bad_signature",
    }
    assert records[4]["attempt"] == 2 and records[4]["retry_in"] == 300.0
    assert records[5]["attempts"] == 8 and records[5]["event_id"] == "evt-1"


def _format(**fields: Any) -> dict[str, Any]:
    record = logging.LogRecord("flowlang.serve", logging.INFO, "f.py", 1, "run.started", None, None)
    record.__dict__.update(fields)
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    result: dict[str, Any] = json.loads(line)
    return result


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x" * 100_000, "x" * MAX_FIELD),
        ("line one\nline two\r\n\x00", "line one\nline two\r\n\x00"),
        ("\ud800 lone surrogate", "\ud800 lone surrogate"),
        (float("nan"), None),
        (float("inf"), None),
        ({"deep": [[[[1]]]]}, "{'deep': [[[[1]]]]}"),
        (b"\xff\xfe bytes", "b'\\xff\\xfe bytes'"),
        (True, True),
        (3, 3),
    ],
    ids=["huge", "newlines-nul", "surrogate", "nan", "inf", "nested", "bytes", "bool", "int"],
)
def test_hostile_field_values_stay_one_line_of_json(value: Any, expected: Any) -> None:
    assert _format(field=value)["field"] == expected


def test_many_fields_are_bounded_and_standard_names_are_kept() -> None:
    fields = {f"f{index}": index for index in range(500)}
    line = _format(**fields)
    assert len([key for key in line if key.startswith("f")]) == 64
    assert line["event"] == "run.started" and line["logger"] == "flowlang.serve"


def test_an_exception_is_one_field() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "flowlang.serve", logging.ERROR, "f.py", 1, "oops", None, sys.exc_info()
        )
    line = json.loads(JsonLogFormatter().format(record))
    assert "ValueError: bad thing" in line["exception"] and line["level"] == "error"


def test_a_record_whose_arguments_do_not_fit_its_message() -> None:
    record = logging.LogRecord("flowlang.x", logging.INFO, "f.py", 1, "%d things", ("a",), None)
    assert json.loads(JsonLogFormatter().format(record))["event"] == "%d things"


def test_configure_json_logging_replaces_its_handler_and_writes_to_the_stream() -> None:
    logger = logging.getLogger("flowlang")
    level, propagate, before = logger.level, logger.propagate, list(logger.handlers)
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_json_logging(first, "INFO")
        handler = configure_json_logging(second, logging.WARNING)
        assert [h for h in logger.handlers if h not in before] == [handler]
        assert logger.propagate is False
        logging.getLogger("flowlang.serve").info("quiet")
        logging.getLogger("flowlang.serve").warning("loud", extra={"flow": "billing"})
    finally:
        for added in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(added)
        logger.setLevel(level)
        logger.propagate = propagate
    assert first.getvalue() == ""
    [line] = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "loud" and json.loads(line)["flow"] == "billing"


@hypothesis_settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=-1e10, max_value=2.5e11, allow_nan=False),
        st.integers(min_value=0, max_value=4_000_000_000).map(float),
        st.tuples(
            st.integers(min_value=0, max_value=4_000_000_000),
            st.sampled_from([0.0009999, 0.9999995, 0.9999999, 0.0005, 0.0000005, 0.5]),
        ).map(sum),
    )
)
def test_timestamps_are_datetimes_text(created: float) -> None:
    """The line's time (the date formatted once per second) is datetime's own, rounding
    included, at every instant."""
    from datetime import UTC, datetime

    from flowlang.observe.logs import _iso

    moment = datetime.fromtimestamp(created, UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert _iso(created) == expected
    assert _iso(created) == expected  # from the cached second too


def test_a_segment_logs_nothing_below_the_loggers_level_but_a_failure_still() -> None:
    """With flowlang.serve at WARNING a suspended or finished segment writes no line (none is
    built); a failed one still writes run.failed."""
    obs = observer()
    flow = SimpleNamespace(name="billing", fingerprint="f6c29d98", steps={}, source="")
    rows = [{"step": "ask", "type": "collect_input", "outcome": "waiting"}]
    serve = logging.getLogger("flowlang.serve")
    before = serve.level
    with captured() as lines:
        serve.setLevel(logging.WARNING)
        try:
            for status in ("waiting_for_input", "completed", "failed"):
                result = SimpleNamespace(trace=rows, status=status, error="boom")
                obs.segment_finished(flow, result, 0.001, call_id="CA1", resumed=True)  # type: ignore[arg-type]
        finally:
            serve.setLevel(before)
    assert [record["event"] for record in parsed(lines)] == ["run.failed"]
