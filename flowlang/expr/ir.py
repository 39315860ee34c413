"""IR: the lowered form both backends consume; a small, closed set of node kinds.

Compared with the AST, the IR has no spans, no syntax sugar and no decisions left to make:
filters are resolved to functions, static keys carry their alternate spelling, strictness is
decided per path, and a template is either one native-valued expression or a ``Concat``.
"""

from __future__ import annotations

__all__ = [
    "And",
    "Coalesce",
    "Compare",
    "Concat",
    "Const",
    "DynamicKey",
    "FilterApplication",
    "MakeList",
    "Node",
    "Not",
    "Or",
    "Path",
    "PathLabels",
    "Pipe",
    "StaticKey",
]

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, overload


@dataclass(frozen=True, slots=True)
class Const:
    """A constant scalar (null, boolean, number or string)."""

    value: Any


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A key known at compile time, with its other integer spelling (``123``/``"123"``) or None."""

    key: str | int
    alternate: str | int | None


@dataclass(frozen=True, slots=True)
class DynamicKey:
    """A key computed by an expression: ``contact.custom_fields[vars.field]``."""

    index: Node


class PathLabels(Sequence[str]):
    """The canonical text of a path before each of its segments: ``labels[i]`` is ``base``
    followed by the first ``i`` segment labels.

    Each prefix is built when asked for (on the error path), so a path of n segments keeps
    text linear in n rather than n prefixes of up to n segments each.
    """

    __slots__ = ("base", "segments")

    def __init__(self, base: str, segments: tuple[str, ...]) -> None:
        self.base = base
        self.segments = segments

    def __len__(self) -> int:
        return len(self.segments)

    @overload
    def __getitem__(self, position: SupportsIndex) -> str: ...

    @overload
    def __getitem__(self, position: slice) -> tuple[str, ...]: ...

    def __getitem__(self, position: SupportsIndex | slice) -> str | tuple[str, ...]:
        count = len(self.segments)
        if isinstance(position, slice):
            return tuple(self[at] for at in range(*position.indices(count)))
        at = operator.index(position)
        if at < 0:
            at += count
        if not 0 <= at < count:
            raise IndexError("path label index out of range")
        return self.base + "".join(self.segments[:at])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathLabels):
            return NotImplemented
        return self.base == other.base and self.segments == other.segments

    def __hash__(self) -> int:
        return hash((PathLabels, self.base, self.segments))

    def __repr__(self) -> str:
        return f"PathLabels({self.base!r}, {self.segments!r})"


@dataclass(frozen=True, slots=True)
class Path:
    """Lookups from a context root (``root``) or from a computed value (``base``).

    ``strict`` paths raise FlowUndefinedError instead of giving null; ``labels[i]`` is the
    canonical text of the path up to segment ``i`` and ``segment_labels[i]`` that segment's.
    """

    root: str | None
    base: Node | None
    segments: tuple[StaticKey | DynamicKey, ...]
    strict: bool
    labels: PathLabels
    segment_labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Concat:
    """Text: constant strings and the text form of each other part, joined."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """Negated truth of the operand."""

    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    """True when every operand is true; stops at the first false one."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """True when some operand is true; stops at the first true one."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Coalesce:
    """The first operand that is not null (evaluated left to right, lazily)."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` with an operator of :data:`flowlang.expr.ast.COMPARISON_OPERATORS`."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class FilterApplication:
    """One filter in a pipe: its name, function and argument expressions."""

    name: str
    function: Callable[..., Any]
    args: tuple[Node, ...]
    builtin: bool


@dataclass(frozen=True, slots=True)
class Pipe:
    """The operand passed through each filter in turn."""

    operand: Node
    filters: tuple[FilterApplication, ...]


@dataclass(frozen=True, slots=True)
class MakeList:
    """A new list of the items' values (a fresh list on every evaluation)."""

    items: tuple[Node, ...]


Node = Const | Path | Concat | Not | And | Or | Coalesce | Compare | Pipe | MakeList
