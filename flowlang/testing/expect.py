"""Comparing what a case did with what it expects: one :class:`Failure` per expectation not met,
each naming the place in the test file it comes from.

Rules: ``path`` is exact; ``path_includes`` is in order (other steps may come between);
``outcomes`` compares a step's last outcome (a list: all of them, in order); ``instructions``
are in order, each a subset of the instruction given; ``vars`` and the fields of ``requests``
and ``deliveries`` are subsets (maps match key by key, lists item by item); ``requests`` are
found in the order sent, others may come between. A text may be ``{matches: REGEX}``.
"""

from __future__ import annotations

__all__ = [
    "COMPARE_SECONDS",
    "UNSET",
    "Failure",
    "check_flow_case",
    "check_workflow_case",
    "run_path",
    "same",
]

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowlang.flow.source import Pointer
from flowlang.graph.model import FlowGraph
from flowlang.suggest import did_you_mean
from flowlang.testing.patterns import TextPattern, compare_within
from flowlang.testing.runner import CaseRun

#: The longest the comparison of one case may take, in seconds of wall time (each pattern match
#: is bounded; a case compares many values).
COMPARE_SECONDS = 10.0
#: No value (an expected or actual value that is not shown).
UNSET: Any = object()
#: The outcome of a step that waits for input (not counted as its outcome).
_WAITING = "waiting for input"


@dataclass(frozen=True)
class Failure:
    """An expectation not met: the field (``expect.path``), what is wrong, where in the file,
    and the expected and actual values (UNSET: none to show)."""

    field: str
    message: str
    pointer: Pointer
    expected: Any = UNSET
    actual: Any = UNSET


