"""Properties: totality, round trips, the fast path, backend agreement, lenient rendering."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from strategies import (
    BrokenList,
    contexts,
    evaluable_expressions,
    expressions,
    hostile_contexts,
    json_values,
    rich_contexts,
)
from support import same

import flowlang
from flowlang.expr import ast
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.limits import Limits
from flowlang.expr.parser import (
    _parse_plain_path,
    _parse_with_lark,
    parse_expression,
    parse_template,
)
from flowlang.expr.printer import print_expression, print_template
from flowlang.expr.syntax import SYNTAXES

LIMITS = Limits()
FLOWLANG = SYNTAXES["flowlang"]
TOKENS = [
    "<<",
    ">>",
    "{{",
    "}}",
    "\\",
    "a",
    "b.c",
    "[",
    "]",
    "(",
    ")",
    "0",
    "-1",
    "2.5",
    '"',
    "'",
    "“",
    "”",
    "‘",
    "’",
    ",",
    ".",
    "|",
    "??",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "or",
    "not",
    "in",
    "contains",
    "starts_with",
    "ends_with",
    "true",
    "null",
    "lower",
    "default(",
    " ",
    "\n",
    "é",
    "\x00",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)


def _check_compiles_or_syntax_error(source: str, syntax: str) -> None:
    try:
        template = flowlang.Engine(syntax=syntax, cache_size=0).compile(source)
    except flowlang.FlowSyntaxError as error:
        rendered = str(error)
        assert "^" in rendered and error.message in rendered
        assert error.line >= 1 and error.column >= 1
        assert 0 <= error.offset <= len(source)
    else:
        assert template.source == source


@given(st.text(max_size=60), st.sampled_from(sorted(SYNTAXES)))
def test_any_text_compiles_or_raises_a_syntax_error(source: str, syntax: str) -> None:
    _check_compiles_or_syntax_error(source, syntax)


@given(token_soup, st.sampled_from(sorted(SYNTAXES)))
def test_any_token_soup_compiles_or_raises_a_syntax_error(source: str, syntax: str) -> None:
    _check_compiles_or_syntax_error(source, syntax)
    _check_compiles_or_syntax_error("<<" + source + ">>", syntax)


@given(expressions())
def test_printed_expressions_parse_back_to_the_same_tree(tree: Any) -> None:
    assume(tree.depth <= LIMITS.max_depth)
    text = print_expression(tree)
    parsed = parse_expression(text, 0, len(text), LIMITS)
    assert parsed == tree
    assert print_expression(parsed) == text


def _templates(syntax_name: str) -> st.SearchStrategy[ast.TemplateTree]:
    opener = SYNTAXES[syntax_name].open
    text = st.text(
        st.sampled_from(["a", " ", "\\", "<", ">", "{", "}", "é", "\n"]), min_size=1, max_size=8
    )
    holes = (
        expressions(max_leaves=4).filter(lambda tree: tree.depth <= LIMITS.max_depth).map(ast.Hole)
    )

    def build(parts: list[Any], starts_with_text: bool) -> ast.TemplateTree:
        out: list[Any] = []
        for position, part in enumerate(parts):
            is_text = (position % 2 == 0) == starts_with_text
            out.append(part[0] if is_text else part[1])
        for position, part in enumerate(out[:-1]):
            # A text that ends with the delimiter's first character would merge into the hole.
            if isinstance(part, str) and part.endswith(opener[0]):
                out[position] = part + "a"
        return ast.TemplateTree(tuple(out))

    return st.builds(build, st.lists(st.tuples(text, holes), max_size=4), st.booleans())


@pytest.mark.parametrize("syntax_name", sorted(SYNTAXES))
@given(data=st.data())
def test_printed_templates_parse_back_to_the_same_tree(
    syntax_name: str, data: st.DataObject
) -> None:
    syntax = SYNTAXES[syntax_name]
    tree = data.draw(_templates(syntax_name))
    text = print_template(tree, syntax)
    assert parse_template(text, syntax, LIMITS) == tree


simple_paths = st.builds(
    lambda root, segments, spaces: (
        spaces[0]
        + root
        + "".join(f"{spaces[(i % 3) + 1]}{segment}" for i, segment in enumerate(segments))
        + spaces[-1]
    ),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,5}", fullmatch=True),
    st.lists(
        st.one_of(
            st.from_regex(r"\. ?[A-Za-z_][a-z0-9_-]{0,4}", fullmatch=True),
            st.from_regex(r"\[ ?-?[0-9]{1,4} ?\]", fullmatch=True),
            st.from_regex(r"""\["[a-z ]{0,5}"\]|\['[A-Z ]{0,5}'\]""", fullmatch=True),
        ),
        max_size=5,
    ),
    st.lists(st.sampled_from(["", " ", "  ", "\t"]), min_size=5, max_size=5),
)


def _spans(node: Any) -> list[tuple[str, int, int]]:
    out = [(type(node).__name__, node.start, node.end)]
    if isinstance(node, ast.Path):
        out += _spans(node.base)
        for segment in node.segments:
            out += _spans(segment)
    elif isinstance(node, ast.Index):
        out += _spans(node.index)
    return out


@given(simple_paths, st.integers(0, 5))
def test_fast_path_builds_the_same_tree_as_the_grammar(text: str, offset: int) -> None:
    source = "x" * offset + text
    fast = _parse_plain_path(text, offset)
    try:
        slow = _parse_with_lark(source, text, offset)
    except flowlang.FlowSyntaxError:
        assert fast is None  # e.g. a keyword as root: only the grammar may decide
        return
    if fast is not None:
        assert fast == slow
        assert _spans(fast) == _spans(slow)


def _outcome(engine: flowlang.Engine, source: str, context: Any) -> tuple[str, Any]:
    try:
        return "value", engine.render(source, context)
    except flowlang.FlowError as error:
        return type(error).__name__, str(error)


def _agree(left: Any, right: Any) -> bool:
    if (
        isinstance(left, float)
        and isinstance(right, float)
        and math.isnan(left)
        and math.isnan(right)
    ):
        return True
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        return type(left) is type(right) and repr(left) == repr(right)  # NaN: never ==
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_agree, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_agree(left[k], right[k]) for k in left)
    return same(left, right)


needs_cython = pytest.mark.skipif(
    "cython" not in AVAILABLE, reason="the cython backend is not available"
)


# Backend agreement is the property that guards the twin: it gets more examples than the rest.
MANY = max(500, settings.default.max_examples)


def _outcomes_on_both(strict: bool, tree: Any, context: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The cython and the python outcome of ``tree``, as a whole template and inside text."""
    assume(tree.depth <= LIMITS.max_depth)
    source = "<<" + print_expression(tree) + ">>"
    return [
        (
            _outcome(flowlang.Engine(backend="cython", strict=strict), template, context),
            _outcome(flowlang.Engine(backend="python", strict=strict), template, context),
        )
        for template in (source, "x " + source)
    ]


