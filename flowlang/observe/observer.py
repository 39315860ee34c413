"""Observer: `flowlang serve`'s metrics, spans and log lines at each state change of calls
and events (the full :class:`~flowlang.observe.Observer`).

Each method catches its own exceptions: an observability bug is logged (``observe.failed``,
with the method and the exception's type) and never reaches the call.
"""

from __future__ import annotations

__all__ = ["SERVE_LOGGER", "Observability"]

import contextlib
import logging
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flowlang.observe.metrics import (
    EVENT_RESULTS,
    MAX_LABEL,
    OTHER,
    FlowMetrics,
    failure_reason,
    multiprocess_dir,
)
from flowlang.observe.tracing import SegmentSpan, Tracing
from flowlang.runtime.secrets import install_log_redaction

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from flowlang.automations.dispatch import Attempt, DispatchResult
    from flowlang.flow.model import CompiledFlow
    from flowlang.runtime.http import HttpSender
    from flowlang.runtime.results import RunResult

#: The logger of the state changes (a child of ``flowlang``: the secret redaction covers it).
SERVE_LOGGER = "flowlang.serve"
_FAILURES = logging.getLogger("flowlang.observe")
#: The segment whose ``with`` block runs in this context.
_CURRENT: ContextVar[SegmentSpan | None] = ContextVar("flowlang_segment", default=None)
_EMPTY_PAGE = (b"", "text/plain; version=0.0.4; charset=utf-8")


def _failed(method: str, error: BaseException) -> None:
    """Report an observer's own failure, never raising (no message: it could hold anything)."""
    with contextlib.suppress(Exception):  # a logging failure too: nothing more to do
        _FAILURES.warning(
            "observe.failed", extra={"method": method, "error_type": type(error).__name__}
        )


def _emit(log: logging.Logger, level: int, event: str, fields: dict[str, Any]) -> None:
    """``log.log(level, event, extra=fields)`` without looking up the caller's frame (the
    line of a state change names no source line): the same record factory (which masks
    secrets), filters and handlers."""
    if log.isEnabledFor(level):
        log.handle(log.makeRecord(log.name, level, "", 0, event, (), None, extra=fields))


def _text(value: object) -> str:
    return value[:MAX_LABEL] if isinstance(value, str) else ""


def _step_of(trace: list[dict[str, Any]], index: int) -> str | None:
    """The step of row ``index`` of a trace, None when there is none."""
    row = trace[index] if isinstance(trace, list) and trace else None
    return _text(row.get("step")) if isinstance(row, dict) else None


class _SegmentScope:
    """The ``with`` block of one segment: its span is current inside it."""

    __slots__ = ("_call_id", "_flow", "_resumed", "_segment", "_token", "_tracing")

    def __init__(self, tracing: Tracing, flow: str, call_id: str, resumed: bool) -> None:
        self._tracing = tracing
        self._flow, self._call_id, self._resumed = flow, call_id, resumed
        self._segment: SegmentSpan | None = None
        self._token: Any = None

    def __enter__(self) -> None:
        try:
            self._segment = self._tracing.open_segment(
                _text(self._flow), _text(self._call_id), bool(self._resumed)
            )
            self._token = _CURRENT.set(self._segment)
        except Exception as error:
            _failed("segment", error)

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        try:
            if self._token is not None:
                _CURRENT.reset(self._token)
            if self._segment is not None:
                self._tracing.close_segment(self._segment, _text(self._call_id), error)
        except Exception as failure:
            _failed("segment", failure)


