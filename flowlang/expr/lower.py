"""Lower: AST to IR, resolving filters, static keys and strictness for one Engine's options."""

from __future__ import annotations

__all__ = ["lower_template"]

from collections.abc import Mapping

from flowlang.errors import FlowSyntaxError
from flowlang.expr import ast, ir
from flowlang.expr.filters import FilterSpec
from flowlang.expr.printer import print_expression, print_segment
from flowlang.expr.values import alternate_key
from flowlang.suggest import did_you_mean


class _Lowering:
    def __init__(self, source: str, filters: Mapping[str, FilterSpec], strict: bool) -> None:
        self.source = source
        self.filters = filters
        self.strict = strict

    def expression(self, node: ast.Expr, soft: bool = False) -> ir.Node:
        """Lower ``node``; a ``soft`` path (left of ``??``, piped into default) never raises."""
        if isinstance(node, ast.Literal):
            return ir.Const(node.value)
        if isinstance(node, ast.ListLiteral):
            return ir.MakeList(tuple(self.expression(item) for item in node.items))
        if isinstance(node, ast.Path):
            return self.path(node, soft)
        if isinstance(node, ast.Not):
            return ir.Not(self.expression(node.operand))
        if isinstance(node, ast.BoolOp):
            operands = tuple(self.expression(item) for item in node.operands)
            return ir.And(operands) if node.op == "and" else ir.Or(operands)
        if isinstance(node, ast.Compare):
            return ir.Compare(node.op, self.expression(node.left), self.expression(node.right))
        if isinstance(node, ast.Coalesce):
            *lefts, last = node.operands
            return ir.Coalesce(
                (*(self.expression(item, soft=True) for item in lefts), self.expression(last, soft))
            )
        if isinstance(node, ast.Pipe):
            applications = tuple(self.filter(call) for call in node.filters)
            operand_is_soft = soft or node.filters[0].name == "default"
            return ir.Pipe(self.expression(node.operand, operand_is_soft), applications)
        raise TypeError(f"not an expression node: {node!r}")  # pragma: no cover

    def path(self, node: ast.Path, soft: bool) -> ir.Path:
        if isinstance(node.base, ast.Root):
            root: str | None = node.base.name
            base: ir.Node | None = None
            label = node.base.name
        else:
            root = None
            base = self.expression(node.base)
            label = f"({print_expression(node.base)})"
        segment_labels = tuple(print_segment(segment) for segment in node.segments)
        return ir.Path(
            root,
            base,
            tuple(self.segment(segment) for segment in node.segments),
            self.strict and not soft,
            ir.PathLabels(label, segment_labels),
            segment_labels,
        )

    def segment(self, segment: ast.Segment) -> ir.StaticKey | ir.DynamicKey:
        if isinstance(segment, ast.Member):
            return ir.StaticKey(segment.name, None)
        index = segment.index
        if isinstance(index, ast.Literal) and type(index.value) in (str, int):
            key = index.value
            assert isinstance(key, (str, int))
            return ir.StaticKey(key, alternate_key(key))
        return ir.DynamicKey(self.expression(index))

    def filter(self, call: ast.FilterCall) -> ir.FilterApplication:
        spec = self.filters.get(call.name)
        if spec is None:
            raise FlowSyntaxError(
                f"unknown filter {call.name!r}{did_you_mean(call.name, self.filters)}",
                self.source,
                call.start,
                call.start + len(call.name),
            )
        count = len(call.args)
        if not spec.min_args <= count <= spec.max_args:
            if spec.min_args == spec.max_args:
                wanted = f"{spec.min_args}"
            else:
                wanted = f"{spec.min_args} to {spec.max_args}"
            plural = "" if wanted == "1" else "s"
            raise FlowSyntaxError(
                f"filter {call.name!r} takes {wanted} argument{plural}, not {count}",
                self.source,
                call.start,
                call.end,
            )
        args = tuple(self.expression(arg) for arg in call.args)
        return ir.FilterApplication(call.name, spec.function, args, spec.builtin)


def lower_template(
    tree: ast.TemplateTree, source: str, filters: Mapping[str, FilterSpec], strict: bool
) -> ir.Node:
    """Lower a template: one hole alone keeps its native value; anything else renders text."""
    lowering = _Lowering(source, filters, strict)
    parts = tree.parts
    if len(parts) == 1 and isinstance(parts[0], ast.Hole):
        return lowering.expression(parts[0].expr)
    if not parts:
        return ir.Const("")
    if len(parts) == 1 and isinstance(parts[0], str):
        return ir.Const(parts[0])
    lowered: list[ir.Node] = []
    for part in parts:
        if isinstance(part, ast.Hole):
            lowered.append(lowering.expression(part.expr))
        else:
            lowered.append(ir.Const(part))
    return ir.Concat(tuple(lowered))
