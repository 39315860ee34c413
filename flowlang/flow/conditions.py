"""Conditions: the operators of Condition Splitter rows and workflow conditions."""

from __future__ import annotations

__all__ = ["OPERATORS", "compile_rows", "is_empty"]

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flowlang.engine import Engine, Template
from flowlang.expr import ir
from flowlang.expr.filters import BUILTIN_FILTERS, is_empty
from flowlang.expr.values import contains, ends_with, equals, order, starts_with

#: Operator name to test of (property, value); the value is None for the unary ones.
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": equals,
    "not_equals": lambda a, b: not equals(a, b),
    "contains": contains,
    "not_contains": lambda a, b: not contains(a, b),
    "starts_with": starts_with,
    "ends_with": ends_with,
    "greater_than": lambda a, b: order(">", a, b),
    "greater_or_equal": lambda a, b: order(">=", a, b),
    "less_than": lambda a, b: order("<", a, b),
    "less_or_equal": lambda a, b: order("<=", a, b),
    "is_empty": lambda a, _: is_empty(a),
    "is_not_empty": lambda a, _: not is_empty(a),
}


#: Operators that are expression comparisons, for rows evaluated by the compiled core.
_AS_COMPARISON = {
    "equals": "==",
    "not_equals": "!=",
    "contains": "contains",
    "not_contains": "not contains",
    "starts_with": "starts_with",
    "ends_with": "ends_with",
    "greater_than": ">",
    "greater_or_equal": ">=",
    "less_than": "<",
    "less_or_equal": "<=",
}
_LENGTH = BUILTIN_FILTERS["length"]


def _operand(value: Any) -> ir.Node | None:
    """The IR of a row's property or value, or None when it is neither a template nor a literal."""
    if value is None:
        return ir.Const(None)
    template = value.template
    if template is None:
        return ir.Const(value.literal)
    return template.lowered if isinstance(template, Template) else None


def compile_rows(rows: Sequence[Any], engine: Engine) -> Callable[[Mapping[str, Any]], Any] | None:
    """One compiled evaluator for "every row holds", or None when a row cannot be lowered.

    Each row becomes the expression comparison with the same semantics (``is_empty`` is
    ``(x | length) == 0``, true exactly for null, "", [] and {}).
    """
    tests: list[ir.Node] = []
    for row in rows:
        left, right = _operand(row.property), _operand(row.value)
        if left is None or right is None:
            return None
        if row.operator in ("is_empty", "is_not_empty"):
            length = ir.Pipe(left, (ir.FilterApplication("length", _LENGTH.function, (), True),))
            operator = "==" if row.operator == "is_empty" else "!="
            tests.append(ir.Compare(operator, length, ir.Const(0)))
        else:
            tests.append(ir.Compare(_AS_COMPARISON[row.operator], left, right))
    return engine.build(ir.And(tuple(tests)))
