"""Helpers of the observability tests (no tests here): flows, a recorded sender, the span
capture, and a call driven through the observer the way `flowlang serve` drives it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import flowlang
from flowlang.http_rules import PreparedRequest
from flowlang.observe.observer import Observability
from flowlang.runtime.http import HttpResult
from flowlang.runtime.runner import Runtime, RuntimeSettings
from flowlang.runtime.secrets import MappingSecrets

SECRET = "tok3n-Secret/value+42"


def billing_flow(
    origin: str, name: str = "billing", path: str = "/json", timeout: str = "2s"
) -> flowlang.CompiledFlow:
    """A request (caller number in the query and body, a secret in a header and the query),
    a prompt, a branch, and transfers to a queue, a number, a SIP URI and a queue from data."""
    return flowlang.load_flow_text(f"""
flow: {name}
start: lookup
steps:
  lookup:
    type: http_request
    method: POST
    endpoint: "{origin}{path}?caller=<<call.external_number>>&key=<<secrets.token>>"
    headers: {{Authorization: "Bearer <<secrets.token>>"}}
    body: {{caller: "<<call.external_number>>"}}
    timeout: {timeout}
    next: ask
    on_failure: ask
  ask:
    type: collect_input
    prompt: Press 1 for sales, 2 for an agent, 3 for support, 4 for your queue.
    next: route
    on_no_input: sorry
  route:
    type: condition_splitter
    branches:
      - conditions: [{{property: "<<input.ask.value>>", operator: equals, value: "1"}}]
        next: sales
      - conditions: [{{property: "<<input.ask.value>>", operator: equals, value: "2"}}]
        next: agent
      - conditions: [{{property: "<<input.ask.value>>", operator: equals, value: "3"}}]
        next: support
    otherwise: theirs
  sales: {{type: transfer, target: "queue:sales"}}
  agent: {{type: transfer, target: "+1 (415) 555-0100"}}
  support: {{type: transfer, target: "sip:support@pbx.example.com"}}
  theirs: {{type: transfer, target: "<<contact.queue>>"}}
  sorry: {{type: say, text: "Sorry.", next: bye}}
  bye: {{type: hangup}}
""")


@dataclass
class RecordedSender:
    """An HttpSender that answers every request with ``outcome`` at once and keeps what it
    was sent (the caller's number is echoed in the body, as a CRM would)."""

    outcome: str = "success"
    status: int | None = 200
    sent: list[PreparedRequest] = field(default_factory=list)

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.sent.append(request)
        body = {"echo": request.url}
        return HttpResult(self.outcome, self.status, {}, body, None, 0.012)


@dataclass
class Spans:
    """Finished spans, captured in memory (opentelemetry-sdk)."""

    provider: Any
    exporter: Any

    def all(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[Any]:
        return [span for span in self.all() if span.name == name]


def span_capture() -> Spans:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Spans(provider, exporter)


def observer(spans: Spans | None = None, **options: Any) -> Observability:
    return Observability.create(
        registry=CollectorRegistry(),
        tracer_provider=spans.provider if spans is not None else None,
        **options,
    )


async def drive_call(
    obs: Observability,
    runtime: Runtime,
    flow: flowlang.CompiledFlow,
    call_id: str,
    context: dict[str, Any],
    digits: list[str | None],
    *,
    finished_inside: bool = False,
) -> list[flowlang.RunResult]:
    """One call as `flowlang serve` drives it: a segment per webhook, then segment_finished
    (after the block, or inside it), and the count of waiting calls."""
    results: list[flowlang.RunResult] = []
    for index, entered in enumerate([None, *digits]):
        resumed = index > 0
        began = time.perf_counter()
        with obs.segment(flow.name, call_id, resumed):
            if resumed:
                assert results[-1].state is not None
                result = await runtime.resume(flow, results[-1].state, entered)
            else:
                result = await runtime.start(flow, context)
            if finished_inside:
                obs.segment_finished(
                    flow, result, time.perf_counter() - began, call_id=call_id, resumed=resumed
                )
        if resumed:
            obs.calls_waiting(flow.name, -1)
        if not finished_inside:
            obs.segment_finished(
                flow, result, time.perf_counter() - began, call_id=call_id, resumed=resumed
            )
        if result.status == "waiting_for_input":
            obs.calls_waiting(flow.name, 1)
        results.append(result)
        if result.status != "waiting_for_input":
            break
    return results


def samples(obs: Observability) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics page (parsed with prometheus_client.parser), by name and
    labels."""
    page, content_type = obs.metrics()
    assert content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(obs: Observability, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when there is none)."""
    return samples(obs).get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def captured(logger_name: str = "flowlang") -> Iterator[list[str]]:
    """JSON lines written by configure_json_logging while the block runs."""
    import io
    import logging

    from flowlang.observe.logs import configure_json_logging

    stream = io.StringIO()
    logger = logging.getLogger(logger_name)
    level, propagate = logger.level, logger.propagate
    handler = configure_json_logging(stream, "DEBUG", propagate=True)
    lines: list[str] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        lines.extend(line for line in stream.getvalue().splitlines() if line)


CALLER = "+14155550123"


def call_through(
    server: Any,
    obs: Observability,
    flow: flowlang.CompiledFlow,
    digits: list[str | None],
    *,
    backend: str | None = None,
    finished_inside: bool = False,
    call_id: str = "CA0001",
) -> list[flowlang.RunResult]:
    """One call of ``flow`` through the observer, its requests to the loopback server."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> list[flowlang.RunResult]:
        settings = RuntimeSettings(allow_hosts=frozenset({"crm.test"}))
        sender = obs.sender(settings.sender(server.client_ssl_context(), resolver))
        runtime = Runtime(
            http=sender,
            secrets=MappingSecrets({"token": SECRET}),
            settings=settings,
            backend=backend,
        )
        context = {"call": {"id": call_id, "external_number": CALLER}, "contact": {}}
        try:
            async with runtime:
                return await drive_call(
                    obs, runtime, flow, call_id, context, digits, finished_inside=finished_inside
                )
        finally:
            await sender.aclose()  # type: ignore[attr-defined]

    return asyncio.run(main())
