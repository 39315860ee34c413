"""Runner: run a compiled flow for one call, suspend at collect_input, resume from JSON state."""

from __future__ import annotations

__all__ = [
    "STATE_FORMAT",
    "STATE_ROOTS",
    "FlowStateError",
    "FlowVersions",
    "MemoryResumeGuard",
    "ResumeGuard",
    "RunResult",
    "Runtime",
    "RuntimeSettings",
    "StateKeys",
]

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from flowlang.errors import DataLimitError
from flowlang.expr.backends import resolve_backend
from flowlang.expr.shared import MAX_SHOWN_ERROR, shorten
from flowlang.expr.values import plain_json
from flowlang.flow.model import CompiledFlow
from flowlang.http_rules import PreparedRequest
from flowlang.kinds.base import Resumed
from flowlang.rundata import MAX_DATA_DEPTH_CAP, store_record
from flowlang.runtime.host import Host, NullHost
from flowlang.runtime.http import GuardedHttp, HttpSender, Resolver
from flowlang.runtime.http_settings import HttpSettings
from flowlang.runtime.plan import PlanWrapper, plan_flow
from flowlang.runtime.results import RunResult
from flowlang.runtime.run import Run, _described
from flowlang.runtime.secrets import (
    EnvironmentSecrets,
    SecretsProvider,
    SecretsView,
    install_log_redaction,
)
from flowlang.runtime.state import (
    STATE_FORMAT,
    STATE_ROOTS,
    FlowStateError,
    MemoryResumeGuard,
    Resumable,
    ResumeGuard,
    StateKeys,
    read_state,
)
from flowlang.runtime.twins import RuntimeTwins, runtime_twins
from flowlang.runtime.versions import FlowVersions
from flowlang.settings import check_counts, check_durations, check_names

#: How many background request outcomes a runtime keeps (the most recent).
BACKGROUND_RESULTS_KEPT = 1000


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings(HttpSettings):
    """Limits and policy of a runtime (defaults from SECURITY.md): the HTTP ones of
    :class:`HttpSettings` (allow_hosts, connect_timeout, body limits, redirects, requests in
    flight) with their defaults, and these."""

    max_steps: int = 1000
    max_same_step: int = 10
    run_deadline: float = 60.0
    #: The longest deadline an http_request step may ask for.
    http_timeout_cap: float = 10.0
    #: About the largest size (bytes of compact JSON) of one value a set_variables step stores.
    max_value_size: int = 64 * 1024
    #: About the largest size of a run's data (context, vars, inputs, step records): its state.
    max_state_size: int = 512 * 1024
    #: How deep lists and maps may nest under a root of the scope (``contact``, ``vars`` …).
    max_data_depth: int = 100
    #: Names of the secrets (from the runtime's provider) that sign states, newest first: the
    #: first signs, any verifies. Empty: states are not signed (keep them where no caller
    #: can edit them).
    state_keys: tuple[str, ...] = ()
    #: Seconds a state may wait to be resumed (its ``suspended_at``); older ones are refused.
    max_state_age: float = 3600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_counts(self, ("max_steps", "max_same_step"))
        check_counts(self, ("max_value_size", "max_state_size", "max_data_depth"))
        check_durations(self, ("run_deadline", "http_timeout_cap", "max_state_age"))
        check_names(self, ("state_keys",))
        if self.max_data_depth > MAX_DATA_DEPTH_CAP:
            raise ValueError(
                f"RuntimeSettings.max_data_depth is capped at {MAX_DATA_DEPTH_CAP}, "
                f"not {self.max_data_depth}"
            )


class _WithoutStateKeys:
    """The secrets a flow may read: the provider's, except any that holds a state key (a flow
    that could read one could send it away and then forge states)."""

    def __init__(self, provider: SecretsProvider, hidden: frozenset[str]) -> None:
        self._provider = provider
        self._hidden = hidden

    def get(self, name: str) -> str | None:
        value = self._provider.get(name)
        return None if value in self._hidden else value

    def describe(self, name: str) -> str:
        return self._provider.describe(name)


