"""The runtime: every step type and outcome, guards, suspend and resume (also in another process)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowlang
from flowlang import Runtime, RuntimeSettings
from flowlang.kinds.collect_input import apply_digits
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.results import describe_why
from flowlang.runtime.runner import FlowStateError

PIN_FLOW = """
flow: pin
start: ask
steps:
  ask:
    type: collect_input
    prompt: Enter your PIN for <<contact.name>>.
    min_digits: 4
    max_digits: 6
    finish_on_key: "#"
    pattern: "[0-9]+"
    next: check
    on_no_input: nothing
    on_invalid: invalid
  check:
    type: condition_splitter
    branches:
      - conditions: [{property: "<<input.ask.value>>", operator: equals, value: "1234"}]
        next: welcome
    otherwise: wrong
  welcome: {type: say, text: "Welcome <<contact.name>>, PIN <<input.ask.value>>."}
  wrong: {type: transfer, target: "queue:security"}
  nothing: {type: voicemail, mailbox: "pin-<<contact.name>>"}
  invalid: {type: hangup}
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def start(
    flow: flowlang.CompiledFlow, context: dict[str, Any] | None = None, **options: Any
) -> flowlang.RunResult:
    async with Runtime(http=RecordedHttp({}), **options) as runtime:
        return await runtime.start(flow, context or {})


def test_collect_input_suspends_and_resumes_in_a_fresh_runtime() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    first = run(start(flow, {"contact": {"name": "Ann"}}))
    assert first.status == "waiting_for_input"
    assert first.awaiting == {
        "step": "ask",
        "prompt": "Enter your PIN for Ann.",
        "max_digits": 6,
        "min_digits": 4,
        "finish_on_key": "#",
        "timeout": 5.0,
    }
    state = json.loads(json.dumps(first.state))  # plain JSON, as a host would store it

    async def resume() -> flowlang.RunResult:
        async with Runtime(http=RecordedHttp({})) as runtime:
            return await runtime.resume(flowlang.load_flow_text(PIN_FLOW), state, "1234#")

    second = run(resume())
    assert second.status == "completed"
    assert second.instructions == [
        {"action": "say", "step": "welcome", "text": "Welcome Ann, PIN 1234."}
    ]
    assert [entry["outcome"] for entry in second.trace] == ["collected", "branch 0", "said"]


@pytest.mark.parametrize(
    ("digits", "outcome", "action"),
    [
        ("1234#", "collected", "say"),
        ("9999", "collected", "transfer"),
        (None, "no input", "voicemail"),
        ("#", "no input", "voicemail"),
        ("12", "invalid", "hangup"),
        ("1234567", "invalid", "hangup"),
        ("12*4", "invalid", "hangup"),
        ("12a4", "invalid", "hangup"),
        ("١٢٣٤", "invalid", "hangup"),
        ("1" * 10_000, "invalid", "hangup"),
    ],
)
def test_collect_input_outcomes(digits: str | None, outcome: str, action: str) -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)

    async def main() -> flowlang.RunResult:
        async with Runtime(http=RecordedHttp({})) as runtime:
            first = await runtime.start(flow, {"contact": {"name": "Ann"}})
            return await runtime.resume(flow, first.state or {}, digits)

    result = run(main())
    assert result.trace[0]["outcome"] == outcome
    assert result.instructions[-1]["action"] == action


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_any_digits_from_the_host_are_handled(digits: str | None) -> None:
    step = flowlang.load_flow_text(PIN_FLOW).steps["ask"]
    outcome, value, target = apply_digits(step, digits)
    assert outcome in ("collected", "no input", "invalid")
    assert target in ("check", "nothing", "invalid")
    assert outcome != "collected" or (4 <= len(value) <= 6 and value.isdigit())


def test_resume_in_another_process() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    first = run(start(flow, {"contact": {"name": "Ann"}}))
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        import flowlang
        from flowlang.runtime.http import RecordedHttp
        flow_text, state = sys.stdin.read().split("\\n---\\n")
        async def main():
            async with flowlang.Runtime(http=RecordedHttp({})) as runtime:
                result = await runtime.resume(flowlang.load_flow_text(flow_text), json.loads(state), "1234")
            print(json.dumps(result.to_json()))
        asyncio.run(main())
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        input=PIN_FLOW + "\n---\n" + json.dumps(first.state),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(child.stdout)
    assert result["status"] == "completed"
    assert result["instructions"][0]["text"] == "Welcome Ann, PIN 1234."


