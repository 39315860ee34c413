"""Growth of loading a flow (issue 14, item 4): libyaml's parser against PyYAML's own.

Chained flows of 100 to 20,000 steps (tests/big_documents.py: collect, request, set, split,
repeated) are loaded with libyaml's parser (what the loader uses when PyYAML has it) and with
the pure-Python parser, in the same run: ``load_document`` (text to data with every position)
and ``load_flow_text`` (the whole load: document, checks, compiled templates). Each result is
checked (every step there) before a figure is kept; the local exponents and, per size, the
ratio pure / libyaml are printed. Part of ``make bench-growth``:

    FLOWLANG_REQUIRE_EXTENSIONS=1 .venv/bin/python -m pytest benchmarks/test_growth_loading.py \\
        --benchmark-only -q -s -p no:cacheprovider
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from growth import Curve, measure_curve, print_curve

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from big_documents import chained_flow

import flowlang.flow.source as source
from flowlang.flow.load import load_flow_text
from flowlang.flow.source import load_document

SIZES = (100, 300, 1_000, 3_000, 10_000, 20_000)


@functools.cache
def _flow_text(size: int) -> str:
    return chained_flow(size)


@contextmanager
def _pure_parser() -> Iterator[None]:
    """Load with PyYAML's own parser, as where PyYAML is built without libyaml."""
    original = source._CParser
    source._CParser = None
    try:
        yield
    finally:
        source._CParser = original


def _with_parser(parser: str, load: Callable[[str], Any]) -> Callable[[str], Any]:
    if parser == "libyaml":
        return load

    def pure(text: str) -> Any:
        with _pure_parser():
            return load(text)

    return pure


def _steps_of_document(size: int, document: Any) -> None:
    assert len(document.data["steps"]) == size + 1


def _steps_of_flow(size: int, flow: Any) -> None:
    assert len(flow.steps) == size + 1 and "s0" in flow.steps and "done" in flow.steps


LOADS: dict[str, tuple[Callable[[str], Any], Callable[[int, Any], None], int]] = {
    "load_document": (load_document, _steps_of_document, 2),
    "load_flow_text": (load_flow_text, _steps_of_flow, 1),
}


def _ratio_table(libyaml: Curve, pure: Curve) -> str:
    lines = [
        f"**{libyaml.name.split(',')[0]}: pure parser / libyaml, same run**",
        "",
        "| steps | libyaml | pure parser | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for fast, slow in zip(libyaml.points, pure.points, strict=True):
        lines.append(
            f"| {fast.size:,} | {fast.seconds * 1e3:.1f} ms | {slow.seconds * 1e3:.1f} ms"
            f" | {slow.seconds / fast.seconds:.2f}x |"
        )
    return "\n".join(lines)


@pytest.mark.skipif(source._CParser is None, reason="PyYAML is built without libyaml")
@pytest.mark.parametrize("load", LOADS)
def test_load_chained_flows(benchmark: Any, request: pytest.FixtureRequest, load: str) -> None:
    function, check, rounds = LOADS[load]
    for parser in ("libyaml", "pure parser"):  # first use (imports, the grammar) is not timed
        check(SIZES[0], _with_parser(parser, function)(_flow_text(SIZES[0])))

    def both() -> tuple[Curve, Curve]:
        return tuple(  # type: ignore[return-value]
            measure_curve(
                f"{load} of a chained flow, {parser}",
                "steps",
                SIZES,
                setup=_flow_text,
                run=_with_parser(parser, function),
                rounds=rounds,
                check=check,
            )
            for parser in ("libyaml", "pure parser")
        )

    libyaml, pure = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.group = "G growth: loading"
    print_curve(request, libyaml)
    print_curve(request, pure)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + _ratio_table(libyaml, pure) + "\n")
