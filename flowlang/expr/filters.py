"""Filters: the built-in pure functions applied with ``|``, and the registry of custom ones.

A filter takes the piped value and its arguments and returns a new value. Built-in filters
never raise on JSON-shaped data: a value of a kind a filter does not handle gives null (see
SPEC.md, "Filters"). The filters that build text (:data:`TEXT_BUILDERS`) also take the
rendered-size limit as ``limit=`` and raise OutputTooLong *before* building text past it.
"""

from __future__ import annotations

__all__ = ["BUILTIN_FILTERS", "TEXT_BUILDERS", "FilterSpec", "custom_filter_spec", "is_empty"]

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from flowlang.expr.syntax import KEYWORDS, NAME_PATTERN
from flowlang.expr.values import (
    OutputTooLong,
    is_date,
    is_number,
    number_from_text,
    plain_scalar,
    to_json,
    to_text,
)


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A filter: its function and how many arguments it takes after the piped value."""

    name: str
    function: Callable[..., Any]
    min_args: int
    max_args: int
    builtin: bool = True


def is_empty(value: Any) -> bool:
    """Null, "", an empty list or an empty map (``0`` and ``false`` are not empty)."""
    return value is None or (isinstance(value, (str, list, tuple, Mapping)) and len(value) == 0)


def default(value: Any, fallback: Any) -> Any:
    """``fallback`` when the value is null or empty ("" or an empty list or map)."""
    return fallback if is_empty(value) else value


def _string_filter(transform: Callable[[str], str], grows: bool) -> Callable[..., Any]:
    """A filter of a scalar's text; ``grows``: the result is never shorter than its input."""

    def apply(value: Any, *, limit: int | None = None) -> Any:
        if value is None or isinstance(value, (list, tuple, Mapping)):
            return None
        if isinstance(value, str) or is_number(value) or isinstance(value, bool) or is_date(value):
            text = to_text(value)
            if grows and limit is not None and len(text) > limit:
                raise OutputTooLong
            return transform(text)
        return None

    return apply


# Full case mappings turn one character into one to three: never shorter.
lower = _string_filter(str.lower, grows=True)
upper = _string_filter(str.upper, grows=True)
trim = _string_filter(str.strip, grows=False)


def length(value: Any) -> Any:
    """Characters of a string, items of a list or map; 0 for null; null for other kinds."""
    if value is None:
        return 0
    if isinstance(value, str):
        return str.__len__(value)  # a subclass's override never runs (SPEC.md, "Values")
    if isinstance(value, (list, tuple, Mapping)):
        return len(value)
    return None


def join(value: Any, separator: Any = ", ", *, limit: int | None = None) -> Any:
    """The texts of a list's items joined by ``separator``; other values as their text.

    With ``limit``, the length is added up item by item and OutputTooLong raised before the
    joined text (or any item's text) would pass it.
    """
    if value is None:
        return None
    separator_text = to_text(separator, limit)
    if not isinstance(value, (list, tuple)):
        return to_text(value, limit)
    if limit is None:
        return separator_text.join(to_text(item) for item in value)
    texts: list[str] = []
    total = -len(separator_text)
    step = len(separator_text)
    for item in value:
        text = item if type(item) is str else to_text(item, limit)
        total += step + len(text)
        if total > limit:
            raise OutputTooLong
        texts.append(text)
    return separator_text.join(texts)


def first(value: Any) -> Any:
    """The first item of a list or character of a string; null when empty or another kind."""
    if isinstance(value, str):
        return str.__getitem__(value, 0) if str.__len__(value) else None
    if isinstance(value, (list, tuple)) and len(value) > 0:
        return value[0]
    return None


def last(value: Any) -> Any:
    """The last item of a list or character of a string; null when empty or another kind."""
    if isinstance(value, str):
        return str.__getitem__(value, -1) if str.__len__(value) else None
    if isinstance(value, (list, tuple)) and len(value) > 0:
        return value[-1]
    return None


def json(value: Any, *, limit: int | None = None) -> str:
    """Compact JSON text of the value."""
    return to_json(value, limit)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _quoted(value: Any, limit: int | None) -> str:
    """Percent-encoded text of a value; encoding never shortens, so a text past ``limit`` is
    refused before it is encoded."""
    text = to_text(value, limit)
    if limit is not None and len(text) > limit:
        raise OutputTooLong
    try:
        return quote(text, safe="")
    except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot carry it
        return quote(_SURROGATE.sub("\ufffd", text), safe="")


def urlencode(value: Any, *, limit: int | None = None) -> Any:
    """Percent-encode a scalar's text (every reserved character); a map becomes a query string."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        parts: list[str] = []
        total = -1
        for key, item in list(value.items()):
            part = f"{_quoted(key, limit)}={_quoted(item, limit)}"
            total += 1 + len(part)
            if limit is not None and total > limit:
                raise OutputTooLong
            parts.append(part)
        return "&".join(parts)
    if isinstance(value, (list, tuple)):
        return None
    if isinstance(value, (str, bool)) or is_number(value) or is_date(value):
        return _quoted(value, limit)
    return None


def number(value: Any) -> Any:
    """A number from a number or from strict decimal text (``"42"``, ``"-3.5"``); else null."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        value = float.__float__(value)
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Decimal):
        value = plain_scalar(value)
        return value if value.is_finite() else None
    if isinstance(value, str):
        return number_from_text(value)
    return None