def test_resume_refuses_a_state_from_another_flow_or_a_changed_flow() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    state = run(start(flow, {"contact": {"name": "Ann"}})).state
    changed = flowlang.load_flow_text(PIN_FLOW.replace("Welcome", "Hello"))

    async def resume(target: flowlang.CompiledFlow, data: Any) -> flowlang.RunResult:
        async with Runtime(http=RecordedHttp({})) as runtime:
            return await runtime.resume(target, data, "1234")

    with pytest.raises(FlowStateError, match="not that one"):
        run(resume(changed, state))
    with pytest.raises(FlowStateError, match="not a flowlang run state"):
        run(resume(flow, {"hello": 1}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scope": {"vars": [1], "contact": {}}}, "the state's vars is not a mapping"),
        ({"scope": {"input": "x"}}, "the state's input is not a mapping"),
        ({"scope": {"steps": 3}}, "the state's steps is not a mapping"),
        ({"steps_run": "many"}, "counters are not numbers"),
        ({"streak": ["ask"]}, "counters are not numbers"),
        ({"waiting_at": "check"}, "not waiting at a step that takes input"),
        ({"scope": None}, "the state has no scope"),
        ({"steps_run": 2**70}, "counters are out of range"),
        ({"streak": ["ask", -1]}, "counters are out of range"),
        ({"streak": [["ask"], 1]}, "counters are out of range"),
    ],
)
def test_resume_refuses_a_tampered_state_at_once(change: dict[str, Any], message: str) -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    state = {**run(start(flow, {"contact": {"name": "Ann"}})).state, **change}

    async def main() -> None:
        async with Runtime(http=RecordedHttp({})) as runtime:
            with pytest.raises(FlowStateError, match=message):
                runtime.resume(flow, state, "1234")  # raised before anything is awaited

    run(main())


def test_a_context_the_runtime_cannot_take_is_refused_before_anything_runs() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)

    async def main() -> None:
        async with Runtime(http=RecordedHttp({})) as runtime:
            with pytest.raises(ValueError, match="vars must be a mapping"):
                runtime.start(flow, {"vars": [1]})
            with pytest.raises(ValueError, match="may not set 'steps'"):
                runtime.start(flow, {"steps": {}})

    run(main())


def test_the_trace_is_built_when_read_and_can_be_replaced() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    result = run(start(flow, {"contact": {"name": "Ann"}}))
    assert repr(result) == "<RunResult waiting_for_input after 1 steps>"
    first = result.trace
    assert first is result.trace  # built once
    assert first == [
        {
            "step": "ask",
            "type": "collect_input",
            "outcome": "waiting for input",
            "duration_ms": first[0]["duration_ms"],
            "detail": result.awaiting,
        }
    ]
    assert isinstance(first[0]["duration_ms"], float) and first[0]["duration_ms"] >= 0
    result.trace = []
    assert result.to_json()["trace"] == []


def test_the_default_host_keeps_nothing_between_runs() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)

    async def main() -> list[flowlang.RunResult]:
        async with Runtime(http=RecordedHttp({})) as runtime:
            assert isinstance(runtime.host, flowlang.NullHost)
            results = []
            for name in ("Ann", "Bob"):
                waiting = await runtime.start(flow, {"contact": {"name": name}})
                results.append(await runtime.resume(flow, waiting.state or {}, "1234"))
            assert not hasattr(runtime.host, "instructions")
            return results

    ann, bob = run(main())
    assert [i["text"] for i in ann.instructions] == ["Welcome Ann, PIN 1234."]
    assert [i["text"] for i in bob.instructions] == ["Welcome Bob, PIN 1234."]


CONDITIONS = """
flow: conditions
start: split
steps:
  split:
    type: condition_splitter
    branches:
      - conditions: [{property: "<<v>>", operator: "{op}", value: {value}}]
        next: yes
    otherwise: no
  yes: {type: say, text: "yes"}
  no: {type: say, text: "no"}
"""


