"""Tracing: OpenTelemetry spans of run segments and of HTTP requests, through the API only.

``opentelemetry-api`` is optional (imported with this module, which only the server imports);
without it every span is a no-op (and the SDK, the
exporter and sampling are the embedder's choice: with the API alone nothing is recorded).

- ``flowlang.run {flow}`` (INTERNAL): one per run segment (a start or a resume up to the next
  wait or the end): ``flowlang.flow.name``, ``flowlang.call.id`` (opaque), ``flowlang.run.resumed``,
  then ``flowlang.flow.fingerprint``, ``flowlang.run.status``, ``flowlang.run.steps``,
  ``flowlang.waiting_at``, and one span *event* ``flowlang.step`` per step run
  (``flowlang.step.id``, ``.type``, ``.outcome``, ``duration_ms``).
- ``GET``, ``POST``... (CLIENT): one per request sent through :class:`TracedSender`, a child of
  the segment's span, with the stable HTTP semantic conventions: ``http.request.method``,
  ``server.address``, ``server.port``, ``url.full`` (userinfo, query values and any path segment
  holding a secret replaced by ``REDACTED``), ``http.response.status_code``, ``error.type``
  (the status as text for >= 400, else the outcome: ``timeout``, ``connection_error``...).

No trace context is ever sent: no ``traceparent`` or other header is added to a request (it
would be a header the flow's author did not write, and tell third parties our ids).
"""

from __future__ import annotations

__all__ = ["REDACTED_URL_PART", "SegmentSpan", "TracedSender", "Tracing", "redact_url"]

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from flowlang.http_rules import DEFAULT_PORTS, PreparedRequest
from flowlang.runtime.http import HttpResult, HttpSender
from flowlang.runtime.secrets import holds_secret

#: What replaces credentials and query values in ``url.full`` (the conventions' word).
REDACTED_URL_PART = "REDACTED"
#: Methods the HTTP conventions know; any other is ``_OTHER`` (span name ``HTTP``).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
#: Segments whose span is still open after their ``with`` block, waiting for
#: ``segment_finished`` (bounded: the oldest is ended without its result).
MAX_PENDING = 4096
#: The longest attribute text set (longer is cut).
MAX_ATTRIBUTE = 2048
#: A longer URL shows only its origin in ``url.full`` (then ``/REDACTED``).
MAX_URL = 8192

_LOG = logging.getLogger("flowlang.observe")

try:  # the otel extra is optional
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - the test environment has the API
    otel_context = otel_trace = None  # type: ignore[assignment]


def _otel() -> Any:
    """``opentelemetry.trace``, or None when the API is not installed."""
    return otel_trace


def redact_url(url: str) -> str:
    """``url`` as ``url.full`` may show it: userinfo as ``REDACTED:REDACTED``, every query
    value ``REDACTED`` (names kept unless they hold a secret), path segments that hold a
    secret value ``REDACTED``, no fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED_URL_PART
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED_URL_PART}:{REDACTED_URL_PART}@" + netloc.rsplit("@", 1)[1]
    if len(url) > MAX_URL:  # never shown whole: the origin only, at a bounded cost
        shown = urlunsplit(SplitResult(parts.scheme, netloc, "/" + REDACTED_URL_PART, "", ""))
        return REDACTED_URL_PART if holds_secret(shown) else shown[:MAX_ATTRIBUTE]
    path = "/".join(
        REDACTED_URL_PART if segment and holds_secret(segment) else segment
        for segment in parts.path.split("/")
    )
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    shown = urlunsplit(SplitResult(parts.scheme, netloc, path, query, ""))
    return REDACTED_URL_PART if holds_secret(shown) else shown[:MAX_ATTRIBUTE]


def _redacted_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    if holds_secret(name):
        name = REDACTED_URL_PART
    return f"{name}={REDACTED_URL_PART}" if equals else name


def _server(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "", 0
    host = parts.hostname or ""
    return host[:MAX_ATTRIBUTE], port or DEFAULT_PORTS.get(parts.scheme, 0)


def _cut(text: object) -> str:
    return str(text)[:MAX_ATTRIBUTE]


def _step_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a step's span event, from its trace row."""
    duration = row.get("duration_ms")
    return {
        "flowlang.step.id": _cut(row.get("step")),
        "flowlang.step.type": _cut(row.get("type")),
        "flowlang.step.outcome": _cut(row.get("outcome")),
        "duration_ms": float(duration) if isinstance(duration, int | float) else 0.0,
    }


class SegmentSpan:
    """The span of one segment and what the observer knows of it."""

    __slots__ = ("closed", "finished", "span", "token")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self.token = token
        #: segment_finished has set its result; the block has ended.
        self.finished = False
        self.closed = False


