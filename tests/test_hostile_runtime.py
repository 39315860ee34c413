"""Hostile contexts through the step loops: objects only an embedding application can put in a
context (keys whose hash or comparison runs code, maps that change their parents, subclasses
whose overrides raise). Both loops (the compiled one, ext/_runtime.pyx, and the Python one)
give the same result or the same failure, and nothing crashes the process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    BrokenList,
    FineMap,
    Opaque,
    RaisingFloat,
    RaisingInt,
    RaisingStr,
    _hostile_dicts,
    hostile_values,
)
from support import run_python
from test_loop_twins import flows

import flowlang
from flowlang.expr.backends import AVAILABLE
from flowlang.rundata import measure
from flowlang.runtime.http import RecordedHttp, RecordedResponse

needs_cython = pytest.mark.skipif(
    "cython" not in AVAILABLE, reason="the cython backend is not available"
)
RECORDED_URL = "https://crm.example.com/lookup?a=1"


_RUN_BOTH = """
import asyncio, json
import flowlang
from flowlang.runtime.http import RecordedHttp

def run_both(document, make_context):
    flow = flowlang.load_flow_text(json.dumps(document))
    async def run(backend):
        async with flowlang.Runtime(http=RecordedHttp({}), backend=backend) as runtime:
            result = await runtime.start(flow, make_context())
            return [result.status, result.error, result.instructions]
    for backend in ("cython", "python"):
        print(json.dumps(asyncio.run(run(backend))))
"""


def _both_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    return [json.loads(line) for line in lines]


def _merge_c_into_vars_m(make_context: str, text: str) -> list[Any]:
    """The result (the same on both loops) of a flow that sets ``vars.m`` to ``c`` from the
    context ``make_context`` (source of a function) makes, then says ``text``."""
    flow = {
        "flow": "f",
        "start": "s0",
        "steps": {
            "s0": SET_M,
            "s1": {"type": "say", "text": text},
        },
    }
    result = run_python(_RUN_BOTH + make_context + f"\nrun_both({flow!r}, make_context)\n")
    compiled, python = _both_lines(result)
    assert compiled == python
    return compiled


@needs_cython
def test_a_key_whose_hash_empties_the_map_being_merged_does_not_crash() -> None:
    """merge_variables held borrowed references into the map it read while a key's __hash__
    ran; the key's code emptied that map (exit 139 before the fix)."""
    compiled = _merge_c_into_vars_m(
        """
def make_context():
    victim = {}
    class K(str):
        def __hash__(self):
            victim.clear()
            return str.__hash__(self)
    victim[K("x")] = {"deep": [1, 2, 3]}
    victim.update({f"k{n}": [n] * 5 for n in range(20)})
    return {"c": victim, "vars": {"m": {"x": {"a": 1}}}}
""",
        "<<vars.m | length>> <<vars.m.x.a>> <<vars.m.x.deep>>",
    )
    assert compiled == [
        "completed",
        None,
        [{"action": "say", "step": "s1", "text": "21 1 [1,2,3]"}],
    ]


@needs_cython
def test_a_map_copy_that_empties_the_map_being_merged_does_not_crash() -> None:
    """Copying the existing map (a dict subclass whose keys() runs code) emptied the map whose
    value was held by a borrowed reference."""
    compiled = _merge_c_into_vars_m(
        """
def make_context():
    incoming = {"x": {"y": [2] * 50}}
    incoming.update({f"k{n}": [n] * 5 for n in range(20)})
    class D(dict):  # dict() reads a subclass with its own __iter__ through keys()
        def __iter__(self):
            return dict.__iter__(self)
        def keys(self):
            incoming.clear()
            return dict.keys(self)
    return {"c": incoming, "vars": {"m": {"x": D({"z": 1})}}}
""",
        "<<vars.m | length>> <<vars.m.x.z>> <<vars.m.x.y | length>>",
    )
    assert compiled == ["completed", None, [{"action": "say", "step": "s1", "text": "21 1 50"}]]


def _flow(steps: dict[str, Any]) -> flowlang.CompiledFlow:
    return flowlang.load_flow_text(json.dumps({"flow": "f", "start": "s0", "steps": steps}))


def _run(
    backend: str, flow: flowlang.CompiledFlow, context: Any, digits: list[str] | None = None
) -> list[Any]:
    async def main() -> list[Any]:
        recorded = {("GET", RECORDED_URL): RecordedResponse(200, {}, {"tier": "gold"})}
        settings = flowlang.RuntimeSettings(max_steps=40, max_same_step=4)
        async with flowlang.Runtime(
            http=RecordedHttp(recorded), settings=settings, backend=backend
        ) as runtime:
            try:
                result = await runtime.start(flow, context)
            except ValueError as error:  # a context the runtime refuses (both loops alike)
                return [["refused", str(error)]]
            outcomes = [_outcome(result)]
            for entered in digits or []:
                if result.status != "waiting_for_input" or result.state is None:
                    break
                result = await runtime.resume(flow, json.loads(json.dumps(result.state)), entered)
                outcomes.append(_outcome(result))
            return outcomes

    return asyncio.run(main())