class Runtime:
    """Runs compiled flows. One runtime serves many concurrent calls; close it to drain requests.

    ``ssl_context``: the certificate authorities to trust (the default CA bundle when None);
    the runtime makes its own connections (HTTP/1.1, certificates verified, no proxies or
    settings from the environment, pooled per host name). ``http``: a sender that replaces the
    network entirely (recorded responses). ``host``: call control. ``secrets``: provider of
    ``<<secrets.NAME>>`` (environment variables by default; also the state keys that
    ``settings.state_keys`` names). ``backend``: which twin of the step loop runs, ``cython``
    or ``python`` (None: the process default, as for templates). ``resume_guard``: where
    resumed suspensions are remembered, so that each state is resumed once (by default in
    this process: :class:`MemoryResumeGuard`). ``flow_versions``: where the flows calls start
    on are kept by fingerprint, so that a call resumes on the version it started on after the
    flow is edited (None: a state of another version is refused). ``clock``: what time it is
    for the steps that read it (a callable returning an aware datetime; now in UTC when None).
    ``timer``: the clock of run deadlines, in seconds (``time.monotonic`` when None), read by
    the step loop when a run starts and before each step that waits; tests give a virtual one.

    ``plan_wrapper``: inspection for tools, on the Python loop only (a
    :data:`~flowlang.runtime.plan.PlanWrapper`). It is given each flow's step plan once per
    flow and runtime and returns the plan this runtime's loop runs: a step's plain call may
    be wrapped to look at the run before or after it (flowlang.testing's condition coverage
    evaluates every row of a condition_splitter so). The loop itself is unchanged, and runs
    without a wrapper pay nothing. A runtime whose loop is the compiled one refuses it
    (ValueError): the compiled plan replaces steps with their compiled twins, which a wrapper
    would never see; ask for ``backend="python"``.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: Host | None = None,
        secrets: SecretsProvider | None = None,
        settings: RuntimeSettings | None = None,
        resolver: Resolver | None = None,
        http: HttpSender | None = None,
        backend: str | None = None,
        resume_guard: ResumeGuard | None = None,
        flow_versions: FlowVersions | None = None,
        clock: Callable[[], datetime] | None = None,
        plan_wrapper: PlanWrapper | None = None,
        timer: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings()
        #: The clock of run deadlines (seconds): time.monotonic by default.
        self.timer: Callable[[], float] = timer or time.monotonic
        #: The time steps read (business_hours): an aware datetime, now in UTC by default.
        self.clock: Callable[[], datetime] = clock or partial(datetime.now, UTC)
        #: Versions of flows kept by fingerprint (every flow a call starts on is added).
        self.flow_versions = flow_versions
        #: The step loop: the compiled twin (``cython``) or the Python one; None for the default.
        self.backend = resolve_backend(backend)
        #: Everything the step loop runs, of this backend only (compiled, or all Python).
        self.twins: RuntimeTwins = runtime_twins(self.backend)
        self._run_loop = self.twins.run_loop
        self._compile_plan = self.twins.compile_plan
        self._run_class: type[Run] = self.twins.run_class
        self._plan_key = f"plan:{self.backend}"
        if plan_wrapper is not None and not self.twins.wraps_plans:
            raise ValueError(
                f"plan_wrapper runs on the Python loop only, not on backend {self.backend!r}: "
                "pass backend='python'"
            )
        self._plan_wrapper = plan_wrapper
        #: The wrapped plans of this runtime, by flow (kept here: a flow is shared by runtimes).
        self._wrapped_plans: dict[int, tuple[CompiledFlow, Any]] = {}
        #: What the step loop reads of the settings: step limits and the run's deadline.
        self.loop_limits = (
            self.settings.max_steps,
            self.settings.max_same_step,
            self.settings.run_deadline,
        )
        #: What steps read of the data limits: value size, state size, nesting depth.
        self.data_limits = (
            self.settings.max_value_size,
            self.settings.max_state_size,
            self.settings.max_data_depth,
        )
        install_log_redaction()
        self.host: Host = host or NullHost()
        provider: SecretsProvider = secrets or EnvironmentSecrets()
        self.secrets: SecretsProvider = provider
        #: The keys that sign and verify states (None: states are not signed).
        self.state_keys: StateKeys | None = None
        if self.settings.state_keys:
            self.state_keys = StateKeys.from_provider(self.settings.state_keys, provider)
            hidden = frozenset(provider.get(name) or "" for name in self.settings.state_keys)
            self.secrets = _WithoutStateKeys(provider, hidden)
        self.resume_guard: ResumeGuard = resume_guard or MemoryResumeGuard()
        self._own_http: GuardedHttp | None = None
        if http is None:
            http = self._own_http = self.settings.sender(ssl_context, resolver)
        self.http: HttpSender = http
        self._background: set[asyncio.Task[None]] = set()
        #: Outcomes of the last BACKGROUND_RESULTS_KEPT requests sent with parse_response:
        #: false, in completion order (older ones drop off: one runtime serves a whole process).
        self.background_results: deque[dict[str, Any]] = deque(maxlen=BACKGROUND_RESULTS_KEPT)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for every request still in flight, then close the connections."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._own_http is not None:
            await self._own_http.aclose()

    def send_in_background(
        self,
        run: Run,
        step_id: str,
        request: PreparedRequest,
        timeout: float,
        summary: dict[str, Any],
    ) -> None:
        """Send without waiting; the outcome is recorded in ``background_results``."""
        redactor = run.redactor
        flow_name = run.flow.name

        async def send() -> None:
            outcome: str = "connection_error"
            status: int | None = None
            error: str | None
            try:
                result = await self.http.send(
                    request,
                    timeout=timeout,
                    max_body=self.settings.max_response_body,
                    follow_redirects=False,
                )
                outcome, status, error = result.outcome, result.status, result.error
            except asyncio.CancelledError:
                error = "the request was cancelled"
                raise
            except Exception as failure:  # a custom sender's bug: recorded, never lost
                error = f"the sender raised {_described(failure)}"
            finally:
                self.background_results.append(
                    {
                        "flow": flow_name,
                        "step": step_id,
                        "outcome": outcome,
                        "status": status,
                        "error": shorten(redactor.text(error), MAX_SHOWN_ERROR) if error else None,
                        "request": summary,
                    }
                )

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- running ----------------------------------------------------------------------------

    def start(
        self, flow: CompiledFlow, context: Mapping[str, Any] | None = None
    ) -> Coroutine[Any, Any, RunResult]:
        """Run ``flow`` for one call from its start step (await the result).

        A context that is not usable (it sets a root the runtime owns, ``vars`` is not a
        mapping, or its data is beyond what a state carries: see RuntimeSettings'
        ``max_data_depth`` and ``max_state_size``) raises ValueError at once, before anything
        runs.
        """
        scope, size = self.twins.new_scope(context, self.data_limits)
        if self.flow_versions is not None:
            self.flow_versions.add(flow)
        run = self._run_class(
            self, flow, scope, SecretsView(self.secrets), 0, (None, 0), None, 0, size
        )
        running: Coroutine[Any, Any, RunResult] = self._run_loop(
            self, run, self._plan(flow), flow.start
        )
        return running

    def resume(
        self, flow: CompiledFlow, state: Mapping[str, Any], digits: str | None
    ) -> Coroutine[Any, Any, RunResult]:
        """Continue a run that waits for input, with the caller's digits (None: no input).

        ``digits`` that are neither a str nor None raise TypeError at once (a str subclass is
        read as the plain text it holds: its own methods never run). A state that cannot be
        resumed raises FlowStateError at once, before anything runs: malformed, from another or
        a changed flow, not waiting at a step that takes input, beyond the data limits, unsigned
        or altered (with state keys), or already resumed (each suspension is resumed once: the
        resume guard claims its ``run_id`` and ``seq``). Everything that can fail is done before
        the claim; after it only the run, which never raises.

        With ``flow_versions``, a state of another version of ``flow`` (the same flow name, an
        edited text) resumes on the version it was suspended on when that version is kept;
        when it is no longer kept, FlowStateError says so and names the version.
        """
        if digits is not None:
            if not isinstance(digits, str):
                raise TypeError(
                    f"resume: digits must be a str or None, not {type(digits).__name__}"
                )
            digits = str.__str__(digits)  # a plain copy of a subclass, made in C
        point = read_state(
            state,
            flow,
            self.state_keys,
            self.data_limits,
            self.settings.max_state_age,
            self.flow_versions,
            self.twins.measure_data,
        )
        flow = point.flow
        step = point.step
        resume_step = step.kind.resume
        assert resume_step is not None  # read_state checked the step takes input
        try:  # the step's record before this entry (a menu counts its tries in it)
            entered = resume_step(step, digits, point.scope.get("input", {}).get(step.id))
        except ValueError as error:
            raise FlowStateError(
                f"the state cannot be resumed at step {step.id[:80]!r}: {error}"
            ) from None
        plan = self._plan(flow)
        if not self.resume_guard.claim(point.run_id, point.seq):
            raise FlowStateError(
                f"this state was already resumed (run {point.run_id!r}, suspension "
                f"{point.seq}); a state may be resumed once"
            )
        return self._resume(flow, point, entered, plan)

    async def _resume(
        self, flow: CompiledFlow, point: Resumable, entered: Resumed, plan: Any
    ) -> RunResult:
        """The resumed run of a claimed state; its scope is copied only when it runs (many may
        be gathered). Never raises: the state and digits were checked before the claim, and
        should anything still fail the run fails (the state is used up either way)."""
        step = point.step
        outcome, record, target, detail = entered
        try:
            data = plain_json(point.scope)
            size = point.data_size
            for root in STATE_ROOTS:
                if root not in data:
                    data[root] = {}
                    size += len(root) + 6
            # The count of steps goes on; the same-step guard, which stops a loop that never
            # waits, starts again: the caller answered in between (a menu heard again).
            steps_run, _ = point.counters
            run = self._run_class(
                self,
                flow,
                data,
                SecretsView(self.secrets),
                steps_run,
                (None, 0),
                point.run_id,
                point.seq,
                size,
            )
            # the secrets sent before the suspension: a later response may echo them
            run.redactor.recall(point.secrets_used)
            store_record(run, step.id, "input", record)  # measured, within the data limits
            run.trace.append((step.id, step.type, outcome, 0.0, detail))
        except DataLimitError as error:
            return RunResult("failed", [], [], error=shorten(str(error), MAX_SHOWN_ERROR))
        except Exception as error:
            reason = f"{type(error).__name__} while resuming at step {step.id!r}"
            return RunResult("failed", [], [], error=f"the run could not be resumed ({reason})")
        result: RunResult = await self._run_loop(self, run, plan, target)
        return result

    def _plan(self, flow: CompiledFlow) -> Any:
        """The flow's step plan for this runtime's loop, made once per flow and loop."""
        plan = flow.prepared.get(self._plan_key)
        if plan is None:
            plan = self._compile_plan(plan_flow(flow.steps))
            plan = flow.prepared.setdefault(self._plan_key, plan)
        if self._plan_wrapper is not None:
            wrapped = self._wrapped_plans.get(id(flow))
            if wrapped is None or wrapped[0] is not flow:
                wrapped = (flow, self._plan_wrapper(flow, dict(plan)))
                self._wrapped_plans[id(flow)] = wrapped
            plan = wrapped[1]
        return plan

    # --- synchronous convenience ------------------------------------------------------------


def run_sync(
    flow: CompiledFlow,
    context: Mapping[str, Any] | None = None,
    *,
    digits: list[str | None] | None = None,
    **runtime_options: Any,
) -> RunResult:
    """Run a flow to its end in a fresh event loop, answering collect_input steps from ``digits``.

    A convenience for scripts and tests; servers use :class:`Runtime` directly.
    """

    async def main() -> RunResult:
        pending = list(digits or [])
        async with Runtime(**runtime_options) as runtime:
            result = await runtime.start(flow, context)
            while result.status == "waiting_for_input" and pending:
                trace = result.trace
                result = await runtime.resume(flow, result.state or {}, pending.pop(0))
                result.trace = trace + result.trace
            return result

    return asyncio.run(main())
