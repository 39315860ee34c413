"""The step loop's twins: the compiled loop (ext/_runtime.pyx) and the Python one
(flowlang/runtime/loop.py) give the same results, traces, instructions and states on generated
flows; and the compiled helpers they rest on agree with their Python twins."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import json_values
from support import same

import flowlang
from flowlang.expr.backends import AVAILABLE, compiled_helper
from flowlang.expr.values import to_json
from flowlang.flow.fields import Field
from flowlang.flow.model import generated_build
from flowlang.kinds.base import StepKind
from flowlang.kinds.registry import STEP_KINDS
from flowlang.rundata import measure
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.loop import new_scope
from flowlang.runtime.results import trace_entries

needs_cython = pytest.mark.skipif(
    "cython" not in AVAILABLE, reason="the cython backend is not available"
)
MANY = max(300, settings.default.max_examples)

TEMPLATES = [
    "<<vars.a>>",
    "<<vars.b>>",
    "<<vars.c>>",
    "<<a>>",
    "<<a.x>>",
    "<<a[0]>>",
    "<<vars.a ?? a>>",
    "<<a | length>>",
    "text <<vars.b>> and <<a.x>>",
    "<<vars.a == 1>>",
    "<<vars.c.d>>",
]
LITERALS: list[Any] = [1, 0, -2.5, "x", "", True, None, [1, "y"], {"k": [2]}]
VALUES = st.sampled_from(TEMPLATES) | st.sampled_from(LITERALS)
ROW_VALUES = st.sampled_from(TEMPLATES) | st.sampled_from(LITERALS[:7])  # text or scalars
EXPRESSIONS = [
    "<<vars.a == 1>>",
    "<<a and vars.b>>",
    "<<vars.a > 0 or a.x == 'x'>>",
    "<<not vars.c>>",
    "<<a | length > 1>>",
    "<<vars.missing>>",
]
OPERATORS = [
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "greater_than",
    "less_than",
    "is_empty",
    "is_not_empty",
]
RECORDED_URL = "https://crm.example.com/lookup?a=1"


def _variables(draw: Any) -> dict[str, Any]:
    keys = st.sampled_from(["a", "b", "c", "c.d", "c.e", "n.m.o"])
    variables = draw(st.dictionaries(keys, VALUES, min_size=1, max_size=3))
    if "c" in variables and any(key.startswith("c.") for key in variables):
        del variables["c"]  # `c` and `c.d` together is a load-time error
    return variables


def _branches(draw: Any, anywhere: Any, following: str) -> list[dict[str, Any]]:
    branches = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            branches.append(
                {"expression": draw(st.sampled_from(EXPRESSIONS)), "next": draw(anywhere)}
            )
        else:
            rows = []
            for _ in range(draw(st.integers(1, 2))):
                row = {
                    "property": draw(st.sampled_from(TEMPLATES)),
                    "operator": draw(st.sampled_from(OPERATORS)),
                }
                if row["operator"] not in ("is_empty", "is_not_empty"):
                    row["value"] = draw(ROW_VALUES)
                rows.append(row)
            branches.append({"conditions": rows, "next": draw(anywhere)})
    branches[draw(st.integers(0, len(branches) - 1))]["next"] = following
    return branches


#: How a value of each field kind is drawn (edge kinds are drawn from the flow's step ids).
FIELD_VALUES: dict[str, Any] = {
    "template": lambda draw, spec: draw(st.sampled_from(TEMPLATES)),
    "endpoint": lambda draw, spec: "https://crm.example.com/lookup?a=<<vars.a>>",
    "headers": lambda draw, spec: {"Authorization": "Bearer <<secrets.token>>"},
    "fields": lambda draw, spec: _variables(draw),
}


def _value(draw: Any, kind: StepKind, name: str, spec: Field) -> Any:
    if spec.examples:
        return draw(st.sampled_from(spec.examples))
    make = FIELD_VALUES.get(spec.kind)
    assert make is not None, f"{kind.name}.{name}: a {spec.kind} field needs Field.examples"
    return make(draw, spec)


def _edge(draw: Any, spec: Field, target: str, anywhere: Any) -> Any:
    if spec.kind == "branches":
        return _branches(draw, anywhere, target)
    if spec.kind == "options":
        keys = draw(st.lists(st.sampled_from("0123456789*#"), min_size=1, max_size=3, unique=True))
        return {key: target if index == 0 else draw(anywhere) for index, key in enumerate(keys)}
    return target


def _step(draw: Any, kind: StepKind, following: str | None, ids: list[str]) -> dict[str, Any]:
    """A step of any registered kind: its required fields (and optional ones that give
    examples) drawn by field kind; every edge set, ``following`` on its way on (``next``, or
    its first edge) so that the chain reaches every step."""
    anywhere = st.sampled_from(ids)
    step: dict[str, Any] = {"type": kind.name, **kind.sample}
    for name, spec in kind.fields.items():
        if name in step or spec.is_edge:
            continue
        if spec.required or (spec.examples and draw(st.booleans())):
            step[name] = _value(draw, kind, name, spec)
    edges = kind.edge_fields
    onward = "next" if "next" in edges else edges[0] if edges else None
    for name in edges:
        target = following if name == onward else draw(anywhere)
        if target is not None:
            step[name] = _edge(draw, kind.fields[name], target, anywhere)
        elif kind.fields[name].required:
            step[name] = _edge(draw, kind.fields[name], ids[0], anywhere)
    return step


def _ends_the_run(kind: StepKind) -> bool:
    return not kind.edge_fields


def _loadable(document: dict[str, Any]) -> bool:
    """Whether the check accepts the document (it refuses a loop with no way out: no step in
    it takes input or can end the run, and no edge leaves it)."""
    return flowlang.check_flow_text(json.dumps(document))[0] is not None


def flows() -> st.SearchStrategy[dict[str, Any]]:
    """Flows of steps of every registered kind, all on one chain (so every step is reachable);
    branches, options, failure and no-input routes may go anywhere, loops included (those with
    a way out: the check refuses the others)."""
    return _flows().filter(_loadable)


@st.composite
def _flows(draw: Any) -> dict[str, Any]:
    """:func:`flows`, before the check."""
    count = draw(st.integers(1, 7))
    ids = [f"s{index}" for index in range(count)]
    continuing = sorted(name for name, kind in STEP_KINDS.items() if not _ends_the_run(kind))
    steps = {}
    for index, step_id in enumerate(ids):
        last = index == count - 1
        kind = STEP_KINDS[draw(st.sampled_from(sorted(STEP_KINDS) if last else continuing))]
        following = None if last else ids[index + 1]
        if following is None and kind.fields.get("next", Field("step")).required:
            following = ids[0]
        steps[step_id] = _step(draw, kind, following, ids)
    return {"flow": "generated", "start": "s0", "steps": steps}


contexts = st.fixed_dictionaries(
    {"a": json_values},
    optional={"vars": st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3)},
)


def _outcome(result: flowlang.RunResult) -> dict[str, Any]:
    trace = [
        {key: value for key, value in entry.items() if key != "duration_ms"}
        for entry in result.trace
    ]
    return {
        "status": result.status,
        "error": result.error,
        "awaiting": result.awaiting,
        "instructions": result.instructions,
        "trace": trace,
        "state": _same_run(result.state),
        "variables": result.variables,
    }


def _same_run(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A state without its random run id and its time (checked to be there)."""
    if state is None:
        return None
    assert isinstance(state["run_id"], str) and isinstance(state["suspended_at"], int)
    return {key: value for key, value in state.items() if key not in ("run_id", "suspended_at")}


