"""Limits: the bounds an Engine enforces on templates and rendered text."""

from __future__ import annotations

__all__ = ["MAX_DEPTH_CAP", "Limits"]

from dataclasses import dataclass

from flowlang.settings import check_counts

#: The largest nesting depth any configuration may allow.
MAX_DEPTH_CAP = 100


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a template may contain and produce (defaults from SECURITY.md).

    Source, depth and node limits are enforced while parsing, before any recursive pass over
    the tree; the output limit while rendering.
    """

    #: characters in one expression (between the delimiters of one hole)
    max_expression_length: int = 4096
    #: characters in one whole template
    max_template_length: int = 100_000
    #: nesting depth of one expression (brackets, operators, filter arguments); at most 100
    max_depth: int = 32
    #: syntax-tree nodes in one expression
    max_nodes: int = 10_000
    #: characters in a rendered string (template text, or a string a filter builds)
    max_output: int = 100_000

    def __post_init__(self) -> None:
        check_counts(
            self,
            (
                "max_expression_length",
                "max_template_length",
                "max_depth",
                "max_nodes",
                "max_output",
            ),
        )
        if self.max_depth > MAX_DEPTH_CAP:
            # Evaluation recurses once per level; the cap keeps every backend far from the
            # C stack and from Python's recursion limit, whatever the configuration.
            raise ValueError(f"Limits.max_depth is capped at {MAX_DEPTH_CAP}, not {self.max_depth}")
