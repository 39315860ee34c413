"""Fields: how a field of a step or action is declared (its kind, default, bounds).

Each step kind declares its fields (flowlang.kinds); the same declarations drive the document
checks (flowlang.flow.build), the edges of the step graph and the JSON Schema shipped with the
package (flowlang.flow.schema), so they cannot disagree.
"""

from __future__ import annotations

__all__ = [
    "CONDITION_OPERATORS",
    "EDGE_KINDS",
    "HTTP_METHODS",
    "NEXT",
    "THEN",
    "Field",
    "field_edges",
]

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Field kinds whose values lead to other steps.
EDGE_KINDS = frozenset({"step", "branches", "options"})


@dataclass(frozen=True)
class Field:
    """One field of a step: its kind, whether it is required, its default and bounds."""

    #: template, endpoint, step, duration, bool, int, enum, headers, fields, branches, options
    #: (a key 0-9 * # to a step id), key, pattern, or custom (read by ``parse``)
    kind: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    #: For ``custom`` fields: ``parse(builder, raw, pointer, step_id, name)``, the compiled value
    #: or None after reporting through ``builder.error``.
    parse: Callable[..., Any] | None = None
    #: For ``custom`` fields: the JSON Schema of the value.
    schema: Mapping[str, Any] | None = None
    #: Valid values, shown in the JSON Schema (``examples``) and drawn by the generated flows
    #: of the twin tests (a ``custom`` field needs them).
    examples: tuple[Any, ...] = ()

    @property
    def is_edge(self) -> bool:
        """Whether the field's value leads to other steps."""
        return self.kind in EDGE_KINDS


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: Condition Splitter operators and whether they take a value.
CONDITION_OPERATORS = {
    "equals": True,
    "not_equals": True,
    "contains": True,
    "not_contains": True,
    "starts_with": True,
    "ends_with": True,
    "greater_than": True,
    "greater_or_equal": True,
    "less_than": True,
    "less_or_equal": True,
    "is_empty": False,
    "is_not_empty": False,
}

#: The ``next`` of a step that must go on, and of one whose run may complete there.
NEXT = Field("step", required=True, description="the step that runs next")
THEN = Field("step", description="the step that runs next; without it the run completes")


def field_edges(name: str, spec: Field, value: Any) -> list[tuple[str, str]]:
    """The edges a compiled field value makes: ``(label, target step id)``; labels are the
    field name, ``branches[0]`` for a branch, ``options[1]`` for a menu option."""
    if value is None:
        return []
    if spec.kind == "step":
        return [(name, value)]
    if spec.kind == "branches":
        return [(f"{name}[{index}]", branch.next) for index, branch in enumerate(value)]
    if spec.kind == "options":
        return [(f"{name}[{key}]", target) for key, target in value.items()]
    return []
