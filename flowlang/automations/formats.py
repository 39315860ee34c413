"""Formats: the conversion of api_request values to ``number``, ``string``, ``boolean``, ``auto``.

- ``number``: integers within 64 bits, or decimals with a dot separator (the strict rule of
  SPEC.md section 8: ASCII digits, no exponent, no ``nan``); numbers pass through (a Decimal
  becomes the JSON number of the same value); null stays null; anything else, and any number
  JSON cannot carry exactly (beyond 64 bits, NaN, infinity), is an error that names the key and
  the value.
- ``string``: the text of the value as templates render it (null is "").
- ``boolean``: true for true, non-zero numbers and the words true/yes/y/on/1 in any case;
  every other form is false, as the seed says.
- ``auto``: never changes a value's text. Text becomes a boolean or a number only when that
  value's JSON text is exactly the text (``true``, ``false``, ``42``, ``4.5``); ``"+4420…"``,
  ``"02134"``, ``"12.50"``, ``"True"`` stay text. Native values pass through; a Decimal becomes
  the JSON number of the same value (or its text when no JSON number is), a date its ISO text.
"""

from __future__ import annotations

__all__ = ["FORMATS", "MAX_STRING_VALUE", "ValueFormatError", "auto_value", "convert"]

import math
from decimal import Decimal
from typing import Any

from flowlang.errors import ValueFormatError
from flowlang.expr.filters import boolean
from flowlang.expr.limits import Limits
from flowlang.expr.shared import MAX_CARRIED_TEXT, carried_text
from flowlang.expr.values import (
    OutputTooLong,
    decimal_text,
    float_text,
    is_date,
    is_number,
    number_from_text,
    plain_scalar,
    to_text,
)

#: The formats of api_request values.
FORMATS = ("number", "string", "boolean", "auto")

#: The longest text a ``string`` conversion builds (the engine's default ``max_output``): a
#: list or map whose JSON would be longer is refused before its text is built.
MAX_STRING_VALUE = Limits().max_output
#: The integers a request body carries exactly (orjson's range: signed and unsigned 64-bit).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: An integer longer than this many bits is not written into an error message (its digits
#: would take long to build); the message says its size instead.
_SHOWN_INT_BITS = 14_000


def _shown(value: Any) -> str:
    """The text of ``value`` for an error message, never built beyond MAX_CARRIED_TEXT."""
    if isinstance(value, int) and int.bit_length(value) > _SHOWN_INT_BITS:
        return f"(an integer of {int.bit_length(value)} bits, not shown)"
    if isinstance(value, Decimal) and not Decimal.is_finite(value):
        return "NaN" if Decimal.is_nan(value) else "-Infinity" if value < 0 else "Infinity"
    if isinstance(value, float) and not math.isfinite(value):
        return float.__repr__(value)  # nan, inf, -inf (their text in a template is "")
    try:
        return carried_text(to_text(value, MAX_CARRIED_TEXT))
    except OutputTooLong:
        return f"(a list or map of more than {MAX_CARRIED_TEXT} characters, not shown)"


_BEYOND_64_BITS = "is a number beyond 64 bits, which JSON does not carry exactly"
_NOT_FINITE = None  # "is not a number", as for text


def _json_number(key: str, fmt: str, value: Any) -> Any:
    """A number as one a request body carries exactly, or ValueFormatError naming the key."""
    value = plain_scalar(value)
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueFormatError(key, fmt, _shown(value), reason=_BEYOND_64_BITS)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueFormatError(key, fmt, _shown(value), reason=_NOT_FINITE)
        return value
    exact = _decimal_number(value)
    if exact is None:
        if not value.is_finite():
            reason = _NOT_FINITE
        elif value == value.to_integral_value():
            reason = _BEYOND_64_BITS
        else:
            reason = "has more digits than a JSON number carries exactly"
        raise ValueFormatError(key, fmt, _shown(value), reason=reason)
    return exact


def _decimal_number(value: Decimal) -> int | float | None:
    """The int (within 64 bits) or float of exactly the value of a Decimal, or None."""
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        if abs(value.adjusted()) > 20:
            return None
        whole = int(value)
        return whole if INT_MIN <= whole <= INT_MAX else None
    if abs(value.adjusted()) > 400:
        return None
    number = float(value)
    return number if math.isfinite(number) and Decimal(float_text(number)) == value else None


def auto_value(value: Any) -> Any:
    """The ``auto`` format: a string becomes ``true``, ``false`` or a number only when the JSON
    text of that value is exactly the string; a Decimal becomes its JSON number (its text when
    none is exact), a date its ISO text; every other value is kept."""
    if isinstance(value, str):
        text = str.__str__(value)
        if text == "true" or text == "false":
            return text == "true"
        return _number_of_text(text)
    if isinstance(value, Decimal):
        number = _decimal_number(plain_scalar(value))
        return number if number is not None else (decimal_text(value) or value)
    if is_date(value):
        return to_text(value)
    return value


def _number_of_text(text: str) -> Any:
    """The number whose JSON text is exactly ``text`` (an int within 64 bits or a float), else
    the text itself."""
    if "." not in text:
        digits = text[1:] if text.startswith("-") else text
        if not (0 < len(digits) <= 20 and digits.isascii() and digits.isdigit()):
            return text
        if digits[0] == "0" and (len(digits) > 1 or text[0] == "-"):
            return text  # "02134", "-0"
        whole = int(text)
        return whole if INT_MIN <= whole <= INT_MAX else text
    number = number_from_text(text)
    if isinstance(number, float) and float_text(number) == text:
        return number
    return text


def convert(key: str, fmt: str, value: Any, limit: int = MAX_STRING_VALUE) -> Any:
    """``value`` in format ``fmt``; ValueFormatError when it does not convert (or, as a
    ``string``, its text would be longer than ``limit`` characters)."""
    if fmt == "string":
        try:
            return to_text(value, limit)
        except OutputTooLong:  # measured before it is built
            raise ValueFormatError(key, fmt, _shown(value), limit) from None
    if fmt == "boolean":
        return boolean(value)
    if fmt == "number":
        if value is None:
            return None
        if is_number(value):
            return _json_number(key, fmt, value)
        number = number_from_text(value) if isinstance(value, str) else None
        if number is None:
            raise ValueFormatError(key, fmt, _shown(value))
        return _json_number(key, fmt, number)
    converted = auto_value(value)
    if isinstance(converted, int) and not isinstance(converted, bool):
        return _json_number(key, fmt, converted)  # a native integer beyond 64 bits
    return converted
