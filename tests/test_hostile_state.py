"""Hostile input against suspended state and run data: signed states, resume-once, malformed
states, data a state cannot carry, and values that grow without bound (both loops, both
backends)."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import tracemalloc
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlang
from flowlang import FlowStateError, MappingSecrets, Runtime, RuntimeSettings, StateKeys
from flowlang.expr.backends import AVAILABLE
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.state import CLOCK_SKEW, MemoryResumeGuard, canonical_state

LOOPS = AVAILABLE  # the compiled loop when built, and the Python one
KEY_OLD = "k" * 40
KEY_NEW = "n" * 40
LOOKUP = "https://crm.example.com/lookup"
NOTIFY = "https://crm.example.com/notify"

# A caller is looked up (tier), proves a PIN, then picks from a menu; a VIP goes to the VIP queue.
VIP_FLOW = """
flow: vip
start: lookup
steps:
  lookup: {type: http_request, endpoint: "https://crm.example.com/lookup", next: ask_pin,
           on_failure: sorry}
  ask_pin:
    type: collect_input
    prompt: PIN?
    min_digits: 4
    max_digits: 4
    next: check_pin
    on_no_input: bye
  check_pin:
    type: condition_splitter
    branches:
      - conditions: [{property: "<<input.ask_pin.value>>", operator: equals, value: "1234"}]
        next: ask_menu
    otherwise: bye
  ask_menu: {type: collect_input, prompt: "Menu?", next: notify, on_no_input: bye}
  notify:
    type: http_request
    method: POST
    endpoint: "https://crm.example.com/notify"
    body: {choice: "<<input.ask_menu.value>>"}
    next: route
    on_failure: route
  route:
    type: condition_splitter
    branches:
      - conditions: [{property: "<<steps.lookup.response.body.tier>>", operator: equals,
                      value: vip}]
        next: vip
    otherwise: normal
  vip: {type: transfer, target: "queue:vip"}
  normal: {type: transfer, target: "queue:normal"}
  bye: {type: hangup}
  sorry: {type: collect_input, prompt: "Sorry", next: bye, on_no_input: bye}
