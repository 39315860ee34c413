"""Python backend: the pure-Python twin of the Cython evaluator, IR compiled to closures."""

from __future__ import annotations

__all__ = ["build_evaluator"]

from collections.abc import Callable
from typing import Any

from flowlang.expr import ir
from flowlang.expr.shared import apply_filter, limited_text, output_too_long, undefined_error
from flowlang.expr.values import (
    contains,
    ends_with,
    equals,
    lookup,
    order,
    starts_with,
    truthy,
)

Evaluator = Callable[[Any], Any]
_MISSING = object()


def _static_step(container: Any, key: Any, alternate: Any) -> Any:
    """One static lookup; ``_MISSING`` when absent. Plain dicts take the fast way.

    A stored key whose ``__eq__`` raises on a hash collision means missing, as in the compiled
    twin (values.py, "Hostile values").
    """
    if type(container) is dict:
        try:
            value = container.get(key, _MISSING)
        except Exception:
            value = _MISSING
        if value is _MISSING and alternate is not None:
            try:
                value = container.get(alternate, _MISSING)
            except Exception:
                value = _MISSING
        return value
    if type(container) is list and type(key) is int:
        size = len(container)
        return container[key] if -size <= key < size else _MISSING
    found, value = lookup(container, key)
    return value if found else _MISSING


def _root_value(context: Any, root: str) -> Any:
    if type(context) is dict:
        try:  # a stored key's raising __eq__: missing (inline: the hottest lookup here)
            return context.get(root, _MISSING)
        except Exception:
            return _MISSING
    found, value = lookup(context, root)
    return value if found else _MISSING


def _compare(op: str) -> Callable[[Any, Any], bool]:
    if op == "==":
        return equals
    if op == "!=":
        return lambda left, right: not equals(left, right)
    if op in ("<", "<=", ">", ">="):
        return lambda left, right: order(op, left, right)
    if op == "in":
        return lambda left, right: contains(right, left)
    if op == "not in":
        return lambda left, right: not contains(right, left)
    if op == "contains":
        return contains
    if op == "not contains":
        return lambda left, right: not contains(left, right)
    if op == "starts_with":
        return starts_with
    if op == "ends_with":
        return ends_with
    raise ValueError(f"unknown operator {op!r}")  # pragma: no cover


class _Builder:
    def __init__(self, max_output: int) -> None:
        self.max_output = max_output

    def build(self, node: ir.Node) -> Evaluator:
        method: Callable[[Any], Evaluator] = getattr(self, "build_" + type(node).__name__)
        return method(node)

    def build_Const(self, node: ir.Const) -> Evaluator:
        value = node.value
        return lambda context: value

    def build_MakeList(self, node: ir.MakeList) -> Evaluator:
        items = tuple(self.build(item) for item in node.items)
        return lambda context: [item(context) for item in items]

    def build_Path(self, node: ir.Path) -> Evaluator:
        root = node.root
        base = self.build(node.base) if node.base is not None else None
        steps = tuple(
            (segment.key, segment.alternate, None)
            if isinstance(segment, ir.StaticKey)
            else (None, None, self.build(segment.index))
            for segment in node.segments
        )
        strict = node.strict
        labels, segment_labels = node.labels, node.segment_labels

        if not strict and base is None and all(index is None for _, _, index in steps):
            if len(steps) == 1:
                ((key0, alt0, _),) = steps

                def one_step(context: Any) -> Any:
                    value = _root_value(context, root)  # type: ignore[arg-type]
                    if value is _MISSING or value is None:
                        return None
                    value = _static_step(value, key0, alt0)
                    return None if value is _MISSING else value

                return one_step

            def static_path(context: Any) -> Any:
                value = _root_value(context, root)  # type: ignore[arg-type]
                for key, alternate, _ in steps:
                    if value is _MISSING or value is None:
                        return None
                    value = _static_step(value, key, alternate)
                return None if value is _MISSING else value

            return static_path

        def path(context: Any) -> Any:
            if base is None:
                value = _root_value(context, root)  # type: ignore[arg-type]
                if value is _MISSING:
                    if strict:
                        raise undefined_error(labels, segment_labels, -1, None, root)
                    return None
            else:
                value = base(context)
            for position, (key, alternate, index) in enumerate(steps):
                if value is None:
                    if strict:
                        raise undefined_error(labels, segment_labels, position, value, root)
                    return None
                if index is None:
                    found = _static_step(value, key, alternate)
                else:
                    present, found = lookup(value, index(context))
                    if not present:
                        found = _MISSING
                if found is _MISSING:
                    if strict:
                        raise undefined_error(labels, segment_labels, position, value, root)
                    return None
                value = found
            return value

        return path

    def build_Concat(self, node: ir.Concat) -> Evaluator:
        parts = tuple(
            (part.value, None)
            if isinstance(part, ir.Const) and type(part.value) is str
            else (None, self.build(part))
            for part in node.parts
        )
        limit = self.max_output

        def concat(context: Any) -> str:
            pieces = []
            total = 0
            for text, evaluate in parts:
                if evaluate is not None:
                    value = evaluate(context)
                    text = value if type(value) is str else limited_text(value, limit)
                total += len(text)  # type: ignore[arg-type]
                if total > limit:
                    raise output_too_long(limit)
                pieces.append(text)
            return "".join(pieces)  # type: ignore[arg-type]

        return concat

    def build_Not(self, node: ir.Not) -> Evaluator:
        operand = self.build(node.operand)
        return lambda context: not truthy(operand(context))

    def build_And(self, node: ir.And) -> Evaluator:
        return self._truth(node.operands, stop_on=False)

    def build_Or(self, node: ir.Or) -> Evaluator:
        return self._truth(node.operands, stop_on=True)

    def _truth(self, items: tuple[ir.Node, ...], stop_on: bool) -> Evaluator:
        """``and`` stops at the first false operand, ``or`` at the first true one."""
        operands = tuple(self.build(item) for item in items)

        def first(context: Any) -> bool:
            for operand in operands:
                if truthy(operand(context)) is stop_on:
                    return stop_on
            return not stop_on

        return first

    def build_Coalesce(self, node: ir.Coalesce) -> Evaluator:
        operands = tuple(self.build(item) for item in node.operands)

        def first_present(context: Any) -> Any:
            value = None
            for operand in operands:
                value = operand(context)
                if value is not None:
                    return value
            return value

        return first_present

    def build_Compare(self, node: ir.Compare) -> Evaluator:
        left, right = self.build(node.left), self.build(node.right)
        test = _compare(node.op)
        return lambda context: test(left(context), right(context))

    def build_Pipe(self, node: ir.Pipe) -> Evaluator:
        operand = self.build(node.operand)
        filters = tuple(
            (item.name, item.function, item.builtin, tuple(self.build(arg) for arg in item.args))
            for item in node.filters
        )
        limit = self.max_output

        def pipe(context: Any) -> Any:
            value = operand(context)
            for name, function, builtin, args in filters:
                arguments = [arg(context) for arg in args]
                value = apply_filter(name, function, builtin, value, arguments, limit)
            return value

        return pipe


def build_evaluator(node: ir.Node, max_output: int) -> Evaluator:
    """Compile lowered IR into a function of the context."""
    return _Builder(max_output).build(node)
