"""HTTP rules: what an outbound request may be, shared by documents and the runtime.

The scheme, host and port of an endpoint are fixed text, checked strictly at load
(``origin_of``); templated endpoint values are percent-encoded (they cannot change the host,
the path structure or the query), and the sender checks that the origin httpx reads in the URL
is the one its text names (``sent_origin_problem``). Header values with control characters
other than tab, or non-ASCII characters, are refused, and the body is built as a value and
serialized once with orjson, refusing NaN, infinity, integers beyond 64 bits and anything that
is not JSON.
"""

from __future__ import annotations

__all__ = [
    "BODY_METHODS",
    "DEFAULT_PORTS",
    "Origin",
    "PreparedRequest",
    "RequestError",
    "encode_body",
    "header_name_problem",
    "header_value_problem",
    "origin_of",
    "render_endpoint",
    "sent_origin_problem",
    "url_origin",
]

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import orjson

from flowlang.errors import RequestError
from flowlang.expr.backends import compiled_helper
from flowlang.expr.decimals_dates import MAX_DECIMAL_EXPONENT, date_text, decimal_text
from flowlang.expr.values import OutputTooLong, first_non_finite, json_length_exceeds, to_text

MAX_HEADER_VALUE = 8 * 1024
#: A list or map in an endpoint is refused when its JSON text would be longer than this.
MAX_ENDPOINT_VALUE = 100_000


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready to send: nothing in it came from a template unchecked."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)


#: Control characters RFC 9110 forbids in a field value (every one but HTAB).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def header_name_problem(name: str) -> str | None:
    """Why a request cannot set header ``name``, or None when it can: the Host header is the
    endpoint's host (a connection verified for that name must not carry a request for another)."""
    if name.lower() == "host":
        return f"the {name} header cannot be set: requests carry the endpoint's host"
    return None


def header_value_problem(value: str) -> str | None:
    """Why a header value cannot be sent, or None when it can."""
    if _CONTROL.search(value) is not None:
        if any(char in value for char in "\r\n\x00"):
            return "contains a line break or NUL character"
        return "contains a control character (only tab is allowed)"
    if not value.isascii():
        return "contains non-ASCII characters"
    if len(value) > MAX_HEADER_VALUE:
        return f"is longer than {MAX_HEADER_VALUE} characters"
    return None


# --- origins: scheme, host and port -------------------------------------------------------

#: Methods whose request carries a body even when it has none (``Content-Length: 0``, ``{}``).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY_END = re.compile(r"[/?#]")
_HOST_NAME = re.compile(r"[\w.-]+")  # letters (IDN too), digits, '_', '-', '.'
_PORT = re.compile(r"[0-9]{1,5}")


class Origin(NamedTuple):
    """Scheme, host (as the sender reads it) and port (the default one filled in)."""

    scheme: str
    host: str
    port: int


def _authority_problem(authority: str) -> str | None:
    """Why the authority of a URL (``host[:port]``) is not well formed, or None."""
    if "@" in authority:
        return "a URL cannot carry credentials (user@host); send them in a header"
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            return f"the IPv6 address in {authority!r} has no closing ']'"
        literal, rest = authority[1:close], authority[close + 1 :]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return f"{literal!r} is not an IPv6 address"
        if "%" in literal:
            return f"{literal!r} has a zone index, which a URL cannot use"
        if rest and not rest.startswith(":"):
            return f"unexpected {rest!r} after the IPv6 address"
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
        if not host:
            return "the URL has no host"
        if not _HOST_NAME.fullmatch(host):
            return f"{host!r} is not a valid host name"
    if port is not None and (not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535):
        return f"the port {port!r} is not a number from 1 to 65535"
    return None


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL, checked strictly; ValueError saying what is
    wrong."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise ValueError("the URL must start with https:// (or http://)")
    start = len(scheme) + 3
    found = _AUTHORITY_END.search(url, start)
    end = found.start() if found is not None else len(url)
    problem = _authority_problem(url[start:end])
    if problem is not None:
        raise ValueError(problem)
    return url_origin(url[:end] + "/")