"""


def recorded() -> RecordedHttp:
    return RecordedHttp(
        {
            ("GET", LOOKUP): RecordedResponse(200, {}, {"tier": "basic"}),
            ("POST", NOTIFY): RecordedResponse(200, {}, {"ok": True}),
        }
    )


def runtime(
    keys: tuple[str, ...] = (),
    http: RecordedHttp | None = None,
    backend: str | None = None,
    **options: Any,
) -> Runtime:
    secrets = MappingSecrets({"STATE_KEY_OLD": KEY_OLD, "STATE_KEY_NEW": KEY_NEW})
    settings_options = {key: options.pop(key) for key in list(options) if key.startswith("max_")}
    return Runtime(
        http=http or recorded(),
        secrets=secrets,
        settings=RuntimeSettings(state_keys=keys, **settings_options),
        backend=backend,
        **options,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(state: Any) -> Any:
    """A state as a host stores and reads it back (JSON text)."""
    return json.loads(json.dumps(state))


async def suspend(rt: Runtime, context: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await rt.start(flowlang.load_flow_text(VIP_FLOW), context or {})
    assert result.status == "waiting_for_input", result.error
    assert result.state is not None
    return stored(result.state)


def refused_after(change: Any, message: str) -> list[str]:
    """Suspend the VIP flow on a runtime with a state key, ``change`` the state, and check that
    resuming it raises FlowStateError matching ``message``; the methods of the requests sent."""
    flow = flowlang.load_flow_text(VIP_FLOW)
    http = recorded()

    async def main() -> None:
        async with runtime(("STATE_KEY_NEW",), http) as rt:
            state = await suspend(rt)
            change(state)
            with pytest.raises(FlowStateError, match=message):
                rt.resume(flow, state, "1234")

    run(main())
    return [request.method for request in http.requests]


# --- 27: signed states --------------------------------------------------------------------------


def test_a_signed_state_resumes_and_carries_its_key_id() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(("STATE_KEY_NEW",)) as rt:
            state = await suspend(rt)
            assert isinstance(state["signature"], str) and isinstance(state["key_id"], str)
            assert KEY_NEW not in json.dumps(state)
            second = await rt.resume(flow, state, "1234")
            assert second.status == "waiting_for_input"
            third = await rt.resume(flow, stored(second.state), "1")
            assert third.instructions[-1]["target"] == "queue:normal"

    run(main())


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda s: s["scope"]["steps"]["lookup"]["response"]["body"].update(tier="vip"),
            id="tier-to-vip",
        ),
        pytest.param(lambda s: s.update(waiting_at="ask_menu"), id="skip-the-pin-check"),
        pytest.param(lambda s: s.update(seq=s["seq"] + 1), id="seq"),
        pytest.param(lambda s: s.update(run_id="another"), id="run-id"),
        pytest.param(lambda s: s.update(steps_run=0), id="counters"),
        pytest.param(lambda s: s["scope"].update(contact={"name": "x"}), id="new-root"),
        pytest.param(lambda s: s.update(extra=1), id="added-field"),
        pytest.param(lambda s: s.update(secrets_used=["other"]), id="secrets-used"),
        pytest.param(lambda s: s.update(signature=s["signature"][:-2] + "AA"), id="signature"),
        pytest.param(lambda s: s.update(signature="é" * 43), id="signature-not-ascii"),
    ],
)
def test_a_runtime_with_a_key_refuses_an_altered_state(edit: Any) -> None:
    assert refused_after(edit, "altered") == ["GET"]


def test_without_a_key_an_edited_state_is_trusted_which_is_why_keys_exist() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime() as rt:
            state = await suspend(rt)
            assert "signature" not in state
            state["scope"]["steps"]["lookup"]["response"]["body"]["tier"] = "vip"
            state["waiting_at"] = "ask_menu"  # skips the PIN check
            result = await rt.resume(flow, state, "1")
            assert result.instructions[-1]["target"] == "queue:vip"

    run(main())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: (s.pop("signature"), s.pop("key_id")), "not signed"),
        (lambda s: s.pop("signature"), "not signed"),
        (lambda s: s.update(key_id=12), "not signed"),
        (lambda s: s.update(key_id="0123456789abcdef"), "key this runtime does not have"),
    ],
)
def test_unsigned_states_and_unknown_key_ids_are_refused(change: Any, message: str) -> None:
    refused_after(change, message)


def test_an_unsigned_state_is_refused_by_a_runtime_with_a_key() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime() as plain:
            state = await suspend(plain)
        async with runtime(("STATE_KEY_NEW",)) as rt:
            with pytest.raises(FlowStateError, match="not signed"):
                rt.resume(flow, state, "1234")

    run(main())


def test_key_rotation_the_newest_key_signs_and_any_verifies() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(("STATE_KEY_OLD",)) as before:
            old_state = await suspend(before)
        async with runtime(("STATE_KEY_NEW", "STATE_KEY_OLD")) as rotated:
            resumed = await rotated.resume(flow, old_state, "1234")
            new_state = stored(resumed.state)
            assert new_state["key_id"] != old_state["key_id"]
            assert new_state["seq"] == old_state["seq"] + 1
            assert new_state["run_id"] == old_state["run_id"]
        async with runtime(("STATE_KEY_NEW",)) as after:  # the old key retired
            with pytest.raises(FlowStateError, match="does not have"):
                after.resume(flow, old_state, "1234")
            done = await after.resume(flow, new_state, "1")
            assert done.status == "ended"

    run(main())


def test_state_keys_are_checked_when_the_runtime_is_made() -> None:
    with pytest.raises(ValueError, match="state key 'MISSING' is not set"):
        runtime(("MISSING",))
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Runtime(
            secrets=MappingSecrets({"short": "x" * 31}),
            settings=RuntimeSettings(state_keys=("short",)),
        )
    with pytest.raises(ValueError, match="state_keys must be a tuple of names"):
        RuntimeSettings(state_keys="STATE_KEY")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one key"):
        StateKeys([])


def test_the_signature_covers_a_canonical_form() -> None:
    keys = StateKeys([KEY_NEW])
    state = keys.sign({"format": "f", "b": [1, 2.5, "é"], "a": {"y": None, "x": True}})
    reordered = {key: state[key] for key in reversed(list(state))}
    reordered["a"] = {"x": True, "y": None}
    keys.verify(reordered)  # key order does not matter
    assert canonical_state(state) == canonical_state(reordered)
    assert b"signature" not in canonical_state(state)


# --- 28: each suspension is resumed once --------------------------------------------------------


def test_resuming_the_same_state_twice_runs_once() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        http = recorded()
        async with runtime(http=http) as rt:
            first = await suspend(rt)
            at_menu = stored((await rt.resume(flow, first, "1234")).state)
            assert (at_menu["run_id"], at_menu["seq"]) == (first["run_id"], 2)
            done = await rt.resume(flow, copy.deepcopy(at_menu), "1")
            assert done.status == "ended"
            with pytest.raises(FlowStateError, match="already resumed"):
                rt.resume(flow, at_menu, "1")
            with pytest.raises(FlowStateError, match="already resumed"):
                rt.resume(flow, first, "1234")  # an older state of a run that went on
        assert [request.method for request in http.requests] == ["GET", "POST"]

    run(main())


def test_concurrent_resumes_of_one_state_run_once() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        http = recorded()
        async with runtime(http=http) as rt:
            state = stored((await rt.resume(flow, await suspend(rt), "1234")).state)
            outcomes = []
            for _ in range(5):
                try:
                    outcomes.append(rt.resume(flow, state, "1"))
                except FlowStateError as error:
                    outcomes.append(str(error))
            runs = [item for item in outcomes if not isinstance(item, str)]
            assert len(runs) == 1
            await asyncio.gather(*runs)
        assert [request.method for request in http.requests] == ["GET", "POST"]

    run(main())


class SharedStore:
    """An external store's guard: what several runtimes (processes) share."""

    def __init__(self) -> None:
        self.claimed: dict[str, int] = {}

    def claim(self, run_id: str, seq: int) -> bool:
        if self.claimed.get(run_id, 0) >= seq:
            return False
        self.claimed[run_id] = seq
        return True


