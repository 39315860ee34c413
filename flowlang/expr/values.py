"""Values: the semantics of JSON-shaped data (kinds, truth, equality, order, text and JSON forms).

This module is the reference for grammar/SPEC.md, "Values". The Python backend calls it
directly; the Cython backend has compiled fast paths for the common kinds and calls this module
for everything else, so both backends share one definition.

Kinds: null (None), boolean (bool), number (int or float, never bool), string (str),
list (list or tuple), map (any Mapping). Anything else is *opaque*: it passes through lookups
and ``??`` unchanged, is true, equals only itself, and renders as empty text (null in JSON).
"""

from __future__ import annotations

__all__ = [
    "contains",
    "ends_with",
    "equals",
    "is_number",
    "json_string",
    "lookup",
    "number_from_text",
    "order",
    "plain_json",
    "starts_with",
    "to_json",
    "to_text",
    "truthy",
]

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

#: Numbers in text: optional sign, ASCII digits, optional dot and ASCII digits; no exponent.
_NUMBER_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
#: The longest text (after trimming) that is read as a number.
MAX_NUMBER_TEXT = 40
_ASCII_SPACE = " \t\r\n"


def is_number(value: Any) -> bool:
    """True for int and float values, but not for booleans."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number_from_text(text: str) -> int | float | None:
    """Read a number written in ASCII decimal digits (``-12``, ``3.50``), or None.

    No underscores, no exponent, no ``nan``/``inf``, no non-ASCII digits, at most
    :data:`MAX_NUMBER_TEXT` characters after trimming ASCII white space.
    """
    text = text.strip(_ASCII_SPACE)
    if len(text) > MAX_NUMBER_TEXT or not _NUMBER_TEXT.fullmatch(text):
        return None
    if "." in text:
        return float(text)
    return int(text)


def canonical_int_text(text: str) -> int | None:
    """The integer that ``text`` spells canonically (``"12"``, ``"-3"``, not ``"012"``), or None."""
    if not 0 < len(text) <= 19:
        return None
    digits = text[1:] if text[0] == "-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    if digits[0] == "0" and (len(digits) > 1 or text[0] == "-"):
        return None
    return int(text)


def alternate_key(key: Any) -> Any:
    """The other spelling of an integer key: ``123`` for ``"123"`` and ``"123"`` for ``123``."""
    if type(key) is int:
        return str(key)
    if type(key) is str:
        return canonical_int_text(key)
    return None


def lookup(container: Any, key: Any) -> tuple[bool, Any]:
    """Look ``key`` up in a map or list: ``(True, value)`` or ``(False, None)`` when missing.

    On maps an integer-looking key matches either spelling; on lists the key must be an
    integer (or a canonical integer string) and negative indexes count from the end.
    Booleans and other kinds are never keys.
    """
    kind = type(key)
    if kind is not str and kind is not int:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            return False, None
        key = str.__str__(key) if isinstance(key, str) else int.__int__(key)
    if isinstance(container, Mapping):
        try:
            if key in container:
                return True, container[key]
            other = alternate_key(key)
            if other is not None and other in container:
                return True, container[other]
        except Exception:  # a broken custom Mapping is treated as missing
            return False, None
        return False, None
    if isinstance(container, (list, tuple)):
        if type(key) is str:
            key = canonical_int_text(key)
            if key is None:
                return False, None
        size = len(container)
        if -size <= key < size:
            return True, container[key]
        return False, None
    return False, None


def truthy(value: Any) -> bool:
    """Truth in conditions: null, false, 0, "" and empty lists and maps are false."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value) > 0
    if isinstance(value, (int, float)):
        return value != 0
    return True


def _scalar_equals(a: Any, b: Any) -> bool | None:
    """Equality of two values when at least one is not a list or map; None to descend."""
    if a is None or b is None:
        return a is None and b is None
    a_bool, b_bool = isinstance(a, bool), isinstance(b, bool)
    if a_bool or b_bool:
        if a_bool and b_bool:
            return bool(a) is bool(b)
        if a_bool and isinstance(b, str):
            return b == ("true" if a else "false")
        if b_bool and isinstance(a, str):
            return a == ("true" if b else "false")
        return False
    a_num, b_num = isinstance(a, (int, float)), isinstance(b, (int, float))
    if a_num and b_num:
        return bool(a == b)
    a_str, b_str = isinstance(a, str), isinstance(b, str)
    if a_str and b_str:
        return str.__eq__(a, b) is True
    if a_num and b_str:
        number = number_from_text(b)
        return number is not None and bool(number == a)
    if b_num and a_str:
        number = number_from_text(a)
        return number is not None and bool(number == b)
    a_list, b_list = isinstance(a, (list, tuple)), isinstance(b, (list, tuple))
    if a_list and b_list:
        return None
    a_map, b_map = isinstance(a, Mapping), isinstance(b, Mapping)
    if a_map and b_map:
        return None
    if a_num or b_num or a_str or b_str or a_list or b_list or a_map or b_map:
        return False
    return a is b


def equals(a: Any, b: Any) -> bool:
    """``a == b`` by the typed rules of SPEC.md; lists and maps compare deeply, iteratively."""
    pending = [(a, b)]
    seen: set[tuple[int, int]] = set()
    while pending:
        left, right = pending.pop()
        verdict = _scalar_equals(left, right)
        if verdict is False:
            return False
        if verdict is True:
            continue
        pair = (id(left), id(right))
        if pair in seen:
            continue
        seen.add(pair)
        if isinstance(left, (list, tuple)):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
            continue
        try:
            if len(left) != len(right) or set(left) != set(right):
                return False
            pending.extend((left[key], right[key]) for key in left)
        except Exception:  # a broken custom Mapping is unequal to everything
            return False
    return True