class Tracing:
    """Makes the spans; every method is a no-op without the OpenTelemetry API."""

    def __init__(self, tracer_provider: Any = None) -> None:
        trace = _otel()
        self._trace = trace
        self.tracer: Any = None
        if trace is not None:
            provider = tracer_provider or trace.get_tracer_provider()
            self.tracer = provider.get_tracer("flowlang")
        self._pending: OrderedDict[str, SegmentSpan] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all (the OpenTelemetry API is installed)."""
        return self.tracer is not None

    def open_segment(self, flow: str, call_id: str, resumed: bool) -> SegmentSpan | None:
        """Start a segment's span and make it the current one (in this context)."""
        if self.tracer is None:
            return None
        trace = self._trace
        span = self.tracer.start_span(
            _cut(f"flowlang.run {flow}")[:120],
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "flowlang.flow.name": _cut(flow),
                "flowlang.call.id": _cut(call_id),
                "flowlang.run.resumed": bool(resumed),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return SegmentSpan(span, token)

    def close_segment(
        self, segment: SegmentSpan, call_id: str, error: BaseException | None
    ) -> None:
        """The ``with`` block ended: detach the span; end it when its result is in (or the
        block raised), else keep it for ``segment_finished`` (it ends the span then)."""
        try:
            otel_context.detach(segment.token)
        finally:
            if error is not None:
                trace = self._trace
                segment.span.set_attribute("error.type", type(error).__qualname__)
                segment.span.set_status(trace.Status(trace.StatusCode.ERROR))
            if segment.finished or error is not None:
                segment.closed = True
                segment.span.end()
            else:
                self._keep(call_id, segment)

    def _keep(self, call_id: str, segment: SegmentSpan) -> None:
        pending = self._pending
        earlier = pending.pop(call_id, None)
        if earlier is not None and not earlier.closed:
            earlier.closed = True
            earlier.span.end()
        pending[call_id] = segment
        while len(pending) > MAX_PENDING:
            _, oldest = pending.popitem(last=False)
            oldest.closed = True
            oldest.span.end()

    def finish_segment(
        self,
        current: SegmentSpan | None,
        call_id: str,
        attributes: Mapping[str, Any],
        trace_rows: list[dict[str, Any]],
    ) -> Any:
        """Set a segment's result on its span (``current`` when still inside its block, else
        the one kept for ``call_id``) and end it if its block is over; the span, or None."""
        segment = current
        if segment is None or segment.closed:
            segment = self._pending.pop(call_id, None)
        if segment is None or segment.closed:
            return None
        span = segment.span
        segment.finished = True
        try:
            if not span.is_recording():  # no SDK (or not sampled): nothing to build
                return span
            span.set_attributes({key: val for key, val in attributes.items() if val is not None})
            if attributes.get("flowlang.run.status") == "failed":
                trace = self._trace
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            for row in trace_rows:
                if isinstance(row, Mapping):
                    span.add_event("flowlang.step", _step_event(row))
        finally:  # whatever the rows hold, a span whose block is over is ended
            if segment is not current:
                segment.closed = True
                span.end()
        return span

    def ids(self, span: Any = None) -> tuple[str, str] | None:
        """``(trace_id, span_id)`` in hex of ``span`` (the current span when None), or None."""
        if self._trace is None:
            return None
        return span_ids(span if span is not None else self._trace.get_current_span())

    def sender(self, sender: HttpSender) -> HttpSender:
        """``sender`` with a CLIENT span around each request (itself without the API)."""
        if self.tracer is None:
            return sender
        return TracedSender(sender, self)


def span_ids(span: Any) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a span whose context is valid, else None."""
    try:
        context = span.get_span_context()
    except Exception:  # not a span
        return None
    if not getattr(context, "is_valid", False):
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span, or None (no API, no span)."""
    trace = _otel()
    if trace is None:
        return None
    return span_ids(trace.get_current_span())


class TracedSender:
    """An HttpSender that sends through another, with a CLIENT span around each request.

    The span is a child of the current one (the segment's); the request is sent unchanged:
    no header is added. A failure of the tracing itself is logged and the request still goes.
    """

    def __init__(self, inner: HttpSender, tracing: Tracing) -> None:
        self.inner = inner
        self._tracing = tracing

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        span = self._start(request)
        try:
            result = await self.inner.send(
                request, timeout=timeout, max_body=max_body, follow_redirects=follow_redirects
            )
        except BaseException as error:
            self._end(span, None, error)
            raise
        self._end(span, result, None)
        return result

    def _start(self, request: PreparedRequest) -> Any:
        try:
            trace = self._tracing._trace
            method = request.method.upper() if isinstance(request.method, str) else ""
            host, port = _server(request.url)
            attributes: dict[str, Any] = {
                "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
                "server.address": host,
                "server.port": port,
                "url.full": redact_url(request.url),
            }
            if method not in KNOWN_METHODS:
                attributes["http.request.method_original"] = _cut(method)[:32]
            return self._tracing.tracer.start_span(
                method if method in KNOWN_METHODS else "HTTP",
                kind=trace.SpanKind.CLIENT,
                attributes=attributes,
            )
        except Exception as error:
            _LOG.warning("observe.failed", extra={"method": "send", "error_type": _kind(error)})
            return None

    def _end(self, span: Any, result: HttpResult | None, error: BaseException | None) -> None:
        if span is None:
            return
        try:
            trace = self._tracing._trace
            if result is not None:
                if result.status is not None:
                    span.set_attribute("http.response.status_code", int(result.status))
                if result.outcome != "success":
                    status = result.status
                    kind = str(status) if status is not None and status >= 400 else result.outcome
                    span.set_attribute("error.type", _cut(kind)[:64])
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            elif error is not None:
                span.set_attribute("error.type", _kind(error))
                span.set_status(trace.Status(trace.StatusCode.ERROR))
        except Exception as failure:
            _LOG.warning("observe.failed", extra={"method": "send", "error_type": _kind(failure)})
        finally:
            span.end()

    async def aclose(self) -> None:
        """Close the inner sender (when it can be closed)."""
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.inner, name)


def _kind(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