#: Instants the generated runs happen at (one clock for both loops): a Monday morning in
#: Europe, a Sunday night, Christmas Day.
INSTANTS = [
    datetime(2026, 12, 7, 9, 30, tzinfo=UTC),
    datetime(2026, 12, 6, 2, 0, tzinfo=UTC),
    datetime(2026, 12, 25, 12, 0, tzinfo=UTC),
]


def _run_both(
    flow: flowlang.CompiledFlow,
    context: dict[str, Any],
    digits: list[str | None],
    now: datetime = INSTANTS[0],
) -> list[Any]:
    async def run(backend: str) -> list[dict[str, Any]]:
        recorded = {("GET", RECORDED_URL): RecordedResponse(200, {}, {"tier": "gold"})}
        settings = flowlang.RuntimeSettings(max_steps=40, max_same_step=4)
        outcomes = []
        async with flowlang.Runtime(
            http=RecordedHttp(recorded),
            settings=settings,
            secrets=flowlang.MappingSecrets({"token": "x"}),  # "x" is masked wherever it shows
            backend=backend,
            clock=lambda: now,
        ) as runtime:
            try:
                result = await runtime.start(flow, copy.deepcopy(context))
            except ValueError as error:  # data a state cannot carry (an integer beyond 64 bits)
                return [{"refused": str(error)}]
            outcomes.append(_outcome(result))
            for entered in digits:
                if result.status != "waiting_for_input" or result.state is None:
                    break
                state = json.loads(json.dumps(result.state))  # as if stored and read back
                result = await runtime.resume(flow, state, entered)
                outcomes.append(_outcome(result))
        return outcomes

    return [asyncio.run(run("cython")), asyncio.run(run("python"))]


def _agree(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_agree, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_agree(left[k], right[k]) for k in left)
    return same(left, right)


