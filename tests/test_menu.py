"""The ``menu`` step: the resume contract, what the host is asked, states (tampered, signed,
resumed once), hostile keys, load-time checks, data flow, ``flowlang run --input`` and the
example flow, and a property: a run ends at the first valid key's option, else at fallback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli

import flowlang
from flowlang import FlowStateError, MappingSecrets, Runtime, RuntimeSettings
from flowlang.expr.backends import AVAILABLE
from flowlang.flow import check_flow_text
from flowlang.kinds.collect_input import resume_collect_input
from flowlang.kinds.menu import pressed_key, resume_menu, tries_before
from flowlang.kinds.registry import STEP_KINDS
from flowlang.runtime.runner import RunResult

FLOWS = Path(__file__).parent.parent / "examples" / "flows"
KEY = "k" * 32

MENU = """\
flow: support
start: main_menu
steps:
  main_menu:
    type: menu
    say: "For sales press 1, for support press 2, to hear this again press star."
    options: {"1": sales, "2": support, "*": main_menu}
    timeout: 4s
    max_attempts: 3
    invalid_message: "Sorry, that is not an option."
    no_input_message: "Sorry, I did not hear a choice."
    fallback: operator
  sales: {type: say, text: "Sales: <<input.main_menu.value>> after <<input.main_menu.attempts>>"}
  support: {type: say, text: Support}
  operator: {type: transfer, target: operator}