class Observability:
    """Prometheus metrics (see :mod:`flowlang.observe.metrics`), OpenTelemetry spans (see
    :mod:`flowlang.observe.tracing`) and JSON-ready log records (logger ``flowlang.serve``;
    :func:`~flowlang.observe.logs.configure_json_logging` writes them as JSON lines).

    Make one with :meth:`create`; the server calls the :class:`~flowlang.observe.Observer`
    methods: ``with obs.segment(flow, call_id, resumed): result = await runtime.start(...)``,
    then ``obs.segment_finished(...)`` (inside the block or right after it: the span ends
    once both happened).
    """

    def __init__(self, metrics: FlowMetrics, tracing: Tracing, logger: logging.Logger) -> None:
        self.prometheus = metrics
        self.tracing = tracing
        self.log = logger

    @classmethod
    def create(
        cls,
        *,
        registry: CollectorRegistry | None = None,
        tracer_provider: Any = None,
        logger: logging.Logger | None = None,
        known_triggers: Iterable[str] = (),
        multiprocess_path: str | None = None,
    ) -> Observability:
        """An observer with its own registry (or ``registry``), spans from ``tracer_provider``
        (the global one when None; none without the OpenTelemetry API), records to ``logger``
        (``flowlang.serve``). ``known_triggers``: the triggers of the workflows loaded (any
        other is counted as ``other``). ``multiprocess_path``: multiprocess mode's folder
        (``PROMETHEUS_MULTIPROC_DIR`` when None; ValueError when that is set after
        prometheus_client was imported or is not a folder)."""
        install_log_redaction()  # the records of flowlang.serve are masked as they are made
        folder = multiprocess_path or multiprocess_dir()
        metrics = FlowMetrics(
            registry=registry, known_triggers=known_triggers, multiprocess_path=folder
        )
        return cls(metrics, Tracing(tracer_provider), logger or logging.getLogger(SERVE_LOGGER))

    def know_triggers(self, triggers: Iterable[str]) -> None:
        """Triggers of workflows loaded after creation."""
        try:
            self.prometheus.know_triggers(triggers)
        except Exception as error:
            _failed("know_triggers", error)

    # --- calls ------------------------------------------------------------------------------

    def segment(
        self, flow: str, call_id: str, resumed: bool
    ) -> contextlib.AbstractContextManager[None]:
        """Around one run segment: its span (current inside the block, so that the requests
        the run sends are its children). Nothing when tracing is off."""
        if not self.tracing.enabled:
            return contextlib.nullcontext()
        return _SegmentScope(self.tracing, flow, call_id, resumed)

    def segment_finished(
        self, flow: CompiledFlow, result: RunResult, seconds: float, *, call_id: str, resumed: bool
    ) -> None:
        """A segment came to ``result`` after ``seconds``: metrics, the span's result and step
        events, log lines (run.started or run.resumed, then run.suspended, run.finished or
        run.failed)."""
        trace: list[dict[str, Any]] = []
        status, reason = "", None
        try:
            trace, status = result.trace, result.status
            if status == "failed":
                reason = failure_reason(result.error, trace)
        except Exception as error:
            _failed("segment_finished", error)
            return
        try:
            self.prometheus.segment(flow, status, trace, seconds, resumed=resumed, reason=reason)
        except Exception as error:
            _failed("segment_finished", error)
        span = None
        try:
            if self.tracing.enabled:
                last = _step_of(trace, -1)
                attributes = {
                    "flowlang.flow.fingerprint": _text(getattr(flow, "fingerprint", "")),
                    "flowlang.run.status": status,
                    "flowlang.run.steps": len(trace),
                    "flowlang.waiting_at": last if status == "waiting_for_input" else None,
                    "flowlang.run.failure": reason,
                }
                span = self.tracing.finish_segment(
                    _CURRENT.get(), _text(call_id), attributes, trace
                )
        except Exception as error:
            _failed("segment_finished", error)
        try:
            self._log_segment(flow, status, reason, trace, seconds, call_id, resumed, span)
        except Exception as error:
            _failed("segment_finished", error)

    def _log_segment(
        self,
        flow: CompiledFlow,
        status: str,
        reason: str | None,
        trace: list[dict[str, Any]],
        seconds: float,
        call_id: str,
        resumed: bool,
        span: Any,
    ) -> None:
        log = self.log
        level = logging.WARNING if status == "failed" else logging.INFO
        if not log.isEnabledFor(level):  # nor DEBUG: no line would be written, build none
            return
        fields: dict[str, Any] = {
            "flow": _text(getattr(flow, "name", "")),
            "fingerprint": _text(getattr(flow, "fingerprint", "")),
            "call_id": _text(call_id),
        }
        ids = self.tracing.ids(span) if span is not None else None
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
        # One INFO line per webhook (the state the segment ended in, with where it began);
        # the start itself at DEBUG: at INFO it doubled the server's logging cost.
        first = _step_of(trace, 0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("run.resumed" if resumed else "run.started", extra={**fields, "step": first})
        fields["resumed"] = bool(resumed)
        fields["from_step"] = first
        fields["step"] = _step_of(trace, -1)
        fields["steps"] = len(trace)
        fields["duration_ms"] = round(float(seconds) * 1000, 1)
        if status == "waiting_for_input":
            _emit(log, logging.INFO, "run.suspended", fields)
        elif status == "failed":
            _emit(log, logging.WARNING, "run.failed", {**fields, "reason": reason})
        else:
            _emit(log, logging.INFO, "run.finished", {**fields, "status": _text(status)})

    def calls_waiting(self, flow: str, change: int) -> None:
        """``change`` more (or fewer) calls of ``flow`` wait for the caller."""
        try:
            self.prometheus.waiting(flow, change)
        except Exception as error:
            _failed("calls_waiting", error)

    def webhook_rejected(self, endpoint: str, reason: str) -> None:
        """A request to route ``endpoint`` failed authentication (``reason``: a fixed word)."""
        try:
            self.prometheus.webhook_rejected(endpoint)
            self.log.warning(
                "webhook.rejected",
                extra={
                    "endpoint": self.prometheus.label("endpoint", endpoint),
                    "reason": _text(reason),
                },
            )
        except Exception as error:
            _failed("webhook_rejected", error)

    # --- events and deliveries --------------------------------------------------------------

    def event(self, trigger: str, result: str) -> None:
        """An event arrived and came to ``result`` (accepted, duplicate, unmatched, rejected)."""
        try:
            self.prometheus.event(trigger, result)
            word = result if result in EVENT_RESULTS else OTHER
            level = logging.WARNING if word in ("rejected", OTHER) else logging.INFO
            self.log.log(
                level, f"event.{word}", extra={"trigger": self.prometheus.trigger(trigger)}
            )
        except Exception as error:
            _failed("event", error)

    def attempt(self, attempt: Attempt) -> None:
        """One delivery attempt (the automations' ``on_attempt``)."""
        try:
            self.prometheus.attempt(attempt.workflow, attempt.action, attempt.outcome)
            level = logging.WARNING if attempt.outcome == "failed" else logging.INFO
            self.log.log(
                level,
                "delivery.attempt",
                extra={
                    "event_id": _text(attempt.event_id),
                    "workflow": _text(attempt.workflow),
                    "action": _text(attempt.action),
                    "attempt": attempt.number,
                    "outcome": _text(attempt.outcome),
                    "retry_in": attempt.retry_in,
                },
            )
        except Exception as error:
            _failed("attempt", error)

    def dispatched(self, result: DispatchResult) -> None:
        """An event's actions all settled: deliveries by outcome, dead letters."""
        try:
            for delivery in result.deliveries:
                self.prometheus.delivery(delivery.workflow, delivery.action, delivery.outcome)
                if delivery.outcome in ("dead_lettered", "unsaved"):
                    self.log.error(
                        f"delivery.{delivery.outcome}",
                        extra={
                            "event_id": _text(result.event_id),
                            "workflow": _text(delivery.workflow),
                            "action": _text(delivery.action),
                            "attempts": delivery.attempts,
                        },
                    )
        except Exception as error:
            _failed("dispatched", error)

    # --- HTTP and the page ------------------------------------------------------------------

    def sender(self, sender: HttpSender) -> HttpSender:
        """``sender`` with a CLIENT span around each request (``sender`` itself when tracing
        is off). Requests are sent unchanged: no trace header is added."""
        try:
            return self.tracing.sender(sender)
        except Exception as error:
            _failed("sender", error)
            return sender

    def metrics(self) -> tuple[bytes, str]:
        """The metrics page and its content type (Prometheus text format)."""
        try:
            return self.prometheus.page()
        except Exception as error:
            _failed("metrics", error)
            return _EMPTY_PAGE
