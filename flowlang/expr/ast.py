"""AST: the syntax tree of templates and expressions, with source spans.

Spans (``start``, ``end``) are offsets into the template text and take no part in equality,
so two trees that differ only in layout compare equal. Every node knows its ``depth`` and
``size`` (node count), computed bottom-up as the parser reduces, so limits are checked
without walking the tree.
"""

from __future__ import annotations

__all__ = [
    "COMPARISON_OPERATORS",
    "BoolOp",
    "Coalesce",
    "Compare",
    "Expr",
    "FilterCall",
    "Hole",
    "Index",
    "ListLiteral",
    "Literal",
    "Member",
    "Node",
    "Not",
    "Path",
    "Pipe",
    "Root",
    "Segment",
    "TemplateTree",
]

from dataclasses import dataclass, field

#: The comparison operators, in their canonical spelling.
COMPARISON_OPERATORS = (
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not in",
    "contains",
    "not contains",
    "starts_with",
    "ends_with",
)

LiteralValue = None | bool | int | float | str


@dataclass(frozen=True, slots=True)
class Node:
    """Base of every node: a span in the template text, and the depth and size of the subtree."""

    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    size: int = field(default=1, init=False, compare=False, repr=False)

    def children(self) -> tuple[Node, ...]:
        """The nodes directly below this one, in source order."""
        return ()

    def __post_init__(self) -> None:
        depth = 0
        size = 1
        for child in self.children():
            depth = max(depth, child.depth)
            size += child.size
        object.__setattr__(self, "depth", depth + 1)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A constant: null, true, false, an integer, a decimal or a string."""

    value: LiteralValue

    def __eq__(self, other: object) -> bool:
        # 1 == 1.0 == True in Python; literals of different types are different literals.
        return (
            isinstance(other, Literal)
            and type(self.value) is type(other.value)
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True, slots=True)
class ListLiteral(Node):
    """``[a, b, c]``."""

    items: tuple[Expr, ...]

    def children(self) -> tuple[Node, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class Root(Node):
    """The first name of a path: ``contact`` in ``contact.name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Member(Node):
    """``.name``: a key lookup written with a dot."""

    name: str


@dataclass(frozen=True, slots=True)
class Index(Node):
    """``[expr]``: a key or index lookup."""

    index: Expr

    def children(self) -> tuple[Node, ...]:
        return (self.index,)


Segment = Member | Index


@dataclass(frozen=True, slots=True)
class Path(Node):
    """A base (a root name or a parenthesized expression) followed by lookups, kept flat."""

    base: Root | Expr
    segments: tuple[Segment, ...]

    def children(self) -> tuple[Node, ...]:
        return (self.base, *self.segments)


@dataclass(frozen=True, slots=True)
class Not(Node):
    """``not operand``."""

    operand: Expr

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    """``a and b and c`` or ``a or b or c``, kept flat."""

    op: str
    operands: tuple[Expr, ...]

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """``left op right`` with one of :data:`COMPARISON_OPERATORS`."""

    op: str
    left: Expr
    right: Expr

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, slots=True)
class Coalesce(Node):
    """``a ?? b ?? c``: the first operand that is not null, kept flat."""

    operands: tuple[Expr, ...]

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class FilterCall(Node):
    """``| name`` or ``| name(arg, ...)``; ``x | f`` and ``x | f()`` are the same call."""

    name: str
    args: tuple[Expr, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Pipe(Node):
    """``operand | f | g(x)``, kept flat."""

    operand: Expr
    filters: tuple[FilterCall, ...]

    def children(self) -> tuple[Node, ...]:
        return (self.operand, *self.filters)


Expr = Literal | ListLiteral | Path | Not | BoolOp | Compare | Coalesce | Pipe


@dataclass(frozen=True, slots=True)
class Hole:
    """One ``<<expr>>`` in a template; the span covers the delimiters."""

    expr: Expr
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class TemplateTree:
    """A whole template: literal text and holes, in order."""

    parts: tuple[str | Hole, ...]

    @property
    def holes(self) -> tuple[Hole, ...]:
        """The holes of the template, in order."""
        return tuple(part for part in self.parts if isinstance(part, Hole))