@pytest.mark.parametrize(
    ("op", "left", "value", "holds"),
    [
        ("equals", "gold", '"gold"', True),
        ("equals", "Gold", '"gold"', False),
        ("equals", 60, '"60"', True),
        ("equals", False, "false", True),
        ("not_equals", "a", '"b"', True),
        ("contains", ["Vip", "X"], '"Vip"', True),
        ("contains", "Smith", '"mit"', True),
        ("not_contains", ["Vip"], '"Gold"', True),
        ("starts_with", "+44 20", '"+44"', True),
        ("ends_with", "a@example.com", '"@example.com"', True),
        ("greater_than", 75, "60", True),
        ("greater_than", "75", "60", True),
        ("greater_than", None, "60", False),
        ("less_than", 5, "10", True),
        ("greater_or_equal", 60, "60", True),
        ("less_or_equal", 61, "60", False),
    ],
)
def test_condition_splitter_operators(op: str, left: Any, value: str, holds: bool) -> None:
    flow = flowlang.load_flow_text(CONDITIONS.replace("{op}", op).replace("{value}", value))
    result = run(start(flow, {"v": left}))
    assert result.instructions[0]["text"] == ("yes" if holds else "no")


@pytest.mark.parametrize(
    ("value", "empty"),
    [(None, True), ("", True), ([], True), ({}, True), ("x", False), (0, False), (False, False)],
)
def test_is_empty_and_is_not_empty(value: Any, empty: bool) -> None:
    text = CONDITIONS.replace(", value: {value}", "").replace('"{op}"', "is_empty")
    result = run(start(flowlang.load_flow_text(text), {"v": value}))
    assert result.instructions[0]["text"] == ("yes" if empty else "no")
    text = CONDITIONS.replace(", value: {value}", "").replace('"{op}"', "is_not_empty")
    result = run(start(flowlang.load_flow_text(text), {"v": value}))
    assert result.instructions[0]["text"] == ("no" if empty else "yes")


def test_branches_are_tried_in_order_and_the_trace_says_why() -> None:
    flow = flowlang.load_flow_text("""
flow: order
start: split
steps:
  split:
    type: condition_splitter
    branches:
      - conditions:
          - {property: "<<call.waiting_time>>", operator: greater_than, value: 60}
          - {property: "<<contact.type>>", operator: equals, value: lead}
        next: first
      - expression: <<call.waiting_time > 30>>
        next: second
    otherwise: third
  first: {type: hangup}
  second: {type: hangup}
  third: {type: hangup}
""")
    result = run(start(flow, {"call": {"waiting_time": 75}, "contact": {"type": "contact"}}))
    entry = result.trace[0]
    assert entry["outcome"] == "branch 1"
    assert result.instructions == [{"action": "hangup", "step": "second"}]
    assert entry["detail"] == {"expression": "<<call.waiting_time > 30>>", "value": True}
    assert describe_why(entry["detail"]) == "<<call.waiting_time > 30>> is true"
    first_branch_rows = run(
        start(flow, {"call": {"waiting_time": 75}, "contact": {"type": "lead"}})
    )
    assert first_branch_rows.trace[0]["detail"] == {
        "rows": [[75, "greater_than", 60], ["lead", "equals", "lead"]]
    }


def test_set_variables_nest_and_merge() -> None:
    flow = flowlang.load_flow_text("""
flow: vars
start: one
steps:
  one:
    type: set_variables
    variables: {customer.id: "<<contact.id>>", customer.tier: gold, greeting: "Hi <<contact.name>>"}
    next: two
  two:
    type: set_variables
    variables: {customer.tier: platinum, count: 2}
    next: say
  say: {type: say, text: "<<vars | json>>"}
""")
    result = run(start(flow, {"contact": {"id": 7, "name": "Ann"}, "vars": {"seed": True}}))
    assert json.loads(result.instructions[0]["text"]) == {
        "seed": True,
        "customer": {"id": 7, "tier": "platinum"},
        "greeting": "Hi Ann",
        "count": 2,
    }


def test_call_control_goes_to_the_host() -> None:
    host = flowlang.RecordingHost()
    flow = flowlang.load_flow_text("""
flow: control
start: a
steps:
  a: {type: say, text: "Hello <<contact.name>>", next: b}
  b: {type: play, url: "https://media.example.com/hold.mp3", next: c}
  c: {type: transfer, target: "agent:<<call.agent_id>>"}
""")
    result = run(start(flow, {"contact": {"name": "Ann"}, "call": {"agent_id": 42}}, host=host))
    assert result.status == "ended"
    assert (
        host.instructions
        == result.instructions
        == [
            {"action": "say", "step": "a", "text": "Hello Ann"},
            {"action": "play", "step": "b", "url": "https://media.example.com/hold.mp3"},
            {"action": "transfer", "step": "c", "target": "agent:42"},
        ]
    )


