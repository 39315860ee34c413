"""Long paths (issue 14): chains of thousands of segments compile in linear time and memory,
and mean what their shorter pieces mean, on both backends.

A chain is built with the deep context it walks, so every form of it (the plain path, ``?? 1``,
``| default(1)``, a comparison, a parenthesized prefix indexed further) must give the leaf; a
chain cut in two and evaluated piece by piece must give what the whole gives; a strict miss at
any segment names the same prefix the short path would. Deep nesting stays a syntax error
naming the depth limit, however long the text the limits let through.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlang
from flowlang.errors import FlowSyntaxError, FlowUndefinedError
from flowlang.expr import ast
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.limits import Limits
from flowlang.expr.parser import _parse_plain_path, _parse_with_lark
from flowlang.expr.printer import print_expression

#: Limits that let a chain of thousands of segments through (the default is 4,096 characters).
LONG = Limits(max_expression_length=200_000, max_template_length=400_000, max_nodes=200_000)

#: Segment kinds: canonical text, and how the container around a value is built for it.
SEGMENTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "member": (".x", lambda value: {"x": value}),
    "keyword": (".in", lambda value: {"in": value}),
    "string": ('["k y"]', lambda value: {"k y": value}),
    "int": ("[1]", lambda value: [None, value]),
    "negative": ("[-1]", lambda value: [0, value]),
    "dynamic": ("[v.k]", lambda value: {"d": value}),
    "dynamic_int": ("[v.n]", lambda value: [None, value]),
}
#: The context keys a dynamic segment reads.
VARIABLES = {"k": "d", "n": 1}
#: A container missing what each kind looks up (for strict misses).
EMPTY = {"member": {}, "keyword": {}, "string": {}, "dynamic": {}}
STATIC = ("member", "keyword", "string", "int", "negative")

LEAF = "leaf"


def text_of(kinds: list[str]) -> str:
    """The canonical text of the segments."""
    return "".join(SEGMENTS[kind][0] for kind in kinds)


def nest(kinds: list[str], leaf: Any) -> Any:
    """The value that ``root`` + the segments walks down to ``leaf`` (built inside out)."""
    value = leaf
    for kind in reversed(kinds):
        value = SEGMENTS[kind][1](value)
    return value


def context_for(kinds: list[str], leaf: Any = LEAF) -> dict[str, Any]:
    return {"a": nest(kinds, leaf), "v": VARIABLES}


def chains(kinds: tuple[str, ...], longest: int) -> st.SearchStrategy[list[str]]:
    """A pattern of a few segments repeated up to ``longest`` segments in all."""
    pattern = st.lists(st.sampled_from(kinds), min_size=1, max_size=12)
    return st.builds(
        lambda found, times: (found * times)[:longest],
        pattern,
        st.integers(min_value=1, max_value=longest),
    )


#: Every backend this process has (the suite's ``make_engine`` fixture is function-scoped,
#: which hypothesis refuses).
BACKENDS = pytest.mark.parametrize("backend_name", sorted(AVAILABLE))


def long_engine(backend_name: str, **options: Any) -> flowlang.Engine:
    return flowlang.Engine(backend=backend_name, limits=LONG, cache_size=0, **options)


@BACKENDS
@settings(max_examples=10)
@given(kinds=chains(tuple(SEGMENTS), 1_000), cut=st.integers(min_value=0, max_value=1_000))
def test_every_form_of_a_long_chain_reaches_its_leaf(
    backend_name: str, kinds: list[str], cut: int
) -> None:
    engine = long_engine(backend_name)
    segments = text_of(kinds)
    context = context_for(kinds)
    cut = min(cut, len(kinds) - 1)
    prefix, rest = text_of(kinds[:cut]), text_of(kinds[cut:])
    forms = {
        "plain": f"a{segments}",
        "coalesce": f"a{segments} ?? 1",
        "default": f"a{segments} | default(1)",
        "coalesced prefix": f"(a{prefix} ?? null){rest}",
        "filtered prefix": f"(a{prefix} | default(null)){rest}",
        "inside a list": f"[a{segments}][0]",
    }
    for name, form in forms.items():
        assert engine.render(f"<<{form}>>", context) == LEAF, name
    assert engine.render(f'<<a{segments} == "leaf">>', context) is True
    assert engine.render(f"<<a{segments} != a{segments}>>", context) is False
    # The chain cut in two, evaluated piece by piece, gives what the whole gives.
    middle = engine.render(f"<<a{prefix}>>", context)
    assert engine.render(f"<<h{rest}>>", {"h": middle, "v": VARIABLES}) == LEAF
    # Text around the hole renders it too.
    assert engine.render(f"[<<a{segments}>>]", context) == "[leaf]"


@BACKENDS
@settings(max_examples=10)
@given(kinds=chains(tuple(SEGMENTS), 1_000), miss=st.integers(min_value=0, max_value=1_000))
def test_a_strict_miss_anywhere_in_a_long_chain_names_its_prefix(
    backend_name: str, kinds: list[str], miss: int
) -> None:
    miss = min(miss, len(kinds) - 1)
    kind = kinds[miss]
    container = EMPTY.get(kind, [])  # an empty list has no item 1 nor -1
    context = {"a": nest(kinds[:miss], container), "v": VARIABLES}
    engine = long_engine(backend_name, strict=True)
    whole = f"a{text_of(kinds)}"
    # Left of ``??`` a path is soft: the same miss gives the fallback, not an error.
    assert engine.render(f"<<{whole} ?? 1>>", context) == 1
    with pytest.raises(FlowUndefinedError) as raised:
        engine.render(f"<<{whole}>>", context)
    error = raised.value
    assert error.path == whole
    assert error.resolved == f"a{text_of(kinds[:miss])}"
    assert error.segment == SEGMENTS[kind][0]
    # The same miss in a chain cut just after the failing segment reads the same.
    with pytest.raises(FlowUndefinedError) as short:
        engine.render(f"<<a{text_of(kinds[: miss + 1])}>>", context)
    assert (short.value.resolved, short.value.segment) == (error.resolved, error.segment)


@settings(max_examples=10)
@given(kinds=chains(STATIC, 2_000))
def test_lark_and_the_fast_path_build_the_same_long_tree(kinds: list[str]) -> None:
    text = f"a{text_of(kinds)}"
    fast = _parse_plain_path(text, 0)
    assert fast is not None
    grouped = _parse_with_lark(f"({text})", f"({text})", 0)  # parentheses force Lark
    assert grouped == fast
    assert print_expression(grouped) == text
    # Spans too: the parenthesized text is shifted by one character.
    assert isinstance(grouped, ast.Path)
    assert [(s.start - 1, s.end - 1) for s in grouped.segments] == [
        (s.start, s.end) for s in fast.segments
    ]
    assert (grouped.start - 1, grouped.end - 1) == (fast.start, fast.end)


def test_a_syntax_error_at_the_end_of_a_long_chain_points_at_it() -> None:
    engine = flowlang.Engine(limits=LONG, cache_size=0)
    for count in (1, 3_000):
        chain = "a" + ".b[0]" * count
        with pytest.raises(FlowSyntaxError) as raised:
            engine.compile(f"<<{chain}. ?? 1>>")
        assert raised.value.message == "expected a name after '.', found '??'"
        assert (raised.value.offset, raised.value.end) == (len(chain) + 4, len(chain) + 6)
        with pytest.raises(FlowSyntaxError) as raised:
            engine.compile(f"<<{chain}[1 ?? 1>>")
        assert raised.value.message == (
            "expected ']' to close the index, found the end of the expression"
        )


def _peak_bytes(engine: flowlang.Engine, text: str) -> int:
    tracemalloc.start()
    try:
        engine.compile(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", ["", " ?? 1"], ids=["fast path", "lark"])
def test_compiling_a_long_path_takes_memory_linear_in_its_length(suffix: str) -> None:
    # Each path label used to be the whole prefix: 4x the segments took 14-16x the memory.
    engine = flowlang.Engine(limits=LONG, cache_size=0)
    small = _peak_bytes(engine, "<<a" + ".a" * 1_000 + suffix + ">>")
    large = _peak_bytes(engine, "<<a" + ".a" * 4_000 + suffix + ">>")
    assert large < 6 * small


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("not", "not " * 20_000 + "a"),
        ("parentheses", "(" * 20_000 + "a" + ")" * 20_000),
        ("index", "a" + "[a" * 20_000 + "]" * 20_000),
        ("list", "[" * 20_000 + "]" * 20_000),
        ("filter arguments", "a" + " | default(a" * 20_000 + ")" * 20_000),
        ("not in an index", "a[" + "not " * 20_000 + "b]"),
    ],
)
def test_deep_nesting_is_refused_by_the_depth_limit(name: str, text: str) -> None:
    engine = flowlang.Engine(limits=LONG, cache_size=0)
    with pytest.raises(FlowSyntaxError) as raised:
        engine.compile(f"<<{text}>>")
    assert raised.value.message == "expression nests deeper than 32 levels", name


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("coalesce", " ?? ".join(["a.b[0]"] * 5_000)),
        ("and", " and ".join(["a.b"] * 5_000)),
        ("pipe", "a" + " | upper" * 5_000),
        ("list", "[" + ", ".join(["a.b"] * 5_000) + "]"),
    ],
)
def test_long_flat_operator_chains_compile(name: str, text: str) -> None:
    engine = flowlang.Engine(limits=LONG, cache_size=0)
    template = engine.compile(f"<<{text}>>")
    assert print_expression(template.tree.holes[0].expr) == text, name
