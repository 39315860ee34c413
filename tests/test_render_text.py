"""Rendering text templates: the text of each hole and the joined result, on both backends.

The compiled backend writes integers in C and joins up to 32 parts into one string of the final
size (ext/_expr.pyx: _int_decimal, Concat, _joined); these cases pin what that must keep: the
twin's text for every integer and character width, the limit checked part by part, and no
reference kept or lost when a later hole fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowlang
from flowlang import FlowLimitError, FlowUndefinedError, Limits
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.values import to_text

EngineFactory = Callable[..., flowlang.Engine]

INTEGERS = [
    0, 1, -1, 7, 9, 10, -10, 99, 100, 12345, -98765, 10**17, 10**18 - 1, 10**18, -(10**18),
    2**31, 2**32, 2**62, 2**63 - 1, -(2**63), -(2**63) + 1, 2**63, -(2**63) - 1, 2**64 - 1,
    2**64, -(2**64), 10**19, 10**30, -(10**30),
]  # fmt: skip


@pytest.mark.parametrize("number", INTEGERS, ids=str)
def test_integers_render_as_their_decimal_text(make_engine: EngineFactory, number: int) -> None:
    engine = make_engine()
    assert engine.render("n=<<n>>;", {"n": number}) == f"n={number};"
    assert engine.render("<<n>><<n>>", {"n": number}) == f"{number}{number}"


def test_integers_beyond_the_digit_limit_render_in_full(make_engine: EngineFactory) -> None:
    big = -(3**20_000)  # more digits than Python's int-to-str limit
    text = make_engine().render("<<n>>!", {"n": big})
    assert text == to_text(big) + "!" and text.startswith("-") and len(text) > 9000


def test_booleans_and_null_keep_their_texts(make_engine: EngineFactory) -> None:
    context = {"yes": True, "no": False, "none": None, "zero": 0}
    assert make_engine().render("<<yes>>|<<no>>|<<none>>|<<zero>>", context) == "true|false||0"


WIDTHS = ["plain", "café", "€uro", "日本語", "😀 emoji", "", "\x00nul", "\ud800 lone"]


@pytest.mark.parametrize("literal", WIDTHS, ids=ascii)
@pytest.mark.parametrize("first", WIDTHS, ids=ascii)
@pytest.mark.parametrize("second", WIDTHS, ids=ascii)
def test_parts_of_every_character_width_join_in_order(
    make_engine: EngineFactory, literal: str, first: str, second: str
) -> None:
    engine = make_engine()
    source = "<<a>>" + literal + "<<b>>" + literal + "<<a>>"
    rendered = engine.render(source, {"a": first, "b": second})
    assert rendered == first + literal + second + literal + first
    assert type(rendered) is str


@pytest.mark.parametrize("holes", [1, 15, 16, 17, 31, 32, 33, 100])
def test_templates_of_many_parts_join_them_all(make_engine: EngineFactory, holes: int) -> None:
    source = "".join(f"<<v{index}>>," for index in range(holes))
    context = {f"v{index}": ("é" if index % 3 else index) for index in range(holes)}
    expected = "".join(f"{context[f'v{index}']}," for index in range(holes))
    assert make_engine().render(source, context) == expected


@pytest.mark.parametrize("holes", [3, 40])  # held in C, and joined through a list
def test_the_limit_is_checked_part_by_part(make_engine: EngineFactory, holes: int) -> None:
    engine = make_engine(limits=Limits(max_output=100), strict=True)
    source = "<<long>>" * holes + "<<missing>>"
    with pytest.raises(FlowLimitError, match="longer than the limit of 100"):
        engine.render(source, {"long": "x" * 40})
    # under the limit, the missing hole is the error: nothing after the limit was evaluated
    with pytest.raises(FlowUndefinedError):
        engine.render("<<long>>" * 2 + "<<missing>>", {"long": "x" * 40})
    assert engine.render("<<long>>" * 2 + "!", {"long": "x" * 49}) == "x" * 98 + "!"


@pytest.mark.parametrize("holes", [3, 40])
def test_a_failing_hole_keeps_no_reference_to_the_parts_before_it(
    make_engine: EngineFactory, holes: int
) -> None:
    engine = make_engine(strict=True)
    piece = "".join(["kept", "-by-", "the-context"])  # one object, not interned
    template = engine.compile("<<piece>>-" * holes + "<<missing>>")
    before = sys.getrefcount(piece)
    for _ in range(200):
        with pytest.raises(FlowUndefinedError):
            template.render({"piece": piece})
    assert sys.getrefcount(piece) == before
    rendered = engine.compile("<<piece>>-" * holes).render({"piece": piece})
    assert rendered == f"{piece}-" * holes and sys.getrefcount(piece) == before


@given(
    st.lists(
        st.one_of(
            st.text(max_size=12),
            st.integers(),
            st.none(),
            st.booleans(),
            st.lists(st.integers(), max_size=3),
        ),
        min_size=1,
        max_size=40,
    ),
    st.text(max_size=6).filter(lambda text: "<" not in text and ">" not in text),
)
def test_backends_render_any_parts_alike(values: list[Any], separator: str) -> None:
    source = separator.join(f"<<v{index}>>" for index in range(len(values))) + "|"
    context = {f"v{index}": value for index, value in enumerate(values)}
    expected = separator.join(to_text(value) for value in values) + "|"
    for backend in AVAILABLE:
        engine = flowlang.Engine(backend=backend)
        assert engine.render(source, context) == expected, backend
