"""Condition coverage (flowlang.testing.conditions): every row of every condition_splitter
branch, and every branch written as one expression, seen true and seen false over runs; through
the runtime's ``plan_wrapper``, on the Python loop only, without changing any run."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_loop_twins import INSTANTS, RECORDED_URL, _outcome, contexts, flows

import flowlang
from flowlang.expr.backends import AVAILABLE, resolve_backend
from flowlang.graph.model import flow_graph
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.plan import plan_flow
from flowlang.runtime.runner import run_sync
from flowlang.testing.conditions import (
    ConditionCoverage,
    MissingCondition,
    WorkflowConditionCoverage,
)

#: Hand-counted: three branches of a splitter (two rows, an expression, one row) and a second
#: splitter reached only through ``otherwise``.
ROUTING = """\
flow: routing
start: route
steps:
  route:
    type: condition_splitter
    branches:
      - conditions:
          - {property: "<<vars.tier>>", operator: equals, value: gold}
          - {property: "<<vars.age>>", operator: greater_than, value: 30}
        next: gold
      - expression: <<vars.age < 18>>
        next: young
      - conditions:
          - {property: "<<vars.name>>", operator: is_not_empty}
        next: named
    otherwise: again
  again:
    type: condition_splitter
    branches:
      - conditions:
          - {property: "<<vars.tier>>", operator: starts_with, value: s}
        next: named
    otherwise: done
  gold: {type: say, text: gold, next: done}
  young: {type: say, text: young, next: done}
  named: {type: say, text: named, next: done}
  done: {type: hangup}
