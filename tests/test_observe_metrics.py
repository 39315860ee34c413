"""Prometheus metrics of `flowlang serve`: counts from real runs, labels only from definitions
and fixed enums (a cardinality test over 1,000 calls), guards, multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from test_observe_support import (
    SECRET,
    RecordedSender,
    billing_flow,
    drive_call,
    observer,
    samples,
    value,
)

import flowlang
from flowlang.automations.dispatch import Attempt, Delivery, DispatchResult
from flowlang.observe import NullObserver, Observer
from flowlang.observe.metrics import (
    MAX_LABEL,
    OTHER,
    LabelGuard,
    failure_reason,
    transfer_target,
)
from flowlang.observe.observer import Observability
from flowlang.runtime.host import NullHost
from flowlang.runtime.runner import Runtime, RuntimeSettings
from flowlang.runtime.secrets import MappingSecrets

ORIGIN = "https://crm.test"


def run_calls(
    obs: Observability,
    calls: list[tuple[str, str, list[str | None]]],
    *,
    sender: Any = None,
    backend: str | None = None,
    settings: RuntimeSettings | None = None,
    flow: flowlang.CompiledFlow | None = None,
    host: Any = None,
) -> list[list[flowlang.RunResult]]:
    """Drive ``(call id, caller number, digits)`` calls of the billing flow."""
    flow = flow or billing_flow(ORIGIN)

    async def main() -> list[list[flowlang.RunResult]]:
        runtime = Runtime(
            http=obs.sender(sender or RecordedSender()),
            secrets=MappingSecrets({"token": SECRET}),
            backend=backend,
            settings=settings,
            host=host,
        )
        done = []
        async with runtime:
            for call_id, number, digits in calls:
                context = {
                    "call": {"id": call_id, "external_number": number},
                    "contact": {"queue": f"queue:{number}"},
                }
                done.append(await drive_call(obs, runtime, flow, call_id, context, digits))
        return done

    return asyncio.run(main())


def test_observability_is_an_observer_and_the_null_one_reports_nothing() -> None:
    obs: Observer = observer()
    assert isinstance(obs, Observability)
    null: Observer = NullObserver()
    assert null.metrics()[0] == b""


def test_counts_of_runs_segments_steps_transfers_and_requests(backend: str) -> None:
    obs = observer()
    run_calls(
        obs,
        [
            ("CA1", "+15550000001", ["1"]),
            ("CA2", "+15550000002", ["2"]),
            ("CA3", "+15550000003", ["3"]),
            ("CA4", "+15550000004", [None]),
        ],
        backend=backend,
    )
    flow = "billing"
    assert value(obs, "flowlang_runs_started_total", flow=flow) == 4
    assert value(obs, "flowlang_runs_finished_total", flow=flow, status="ended") == 4
    assert value(obs, "flowlang_runs_waiting", flow=flow) == 0
    assert value(obs, "flowlang_segment_duration_seconds_count", flow=flow) == 8
    step = {"flow": flow, "type": "http_request", "step": "lookup", "outcome": "success"}
    assert value(obs, "flowlang_step_outcomes_total", **step) == 4
    asked = {"flow": flow, "type": "collect_input", "step": "ask"}
    assert value(obs, "flowlang_step_outcomes_total", **asked, outcome="waiting for input") == 4
    assert value(obs, "flowlang_step_outcomes_total", **asked, outcome="collected") == 3
    assert value(obs, "flowlang_step_outcomes_total", **asked, outcome="no input") == 1
    route = {"flow": flow, "type": "condition_splitter", "step": "route"}
    assert value(obs, "flowlang_step_outcomes_total", **route, outcome="branch 0") == 1
    for target in ("queue:sales", "number", "sip"):
        assert value(obs, "flowlang_transfers_total", flow=flow, target=target) == 1
    http = {"flow": flow, "step": "lookup", "method": "POST", "outcome": "success"}
    assert value(obs, "flowlang_http_client_request_duration_seconds_count", **http) == 4
    assert (
        value(obs, "flowlang_http_client_request_duration_seconds_bucket", **http, le="0.025") == 4
    )
    assert (
        value(obs, "flowlang_http_client_request_duration_seconds_bucket", **http, le="0.01") == 0
    )


def test_a_waiting_call_is_counted_until_it_resumes() -> None:
    obs = observer()
    run_calls(obs, [("CA1", "+15550000001", []), ("CA2", "+15550000002", [])])
    assert value(obs, "flowlang_runs_waiting", flow="billing") == 2
    assert value(obs, "flowlang_runs_finished_total", flow="billing", status="ended") == 0
    obs.calls_waiting("billing", -2)
    assert value(obs, "flowlang_runs_waiting", flow="billing") == 0


@pytest.mark.parametrize(
    ("outcome", "status", "label"),
    [("timeout", None, "timeout"), ("http_error", 503, "http_error"), ("made-up", None, OTHER)],
    ids=["timeout", "http-error", "unknown-outcome-is-other"],
)
def test_request_failures_are_counted_by_outcome(
    outcome: str, status: int | None, label: str
) -> None:
    obs = observer()
    run_calls(obs, [("CA1", "+15550000001", [])], sender=RecordedSender(outcome, status))
    http = {"flow": "billing", "step": "lookup", "method": "POST", "outcome": label}
    assert value(obs, "flowlang_http_client_request_duration_seconds_count", **http) == 1


LOOPING = """
flow: loop
start: a
steps:
  a: {type: set_variables, variables: {n: 1}, next: b}
  b:
    type: condition_splitter
    branches: [{conditions: [{property: "<<vars.n>>", operator: equals, value: "2"}], next: done}]
    otherwise: a
  done: {type: hangup}