def string(value: Any, *, limit: int | None = None) -> str:
    """The text of the value, as a template renders it (null is "")."""
    return to_text(value, limit)


_TRUE_WORDS = frozenset(["true", "yes", "y", "on", "1"])


def boolean(value: Any) -> bool:
    """True for true, non-zero numbers and the words true/yes/y/on/1; every other value is false."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, Decimal):
        return not Decimal.is_nan(value) and not Decimal.is_zero(value)
    if is_number(value):
        value = plain_scalar(value)
        return bool(value == value and value != 0)
    if isinstance(value, str):
        text = str.strip(value)
        return len(text) <= 5 and text.lower() in _TRUE_WORDS  # no copy of a long text
    return False


#: What a phone number may contain besides ASCII digits and one leading ``+``.
_PHONE_SEPARATORS = frozenset(" \t-.()/\u00a0")
#: The longest text ``e164`` reads (longer text is no phone number, and is not parsed).
MAX_PHONE_TEXT = 64
_DIGITS = frozenset("0123456789")


def _phone_region(region: Any) -> str | None:
    """The region a national number is read in: a two-letter code (``"IT"``, any case) or a
    country calling code (``"39"``, ``"+39"``, ``39``: its main region); None when unknown."""
    import phonenumbers  # only when e164 runs: importing it costs time

    if isinstance(region, int) and not isinstance(region, bool) and 0 < region < 1000:
        code = int.__repr__(region)
    elif isinstance(region, str) and str.__len__(region) <= 4:
        code = str.strip(str.__str__(region)).upper()
    else:
        return None
    if len(code) == 2 and code.isascii() and code.isalpha():
        return code if code in phonenumbers.SUPPORTED_REGIONS else None
    code = code.removeprefix("+")
    if not (1 <= len(code) <= 3 and code.isascii() and code.isdigit() and code[0] != "0"):
        return None
    main: str = phonenumbers.region_code_for_country_code(int(code))
    return main if main in phonenumbers.SUPPORTED_REGIONS else None


def e164(value: Any, region: Any = None) -> Any:
    """A valid phone number in E.164 (``+390212345678``), or null (SPEC.md section 9).

    The text may hold ASCII digits, separators (spaces, ``-``, ``.``, ``(``, ``)``, ``/``) and
    one leading ``+``; it is read by the ``phonenumbers`` library, with the numbering plan of
    ``region`` (``"IT"``, or a calling code such as ``"39"``) for a number without ``+``, and
    must be a valid number of its country. Without a region only ``+`` and ``00`` numbers are
    read. Anything else, or text of more than :data:`MAX_PHONE_TEXT` characters, gives null.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not 0 < value < 2**64:
            return None
        text = int.__repr__(int.__int__(value))
    elif isinstance(value, str):
        if str.__len__(value) > MAX_PHONE_TEXT:
            return None
        text = str.strip(str.__str__(value), " \t\u00a0")
    else:
        return None
    body = text[1:] if text.startswith("+") else text
    if not body or any(char not in _DIGITS and char not in _PHONE_SEPARATORS for char in body):
        return None
    if region is not None:
        region = _phone_region(region)
        if region is None:
            return None
    elif not text.startswith("+"):
        if not text.startswith("00"):
            return None  # a national number, and no region to read it in
        text = "+" + text[2:]
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    result: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return result


def _spec(
    name: str, function: Callable[..., Any], min_args: int = 0, max_args: int = 0
) -> FilterSpec:
    return FilterSpec(name, function, min_args, max_args)


BUILTIN_FILTERS: Mapping[str, FilterSpec] = {
    spec.name: spec
    for spec in (
        _spec("default", default, 1, 1),
        _spec("lower", lower),
        _spec("upper", upper),
        _spec("trim", trim),
        _spec("length", length),
        _spec("join", join, 0, 1),
        _spec("first", first),
        _spec("last", last),
        _spec("json", json),
        _spec("urlencode", urlencode),
        _spec("number", number),
        _spec("string", string),
        _spec("boolean", boolean),
        _spec("e164", e164, 0, 1),
    )
}


#: The built-in filters that build text: called with ``limit=`` (the rendered-size limit).
TEXT_BUILDERS: frozenset[Callable[..., Any]] = frozenset(
    [lower, upper, trim, join, json, urlencode, string]
)


def custom_filter_spec(name: str, function: Callable[..., Any]) -> FilterSpec:
    """Check and describe a filter an application registers.

    The name must be a plain name that is not a keyword or a built-in filter; the function takes
    the piped value first. Its other parameters give the argument counts it accepts.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in KEYWORDS:
        raise ValueError(f"filter name {name!r} is not a valid name")
    if name in BUILTIN_FILTERS:
        raise ValueError(f"filter {name!r} is built in and cannot be replaced")
    if not callable(function):
        raise TypeError(f"filter {name!r} must be callable")
    min_args, max_args = 0, 64
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    else:
        positional = [
            parameter
            for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ]
        if not positional and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
            raise TypeError(f"filter {name!r} must take the piped value as its first parameter")
        required = [p for p in positional if p.default is p.empty]
        min_args = max(0, len(required) - 1)
        if not any(p.kind is p.VAR_POSITIONAL for p in parameters):
            max_args = max(0, len(positional) - 1)
    return FilterSpec(name, function, min_args, max_args, builtin=False)
