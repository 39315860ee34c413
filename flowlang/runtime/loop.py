"""Loop: run the steps of one call until it waits, ends, completes or fails (the Python twin).

``flowlang._cevaluator`` holds the compiled twin (``compile_plan`` and ``run_loop``, from
ext/_runner.pxi); a property test runs generated flows through both and compares results and
traces. Steps without I/O are plain calls bounded by the step limits; the run's deadline is
checked before every step that waits, and HTTP steps run under an asyncio deadline for the
time left.
"""

from __future__ import annotations

__all__ = ["run_loop"]

import asyncio
import time
from typing import TYPE_CHECKING

from flowlang.runtime.results import RunResult, TraceRow
from flowlang.runtime.steps import StepPlan, Transition

if TYPE_CHECKING:
    from flowlang.runtime.runner import Run, Runtime


async def run_loop(runtime: Runtime, run: Run, plan: StepPlan, step_id: str | None) -> RunResult:
    """Run steps from ``step_id`` to a result; never raises (an exception fails the run).

    Counters are written back to the run on every exit.
    """
    settings = runtime.settings
    secret_values = run.redactor.values
    trace: list[TraceRow] = run.trace
    perf_counter, monotonic = time.perf_counter, time.monotonic
    began, run_deadline = monotonic(), settings.run_deadline
    max_steps, max_same = settings.max_steps, settings.max_same_step
    steps_run = run.steps_run
    last, count = run.streak
    started = perf_counter()
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
            transition: Transition
            if run_step is not None:
                transition = run_step(run)
            else:
                assert execute is not None
                if monotonic() - began > run_deadline:
                    raise TimeoutError
                if step.type == "http_request":  # network I/O runs under the run's deadline
                    async with asyncio.timeout(began + run_deadline - monotonic()):
                        transition = await execute(step, run)
                else:  # the host's own awaitable
                    transition = await execute(step, run)
            kind, target, outcome, detail = transition
            if detail is not None and secret_values:
                detail = run.redactor.data(detail)
            finished = perf_counter()
            trace.append((step_id, step.type, outcome, (finished - started) * 1000.0, detail))
            started = finished
            if kind == "go":
                step_id = target
                continue
            run.steps_run, run.streak = steps_run, (last, count)
            if kind == "wait":
                awaiting = transition[3]  # the host is told the prompt itself; the trace is masked
                return RunResult(
                    "waiting_for_input", trace, run.instructions, run.state(step_id), awaiting
                )
            if kind == "end":
                return RunResult("ended", trace, run.instructions)
            break
        return RunResult("completed", trace, run.instructions)
    except Exception as error:
        return run.broken(error)
    finally:
        run.steps_run, run.streak = steps_run, (last, count)
