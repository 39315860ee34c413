"""Formats: the conversion of api_request values to ``number``, ``string``, ``boolean``, ``auto``.

- ``number``: integers, or decimals with a dot separator (the strict rule of SPEC.md section 8:
  ASCII digits, no exponent, no ``nan``); numbers pass through; null stays null; anything else
  is an error that names the key and the value.
- ``string``: the text of the value as templates render it (null is "").
- ``boolean``: true for true, non-zero numbers and the words true/yes/y/on/1 in any case;
  every other form is false, as the seed says.
- ``auto``: native values pass through; text that is exactly ``true`` or ``false`` (any case)
  becomes a boolean, strict number text a number, and any other text stays text.
"""

from __future__ import annotations

__all__ = ["MAX_STRING_VALUE", "ValueFormatError", "convert"]

import math
from typing import Any

from flowlang.errors import FlowError
from flowlang.expr.filters import boolean
from flowlang.expr.limits import Limits
from flowlang.expr.shared import MAX_CARRIED_TEXT, carried_text
from flowlang.expr.values import OutputTooLong, is_number, number_from_text, to_text

#: The longest text a ``string`` conversion builds (the engine's default ``max_output``): a
#: list or map whose JSON would be longer is refused before its text is built.
MAX_STRING_VALUE = Limits().max_output


class ValueFormatError(FlowError):
    """A value that does not convert to its format; says which key and what value (the whole
    value: it is masked, then shortened, where it is output; see carried_text). With
    ``limit``: the value's text would be longer than ``limit`` characters."""

    def __init__(self, key: str, fmt: str, value: Any, limit: int | None = None) -> None:
        if limit is not None:
            message = f"value of {key!r} is longer than {limit} characters as a {fmt}"
        else:
            message = f"value of {key!r} is not a {fmt}: {_shown(value)!r}"
        super().__init__(message)
        self.key = key
        self.format = fmt


def _shown(value: Any) -> str:
    """The text of ``value`` for an error message, never built beyond MAX_CARRIED_TEXT."""
    try:
        return carried_text(to_text(value, MAX_CARRIED_TEXT))
    except OutputTooLong:
        return f"(a list or map of more than {MAX_CARRIED_TEXT} characters, not shown)"


def convert(key: str, fmt: str, value: Any, limit: int = MAX_STRING_VALUE) -> Any:
    """``value`` in format ``fmt``; ValueFormatError when it does not convert (or, as a
    ``string``, its text would be longer than ``limit`` characters)."""
    if fmt == "string":
        try:
            return to_text(value, limit)
        except OutputTooLong:  # measured before it is built
            raise ValueFormatError(key, fmt, value, limit) from None
    if fmt == "boolean":
        return boolean(value)
    if fmt == "number":
        if value is None:
            return None
        if is_number(value):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueFormatError(key, fmt, value)
            return value
        number = number_from_text(value) if isinstance(value, str) else None
        if number is None:
            raise ValueFormatError(key, fmt, value)
        return number
    if isinstance(value, str):  # auto
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        number = number_from_text(value)
        return value if number is None else number
    return value
