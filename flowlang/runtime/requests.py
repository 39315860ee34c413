"""Requests: turn an http_request step and a scope into a checked request, before any I/O.

Templated endpoint values are percent-encoded (they cannot change the host, the path structure
or the query), header values with CR, LF, NUL or non-ASCII characters are refused, and the body
is built as a value and serialized once with orjson, refusing NaN, infinity, integers beyond
64 bits and anything that is not JSON.
"""

from __future__ import annotations

__all__ = [
    "PreparedRequest",
    "RequestError",
    "encode_body",
    "header_value_problem",
    "render_endpoint",
]

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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


def header_value_problem(value: str) -> str | None:
    """Why a header value cannot be sent, or None when it can."""
    if any(char in value for char in "\r\n\x00"):
        return "contains a line break or NUL character"
    if not value.isascii():
        return "contains non-ASCII characters"
    if len(value) > MAX_HEADER_VALUE:
        return f"is longer than {MAX_HEADER_VALUE} characters"
    return None


def encode_component(value: Any) -> str:
    """Percent-encode a templated value for any part of a URL: every reserved character escaped.

    A value of only dots is encoded too, so that ``.`` and ``..`` never act as path segments.
    """
    text = to_text(value)
    encoded = quote(text, safe="")
    if encoded and set(encoded) == {"."}:
        return "%2E" * len(encoded)
    return encoded


def render_endpoint(parts: tuple[Any, ...], context: Mapping[str, Any]) -> str:
    """The URL of an endpoint: fixed text as written, each templated value percent-encoded."""
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
