"""Values: the semantics of JSON-shaped data (kinds, truth, equality, order, text and JSON forms).

This module is the reference for grammar/SPEC.md, "Values". The Python backend calls it
directly; the Cython backend has compiled fast paths for the common kinds and calls this module
for everything else, so both backends share one definition.

Kinds: null (None), boolean (bool), number (int, float or Decimal, never bool), string (str),
date (``date``, ``datetime`` or ``time``, written in ISO 8601), list (list or tuple), map (any
Mapping). Anything else is *opaque*: it passes through lookups and ``??`` unchanged, is true,
equals only itself, and renders as empty text (null in JSON).

Hostile values (only an embedding application can put them in a context): numbers and strings
and dates of subclasses are read through the base type's own methods (a Decimal or a date is
first copied into its exact type), so their overrides never run. The one piece of a date's
own code that may run is the ``utcoffset`` of a time zone that is not ``datetime.timezone`` or
``zoneinfo.ZoneInfo``, and it runs only outside compiled or orjson walks.
A container's own code (a custom Mapping, a list subclass, a dict key's ``__eq__``/``__hash__``)
may run; when it raises an ``Exception`` the value behaves as opaque *for that operation*: a
lookup finds nothing, it equals only itself, it is unordered, contains nothing, is true and is
written as null. Both backends follow this rule (the compiled one calls this module for
everything but exact built-in types).
"""

from __future__ import annotations

__all__ = [
    "OutputTooLong",
    "contains",
    "date_text",
    "decimal_text",
    "ends_with",
    "equals",
    "first_non_finite",
    "is_date",
    "is_number",
    "json_length_exceeds",
    "json_string",
    "lookup",
    "number_from_text",
    "order",
    "plain_json",
    "plain_scalar",
    "starts_with",
    "state_json",
    "to_json",
    "to_text",
    "truthy",
]

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from flowlang.errors import OutputTooLong
from flowlang.expr.decimals_dates import (
    date_compare,
    date_text,
    decimal_text,
    exact_date,
    int_digits_at_least,
    number_compare,
    zone_runs_code,
)

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


def plain_scalar(value: Any) -> Any:
    """A number, string or date of a subclass as its exact base type (no override runs)."""
    kind = type(value)
    if kind is int or kind is float or kind is str:
        return value
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__int__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Decimal):
        return value if kind is Decimal else Decimal(value)  # copies the digits, runs no code
    if isinstance(value, (date, time)):
        return exact_date(value)
    return value


def is_number(value: Any) -> bool:
    """True for int, float and Decimal values, but not for booleans."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def is_date(value: Any) -> bool:
    """True for ``date``, ``datetime`` and ``time`` values (the kind SPEC.md calls date)."""
    return isinstance(value, (date, time))


def _text_decimal(text: str) -> Decimal | None:
    """Strict number text (SPEC.md section 8) as an exact Decimal, or None."""
    text = str.strip(text, _ASCII_SPACE)
    if len(text) > MAX_NUMBER_TEXT or not _NUMBER_TEXT.fullmatch(text):
        return None
    return Decimal(text)


def number_from_text(text: str) -> int | float | None:
    """Read a number written in ASCII decimal digits (``-12``, ``3.50``), or None.

    No underscores, no exponent, no ``nan``/``inf``, no non-ASCII digits, at most
    :data:`MAX_NUMBER_TEXT` characters after trimming ASCII white space.
    """
    text = str.strip(text, _ASCII_SPACE)
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
        try:
            size = len(container)
            if -size <= key < size:
                return True, container[key]
        except Exception:  # a list subclass whose own code raised: missing
            return False, None
        return False, None
    return False, None


def truthy(value: Any) -> bool:
    """Truth in conditions: null, false, 0, "" and empty lists and maps are false."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, (int, float)):
        return bool(plain_scalar(value) != 0)
    if isinstance(value, str):
        return str.__len__(value) > 0
    if isinstance(value, (list, tuple, Mapping)):
        try:
            return len(value) > 0
        except Exception:  # a container whose own code raised: opaque, so true
            return True
    if isinstance(value, Decimal):
        return not Decimal.is_zero(value)  # NaN is true, as a float NaN is
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
            return str.__eq__(b, "true" if a else "false") is True
        if b_bool and isinstance(a, str):
            return str.__eq__(a, "true" if b else "false") is True
        return False
    a_num, b_num = isinstance(a, _NUMBERS), isinstance(b, _NUMBERS)
    if a_num and b_num:
        if isinstance(a, Decimal) or isinstance(b, Decimal):
            return number_compare(a, b) == 0
        return bool(plain_scalar(a) == plain_scalar(b))
    a_str, b_str = isinstance(a, str), isinstance(b, str)
    if a_str and b_str:
        return str.__eq__(a, b) is True
    if a_num and b_str:
        return _equals_text(a, b)
    if b_num and a_str:
        return _equals_text(b, a)
    a_date, b_date = isinstance(a, (date, time)), isinstance(b, (date, time))
    if a_date or b_date:
        if a_date and b_date:
            return date_compare(a, b) == 0
        if a_str or b_str:
            text = date_text(a if a_date else b)
            return text is not None and str.__eq__(text, b if a_date else a) is True
        return False
    a_list, b_list = isinstance(a, (list, tuple)), isinstance(b, (list, tuple))
    if a_list and b_list:
        return None
    a_map, b_map = isinstance(a, Mapping), isinstance(b, Mapping)
    if a_map and b_map:
        return None
    if a_num or b_num or a_str or b_str or a_list or b_list or a_map or b_map:
        return False
    return a is b


