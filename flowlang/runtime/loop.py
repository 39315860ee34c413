"""Loop: run the steps of one call until it waits, ends, completes or fails (the Python twin).

``flowlang._runtime`` holds the compiled twin (``compile_plan`` and ``run_loop``, from
ext/_runtime.pyx); a property test runs generated flows through both and compares results and
traces. Steps without I/O are plain calls bounded by the step limits; the run's deadline is
checked before every step that waits, and HTTP steps run under an asyncio deadline for the
time left.
"""

from __future__ import annotations

__all__ = [
    "RUNTIME_ROOTS",
    "context_problem",
    "key_text",
    "new_scope",
    "run_loop",
    "static_prefix",
    "unreadable_context",
    "vars_reads",
    "vars_reads_of",
]

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as day_time
from typing import Any

from flowlang.engine import Template
from flowlang.flow.digits import DigitPattern
from flowlang.flow.model import Branch, CompiledFlow, Endpoint, FieldTree, Row, Step, Value
from flowlang.kinds.base import Transition
from flowlang.rundata import data_problem, disown_reads, measure
from flowlang.runtime.plan import StepPlan
from flowlang.runtime.results import RunResult, TraceRow
from flowlang.runtime.run import Run

#: Roots the runtime owns; a context may not supply them (``vars`` may be seeded).
RUNTIME_ROOTS = ("input", "steps", "secrets")


def new_scope(
    context: Mapping[str, Any] | None, limits: tuple[int, int, int]
) -> tuple[dict[str, Any], int]:
    """The scope a run starts with: the context's roots (keys as text), a copy of ``vars``,
    and empty ``input`` and ``steps``; and its size (see flowlang.rundata.measure).

    ValueError for a context the runtime cannot take: one that sets a root the runtime owns,
    whose ``vars`` is not a mapping, or whose data a state could not carry (nested deeper than
    ``max_data_depth``, larger than ``max_state_size``, an integer beyond 64 bits, text with
    a lone surrogate).
    """
    data = dict(context) if context else {}
    for key in data:
        if type(key) is not str:
            data = {key_text(key): value for key, value in data.items()}
            break
    for root in RUNTIME_ROOTS:
        if root in data:
            raise ValueError(f"the context may not set {root!r}: the runtime owns it")
    variables = data.get("vars")
    if variables is None:
        data["vars"] = {}
    elif isinstance(variables, dict):
        data["vars"] = dict(variables)
    else:
        raise ValueError("vars must be a mapping")
    data["input"] = {}
    data["steps"] = {}
    _, max_state, max_depth = limits
    try:
        size = measure(data, max_depth + 1, max_state, False)
    except Exception as error:  # a custom Mapping's code changed the data while it was read
        raise ValueError(unreadable_context(error)) from None
    if size < 0:
        raise ValueError(context_problem(data, limits))
    return data, size


def key_text(key: Any) -> str:
    """A context key as text: null, booleans and numbers as Python spells them, a subclass of
    str, int or float read with its base type (no override runs); ValueError for any other
    key (its own ``__str__`` is never called)."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return str(key)
    if isinstance(key, int):
        return int.__repr__(int.__int__(key))
    if isinstance(key, float):
        return float.__repr__(float.__float__(key))
    raise ValueError(f"a context key must be text or a number, not {type(key).__name__}")


def unreadable_context(error: Exception) -> str:
    """The message for a context whose reading raised (both twins of new_scope use it)."""
    return f"the context cannot go into a run: reading it raised {type(error).__name__}"


def context_problem(data: dict[str, Any], limits: tuple[int, int, int]) -> str:
    """Why a context's data cannot go into a run (both twins of new_scope use it)."""
    _, max_state, max_depth = limits
    problem = data_problem(
        data,
        max_depth + 1,
        max_state,
        False,
        root="",
        depth_limit=max_depth,
        setting="max_state_size",
    )
    return f"the context cannot go into a run: {problem}"


#: Field data that holds no template.
_INERT = (
    str,
    int,
    float,
    bool,
    type(None),
    bytes,
    date,
    datetime,
    day_time,
    timedelta,
    tzinfo,
    DigitPattern,
)
#: The paths of a step that may read all of ``vars`` (the empty path).
_EVERYTHING: tuple[tuple[str, ...], ...] = ((),)


def static_prefix(path: tuple[Any, ...]) -> tuple[str, ...]:
    """The keys after the root of a reference's ``path`` up to its first computed key or
    index: every value an expression can obtain through the path is under that prefix."""
    prefix: list[str] = []
    for key in path[1:]:
        if type(key) is not str:
            break
        prefix.append(key)
    return tuple(prefix)