"""

R0 = ("route", 0, 0, "<<vars.tier>> equals gold")
R1 = ("route", 0, 1, "<<vars.age>> greater_than 30")
EXPR = ("route", 1, None, "<<vars.age < 18>>")
NAME = ("route", 2, 0, "<<vars.name>> is_not_empty")
AGAIN = ("again", 0, 0, "<<vars.tier>> starts_with s")


def _missing(*rows: tuple[tuple[Any, ...], str]) -> list[MissingCondition]:
    return [MissingCondition(*where, missing) for where, missing in rows]  # type: ignore[arg-type]


def _covered(flow: flowlang.CompiledFlow, *variables: dict[str, Any]) -> ConditionCoverage:
    coverage = ConditionCoverage(flow_graph(flow))
    for seeded in variables:
        run_sync(flow, {"vars": seeded}, **coverage.runtime_options())
    return coverage


@pytest.fixture(scope="module")
def routing() -> flowlang.CompiledFlow:
    return flowlang.load_flow_text(ROUTING)


def test_no_run_misses_every_outcome(routing: flowlang.CompiledFlow) -> None:
    coverage = ConditionCoverage(flow_graph(routing))
    assert coverage.ratio == (0, 10)
    assert [(item.step, item.branch, item.row) for item in coverage.missing()] == [
        (step, branch, row)
        for step, branch, row, _ in (R0, R1, EXPR, NAME, AGAIN)
        for _ in ("true", "false")
    ]


def test_a_visit_evaluates_every_row_of_every_branch(routing: flowlang.CompiledFlow) -> None:
    # Branch 0 holds, so the run never tests branch 1 or 2, nor the second splitter: coverage
    # still sees every row of ``route``; ``again`` was not visited.
    coverage = _covered(routing, {"tier": "gold", "age": 40, "name": "Ann"})
    assert coverage.missing() == _missing(
        (R0, "false"),
        (R1, "false"),
        (EXPR, "true"),
        (NAME, "false"),
        (AGAIN, "true"),
        (AGAIN, "false"),
    )
    assert coverage.ratio == (4, 10)


def test_outcomes_add_up_over_runs(routing: flowlang.CompiledFlow) -> None:
    coverage = _covered(
        routing,
        {"tier": "gold", "age": 40, "name": "Ann"},  # R0 T, R1 T, EXPR F, NAME T
        {"tier": "silver", "age": 10, "name": ""},  # R0 F, R1 F, EXPR T, NAME F
        {"tier": "bronze", "age": 20},  # all false: on to ``again``, AGAIN F
    )
    assert coverage.missing() == _missing((AGAIN, "true"))
    assert coverage.ratio == (9, 10)
    counts = {(c.step, c.branch, c.row): (c.true, c.false, c.raised) for c in coverage.conditions}
    assert counts == {
        ("route", 0, 0): (1, 2, 0),
        ("route", 0, 1): (1, 2, 0),
        ("route", 1, None): (1, 2, 0),
        ("route", 2, 0): (1, 2, 0),
        ("again", 0, 0): (0, 1, 0),
    }
    more = _covered(routing, {"tier": "silver", "age": 20})
    assert more.missing() == _missing(
        (R0, "true"), (R1, "true"), (EXPR, "true"), (NAME, "true"), (AGAIN, "false")
    )


def test_json_and_table_name_what_is_missing(routing: flowlang.CompiledFlow) -> None:
    coverage = _covered(routing, {"tier": "gold", "age": 40, "name": "Ann"})
    report = coverage.to_json()
    assert json.loads(json.dumps(report)) == report
    assert (report["seen"], report["possible"], report["percent"]) == (4, 10, 40.0)
    assert report["missing"][0] == {
        "step": "route",
        "branch": 0,
        "row": 0,
        "text": "<<vars.tier>> equals gold",
        "missing": "false",
    }
    assert [c["true"] for c in report["conditions"]] == [1, 1, 0, 1, 0]
    lines = coverage.table().splitlines()
    assert lines[0] == "conditions 4/10 outcomes (40.0%)"
    assert lines[1:] == [
        "  route branches[0] row 0: <<vars.tier>> equals gold  never false",
        "  route branches[0] row 1: <<vars.age>> greater_than 30  never false",
        "  route branches[1] expression: <<vars.age < 18>>  never true",
        "  route branches[2] row 0: <<vars.name>> is_not_empty  never false",
        "  again branches[0] row 0: <<vars.tier>> starts_with s  never true nor false",
    ]


def test_a_flow_without_conditions_is_fully_covered() -> None:
    flow = flowlang.load_flow_text("flow: f\nstart: a\nsteps:\n  a: {type: hangup}\n")
    coverage = _covered(flow, {})
    assert (coverage.ratio, coverage.missing()) == ((0, 0), [])
    assert coverage.to_json()["percent"] == 100.0


def test_runs_of_another_flow_are_not_counted(routing: flowlang.CompiledFlow) -> None:
    coverage = ConditionCoverage(flow_graph(routing))
    other = flowlang.load_flow_text(ROUTING.replace("flow: routing", "flow: other"))
    run_sync(other, {"vars": {"tier": "gold", "age": 40}}, **coverage.runtime_options())
    assert coverage.ratio == (0, 10)
    # the same flow loaded again (another object, the same document) is counted
    again = flowlang.load_flow_text(ROUTING)
    run_sync(again, {"vars": {"tier": "gold", "age": 40}}, **coverage.runtime_options())
    assert coverage.ratio == (4, 10)  # R0 T, R1 T, EXPR F, NAME F
    # another version of the flow (a row edited) is not counted against this one
    edited = flowlang.load_flow_text(ROUTING.replace("value: gold", "value: platinum"))
    run_sync(edited, {"vars": {"tier": "silver", "age": 20}}, **coverage.runtime_options())
    assert coverage.ratio == (5, 10)  # only ``again`` (unchanged) counted: AGAIN T


def test_a_wrapped_plan_is_a_new_plan(routing: flowlang.CompiledFlow) -> None:
    plan = plan_flow(routing.steps)
    before = dict(plan)
    wrapped = ConditionCoverage(flow_graph(routing)).wrap_plan(routing, plan)
    assert plan == before
    assert [step for step in wrapped if wrapped[step] is not plan[step]] == ["route", "again"]


# --- rows that raise: neither true nor false, the run unchanged --------------------------------


def _boom(value: Any) -> Any:
    raise RuntimeError("the filter failed")


def _both(flow: flowlang.CompiledFlow, seeded: dict[str, Any]) -> tuple[Any, ConditionCoverage]:
    """The run without and with the wrapper (asserted alike), and the coverage."""
    coverage = ConditionCoverage(flow_graph(flow))
    plain = _outcome(run_sync(flow, {"vars": seeded}, backend="python"))
    observed = _outcome(run_sync(flow, {"vars": seeded}, **coverage.runtime_options()))
    assert observed == plain
    return plain, coverage


def _counts(coverage: ConditionCoverage | WorkflowConditionCoverage) -> list[tuple[int, int, int]]:
    return [(count.true, count.false, count.raised) for count in coverage.conditions]


def test_strict_mode_rows_that_raise_are_noted_raised() -> None:
    flow = flowlang.load_flow_text(ROUTING, engine=flowlang.Engine(strict=True))
    # Branch 0 holds: the run never reads vars.name, which is undefined; coverage does.
    plain, coverage = _both(flow, {"tier": "gold", "age": 40})
    assert plain["status"] == "ended"
    assert _counts(coverage) == [(1, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)]
    assert (
        "  route branches[2] row 0: <<vars.name>> is_not_empty  never true nor false, raised 1x"
        in coverage.table().splitlines()
    )
    # Row 0 is false, so the run skips row 1 and fails at the expression (vars.age undefined):
    # the same failure with the wrapper; coverage saw R0 false and three raised.
    plain, coverage = _both(flow, {"tier": "silver"})
    assert plain["status"] == "failed" and "age" in plain["error"]
    assert _counts(coverage) == [(0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 0)]
    assert coverage.ratio == (1, 10)


def test_a_failing_filter_is_noted_raised() -> None:
    text = ROUTING.replace('"<<vars.name>>"', '"<<vars.name | boom>>"')
    flow = flowlang.load_flow_text(text, engine=flowlang.Engine(filters={"boom": _boom}))
    plain, coverage = _both(flow, {"tier": "gold", "age": 40, "name": "Ann"})
    assert plain["status"] == "ended"  # branch 0 held: the failing row was never run
    assert _counts(coverage)[3] == (0, 0, 1)
    plain, coverage = _both(flow, {"tier": "x", "age": 20, "name": "Ann"})
    assert plain["status"] == "failed" and "boom" in plain["error"]
    assert _counts(coverage) == [(0, 1, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)]


# --- the seam: Runtime(plan_wrapper=...) on the Python loop only -------------------------------


@pytest.mark.skipif("cython" not in AVAILABLE, reason="the cython backend is not available")
def test_the_compiled_loop_refuses_a_plan_wrapper(routing: flowlang.CompiledFlow) -> None:
    coverage = ConditionCoverage(flow_graph(routing))
    options = {**coverage.runtime_options(), "backend": "cython"}
    with pytest.raises(ValueError, match=r"Python loop only.*backend='python'"):
        flowlang.Runtime(**options)
    if resolve_backend(None) == "cython":  # the process default: refused as well
        with pytest.raises(ValueError, match="Python loop only"):
            flowlang.Runtime(plan_wrapper=coverage.wrap_plan)


def test_runtime_options_ask_for_the_python_loop(routing: flowlang.CompiledFlow) -> None:
    coverage = ConditionCoverage(flow_graph(routing))
    runtime = flowlang.Runtime(**coverage.runtime_options())
    assert runtime.backend == "python"
    asyncio.run(runtime.aclose())


def test_a_wrapped_plan_stays_with_its_runtime(routing: flowlang.CompiledFlow) -> None:
    # The flow is shared by every runtime: a runtime without the wrapper runs the plain plan.
    coverage = ConditionCoverage(flow_graph(routing))
    run_sync(routing, {"vars": {"tier": "gold"}}, **coverage.runtime_options())
    seen = coverage.ratio
    run_sync(routing, {"vars": {"tier": "silver"}}, backend="python")
    assert coverage.ratio == seen


# --- the wrapper changes nothing: generated flows, random contexts ------------------------------


def _runs(
    flow: flowlang.CompiledFlow,
    context: dict[str, Any],
    digits: list[str | None],
    options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One call's legs (start, then a resume per digits), as the loop twins' test compares."""

    async def run() -> list[dict[str, Any]]:
        recorded = {("GET", RECORDED_URL): RecordedResponse(200, {}, {"tier": "gold"})}
        outcomes = []
        async with flowlang.Runtime(
            http=RecordedHttp(recorded),
            settings=flowlang.RuntimeSettings(max_steps=40, max_same_step=4),
            secrets=flowlang.MappingSecrets({"token": "x"}),
            clock=lambda: INSTANTS[0],
            **options,
        ) as runtime:
            try:
                result = await runtime.start(flow, copy.deepcopy(context))
            except ValueError as error:
                return [{"refused": str(error)}]
            outcomes.append(_outcome(result))
            for entered in digits:
                if result.status != "waiting_for_input" or result.state is None:
                    break
                state = json.loads(json.dumps(result.state))
                result = await runtime.resume(flow, state, entered)
                outcomes.append(_outcome(result))
        return outcomes

    return asyncio.run(run())