def url_origin(url: str) -> Origin:
    """The origin the sender (httpx) reads in ``url``; ValueError when it cannot read one."""
    try:
        return _parsed_origin(httpx.URL(url))
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:
        raise ValueError(f"not a valid URL ({error})") from None


def _parsed_origin(parsed: httpx.URL) -> Origin:
    """The origin in httpx's reading of a URL, the default port filled in."""
    scheme = parsed.scheme
    return Origin(scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(scheme, 0))


#: ``scheme://authority`` texts longer than this are checked without being remembered.
_CACHED_ORIGIN_TEXT = 512


@lru_cache(maxsize=4096)
def _cached_origin(head: str) -> Origin | str:
    try:
        return origin_of(head)
    except ValueError as error:
        return str(error)


def _origin_or_problem(head: str) -> Origin | str:
    """The origin of ``scheme://authority`` text, or why it has none (remembered when short)."""
    if len(head) > _CACHED_ORIGIN_TEXT:
        return _cached_origin.__wrapped__(head)
    return _cached_origin(head)


def sent_origin_problem(url: str, parsed: httpx.URL) -> str | None:
    """Why ``url`` cannot be sent as ``parsed`` (httpx's reading of it): its authority text is
    not well formed, or httpx reads another scheme, host or port in it than the text names."""
    start = url.find("://")
    found = _AUTHORITY_END.search(url, start + 3) if start >= 0 else None
    expected = _origin_or_problem(url[: found.start()] if found is not None else url)
    if isinstance(expected, str):
        return expected
    actual = _parsed_origin(parsed)
    if actual != expected:
        return (
            f"the URL would go to {actual.scheme}://{actual.host}:{actual.port}, not to "
            f"{expected.scheme}://{expected.host}:{expected.port} as written"
        )
    return None


# --- endpoints ----------------------------------------------------------------------------


def encode_component(value: Any) -> str:
    """Percent-encode a templated value for any part of a URL: every reserved character escaped.

    A value of only dots is encoded too, so that ``.`` and ``..`` never act as path segments.
    Text that is not valid Unicode (a lone surrogate) cannot be encoded: RequestError.
    """
    try:
        text = to_text(value, MAX_ENDPOINT_VALUE)
    except OutputTooLong:  # a list or map whose JSON would be longer: refused before it is built
        raise RequestError(
            f"a templated endpoint value is longer than {MAX_ENDPOINT_VALUE} characters"
        ) from None
    try:
        encoded = quote(text, safe="")
    except UnicodeEncodeError:
        raise RequestError(
            "a templated endpoint value is not valid text (it holds a lone surrogate)"
        ) from None
    if encoded and set(encoded) == {"."}:
        return "%2E" * len(encoded)
    return encoded


def render_endpoint(parts: tuple[Any, ...], context: Mapping[str, Any]) -> str:
    """The URL of an endpoint: fixed text as written, each templated value percent-encoded.

    The first part must be fixed text holding the scheme, host, port and the character that
    ends them (checked at load, and here again: RequestError otherwise), so the URL's origin is
    the one checked at load; the sender then checks that httpx reads that same origin in it.
    """
    first = parts[0] if parts else None
    if type(first) is not str:
        raise RequestError("the endpoint does not start with a fixed https://host/")
    if len(parts) == 1:
        return first
    start = first.find("://")
    if start < 0 or _AUTHORITY_END.search(first, start + 3) is None:
        raise RequestError("the endpoint's host and port are not fixed text ended by '/', '?', '#'")
    return "".join(
        part if type(part) is str else encode_component(part.render(context)) for part in parts
    )


#: orjson writes only exact JSON types with these options: anything else goes to the default.
_EXACT_ONLY = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


class _NotExact(Exception):  # noqa: N818 - control flow inside encode_body only
    """Raised by orjson's default: the body holds something other than exact JSON types."""