_NUMBERS = (int, float, Decimal)


def _equals_text(number: Any, text: str) -> bool:
    """A number equals a string that reads as the same number (a decimal reads it exactly)."""
    if isinstance(number, Decimal):
        exact = _text_decimal(text)
        return exact is not None and number_compare(number, exact) == 0
    parsed = number_from_text(text)
    return parsed is not None and bool(parsed == plain_scalar(number))


def equals(a: Any, b: Any) -> bool:
    """``a == b`` by the typed rules of SPEC.md; lists and maps compare deeply, iteratively.

    When a container's own code raises, the two values are equal only if they are the same.
    """
    pending = [(a, b)]
    seen: set[tuple[int, int]] = set()
    try:
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
            if len(left) != len(right) or set(left) != set(right):
                return False
            pending.extend((left[key], right[key]) for key in left)
    except Exception:
        return a is b
    return True


def order(op: str, a: Any, b: Any) -> bool:
    """``a < b`` and friends: numbers with numbers or numeric strings, strings with strings.

    Any other pair, and anything with null, is unordered: the comparison is false.
    """
    kind = type(a)
    if kind is not int and kind is not float and kind is not str:
        a = plain_scalar(a)
    kind = type(b)
    if kind is not int and kind is not float and kind is not str:
        b = plain_scalar(b)
    a_num, b_num = is_number(a), is_number(b)
    if a_num and not b_num and isinstance(b, str):
        b, b_num = (_text_decimal if type(a) is Decimal else number_from_text)(b), True
        if b is None:
            return False
    elif b_num and not a_num and isinstance(a, str):
        a, a_num = (_text_decimal if type(b) is Decimal else number_from_text)(a), True
        if a is None:
            return False
    if a_num and b_num and (type(a) is Decimal or type(b) is Decimal):
        sign = number_compare(a, b)
        return sign is not None and _SIGN_TESTS[op](sign)
    if type(a) in _DATE_TYPES and type(b) in _DATE_TYPES:
        sign = date_compare(a, b)
        return sign is not None and _SIGN_TESTS[op](sign)
    if not ((a_num and b_num) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


_DATE_TYPES = frozenset([date, datetime, time])
_SIGN_TESTS: dict[str, Callable[[int], bool]] = {
    "<": lambda sign: sign < 0,
    "<=": lambda sign: sign <= 0,
    ">": lambda sign: sign > 0,
    ">=": lambda sign: sign >= 0,
}


def _text_of_scalar(value: Any) -> str | None:
    """The text of a string, number or date for the string operators, or None for other kinds
    (and for a date whose time zone's code raised)."""
    if isinstance(value, str):
        return str.__str__(value)
    if is_number(value):
        return to_text(value)
    if isinstance(value, (date, time)):
        return date_text(value)
    return None


def contains(container: Any, item: Any) -> bool:
    """``container contains item``: substring of a string, element of a list, key of a map."""
    if isinstance(container, str):
        needle = _text_of_scalar(item)
        return needle is not None and str.__contains__(container, needle)
    if isinstance(container, (list, tuple)):
        try:  # a list is read by index with its size read each turn, as the compiled twin does
            return any(equals(element, item) for element in container)
        except Exception:  # a list subclass whose own iteration raised: contains nothing
            return False
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


def to_text(value: Any, limit: int | None = None) -> str:
    """The text of a value in a rendered template: null is empty, lists and maps are JSON.

    With ``limit``, the JSON of a list or map longer than ``limit`` characters raises
    :class:`OutputTooLong` before it is built (see :func:`to_json`).
    """
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
        return to_json(value, limit)
    if isinstance(value, Decimal):
        return decimal_text(value) or ""
    if isinstance(value, (date, time)):
        return date_text(value) or ""
    return ""


class _NeedsPython(Exception):  # noqa: N818 - control flow inside to_json only
    """Raised inside orjson's ``default`` to hand a value to the Python writer."""


#: Raw JSON text inside orjson's output (a decimal's digits); None in an orjson without it.
_FRAGMENT: Callable[[str], Any] | None = getattr(orjson, "Fragment", None)


def _orjson_default(value: Any) -> Any:
    """Called by orjson for what it does not serialize itself.

    Runs no code of the value: orjson iterates its containers through borrowed references, so
    code that changed one of them meanwhile (a custom Mapping's ``items`` clearing its parent)
    would crash the process. Scalars of subclasses are read with their base type's methods;
    containers that are not exact dicts and lists are refused here, and :func:`to_json` writes
    the whole value with :func:`_to_json_slow`, which works on snapshots. Opaque values are null.
    """
    kind = type(value)
    if issubclass(kind, str):
        return str.__str__(value)
    if issubclass(kind, int):
        return int.__int__(value)
    if issubclass(kind, float):
        return float.__float__(value)
    if issubclass(kind, (list, tuple, dict)) or issubclass(kind, Mapping):
        raise _NeedsPython
    if issubclass(kind, Decimal):
        text = decimal_text(value)
        if text is None:
            return None
        if _FRAGMENT is None:
            raise _NeedsPython  # an orjson without Fragment: the Python writer writes it
        return _FRAGMENT(text)
    if issubclass(kind, (date, time)):
        if zone_runs_code(value):
            raise _NeedsPython
        return date_text(value)
    return None


def plain_json(value: Any) -> Any:
    """A copy of ``value`` made only of JSON types (the rules of :func:`to_json`)."""
    return json.loads(to_json(value))


def _finite_float(text: str) -> float | None:
    """A JSON number's float, or None (null) for one beyond a float's range."""
    number = float(text)
    return number if math.isfinite(number) else None


def _exact_int(text: str) -> int | float | None:
    """A JSON whole number as an int within 64 bits (what every JSON reader takes back
    exactly), else as the nearest float, or null beyond a float's range."""
    number = int(text)
    if -(2**63) <= number <= 2**64 - 1:
        return number
    return _finite_float(text)


def state_json(value: Any) -> Any:
    """:func:`plain_json` as a run's state carries it: a whole number beyond 64 bits (a
    Decimal's digits) is the nearest float, and a number beyond a float's range
    (``Decimal("1E+5000")``) is null, as a non-finite float is; so every JSON reader takes the
    state back."""
    return json.loads(to_json(value), parse_float=_finite_float, parse_int=_exact_int)


def to_json(value: Any, limit: int | None = None) -> str:
    """Compact JSON text of a value (keys in insertion order, non-string keys as strings).

    NaN, infinity and opaque values are written as null; integers of any size are written in
    full, decimals as numbers with their text (:func:`decimal_text`), dates as ISO 8601
    strings; deep or cyclic data is written without recursion (a cycle becomes null).

    With ``limit``, text surely longer than ``limit`` characters raises :class:`OutputTooLong`
    before it is built (a list holding one big value many times is small in memory and huge as
    text): a walk bounded by ``limit`` steps measures a lower bound first. What it lets through
    is at most a small multiple of ``limit`` (escapes, long numbers); callers check the result.
    """
    if limit is not None and json_length_exceeds(value, limit):
        raise OutputTooLong
    try:
        return orjson.dumps(value, default=_orjson_default, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _to_json_slow(value, limit)


def _entries(item: Any) -> list[Any] | None:
    """A snapshot of a list's items or a map's ``(key, value)`` pairs; None when its code raised."""
    try:
        if type(item) is list or type(item) is tuple:
            return list(item)
        if type(item) is dict:
            return list(item.items())
        if isinstance(item, Mapping):
            return [(key, element) for key, element in item.items()]
        return list(item)
    except Exception:
        return None


def json_length_exceeds(value: Any, limit: int) -> bool:
    """Whether :func:`to_json` of ``value`` is surely longer than ``limit`` characters.

    Counts a lower bound of the text without building it. Every step adds at least one
    character and the walk stops past ``limit``, so it takes at most about ``limit`` steps
    whatever the data (shared sublists are counted at each use, as they are written; a
    container inside itself counts as the ``null`` it is written as).
    """
    total = 0
    open_containers: set[int] = set()
    work: list[Any] = [value]
    leave = _LEAVE_MARK
    while work:
        item = work.pop()
        if type(item) is tuple and len(item) == 2 and item[0] is leave:
            open_containers.discard(item[1])
            continue
        if isinstance(item, str):
            total += str.__len__(item) + 2
        elif item is None or isinstance(item, bool):
            total += 4
        elif isinstance(item, int):
            total += int_digits_at_least(item)
        elif isinstance(item, float):
            total += 3
        elif isinstance(item, Decimal):
            total += len(decimal_text(item) or "null")  # as long as its digits, at most
        elif isinstance(item, (list, tuple, Mapping)):
            identity = id(item)
            entries = None if identity in open_containers else _entries(item)
            if entries is None:
                total += 4
            else:
                total += 1 + max(1, len(entries))  # brackets and commas
                open_containers.add(identity)
                work.append((leave, identity))
                if isinstance(item, Mapping):
                    for key, element in entries:
                        total += (str.__len__(key) if isinstance(key, str) else 1) + 3
                        work.append(element)
                else:
                    work.extend(entries)
        else:
            total += 4
        if total > limit:
            return True
    return False


def first_non_finite(value: Any) -> float | None:
    """The first NaN or infinity inside JSON-shaped ``value``, or None (iterative).

    ``flowlang._expr.first_non_finite`` is its compiled twin (request bodies are scanned: orjson
    writes NaN and infinity as null); a property test keeps the
    two equal.
    """
    pending = [value]  # a stack: children go on reversed, so they come off in document order
    # Each container is read once: a cycle ends, and a shared sublist is not read again (its
    # first reading already found what it holds). ``kept`` keeps the ids from being reused.
    seen: set[int] = set()
    kept: list[Any] = []
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float or isinstance(item, float):
            if not math.isfinite(item):
                return float(item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        kept.append(item)
        if kind is dict:
            pending.extend(reversed(item.values()))
        elif kind is list or isinstance(item, (list, tuple)):
            pending.extend(reversed(item))
        elif isinstance(item, Mapping):
            pending.extend(reversed(list(item.values())))
    return None


class _Leave:
    """Marks the end of a container in json_length_exceeds's work list."""


_LEAVE_MARK = _Leave()


def _key_text(key: Any, limit: int | None = None) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    return to_json(key, limit) if key is not None else "null"


_WRITE, _EMIT, _LEAVE = 0, 1, 2


def _to_json_slow(value: Any, limit: int | None = None) -> str:
    """Iterative JSON writer for what orjson refuses (huge integers, deep or cyclic data).

    Linear in the size of the data: one set holds the containers being written, so a
    container met again inside itself (a cycle) is written as null, and so is a container whose
    own code raised. With ``limit``, raises :class:`OutputTooLong` as soon as the text written
    passes it.
    """
    out: list[str] = []
    written = 0
    bound = -1 if limit is None else limit
    open_containers: set[int] = set()
    work: list[tuple[int, Any]] = [(_WRITE, value)]
    while work:
        action, item = work.pop()
        if action == _LEAVE:
            open_containers.discard(item)
            continue
        if action == _EMIT:
            text = item
        elif item is None or isinstance(item, bool):
            text = "null" if item is None else ("true" if item else "false")
        elif isinstance(item, str):
            text = json_string(item)
        elif isinstance(item, int):
            text = int_text(item)
        elif isinstance(item, float):
            text = float_text(item) or "null"
        elif isinstance(item, Decimal):
            text = decimal_text(item) or "null"
        elif isinstance(item, (date, time)):
            shown = date_text(item)
            text = "null" if shown is None else json_string(shown)
        elif isinstance(item, (list, tuple, Mapping)):
            entries = None if id(item) in open_containers else _entries(item)
            if entries is None:
                text = "null"
            else:
                open_containers.add(id(item))
                work.append((_LEAVE, id(item)))
                if isinstance(item, Mapping):
                    work.append((_EMIT, "}"))
                    for position in range(len(entries) - 1, -1, -1):
                        key, element = entries[position]
                        work.append((_WRITE, element))
                        separator = "," if position else ""
                        work.append((_EMIT, separator + json_string(_key_text(key, limit)) + ":"))
                    text = "{"
                else:
                    work.append((_EMIT, "]"))
                    for position in range(len(entries) - 1, -1, -1):
                        work.append((_WRITE, entries[position]))
                        if position:
                            work.append((_EMIT, ","))
                    text = "["
        else:
            text = "null"
        written += len(text)
        if written > bound >= 0:
            raise OutputTooLong
        out.append(text)
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