def order(op: str, a: Any, b: Any) -> bool:
    """``a < b`` and friends: numbers with numbers or numeric strings, strings with strings.

    Any other pair, and anything with null, is unordered: the comparison is false.
    """
    a_num, b_num = is_number(a), is_number(b)
    if a_num and not b_num and isinstance(b, str):
        b, b_num = number_from_text(b), True
        if b is None:
            return False
    elif b_num and not a_num and isinstance(a, str):
        a, a_num = number_from_text(a), True
        if a is None:
            return False
    if not ((a_num and b_num) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _text_of_scalar(value: Any) -> str | None:
    """The text of a string or number for the string operators, or None for other kinds."""
    if isinstance(value, str):
        return str.__str__(value)
    if is_number(value):
        return to_text(value)
    return None


def contains(container: Any, item: Any) -> bool:
    """``container contains item``: substring of a string, element of a list, key of a map."""
    if isinstance(container, str):
        needle = _text_of_scalar(item)
        return needle is not None and needle in container
    if isinstance(container, (list, tuple)):
        return any(equals(element, item) for element in container)
    if isinstance(container, Mapping):
        found, _ = lookup(container, item)
        return found
    return False


def starts_with(value: Any, prefix: Any) -> bool:
    """``value starts_with prefix`` on the text of strings and numbers; false otherwise."""
    text, start = _text_of_scalar(value), _text_of_scalar(prefix)
    return text is not None and start is not None and text.startswith(start)


def ends_with(value: Any, suffix: Any) -> bool:
    """``value ends_with suffix`` on the text of strings and numbers; false otherwise."""
    text, end = _text_of_scalar(value), _text_of_scalar(suffix)
    return text is not None and end is not None and text.endswith(end)


def int_text(value: int) -> str:
    """Decimal text of any integer, also beyond Python's int-to-str digit limit."""
    try:
        return int.__repr__(value)
    except ValueError:
        negative = value < 0
        value = -value if negative else value
        chunks: list[str] = []
        chunk = 10**1000
        while value:
            value, low = divmod(value, chunk)
            chunks.append(int.__repr__(low))
        text = chunks.pop()
        for low_text in reversed(chunks):
            text += low_text.rjust(1000, "0")
        return ("-" if negative else "") + text


def float_text(value: float) -> str:
    """Shortest round-trip text of a finite float (``2.5``, ``1e20``); "" for NaN and infinity."""
    value = float.__float__(value)
    if not math.isfinite(value):
        return ""
    return orjson.dumps(value).decode()


def to_text(value: Any) -> str:
    """The text of a value in a rendered template: null is empty, lists and maps are JSON."""
    if isinstance(value, str):
        return str.__str__(value)
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, (list, tuple, Mapping)):
        return to_json(value)
    return ""


def _orjson_default(value: Any) -> Any:
    """Called by orjson for what it does not serialize itself; opaque values become null."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return dict(value.items())
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def plain_json(value: Any) -> Any:
    """A copy of ``value`` made only of JSON types (the rules of :func:`to_json`)."""
    return json.loads(to_json(value))


def to_json(value: Any) -> str:
    """Compact JSON text of a value (keys in insertion order, non-string keys as strings).

    NaN, infinity and opaque values are written as null; integers of any size are written in
    full; deep or cyclic data is written without recursion (a cycle becomes null).
    """
    try:
        return orjson.dumps(value, default=_orjson_default, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _to_json_slow(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    return to_json(key) if key is not None else "null"


_WRITE, _EMIT, _LEAVE = 0, 1, 2


def _to_json_slow(value: Any) -> str:
    """Iterative JSON writer for what orjson refuses (huge integers, deep or cyclic data).

    Linear in the size of the data: one set holds the containers being written, so a
    container met again inside itself (a cycle) is written as null.
    """
    out: list[str] = []
    open_containers: set[int] = set()
    work: list[tuple[int, Any]] = [(_WRITE, value)]
    while work:
        action, item = work.pop()
        if action == _EMIT:
            out.append(item)
            continue
        if action == _LEAVE:
            open_containers.discard(item)
            continue
        if item is None or isinstance(item, bool):
            out.append("null" if item is None else ("true" if item else "false"))
        elif isinstance(item, str):
            out.append(json_string(item))
        elif isinstance(item, int):
            out.append(int_text(item))
        elif isinstance(item, float):
            out.append(float_text(item) or "null")
        elif isinstance(item, (list, tuple, Mapping)):
            if id(item) in open_containers:
                out.append("null")
                continue
            open_containers.add(id(item))
            work.append((_LEAVE, id(item)))
            if isinstance(item, Mapping):
                entries = list(item.items())
                work.append((_EMIT, "}"))
                for position in range(len(entries) - 1, -1, -1):
                    key, element = entries[position]
                    work.append((_WRITE, element))
                    separator = "," if position else ""
                    work.append((_EMIT, separator + json_string(_key_text(key)) + ":"))
                work.append((_EMIT, "{"))
            else:
                work.append((_EMIT, "]"))
                for position in range(len(item) - 1, -1, -1):
                    work.append((_WRITE, item[position]))
                    if position:
                        work.append((_EMIT, ","))
                work.append((_EMIT, "["))
        else:
            out.append("null")
    return "".join(out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_string(text: str) -> str:
    """A JSON string literal; lone surrogates (which UTF-8 cannot carry) become ``\\uXXXX``."""
    text = str.__str__(text)
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:
        return _SURROGATE.sub(
            lambda match: f"\\u{ord(match.group()):04x}", json.dumps(text, ensure_ascii=False)
        )