"""
SPINNING = """
flow: spin
start: a
steps:
  a:
    type: condition_splitter
    branches: [{conditions: [{property: "<<vars.n>>", operator: equals, value: "2"}], next: done}]
    otherwise: a
  done: {type: hangup}
"""
BROKEN = """
flow: broken
start: a
steps:
  a: {type: say, text: "Hello."}
"""


@pytest.mark.parametrize(
    ("source", "settings", "reason"),
    [
        (LOOPING, RuntimeSettings(max_steps=20), "step_limit"),
        (SPINNING, None, "same_step"),
    ],
    ids=["step-limit", "same-step"],
)
def test_failures_are_counted_by_reason(
    source: str, settings: RuntimeSettings | None, reason: str, backend: str
) -> None:
    obs = observer()
    flow = flowlang.load_flow_text(source)
    run_calls(obs, [("CA1", "+1555", [])], flow=flow, settings=settings, backend=backend)
    assert value(obs, "flowlang_runs_finished_total", flow=flow.name, status="failed") == 1
    assert value(obs, "flowlang_run_failures_total", flow=flow.name, reason=reason) == 1


def test_failure_reason_reads_the_loops_messages_and_the_failed_row() -> None:
    assert failure_reason("the run took more than 1000 steps", []) == "step_limit"
    assert failure_reason("step 'a' ran more than 10 times in a row", []) == "same_step"
    assert failure_reason("the run took longer than 12s", []) == "deadline"
    assert failure_reason("anything else", []) == "error"
    failed_row = [{"step": "a", "outcome": "failed"}]
    assert failure_reason("the run took longer than 12s", failed_row) == "error"
    assert failure_reason(None, []) == "error"


def test_a_deadline_is_its_own_reason() -> None:
    obs = observer()

    class Slow(RecordedSender):
        async def send(self, request: Any, **options: Any) -> Any:
            await asyncio.sleep(5)

    run_calls(
        obs,
        [("CA1", "+1555", [])],
        sender=Slow(),
        settings=RuntimeSettings(run_deadline=0.1),
    )
    assert value(obs, "flowlang_run_failures_total", flow="billing", reason="deadline") == 1


def test_a_step_error_is_reason_error(backend: str) -> None:
    class BrokenHost(NullHost):
        async def say(self, text: str, *, step: str) -> None:
            raise RuntimeError("the engine is gone")

    obs = observer()
    flow = flowlang.load_flow_text(BROKEN)
    run_calls(obs, [("CA1", "+1555", [])], flow=flow, backend=backend, host=BrokenHost())
    assert value(obs, "flowlang_runs_finished_total", flow="broken", status="failed") == 1
    assert value(obs, "flowlang_run_failures_total", flow="broken", reason="error") == 1
    failed = {"flow": "broken", "step": "a", "type": "say", "outcome": "failed"}
    assert value(obs, "flowlang_step_outcomes_total", **failed) == 1


def test_one_thousand_calls_with_distinct_numbers_and_ids_add_no_series() -> None:
    """Cardinality: labels never carry caller numbers, call ids or URLs."""
    obs = observer()
    shapes: list[list[str | None]] = [["1"], ["2"], ["3"], ["4"], [None]]
    run_calls(obs, [(f"CAfirst{i}", f"+1999000000{i}", digits) for i, digits in enumerate(shapes)])
    before = samples(obs)
    calls = [
        (f"CA{index:032x}", f"+1415{index:07d}", shapes[index % len(shapes)])
        for index in range(1000)
    ]
    run_calls(obs, calls)
    after = samples(obs)
    assert set(after) == set(before)
    assert after[("flowlang_runs_started_total", (("flow", "billing"),))] == 1005
    page = obs.metrics()[0].decode()
    for call_id, number, _ in calls[:50]:
        assert call_id not in page and number not in page and number[1:] not in page
    assert "crm.test" not in page and SECRET not in page
    # the templated queue came from contact data: never a label
    assert value(obs, "flowlang_transfers_total", flow="billing", target=OTHER) == 201


def test_two_observers_in_one_process_do_not_clash() -> None:
    first, second = observer(), Observability.create()
    first.calls_waiting("billing", 1)
    assert value(first, "flowlang_runs_waiting", flow="billing") == 1
    assert value(second, "flowlang_runs_waiting", flow="billing") == 0
    assert first.prometheus.registry is not second.prometheus.registry


def test_events_deliveries_attempts_dead_letters_and_auth_failures() -> None:
    obs = observer(known_triggers=["call.ended"])
    obs.event("call.ended", "accepted")
    obs.event("call.ended", "duplicate")
    obs.event("made.up.by.a.sender", "rejected")
    obs.event("call.ended", "exploded")
    obs.know_triggers(["recording.uploaded"])
    obs.event("recording.uploaded", "unmatched")
    for number, outcome in enumerate(("retry", "retry", "failed"), 1):
        obs.attempt(Attempt("evt-1", "crm-sync", "post", number, outcome))
    obs.attempt(Attempt("evt-2", "crm-sync", "post", 1, "delivered"))
    obs.dispatched(
        DispatchResult(
            "evt-1",
            matched=["crm-sync"],
            deliveries=[
                Delivery("crm-sync", "post", "dead_lettered", attempts=3),
                Delivery("crm-sync", "notify", "skipped"),
            ],
        )
    )
    obs.webhook_rejected("voice", "bad_signature")
    obs.webhook_rejected("events", "stale")
    assert value(obs, "flowlang_events_total", trigger="call.ended", result="accepted") == 1
    assert value(obs, "flowlang_events_total", trigger="call.ended", result="duplicate") == 1
    assert value(obs, "flowlang_events_total", trigger=OTHER, result="rejected") == 1
    assert value(obs, "flowlang_events_total", trigger="call.ended", result=OTHER) == 1
    assert (
        value(obs, "flowlang_events_total", trigger="recording.uploaded", result="unmatched") == 1
    )
    attempts = {"workflow": "crm-sync", "action": "post"}
    assert value(obs, "flowlang_delivery_attempts_total", **attempts, result="retry") == 2
    assert value(obs, "flowlang_delivery_attempts_total", **attempts, result="failed") == 1
    assert value(obs, "flowlang_delivery_attempts_total", **attempts, result="delivered") == 1
    assert value(obs, "flowlang_deliveries_total", **attempts, outcome="dead_lettered") == 1
    assert (
        value(
            obs,
            "flowlang_deliveries_total",
            workflow="crm-sync",
            action="notify",
            outcome="skipped",
        )
        == 1
    )
    assert value(obs, "flowlang_dead_letters_total", workflow="crm-sync") == 1
    assert value(obs, "flowlang_webhook_auth_failures_total", endpoint="voice") == 1
    assert value(obs, "flowlang_webhook_auth_failures_total", endpoint="events") == 1


def test_label_values_from_definitions_are_cut_and_budgeted() -> None:
    guard = LabelGuard(3)
    assert guard("x" * 500) == "x" * MAX_LABEL
    assert [guard(name) for name in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]
    assert guard(None) == OTHER and guard("") == OTHER and guard(12) == OTHER
    known = LabelGuard(10, {"accepted"})
    assert known("accepted") == "accepted" and known("nope") == OTHER
    obs = observer()
    for index in range(60):
        obs.webhook_rejected(f"endpoint-{index}", "bad")
    endpoints = {
        dict(labels)["endpoint"]
        for (name, labels) in samples(obs)
        if name == "flowlang_webhook_auth_failures_total"
    }
    assert len(endpoints) == 51 and OTHER in endpoints


def test_a_long_flow_name_is_cut_in_labels() -> None:
    obs = observer()
    name = "f" * 300
    run_calls(obs, [("CA1", "+1555", ["1"])], flow=billing_flow(ORIGIN, name))
    assert value(obs, "flowlang_runs_started_total", flow="f" * MAX_LABEL) == 1


@pytest.mark.parametrize(
    ("target", "written", "label"),
    [
        ("queue:sales", True, "queue:sales"),
        ("agent:ann", True, "agent:ann"),
        ("+1 (415) 555-0100", True, "number"),
        ("14155550100", False, "number"),
        ("tel:+14155550100", True, "number"),
        ("sip:ann@pbx.example.com", True, "sip"),
        ("SIPS:ann@pbx.example.com", False, "sip"),
        ("queue:made-from-data", False, OTHER),
        ("", True, OTHER),
        (None, True, OTHER),
    ],
)
def test_transfer_targets(target: Any, written: bool, label: str) -> None:
    assert transfer_target(target, written, source="flow: x") == label


def test_a_templated_target_written_in_the_flow_is_kept() -> None:
    assert transfer_target("queue:gold", False, "vars: {q: queue:gold}") == "queue:gold"


@given(st.text(alphabet="0123456789 +-().", min_size=3, max_size=40))
def test_anything_shaped_like_a_phone_number_is_number(text: str) -> None:
    if sum(char.isdigit() for char in text) >= 3:
        assert transfer_target(text, True) == "number"


@given(st.text(max_size=300))
def test_any_target_label_is_short_and_no_number(text: str) -> None:
    label = transfer_target(text, False, "")
    assert label in ("number", "sip", OTHER)


# --- multiprocess mode ------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from flowlang.observe.observer import Observability
    from flowlang.observe.metrics import mark_process_dead
    obs = Observability.create(known_triggers=["call.ended"])
    waiting, events, dead = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    obs.calls_waiting("billing", waiting)
    for _ in range(events):
        obs.event("call.ended", "accepted")
    for pid in dead:
        mark_process_dead(int(pid))
    if not waiting:
        sys.stdout.write(obs.metrics()[0].decode())
""")


