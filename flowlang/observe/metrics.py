"""Metrics: the Prometheus series of `flowlang serve`, labelled only from definitions and enums.

Every label value comes from a flow or workflow definition (flow names, step ids, step types,
workflow and action names, transfer targets written in the flow) or from a fixed set of words
(statuses, reasons, outcomes, results); never from a call (caller numbers, call ids, event ids,
URLs). Definitions are guarded too: a value is cut to :data:`MAX_LABEL` characters, each label
keeps at most a bounded number of distinct values (then ``other``), and a word outside its
fixed set is ``other``.

One :class:`FlowMetrics` has its own ``CollectorRegistry`` (never prometheus_client's global
one). With ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts, as prometheus_client
requires) it writes to that folder and :meth:`FlowMetrics.page` sums every process's files;
call :func:`mark_process_dead` for a worker that exited (its calls no longer wait).
"""

from __future__ import annotations

__all__ = [
    "DELIVERY_OUTCOMES",
    "EVENT_RESULTS",
    "HTTP_BUCKETS",
    "HTTP_OUTCOMES",
    "MAX_LABEL",
    "OTHER",
    "RUN_STATUSES",
    "SEGMENT_BUCKETS",
    "STEP_OUTCOMES",
    "FlowMetrics",
    "LabelGuard",
    "failure_reason",
    "mark_process_dead",
    "multiprocess_dir",
    "transfer_target",
]

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from flowlang.flow.fields import HTTP_METHODS