"""

PLAYED = MENU.replace(
    'say: "For sales press 1, for support press 2, to hear this again press star."',
    "play: https://media.example.com/menu.mp3",
)


def flow(text: str = MENU, loop: str | None = None) -> flowlang.CompiledFlow:
    return flowlang.load_flow_text(text, name="menu.yaml", engine=flowlang.Engine(backend=loop))


def runtime(loop: str | None = None, keys: tuple[str, ...] = ()) -> Runtime:
    return Runtime(
        backend=loop,
        secrets=MappingSecrets({"STATE_KEY": KEY}),
        settings=RuntimeSettings(state_keys=keys),
    )


async def answer(
    rt: Runtime, compiled: flowlang.CompiledFlow, entries: list[str | None]
) -> list[RunResult]:
    """The start and every resumed part of a run, answering each wait from ``entries``."""
    results = [await rt.start(compiled, {})]
    for entry in entries[:20]:
        if results[-1].status != "waiting_for_input":
            break
        results.append(await rt.resume(compiled, results[-1].state or {}, entry))
    return results


def run(entries: list[str | None], text: str = MENU, loop: str | None = None) -> list[RunResult]:
    async def main() -> list[RunResult]:
        async with runtime(loop) as rt:
            return await answer(rt, flow(text, loop), entries)

    return asyncio.run(main())


# --- the resume contract ------------------------------------------------------------------------


def test_both_input_kinds_resume_with_the_previous_record() -> None:
    menu = flow().steps["main_menu"]
    assert STEP_KINDS["menu"].takes_input and STEP_KINDS["menu"].resume is resume_menu
    assert resume_menu(menu, "1", None) == (
        "chosen",
        {"value": "1", "attempts": 1, "outcome": "chosen"},
        "sales",
        {"key": "1", "attempt": 1, "max_attempts": 3},
    )
    retry = {"value": "", "attempts": 1, "outcome": "invalid"}
    assert resume_menu(menu, "9", None) == (
        "invalid",
        retry,
        "main_menu",
        {"attempt": 1, "max_attempts": 3, "key": "9"},
    )
    assert resume_menu(menu, None, retry)[:3] == (
        "no input",
        {"value": "", "attempts": 2, "outcome": "no input"},
        "main_menu",
    )
    last = {"value": "", "attempts": 2, "outcome": "no input"}
    assert resume_menu(menu, "#", last) == (
        "fallback",
        {"value": "", "attempts": 3, "outcome": "fallback"},
        "operator",
        {"attempt": 3, "max_attempts": 3, "key": "#", "after": "invalid"},
    )
    assert resume_menu(menu, "2", last)[:3] == (
        "chosen",
        {"value": "2", "attempts": 3, "outcome": "chosen"},
        "support",
    )
    # a finished visit (a key chosen, or fallback) starts the next visit's tries afresh
    for ended in ({"value": "*", "attempts": 2, "outcome": "chosen"}, {"outcome": "fallback"}):
        assert resume_menu(menu, "9", ended)[1]["attempts"] == 1
    ask = flowlang.load_flow_text(
        "flow: t\nstart: a\nsteps:\n  a: {type: collect_input, next: b, on_no_input: b}\n"
        "  b: {type: hangup}\n"
    ).steps["a"]
    assert resume_collect_input(ask, "42#", {"value": "7"}) == (
        "collected",
        {"value": "42"},
        "b",
        {"digits": 2},
    )


@pytest.mark.parametrize("loop", AVAILABLE)
def test_the_host_is_asked_like_collect_input_with_the_message_before_the_prompt(
    loop: str,
) -> None:
    results = run(["9", None, "1"], loop=loop)
    waits = [result.awaiting for result in results[:-1]]
    prompt = "For sales press 1, for support press 2, to hear this again press star."
    assert waits[0] == {
        "step": "main_menu",
        "prompt": prompt,
        "max_digits": 1,
        "min_digits": 1,
        "finish_on_key": "",
        "timeout": 4.0,
        "attempt": 1,
        "max_attempts": 3,
    }
    assert waits[1] is not None and waits[2] is not None
    assert waits[1]["prompt"] == f"Sorry, that is not an option. {prompt}"
    assert waits[2]["prompt"] == f"Sorry, I did not hear a choice. {prompt}"
    assert [wait["attempt"] for wait in waits if wait] == [1, 2, 3]
    assert results[-1].status == "completed"
    assert results[-1].instructions == [
        {"action": "say", "step": "sales", "text": "Sales: 1 after 3"}
    ]
    assert [row["outcome"] for result in results for row in result.trace] == [
        "waiting for input",
        "invalid",
        "waiting for input",
        "no input",
        "waiting for input",
        "chosen",
        "said",
    ]
    collect = flowlang.load_flow_text(
        "flow: t\nstart: a\nsteps:\n  a: {type: collect_input, next: b, on_no_input: b}\n"
        "  b: {type: hangup}\n"
    )
    asked = asyncio.run(runtime(loop).start(collect, {})).awaiting
    assert asked is not None and set(asked) <= set(waits[0])  # the same shape, and more


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_played_prompt_gives_its_url_and_says_only_the_message(loop: str) -> None:
    results = run(["5", None], text=PLAYED, loop=loop)
    first, second, third = (result.awaiting for result in results)
    assert first is not None and second is not None and third is not None
    assert (first["prompt"], first["prompt_url"]) == ("", "https://media.example.com/menu.mp3")
    assert second["prompt"] == "Sorry, that is not an option."
    assert third["prompt"] == "Sorry, I did not hear a choice."
    assert second["prompt_url"] == third["prompt_url"] == first["prompt_url"]


# --- states: tampered, signed, resumed once ---------------------------------------------------


async def _suspended_after_one_try(rt: Runtime, compiled: flowlang.CompiledFlow) -> Any:
    started = await rt.start(compiled, {})
    retried = await rt.resume(compiled, started.state or {}, "9")
    assert retried.status == "waiting_for_input"
    return json.loads(json.dumps(retried.state))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"value": "", "attempts": -1, "outcome": "invalid"}, "attempts is not a number of tries"),
        ({"value": "", "attempts": 0, "outcome": "invalid"}, "attempts is not a number of tries"),
        ({"value": "", "attempts": 3, "outcome": "no input"}, "from 1 to 2"),
        ({"value": "", "attempts": 10**6, "outcome": "invalid"}, "attempts is not a number"),
        ({"value": "", "attempts": 2**70, "outcome": "invalid"}, "integer"),
        ({"value": "", "attempts": "1", "outcome": "invalid"}, "attempts is not a number"),
        ({"value": "", "attempts": 1.0, "outcome": "invalid"}, "attempts is not a number"),
        ({"value": "", "attempts": True, "outcome": "invalid"}, "attempts is not a number"),
        ({"value": "", "outcome": "invalid"}, "attempts is not a number"),
        ("x" * 300, "input.main_menu is not the record of a menu"),
        ([1, 2], "input.main_menu is not the record of a menu"),
    ],
    ids=[
        "negative",
        "zero",
        "all tries used",
        "huge",
        "beyond 64 bits",
        "text",
        "float",
        "bool",
        "missing",
        "record is text",
        "record is a list",
    ],
)
def test_a_tampered_attempt_count_is_refused_before_the_claim(record: Any, message: str) -> None:
    async def main() -> None:
        async with runtime() as rt:
            compiled = flow()
            state = await _suspended_after_one_try(rt, compiled)
            assert state["scope"]["input"]["main_menu"] == {
                "value": "",
                "attempts": 1,
                "outcome": "invalid",
            }
            state["scope"]["input"]["main_menu"] = record
            with pytest.raises(FlowStateError, match=message) as caught:
                await rt.resume(compiled, state, "1")
            if "integer" not in message:
                assert "step 'main_menu'" in str(caught.value)
            # refused before the claim: the untouched state still resumes
            state["scope"]["input"]["main_menu"] = {
                "value": "",
                "attempts": 1,
                "outcome": "invalid",
            }
            result = await rt.resume(compiled, state, "1")
            assert result.status == "completed"
            assert result.instructions[0]["text"] == "Sales: 1 after 2"

    asyncio.run(main())


def test_a_tampered_outcome_only_starts_the_tries_afresh() -> None:
    """Any record that is not a retry counts as a fresh visit: the caller gets at most the
    menu's tries again (what a finished visit gives), never a crash."""

    async def main() -> None:
        async with runtime() as rt:
            compiled = flow()
            state = await _suspended_after_one_try(rt, compiled)
            state["scope"]["input"]["main_menu"] = {"attempts": "lots", "outcome": "chosen"}
            result = await rt.resume(compiled, state, "9")
            assert result.awaiting is not None and result.awaiting["attempt"] == 2
            assert result.awaiting["prompt"].startswith("Sorry, that is not an option.")

    asyncio.run(main())


