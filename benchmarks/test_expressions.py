"""Expression benchmarks: flowlang (both backends) against a hand-written baseline and peers.

Every contender runs the same batch of 1,000 calls on the same context, after its output was
checked equal to the baseline's. `make bench` runs this and prints the ratio table.

chevron (Mustache) renders a string template by tokenizing it again on every call (its
``g_token_cache`` keeps only the text of lambda sections), so its compiled form is the token
list: render times ``chevron.render(tokens, context)``, compile times ``list(tokenize(source))``.
Where Mustache cannot express a workload (workloads.Workload.mustache_gap), chevron has no
benchmark and the report says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chevron
import jinja2
import jmespath
import liquid
import pytest
from chevron.tokenizer import tokenize
from jmespath.parser import Parser
from workloads import CONTEXT, WORKLOADS, Workload

import flowlang
from flowlang.expr.values import to_text

BATCH = 1000
CONTENDERS = [
    "baseline", "flowlang-cython", "flowlang-python", "jinja2", "liquid", "jmespath", "chevron",
]  # fmt: skip
_jinja = jinja2.Environment(autoescape=False)
_liquid = liquid.Environment()


def _batch(function: Callable[[Any], Any], argument: Any) -> Callable[[], None]:
    def run() -> None:
        for _ in range(BATCH):
            function(argument)

    return run


def _renderer(workload: Workload, contender: str) -> tuple[Callable[[Any], Any], bool]:
    """The callable for one contender, and whether its output is text (else a native value)."""
    if contender == "baseline":
        return workload.baseline, False
    if contender.startswith("flowlang-"):
        backend = contender.removeprefix("flowlang-")
        return flowlang.Engine(backend=backend).compile(workload.flowlang).render, False
    if contender == "jinja2":
        template = _jinja.from_string(workload.jinja2)
        return lambda ctx: template.render(ctx), True
    if contender == "liquid":
        template = _liquid.from_string(workload.liquid)
        return lambda ctx: template.render(**ctx), True
    if contender == "chevron":
        assert workload.mustache is not None
        tokens = list(tokenize(workload.mustache))
        return lambda ctx: chevron.render(tokens, ctx), True
    expression = jmespath.compile(workload.jmespath)
    return expression.search, False


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.key for w in WORKLOADS])
def test_render(benchmark: Any, workload: Workload, contender: str) -> None:
    if contender == "chevron" and workload.mustache is None:
        pytest.skip(f"Mustache cannot express {workload.key}: {workload.mustache_gap}")
    render, is_text = _renderer(workload, contender)
    expected = workload.baseline(CONTEXT)
    output = render(CONTEXT)
    if is_text:
        assert output == to_text(expected), (contender, output, expected)
    else:
        assert output == expected and type(output) is type(expected), (contender, output, expected)
    benchmark.group = f"{workload.key} render"
    benchmark.extra_info.update(workload=workload.key, contender=contender, batch=BATCH)
    benchmark(_batch(render, CONTEXT))


COMPILE_CONTENDERS = [
    "flowlang-cold", "flowlang-memoized", "jinja2", "liquid", "jmespath", "chevron",
]  # fmt: skip


def _compiler(workload: Workload, contender: str) -> Callable[[Any], Any]:
    if contender == "flowlang-cold":
        engine = flowlang.Engine(cache_size=0)
        return lambda source: engine.compile(source)
    if contender == "flowlang-memoized":
        return lambda source: flowlang.compile(source)
    if contender == "jinja2":
        return lambda _: _jinja.from_string(workload.jinja2)
    if contender == "liquid":
        return lambda _: _liquid.from_string(workload.liquid)
    if contender == "chevron":
        mustache = workload.mustache
        assert mustache is not None
        return lambda _: list(tokenize(mustache))

    def jmespath_cold(_: Any) -> Any:
        Parser.purge()
        return Parser().parse(workload.jmespath)

    return jmespath_cold


@pytest.mark.parametrize("contender", COMPILE_CONTENDERS)
@pytest.mark.parametrize("workload", WORKLOADS[:4], ids=[w.key for w in WORKLOADS[:4]])
def test_compile(benchmark: Any, workload: Workload, contender: str) -> None:
    compile_one = _compiler(workload, contender)
    compiled = compile_one(workload.flowlang)
    if contender.startswith("flowlang"):
        assert compiled.render(CONTEXT) == workload.baseline(CONTEXT)
    if contender == "chevron":
        assert chevron.render(compiled, CONTEXT) == to_text(workload.baseline(CONTEXT))
    benchmark.group = f"W7 compile {workload.key}"
    benchmark.extra_info.update(workload=f"W7 {workload.key}", contender=contender, batch=1)
    benchmark(compile_one, workload.flowlang)
