"""References: the context paths a template reads, for static checks of flows."""

from __future__ import annotations

__all__ = ["Reference", "collect_references"]

from dataclasses import dataclass, field

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
    pending: list[ast.Node] = [hole.expr for hole in reversed(tree.holes)]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Path) and isinstance(node.base, ast.Root):
            path = (node.base.name, *(_element(segment) for segment in node.segments))
            found.append(Reference(path, print_expression(node), node.start, node.end))
        pending.extend(reversed(node.children()))
    return tuple(found)
