"""Growth with live runs (issue 14): time per start and per resume as the number of suspended
runs held in the process grows from 1,000 to 100,000, under four settings of CPython's cyclic
collector: its defaults, ``flowlang.tune_collector(threshold=700)`` (frozen after loading and a
warm-up run, thresholds kept), ``flowlang.tune_collector()`` (frozen, and the first threshold
raised to RUNTIME_THRESHOLD), and the collector off (the bound). Each setting is applied before
the timed call and taken back after it. ``make bench-growth``.

The runs are those of benchmarks/test_flows.py::test_concurrent_suspended_runs: N runs started
at once (``asyncio.gather``), all suspended at collect_input and kept, then all resumed.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from growth import Curve, measure_curve, print_curve

import flowlang
from flowlang.runtime.collector import RUNTIME_THRESHOLD, restore_collector, tune_collector
from flowlang.runtime.http import RecordedHttp

COLLECT = """
flow: concurrent
start: ask
steps:
  ask: {type: collect_input, prompt: "Account number for <<contact.name>>?", next: done, on_no_input: done}
  done: {type: say, text: "Thanks <<contact.name>>, <<input.ask.value>>"}
"""
SIZES = (1_000, 10_000, 100_000)
FLOW = flowlang.load_flow_text(COLLECT)


def _context(number: int) -> dict[str, Any]:
    return {"call": {"external_number": f"+1415555{number:04d}"}, "contact": {"name": f"c{number}"}}


async def _warm_up(runtime: flowlang.Runtime) -> None:
    first = await runtime.start(FLOW, _context(0))
    await runtime.resume(FLOW, first.state or {}, "1")


def _default() -> Callable[[], None]:
    return lambda: None


def _tuned(threshold: int) -> Callable[[], None]:
    previous = tune_collector(threshold=threshold)
    return lambda: restore_collector(previous)


def _off() -> Callable[[], None]:
    gc.disable()
    return gc.enable


#: Each setting: applies itself (untimed: tune_collector collects the whole process once, which
#: an application does once after loading its flows) and gives what puts the default back.
SETTINGS: dict[str, Callable[[], Callable[[], None]]] = {
    "default collector": _default,
    "frozen": lambda: _tuned(700),
    "frozen, tuned threshold": lambda: _tuned(RUNTIME_THRESHOLD),
    "collector off": _off,
}


def _starts(count: int) -> list[dict[str, Any]]:
    """Start ``count`` runs at once; the states of the suspended runs."""

    async def scenario() -> list[dict[str, Any]]:
        async with flowlang.Runtime(http=RecordedHttp({})) as runtime:
            await _warm_up(runtime)
            waiting = await asyncio.gather(
                *(runtime.start(FLOW, _context(n)) for n in range(count))
            )
            return [result.state or {} for result in waiting]

    return asyncio.run(scenario())


def _resumes(states: list[dict[str, Any]]) -> list[str]:
    """Resume every run of ``states`` at once (all of them live until then); their statuses."""

    async def scenario() -> list[str]:
        async with flowlang.Runtime(http=RecordedHttp({})) as runtime:
            await _warm_up(runtime)
            done = await asyncio.gather(*(runtime.resume(FLOW, state, "1234") for state in states))
            return [result.status for result in done]

    return asyncio.run(scenario())


def _check_started(size: int, states: list[dict[str, Any]]) -> None:
    assert len(states) == size and all(state.get("waiting_at") == "ask" for state in states)


def _check_resumed(size: int, statuses: list[str]) -> None:
    assert statuses == ["completed"] * size


#: The settings whose peak memory is measured too (tracemalloc is slow at 100,000 runs; a
#: collector that finds no garbage changes no peak: all four gave 346 MB in one run).
MEMORY_MEASURED = ("default collector", "frozen, tuned threshold")


def _interleaved(
    operation: str,
    setup: Callable[[int], Any],
    run: Callable[[Any], Any],
    check: Callable[[int, Any], None],
    memory: bool,
) -> list[Curve]:
    """A curve per setting, the settings measured in turn at each size (so that a noisy
    moment of the shared machine falls on all of them, not on one curve). The setting is
    applied after ``setup`` and taken back after ``run``."""

    def applied(apply: Callable[[], Callable[[], None]]) -> tuple[Any, Any]:
        def set_up(size: int) -> tuple[Any, Callable[[], None]]:
            argument = setup(size)
            return argument, apply()

        def timed(pair: tuple[Any, Callable[[], None]]) -> Any:
            try:
                return run(pair[0])
            finally:
                pair[1]()

        return set_up, timed

    curves = [Curve(f"{operation} N runs at once, {name}", "runs") for name in SETTINGS]
    for size in SIZES:
        for curve, (name, apply) in zip(curves, SETTINGS.items(), strict=True):
            set_up, timed = applied(apply)
            point = measure_curve(
                curve.name,
                curve.unit,
                [size],
                set_up,
                timed,
                rounds=2,
                memory=memory and name in MEMORY_MEASURED,
                check=check,
            )
            curve.points.extend(point.points)
    return curves


def _print_ratios(request: pytest.FixtureRequest, curves: list[Curve]) -> None:
    """Each setting's time against the default collector's, at every size."""
    lines = ["| runs | " + " | ".join(SETTINGS) + " |", "|---:|" + "---:|" * len(SETTINGS)]
    for index, size in enumerate(SIZES):
        base = curves[0].points[index].seconds
        cells = [f"{base / curve.points[index].seconds:.2f}x" for curve in curves]
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\nspeed against the default collector (higher is faster)\n" + "\n".join(lines))


def test_starts_with_live_runs(benchmark: Any, request: pytest.FixtureRequest) -> None:
    curves = benchmark.pedantic(
        lambda: _interleaved("start", lambda size: size, _starts, _check_started, memory=True),
        rounds=1,
    )
    benchmark.group = "growth: live runs"
    for curve in curves:
        print_curve(request, curve)
    _print_ratios(request, curves)


def test_resumes_with_live_runs(benchmark: Any, request: pytest.FixtureRequest) -> None:
    curves = benchmark.pedantic(
        lambda: _interleaved(
            "resume",
            _starts,
            _resumes,
            _check_resumed,
            memory=False,
        ),
        rounds=1,
    )
    benchmark.group = "growth: live runs"
    for curve in curves:
        print_curve(request, curve)
    _print_ratios(request, curves)