@needs_cython
@pytest.mark.parametrize("strict", [False, True])
@settings(max_examples=MANY)
@given(evaluable_expressions(), contexts)
def test_backends_agree(strict: bool, tree: Any, context: dict[str, Any]) -> None:
    for cython, python in _outcomes_on_both(strict, tree, context):
        assert cython[0] == python[0], (cython, python)
        assert _agree(cython[1], python[1]), (cython, python)


def _same_value(left: Any, right: Any) -> bool:
    """The same object, or equal by repr (hostile values must never be compared with ==)."""
    return left is right or repr(left) == repr(right)


@needs_cython
@pytest.mark.parametrize("strict", [False, True])
@settings(max_examples=300, deadline=None)
# Strict: the undefined error's message read the length of a list whose __len__ raises.
@example(ast.Path(ast.Root("a"), (ast.Member("a"),)), {"a": BrokenList([])})
@example(ast.Path(ast.Root("a"), (ast.Index(ast.Literal(5)),)), {"a": BrokenList([1])})
@example(
    ast.Path(ast.Root("a"), (ast.Member("b"), ast.Index(ast.Literal(0)))),
    {"a": {"b": BrokenList([[]])}},
)
@given(evaluable_expressions(), hostile_contexts)
def test_backends_agree_on_hostile_values(strict: bool, tree: Any, context: dict[str, Any]) -> None:
    """Subclasses whose overrides raise, containers whose code raises, raising dict keys: both
    backends give the same value or the same FlowError, and nothing else escapes."""
    for cython, python in _outcomes_on_both(strict, tree, context):
        assert cython[0] == python[0], (cython, python)
        assert _same_value(cython[1], python[1]), (cython, python)