@settings(max_examples=200)
@given(
    flows(),
    contexts,
    st.lists(st.sampled_from(["12", "1#", "", None, "x", "1", "9"]), max_size=3),
)
def test_the_wrapper_does_not_change_a_run(
    document: dict[str, Any], context: dict[str, Any], digits: list[str | None]
) -> None:
    flow = flowlang.load_flow_text(json.dumps(document))
    coverage = ConditionCoverage(flow_graph(flow))
    plain = _runs(flow, context, digits, {"backend": "python"})
    observed = _runs(flow, context, digits, coverage.runtime_options())
    assert repr(observed) == repr(plain)  # repr: NaN in a trace equals itself
    seen, possible = coverage.ratio
    assert 0 <= seen <= possible == 2 * len(coverage.conditions)
    for count in coverage.conditions:  # every condition of a splitter, at each visit
        visits = sum(entry["step"] == count.step for leg in plain for entry in leg.get("trace", []))
        assert count.true + count.false + count.raised == visits
    for step_id in {count.step for count in coverage.conditions}:
        _agrees_with_the_step(step_id, coverage, plain)


def _agrees_with_the_step(
    step_id: str, coverage: ConditionCoverage, legs: list[dict[str, Any]]
) -> None:
    """A splitter run once, no condition raising: the branch it took is the first whose
    conditions coverage saw all true (``otherwise`` when none): both evaluated alike."""
    entries = [entry for leg in legs for entry in leg.get("trace", []) if entry["step"] == step_id]
    counts = [count for count in coverage.conditions if count.step == step_id]
    if len(entries) != 1 or any(count.raised for count in counts):
        return
    branches = sorted({count.branch for count in counts})
    holding = [b for b in branches if all(c.true for c in counts if c.branch == b)]
    assert entries[0]["outcome"] == (f"branch {holding[0]}" if holding else "otherwise")


