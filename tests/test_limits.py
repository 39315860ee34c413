"""Hostile input: limits are enforced while parsing, rendering never crashes or recurses deeply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import flowlang
from flowlang import FlowLimitError, FlowSyntaxError, Limits

EngineFactory = Callable[..., flowlang.Engine]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("<<" + "a." * 3000 + "a>>", "expression is longer than 4096 characters"),
        ("<<" + "(" * 40 + "x" + ")" * 40 + ">>", "expression nests deeper than 32 levels"),
        ("<<" + "[" * 40 + "]" * 40 + ">>", "expression nests deeper than 32 levels"),
        ("<<" + "not " * 40 + "x>>", "expression nests deeper than 32 levels"),
        (
            "<<" + "x | default(" * 40 + "1" + ")" * 40 + ">>",
            "expression nests deeper than 32 levels",
        ),
        ("<<" + "(" * 3000 + ">>", "expression nests deeper than 32 levels"),
        ("<<" + "[" * 3000 + ">>", "expression nests deeper than 32 levels"),
        ("<<a" + "[0]" * 1000 + ">>", None),  # a long flat path is fine: it does not nest
        ("<<" + " and ".join(["a"] * 600) + ">>", None),  # flat operators do not nest either
        ("x" * 100_001, "template is longer than 100000 characters"),
    ],
    ids=[
        "long",
        "parens",
        "lists",
        "nots",
        "filter args",
        "unclosed parens",
        "unclosed lists",
        "flat path",
        "flat and",
        "huge text",
    ],
)
def test_limits_are_syntax_errors_never_recursion(
    source: str, message: str | None, make_engine: EngineFactory
) -> None:
    engine = make_engine()
    if message is None:
        engine.compile(source).render({"a": [[[]]]})
        return
    with pytest.raises(FlowSyntaxError) as caught:
        engine.compile(source)
    assert caught.value.message == message
    assert "^" in str(caught.value)


def test_node_limit_counts_nodes(make_engine: EngineFactory) -> None:
    engine = make_engine(limits=Limits(max_nodes=50))
    engine.compile("<<[" + ", ".join(["1"] * 40) + "]>>")
    with pytest.raises(FlowSyntaxError, match=r"more than 50 nodes"):
        engine.compile("<<[" + ", ".join(["1"] * 60) + "]>>")


def test_limits_are_configurable(make_engine: EngineFactory) -> None:
    engine = make_engine(limits=Limits(max_depth=3, max_expression_length=20))
    engine.compile("<<((x))>>")
    with pytest.raises(FlowSyntaxError, match="deeper than 3"):
        engine.compile("<<((((x))))>>")
    with pytest.raises(FlowSyntaxError, match="longer than 20"):
        engine.compile("<<" + "a" * 21 + ">>")


@pytest.mark.parametrize(
    "bad", [{"max_depth": 101}, {"max_depth": 0}, {"max_output": -1}, {"max_nodes": 1.5}]
)
def test_bad_limits_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Limits\.max_"):
        Limits(**bad)


def test_rendered_text_is_capped(make_engine: EngineFactory) -> None:
    engine = make_engine(limits=Limits(max_output=100))
    context = {"short": "x" * 50, "long": "y" * 101}
    assert engine.render("<<short>><<short>>", context) == "x" * 100
    with pytest.raises(FlowLimitError, match="longer than the limit of 100"):
        engine.render("<<short>><<short>>!", context)
    with pytest.raises(FlowLimitError):
        engine.render("<<long | upper>>", context)
    assert engine.render("<<long>>", context) == "y" * 101  # a native value is passed, not rendered


def test_join_and_json_of_huge_data_are_capped(make_engine: EngineFactory) -> None:
    engine = make_engine()
    context = {"items": ["abc"] * 50_000}
    with pytest.raises(FlowLimitError):
        engine.render("<<items | join>>", context)
    with pytest.raises(FlowLimitError):
        engine.render("<<items | json>>", context)


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"k": [value]}
    return value


def test_deep_and_cyclic_data_render_without_recursion(make_engine: EngineFactory) -> None:
    engine = make_engine()
    deep = _deep(5000)
    text = engine.render("<<d | json>>", {"d": deep})
    assert text.startswith('{"k":[{"k":[') and text.endswith("]}" * 5000)
    assert engine.render("<<d == e>>", {"d": deep, "e": _deep(5000)}) is True
    cycle: dict[str, Any] = {"name": "loop"}
    cycle["self"] = cycle
    assert engine.render("<<c | json>>", {"c": cycle}) == '{"name":"loop","self":null}'
    assert engine.render("<<c == c>>", {"c": cycle}) is True


def test_huge_integers_render_in_full(make_engine: EngineFactory) -> None:
    engine = make_engine()
    big = 7**12_000  # more digits than Python's int-to-str limit
    digits = engine.render("n=<<n>>", {"n": big})[2:]
    assert len(digits) == len(str(big // 10**8000)) + 8000  # str() works below the limit
    assert digits[-100:] == str(big % 10**100).rjust(100, "0")
    assert engine.render("<<[n] | json>>", {"n": 2**70}) == "[1180591620717411303424]"


def test_opaque_values_are_inert(make_engine: EngineFactory) -> None:
    class Sneaky:
        def __str__(self) -> str:
            raise AssertionError("never called")

        def __bool__(self) -> bool:
            raise AssertionError("never called")

        def __eq__(self, other: object) -> bool:
            raise AssertionError("never called")

        __hash__ = object.__hash__

    engine = make_engine()
    context = {"o": Sneaky(), "m": {"o": Sneaky()}}
    assert engine.render("[<<o>>]", context) == "[]"
    assert engine.render("<<m | json>>", context) == '{"o":null}'
    assert engine.render("<<o.name>>", context) is None
    assert engine.render("<<o == 1>>", context) is False
    assert engine.render("<<not o>>", context) is False
    assert engine.render("<<o ?? 1>>", context) is context["o"]


def test_nan_and_infinity_render_as_null(make_engine: EngineFactory) -> None:
    engine = make_engine()
    context = {"nan": float("nan"), "inf": float("inf")}
    assert engine.render("[<<nan>>|<<inf>>]", context) == "[|]"
    assert engine.render("<<[nan, inf] | json>>", context) == "[null,null]"
    assert engine.render("<<nan == nan>>", context) is False


def test_lone_surrogates_are_escaped_in_json(make_engine: EngineFactory) -> None:
    assert make_engine().render("<<s | json>>", {"s": "a\ud800b"}) == '"a\\ud800b"'


def test_a_template_in_data_is_never_evaluated(make_engine: EngineFactory) -> None:
    context = {"contact": {"name": "<<secrets.token>>"}, "secrets": {"token": "s3cr3t"}}
    assert make_engine().render("Hi <<contact.name>>", context) == "Hi <<secrets.token>>"