@needs_cython
@pytest.mark.parametrize("strict", [False, True])
@settings(max_examples=MANY)
@example(ast.Compare("<", ast.Path(ast.Root("a"), ()), ast.Literal(1)), {"a": Decimal("sNaN")})
@example(
    ast.Compare("==", ast.Path(ast.Root("a"), ()), ast.Path(ast.Root("b"), ())),
    {"a": Decimal("1E+5000"), "b": 10**5000},
)
@given(evaluable_expressions(), rich_contexts)
def test_backends_agree_on_decimals_and_dates(
    strict: bool, tree: Any, context: dict[str, Any]
) -> None:
    """Contexts with Decimals, dates, datetimes (naive and aware) and times: same value or
    same error on both backends."""
    for cython, python in _outcomes_on_both(strict, tree, context):
        assert cython[0] == python[0], (cython, python)
        assert _agree(cython[1], python[1]), (cython, python)


@settings(max_examples=MANY)
@given(evaluable_expressions(), contexts, st.sampled_from(["<<{}>>", "text <<{}>> text"]))
def test_lenient_rendering_never_raises_on_json_contexts(
    tree: Any, context: dict[str, Any], shape: str
) -> None:
    assume(tree.depth <= LIMITS.max_depth)
    template = flowlang.Engine(cache_size=0).compile(shape.format(print_expression(tree)))
    result = template.render(context)
    if not template.is_expression:
        assert isinstance(result, str)


@given(json_values)
def test_any_json_value_renders_as_text_and_json(value: Any) -> None:
    text = flowlang.render("v=<<a>>", {"a": value})
    assert text.startswith("v=")
    flowlang.render("<<a | json>>", {"a": value})


@needs_cython
@example([float("inf"), float("nan")])  # both are found; the first in document order wins
@example({"a": [1.5, {"b": float("-inf")}], "c": float("nan")})
@given(json_values)
def test_body_scan_twins_agree(value: Any) -> None:
    from flowlang import _expr  # type: ignore[attr-defined]
    from flowlang.expr.values import first_non_finite

    python, compiled = first_non_finite(value), _expr.first_non_finite(value)
    assert (python is None) == (compiled is None)
    if python is not None:
        assert repr(python) == repr(compiled)


@needs_cython
@pytest.mark.parametrize("depth", [1, 63, 64, 65, 500])
def test_body_scan_twins_agree_on_deep_data(depth: int) -> None:
    from flowlang import _expr  # type: ignore[attr-defined]
    from flowlang.expr.values import first_non_finite

    value: Any = float("-inf")
    for level in range(depth):
        value = {"k": [value, "x"]} if level % 2 else [1, value]
    assert repr(_expr.first_non_finite(value)) == repr(first_non_finite(value)) == "-inf"


@needs_cython
@example([[1, "ab"], {"k": [2**70, None]}], 0)
@example({"a": {"b": (1.5, True)}, 7: "x"}, 20)
@given(json_values | st.lists(json_values, max_size=3).map(tuple), st.integers(0, 120))
def test_json_length_twins_agree(value: Any, limit: int) -> None:
    """The compiled measure of JSON text (the rendered-size limit) gives the twin's answer, and
    a value it lets through is written in at most a few times the limit."""
    from flowlang import _expr  # type: ignore[attr-defined]
    from flowlang.expr.values import json_length_exceeds, to_json

    python = json_length_exceeds(value, limit)
    assert _expr.json_length_exceeds(value, limit) is python
    text = to_json(value)
    assert python or len(text) <= 12 * max(limit, 1) + 24
    if len(text) <= limit:
        assert not python  # a lower bound: never refuses what fits


@needs_cython
@pytest.mark.parametrize("depth", [1, 63, 64, 65, 300])
def test_json_length_twins_agree_on_deep_and_cyclic_data(depth: int) -> None:
    from flowlang import _expr  # type: ignore[attr-defined]
    from flowlang.expr.values import json_length_exceeds

    value: Any = ["leaf"]
    for level in range(depth):
        value = {"k": [value, "x"]} if level % 2 else (1, value)
    cycle: list[Any] = [value]
    cycle.append(cycle)
    for limit in (0, 5, 50, 500, 5000):
        for item in (value, cycle):
            assert _expr.json_length_exceeds(item, limit) is json_length_exceeds(item, limit)