# --- hostile: huge, deep, control characters ---------------------------------------------------


def _splitter(branches: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "flow": "hostile",
            "start": "route",
            "steps": {
                "route": {"type": "condition_splitter", "branches": branches, "otherwise": "end"},
                "end": {"type": "hangup"},
            },
        }
    )


def test_ten_thousand_rows_are_each_counted_at_each_visit() -> None:
    # 100 branches of 100 rows: row r of every branch compares vars.n with r (true for r < n).
    branches = [
        {
            "conditions": [
                {"property": "<<vars.n>>", "operator": "greater_than", "value": row}
                for row in range(100)
            ],
            "next": "end",
        }
        for _ in range(100)
    ]
    flow = flowlang.load_flow_text(_splitter(branches))
    coverage = _covered(flow, {"n": 50})
    assert len(coverage.conditions) == 10_000
    assert coverage.ratio == (10_000, 20_000)
    assert [count.true for count in coverage.conditions[:100]] == [1] * 50 + [0] * 50
    assert len(coverage.missing()) == 10_000
    both_ends = _covered(flow, {"n": 0}, {"n": 100})
    assert both_ends.ratio == (20_000, 20_000) and both_ends.missing() == []
    assert len(coverage.table().splitlines()) == 10_001


def test_a_deep_expression_is_evaluated_or_noted_raised() -> None:
    depth = 95
    expression = "<<" + "(" * depth + "vars.a == 1" + ")" * depth + ">>"
    nots = "<<" + "not " * 90 + "vars.a>>"
    engine = flowlang.Engine(limits=flowlang.Limits(max_depth=100))
    flow = flowlang.load_flow_text(
        _splitter([{"expression": expression, "next": "end"}, {"expression": nots, "next": "end"}]),
        engine=engine,
    )
    plain, coverage = _both(flow, {"a": 1})
    assert plain["trace"][0]["outcome"] == "branch 0"
    assert _counts(coverage) == [(1, 0, 0), (1, 0, 0)]  # not × 90 of 1: true


