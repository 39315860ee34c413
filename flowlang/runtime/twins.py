"""Twins: the pieces of the step loop for one backend, all compiled or all Python.

A :class:`Runtime <flowlang.runtime.runner.Runtime>` reads everything its loop uses from the
:class:`RuntimeTwins` of its backend: the loop, the plan, the run's class and fields, the new
scope, the run-data measure and the request-body walks. ``backend="python"`` runs no code of
the compiled extension. Each twin is chosen by flowlang.expr.backends.compiled_helper from the
one table of compiled twins (``ACCELERATORS``); the compiled runtime module is imported here,
above every Python module it uses.
"""

from __future__ import annotations

__all__ = ["RuntimeTwins", "runtime_twins"]

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowlang.expr.backends import AVAILABLE, compiled_helper, resolve_backend
from flowlang.expr.values import first_non_finite, json_length_exceeds
from flowlang.rundata import measure
from flowlang.runtime.loop import new_scope, run_loop
from flowlang.runtime.plan import StepPlan, keep_plan
from flowlang.runtime.run import Run, RunFields, RunMethods


@dataclass(frozen=True, slots=True)
class RuntimeTwins:
    """What a runtime's step loop runs, for one backend (``cython`` or ``python``)."""

    backend: str
    #: The run object: RunMethods over the backend's RunFields.
    run_class: type[Any]
    new_scope: Callable[..., tuple[dict[str, Any], int]]
    run_loop: Callable[..., Any]
    compile_plan: Callable[[StepPlan], Any]
    #: ``measure`` without ``trail`` (the store functions of flowlang.rundata read it).
    measure_data: Callable[[Any, int, int, bool], int]
    #: The request-body walks (flowlang.http_rules.encode_body).
    json_length_exceeds: Callable[[Any, int], bool]
    first_non_finite: Callable[[Any], float | None]
    #: Whether the loop calls the plan's plain calls as planned, so that a runtime's
    #: ``plan_wrapper`` can wrap them: the Python loop only (the compiled plan replaces steps
    #: with their compiled twins, which a wrapper would never see).
    wraps_plans: bool


def _twins(backend: str) -> RuntimeTwins:
    fields = compiled_helper("RunFields", RunFields, backend)
    run_class: type[Any] = Run
    if fields is not RunFields:  # the methods over the compiled fields
        run_class = type("Run", (RunMethods, fields), {"__slots__": (), "__doc__": Run.__doc__})
    compile_plan = compiled_helper("compile_plan", keep_plan, backend)
    return RuntimeTwins(
        backend,
        run_class,
        compiled_helper("new_scope", new_scope, backend),
        compiled_helper("run_loop", run_loop, backend),
        compile_plan,
        compiled_helper("measure_data", measure, backend),
        compiled_helper("json_length_exceeds", json_length_exceeds, backend),
        compiled_helper("first_non_finite", first_non_finite, backend),
        compile_plan is keep_plan,
    )


_BY_BACKEND = {backend: _twins(backend) for backend in AVAILABLE}


def runtime_twins(backend: str | None) -> RuntimeTwins:
    """The twins of ``backend`` (None: the process default)."""
    return _BY_BACKEND[resolve_backend(backend)]