LOOP = """
flow: loop
start: a
steps:
  a: {type: set_variables, variables: {x: 1}, next: b}
  b: {type: condition_splitter, branches: [{expression: "<<vars.never>>", next: c}], otherwise: a}
  c: {type: hangup}
"""  # c: a way out the run never takes (check refuses a loop without one)


def test_guards_stop_endless_flows() -> None:
    flow = flowlang.load_flow_text(LOOP)
    result = run(start(flow, settings=RuntimeSettings(max_steps=50)))
    assert result.status == "failed"
    assert result.error == "the run took more than 50 steps"
    assert len(result.trace) == 50
    same = flowlang.load_flow_text(
        "flow: s\nstart: a\nsteps:\n  a: {type: condition_splitter, otherwise: a, "
        "branches: [{expression: '<<vars.never>>', next: b}]}\n  b: {type: hangup}\n"
    )
    result = run(start(same))
    assert result.status == "failed" and result.error == "step 'a' ran more than 10 times in a row"


def test_run_deadline() -> None:
    flow = flowlang.load_flow_text("""
flow: slow
start: call
steps:
  call: {type: http_request, endpoint: "https://crm.example.com/slow", next: done, on_failure: done, timeout: 5s}
  done: {type: hangup}
""")
    slow = RecordedHttp(
        {("GET", "https://crm.example.com/slow"): RecordedResponse(200, {}, "x", delay=3)}
    )

    async def main() -> flowlang.RunResult:
        async with Runtime(http=slow, settings=RuntimeSettings(run_deadline=0.2)) as runtime:
            return await runtime.start(flow, {})

    result = run(main())
    assert result.status == "failed"
    assert result.error == "the run took longer than 0.2s"


def test_a_failing_host_fails_the_run_with_a_recorded_error() -> None:
    class BrokenHost(flowlang.RecordingHost):
        async def say(self, text: str, *, step: str) -> None:
            raise RuntimeError("speech service down")

    flow = flowlang.load_flow_text("flow: h\nstart: a\nsteps:\n  a: {type: say, text: hi}\n")
    result = run(start(flow, host=BrokenHost()))
    assert result.status == "failed"
    assert result.error == "RuntimeError: speech service down"


def test_the_context_may_not_set_runtime_roots() -> None:
    flow = flowlang.load_flow_text("flow: h\nstart: a\nsteps:\n  a: {type: hangup}\n")
    for root in ("input", "steps", "secrets"):
        with pytest.raises(ValueError, match=f"may not set '{root}'"):
            run(start(flow, {root: {}}))


def test_state_never_holds_secret_values() -> None:
    flow = flowlang.load_flow_text("""
flow: s
start: call
steps:
  call:
    type: http_request
    endpoint: https://crm.example.com/echo?key=<<secrets.key>>
    next: ask
    on_failure: ask
  ask: {type: collect_input, next: done, on_no_input: done}
  done: {type: hangup}
""")
    echo = RecordedHttp(
        {
            ("GET", "https://crm.example.com/echo?key=hunter2"): RecordedResponse(
                200, {}, {"echo": "key=hunter2"}
            )
        }
    )

    async def main() -> flowlang.RunResult:
        async with Runtime(
            http=echo, secrets=flowlang.MappingSecrets({"key": "hunter2"})
        ) as runtime:
            return await runtime.start(flow, {})

    result = run(main())
    assert result.status == "waiting_for_input"
    dumped = json.dumps(result.to_json())
    assert "hunter2" not in dumped
    assert result.state["scope"]["steps"]["call"]["response"]["body"] == {"echo": "key=[redacted]"}


def test_run_sync_convenience() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)
    result = flowlang.run_sync(
        flow, {"contact": {"name": "Ann"}}, digits=["1234"], http=RecordedHttp({})
    )
    assert result.status == "completed"
    assert [entry["step"] for entry in result.trace] == ["ask", "ask", "check", "welcome"]


