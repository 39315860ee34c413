"""Scanner: split a template into literal text and hole spans, before any expression parsing.

The scanner is linear in the template length. Inside a hole it skips string literals (so a
``>>`` inside quotes does not close the hole) and tracks bracket nesting, so that too deep an
expression is refused before the parser sees it.
"""

from __future__ import annotations

__all__ = ["HoleSpan", "scan_template"]

from dataclasses import dataclass

from flowlang.errors import FlowSyntaxError
from flowlang.expr.limits import Limits
from flowlang.expr.syntax import QUOTE_PAIRS, Syntax

_OPENERS = "(["
_CLOSERS = ")]"


@dataclass(frozen=True, slots=True)
class HoleSpan:
    """Offsets of one hole: ``start``..``end`` covers the delimiters, ``expr_*`` the inside."""

    start: int
    end: int
    expr_start: int
    expr_end: int


def scan_template(source: str, syntax: Syntax, limits: Limits) -> list[str | HoleSpan]:
    """Split ``source`` into text parts and holes; adjacent text is merged, empty text dropped."""
    if len(source) > limits.max_template_length:
        raise FlowSyntaxError(
            f"template is longer than {limits.max_template_length} characters",
            source,
            limits.max_template_length,
        )
    opener, opener_size = syntax.open, len(syntax.open)
    parts: list[str | HoleSpan] = []
    text: list[str] = []
    position = 0
    while True:
        found = source.find(opener, position)
        if found == -1:
            text.append(source[position:])
            break
        backslashes = 0
        while found - backslashes > position and source[found - backslashes - 1] == "\\":
            backslashes += 1
        text.append(source[position : found - backslashes])
        text.append("\\" * (backslashes // 2))
        if backslashes % 2:
            text.append(opener)
            position = found + opener_size
            continue
        hole = _scan_hole(source, found, syntax, limits)
        literal = "".join(text)
        if literal:
            parts.append(literal)
        text = []
        parts.append(hole)
        position = hole.end
    literal = "".join(text)
    if literal:
        parts.append(literal)
    return parts


def _scan_hole(source: str, start: int, syntax: Syntax, limits: Limits) -> HoleSpan:
    """Find the end of the hole opened at ``start``; refuse unclosed, too long or too deep."""
    closer = syntax.close
    expr_start = start + len(syntax.open)
    limit = expr_start + limits.max_expression_length
    depth = 0
    position = expr_start
    length = len(source)
    while position < length:
        char = source[position]
        if char == closer[0] and source.startswith(closer, position):
            return HoleSpan(start, position + len(closer), expr_start, position)
        if position >= limit:
            raise FlowSyntaxError(
                f"expression is longer than {limits.max_expression_length} characters",
                source,
                start,
                position,
            )
        closing_quotes = QUOTE_PAIRS.get(char)
        if closing_quotes is not None:
            position = _skip_string(source, position, closing_quotes)
            continue
        if char in _OPENERS:
            depth += 1
            if depth > limits.max_depth:
                raise FlowSyntaxError(
                    f"expression nests deeper than {limits.max_depth} levels",
                    source,
                    position,
                )
        elif char in _CLOSERS and depth:
            depth -= 1
        position += 1
    raise FlowSyntaxError(
        f"expected {closer!r} to close the expression opened here",
        source,
        start,
        expr_start,
    )


def _skip_string(source: str, start: int, closing_quotes: str) -> int:
    """Return the offset just past the string literal opening at ``start``."""
    position = start + 1
    length = len(source)
    while position < length:
        char = source[position]
        if char == "\\":
            position += 2
            continue
        if char in closing_quotes:
            return position + 1
        position += 1
    raise FlowSyntaxError("unterminated string", source, start)