def vars_reads(step: Step) -> tuple[tuple[str, ...], ...] | None:
    """The static prefixes (flowlang.rundata, rule 3) of the paths under ``vars`` that the
    templates of ``step`` may read, for the ownership rule of flowlang.rundata; None when it
    reads none, ``((),)`` when it may read anything (``vars`` itself, a computed first key,
    or a field this walk does not know: a callable, an object of another kind)."""
    found: list[tuple[str, ...]] = []
    stack: list[Any] = list(step.fields.values())
    while stack:
        item = stack.pop()
        if isinstance(item, _INERT):
            continue
        if isinstance(item, Template):
            references = getattr(item, "references", None)
            if references is None:
                return _EVERYTHING
            for reference in references:
                if reference.root == "vars":
                    prefix = static_prefix(reference.path)
                    if not prefix:
                        return _EVERYTHING
                    found.append(prefix)
        elif isinstance(item, Value):
            stack.append(item.template)
        elif isinstance(item, FieldTree):
            stack.extend(value for _, value in item.entries)
        elif isinstance(item, Branch):
            stack.extend((item.expression, *item.rows))
        elif isinstance(item, Row):
            stack.extend((item.property, item.value))
        elif isinstance(item, Endpoint):
            stack.extend(item.parts)
        elif isinstance(item, (tuple, list, frozenset, set)):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            for field in dataclasses.fields(item):  # a kind's own data: a callable says all
                stack.append(getattr(item, field.name))
        else:
            return _EVERYTHING
    return tuple(dict.fromkeys(found)) or None


def vars_reads_of(flow: CompiledFlow) -> dict[str, tuple[tuple[Any, ...], ...]]:
    """``vars_reads`` of every step of ``flow`` that reads ``vars``, made once per flow."""
    reads: dict[str, tuple[tuple[Any, ...], ...]] | None = flow.prepared.get("vars_reads")
    if reads is None:
        reads = {}
        for step_id, step in flow.steps.items():
            paths = vars_reads(step)
            if paths is not None:
                reads[step_id] = paths
        reads = flow.prepared.setdefault("vars_reads", reads)
    return reads


async def run_loop(runtime: Any, run: Run, plan: StepPlan, step_id: str | None) -> RunResult:
    """Run steps from ``step_id`` to a result; never raises (an exception fails the run).

    The step counters are written back to the run when it waits (they go into its state).
    """
    secret_values = run.redactor.used
    trace: list[TraceRow] = run.trace
    perf_counter_ns, timer = time.perf_counter_ns, runtime.timer  # the deadline's clock
    began = timer()
    max_steps, max_same, run_deadline = runtime.loop_limits
    steps_run = run.steps_run
    last, count = run.streak
    owned, reads = run.owned, vars_reads_of(run.flow)
    started = perf_counter_ns()
    try:
        while step_id is not None:
            if steps_run >= max_steps:
                return run.failed(f"the run took more than {max_steps} steps")
            if step_id == last:
                count += 1
                if count > max_same:
                    return run.failed(f"step {step_id!r} ran more than {max_same} times in a row")
            else:
                last, count = step_id, 1
            steps_run += 1
            step, run_step, execute = plan[step_id]
            if owned and step_id in reads:  # what the step may read, the run no longer owns
                disown_reads(owned, run.scope["vars"], reads[step_id])
            transition: Transition
            if run_step is not None:
                transition = run_step(run)
            else:
                assert execute is not None
                if timer() - began > run_deadline:
                    raise TimeoutError
                if step.kind.network:  # network I/O runs under the run's deadline
                    async with asyncio.timeout(began + run_deadline - timer()):
                        transition = await execute(step, run)
                else:  # the host's own awaitable
                    transition = await execute(step, run)
            kind, target, outcome, detail = transition
            if detail is not None and secret_values:
                detail = run.redactor.data(detail)
            finished = perf_counter_ns()
            trace.append((step_id, step.type, outcome, (finished - started) / 1e6, detail))
            started = finished
            if kind == "go":
                step_id = target
                continue
            if kind == "wait":  # the counters go into the state, to carry on with
                run.steps_run, run.streak = steps_run, (last, count)
                return RunResult(  # awaiting is the masked detail: it is output too
                    "waiting_for_input",
                    trace,
                    run.instructions,
                    run.state(step_id),
                    detail,
                    variables=run.scope.get("vars"),
                )
            if kind == "end":
                return RunResult("ended", trace, run.instructions, variables=run.scope.get("vars"))
            break
        return RunResult("completed", trace, run.instructions, variables=run.scope.get("vars"))
    except Exception as error:  # the step that ran, its field and place: found now
        return run.broken(error, step_id, (perf_counter_ns() - started) / 1e6)