def test_condition_text_is_shown_as_text() -> None:
    hostile = "\x1b[31mred\x07\u202etxt\n" + "long " * 40
    flow = flowlang.load_flow_text(
        _splitter(
            [
                {
                    "conditions": [
                        {"property": "<<vars.a>>", "operator": "equals", "value": hostile}
                    ],
                    "next": "end",
                }
            ]
        )
    )
    coverage = _covered(flow, {"a": "x"})
    assert coverage.conditions[0].text == f"<<vars.a>> equals {hostile}"  # whole in JSON
    assert coverage.to_json()["conditions"][0]["text"] == coverage.conditions[0].text
    line = coverage.table().splitlines()[1]
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\\x1b[31mred\\x07\\u202etxt\\n" in line
    assert line.endswith("…  never true") and len(line) < 120


# --- workflows: their conditions are one branch, counted per event ------------------------------

VIP_UPDATED = Path(__file__).parent.parent / "examples" / "workflows" / "vip_contact_updated.yaml"


def _event(**properties: Any) -> dict[str, Any]:
    return {"id": "e1", "type": "contact.updated", "properties": properties}


def test_a_workflows_rows_are_each_counted_per_event() -> None:
    workflow = flowlang.load_workflow(VIP_UPDATED)
    coverage = WorkflowConditionCoverage(workflow)
    assert coverage.ratio == (0, 4)
    # The first row fails: the dispatcher's match stops there; coverage reads the second too.
    event = _event(tags=["Lead"], changes={"tags": ["Lead"]})
    assert not workflow.matches(event)
    assert coverage.add(event)
    assert _counts(coverage) == [(0, 1, 0), (1, 0, 0)]
    assert not coverage.add({"id": "e2", "type": "call.ended", "properties": {}})  # not its trigger
    assert coverage.add(_event(tags=["Vip"], changes={}))
    assert _counts(coverage) == [(1, 1, 0), (1, 1, 0)]
    assert coverage.missing() == []
    assert coverage.to_json()["workflow"] == "vip-contact-updated"
    assert coverage.table().splitlines() == ["conditions 4/4 outcomes (100.0%)"]


def test_a_workflow_expression_and_a_row_that_raises() -> None:
    text = (
        "workflow: w\ntrigger: contact.updated\n"
        "expression: <<event.properties.score | boom > 3>>\n"
        "actions:\n  - {name: a, type: slack_notification, token: t, channel: c, text: x}\n"
    )
    engine = flowlang.Engine(filters={"boom": lambda value: value if value else _boom(value)})
    workflow = flowlang.load_workflow_text(text, engine=engine)
    coverage = WorkflowConditionCoverage(workflow)
    for score in (5, 1, None):
        coverage.add(_event(score=score))
    assert _counts(coverage) == [(1, 1, 1)]
    assert coverage.table().splitlines()[1:] == [
        "  expression: <<event.properties.score | boom > 3>>  covered, raised 1x"
    ]


@settings(max_examples=100)
@given(
    st.fixed_dictionaries(
        {"tags": st.lists(st.sampled_from(["Vip", "Lead", "vip"]), max_size=2)},
        optional={
            "changes": st.fixed_dictionaries(
                {}, optional={"tags": st.sampled_from([[], ["Vip"], "", None])}
            )
        },
    )
)
def test_coverage_agrees_with_the_dispatchers_match(properties: dict[str, Any]) -> None:
    workflow = flowlang.load_workflow(VIP_UPDATED)
    coverage = WorkflowConditionCoverage(workflow)
    event = _event(**properties)
    coverage.add(event)
    assert workflow.matches(event) == all(count.true for count in coverage.conditions)


def test_conditions_cannot_read_secrets() -> None:
    # What lets the wrapper evaluate rows with no ``secrets`` root: the run's redactor (which
    # masks every secret looked up) is never touched by coverage.
    text = ROUTING.replace('"<<vars.name>>"', '"<<secrets.token>>"').replace(
        "<<vars.age < 18>>", "<<secrets.token == 'x'>>"
    )
    with pytest.raises(flowlang.FlowDocumentError) as caught:
        flowlang.load_flow_text(text)
    assert str(caught.value).count("secrets may only be used in") == 2
