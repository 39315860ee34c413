"""Requests: turn an http_request step and a scope into a checked request, before any I/O.

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
    "DEFAULT_PORTS",
    "Origin",
    "PreparedRequest",
    "RequestError",
    "encode_body",
    "header_value_problem",
    "origin_of",
    "render_endpoint",
    "sent_origin_problem",
    "url_origin",
]

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import orjson

from flowlang.errors import FlowError
from flowlang.expr.backends import compiled_helper
from flowlang.expr.values import to_text

MAX_HEADER_VALUE = 8 * 1024


class RequestError(FlowError):
    """A request that cannot be sent as built (a bad header value, a body that is not JSON)."""


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


def origin_of(url: str) -> tuple[Origin, int]:
    """The origin of an absolute http(s) URL, checked strictly, and the index of the character
    that ends its authority (``len(url)`` when none does); ValueError saying what is wrong."""
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
    return url_origin(url[:end] + "/"), end


def url_origin(url: str) -> Origin:
    """The origin the sender (httpx) reads in ``url``; ValueError when it cannot read one."""
    try:
        parsed = httpx.URL(url)
        scheme = parsed.scheme
        return Origin(scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(scheme, 0))
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:
        raise ValueError(f"not a valid URL ({error})") from None


#: ``scheme://authority`` texts longer than this are checked without being remembered.
_CACHED_ORIGIN_TEXT = 512


@lru_cache(maxsize=4096)
def _cached_origin(head: str) -> Origin | str:
    try:
        return origin_of(head)[0]
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
    scheme = parsed.scheme
    actual = (scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(scheme, 0))
    if actual != expected:
        return (
            f"the URL would go to {actual[0]}://{actual[1]}:{actual[2]}, not to "
            f"{expected.scheme}://{expected.host}:{expected.port} as written"
        )
    return None


# --- endpoints ----------------------------------------------------------------------------


def encode_component(value: Any) -> str:
    """Percent-encode a templated value for any part of a URL: every reserved character escaped.

    A value of only dots is encoded too, so that ``.`` and ``..`` never act as path segments.
    Text that is not valid Unicode (a lone surrogate) cannot be encoded: RequestError.
    """
    text = to_text(value)
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


def first_non_finite(value: Any) -> float | None:
    """The first NaN or infinity inside JSON-shaped ``value``, or None (iterative).

    ``flowlang._cevaluator.first_non_finite`` is its compiled twin; a property test keeps the
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
        if kind is not float and not isinstance(item, float):
            if id(item) in seen:
                continue
            seen.add(id(item))
            kept.append(item)
        if kind is float:
            if not math.isfinite(item):
                return float(item)
        elif kind is dict:
            pending.extend(reversed(item.values()))
        elif kind is list or isinstance(item, (list, tuple)):
            pending.extend(reversed(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return float(item)
        elif isinstance(item, Mapping):
            pending.extend(reversed(list(item.values())))
    return None


_scan_non_finite = compiled_helper("first_non_finite", first_non_finite)


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"a value of type {type(value).__name__} is not JSON")


def _encode_unusual(body: Any, error: Exception) -> bytes:
    """Serialize a body orjson refused with plain options: non-string keys, or a real problem."""
    if "64-bit" in str(error):
        raise RequestError(
            "the body cannot be sent: an integer beyond 64 bits cannot be sent exactly"
        )
    try:
        return orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as again:
        too_big = "64-bit" in str(again)
        reason = "an integer beyond 64 bits cannot be sent exactly" if too_big else again
        raise RequestError(f"the body cannot be sent: {reason}") from None


def encode_body(body: Any, limit: int) -> bytes:
    """Serialize a body value once; raise RequestError when it is not exact JSON or too large."""
    try:
        data = orjson.dumps(body, default=_default)
    except orjson.JSONEncodeError as error:
        data = _encode_unusual(body, error)
    bad = _scan_non_finite(body)  # orjson writes NaN and infinity as null: refuse them instead
    if bad is not None:
        raise RequestError(f"the body cannot be sent: {bad!r} is not a JSON number")
    if len(data) > limit:
        raise RequestError(f"the body is {len(data)} bytes, more than the limit of {limit}")
    return data


def check_header(name: str, value: Any) -> str:
    """The text of a header value, or RequestError saying why it cannot be sent."""
    text = to_text(value)
    problem = header_value_problem(text)
    if problem is not None:
        raise RequestError(f"header {name!r} {problem}")
    return text
