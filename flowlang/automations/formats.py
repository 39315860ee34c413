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

__all__ = ["ValueFormatError", "convert"]

import math
from typing import Any

from flowlang.errors import FlowError
from flowlang.expr.filters import boolean
from flowlang.expr.shared import carried_text
from flowlang.expr.values import is_number, number_from_text, to_text


class ValueFormatError(FlowError):
    """A value that does not convert to its format; says which key and what value (the whole
    value: it is masked, then shortened, where it is output; see carried_text)."""

    def __init__(self, key: str, fmt: str, value: Any) -> None:
        shown = carried_text(to_text(value))
        super().__init__(f"value of {key!r} is not a {fmt}: {shown!r}")
        self.key = key
        self.format = fmt


def convert(key: str, fmt: str, value: Any) -> Any:
    """``value`` in format ``fmt``; ValueFormatError when it does not convert."""
    if fmt == "string":
        return to_text(value)
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
