"""Engine: the one configuration object, and the compiled Template it produces."""

from __future__ import annotations

__all__ = ["Engine", "Template"]

import threading
from collections.abc import Callable, Mapping
from typing import Any

from flowlang.errors import FlowSyntaxError, SourcePosition
from flowlang.expr import ast, ir
from flowlang.expr.backends import get_builder
from flowlang.expr.filters import BUILTIN_FILTERS, FilterSpec, custom_filter_spec
from flowlang.expr.limits import Limits
from flowlang.expr.lower import lower_template
from flowlang.expr.parser import parse_template
from flowlang.expr.references import Reference, collect_references
from flowlang.expr.syntax import Syntax, get_syntax

_DEFAULT_MAX_OUTPUT = Limits().max_output


class Template:
    """A compiled template: immutable, safe to share across threads and asyncio tasks.

    ``render(context)`` evaluates it against a mapping of root names (``call``, ``contact``,
    ``input`` …) to JSON-shaped data. A template that is exactly one hole returns the native
    value (a list, a number, None); any other template returns a string.
    """

    __slots__ = (
        "backend",
        "lowered",
        "max_output",
        "references",
        "render",
        "source",
        "syntax",
        "tree",
    )

    source: str
    syntax: Syntax
    tree: ast.TemplateTree
    references: tuple[Reference, ...]
    backend: str
    #: The lowered IR, for composing templates into larger compiled units (flow conditions).
    lowered: ir.Node
    #: Evaluate the template against a context; see the class docstring.
    render: Callable[[Mapping[str, Any]], Any]
    #: The engine's Limits.max_output: callers that turn a native value into text use it too.
    max_output: int

    def __init__(
        self,
        source: str,
        syntax: Syntax,
        tree: ast.TemplateTree,
        backend: str,
        evaluator: Callable[[Mapping[str, Any]], Any],
        lowered: ir.Node,
        max_output: int = _DEFAULT_MAX_OUTPUT,
    ) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "syntax", syntax)
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "references", collect_references(tree))
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "render", evaluator)
        object.__setattr__(self, "lowered", lowered)
        object.__setattr__(self, "max_output", max_output)

    @property
    def is_expression(self) -> bool:
        """True when the template is exactly one hole, so it renders a native value."""
        parts = self.tree.parts
        return len(parts) == 1 and isinstance(parts[0], ast.Hole)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Template is immutable")

    def __repr__(self) -> str:
        return f"<Template {self.source!r} ({self.syntax.name}, {self.backend})>"


class Engine:
    """Owns every policy of expression evaluation and compiles templates under it.

    ``syntax``: ``"flowlang"`` (``<<expr>>``) or ``"cloudtalk"`` (``{{expr}}``).
    ``strict``: raise FlowUndefinedError for a path that does not resolve, instead of null
    (the left side of ``??`` and a value piped into ``default`` stay lenient).
    ``limits``: a :class:`~flowlang.Limits`. ``filters``: extra filters by name.
    ``backend``: ``"cython"``, ``"python"`` or None for :data:`flowlang.BACKEND`.
    Compiled templates are memoized by source text (``cache_size`` entries at most).
    """

    def __init__(
        self,
        *,
        syntax: str = "flowlang",
        strict: bool = False,
        limits: Limits | None = None,
        filters: Mapping[str, Callable[..., Any]] | None = None,
        backend: str | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.syntax = get_syntax(syntax)
        self.strict = bool(strict)
        self.limits = limits if limits is not None else Limits()
        table: dict[str, FilterSpec] = dict(BUILTIN_FILTERS)
        for name, function in (filters or {}).items():
            table[name] = custom_filter_spec(name, function)
        self.filters: Mapping[str, FilterSpec] = table
        self.backend, self._build = get_builder(backend)
        self._cache: dict[str, Template] = {}
        self._cache_size = max(0, int(cache_size))
        self._lock = threading.Lock()

    def parse(self, source: str) -> ast.TemplateTree:
        """Parse a template into its syntax tree (raises FlowSyntaxError)."""
        if not isinstance(source, str):
            raise TypeError(f"a template is a str, not {type(source).__name__}")
        return parse_template(source, self.syntax, self.limits)

    def compile(self, source: str, *, position: SourcePosition | None = None) -> Template:
        """Compile (or fetch from the memo) the template ``source``.

        ``position`` says where the text sits in a document, so that a FlowSyntaxError names
        the file, line, column, step and field.
        """
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        try:
            tree = self.parse(source)
            lowered = lower_template(tree, source, self.filters, self.strict)
        except FlowSyntaxError as error:
            if position is not None:
                raise error.with_position(position) from None
            raise
        evaluator = self._build(lowered, self.limits.max_output)
        template = Template(
            source, self.syntax, tree, self.backend, evaluator, lowered, self.limits.max_output
        )
        if self._cache_size:
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[source] = template
        return template

    def build(self, node: ir.Node) -> Callable[[Mapping[str, Any]], Any]:
        """An evaluator for IR composed from compiled templates' ``lowered`` IR."""
        return self._build(node, self.limits.max_output)

    def render(self, source: str, context: Mapping[str, Any]) -> Any:
        """Compile ``source`` (memoized) and render it against ``context``."""
        return self.compile(source).render(context)

    def __repr__(self) -> str:
        mode = "strict" if self.strict else "lenient"
        return f"<Engine {self.syntax.name} {mode} backend={self.backend}>"
