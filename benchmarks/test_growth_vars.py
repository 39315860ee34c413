"""Growth curves of set_variables (issue 14): a merge into a map of ``vars`` costs what it changes.

Two curves, on the runtime of the default backend (``make bench-growth`` requires the compiled
one):

- *adding keys*: a flow of n set_variables steps, each adding one key to ``vars.m``; the map
  grows to n keys. Before copy-on-write with ownership every step copied and measured the whole
  map (quadratic over the run).
- *one key of a large map*: a context map of n keys and a flow of 1,000 steps, each changing
  one of its keys. The map comes from the caller, so the first merge copies it once (it may be
  shared); every later step changes one key in place.

Outputs are checked (the map's keys and values, the run's status) before any figure is kept.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from typing import Any

import pytest
from growth import measure_curve, print_curve

from flowlang import Runtime, RuntimeSettings
from flowlang.flow.load import load_flow_text
from flowlang.flow.model import CompiledFlow

ADDING_SIZES = (100, 300, 1_000, 3_000, 10_000, 30_000)
CHANGED_STEPS = 1_000
MAP_SIZES = (1_000, 3_000, 10_000, 30_000, 100_000)
#: Limits wide enough for the largest map (a state of this size is not what a call holds).
SETTINGS = RuntimeSettings(
    max_steps=100_000, max_value_size=64 * 1024 * 1024, max_state_size=64 * 1024 * 1024
)


def _chain(count: int, variables: Any) -> str:
    steps = {
        f"s{index}": {
            "type": "set_variables",
            "variables": variables(index),
            **({"next": f"s{index + 1}"} if index + 1 < count else {}),
        }
        for index in range(count)
    }
    return json.dumps({"flow": "growth", "start": "s0", "steps": steps})


@cache
def adding_flow(count: int) -> CompiledFlow:
    """n steps, step i sets ``vars.m.k<i>`` to i."""
    return load_flow_text(_chain(count, lambda index: {f"m.k{index}": index}), name="growth.json")


@cache
def changing_flow() -> CompiledFlow:
    """1,000 steps, step i sets ``vars.m.k<i>`` to -i."""
    flow = _chain(CHANGED_STEPS, lambda index: {f"m.k{index}": -index})
    return load_flow_text(flow, name="growth.json")


@cache
def _runtime() -> tuple[asyncio.AbstractEventLoop, Runtime]:
    """One event loop and runtime for every run (making them is not what the curve times)."""
    return asyncio.new_event_loop(), Runtime(settings=SETTINGS)


def _run(flow: CompiledFlow, context: dict[str, Any] | None = None) -> Any:
    loop, runtime = _runtime()
    return loop.run_until_complete(runtime.start(flow, context))


def _check_adding(size: int, result: Any) -> None:
    assert result.status == "completed", result.error
    assert result.variables["m"] == {f"k{index}": index for index in range(size)}


def _check_changing(size: int, result: Any) -> None:
    assert result.status == "completed", result.error
    m = result.variables["m"]
    assert len(m) == size
    assert all(m[f"k{index}"] == -index for index in range(CHANGED_STEPS))
    if size > CHANGED_STEPS:
        assert m[f"k{size - 1}"] == size - 1


def test_growth_adding_keys(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """n steps each adding one key to ``vars.m``: time per step."""
    for size in ADDING_SIZES:
        _run(adding_flow(size))  # loaded and planned before timing
    curve = benchmark.pedantic(
        measure_curve,
        args=("set_variables adding one key per step to vars.m", "steps", ADDING_SIZES),
        kwargs={"setup": adding_flow, "run": _run, "check": _check_adding, "rounds": 3},
        rounds=1,
        iterations=1,
    )
    print_curve(request, curve)


def test_growth_one_key_of_large_map(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """A context map of n keys, 1,000 steps each changing one key: time per step."""
    flow = changing_flow()
    _run(flow, {"vars": {"m": {}}})  # planned before timing

    def setup(size: int) -> dict[str, Any]:
        return {"vars": {"m": {f"k{index}": index for index in range(size)}}}

    def run(context: dict[str, Any]) -> Any:
        return _run(flow, context)

    curve = benchmark.pedantic(
        measure_curve,
        args=("1,000 steps each changing one key of a map of n keys", "keys", MAP_SIZES),
        kwargs={"setup": setup, "run": run, "check": _check_changing, "rounds": 3},
        rounds=1,
        iterations=1,
    )
    print_curve(request, curve)