def _not_exact(value: Any) -> Any:
    raise _NotExact  # runs no code of the value: orjson walks borrowed references


#: The integers JSON carries exactly here (orjson's range: signed and unsigned 64-bit).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_BEYOND_64_BITS = "an integer beyond 64 bits cannot be sent exactly"
_CLOSE = object()  # marks the end of a container in _plain_body's work list


def _body_error(reason: str) -> RequestError:
    return RequestError(f"the body cannot be sent: {reason}")


def _plain_scalar(item: Any) -> tuple[Any, int] | None:
    """A JSON scalar as its exact type and a lower bound of its text length; None otherwise.

    Subclasses are read with their base type's methods (no override runs); NaN, infinity and
    integers beyond 64 bits raise RequestError.
    """
    if item is None or item is True or item is False:
        return item, 4
    if isinstance(item, str):
        text = str.__str__(item)
        return text, len(text) + 2
    if isinstance(item, int) and not isinstance(item, bool):
        number = int.__int__(item)
        if not _INT_MIN <= number <= _INT_MAX:
            raise _body_error(_BEYOND_64_BITS)
        return number, 1
    if isinstance(item, float):
        real = float.__float__(item)
        if not math.isfinite(real):
            raise _body_error(f"{real!r} is not a JSON number")
        return real, 3
    if isinstance(item, Decimal):
        return _decimal_scalar(item)
    if isinstance(item, (date, time)):  # datetime is a date
        iso = date_text(item)
        if iso is None:
            raise _body_error("a date whose time zone fails is not JSON")
        return iso, len(iso) + 2
    return None


def _decimal_scalar(item: Decimal) -> tuple[Any, int]:
    """A Decimal as a JSON number with exactly its digits (``12.50``), written as is."""
    text = _decimal_text(item)
    return orjson.Fragment(text), len(text)


