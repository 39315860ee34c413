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
    "Pipe",
    "StaticKey",
]

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
    labels: tuple[str, ...]
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
