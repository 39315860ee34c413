"""References: the context paths a template reads, for static checks of flows."""

from __future__ import annotations

__all__ = ["Reference", "collect_references"]

from dataclasses import dataclass, field
from typing import Any

from flowlang.expr import ast
from flowlang.expr.printer import print_expression

#: A path element: a key, an index, or None where the key is computed at run time.
PathElement = str | int | None


@dataclass(frozen=True, slots=True)
class Reference:
    """One path a template reads, such as ``contact.custom_fields["MRR"]``.

    ``path`` starts with the root name; a computed key (``[vars.name]``) appears as None.
    ``start`` and ``end`` locate the path in the template text.
    """

    path: tuple[PathElement, ...]
    text: str
    start: int = field(compare=False)
    end: int = field(compare=False)

    @property
    def root(self) -> str:
        """The root name (``contact``, ``input``, ``steps`` …)."""
        return str(self.path[0])

    def __str__(self) -> str:
        return self.text


def _element(segment: ast.Segment) -> PathElement:
    if isinstance(segment, ast.Member):
        return segment.name
    index = segment.index
    if isinstance(index, ast.Literal) and type(index.value) in (str, int):
        return index.value  # type: ignore[return-value]
    return None


def collect_references(tree: ast.TemplateTree) -> tuple[Reference, ...]:
    """Every root-based path in the template, in source order (duplicates kept)."""
    found: list[Reference] = []
    pending: list[Any] = [hole.expr for hole in reversed(tree.holes)]
    while pending:
        node = pending.pop()
        children: tuple[Any, ...] = ()
        if isinstance(node, ast.Path):
            if isinstance(node.base, ast.Root):
                path = (node.base.name, *(_element(segment) for segment in node.segments))
                found.append(Reference(path, print_expression(node), node.start, node.end))
            else:
                children = (node.base,)
            children += tuple(s.index for s in node.segments if isinstance(s, ast.Index))
        elif isinstance(node, ast.ListLiteral):
            children = node.items
        elif isinstance(node, ast.Not):
            children = (node.operand,)
        elif isinstance(node, (ast.BoolOp, ast.Coalesce)):
            children = node.operands
        elif isinstance(node, ast.Compare):
            children = (node.left, node.right)
        elif isinstance(node, ast.Pipe):
            children = (node.operand, *(arg for call in node.filters for arg in call.args))
        pending.extend(reversed(children))
    return tuple(found)
