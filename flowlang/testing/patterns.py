"""Text patterns of test files (``{matches: REGEX}``), checked so that matching costs bounded
time: Python's ``re`` backtracks, and a pattern such as ``(a+)+$`` takes exponential time.

A pattern is refused (with the reason) when it is longer than :data:`MAX_PATTERN`, uses a
backreference or a lookaround, repeats something that itself repeats or holds alternatives (the
shape of catastrophic backtracking), counts beyond :data:`MAX_COUNT`, or has more than
:data:`MAX_REPEATS` repetitions. A pattern must match the whole text (``fullmatch``), and texts
longer than :data:`MAX_TEXT` are not matched at all. With one level of repetition and at most
:data:`MAX_REPEATS` of them, the work is polynomial of a small degree in a bounded text.
"""

from __future__ import annotations

__all__ = ["MAX_PATTERN", "MAX_TEXT", "TextPattern", "compile_pattern"]

import re
from dataclasses import dataclass
from re import _parser as _sre_parse  # the re module's own parser (3.11+)
from typing import Any

#: The longest pattern accepted, and the longest text one is matched against (characters).
MAX_PATTERN = 256
MAX_TEXT = 4096
#: The most repetitions (``*``, ``+``, ``{m,n}`` with n > 1) in one pattern, and their largest
#: finite count.
MAX_REPEATS = 3
MAX_COUNT = 1000

_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_REFUSED = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
}


@dataclass(frozen=True)
class TextPattern:
    """A checked pattern: ``matches(text)`` is a full match of a text of bounded length."""

    source: str
    compiled: re.Pattern[str]

    def matches(self, value: Any) -> bool:
        """Whether ``value`` is a text that the pattern matches whole."""
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            return False
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
    repeats = _check(parsed, inside_repeat=False)
    if repeats > MAX_REPEATS:
        raise ValueError(
            f"a pattern has at most {MAX_REPEATS} repetitions (*, +, {{m,n}}), not {repeats}"
        )
    try:
        return TextPattern(source, re.compile(source))
    except (re.error, RecursionError, OverflowError) as error:  # pragma: no cover - parsed above
        raise ValueError(f"not a regular expression: {error}") from None


def _check(items: Any, *, inside_repeat: bool) -> int:
    """Refuse the shapes that backtrack; the number of repetitions found."""
    repeats = 0
    for op, argument in items:
        name = str(op)
        if name in _REFUSED:
            raise ValueError(f"{_REFUSED[name]} is not allowed in a test pattern")
        if name in _REPEATS:
            low, high, inner = argument
            many = high > 1
            if many and high != _sre_parse.MAXREPEAT and high > MAX_COUNT:
                raise ValueError(f"a count is at most {MAX_COUNT}, not {high}")
            if low > MAX_COUNT:
                raise ValueError(f"a count is at most {MAX_COUNT}, not {low}")
            if many and inside_repeat:
                raise ValueError(
                    "a repetition inside a repetition (such as (a+)+) can take exponential time"
                )
            repeats += many + _check(inner, inside_repeat=inside_repeat or many)
        elif name == "BRANCH":
            if inside_repeat:
                raise ValueError(
                    "alternatives inside a repetition (such as (a|ab)*) can take exponential time"
                )
            for branch in argument[1]:
                repeats += _check(branch, inside_repeat=inside_repeat)
        elif name == "SUBPATTERN":
            repeats += _check(argument[-1], inside_repeat=inside_repeat)
        elif name == "ATOMIC_GROUP":
            repeats += _check(argument, inside_repeat=inside_repeat)
    return repeats
