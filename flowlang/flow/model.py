"""Model: compiled flows — immutable steps whose templated fields are compiled once."""

from __future__ import annotations

__all__ = [
    "Branch",
    "CompiledFlow",
    "Endpoint",
    "FieldTree",
    "Finding",
    "FlowDocumentError",
    "Row",
    "Step",
    "Value",
]

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from flowlang.errors import FlowDocumentError, SourceLines, SourcePosition
from flowlang.expr.backends import compiled_helper
from flowlang.flow.conditions import OPERATORS
from flowlang.locations import render_place

if TYPE_CHECKING:
    from typing_extensions import TypeVar as DefaultingTypeVar

    from flowlang.engine import Template

    #: The kind of a Step: a flowlang.kinds StepKind or an automations ActionKind
    #: (``Step[ActionKind]``); unsaid, Any (the kinds sit above the model: no import of them).
    K = DefaultingTypeVar("K", default=Any, covariant=True)
else:
    K = TypeVar("K")


class Renderable(Protocol):
    """Anything with ``render(context)``: a Template, or a list of values."""

    def render(self, context: Mapping[str, Any]) -> Any: ...


Render = Callable[[Mapping[str, Any]], Any]


def _constant(value: Any) -> Render:
    if isinstance(value, (list, dict)):
        return lambda context: copy.deepcopy(value)  # a literal list or map is never shared
    return lambda context: value


@dataclass(frozen=True, slots=True)
class Value:
    """A field value: a compiled template (strings) or a literal (other YAML values).

    ``render(context)`` is bound once: straight to the compiled template's evaluator, or to a
    function returning the literal (a fresh copy for lists and maps).
    """

    template: Renderable | None
    literal: Any = None
    render: Render = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        render = self.template.render if self.template is not None else _constant(self.literal)
        object.__setattr__(self, "render", render)


@dataclass(frozen=True, slots=True)
class FieldTree:
    """Key/value entries whose dotted keys nest: ``customer.name`` -> ``{"customer": {"name": …}}``.

    ``entries`` pairs each key with a Value or a nested FieldTree, in document order.
    """

    entries: tuple[tuple[str, Value | FieldTree], ...]
    #: The backend of the engine that compiled the tree's templates (None: the process
    #: default): ``build`` is its twin, compiled on ``cython``.
    backend: str | None = field(default=None, repr=False, compare=False)
    #: ``build(context)``: a fresh dict for one run (one generated function, no loop).
    build: Render = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        builder = compiled_helper("build_tree", generated_build, self.backend)
        object.__setattr__(self, "build", builder(self))

    def __bool__(self) -> bool:
        return bool(self.entries)


def generated_build(tree: FieldTree) -> Render:
    """The Python twin of the compiled tree builder (``build_tree`` in ext/_expr.pyx).

    Generate ``def build(context): return {key: r0(context), "nested": {…}}`` for a tree.

    Keys enter the code only as ``repr`` of a str (always a plain literal) and renders only as
    default arguments, so document text never becomes code.
    """
    renders: list[Render] = []

    def expression(node: FieldTree) -> str:
        items = []
        for key, item in node.entries:
            if isinstance(item, FieldTree):
                value = expression(item)
            else:
                renders.append(item.render)
                value = f"r{len(renders) - 1}(context)"
            items.append(f"{str(key)!r}: {value}")
        return "{" + ", ".join(items) + "}"

    body = expression(tree)
    parameters = "".join(f", r{index}=r{index}" for index in range(len(renders)))
    namespace: dict[str, Any] = {f"r{index}": render for index, render in enumerate(renders)}
    exec(f"def build(context{parameters}):\n    return {body}\n", namespace)
    built: Render = namespace["build"]
    return built


@dataclass(frozen=True)
class Row:
    """One Condition Splitter row: property, operator and (for most operators) value."""

    property: Value
    operator: str
    value: Value | None

    def holds(self, scope: Mapping[str, Any]) -> tuple[bool, Any, Any]:
        """Whether the row holds, with the property and value it compared."""
        left = self.property.render(scope)
        right = self.value.render(scope) if self.value is not None else None
        return OPERATORS[self.operator](left, right), left, right


@dataclass(frozen=True)
class Branch:
    """A Condition Splitter branch: rows that must all hold, or one expression; and its target."""

    rows: tuple[Row, ...]
    expression: Template | None
    next: str
    #: The rows compiled into one evaluator (None when they cannot be; then each row is tested
    #: on its own, with the same semantics).
    test: Callable[[Mapping[str, Any]], Any] | None = None


@dataclass(frozen=True)
class Endpoint:
    """An endpoint template split at its holes: fixed text and templates whose text is encoded."""

    parts: tuple[str | Template, ...]
    scheme: str
    host: str


@dataclass(frozen=True)
class Step(Generic[K]):
    """One compiled step: its id, kind, compiled fields, where each field was written, and its
    edges (from the kind's edge fields, in table order). A workflow action is a Step of its
    action kind (``Step[ActionKind]``: its id is the action's name; it has no edges)."""

    id: str
    kind: K
    fields: Mapping[str, Any]
    position: SourcePosition
    field_positions: Mapping[str, SourcePosition] = field(default_factory=dict)
    edges: tuple[tuple[str, str], ...] = ()

    @property
    def type(self) -> str:
        """The kind's name, as documents write it (``http_request`` …)."""
        kind: Any = self.kind
        name: str = kind.name
        return name

    def targets(self) -> dict[str, str]:
        """Outgoing edges: label (``next``, ``on_failure``, ``branches[0]`` …) to step id."""
        return dict(self.edges)


@dataclass(frozen=True)
class CompiledFlow:
    """A loaded, validated and compiled flow: immutable, shared by every run in the process."""

    name: str
    start: str
    steps: Mapping[str, Step]
    source: str
    filename: str | None
    fingerprint: str
    warnings: tuple[Finding, ...] = ()
    #: Derived data that users of the flow prepare once (the runtime's step plan); never part
    #: of the flow's meaning.
    prepared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def step(self, step_id: str) -> Step:
        """The step called ``step_id``."""
        return self.steps[step_id]


@dataclass(frozen=True)
class Finding:
    """One problem in a document: what, where, and (once placed in the document's text) the
    rendering with the document's line and a caret ``width`` wide."""

    message: str
    position: SourcePosition
    severity: str = "error"
    detail: str | None = None
    width: int = 1

    def render(self) -> str:
        """``error: message`` then the place and the caret, as in a compiler."""
        if self.detail is not None:
            return f"{self.severity}: {self.detail}"
        return f"{self.severity}: {render_place(self.message, self.position)}"

    def with_caret(self, text: str | SourceLines) -> Finding:
        """The same finding with the source line and a caret, taken from the document text
        (or its lines, split once)."""
        if self.detail is not None:
            return self
        lines = SourceLines(text) if isinstance(text, str) else text
        detail = render_place(self.message, self.position, lines, self.width)
        return Finding(self.message, self.position, self.severity, detail, self.width)


_Compiled = TypeVar("_Compiled")


def compiled_or_raise(checked: tuple[_Compiled | None, list[Finding]]) -> _Compiled:
    """The compiled document of a check, or FlowDocumentError with every finding."""
    document, findings = checked
    if document is None:
        raise FlowDocumentError(findings)
    return document