def _outcome(result: flowlang.RunResult) -> list[Any]:
    """What a run gave, compared by repr (hostile values must never be compared with ==)."""
    trace = [(entry["step"], entry["outcome"], repr(entry["detail"])) for entry in result.trace]
    state = None
    if result.state is not None:
        state = {k: v for k, v in result.state.items() if k not in ("run_id", "suspended_at")}
    return [result.status, result.error, repr(result.instructions), trace, repr(state)]


def _both(flow: flowlang.CompiledFlow, context: Any, digits: list[str] | None = None) -> list[Any]:
    compiled, python = _run("cython", flow, context, digits), _run("python", flow, context, digits)
    assert compiled == python
    return compiled


SET_M = {"type": "set_variables", "variables": {"m": "<<c>>"}, "next": "s1"}
SAY_M = {"type": "say", "text": "<<vars.m>>"}


@needs_cython
@pytest.mark.parametrize(
    ("variables", "c", "status"),
    [
        # a raising key is missing: the lookup finds nothing, then storing under it fails alike
        ({RaisingStr("m"): {"y": 2}}, {"x": 1}, "failed"),
        ({RaisingStr("m"): 1}, list(range(20_000)), "failed"),  # refused, not a HostileError
        ({"m": {RaisingStr("x"): 2}}, {"x": 1}, "failed"),
        ({"m": {"x": 1}}, {RaisingStr("x"): 2}, "failed"),
        ({"m": {"x": RaisingInt(1)}}, {"x": {"y": RaisingFloat(0.5)}}, "completed"),
        ({"m": FineMap({"x": 1})}, {"x": FineMap({"y": 2})}, "completed"),
        ({"m": {"x": Opaque()}}, {"x": {"y": Opaque()}}, "completed"),
    ],
)
def test_both_loops_merge_hostile_variables_alike(variables: Any, c: Any, status: str) -> None:
    flow = _flow({"s0": SET_M, "s1": SAY_M})
    outcome = _both(flow, {"c": c, "vars": variables})
    assert outcome[0][0] == status, outcome


@needs_cython
def test_a_raising_key_is_missing_in_both_loops_not_an_escape() -> None:
    """The Python loop raised the key's error at the lookup while the compiled one treated the
    key as missing and refused the value as too large: both refuse it now."""
    flow = _flow({"s0": SET_M, "s1": SAY_M})
    settings_context = {"c": list(range(20_000)), "vars": {RaisingStr("m"): 1}}
    outcome = _both(flow, settings_context)
    assert outcome[0][0] == "failed"
    assert "cannot set vars.m" in outcome[0][1]


@needs_cython
@pytest.mark.parametrize("value", [BrokenList([1, 2]), {"a": BrokenList([])}])
def test_a_list_that_cannot_be_read_is_a_refused_context_not_an_escape(value: Any) -> None:
    for backend in ("cython", "python"):
        assert _run(backend, _flow({"s0": SAY_M}), {"c": value}) == [
            ["refused", "the context cannot go into a run: c: a value that is not JSON data"]
            if not isinstance(value, dict)
            else ["refused", "the context cannot go into a run: c.a: a value that is not JSON data"]
        ]


@pytest.mark.parametrize(
    "value",
    [RaisingStr("abc"), RaisingInt(5), RaisingInt(2**64 - 1), RaisingFloat(0.5), BrokenList([1])],
    ids=["str", "int", "int-64-bit", "float", "list"],
)
def test_measure_reads_subclasses_with_the_base_type(value: Any) -> None:
    """No override of a str or int subclass runs while data is measured (both twins)."""
    from flowlang.expr.backends import compiled_helper

    compiled = compiled_helper("measure_data", measure)
    expected = measure(value, 5, 1000, False)
    assert compiled(value, 5, 1000, False) == expected
    assert measure([value, {"k": value}], 5, 1000, False) == compiled(
        [value, {"k": value}], 5, 1000, False
    )


_BIG = ["xxxxxxxxxx"] * 10_000  # 130 kB of JSON, a little in memory
_HUGE = "<<[[c, c, c, c], [c, c, c, c], [c, c, c, c], [c, c, c, c]]>>"  # 2 MB of JSON


@pytest.mark.parametrize("backend", ["cython", "python"])
@pytest.mark.parametrize(
    "step",
    [
        {"type": "say", "text": _HUGE},
        {"type": "transfer", "target": _HUGE},
        {
            "type": "collect_input",
            "prompt": _HUGE,
            "max_digits": 2,
            "next": "s0",
            "on_no_input": "s0",
        },
    ],
)
def test_host_text_is_refused_past_the_output_limit_before_it_is_built(
    backend: str, step: dict[str, Any]
) -> None:
    if backend not in AVAILABLE:
        pytest.skip("the cython backend is not available")
    flow = _flow({"s0": step})
    tracemalloc.start()
    try:
        outcome = _run(backend, flow, {"c": _BIG})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    status, error = outcome[0][0], outcome[0][1]
    assert status == "failed", outcome[0][:2]
    assert "longer than the limit of 100000 characters" in error
    assert peak < 1_500_000, peak


