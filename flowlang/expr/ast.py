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


def _measure(*children: Expr | Root | Segment | FilterCall) -> tuple[int, int]:
    depth = 0
    size = 1
    for child in children:
        depth = max(depth, child.depth)
        size += child.size
    return depth + 1, size


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: null, true, false, an integer, a decimal or a string."""

    value: LiteralValue
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    size: int = field(default=1, init=False, compare=False, repr=False)

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
class ListLiteral:
    """``[a, b, c]``."""

    items: tuple[Expr, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(*self.items)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Root:
    """The first name of a path: ``contact`` in ``contact.name``."""

    name: str
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    size: int = field(default=1, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Member:
    """``.name``: a key lookup written with a dot."""

    name: str
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    size: int = field(default=1, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Index:
    """``[expr]``: a key or index lookup."""

    index: Expr
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(self.index)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


Segment = Member | Index


@dataclass(frozen=True, slots=True)
class Path:
    """A base (a root name or a parenthesized expression) followed by lookups, kept flat."""

    base: Root | Expr
    segments: tuple[Segment, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A flat chain of lookups adds one level, however long it is.
        depth, size = _measure(self.base, *self.segments)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: Expr
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(self.operand)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``a and b and c`` or ``a or b or c``, kept flat."""

    op: str
    operands: tuple[Expr, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(*self.operands)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` with one of :data:`COMPARISON_OPERATORS`."""

    op: str
    left: Expr
    right: Expr
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(self.left, self.right)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Coalesce:
    """``a ?? b ?? c``: the first operand that is not null, kept flat."""

    operands: tuple[Expr, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(*self.operands)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class FilterCall:
    """``| name`` or ``| name(arg, ...)``; ``x | f`` and ``x | f()`` are the same call."""

    name: str
    args: tuple[Expr, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(*self.args)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True)
class Pipe:
    """``operand | f | g(x)``, kept flat."""

    operand: Expr
    filters: tuple[FilterCall, ...]
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    size: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        depth, size = _measure(self.operand, *self.filters)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "size", size)


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