def _decimal_text(item: Decimal) -> str:
    """The exact digits of a finite Decimal of a sensible exponent; RequestError otherwise."""
    exact = item if type(item) is Decimal else Decimal(item)  # no override runs
    if not exact.is_finite():
        raise _body_error("a decimal that is not a number or is infinite is not a JSON number")
    if abs(exact.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise _body_error(
            f"a decimal with an exponent beyond {MAX_DECIMAL_EXPONENT} is not sent as a number"
        )
    return decimal_text(exact) or ""


def _snapshot(item: Any) -> list[Any]:
    """A list's items or a map's ``(key, value)`` pairs, read once.

    Built-in containers and their subclasses are read with the base type's methods; a custom
    Mapping's own code runs here, on this snapshot only (nothing else is walking meanwhile),
    and its exception is a RequestError.
    """
    if isinstance(item, list):
        return list.copy(item)
    if isinstance(item, tuple):
        return list(tuple.__iter__(item))
    if isinstance(item, dict):
        return list(dict.items(item))
    try:
        return [(key, value) for key, value in item.items()]
    except Exception as error:
        raise _body_error(
            f"reading a {type(item).__name__} raised {type(error).__name__}"
        ) from None


def _plain_body(body: Any, limit: int) -> Any:
    """A copy of ``body`` made only of exact JSON types, or RequestError (iterative).

    Each container is read once per place it appears, into a snapshot (so no value's code runs
    while a serializer walks borrowed references); a lower bound of the JSON text is counted on
    the way and the walk stops past ``limit`` bytes, so a list holding one big sublist many times
    is refused before its text is built. A container inside itself is refused.
    """
    first = _plain_scalar(body)
    if first is not None:
        return first[0]
    total = 0
    root: list[Any] = []
    # Work items: (value, target list or dict, key) to copy ``value`` into ``target``; or
    # (_CLOSE, id) when a container's items are all copied.
    work: list[tuple[Any, Any, Any]] = [(body, root, None)]
    open_ids: set[int] = set()
    while work:
        item, target, key = work.pop()
        if item is _CLOSE:
            open_ids.discard(target)
            continue
        scalar = _plain_scalar(item)
        if scalar is not None:
            copy, size = scalar
        elif isinstance(item, (list, tuple, Mapping)):
            if id(item) in open_ids:
                raise _body_error("a list or map contains itself")
            entries = _snapshot(item)
            size = 1 + max(1, len(entries))
            open_ids.add(id(item))
            work.append((_CLOSE, id(item), None))
            if isinstance(item, Mapping):
                copy = {}
                for entry_key, value in reversed(entries):
                    if isinstance(entry_key, Decimal):  # a key is text: its digits
                        digits = _decimal_text(entry_key)
                        plain_key: tuple[Any, int] | None = (digits, len(digits) + 2)
                    else:
                        plain_key = _plain_scalar(entry_key)
                    if plain_key is None:
                        name = type(entry_key).__name__
                        raise _body_error(f"a key of type {name} is not JSON")
                    size += plain_key[1] + 1
                    work.append((value, copy, plain_key[0]))
            else:
                copy = [None] * len(entries)
                for position in range(len(entries) - 1, -1, -1):
                    work.append((entries[position], copy, position))
        else:
            raise _body_error(f"a value of type {type(item).__name__} is not JSON")
        total += size
        if total > limit:
            raise RequestError(f"the body is more than the limit of {limit} bytes")
        if key is None and target is root:
            root.append(copy)
        else:
            target[key] = copy
    return root[0]


@lru_cache(maxsize=1)
def _default_body_walks() -> tuple[Callable[[Any, int], bool], Callable[[Any], float | None]]:
    """The body walks of the process's default backend, chosen on first use."""
    return (
        compiled_helper("json_length_exceeds", json_length_exceeds),
        compiled_helper("first_non_finite", first_non_finite),
    )


def encode_body(
    body: Any,
    limit: int,
    *,
    exceeds: Callable[[Any, int], bool] | None = None,
    scan: Callable[[Any], float | None] | None = None,
) -> bytes:
    """Serialize a body value; raise RequestError when it is not exact JSON or too large.

    A body of exact JSON types only is measured (a lower bound, without building the text),
    written by orjson (which runs no value code with these options) and scanned for NaN and
    infinity. Anything else, or any problem, is copied into exact JSON types first
    (:func:`_plain_body`: no value code runs during serialization, NaN, infinity and integers
    beyond 64 bits are refused, and a body surely longer than ``limit`` is refused before its
    text is built); orjson writes the copy. ``exceeds`` and ``scan``: json_length_exceeds and
    first_non_finite, or their compiled twins (a runtime passes those of its backend); None:
    those of the process's default backend (automations, which have no backend of their own).
    """
    if exceeds is None or scan is None:
        exceeds, scan = _default_body_walks()
    if not exceeds(body, limit):  # fast path: only exact types, nothing to refuse
        try:
            data = orjson.dumps(body, default=_not_exact, option=_EXACT_ONLY)
        except (_NotExact, TypeError, orjson.JSONEncodeError):
            pass
        else:
            if len(data) <= limit and scan(body) is None:
                return data
    plain = _plain_body(body, limit)  # the rules, and the error that says which one failed
    try:
        data = orjson.dumps(plain, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as error:  # e.g. deeper than orjson writes
        raise _body_error(str(error)) from None
    if len(data) > limit:
        raise RequestError(f"the body is {len(data)} bytes, more than the limit of {limit}")
    return data


def check_header(name: str, value: Any) -> str:
    """The text of a header value, or RequestError saying why it cannot be sent."""
    try:
        text = to_text(value, MAX_HEADER_VALUE)
    except OutputTooLong:  # a list or map whose JSON would be longer: refused before it is built
        too_long = f"header {name!r} is longer than {MAX_HEADER_VALUE} characters"
        raise RequestError(too_long) from None
    problem = header_value_problem(text)
    if problem is not None:
        raise RequestError(f"header {name!r} {problem}")
    return text