@pytest.mark.parametrize("loop", AVAILABLE)
def test_retries_are_signed_states_each_resumed_once(loop: str) -> None:
    async def main() -> None:
        async with runtime(loop, keys=("STATE_KEY",)) as rt:
            compiled = flow(loop=loop)
            first = await rt.start(compiled, {})
            state = first.state or {}
            assert "signature" in state
            second = await rt.resume(compiled, state, "9")
            again = second.state or {}
            assert "signature" in again and again["seq"] == state["seq"] + 1
            assert again["run_id"] == state["run_id"]
            with pytest.raises(FlowStateError, match="already resumed"):
                await rt.resume(compiled, state, "1")
            forged = json.loads(json.dumps(again))
            forged["scope"]["input"]["main_menu"]["attempts"] = 0  # more tries for free
            with pytest.raises(FlowStateError, match="signature"):
                await rt.resume(compiled, forged, "9")
            third = await rt.resume(compiled, again, "2")
            assert third.status == "completed"
            assert third.instructions == [{"action": "say", "step": "support", "text": "Support"}]

    asyncio.run(main())


def test_a_state_at_the_data_limit_fails_the_resumed_run_with_the_limit() -> None:
    """The record is measured: a state with no room for it fails the run, naming the limit."""

    async def main() -> None:
        compiled = flow()
        async with Runtime(settings=RuntimeSettings(max_state_size=400)) as rt:
            started = await rt.start(compiled, {"vars": {"pad": "x" * 300}})
            assert started.status == "waiting_for_input", started.error
            result = await rt.resume(compiled, started.state or {}, "9")
            assert result.status == "failed"
            assert "max_state_size" in (result.error or "")

    asyncio.run(main())


# --- hostile keys ---------------------------------------------------------------------------


class Sly(str):
    """A str subclass whose methods lie: never called (its plain text is read in C)."""

    def __len__(self) -> int:
        raise RuntimeError("called")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("called")

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "entry",
    ["12", "a", "1" * 300, "\u0661", "\uff11", "1\x00", " 1", "**", "\ud800", "9"],
    ids=[
        "two keys",
        "letter",
        "300 keys",
        "arabic-indic one",
        "full-width one",
        "nul",
        "space",
        "two stars",
        "lone surrogate",
        "no such option",
    ],
)
@pytest.mark.parametrize("loop", AVAILABLE)
def test_anything_but_one_key_of_an_option_is_invalid(entry: str, loop: str) -> None:
    results = run([entry], loop=loop)
    assert results[-1].status == "waiting_for_input"
    row = results[-1].trace[0]
    assert (row["step"], row["outcome"]) == ("main_menu", "invalid")
    assert row["detail"]["key"] in (None, "9")
    assert results[-1].awaiting is not None
    assert results[-1].awaiting["prompt"].startswith("Sorry, that is not an option.")


