"""Pointers: where a value sits in a document, and the limits both document readers keep."""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "MAX_INTEGER_DIGITS", "Pointer", "integer_digit_limit"]

import sys

#: The keys and indexes from a document's root to a value (``("steps", "ask", "prompt")``).
Pointer = tuple[str | int, ...]

#: The deepest nesting of lists and maps.
MAX_DEPTH = 64
#: The most digits of a whole number (Python refuses to read more than 4,300).
MAX_INTEGER_DIGITS = 1000


def integer_digit_limit() -> int:
    """The most digits of a whole number in a document: ``MAX_INTEGER_DIGITS``, or fewer when
    the process lowered Python's own limit (``sys.set_int_max_str_digits``)."""
    python_limit = sys.get_int_max_str_digits()
    return min(MAX_INTEGER_DIGITS, python_limit) if python_limit else MAX_INTEGER_DIGITS
