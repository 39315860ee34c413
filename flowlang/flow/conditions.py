"""Conditions: the operators of Condition Splitter rows and workflow conditions."""

from __future__ import annotations

__all__ = ["OPERATORS", "is_empty"]

from collections.abc import Callable
from typing import Any

from flowlang.expr.values import contains, ends_with, equals, order, starts_with


def is_empty(value: Any) -> bool:
    """Null, "", an empty list or an empty map (``0`` and ``false`` are not empty)."""
    if value is None:
        return True
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) == 0
    try:
        return hasattr(value, "keys") and len(value) == 0
    except TypeError:
        return False


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