def same(expected: Any, actual: Any) -> bool:
    """Whether ``actual`` meets ``expected``: patterns match whole texts, maps are subsets
    (key by key), lists match item by item, booleans are not numbers."""
    if isinstance(expected, TextPattern):
        return expected.matches(actual)
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and same(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    return type(expected) is type(actual) and bool(expected == actual)


def run_path(graph: FlowGraph, trace: Sequence[Mapping[str, Any]]) -> list[str]:
    """The steps a run visited, in order: a step that waits for input and then resumes (or asks
    again) is one visit, as coverage counts them (FlowGraph.visits)."""
    return [step for step, begins, _ in graph.visits(trace) if begins]


def _first_difference(expected: list[Any], actual: list[Any]) -> int | None:
    for index, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if not same(e, a):
            return index
    return None if len(expected) == len(actual) else min(len(expected), len(actual))


def _list_failure(
    name: str, expected: list[Any], actual: list[Any], at: Pointer, noun: str
) -> Failure | None:
    index = _first_difference(expected, actual)
    if index is None:
        return None
    if index >= len(expected):
        message = f"{noun} {index + 1} was not expected: {len(actual)} instead of {len(expected)}"
        return Failure(name, message, at, expected, actual)
    if index >= len(actual):
        message = f"{noun} {index + 1} is missing ({len(actual)} instead of {len(expected)})"
    else:
        message = f"{noun} {index + 1} differs"
    return Failure(
        name,
        message,
        (*at, index),
        expected[index],
        actual[index] if index < len(actual) else UNSET,
    )


class _Checker:
    def __init__(self, done: CaseRun) -> None:
        self.done = done
        self.case = done.case
        self.at: Pointer = (*done.case.pointer, "expect")
        self.failures: list[Failure] = []

    def fail(
        self, key: str, message: str, pointer: Pointer, expected: Any = UNSET, actual: Any = UNSET
    ) -> None:
        self.failures.append(Failure(f"expect.{key}", message, pointer, expected, actual))

    def known_step(self, graph: FlowGraph, step: Any, pointer: Pointer, key: str) -> bool:
        if isinstance(step, TextPattern) or (isinstance(step, str) and step in graph.steps):
            return True
        self.fail(
            key,
            f"the flow has no step {str(step)[:80]!r}{did_you_mean(step, graph.steps)}",
            pointer,
        )
        return False

    def general(self, strict: bool) -> None:
        done = self.done
        if done.broken is not None:
            self.failures.append(Failure("case", done.broken, self.case.pointer))
        for request, times in Counter(done.missing).items():  # once each, in order
            attempts = f" ({times} attempts)" if times > 1 else ""
            self.failures.append(
                Failure(
                    "responses", f"no recorded response for {request}{attempts}", self.case.pointer
                )
            )
        if strict:
            for request in done.unused:
                self.failures.append(
                    Failure(
                        "responses",
                        f"recorded response not used: {request} (--strict)",
                        self.case.pointer,
                    )
                )
            for step in done.unused_inputs:
                self.failures.append(
                    Failure(
                        "inputs",
                        f"inputs not used: {step} (--strict)",
                        (*self.case.pointer, "inputs"),
                    )
                )

    def requests(self) -> None:
        expected = self.case.expect.get("requests")
        if expected is None:
            return
        sent = self.done.requests
        position = 0
        for number, wanted in enumerate(expected):
            headers = wanted.get("headers")
            probe = {k: v for k, v in wanted.items() if k != "headers"}
            while position < len(sent):
                request = sent[position]
                position += 1
                lowered = {str(k).lower(): v for k, v in request["headers"].items()}
                wanted_headers = (
                    {str(k).lower(): v for k, v in headers.items()}
                    if isinstance(headers, Mapping)
                    else headers
                )
                if same(probe, request) and (headers is None or same(wanted_headers, lowered)):
                    break
            else:
                self.fail(
                    "requests",
                    f"no request sent (after those matched before) matches request {number + 1}",
                    (*self.at, "requests", number),
                    wanted,
                    sent,
                )
                return


def _too_slow(done: CaseRun) -> list[Failure]:
    message = f"comparing the case's results took longer than {COMPARE_SECONDS:g} s"
    return [Failure("expect", message, (*done.case.pointer, "expect"))]


def check_flow_case(done: CaseRun, graph: FlowGraph, *, strict: bool = False) -> list[Failure]:
    """Every expectation of a flow case that its run did not meet (and missing recordings),
    compared within COMPARE_SECONDS."""
    try:
        with compare_within(COMPARE_SECONDS):
            return _check_flow_case(done, graph, strict)
    except TimeoutError:  # compare_within's
        return _too_slow(done)


def _check_flow_case(done: CaseRun, graph: FlowGraph, strict: bool) -> list[Failure]:
    checker = _Checker(done)
    checker.general(strict)
    expect, at = done.case.expect, checker.at
    asking = [step_id for step_id, step in graph.steps.items() if step.kind.takes_input]
    for step in done.case.inputs:
        if step not in asking:
            hint = did_you_mean(step, asking)
            message = f"the flow has no step {step[:80]!r} that takes input{hint}"
            checker.failures.append(
                Failure("inputs", message, (*done.case.pointer, "inputs", step))
            )
    path = run_path(graph, done.trace)
    if done.status == "failed" and expect.get("status") != "failed":
        checker.fail(
            "status", f"the run failed: {(done.error or '').partition(chr(10))[0]}", (*at,)
        )
    if "status" in expect and done.status != expect["status"]:
        checker.fail("status", "status differs", (*at, "status"), expect["status"], done.status)
    if "path" in expect:
        for number, step in enumerate(expect["path"]):
            checker.known_step(graph, step, (*at, "path", number), "path")
        failure = _list_failure("expect.path", expect["path"], path, (*at, "path"), "step")
        if failure is not None:
            checker.failures.append(failure)
    if "path_includes" in expect:
        position = 0
        for number, step in enumerate(expect["path_includes"]):
            if not checker.known_step(graph, step, (*at, "path_includes", number), "path_includes"):
                continue
            found = next((n for n in range(position, len(path)) if same(step, path[n])), None)
            if found is not None:
                position = found + 1
            else:
                checker.fail(
                    "path_includes",
                    f"step {step!r} is not on the path (in this order)",
                    (*at, "path_includes", number),
                    expect["path_includes"],
                    path,
                )
                break
    for number, step in enumerate(expect.get("path_excludes", ())):
        if checker.known_step(graph, step, (*at, "path_excludes", number), "path_excludes") and any(
            same(step, visited) for visited in path
        ):
            checker.fail(
                "path_excludes",
                f"step {step!r} is on the path",
                (*at, "path_excludes", number),
                expect["path_excludes"],
                path,
            )
    if "ends_at" in expect and checker.known_step(
        graph, expect["ends_at"], (*at, "ends_at"), "ends_at"
    ):
        last = path[-1] if path else None
        if not same(expect["ends_at"], last):
            checker.fail(
                "ends_at", "the run ends at another step", (*at, "ends_at"), expect["ends_at"], last
            )
    _outcomes(checker, graph, path)
    if "instructions" in expect:
        shown = [dict(item) for item in done.instructions]
        failure = _list_failure(
            "expect.instructions",
            expect["instructions"],
            shown,
            (*at, "instructions"),
            "instruction",
        )
        if failure is not None:
            checker.failures.append(failure)
    if "vars" in expect:
        actual = done.variables or {}
        for name, value in expect["vars"].items():
            if name not in actual:
                checker.fail(
                    "vars", f"variable {str(name)[:80]!r} is not set", (*at, "vars", name), value
                )
            elif not same(value, actual[name]):
                checker.fail(
                    "vars",
                    f"variable {str(name)[:80]!r} differs",
                    (*at, "vars", name),
                    value,
                    actual[name],
                )
    checker.requests()
    return checker.failures


def _outcomes(checker: _Checker, graph: FlowGraph, path: list[str]) -> None:
    expected = checker.case.expect.get("outcomes")
    if expected is None:
        return
    at = (*checker.at, "outcomes")
    seen: dict[str, list[str]] = {}
    for entry in checker.done.trace:
        if entry["outcome"] != _WAITING:
            seen.setdefault(entry["step"], []).append(entry["outcome"])
    for step, wanted in expected.items():
        if not checker.known_step(graph, step, (*at, step), "outcomes"):
            continue
        outcomes = seen.get(step)
        if not outcomes:
            checker.fail("outcomes", f"step {step!r} did not run", (*at, step), wanted, path)
        elif isinstance(wanted, list):
            if not same(wanted, outcomes):
                checker.fail(
                    "outcomes", f"outcomes of step {step!r} differ", (*at, step), wanted, outcomes
                )
        elif not same(wanted, outcomes[-1]):
            checker.fail(
                "outcomes", f"outcome of step {step!r} differs", (*at, step), wanted, outcomes[-1]
            )


def delivery_rows(done: CaseRun) -> list[dict[str, Any]]:
    """The deliveries of a workflow case as plain data (secrets redacted)."""
    if done.dispatch is None:
        return []
    return [
        done.redactor.data(
            {
                "workflow": item.workflow,
                "action": item.action,
                "outcome": item.outcome,
                "attempts": item.attempts,
                "result": item.result,
                "error": item.error,
            }
        )
        for item in done.dispatch.deliveries
    ]


def check_workflow_case(done: CaseRun, *, strict: bool = False) -> list[Failure]:
    """Every expectation of a workflow case that its event did not meet (within
    COMPARE_SECONDS)."""
    try:
        with compare_within(COMPARE_SECONDS):
            return _check_workflow_case(done, strict)
    except TimeoutError:  # compare_within's
        return _too_slow(done)


def _check_workflow_case(done: CaseRun, strict: bool) -> list[Failure]:
    checker = _Checker(done)
    checker.general(strict)
    expect, at = done.case.expect, checker.at
    if done.dispatch is not None:
        for error in done.dispatch.errors:
            checker.failures.append(Failure("event", done.redactor.text(error), done.case.pointer))
    if "matched" in expect:
        matched = list(done.dispatch.matched) if done.dispatch else []
        failure = _list_failure(
            "expect.matched", expect["matched"], matched, (*at, "matched"), "workflow"
        )
        if failure is not None:
            checker.failures.append(failure)
    if "deliveries" in expect:
        failure = _list_failure(
            "expect.deliveries",
            expect["deliveries"],
            delivery_rows(done),
            (*at, "deliveries"),
            "delivery",
        )
        if failure is not None:
            checker.failures.append(failure)
    checker.requests()
    return checker.failures