@pytest.mark.parametrize("name", list(STEP_KINDS))
@settings(max_examples=25)
@given(data=st.data())
def test_every_registered_kind_is_drawn_into_loadable_flows(name: str, data: Any) -> None:
    """The generated flows reach every kind in the registry: each draws valid steps."""
    kind = STEP_KINDS[name]
    following = None if _ends_the_run(kind) else "s1"
    ids = ["s0", "s1"] if following else ["s0"]
    steps = {"s0": data.draw(st.composite(lambda draw: _step(draw, kind, following, ids))())}
    if following:
        steps["s1"] = {"type": "hangup"}
    flow = flowlang.load_flow_text(json.dumps({"flow": "f", "start": "s0", "steps": steps}))
    assert flow.steps["s0"].kind is kind


@needs_cython
@settings(max_examples=MANY)
@example(  # a list value: rendered item by item, so it may read vars
    {
        "flow": "f",
        "start": "s0",
        "steps": {"s0": {"type": "set_variables", "variables": {"a": [1]}}},
    },
    {"a": None},
    [],
    INSTANTS[0],
)
@given(
    flows(),
    contexts,
    st.lists(st.sampled_from(["12", "1#", "", None, "x", "12345", "1", "*", "9"]), max_size=3),
    st.sampled_from(INSTANTS),
)
def test_both_loops_run_generated_flows_alike(
    document: dict[str, Any], context: dict[str, Any], digits: list[str | None], now: datetime
) -> None:
    flow = flowlang.load_flow_text(json.dumps(document))
    compiled, python = _run_both(flow, context, digits, now)
    assert _agree(compiled, python), (compiled, python)


@needs_cython
def test_both_loops_stop_at_the_same_guard() -> None:
    looping = {
        "flow": "loop",
        "start": "a",
        "steps": {
            "a": {"type": "set_variables", "variables": {"a": 1}, "next": "b"},
            "b": {
                "type": "condition_splitter",
                "branches": [{"expression": "<<vars.never>>", "next": "c"}],
                "otherwise": "a",
            },
            "c": {"type": "hangup"},  # a way out the run never takes (check needs one)
        },
    }
    for document in (looping,):
        flow = flowlang.load_flow_text(json.dumps(document))
        compiled, python = _run_both(flow, {"a": 1}, [])
        assert compiled == python
        assert compiled[0]["status"] == "failed"
        assert "more than 40 steps" in compiled[0]["error"]


# --- the compiled helpers the loop rests on -------------------------------------------------

TREE_KEYS = st.sampled_from(["a", "b", "c.d", "c.e", "f.g.h", "1", "x y"])


@needs_cython
@settings(max_examples=MANY)
@given(st.dictionaries(TREE_KEYS, VALUES, min_size=1, max_size=5), contexts)
def test_field_tree_builders_agree(entries: dict[str, Any], context: dict[str, Any]) -> None:
    if "c.d" in entries or "c.e" in entries:
        entries.pop("c", None)
    document = {
        "flow": "tree",
        "start": "s",
        "steps": {"s": {"type": "set_variables", "variables": entries}},
    }
    tree = flowlang.load_flow_text(json.dumps(document)).steps["s"].fields["variables"]
    scope = {"vars": context.get("vars", {}), "a": context["a"]}
    compiled, python = tree.build, generated_build(tree)
    assert type(compiled).__name__ == "TreeBuilder"
    first, second = compiled(scope), python(scope)
    assert _agree(first, second)
    assert list(first) == list(second)  # keys in document order
    again = compiled(scope)
    for key, value in entries.items():  # literal lists and maps are fresh on every call
        if isinstance(value, (list, dict)) and "." not in key:
            assert again[key] == value and again[key] is not first[key]


@needs_cython
@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"call": {"n": 1}},
        {"vars": {"a": 1}, "x": 2},
        {1: "one", "b": 2},
        {"vars": None},
        {"vars": [1]},
        {"input": {}},
        {"a": 1, "steps": {}},
        {"secrets": {"k": "v"}},
        {"contact": {"id": 2**64}},
        {"contact": {"id": -(2**63) - 1, "ok": 2**64 - 1}},
        {"contact": {"name": "a\ud800"}},
        {"contact": {"\udfff": 1}},
        {"contact": {"notes": "x" * 600}},
        {"contact": [[[[[1]]]]]},
        {"vars": {"a": [[[[1]]]]}},
        {"call": {"n": float("nan")}, "when": object()},
    ],
)
def test_new_scope_twins_agree(context: Any) -> None:
    compiled = compiled_helper("new_scope", new_scope, "cython")
    assert compiled is not new_scope
    limits = (64, 500, 4)  # value size, state size, depth: small, so that some are refused

    def outcome(make: Any) -> Any:
        try:
            scope, size = make(copy.deepcopy(context), limits)
            return to_json(scope), size
        except ValueError as error:
            return f"ValueError: {error}"

    assert outcome(compiled) == outcome(new_scope)
    if isinstance(context, dict) and isinstance(context.get("vars"), dict):
        scope, _ = compiled(context, (64, 1000, 10))
        assert scope["vars"] == context["vars"] and scope["vars"] is not context["vars"]