def test_keys_that_are_not_text_are_invalid_to_the_kind_and_refused_by_the_runtime() -> None:
    menu = flow().steps["main_menu"]
    for entry in (1, 1.0, b"1", ["1"], {"1": 1}, object()):
        assert pressed_key(entry) == ""
        assert resume_menu(menu, entry, None)[0] == "invalid"  # type: ignore[arg-type]
    assert pressed_key(Sly("1")) == "1" and pressed_key(None) is None and pressed_key("") is None
    assert resume_menu(menu, Sly("2"), None)[2] == "support"

    async def main() -> None:
        async with runtime() as rt:
            compiled = flow()
            started = await rt.start(compiled, {})
            with pytest.raises(TypeError, match="digits must be a str or None, not int"):
                await rt.resume(compiled, started.state or {}, 1)  # type: ignore[arg-type]
            result = await rt.resume(compiled, started.state or {}, Sly("1"))
            assert result.status == "completed"

    asyncio.run(main())


def test_tries_before_reads_only_its_own_records() -> None:
    menu = flow().steps["main_menu"]
    assert tries_before(menu, None) == (0, None)
    assert tries_before(menu, {"value": "1"}) == (0, None)  # a record of another kind
    assert tries_before(menu, {"outcome": ["invalid"]}) == (0, None)
    assert tries_before(menu, {"outcome": "invalid", "attempts": 2}) == (2, "invalid")
    with pytest.raises(ValueError, match="from 1 to 2"):
        tries_before(menu, {"outcome": "no input", "attempts": 2**64})


# --- load-time checks -----------------------------------------------------------------------

_BAD_MENUS = [
    (
        "say and play",
        'say: Hi\n    play: "https://x.example/a.mp3"\n    options: {"1": b}\n    fallback: b',
        "7:5 a menu says its prompt or plays it, not both: keep say or play",
    ),
    ("no prompt", 'options: {"1": b}\n    fallback: b', "4:3 a menu needs its prompt: say"),
    ("no options", "say: Hi\n    fallback: b", "4:3 a menu step needs options"),
    (
        "empty options",
        "say: Hi\n    options: {}\n    fallback: b",
        "7:14 expected keys (0-9, * or #) and the steps they lead to, found no option",
    ),
    (
        "two-key option",
        'say: Hi\n    options: {"12": b}\n    fallback: b',
        "7:15 an option is one key: 0-9, * or #, not '12'",
    ),
    ("no fallback", 'say: Hi\n    options: {"1": b}', "4:3 a menu step needs fallback"),
    (
        "option to a missing step",
        'say: Hi\n    options: {"1": nowhere}\n    fallback: b',
        "7:20 options[1] goes to step 'nowhere', which does not exist",
    ),
    (
        "fallback to a missing step",
        'say: Hi\n    options: {"1": b}\n    fallback: nowhere',
        "8:15 fallback goes to step 'nowhere', which does not exist",
    ),
    (
        "no attempts",
        'say: Hi\n    options: {"1": b}\n    max_attempts: 0\n    fallback: b',
        "8:19 max_attempts must be between 1 and 10, not 0",
    ),
    (
        "too many attempts",
        'say: Hi\n    options: {"1": b}\n    max_attempts: 11\n    fallback: b',
        "8:19 max_attempts must be between 1 and 10, not 11",
    ),
    (
        "attempts as text",
        'say: Hi\n    options: {"1": b}\n    max_attempts: "3"\n    fallback: b',
        "8:20 expected a whole number, found text",
    ),
    (
        "timeout too short",
        'say: Hi\n    options: {"1": b}\n    timeout: 0.1s\n    fallback: b',
        "8:14 timeout must be between 500ms and 60s, not 100ms",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in _BAD_MENUS], ids=[c[0] for c in _BAD_MENUS]
)
def test_a_bad_menu_is_a_load_error_at_its_place(body: str, expected: str) -> None:
    text = f"flow: t\nstart: m\nsteps:\n  m:\n    type: menu\n    {body}\n  b: {{type: hangup}}\n"
    compiled, findings = check_flow_text(text, name="menu.yaml")
    assert compiled is None
    summaries = [
        f"{finding.position.line}:{finding.position.column} {finding.message}"
        for finding in findings
    ]
    assert any(summary.startswith(expected) for summary in summaries), summaries
    for finding in findings:
        rendered = finding.render()
        assert "menu.yaml:" in rendered and "(step 'm'" in rendered and "^" in rendered