def _worker(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _page_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_multiprocess_mode_sums_the_processes(tmp_path: Path) -> None:
    first = _worker(tmp_path, "2", "3")
    assert first.stdout == ""
    first_pid = next(
        int(path.stem.rsplit("_", 1)[1]) for path in tmp_path.glob("gauge_livesum_*.db")
    )
    page = _page_values(_worker(tmp_path, "0", "4").stdout)
    assert page[("flowlang_events_total", (("result", "accepted"), ("trigger", "call.ended")))] == 7
    assert page[("flowlang_runs_waiting", (("flow", "billing"),))] == 2
    # the first worker exited: its waiting calls no longer count once it is marked dead
    page = _page_values(_worker(tmp_path, "0", "0", str(first_pid)).stdout)
    assert page.get(("flowlang_runs_waiting", (("flow", "billing"),)), 0) == 0
    assert page[("flowlang_events_total", (("result", "accepted"), ("trigger", "call.ended")))] == 7


def test_multiprocess_mode_set_too_late_or_not_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="before prometheus_client is imported"):
        Observability.create(multiprocess_path=str(tmp_path))
    with pytest.raises(ValueError, match="is not a folder"):
        Observability.create(multiprocess_path=str(tmp_path / "missing"))


def test_metrics_page_content_type() -> None:
    page, content_type = observer().metrics()
    assert content_type.startswith("text/plain; version=")
    assert b"flowlang_runs_started_total" in page or b"flowlang_runs_started" in page


def test_own_registry_is_used_when_given() -> None:
    registry = CollectorRegistry()
    obs = Observability.create(registry=registry)
    obs.calls_waiting("x", 1)
    assert registry.get_sample_value("flowlang_runs_waiting", {"flow": "x"}) == 1


def test_kept_series_count_like_fresh_ones_and_stay_bounded() -> None:
    """The labelled series the metrics keep between calls count exactly as labels() would,
    and past a label's budget new values still land on ``other`` (one kept series)."""
    obs = observer()
    for _ in range(3):
        obs.webhook_rejected("voice", "bad")
    for index in range(200):
        obs.webhook_rejected(f"endpoint-{index}", "bad")
    counts = {
        dict(labels)["endpoint"]: value
        for (name, labels), value in samples(obs).items()
        if name == "flowlang_webhook_auth_failures_total"
    }
    assert counts["voice"] == 3
    assert counts[OTHER] == 200 - 49
    assert len(counts) == 51
    assert len(obs.prometheus._child) == 51