class _Broken(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("broken")


odd_values = st.recursive(
    st.one_of(
        json_values,
        st.integers(),
        st.floats(),
        st.text(max_size=4),
        st.sampled_from([object(), b"x", (1, 2), 2**64, -(2**63) - 1, "\ud800", _Broken()]),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers() | st.none(), children, max_size=3)
    ),
    max_leaves=12,
)


@needs_cython
@settings(max_examples=MANY)
@given(odd_values, st.integers(0, 6), st.integers(-5, 200), st.booleans())
def test_measure_twins_agree(value: Any, depth: int, budget: int, strict: bool) -> None:
    compiled = compiled_helper("measure_data", measure, "cython")
    assert compiled is not measure
    assert compiled(value, depth, budget, strict) == measure(value, depth, budget, strict)


@needs_cython
@given(
    st.lists(
        st.tuples(
            st.text(max_size=3),
            st.sampled_from(["say", "set_variables"]),
            st.text(max_size=3),
            st.floats(0, 10),
            st.none() | st.dictionaries(st.text(max_size=2), json_values, max_size=2),
        ),
        max_size=5,
    )
)
def test_trace_entry_twins_agree(rows: list[Any]) -> None:
    compiled = compiled_helper("trace_entries", trace_entries, "cython")
    assert compiled is not trace_entries
    built, expected = compiled(rows), trace_entries(rows)
    assert _agree(built, expected)
    assert all(entry["detail"] is row[4] for entry, row in zip(built, rows, strict=True))


@needs_cython
@pytest.mark.parametrize("backend", ["cython", "python"])
def test_set_variables_merges_maps_and_renders_before_writing(backend: str) -> None:
    document = {
        "flow": "merge",
        "start": "first",
        "steps": {
            "first": {  # flat, reads no vars: the compiled loop writes as it renders
                "type": "set_variables",
                "variables": {"c": "<<m>>", "n": "<<a>>"},
                "next": "second",
            },
            "second": {  # reads vars: every value is rendered before any is written
                "type": "set_variables",
                "variables": {"n": 5, "old": "<<vars.n>>", "c.y": "<<vars.c.x>>"},
                "next": "done",
            },
            "done": {"type": "say", "text": "<<vars.c>> <<vars.old>>"},
        },
    }
    flow = flowlang.load_flow_text(json.dumps(document))
    seeded = {"c": {"x": 1}}

    async def main() -> flowlang.RunResult:
        async with flowlang.Runtime(http=RecordedHttp({}), backend=backend) as runtime:
            return await runtime.start(flow, {"a": 7, "m": {"k": [2]}, "vars": seeded})

    result = asyncio.run(main())
    assert result.status == "completed"
    assert json.loads(result.instructions[0]["text"].split(" ")[0]) == {"x": 1, "k": [2], "y": 1}
    assert result.instructions[0]["text"].endswith(" 7")
    assert seeded == {"c": {"x": 1}}  # the context's maps are never written to


@needs_cython
@pytest.mark.parametrize(
    "variables",
    [
        {"a": "<<contact.big>>", "b": "<<contact.long>><<contact.long>>"},  # refused, then error
        {"a": "<<contact.big>>", "b": "<<contact.long>>"},  # refused
        {"a": "<<contact.long>>", "b": "<<contact.long>>", "c": "<<contact.long>>"},  # state full
        {"a": {"b": "<<contact.big>>"}},  # nested: built first, then refused
        {"a": "<<[vars.a, vars.a]>>"},  # reads vars: built first
    ],
)
def test_both_loops_refuse_values_alike(variables: dict[str, Any]) -> None:
    document = {
        "flow": "refuse",
        "start": "s",
        "steps": {"s": {"type": "set_variables", "variables": variables}},
    }
    flow = flowlang.load_flow_text(json.dumps(document))
    context = {"contact": {"big": list(range(8_000)), "long": "x" * 60_000}, "vars": {"a": [1]}}

    async def run(backend: str) -> dict[str, Any]:
        settings = flowlang.RuntimeSettings(max_state_size=150_000)
        async with flowlang.Runtime(
            http=RecordedHttp({}), settings=settings, backend=backend
        ) as runtime:
            return _outcome(await runtime.start(flow, copy.deepcopy(context)))

    compiled, python = asyncio.run(run("cython")), asyncio.run(run("python"))
    assert compiled == python
    assert compiled["status"] in ("failed", "completed")