# --- data flow --------------------------------------------------------------------------------


def test_the_menu_input_is_readable_after_the_menu_and_nowhere_before() -> None:
    _, findings = check_flow_text(MENU, name="menu.yaml")
    assert findings == []
    before = (
        "flow: t\nstart: a\nsteps:\n"
        "  a: {type: say, text: '<<input.m.value>>', next: m}\n"
        "  m: {type: menu, say: Hi, options: {'1': a}, fallback: b}\n"
        "  b: {type: say, text: '<<input.m.attempts>> <<input[\"m\"].value>>'}\n"
    )
    _, findings = check_flow_text(before, name="menu.yaml")
    assert [(f.position.line, f.message) for f in findings] == [
        (4, "input.m.value: step 'm' may not have run on every path to this step")
    ]


# --- flowlang run -----------------------------------------------------------------------------


def test_run_answers_a_menu_from_input_in_order(tmp_path: Path) -> None:
    path = tmp_path / "menu.yaml"
    path.write_text(MENU, encoding="utf-8")
    status, out = cli("run", str(path), "--input", "main_menu=9", "--input", "main_menu=1")
    assert status == 0, out
    assert out.count("main_menu      menu                waiting for input") == 2
    assert "main_menu      menu                invalid\n                 key pressed: 9\n" in out
    assert "                 try 2 of 3\n" in out
    assert "main_menu      menu                chosen\n                 key pressed: 1\n" in out
    assert "host <- say(text='Sales: 1 after 2')" in out
    assert out.rstrip().endswith("result: completed")
    status, out = cli("run", str(path), "--input", "main_menu=", "--input", "main_menu=xx")
    assert status == 0
    assert "try 2 of 3" in out and "pressed: not one key" in out
    assert "waiting for input at step 'main_menu'" in out
    status, out = cli(
        "run", str(path), "--json", *[f"--input=main_menu={key}" for key in ("7", "8", "9")]
    )
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["outcome"] for e in events if e["event"] == "step"][-2:] == [
        "fallback",
        "transferred",
    ]
    assert events[-1]["status"] == "ended"


def test_run_interactive_tells_what_the_caller_hears_of_a_played_menu(tmp_path: Path) -> None:
    path = tmp_path / "menu.yaml"
    path.write_text(PLAYED, encoding="utf-8")
    status, out = cli("run", str(path), "--interactive", stdin="3\n2\n")
    assert status == 0
    assert "caller hears: [plays https://media.example.com/menu.mp3]" in out
    assert "caller hears: Sorry, that is not an option. [plays https://media" in out
    assert "host <- say(text='Support')" in out


def test_the_example_support_menu_runs_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", "demo-crm-token")
    example = [
        str(FLOWS / "support_menu.yaml"),
        "--context",
        str(FLOWS / "data" / "support_menu.context.json"),
        "--responses",
        str(FLOWS / "data" / "support_menu.responses.yaml"),
    ]
    answers = ["main_menu=3", "main_menu=7", "main_menu=2", "tech_menu=5", "tech_menu="]
    status, out = cli("run", *example, *(f"--input={answer}" for answer in answers))
    assert status == 0, out
    assert "host <- say(text='Your ticket 4471 is waiting for a part.')" in out
    assert "plays: https://media.example.com/acme/tech-menu.mp3" in out
    assert "try 2 of 2 (after no input)" in out
    assert "background log_choice: success (201)" in out
    assert "host <- transfer(target='queue:operator')" in out
    assert "demo-crm-token" not in out
    status, out = cli("run", *example, "--input", "main_menu=1")
    assert "host <- transfer(target='queue:billing')" in out
    assert cli("check", str(FLOWS / "support_menu.yaml")) == (
        0,
        "1 file checked: 0 errors, 0 warnings\n",
    )