def test_a_shared_guard_refuses_a_second_resume_in_another_runtime() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)
    store = SharedStore()

    async def main() -> None:
        async with runtime(resume_guard=store) as one:
            state = await suspend(one)
        async with runtime(resume_guard=store) as two:
            await two.resume(flow, state, "1234")
        async with runtime(resume_guard=store) as three:
            with pytest.raises(FlowStateError, match="already resumed"):
                three.resume(flow, state, "1234")
        assert store.claimed == {state["run_id"]: 1}

    run(main())


def test_a_refused_state_is_not_consumed() -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime() as rt:
            state = await suspend(rt)
            with pytest.raises(FlowStateError, match="not waiting at a step that takes input"):
                rt.resume(flow, {**state, "waiting_at": "lookup"}, "1234")
            assert (await rt.resume(flow, state, "1234")).status == "waiting_for_input"

    run(main())


class HostileDigits(str):
    """A str whose own methods raise (and count that they ran)."""

    calls = 0

    def _raise(self, *args: Any) -> Any:
        HostileDigits.calls += 1
        raise RuntimeError("boom")

    __len__ = __contains__ = __iter__ = __getitem__ = __eq__ = __hash__ = _raise
    index = find = strip = __str__ = _raise


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "digits",
    [1234, 12.5, b"1234", ["1"], {"d": "1"}, object()],
    ids=["int", "float", "bytes", "list", "dict", "object"],
)
def test_digits_that_are_not_text_are_refused_before_the_claim(digits: Any, loop: str) -> None:
    """Items 20/28: a TypeError at once, before the resume guard claims the state, which stays
    resumable."""
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(backend=loop) as rt:
            state = await suspend(rt)
            with pytest.raises(TypeError, match="resume: digits must be a str or None"):
                rt.resume(flow, state, digits)
            assert (await rt.resume(flow, state, "1234")).status == "waiting_for_input"

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_str_subclass_is_read_as_its_text_and_none_of_its_code_runs(loop: str) -> None:
    """Items 20/28: a subclass whose ``__len__`` (and every other method) raises resumes as
    the plain digits; before, the exception escaped after the claim and used the state up."""
    flow = flowlang.load_flow_text(VIP_FLOW)
    HostileDigits.calls = 0

    async def main() -> None:
        async with runtime(backend=loop) as rt:
            state = await suspend(rt)
            resumed = await rt.resume(flow, state, HostileDigits("1234"))
            assert resumed.status == "waiting_for_input", resumed.error
            assert resumed.awaiting is not None and resumed.awaiting["step"] == "ask_menu"
            assert resumed.state is not None
            assert resumed.state["scope"]["input"]["ask_pin"] == {"value": "1234"}
            assert type(resumed.state["scope"]["input"]["ask_pin"]["value"]) is str
            wrong = await rt.resume(flow, await suspend(rt), HostileDigits("12#"))
            assert wrong.status == "ended" and wrong.trace[0]["outcome"] == "invalid"

    run(main())
    assert HostileDigits.calls == 0


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "digits", ["1" * 10_000_000, "\ud800", "12\x00", "\uff11\uff12\uff13\uff14", "12 34"]
)
def test_text_that_is_not_digits_takes_the_invalid_edge(digits: str, loop: str) -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(backend=loop) as rt:
            result = await rt.resume(flow, await suspend(rt), digits)
            assert result.status == "ended"
            assert result.trace[0] == {
                "step": "ask_pin",
                "type": "collect_input",
                "outcome": "invalid",
                "duration_ms": 0.0,
                "detail": {"digits": 0},
            }

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_what_can_fail_in_a_resume_fails_before_the_claim(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items 20/28: preparing the flow's plan happens before the claim (a failure leaves the
    state resumable); after the claim a failure fails the run, never escapes."""
    flow = flowlang.load_flow_text(VIP_FLOW)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    async def main() -> None:
        async with runtime(backend=loop) as rt:
            state = await suspend(rt)
            with monkeypatch.context() as patch:
                patch.setattr(Runtime, "_plan", broken)
                with pytest.raises(RuntimeError, match="boom"):
                    rt.resume(flow, state, "1234")
            with monkeypatch.context() as patch:
                patch.setattr("flowlang.runtime.runner.plain_json", broken)
                failed = await rt.resume(flow, copy.deepcopy(state), "1234")
            assert failed.status == "failed"
            assert failed.error == (
                "the run could not be resumed (RuntimeError while resuming at step 'ask_pin')"
            )
            with pytest.raises(FlowStateError, match="already resumed"):
                rt.resume(flow, state, "1234")

    run(main())


def test_the_memory_guard_is_bounded() -> None:
    guard = MemoryResumeGuard(capacity=3)
    assert guard.claim("a", 1) and not guard.claim("a", 1) and guard.claim("a", 2)
    for name in "bcd":
        assert guard.claim(name, 1)
    assert guard.claim("a", 2)  # pushed out by three newer runs: remembered no more
    with pytest.raises(ValueError, match="capacity"):
        MemoryResumeGuard(capacity=0)


# --- 20: a bad state is always a FlowStateError ---------------------------------------------------


class Raising(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no")

    def __len__(self) -> int:
        return 1


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


MALFORMED = [
    ("steps_run", math.inf),
    ("steps_run", -math.inf),
    ("steps_run", math.nan),
    ("steps_run", 2.0),
    ("steps_run", True),
    ("steps_run", 10**5000),
    ("steps_run", -1),
    ("streak", ["ask_pin", math.inf]),
    ("streak", ["ask_pin", True]),
    ("streak", ["ask_pin"]),
    ("streak", [[], 1]),
    ("streak", {"a": 1}),
    ("streak", "ab"),
    ("waiting_at", ["ask_pin"]),
    ("waiting_at", {"ask_pin": 1}),
    ("waiting_at", {1, 2}),
    ("waiting_at", None),
    ("waiting_at", "x" * 10_000),
    ("seq", 0),
    ("seq", True),
    ("seq", 1.0),
    ("seq", math.inf),
    ("seq", 10**30),
    ("seq", "1"),
    ("run_id", None),
    ("run_id", ""),
    ("run_id", 7),
    ("run_id", "x" * 101),
    ("run_id", ["a"]),
    ("run_id", "a\nb"),
    ("run_id", "a b"),
    ("run_id", "\u00e9"),
    ("suspended_at", None),
    ("suspended_at", 1.5),
    ("suspended_at", math.inf),
    ("suspended_at", 10**30),
    ("suspended_at", -(10**30)),
    ("suspended_at", "now"),
    ("format", ["flowlang.run/2"]),
    ("format", "flowlang.run/1"),
    ("format", {"a": 1}),
    ("flow", ["vip"]),
    ("flow", {"vip": 1}),
    ("fingerprint", ["x"]),
    ("scope", []),
    ("scope", Raising()),
    ("scope", {"vars": [1]}),
    ("scope", {"steps": {1: 2}}),
    ("scope", {1: {}}),
    ("scope", {"secrets": {"token": "x"}}),
    ("scope", {"contact": _deep(2_000)}),
    ("scope", {"contact": _deep(101)}),
    ("scope", {"contact": {"n": math.inf}}),
    ("scope", {"contact": {"n": math.nan}}),
    ("scope", {"contact": {"n": 10**5000}}),
    ("scope", {"contact": {"n": 2**64}}),
    ("scope", {"contact": {"n": "\ud800"}}),
    ("scope", {"contact": {"\udc00": 1}}),
    ("scope", {"contact": {"n": {1, 2}}}),
    ("scope", {"contact": {"n": b"bytes"}}),
    ("scope", {"contact": {"n": object()}}),
    ("scope", {"contact": Raising()}),
    ("scope", {"contact": {"n": "x" * 600_000}}),
    ("secrets_used", None),
    ("secrets_used", "crm_token"),
    ("secrets_used", {"crm_token": 1}),
    ("secrets_used", [1]),
    ("secrets_used", [""]),
    ("secrets_used", ["a b"]),
    ("secrets_used", ["a\n"]),
    ("secrets_used", ["1abc"]),
    ("secrets_used", ["\u00e9"]),
    ("secrets_used", ["x" * 101]),
    ("secrets_used", ["a", "a"]),
    ("secrets_used", [f"n{i}" for i in range(65)]),
    ("secrets_used", [["a"]]),
]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(("field", "value"), MALFORMED, ids=lambda v: type(v).__name__)
def test_every_malformed_state_is_a_flow_state_error(field: str, value: Any, loop: str) -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(backend=loop) as rt:
            state = await suspend(rt)
            state[field] = value
            with pytest.raises(FlowStateError):
                rt.resume(flow, state, "1234")

    run(main())


@pytest.mark.parametrize("state", [None, [], "state", 3, Raising(), {"format": "x"}])
def test_things_that_are_not_states_are_flow_state_errors(state: Any) -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)
    rt = runtime()
    with pytest.raises(FlowStateError):
        rt.resume(flow, state, "1234")


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from([10**50, "\ud800", "ask_pin", "ask_menu", "lookup", 2**64, -(2**63)]),
)
json_ish = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def _set(state: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return state


_BASE_STATES: dict[str, Any] = {}


def _base_state(loop: str) -> Any:
    if loop not in _BASE_STATES:

        async def main() -> Any:
            async with runtime(backend=loop) as rt:
                return await suspend(rt, {"contact": {"name": "Ann", "tags": [1, "x"]}})

        _BASE_STATES[loop] = run(main())
    return copy.deepcopy(_BASE_STATES[loop])


@pytest.mark.parametrize("loop", LOOPS)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), mutations=st.integers(1, 3))
def test_any_mutation_of_a_state_resumes_or_is_refused_before_anything_runs(
    loop: str, data: st.DataObject, mutations: int
) -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)
    state = _base_state(loop)
    for _ in range(mutations):
        path = data.draw(st.sampled_from(_paths(state)))
        state = _set(state, path, data.draw(json_ish), data.draw(st.booleans()))

    async def main() -> None:
        http = recorded()
        async with runtime(http=http, backend=loop) as rt:
            try:
                running = rt.resume(flow, state, data.draw(st.sampled_from(["1234", "1", None])))
            except FlowStateError:
                assert http.requests == []
                return
            result = await running  # never raises: anything unexpected is a failed run
            assert result.status in ("completed", "ended", "failed", "waiting_for_input")
            if result.state is not None:
                json.dumps(result.state)

    run(main())


# --- 19: data a state cannot carry is refused at the door, never at a suspension -----------------


SECRET_FLOW = """
flow: deep
start: lookup
steps:
  lookup:
    type: http_request
    endpoint: "https://crm.example.com/lookup"
    headers: {Authorization: "Bearer <<secrets.token>>"}
    next: ask
    on_failure: ask
  ask: {type: collect_input, prompt: "<<contact.name>>", next: done, on_no_input: done}
  done: {type: say, text: "<<contact.big>> <<contact.small>> <<vars.deep | length>>"}
