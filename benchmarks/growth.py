"""Growth curves: how the cost of one operation grows with the size of its input (issue 14).

A curve times ``run(setup(size))`` for sizes spread over two to three orders of magnitude and
prints, for each size, the time, the time per unit of size and the *local exponent* between
that size and the one before: ``log(t2 / t1) / log(n2 / n1)``. An exponent near 1 is linear
growth, near 2 quadratic; a constant cost per operation shows as 0. Peak traced memory is
measured in a separate, untimed call when asked (tracemalloc slows the code it traces).

Each ``benchmarks/test_growth_*.py`` measures its curves with ``measure_curve`` inside a
pytest-benchmark test (so ``--benchmark-only`` keeps it) and prints them with ``print_curve``:

    make bench-growth
"""

from __future__ import annotations

__all__ = ["Curve", "CurvePoint", "curve_table", "local_exponents", "measure_curve", "print_curve"]

import gc
import itertools
import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass(frozen=True)
class CurvePoint:
    """One size: the best of a few timed rounds, and the peak traced memory when measured."""

    size: int
    seconds: float
    peak_bytes: int | None = None


@dataclass
class Curve:
    """A named curve: ``unit`` says what a size counts (segments, steps, events...)."""

    name: str
    unit: str
    points: list[CurvePoint] = field(default_factory=list)

    @property
    def exponents(self) -> list[float | None]:
        """The local exponent at every point (None at the first)."""
        return local_exponents(self.points)

    @property
    def worst_exponent(self) -> float:
        """The largest local exponent over the curve (how fast it grows at its worst)."""
        return max((value for value in self.exponents if value is not None), default=0.0)


def local_exponents(points: Sequence[CurvePoint]) -> list[float | None]:
    """``log(t2 / t1) / log(n2 / n1)`` between each point and the one before."""
    out: list[float | None] = [None]
    for before, after in itertools.pairwise(points):
        if before.seconds <= 0 or after.seconds <= 0 or after.size == before.size:
            out.append(None)
            continue
        out.append(math.log(after.seconds / before.seconds) / math.log(after.size / before.size))
    return out


def measure_curve(
    name: str,
    unit: str,
    sizes: Sequence[int],
    setup: Callable[[int], Any],
    run: Callable[[Any], Any],
    *,
    rounds: int = 3,
    memory: bool = False,
    check: Callable[[int, Any], None] | None = None,
) -> Curve:
    """Time ``run(setup(size))`` for every size (the best of ``rounds``; ``setup`` is not
    timed and runs again before every round). ``check(size, result)`` asserts the result is
    right before any figure is kept. With ``memory``, one more untimed call under tracemalloc
    gives the peak."""
    curve = Curve(name, unit)
    for size in sizes:
        best = math.inf
        for _ in range(rounds):
            argument = setup(size)
            gc.collect()
            started = time.perf_counter()
            result = run(argument)
            elapsed = time.perf_counter() - started
            if check is not None:
                check(size, result)
            del result
            best = min(best, elapsed)
        peak = None
        if memory:
            argument = setup(size)
            gc.collect()
            tracemalloc.start()
            try:
                run(argument)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        curve.points.append(CurvePoint(size, best, peak))
    return curve


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def curve_table(curve: Curve) -> str:
    """The curve as a Markdown table (the README's form)."""
    memory = any(point.peak_bytes is not None for point in curve.points)
    head = f"| {curve.unit} | time | per {curve.unit.rstrip('s')} | local exponent |"
    rule = "|---:|---:|---:|---:|"
    if memory:
        head += " peak traced memory |"
        rule += "---:|"
    lines = [f"**{curve.name}**", "", head, rule]
    for point, exponent in zip(curve.points, curve.exponents, strict=True):
        cells = [
            f"{point.size:,}",
            _time(point.seconds),
            _time(point.seconds / point.size),
            "" if exponent is None else f"{exponent:.2f}",
        ]
        if memory:
            peak = point.peak_bytes
            cells.append("" if peak is None else f"{peak / 1e6:.1f} MB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_curve(request: pytest.FixtureRequest, curve: Curve) -> None:
    """Print the curve's table past pytest's output capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + curve_table(curve) + "\n")