#: The longest label value kept; longer ones are cut.
MAX_LABEL = 100
#: The label value of anything outside its fixed set or beyond its label's budget.
OTHER = "other"
#: Statuses a run finishes with (``waiting_for_input`` is not finished).
RUN_STATUSES = frozenset({"completed", "ended", "failed"})
#: Why runs fail.
FAILURE_REASONS = frozenset({"step_limit", "same_step", "deadline", "error"})
#: Outcomes of http_request steps (flowlang.runtime.http.HttpResult, and the step's own).
HTTP_OUTCOMES = frozenset(
    {
        "success",
        "http_error",
        "timeout",
        "connection_error",
        "tls_error",
        "refused",
        "too_large",
        "invalid_json",
        "invalid_response",
        "invalid_request",
    }
)
#: Every outcome a step of a built-in kind records (``branch N`` of a condition splitter too).
STEP_OUTCOMES = HTTP_OUTCOMES | {
    "sent",
    "said",
    "played",
    "transferred",
    "voicemail",
    "hung up",
    "set",
    "waiting for input",
    "collected",
    "no input",
    "invalid",
    "chosen",
    "fallback",
    "open",
    "closed",
    "holiday",
    "otherwise",
    "failed",
}
#: What becomes of an arriving event.
EVENT_RESULTS = frozenset({"accepted", "duplicate", "unmatched", "rejected"})
#: Outcomes of one delivery attempt (flowlang.automations.dispatch.Attempt).
ATTEMPT_RESULTS = frozenset({"delivered", "retry", "failed"})
#: What becomes of one action for one event (flowlang.automations.dispatch.Delivery).
DELIVERY_OUTCOMES = frozenset({"delivered", "dead_lettered", "skipped", "unsaved"})
#: Webhook work per segment, against Twilio's 15 s.
SEGMENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0)
#: OpenTelemetry's advice for ``http.client.request.duration``.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Distinct values each label keeps at most (then ``other``): generous for real deployments,
#: a ceiling for a definition that would make one series per call.
BUDGETS = {
    "flow": 1000,
    "step": 20_000,
    "type": 100,
    "target": 2000,
    "trigger": 1000,
    "workflow": 1000,
    "action": 5000,
    "endpoint": 50,
}
#: Distinct templated (not written) transfer targets kept per flow.
DYNAMIC_TARGETS = 20
_PHONE_CHARACTERS = frozenset("0123456789+-. ()/")


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), or None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Multiprocess mode: forget the gauges of worker ``pid``, which exited (call it from the
    process manager's child-exit hook)."""
    folder = path or multiprocess_dir()
    if folder:
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class LabelGuard:
    """Label values as they may be used: cut to MAX_LABEL characters, at most ``budget``
    distinct values (later new ones are ``other``), and, with ``known``, only those words."""

    def __init__(self, budget: int, known: Iterable[str] | None = None) -> None:
        self.budget = budget
        self.known = frozenset(known) if known is not None else None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            return OTHER
        if self.known is not None:
            return value if value in self.known else OTHER
        value = value[:MAX_LABEL]
        seen = self._seen
        if value in seen:
            return value
        with self._lock:
            if len(seen) >= self.budget:
                return OTHER
            seen.add(value)
        return value


def _step_outcome(outcome: object) -> str:
    if isinstance(outcome, str):
        if outcome in STEP_OUTCOMES:
            return outcome
        if outcome.startswith("branch ") and outcome[7:].isdigit() and outcome[7:].isascii():
            return outcome[:MAX_LABEL]
    return OTHER


def failure_reason(error: str | None, trace: list[dict[str, Any]]) -> str:
    """Why a failed run failed: ``step_limit``, ``same_step``, ``deadline`` or ``error`` (a
    step that failed leaves a ``failed`` row last; the loop's own limits leave none)."""
    if trace and isinstance(trace[-1], Mapping) and trace[-1].get("outcome") == "failed":
        return "error"
    text = error if isinstance(error, str) else ""
    if text.startswith("the run took more than ") and text.rstrip().endswith(" steps"):
        return "step_limit"
    if text.startswith("step ") and " times in a row" in text:
        return "same_step"
    if text.startswith("the run took longer than "):
        return "deadline"
    return "error"


def _seconds(value: Any) -> float:
    """A duration as a histogram may take it: not negative, finite (NaN is 0)."""
    seconds = float(value)
    return min(max(seconds, 0.0), 1e9) if seconds == seconds else 0.0


def _phone_like(text: str) -> bool:
    digits = sum(char.isdigit() for char in text)
    return digits >= 3 and all(char in _PHONE_CHARACTERS for char in text)


def transfer_target(value: object, written: bool, source: str = "") -> str:
    """The label of a transfer target: ``number`` for a phone number (``tel:`` too), ``sip``
    for a SIP URI; else the target when the flow wrote it (``written``) or, when a template
    made it, when its text appears in the flow's ``source``; else ``other``."""
    if not isinstance(value, str):
        return OTHER
    text = value.strip()
    lowered = text[:5].lower()
    if lowered.startswith(("sip:", "sips:")):
        return "sip"
    if lowered.startswith("tel:") or _phone_like(text):
        return "number"
    if not text:
        return OTHER
    if written or (len(text) <= MAX_LABEL and text in source):
        return text[:MAX_LABEL]
    return OTHER


def _template_is_fixed(field: Any) -> bool:
    """Whether a step field renders the same text on every run (it reads no data)."""
    template = getattr(field, "template", field)
    if template is None:  # a literal
        return True
    references = getattr(template, "references", None)
    return references is not None and len(references) == 0


def check_multiprocess_folder(path: str) -> None:
    """ValueError unless ``path`` is a folder and prometheus_client runs in multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` set before it was imported)."""
    if not os.path.isdir(path):
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a folder")
    if values.ValueClass is values.MutexValue:
        raise ValueError(
            "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported "
            "(set it in the environment the process starts with)"
        )


class SeriesCache:
    """``metric.labels(*values)``, kept: prometheus_client's labels() checks and locks on every
    call. Callers pass values that have passed their label guards (or come from fixed sets), so
    the cache holds at most one entry per series the registry holds anyway. Thread-safe."""

    __slots__ = ("_children", "_lock")

    def __init__(self) -> None:
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._children)

    def __call__(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = metric.labels(*values)
        return child


class FlowMetrics:
    """The Prometheus side of :class:`~flowlang.observe.observer.Observability`."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        known_triggers: Iterable[str] = (),
        multiprocess_path: str | None = None,
    ) -> None:
        #: Multiprocess mode's folder, or None (one process).
        self.multiprocess_path = multiprocess_path
        if multiprocess_path is not None:
            check_multiprocess_folder(multiprocess_path)
        #: Where the series are registered (one process) or collected from (multiprocess).
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        where = None if multiprocess_path is not None else self.registry
        self._labels = {name: LabelGuard(budget) for name, budget in BUDGETS.items()}
        self._triggers = set(known_triggers)
        self._dynamic_targets: dict[str, set[str]] = {}
        self._child = SeriesCache()
        self.runs_started = Counter(
            "flowlang_runs_started", "Runs started (calls answered).", ["flow"], registry=where
        )
        self.runs_finished = Counter(
            "flowlang_runs_finished",
            "Runs finished, by status (completed, ended, failed).",
            ["flow", "status"],
            registry=where,
        )
        self.run_failures = Counter(
            "flowlang_run_failures",
            "Failed runs, by reason (step_limit, same_step, deadline, error).",
            ["flow", "reason"],
            registry=where,
        )
        self.runs_waiting = Gauge(
            "flowlang_runs_waiting",
            "Calls waiting for the caller's input now.",
            ["flow"],
            registry=where,
            multiprocess_mode="livesum",
        )
        self.segment_duration = Histogram(
            "flowlang_segment_duration_seconds",
            "Work of one run segment (one webhook), seconds.",
            ["flow"],
            buckets=SEGMENT_BUCKETS,
            registry=where,
        )
        self.step_outcomes = Counter(
            "flowlang_step_outcomes",
            "Steps run, by step and outcome.",
            ["flow", "step", "type", "outcome"],
            registry=where,
        )
        self.transfers = Counter(
            "flowlang_transfers",
            "Transfers, by target (queue or agent names; numbers are 'number', SIP URIs 'sip').",
            ["flow", "target"],
            registry=where,
        )
        self.http_duration = Histogram(
            "flowlang_http_client_request_duration_seconds",
            "Requests of http_request steps, seconds (OpenTelemetry's buckets).",
            ["flow", "step", "method", "outcome"],
            buckets=HTTP_BUCKETS,
            registry=where,
        )
        self.events = Counter(
            "flowlang_events",
            "Events received, by trigger and result (accepted, duplicate, unmatched, rejected).",
            ["trigger", "result"],
            registry=where,
        )
        self.delivery_attempts = Counter(
            "flowlang_delivery_attempts",
            "Delivery attempts of automation actions, by result (delivered, retry, failed).",
            ["workflow", "action", "result"],
            registry=where,
        )
        self.deliveries = Counter(
            "flowlang_deliveries",
            "Actions settled for an event, by outcome (delivered, dead_lettered, skipped, "
            "unsaved).",
            ["workflow", "action", "outcome"],
            registry=where,
        )
        self.dead_letters = Counter(
            "flowlang_dead_letters",
            "Actions kept for replay after their last attempt failed.",
            ["workflow"],
            registry=where,
        )
        self.webhook_auth_failures = Counter(
            "flowlang_webhook_auth_failures",
            "Webhook requests that failed authentication, by route name.",
            ["endpoint"],
            registry=where,
        )

    # --- labels -------------------------------------------------------------------------------

    def label(self, name: str, value: object) -> str:
        """``value`` as label ``name`` may carry it (cut, budgeted)."""
        return self._labels[name](value)

    def know_triggers(self, triggers: Iterable[str]) -> None:
        """Triggers of workflows loaded later (others are counted as ``other``)."""
        self._triggers.update(triggers)

    # --- recording ----------------------------------------------------------------------------

    def segment(
        self,
        flow: Any,
        status: str,
        trace: list[dict[str, Any]],
        seconds: float,
        *,
        resumed: bool,
        reason: str | None,
    ) -> None:
        """One segment of a run of ``flow`` (a CompiledFlow) came to ``status``."""
        name = self.label("flow", getattr(flow, "name", None))
        if not resumed:
            self._child(self.runs_started, name).inc()
        if status != "waiting_for_input":
            self._child(self.runs_finished, name, status if status in RUN_STATUSES else OTHER).inc()
        if status == "failed":
            self._child(
                self.run_failures, name, reason if reason in FAILURE_REASONS else OTHER
            ).inc()
        self._child(self.segment_duration, name).observe(_seconds(seconds))
        steps: Mapping[str, Any] = getattr(flow, "steps", {}) or {}
        for row in trace:
            if not isinstance(row, Mapping):
                continue
            step_id, kind, outcome = row.get("step"), row.get("type"), row.get("outcome")
            step = self.label("step", step_id)
            kind_label = self.label("type", kind)
            self._child(self.step_outcomes, name, step, kind_label, _step_outcome(outcome)).inc()
            detail = row.get("detail")
            if not isinstance(detail, Mapping):
                continue
            if kind == "transfer" and outcome == "transferred":
                step_def = steps.get(step_id) if isinstance(step_id, str) else None
                self._transfer(flow, name, step_def, detail.get("target"))
            elif kind == "http_request" and isinstance(detail.get("duration_ms"), int | float):
                request = detail.get("request")
                method = request.get("method") if isinstance(request, Mapping) else None
                self._child(
                    self.http_duration,
                    name,
                    step,
                    method if method in HTTP_METHODS else OTHER,
                    outcome if outcome in HTTP_OUTCOMES else OTHER,
                ).observe(_seconds(detail["duration_ms"] / 1000))

    def _transfer(self, flow: Any, name: str, step: Any, value: object) -> None:
        written = step is not None and _template_is_fixed(step.fields.get("target"))
        target = transfer_target(value, written, getattr(flow, "source", "") or "")
        if not written and target not in ("number", "sip", OTHER):
            kept = self._dynamic_targets.setdefault(name, set())
            if target not in kept:
                if len(kept) >= DYNAMIC_TARGETS:
                    target = OTHER
                else:
                    kept.add(target)
        self._child(self.transfers, name, self.label("target", target)).inc()

    def waiting(self, flow: str, change: int) -> None:
        """``change`` more calls of ``flow`` wait for the caller."""
        self._child(self.runs_waiting, self.label("flow", flow)).inc(int(change))

    def trigger(self, trigger: object) -> str:
        """The label of ``trigger``: itself when a loaded workflow has it, else ``other``."""
        known = trigger[:MAX_LABEL] if isinstance(trigger, str) else ""
        return known if known in self._triggers else OTHER

    def event(self, trigger: str, result: str) -> None:
        """An event of ``trigger`` came to ``result``."""
        self._child(
            self.events, self.trigger(trigger), result if result in EVENT_RESULTS else OTHER
        ).inc()

    def attempt(self, workflow: str, action: str, outcome: str) -> None:
        """One delivery attempt."""
        self._child(
            self.delivery_attempts,
            self.label("workflow", workflow),
            self.label("action", action),
            outcome if outcome in ATTEMPT_RESULTS else OTHER,
        ).inc()

    def delivery(self, workflow: str, action: str, outcome: str) -> None:
        """One action settled for one event."""
        workflow_label = self.label("workflow", workflow)
        self._child(
            self.deliveries,
            workflow_label,
            self.label("action", action),
            outcome if outcome in DELIVERY_OUTCOMES else OTHER,
        ).inc()
        if outcome == "dead_lettered":
            self._child(self.dead_letters, workflow_label).inc()

    def webhook_rejected(self, endpoint: str) -> None:
        """A webhook to route ``endpoint`` failed authentication."""
        self._child(self.webhook_auth_failures, self.label("endpoint", endpoint)).inc()

    def page(self) -> tuple[bytes, str]:
        """The metrics page (Prometheus text format) and its content type."""
        if self.multiprocess_path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_path)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