"""


def with_lookup() -> RecordedHttp:
    return RecordedHttp({("GET", LOOKUP): RecordedResponse(200, {}, {"tier": "basic"})})


def _nested(levels: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("with_secret", [False, True])
@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"contact": _nested(2_000)}, r"contact\.a\.a.*nests deeper than 100 levels"),
        ({"contact": _nested(600)}, r"contact\.a\.a.*nests deeper than 100 levels"),
        ({"contact": {"n": 10**5000}}, r"contact\.n: an integer outside the 64-bit range"),
        ({"contact": {"n": -(2**63) - 1}}, r"contact\.n: an integer outside"),
        ({"call": {"x": [1, 2**64]}}, r"call\.x\[1\]: an integer outside"),
        ({"contact": {"name": "a\ud800"}}, r"contact\.name: text with a lone surrogate"),
        ({"vars": {"a": _nested(100)}}, r"vars\.a\.a.*nests deeper than 100 levels"),
        ({"contact": {"notes": "x" * 600_000}}, r"larger than 524288 bytes"),
    ],
)
def test_a_context_a_state_could_not_carry_is_refused_at_start(
    context: dict[str, Any], message: str, loop: str, with_secret: bool
) -> None:
    flow = flowlang.load_flow_text(
        SECRET_FLOW if with_secret else SECRET_FLOW.replace("secrets.", "")
    )

    async def main() -> None:
        async with Runtime(
            http=with_lookup(), secrets=MappingSecrets({"token": "a"}), backend=loop
        ) as rt:
            with pytest.raises(ValueError, match=message):
                rt.start(flow, context)

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("signed", [False, True])
def test_data_at_the_limits_suspends_and_resumes(loop: str, signed: bool) -> None:
    flow = flowlang.load_flow_text(SECRET_FLOW)
    context = {
        "contact": {"name": "Ann", "big": 2**64 - 1, "small": -(2**63), "deep": _nested(98)},
        "vars": {"deep": _nested(98, [1])},  # vars is a level: 1 + 98 + the list = 100
    }

    async def main() -> None:
        keys = ("STATE_KEY_NEW",) if signed else ()
        async with Runtime(
            http=with_lookup(),
            secrets=MappingSecrets({"token": "Ann", "STATE_KEY_NEW": KEY_NEW}),
            settings=RuntimeSettings(state_keys=keys),
            backend=loop,
        ) as rt:
            first = await rt.start(flow, context)
            assert first.status == "waiting_for_input", first.error
            state = stored(first.state)
            assert state["scope"]["contact"]["name"] == "[redacted]"
            done = await rt.resume(flow, state, "1")
            assert done.status == "completed", done.error
            assert done.instructions[0]["text"] == f"{2**64 - 1} {-(2**63)} 1"

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_values_a_flow_nests_deeper_fail_the_step_not_the_suspension(loop: str) -> None:
    flow = flowlang.load_flow_text(
        """
