"""Running one case offline: a flow on either step loop, or workflows for one event, with the
case's recordings on virtual time (:mod:`flowlang.testing.offline`). Each case gets its own
runtime (or automations), so nothing carries from one case to the next; the steps are bounded
by the runtime's limits and the whole case by :data:`CASE_SECONDS` of wall time.
"""

from __future__ import annotations

__all__ = ["CASE_SECONDS", "CaseRun", "run_flow_case", "run_workflow_case"]

import asyncio
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from flowlang.automations.dispatch import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    DispatchResult,
)
from flowlang.automations.records import EventError
from flowlang.automations.workflow import CompiledWorkflow
from flowlang.errors import FlowError
from flowlang.flow.model import CompiledFlow
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.results import RunResult
from flowlang.runtime.runner import Runtime, RuntimeSettings
from flowlang.runtime.secrets import MappingSecrets, Redactor
from flowlang.testing.offline import VirtualClock, VirtualHttp, VirtualTimer
from flowlang.testing.spec import Case

#: The longest a case may run, in seconds of wall time (virtual time makes a case fast: one
#: that takes this long is stuck).
CASE_SECONDS = 20.0
#: The longest body text kept of a request sent, for comparison and display.
_MAX_BODY_TEXT = 64 * 1024


@dataclass
class CaseRun:
    """What a case did: the legs of the run (a start and each resume), its trace and host
    instructions, its variables at the end, the requests sent (secrets redacted), the
    recordings missing or unused, or the deliveries of workflows."""

    case: Case
    legs: list[RunResult] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    instructions: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    error: str | None = None
    variables: dict[str, Any] | None = None
    background: list[dict[str, Any]] = field(default_factory=list)
    #: The requests sent, as sent (see :attr:`requests`).
    sent: list[PreparedRequest] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    unused_inputs: list[str] = field(default_factory=list)
    dispatch: DispatchResult | None = None
    #: The event a workflow case dispatched (with its id).
    event: dict[str, Any] | None = None
    #: Why the case could not run to its end (stuck, refused context or event), or None.
    broken: str | None = None
    redactor: Redactor = field(default_factory=Redactor)
    _shown: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The requests sent, as compared and shown (secrets redacted; made when first read)."""
        if self._shown is None:
            self._shown = [shown_request(request, self.redactor) for request in self.sent]
        return self._shown


def _redactor(case: Case) -> Redactor:
    redactor = Redactor()
    for value in case.secrets.values():
        redactor.add(value)
    return redactor


def shown_request(request: PreparedRequest, redactor: Redactor) -> dict[str, Any]:
    """A request sent, as a case compares and shows it: secrets redacted, the body as JSON
    when it is JSON, else as text."""
    body: Any = None
    if request.body is not None:
        raw = request.body[:_MAX_BODY_TEXT]
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
    shown: dict[str, Any] = redactor.data(
        {
            "request": f"{request.method} {request.url}",
            "method": request.method,
            "url": request.url,
            "headers": dict(request.headers),
            "body": body,
        }
    )
    return shown


async def _bounded(coroutine: Any, done: CaseRun) -> None:
    try:
        await asyncio.wait_for(coroutine, CASE_SECONDS)
    except TimeoutError:
        done.broken = f"the case did not finish within {CASE_SECONDS:g} s of wall time"


async def run_flow_case(
    flow: CompiledFlow,
    case: Case,
    backend: str | None = None,
    runtime_options: dict[str, Any] | None = None,
) -> CaseRun:
    """Run ``case`` on ``flow`` with the step loop ``backend`` (None: the default);
    ``runtime_options``: more keyword arguments for the runtime (condition coverage's)."""
    done = CaseRun(case, redactor=_redactor(case))
    timer = VirtualTimer()
    http = VirtualHttp(case.responses, timer)
    answers = {step: deque(given) for step, given in case.inputs.items()}
    settings = RuntimeSettings()
    options: dict[str, Any] = {
        "http": http,
        "secrets": MappingSecrets(case.secrets),
        "backend": backend,
        "settings": settings,
        "timer": timer,
        **(runtime_options or {}),
    }

    def leg_begins() -> None:  # each start and resume has the run's deadline from now on
        http.foreground = asyncio.current_task()
        http.deadline = timer.seconds + settings.run_deadline

    if case.now is not None:
        now = case.now
        options["clock"] = lambda: now

    async def run() -> None:
        runtime = Runtime(**options)
        async with runtime:
            try:
                leg_begins()
                result = await runtime.start(flow, case.context)
            except ValueError as error:  # a context the runtime refuses at the door
                done.broken = f"the context is refused: {error}"
                return
            done.legs.append(result)
            while result.status == "waiting_for_input":
                step = (result.awaiting or {}).get("step")
                given = answers.get(step) if isinstance(step, str) else None
                if not given:
                    break
                try:
                    leg_begins()
                    result = await runtime.resume(flow, result.state or {}, given.popleft())
                except (FlowError, TypeError) as error:
                    done.broken = f"the run could not be resumed: {error}"
                    return
                done.legs.append(result)
            done.variables = result.variables
        done.background = list(runtime.background_results)

    await _bounded(run(), done)
    for leg in done.legs:
        done.trace.extend(leg.trace)
        done.instructions.extend(leg.instructions)
    if done.legs:
        done.status = done.legs[-1].status
        done.error = done.legs[-1].error
    done.sent = http.sent
    done.missing = http.missing
    done.unused = http.unused(case.own_responses)
    done.unused_inputs = [f"{step} ({len(left)} left)" for step, left in answers.items() if left]
    return done


async def run_workflow_case(workflows: Sequence[CompiledWorkflow], case: Case) -> CaseRun:
    """Run ``case``'s event through ``workflows``: retries wait on a virtual clock."""
    done = CaseRun(case, redactor=_redactor(case))
    http = VirtualHttp(case.responses)
    event = dict(case.event or {})
    event.setdefault("id", f"case-{case.index + 1}")
    done.event = event

    async def run() -> None:
        automations = Automations(
            workflows,
            settings=DeliverySettings(),
            http=http,
            secrets=MappingSecrets(case.secrets),
            clock=VirtualClock(),
            dead_letters=DeadLetterStore(),
            rng=random.Random(0),
        )
        async with automations:
            try:
                done.dispatch = await automations.dispatch(event)
            except EventError as error:
                done.broken = f"the event is refused: {error}"

    await _bounded(run(), done)
    done.sent = http.sent
    done.missing = http.missing
    done.unused = http.unused(case.own_responses)
    return done
