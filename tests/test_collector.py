"""The collector: runs leave no cyclic garbage (both loops), and ``tune_collector`` is opt-in,
checked and restorable."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import flowlang
from flowlang.runtime.collector import (
    RUNTIME_THRESHOLD,
    CollectorSettings,
    collector_settings,
    collector_tuned,
    restore_collector,
    tune_collector,
)
from flowlang.runtime.host import RecordingHost
from flowlang.runtime.http import RecordedHttp, RecordedResponse

FLOW = """
flow: cycles
start: setup
steps:
  setup:
    type: set_variables
    variables: {greeting: "Hello <<contact.id>>", items: [1, 2], nested.key: <<contact.id>>}
    next: lookup
  lookup:
    type: http_request
    method: POST
    endpoint: https://api.example.com/a/<<contact.id>>
    body: {id: <<contact.id>>, tags: [a, b]}
    next: ask
    on_failure: bye
  ask:
    type: collect_input
    prompt: "Your code, <<vars.greeting>>?"
    next: thanks
    on_no_input: bye
  thanks:
    type: say
    text: "Thanks <<input.ask.value>> <<steps.lookup.response.body.ok>>"
    next: bye
  bye:
    type: hangup
"""
FAILING = """
flow: failing
start: say
steps:
  say: {type: say, text: "<<contact.missing.deeper>>"}
"""
RECORDED = {("POST", "https://api.example.com/a/7"): RecordedResponse(200, {}, {"ok": True})}
RUNS = 20


@pytest.fixture
def collector_kept() -> Iterator[CollectorSettings]:
    """The collector's settings before the test, put back after it whatever it did."""
    before = collector_settings()
    try:
        yield before
    finally:
        gc.set_debug(0)
        restore_collector(before)


def _cyclic_garbage(
    backend: str, run_once: Callable[[Any, dict[str, Any]], Awaitable[None]]
) -> Counter[str]:
    """The types of the objects left in reference cycles by RUNS calls of ``run_once`` (after
    one warm-up call), with the collector off while they run."""
    engine = flowlang.Engine(backend=backend, strict=True)
    flows = {
        "flow": flowlang.load_flow_text(FLOW, engine=engine),
        "failing": flowlang.load_flow_text(FAILING, engine=engine),
    }

    async def scenario() -> Counter[str]:
        http = RecordedHttp(RECORDED)
        async with flowlang.Runtime(backend=backend, http=http, host=RecordingHost()) as runtime:
            await run_once(runtime, flows)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(RUNS):
                    await run_once(runtime, flows)
                gc.collect()
                found = Counter(type(item).__name__ for item in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            return found

    return asyncio.run(scenario())


async def _suspended_then_resumed(runtime: Any, flows: dict[str, Any]) -> None:
    first = await runtime.start(flows["flow"], {"contact": {"id": 7}})
    assert first.status == "waiting_for_input" and first.state is not None
    second = await runtime.resume(flows["flow"], first.state, "1234")
    assert second.status == "ended", second.error
    assert second.trace[-2]["step"] == "thanks"


async def _completed_after_a_failed_request(runtime: Any, flows: dict[str, Any]) -> None:
    result = await runtime.start(flows["flow"], {"contact": {"id": 8}})  # nothing recorded
    assert result.status == "ended" and result.state is None
    assert [row["step"] for row in result.trace] == ["setup", "lookup", "bye"]


async def _failed(runtime: Any, flows: dict[str, Any]) -> None:
    result = await runtime.start(flows["failing"], {"contact": {}})
    assert result.status == "failed" and "missing" in (result.error or "")


@pytest.mark.parametrize(
    "run_once", [_suspended_then_resumed, _completed_after_a_failed_request, _failed]
)
def test_a_run_leaves_no_cyclic_garbage(
    backend: str, run_once: Any, collector_kept: CollectorSettings
) -> None:
    """Reference counting frees everything a run made: the cyclic collector has nothing to do
    (and a collection walks only what is still alive)."""
    assert _cyclic_garbage(backend, run_once) == Counter()


def test_the_cycle_finder_finds_a_cycle(collector_kept: CollectorSettings) -> None:
    """The check above can fail: a run that leaves a cycle behind is caught."""

    async def leaves_a_cycle(runtime: Any, flows: dict[str, Any]) -> None:
        await _suspended_then_resumed(runtime, flows)
        loop: dict[str, Any] = {}
        loop["self"] = loop

    assert _cyclic_garbage("python", leaves_a_cycle) == Counter({"dict": RUNS})


def test_tuning_freezes_and_raises_the_first_threshold(collector_kept: CollectorSettings) -> None:
    gc.set_threshold(700, 10, 10)
    previous = tune_collector()
    assert previous == CollectorSettings(
        collector_kept.enabled, (700, 10, 10), collector_kept.frozen
    )
    now = collector_settings()
    assert now.thresholds == (RUNTIME_THRESHOLD, 10, 10) and now.enabled == collector_kept.enabled
    assert now.frozen > 0  # the objects alive when it was called
    restore_collector(previous)
    assert collector_settings() == previous


def test_tuning_without_freezing_and_with_a_threshold_of_ones_own(
    collector_kept: CollectorSettings,
) -> None:
    if collector_kept.frozen:
        pytest.skip("objects were frozen before this test")
    previous = tune_collector(threshold=50_000, freeze=False)
    assert collector_settings() == CollectorSettings(
        previous.enabled, (50_000, *previous.thresholds[1:]), 0
    )
    restore_collector(previous)
    assert collector_settings() == previous


def test_the_context_manager_restores_even_after_an_error(
    collector_kept: CollectorSettings,
) -> None:
    gc.disable()
    before = collector_settings()
    with pytest.raises(RuntimeError, match="inside"), collector_tuned(threshold=1234) as previous:
        assert previous == before
        assert collector_settings().thresholds[0] == 1234
        assert not gc.isenabled()  # tuning never turns the collector on or off
        raise RuntimeError("inside")
    assert collector_settings() == before


def test_objects_frozen_before_stay_frozen(collector_kept: CollectorSettings) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    previous = tune_collector()
    restore_collector(previous)
    assert gc.get_freeze_count() >= frozen  # CPython cannot unfreeze only the newer ones
    assert collector_settings().thresholds == previous.thresholds


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_a_threshold_that_is_not_a_positive_count_is_refused(
    bad: Any, collector_kept: CollectorSettings
) -> None:
    with pytest.raises(ValueError, match="threshold"):
        tune_collector(threshold=bad)
    assert collector_settings() == collector_kept  # nothing was changed


def test_the_setting_is_public_and_changes_nothing_by_itself() -> None:
    assert flowlang.tune_collector is tune_collector
    assert flowlang.restore_collector is restore_collector
    assert flowlang.collector_tuned is collector_tuned
    assert flowlang.CollectorSettings is CollectorSettings
    assert gc.get_threshold()[0] != RUNTIME_THRESHOLD  # importing flowlang tuned nothing