def test_compiled_flows_are_shared_by_concurrent_runs() -> None:
    flow = flowlang.load_flow_text(PIN_FLOW)

    async def main() -> list[flowlang.RunResult]:
        async with Runtime(http=RecordedHttp({})) as runtime:
            firsts = await asyncio.gather(
                *(runtime.start(flow, {"contact": {"name": f"c{n}"}}) for n in range(200))
            )
            return list(
                await asyncio.gather(
                    *(runtime.resume(flow, first.state or {}, "1234") for first in firsts)
                )
            )

    results = run(main())
    assert [r.instructions[0]["text"] for r in results] == [
        f"Welcome c{n}, PIN 1234." for n in range(200)
    ]


@given(
    st.sampled_from(
        sorted(__import__("flowlang.flow.conditions", fromlist=["OPERATORS"]).OPERATORS)
    ),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.sampled_from(["", "1", "a", "ab", " 2 "]),
        st.lists(st.sampled_from(["a", 1, None]), max_size=2),
        st.just({}),
        st.just({"a": 1}),
    ),
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "1", "a", "b"])),
)
def test_compiled_rows_agree_with_row_by_row(operator: str, left: Any, right: Any) -> None:
    unary = operator in ("is_empty", "is_not_empty")
    row = {
        "property": "<<left>>",
        "operator": operator,
        **({} if unary else {"value": "<<right>>"}),
    }
    document = {
        "flow": "c",
        "start": "s",
        "steps": {
            "s": {
                "type": "condition_splitter",
                "branches": [{"conditions": [row], "next": "y"}],
                "otherwise": "n",
            },
            "y": {"type": "hangup"},
            "n": {"type": "hangup"},
        },
    }
    branch = flowlang.load_flow_text(json.dumps(document)).steps["s"].fields["branches"][0]
    scope = {"left": left, "right": right}
    assert branch.test is not None
    assert bool(branch.test(scope)) == branch.rows[0].holds(scope)[0]


def test_a_slow_host_cannot_stretch_the_run_past_its_deadline() -> None:
    class SlowHost(flowlang.RecordingHost):
        async def say(self, text: str, *, step: str) -> None:
            await asyncio.sleep(0.15)
            await super().say(text, step=step)

    flow = flowlang.load_flow_text(
        "flow: h\nstart: a\nsteps:\n  a: {type: say, text: one, next: b}\n"
        "  b: {type: say, text: two, next: c}\n  c: {type: say, text: three}\n"
    )
    result = run(start(flow, host=SlowHost(), settings=RuntimeSettings(run_deadline=0.2)))
    assert result.status == "failed" and result.error == "the run took longer than 0.2s"
    assert [entry["step"] for entry in result.trace] == ["a", "b"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_steps": 0}, "RuntimeSettings.max_steps must be a positive integer, not 0"),
        ({"max_steps": True}, "max_steps must be a positive integer, not True"),
        ({"max_same_step": 2**70}, "max_same_step must be a positive integer"),
        ({"max_requests_in_flight": 0}, "max_requests_in_flight must be a positive integer"),
        ({"max_redirects": -1}, "max_redirects must be an integer of at least 0, not -1"),
        ({"run_deadline": float("nan")}, "run_deadline must be seconds, more than zero"),
        ({"connect_timeout": 0}, "connect_timeout must be seconds, more than zero, not 0"),
        ({"http_timeout_cap": "8s"}, "http_timeout_cap must be seconds"),
    ],
)
def test_runtime_settings_out_of_range_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RuntimeSettings(**options)


def test_runtime_settings_accept_no_run_deadline_at_all() -> None:
    assert RuntimeSettings(run_deadline=float("inf"), max_redirects=0).max_redirects == 0


def test_a_result_carries_the_variables_where_the_run_stopped() -> None:
    flow = flowlang.load_flow_text(
        "flow: v\nstart: a\nsteps:\n"
        "  a: {type: set_variables, variables: {n: 2, who: <<call.id>>}, next: b}\n"
        "  b: {type: collect_input, next: c, on_no_input: c}\n"
        "  c: {type: set_variables, variables: {m: <<input.b.value>>}}\n"
    )

    async def main() -> list[Any]:
        async with flowlang.Runtime() as runtime:
            waiting = await runtime.start(flow, {"call": {"id": "c-1"}})
            done = await runtime.resume(flow, waiting.state or {}, "42")
            return [waiting.variables, done.status, done.variables]

    waiting, status, variables = asyncio.run(main())
    assert waiting == {"n": 2, "who": "c-1"}
    assert status == "completed" and variables == {"n": 2, "who": "c-1", "m": "42"}
