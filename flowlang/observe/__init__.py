"""Observability: what `flowlang serve` reports as metrics, traces and log lines.

:class:`Observer` is the seam the server calls at each state change; :class:`NullObserver`
does nothing (an embedder that wants none pays nothing). The full one lives in
:mod:`flowlang.observe.observer`: Prometheus metrics (labels only from flow definitions and
fixed enums), OpenTelemetry spans through the API package, JSON log lines through the
existing secret redaction.

``Observability.create(registry=None, tracer_provider=None, logger=None, known_triggers=())``
makes it: its own CollectorRegistry (:mod:`flowlang.observe.metrics`; multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set before the process starts), spans from the tracer
provider (:mod:`flowlang.observe.tracing`; no-ops without ``opentelemetry-api``), records to
the ``flowlang.serve`` logger (:func:`flowlang.observe.logs.configure_json_logging` writes
them as JSON lines). The server calls it so::

    with obs.segment(flow.name, call_id, resumed):
        result = await runtime.start(flow, context)   # Runtime(http=obs.sender(sender))
    obs.segment_finished(flow, result, seconds, call_id=call_id, resumed=resumed)

``segment_finished`` may also be called inside the block; the span ends once both happened.
No trace context is ever sent to a third party: ``sender`` adds no ``traceparent`` (or any
other) header to a request.
"""

from __future__ import annotations

__all__ = ["NullObserver", "Observer"]

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowlang.automations.dispatch import Attempt, DispatchResult
    from flowlang.flow.model import CompiledFlow
    from flowlang.runtime.http import HttpSender
    from flowlang.runtime.results import RunResult


class Observer(Protocol):
    """Told of every state change of calls and events; never raises into the caller."""

    def segment(
        self, flow: str, call_id: str, resumed: bool
    ) -> contextlib.AbstractContextManager[None]:
        """Around one run segment (a start or a resume, up to the next wait or the end): the
        span of the segment; HTTP requests the run sends inside it are its children."""

    def segment_finished(
        self, flow: CompiledFlow, result: RunResult, seconds: float, *, call_id: str, resumed: bool
    ) -> None:
        """A segment came to ``result`` after ``seconds``: runs started/finished by status,
        failures by reason, segment duration, step outcomes, transfers; a log line."""

    def calls_waiting(self, flow: str, change: int) -> None:
        """``change`` more (or fewer, when negative) calls of ``flow`` wait for the caller."""

    def webhook_rejected(self, endpoint: str, reason: str) -> None:
        """A request to ``endpoint`` (a route name, never its path) failed authentication."""

    def event(self, trigger: str, result: str) -> None:
        """An event arrived: ``result`` is accepted, duplicate, unmatched or rejected."""

    def dispatched(self, result: DispatchResult) -> None:
        """An event's actions all settled (deliveries by outcome, dead letters)."""

    def attempt(self, attempt: Attempt) -> None:
        """One delivery attempt (the automations' ``on_attempt``)."""

    def sender(self, sender: HttpSender) -> HttpSender:
        """``sender`` as the runtime should use it: HTTP client spans and latency around it."""

    def metrics(self) -> tuple[bytes, str]:
        """The metrics page and its content type (Prometheus text format)."""


class NullObserver:
    """Reports nothing."""

    @contextlib.contextmanager
    def segment(self, flow: str, call_id: str, resumed: bool) -> Iterator[None]:
        yield

    def segment_finished(
        self, flow: CompiledFlow, result: RunResult, seconds: float, *, call_id: str, resumed: bool
    ) -> None:
        pass

    def calls_waiting(self, flow: str, change: int) -> None:
        pass

    def webhook_rejected(self, endpoint: str, reason: str) -> None:
        pass

    def event(self, trigger: str, result: str) -> None:
        pass

    def dispatched(self, result: DispatchResult) -> None:
        pass

    def attempt(self, attempt: Attempt) -> None:
        pass

    def sender(self, sender: HttpSender) -> HttpSender:
        return sender

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain; version=0.0.4; charset=utf-8"
