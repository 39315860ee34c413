"""Resuming across flow edits: a call resumes on the version of the flow it started on (issue 9).

``Runtime(flow_versions=FlowVersions())`` keeps every flow a call starts on by fingerprint,
with a bound; a state of an edited flow resumes on its own version, a dropped version is a
clear FlowStateError, and a state only ever selects among kept versions of the flow given.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import flowlang
from flowlang import MappingSecrets, Runtime, RuntimeSettings
from flowlang.runtime.http import RecordedHttp
from flowlang.runtime.runner import FlowStateError
from flowlang.runtime.versions import DEFAULT_FLOW_VERSIONS, FlowVersions

FLOW = """
flow: account
start: ask
steps:
  ask:
    type: collect_input
    prompt: Enter your account number.
    max_digits: 8
    next: thanks
    on_no_input: bye
    on_invalid: bye
  thanks: {type: say, text: "Version one: <<input.ask.value>>", next: bye}
  bye: {type: hangup}
"""
V1 = flowlang.load_flow_text(FLOW)
V2 = flowlang.load_flow_text(FLOW.replace("Version one", "Version two"))
#: An edit that renames the steps a v1 call goes through after the input.
V3 = flowlang.load_flow_text(
    FLOW.replace("next: thanks", "next: thank_you")
    .replace("  thanks:", "  thank_you:")
    .replace("Version one", "Version three")
)
OTHER = flowlang.load_flow_text(FLOW.replace("flow: account", "flow: other"))
KEY = "k" * 40


def _runtime(versions: FlowVersions | None, backend: str, **options: Any) -> Runtime:
    return Runtime(http=RecordedHttp({}), flow_versions=versions, backend=backend, **options)


def _said(result: flowlang.RunResult) -> list[str]:
    return [item["text"] for item in result.instructions if item["action"] == "say"]


def test_a_call_resumes_on_the_version_it_started_on(backend: str) -> None:
    async def main() -> None:
        versions = FlowVersions()
        async with _runtime(versions, backend) as runtime:
            first = await runtime.start(V1)
            assert first.status == "waiting_for_input"
            # the flow is edited and reloaded: new calls start on v2
            second = await runtime.start(V2)
            assert second.state is not None and second.state["fingerprint"] == V2.fingerprint
            assert first.state is not None and first.state["fingerprint"] == V1.fingerprint
            resumed = await runtime.resume(V2, first.state, "1234")
            assert resumed.status == "ended" and _said(resumed) == ["Version one: 1234"]
            resumed = await runtime.resume(V2, second.state, "99")
            assert _said(resumed) == ["Version two: 99"]
            # a version whose steps were renamed: the v1 call still runs v1's steps
            third = await runtime.start(V1)
            await runtime.start(V3)
            resumed = await runtime.resume(V3, third.state or {}, "7")
            assert _said(resumed) == ["Version one: 7"]
            assert [row["step"] for row in resumed.trace] == ["ask", "thanks", "bye"]

    asyncio.run(main())


def test_without_versions_a_state_of_another_version_is_refused() -> None:
    async def main() -> None:
        async with _runtime(None, "python") as runtime:
            state = (await runtime.start(V1)).state
            with pytest.raises(FlowStateError) as caught:
                await runtime.resume(V2, state or {}, "1")
            message = str(caught.value)
            assert "not that one" in message and "FlowVersions" in message
            assert repr(V1.fingerprint) in message
            resumed = await runtime.resume(V1, state or {}, "1")  # not used up by the refusal
            assert _said(resumed) == ["Version one: 1"]

    asyncio.run(main())


def test_a_dropped_version_is_a_clear_error_and_can_be_added_back() -> None:
    async def main() -> None:
        versions = FlowVersions(capacity=2)
        async with _runtime(versions, "python") as runtime:
            state = (await runtime.start(V1)).state or {}
            await runtime.start(V2)
            await runtime.start(V3)  # the bound drops v1, the least recently used
            assert versions.fingerprints("account") == [V2.fingerprint, V3.fingerprint]
            with pytest.raises(FlowStateError) as caught:
                await runtime.resume(V3, state, "5")
            message = str(caught.value)
            assert f"version {V1.fingerprint!r} of flow 'account'" in message
            assert "no longer kept" in message and "2 most recently used" in message
            assert "FlowVersions.add" in message and "capacity" in message
            versions.add(flowlang.load_flow_text(FLOW))  # e.g. from a store of deployed texts
            assert _said(await runtime.resume(V3, state, "5")) == ["Version one: 5"]

    asyncio.run(main())


def test_the_bound_drops_the_least_recently_used_version() -> None:
    versions = FlowVersions(capacity=2)
    versions.add(V1)
    versions.add(V2)
    assert versions.get(V1.fingerprint) is V1  # a resume on v1 makes it recent
    versions.add(V3)
    assert V1.fingerprint in versions and V2.fingerprint not in versions
    assert len(versions) == 2 and versions.get(V2.fingerprint) is None
    versions.add(V1)  # the most recent already: nothing changes
    versions.add(V2)
    assert versions.fingerprints("account") == [V1.fingerprint, V2.fingerprint]
    assert versions.fingerprints("nothing") == []
    assert FlowVersions().capacity == DEFAULT_FLOW_VERSIONS == 16


def test_versions_of_other_flows_never_push_one_out() -> None:
    """The bound is per flow: a process serving many flows keeps the old versions of each."""
    versions = FlowVersions(capacity=2)
    versions.add(V1)
    versions.add(V2)
    others = [
        flowlang.load_flow_text(FLOW.replace("flow: account", f"flow: f{n}")) for n in range(5)
    ]
    for other in others:
        versions.add(other)
    assert versions.fingerprints("account") == [V1.fingerprint, V2.fingerprint]
    assert len(versions) == 7
    versions.add(V3)
    assert V1.fingerprint not in versions and len(versions) == 7


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "3"])
def test_capacity_must_be_a_positive_integer(capacity: Any) -> None:
    with pytest.raises(ValueError, match="FlowVersions capacity must be a positive integer"):
        FlowVersions(capacity=capacity)


def test_another_process_resumes_after_adding_the_version() -> None:
    """A replica that never started the call: it adds the version (compiled from the text a
    deployment kept by fingerprint), then resumes on it."""

    async def main() -> None:
        async with _runtime(FlowVersions(), "python") as starting:
            state = (await starting.start(V1)).state or {}
        replica_versions = FlowVersions()
        async with _runtime(replica_versions, "python") as replica:
            with pytest.raises(FlowStateError, match="no longer kept"):
                await replica.resume(V2, state, "42")
            replica_versions.add(flowlang.load_flow_text(FLOW))
            assert _said(await replica.resume(V2, state, "42")) == ["Version one: 42"]

    asyncio.run(main())


def test_a_state_selects_only_a_kept_version_of_the_flow_given() -> None:
    async def main() -> None:
        versions = FlowVersions()
        async with _runtime(versions, "python") as runtime:
            other_state = (await runtime.start(OTHER)).state or {}
            await runtime.start(V2)
            # kept, but another flow: never chosen for the flow given
            with pytest.raises(FlowStateError, match="belongs to flow 'other'; the flow given"):
                await runtime.resume(V2, other_state, "1")
            state = (await runtime.start(V1)).state or {}
            for fingerprint in ["0" * 16, "", None, ["x"], {"a": 1}, "x" * 100_000, 12]:
                forged = dict(state, fingerprint=fingerprint)
                with pytest.raises(FlowStateError) as caught:
                    await runtime.resume(V2, forged, "1")
                assert len(str(caught.value)) < 500
            forged = dict(state, fingerprint=OTHER.fingerprint)  # kept, but not an 'account'
            with pytest.raises(FlowStateError, match="no longer kept"):
                await runtime.resume(V2, forged, "1")

    asyncio.run(main())


def test_a_signed_state_cannot_be_pointed_at_another_version() -> None:
    async def main() -> None:
        versions = FlowVersions()
        options: dict[str, Any] = {
            "secrets": MappingSecrets({"STATE_KEY": KEY}),
            "settings": RuntimeSettings(state_keys=("STATE_KEY",)),
        }
        async with _runtime(versions, "python", **options) as runtime:
            v1_state = (await runtime.start(V1)).state or {}
            v2_state = (await runtime.start(V2)).state or {}
            forged = dict(v2_state, fingerprint=V1.fingerprint)
            with pytest.raises(FlowStateError, match="altered"):
                await runtime.resume(V2, forged, "1")
            assert _said(await runtime.resume(V2, v1_state, "1")) == ["Version one: 1"]
            assert _said(await runtime.resume(V2, v2_state, "2")) == ["Version two: 2"]

    asyncio.run(main())


def test_many_calls_on_both_versions_at_once(backend: str) -> None:
    async def main() -> None:
        versions = FlowVersions(capacity=2)
        async with _runtime(versions, backend) as runtime:
            old = await asyncio.gather(*(runtime.start(V1) for _ in range(60)))
            new = await asyncio.gather(*(runtime.start(V2) for _ in range(60)))
            calls = [(state.state, "one") for state in old] + [(s.state, "two") for s in new]
            calls = calls[::2] + calls[1::2]  # interleave the versions
            results = await asyncio.gather(
                *(
                    runtime.resume(V2, state or {}, str(index))
                    for index, (state, _) in enumerate(calls)
                )
            )
            for index, (result, (_, version)) in enumerate(zip(results, calls, strict=True)):
                assert _said(result) == [f"Version {version}: {index}"]

    asyncio.run(main())


def test_versions_are_safe_to_share_between_threads() -> None:
    flows = [flowlang.load_flow_text(FLOW.replace("one", f"v{index}")) for index in range(8)]
    versions = FlowVersions(capacity=3)
    problems: list[str] = []

    def work(offset: int) -> None:
        for step in range(2000):
            flow = flows[(offset + step) % len(flows)]
            versions.add(flow)
            found = versions.get(flow.fingerprint)
            if found is not None and found is not flow:
                problems.append(f"{flow.fingerprint} gave another flow")
            if len(versions) > 3:
                problems.append("more versions than the capacity")

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == [] and len(versions) == 3