def test_input_for_a_step_that_takes_none_names_both_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "menu.yaml"
    path.write_text(MENU, encoding="utf-8")
    assert cli("run", str(path), "--input", "sales=1")[0] == 2
    err = capsys.readouterr().err
    assert "(collect_input and menu steps do; its steps that take input: 'main_menu')" in err


# --- the property -----------------------------------------------------------------------------

_ENTRIES = st.one_of(
    st.none(),
    st.sampled_from(list("0123456789*#")),
    st.text(alphabet="0123456789*#a ", min_size=2, max_size=4),
)
_OPTIONS = {"1": "one", "2": "two", "#": "hash"}


def _property_flow(attempts: int) -> str:
    return (
        f"flow: p\nstart: m\nsteps:\n"
        f"  m: {{type: menu, say: Hi, options: {{'1': one, '2': two, '#': hash}}, "
        f"max_attempts: {attempts}, fallback: fb}}\n"
        + "".join(f"  {name}: {{type: say, text: {name}}}\n" for name in (*_OPTIONS.values(), "fb"))
    )


_PROPERTY_FLOWS = {
    n: {loop: flow(_property_flow(n), loop) for loop in AVAILABLE} for n in range(1, 5)
}


@settings(max_examples=60, deadline=None)
@given(attempts=st.integers(1, 4), data=st.data(), loop=st.sampled_from(AVAILABLE))
def test_a_run_ends_at_the_first_valid_key_within_its_tries_else_at_fallback(
    attempts: int, data: st.DataObject, loop: str
) -> None:
    entries = data.draw(st.lists(_ENTRIES, min_size=attempts, max_size=attempts + 2))
    tried = entries[:attempts]
    chosen = next((entry for entry in tried if entry in _OPTIONS), None)
    expected = _OPTIONS[chosen] if chosen is not None else "fb"

    async def main() -> list[RunResult]:
        async with Runtime(backend=loop) as rt:
            return await answer(rt, _PROPERTY_FLOWS[attempts][loop], list(entries))

    results = asyncio.run(main())
    assert results[-1].status == "completed"
    assert results[-1].instructions == [{"action": "say", "step": expected, "text": expected}]
    tries = len(results) - 1
    assert tries == (tried.index(chosen) + 1 if chosen is not None else attempts)


@pytest.mark.parametrize("loop", AVAILABLE)
def test_hearing_a_menu_again_and_again_never_trips_the_same_step_guard(loop: str) -> None:
    """max_same_step stops loops that never wait; a caller's answer resets it: eight `*`
    (hear it again), then nine wrong keys with max_attempts 10, then a valid one."""
    many = MENU.replace("max_attempts: 3", "max_attempts: 10")
    results = run(["*"] * 8 + ["9"] * 9 + ["1"], many, loop)
    assert results[-1].status == "completed", results[-1].error
    assert results[-1].instructions[-1]["text"] == "Sales: 1 after 10"
    fallback = run(["9"] * 10, many, loop)
    assert fallback[-1].status == "ended"
    assert fallback[-1].trace[-2]["outcome"] == "fallback"


@pytest.mark.parametrize(
    ("prompt", "valid"),
    [
        ({}, False),
        ({"say": "x"}, True),
        ({"play": "https://m.example.com/a.mp3"}, True),
        ({"say": "x", "play": "https://m.example.com/a.mp3"}, False),
    ],
)
def test_the_json_schema_wants_exactly_one_prompt_as_the_loader_does(
    prompt: dict[str, str], valid: bool
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from flowlang.flow.schema import flow_schema

    menu = {"type": "menu", "options": {"1": "b"}, "fallback": "b", **prompt}
    document = {"flow": "f", "start": "m", "steps": {"m": menu, "b": {"type": "hangup"}}}
    assert jsonschema.Draft202012Validator(flow_schema()).is_valid(document) is valid
    flow, _ = check_flow_text(json.dumps(document))
    assert (flow is not None) is valid
