"""Text patterns of test files (``{matches: REGEX}``), checked so that matching costs bounded
time: Python's ``re`` backtracks, and a pattern such as ``(a+)+$`` takes exponential time.

A pattern must match the whole text (``fullmatch``); texts longer than :data:`MAX_TEXT` are not
matched at all. A pattern is refused (with the reason) when it is longer than
:data:`MAX_PATTERN`, uses a backreference, a lookaround or a conditional group, counts beyond
:data:`MAX_COUNT`, repeats anything that varies (``(a+)+``, ``(?:a?){40}``, ``(a|b)*``), or
can split a text in more than :data:`MAX_WAYS` ways. The ways multiply: a repetition of
variable count (``*``, ``+``, ``?``, ``{m,n}``) has one way per count it may take (an
unbounded one: ``MAX_TEXT + 1``), alternatives add up their ways. So a pattern holds at most
one unbounded repetition (``.*``), beside a few optional parts or alternatives: fullmatch then
tries at most MAX_WAYS splits of a bounded text, each in time linear in the pattern.
"""

from __future__ import annotations

__all__ = [
    "MAX_PATTERN",
    "MAX_TEXT",
    "MAX_WAYS",
    "TextPattern",
    "compare_within",
    "compile_pattern",
]

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from re import _parser as _sre_parse  # the re module's own parser (3.11+)
from typing import Any

#: The longest pattern accepted, and the longest text one is matched against (characters).
MAX_PATTERN = 256
MAX_TEXT = 4096
#: The largest finite count of a repetition.
MAX_COUNT = 1000
#: The most ways a pattern may split a text: one unbounded repetition, times 4.
MAX_WAYS = 4 * (MAX_TEXT + 1)

_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_REFUSED = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
}
#: When the comparison under way must have ended (time.monotonic), or None.
_DEADLINE: ContextVar[float | None] = ContextVar("flowlang_compare_deadline", default=None)


@contextmanager
def compare_within(seconds: float) -> Iterator[None]:
    """Patterns matched inside raise TimeoutError once ``seconds`` have passed (each
    match is bounded by the admission rule, so the whole comparison is bounded too)."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@dataclass(frozen=True)
class TextPattern:
    """A checked pattern: ``matches(text)`` is a full match of a text of bounded length."""

    source: str
    compiled: re.Pattern[str]

    def matches(self, value: Any) -> bool:
        """Whether ``value`` is a text that the pattern matches whole."""
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            return False
        deadline = _DEADLINE.get()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("comparing took too long")
        return self.compiled.fullmatch(value) is not None

    def __repr__(self) -> str:
        return f"{{matches: {self.source!r}}}"


def compile_pattern(source: str) -> TextPattern:
    """The pattern ``source`` checked and compiled; ValueError says why one is refused."""
    if len(source) > MAX_PATTERN:
        raise ValueError(f"a pattern is at most {MAX_PATTERN} characters, not {len(source)}")
    try:
        parsed = _sre_parse.parse(source)
    except (re.error, RecursionError, OverflowError) as error:
        raise ValueError(f"not a regular expression: {error}") from None
    ways = _ways(parsed, inside_repeat=False)
    if ways > MAX_WAYS:
        raise ValueError(
            "a pattern may split a text in too many ways (backtracking): at most one *, + or "
            "{m,} and a few optional parts (?) or alternatives (|) beside it"
        )
    try:
        return TextPattern(source, re.compile(source))
    except (re.error, RecursionError, OverflowError) as error:  # pragma: no cover - parsed above
        raise ValueError(f"not a regular expression: {error}") from None


def _count_ways(low: int, high: int) -> int:
    return (MAX_TEXT if high == _sre_parse.MAXREPEAT else min(high, MAX_TEXT)) - low + 1


def _ways(items: Any, *, inside_repeat: bool) -> int:
    """Refuse the shapes that backtrack without bound; the ways ``items`` split a text."""
    ways = 1
    for op, argument in items:
        name = str(op)
        if name in _REFUSED:
            raise ValueError(f"{_REFUSED[name]} is not allowed in a test pattern")
        if name in _REPEATS:
            low, high, inner = argument
            if high != _sre_parse.MAXREPEAT and high > MAX_COUNT:
                raise ValueError(f"a count is at most {MAX_COUNT}, not {high}")
            if low > MAX_COUNT:
                raise ValueError(f"a count is at most {MAX_COUNT}, not {low}")
            variable = low != high
            if variable and inside_repeat:
                raise ValueError(
                    "a repetition inside a repetition (such as (a+)+ or (?:a?){9}) can take "
                    "exponential time"
                )
            _ways(inner, inside_repeat=True)  # refuses what varies inside; its ways are 1
            if variable:
                ways *= _count_ways(low, high)
        elif name == "BRANCH":
            if inside_repeat:
                raise ValueError(
                    "alternatives inside a repetition (such as (a|ab)*) can take exponential time"
                )
            ways *= sum(_ways(branch, inside_repeat=False) for branch in argument[1])
        elif name == "SUBPATTERN":
            ways *= _ways(argument[-1], inside_repeat=inside_repeat)
        elif name == "ATOMIC_GROUP":
            ways *= _ways(argument, inside_repeat=inside_repeat)
        if ways > MAX_WAYS:  # no need to multiply further (and no huge numbers)
            return ways
    return ways