def test_a_flow_engine_with_a_higher_output_limit_lets_longer_host_text_through() -> None:
    engine = flowlang.Engine(limits=flowlang.Limits(max_output=3_000_000))
    document = {"flow": "f", "start": "s0", "steps": {"s0": {"type": "say", "text": _HUGE}}}
    flow = flowlang.load_flow_text(json.dumps(document), engine=engine)
    for backend in AVAILABLE:
        outcome = _run(backend, flow, {"c": _BIG})
        assert outcome[0][0] == "completed", outcome[0][:2]


@pytest.mark.parametrize("where", ["header", "endpoint"])
def test_request_text_is_refused_before_it_is_built(where: str) -> None:
    step: dict[str, Any] = {
        "type": "http_request",
        "endpoint": "https://crm.example.com/lookup?a=1",
        "on_failure": "s1",
        "next": "s1",
    }
    if where == "header":
        step["headers"] = {"X-Big": _HUGE}
    else:
        step["endpoint"] = "https://crm.example.com/lookup?a=" + _HUGE
    flow = _flow({"s0": step, "s1": {"type": "hangup"}})
    for backend in AVAILABLE:
        tracemalloc.start()
        try:
            outcome = _run(backend, flow, {"c": _BIG})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert outcome[0][3][0][1] == "invalid_request", outcome[0]
        assert peak < 1_500_000, peak


hostile_runtime_contexts = st.fixed_dictionaries(
    {"a": hostile_values},
    optional={
        "vars": _hostile_dicts(
            st.sampled_from(["a", "b", "c"]) | st.sampled_from(["a", "c"]).map(RaisingStr),
            hostile_values,
            max_size=3,
        )
    },
)


@needs_cython
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(), hostile_runtime_contexts, st.lists(st.sampled_from(["12", "1#", "x"]), max_size=2))
def test_both_loops_run_generated_flows_alike_on_hostile_contexts(
    document: dict[str, Any], context: dict[str, Any], digits: list[str]
) -> None:
    """Same results, traces, instructions and states; the only exception start raises is the
    ValueError of a refused context (anything else fails the test)."""
    flow = flowlang.load_flow_text(json.dumps(document))
    _both(flow, context, digits)


class _LoudKey(str):
    """A str key whose own text conversion raises (only str's is used)."""

    def __str__(self) -> str:
        raise RuntimeError("never called")

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    ("context", "refused"),
    [
        ({_LoudKey("c"): 1, "d": 2}, None),
        ({RaisingInt(7): 1, None: 2, 1.5: 3}, None),
        ({Opaque(): 1}, "a context key must be text or a number, not Opaque"),
        ({(1, 2): 1}, "a context key must be text or a number, not tuple"),
    ],
    ids=["str-subclass", "numbers", "opaque", "tuple"],
)
def test_context_keys_become_text_without_running_their_code(
    context: dict[Any, Any], refused: str | None
) -> None:
    flow = _flow({"s0": {"type": "say", "text": "<<c>> <<7>>"}})
    for backend in AVAILABLE:
        outcome = _run(backend, flow, context)
        if refused is None:
            assert outcome[0][0] == "completed", outcome
        else:
            assert outcome == [["refused", refused]]


def _changing_parent(grow: bool) -> dict[str, Any]:
    """A dict holding a Mapping whose items() changes that dict: a new key (its size changes)
    or a later value replaced by a large one (same size)."""
    parent: dict[str, Any] = {"a": 1}

    class Changer(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return 1

        def __iter__(self) -> Any:
            return iter(["k"])

        def __len__(self) -> int:
            return 1

        def items(self) -> Any:
            if grow:
                parent["zz"] = 1
            else:
                parent["z"] = "x" * 5000
            return [("k", 1)]

    parent["m"] = Changer()
    parent["z"] = 0
    return parent


@needs_cython
@pytest.mark.parametrize("grow", [True, False], ids=["size-changes", "value-changes"])
def test_measure_twins_agree_when_a_map_changes_its_parent_while_measured(grow: bool) -> None:
    from flowlang.expr.backends import compiled_helper

    compiled = compiled_helper("measure_data", measure)

    def outcome(function: Any) -> Any:
        try:
            return function(_changing_parent(grow), 5, 1000, False)
        except RuntimeError as error:
            return f"RuntimeError: {error}"

    assert outcome(compiled) == outcome(measure)
    assert (outcome(measure) == -2) if not grow else "changed size" in outcome(measure)


@pytest.mark.parametrize("grow", [True, False], ids=["size-changes", "value-changes"])
def test_a_context_that_changes_while_it_is_read_is_refused_or_taken_alike(grow: bool) -> None:
    flow = _flow({"s0": {"type": "say", "text": "<<contact.z>>"}})
    outcomes = [_run(backend, flow, {"contact": _changing_parent(grow)}) for backend in AVAILABLE]
    assert all(outcome == outcomes[0] for outcome in outcomes)
    if grow:
        expected = "the context cannot go into a run: reading it raised RuntimeError"
        assert outcomes[0] == [["refused", expected]]
    else:
        assert outcomes[0][0][0] == "completed"