flow: nest
start: wrap
steps:
  wrap: {type: set_variables, variables: {x: "<<[vars.x]>>"}, next: again}
  again:
    type: condition_splitter
    branches: [{expression: "<<true>>", next: wrap}]
    otherwise: done
  done: {type: hangup}
"""  # done: a way out never taken (check refuses a loop without one)
    )

    async def main() -> None:
        async with runtime(backend=loop, max_steps=1000) as rt:
            result = await rt.start(flow, {"vars": {"x": 1}})
        assert result.status == "failed"
        assert result.error == (
            "step 'wrap' cannot set vars.x: vars.x[0][0][0][0][0][0][0][0][0][0][0][0]… "
            "nests deeper than 100 levels (RuntimeSettings.max_data_depth)"
        )
        assert len(result.trace) == 2 * 99 + 1  # and the failing step's row
        assert result.trace[-1]["outcome"] == "failed"

    run(main())


# --- 17: values that double per step ------------------------------------------------------------

DOUBLING = {
    "flow": "doubling",
    "start": "d0",
    "steps": {
        **{
            f"d{index}": {
                "type": "set_variables",
                "variables": {"x": "<<[vars.x, vars.x]>>", "n": index},
                "next": f"d{index + 1}" if index < 29 else "ask",
            }
            for index in range(30)
        },
        "ask": {
            "type": "collect_input",
            "prompt": "<<vars.x>>",
            "next": "done",
            "on_no_input": "done",
        },
        "done": {"type": "hangup"},
    },
}


@pytest.mark.parametrize("loop", LOOPS)
def test_thirty_doubling_steps_fail_clearly_within_bounded_memory(loop: str) -> None:
    flow = flowlang.load_flow_text(json.dumps(DOUBLING))

    async def main() -> flowlang.RunResult:
        async with runtime(backend=loop) as rt:
            return await rt.start(flow, {"vars": {"x": "abcdefgh"}})

    tracemalloc.start()
    try:
        result = run(main())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status == "failed"
    assert result.error == (
        "step 'd12' cannot set vars.x: vars.x is larger than 65536 bytes "
        "(RuntimeSettings.max_value_size)"
    )
    assert len(result.trace) == 13  # and the failing step's row
    assert result.trace[-1]["step"] == "d12"
    assert peak < 8 * 1024 * 1024, peak


@pytest.mark.parametrize("loop", LOOPS)
def test_the_whole_run_data_is_bounded(loop: str) -> None:
    steps = {
        f"s{index}": {
            "type": "set_variables",
            "variables": {f"v{index}": "<<contact.notes>>", "same": "<<contact.notes>>"},
            **({"next": f"s{index + 1}"} if index < 19 else {}),
        }
        for index in range(20)
    }
    flow = flowlang.load_flow_text(json.dumps({"flow": "many", "start": "s0", "steps": steps}))

    async def main() -> flowlang.RunResult:
        async with runtime(backend=loop, max_value_size=1_000, max_state_size=5_000) as rt:
            return await rt.start(flow, {"contact": {"notes": "x" * 900}})

    result = run(main())
    assert result.status == "failed"
    assert result.error == (
        "step 's3' cannot set vars.v3: the run's data would be larger than 5000 bytes "
        "(RuntimeSettings.max_state_size)"
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_overwriting_a_value_gives_its_room_back(loop: str) -> None:
    steps = {
        f"s{index}": {
            "type": "set_variables",
            "variables": {"same": f"<<contact.notes>>{index}", "n": {"m": index}},
            **({"next": f"s{index + 1}"} if index < 29 else {}),
        }
        for index in range(30)
    }
    flow = flowlang.load_flow_text(json.dumps({"flow": "same", "start": "s0", "steps": steps}))

    async def main() -> flowlang.RunResult:
        async with runtime(backend=loop, max_value_size=1_000, max_state_size=3_000) as rt:
            return await rt.start(flow, {"contact": {"notes": "x" * 900}})

    result = run(main())
    assert result.status == "completed", result.error


@pytest.mark.parametrize("loop", LOOPS)
def test_a_response_the_state_cannot_hold_takes_the_failure_edge(loop: str) -> None:
    flow = flowlang.load_flow_text(VIP_FLOW)
    http = RecordedHttp({("GET", LOOKUP): RecordedResponse(200, {}, {"tier": "x" * 3_000})})

    async def main() -> flowlang.RunResult:
        async with runtime(backend=loop, http=http, max_state_size=2_000) as rt:
            return await rt.start(flow, {})

    result = run(main())
    assert result.status == "waiting_for_input"
    assert result.trace[0]["outcome"] == "too_large"
    assert "larger than 2000 bytes" in result.trace[0]["detail"]["error"]
    assert result.state is not None
    assert result.state["scope"]["steps"]["lookup"]["outcome"] == "too_large"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_value_size", 0),
        ("max_state_size", -1),
        ("max_data_depth", 201),
        ("max_data_depth", 0),
        ("max_state_size", 1.5),
    ],
)
def test_data_limit_settings_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RuntimeSettings(**{field: value})


def test_the_command_line_refuses_such_a_context_with_a_message(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from flowlang.cli import main

    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(VIP_FLOW)
    context_file = tmp_path / "context.json"
    context_file.write_text(json.dumps({"contact": _nested(300)}))
    out = io.StringIO()
    status = main(["run", str(flow_file), "--context", str(context_file)], out, io.StringIO())
    assert status == 2
    assert "contact.a.a" in capsys.readouterr().err
    assert "Traceback" not in out.getvalue()


def test_a_flow_cannot_read_a_state_key() -> None:
    flow = flowlang.load_flow_text(
        """
