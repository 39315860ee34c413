"""Growth of compiling a long path (issue 14, item 2): time and peak memory per segment.

A path of n segments, ``a.a…a``, compiled by an Engine whose limits let it through (no memo),
in two forms: ``a.a…a ?? 1``, which goes through the Lark grammar, and the plain path, which
takes the parser's fast path. Every compiled template is checked against a context n levels
deep before any figure is kept. n runs from 32 to 32,768 segments; a local exponent near 1 is
linear growth (it was near 2 through Lark, and memory grew as n² on both). Part of
``make bench-growth``:

    FLOWLANG_REQUIRE_EXTENSIONS=1 .venv/bin/python -m pytest benchmarks/test_growth_paths.py \\
        --benchmark-only -q -s -p no:cacheprovider
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from growth import measure_curve, print_curve

import flowlang
from flowlang.expr.limits import Limits

SIZES = (32, 128, 512, 2_048, 8_192, 32_768)
#: Limits that let the longest path through (the default expression length is 4,096).
LIMITS = Limits(max_expression_length=200_000, max_template_length=200_000, max_nodes=200_000)
FORMS = {
    "through Lark (a.a…a ?? 1)": " ?? 1",
    "fast path (a.a…a)": "",
}
LEAF = "leaf"


@functools.cache
def _deep_context(size: int) -> dict[str, Any]:
    """``{"a": {"a": … "leaf"}}``: what ``a`` followed by ``size`` segments ``.a`` reads."""
    value: Any = LEAF
    for _ in range(size):
        value = {"a": value}
    return {"a": value}


@pytest.mark.parametrize("form", FORMS)
def test_compile_long_path(benchmark: Any, request: pytest.FixtureRequest, form: str) -> None:
    engine = flowlang.Engine(limits=LIMITS, cache_size=0)
    suffix = FORMS[form]

    def check(size: int, template: flowlang.Template) -> None:
        assert template.render(_deep_context(size)) == LEAF

    curve = benchmark.pedantic(
        measure_curve,
        args=(f"compile a path of n segments, {form}", "segments", SIZES),
        kwargs={
            "setup": lambda size: "<<a" + ".a" * size + suffix + ">>",
            "run": engine.compile,
            "memory": True,
            "check": check,
        },
        rounds=1,
        iterations=1,
    )
    benchmark.group = "G growth: long paths"
    print_curve(request, curve)