flow: leak
start: send
steps:
  send:
    type: http_request
    endpoint: "https://crm.example.com/lookup"
    headers: {X-Leak: "<<secrets.STATE_KEY_NEW>>", X-Also: "<<secrets.state-key-new>>"}
    next: done
    on_failure: done
  done: {type: hangup}
"""
    )
    http = recorded()

    async def main() -> flowlang.RunResult:
        environ = {"FLOWLANG_SECRET_STATE_KEY_NEW": KEY_NEW}
        async with Runtime(
            http=http,
            secrets=flowlang.EnvironmentSecrets(environ=environ),
            settings=RuntimeSettings(state_keys=("STATE_KEY_NEW",)),
        ) as rt:
            return await rt.start(flow, {})

    result = run(main())
    assert result.trace[0]["outcome"] == "invalid_request"
    assert "is not set" in result.trace[0]["detail"]["error"]
    assert http.requests == []


@pytest.mark.parametrize(
    ("age", "message"),
    [
        (3_601, r"the state expired: it was suspended 36\d\ds ago"),
        (-CLOCK_SKEW - 60, "in the future"),
    ],
)
def test_an_expired_state_is_refused(age: int, message: str) -> None:
    """Past the state's age limit, or further in the future than the clocks' allowed skew (a
    minute beyond it: the resume comes a moment after the suspension, however loaded the machine)."""
    flow = flowlang.load_flow_text(VIP_FLOW)

    async def main() -> None:
        async with runtime(("STATE_KEY_NEW",)) as signer:
            fresh = await suspend(signer)
        keys = StateKeys([KEY_NEW])
        old = keys.sign({**fresh, "suspended_at": fresh["suspended_at"] - age})
        async with runtime(("STATE_KEY_NEW",)) as rt:
            with pytest.raises(FlowStateError, match=message):
                rt.resume(flow, old, "1234")
            assert (await rt.resume(flow, fresh, "1234")).status == "waiting_for_input"
        async with runtime(("STATE_KEY_NEW",), max_state_age=float("inf")) as patient:
            if age > 0:
                assert (await patient.resume(flow, old, "1234")).status == "waiting_for_input"

    run(main())


def test_a_long_key_is_never_shown_as_a_prefix_in_a_refusal() -> None:
    """A refusal names the path of the bad value; a key longer than 40 characters (it could be
    a secret a server echoed as a key) is named by its length, never cut to a prefix."""
    from flowlang.rundata import _path

    key = "k" * 39 + "SECRETSECRETSECRET"
    path = _path("vars", [0, key])
    assert "kkkk" not in path and f"<a key of {len(key)} characters>" in path
    assert _path("vars", ["short"]) == "vars.short"
