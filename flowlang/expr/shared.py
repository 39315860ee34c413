"""Shared evaluation helpers: the cold paths both backends call, so their errors are identical.

Strict-mode undefined errors, the application of a filter with its error and size checks, and
the rendered-size limit live here once; the Cython backend imports this module.
"""

from __future__ import annotations

__all__ = [
    "MAX_CARRIED_TEXT",
    "MAX_SHOWN_ERROR",
    "apply_filter",
    "carried_text",
    "kind_name",
    "limited_text",
    "output_too_long",
    "shorten",
    "undefined_error",
    "whole_text",
]

from collections.abc import Mapping, Sequence
from typing import Any

from flowlang.errors import FlowFilterError, FlowLimitError, FlowUndefinedError
from flowlang.expr.filters import TEXT_BUILDERS
from flowlang.expr.values import OutputTooLong, is_number, to_text

#: The longest text an error carries from data (a value, another exception's message). Longer
#: text is not cut but left out (its length is said): a cut before masking would leave the
#: prefix of a secret that crosses it unmasked.
MAX_CARRIED_TEXT = 1024 * 1024


#: The longest error text shown in output (a run's error, a dead letter's), after masking.
MAX_SHOWN_ERROR = 2000


def carried_text(text: str, limit: int = MAX_CARRIED_TEXT) -> str:
    """``text`` whole for an error to carry, or a note of its length when it passes ``limit``
    (never a prefix: secrets are masked later, on the whole text)."""
    return text if len(text) <= limit else f"(a text of {len(text)} characters, not shown)"


def shorten(masked: str, limit: int) -> str:
    """``masked`` cut to ``limit`` characters and ``…``: only for output whose secrets are
    already masked (mask first, then cut: a cut secret is no longer recognized)."""
    return masked if len(masked) <= limit else masked[:limit] + "…"


def kind_name(value: Any) -> str:
    """The kind of a value as SPEC.md names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    return "an opaque value"


def _length_note(container: list[Any] | tuple[Any, ...]) -> str:
    """How many items a list has, for a message; a list subclass whose ``__len__`` raises
    (hostile, only from an embedding application) must not turn the error into a crash."""
    try:
        return f"it has {len(container)}"
    except Exception:
        return "its length cannot be read"


def undefined_error(
    labels: Sequence[str],
    segment_labels: tuple[str, ...],
    position: int,
    container: Any,
    root: str | None,
) -> FlowUndefinedError:
    """The strict-mode error for a path that failed at segment ``position``.

    ``position`` is -1 when the root name itself is missing from the context.
    """
    full = (labels[-1] + segment_labels[-1]) if labels else (root or "")
    if position < 0:
        return FlowUndefinedError(full, "", root or "", f"{root!r} is not in the context")
    resolved, segment = labels[position], segment_labels[position]
    if container is None:
        reason = f"{resolved} is null"
    elif isinstance(container, Mapping):
        reason = f"{resolved} has no key {segment}"
    elif isinstance(container, (list, tuple)):
        reason = f"{resolved} has no item {segment} ({_length_note(container)})"
    else:
        reason = f"{resolved} is {kind_name(container)}, not a map or a list"
    return FlowUndefinedError(full, resolved, segment, reason)


def output_too_long(limit: int) -> FlowLimitError:
    """The error for rendered text longer than ``limit`` characters."""
    return FlowLimitError(f"rendered text is longer than the limit of {limit} characters")


def limited_text(value: Any, limit: int) -> str:
    """The text of a value in rendered text; a list or map whose JSON would pass ``limit`` is
    refused (FlowLimitError) before that JSON is built."""
    try:
        return to_text(value, limit)
    except OutputTooLong:
        raise output_too_long(limit) from None


#: A filter error's message shows at most this much of what the filter raised; the error keeps
#: the whole text in ``whole`` for outputs that mask it, then cut it (:func:`whole_text`).
FILTER_DETAIL = 200


def _filter_error(name: str, error: Exception) -> FlowFilterError:
    try:
        detail = str(error)
    except Exception:  # an exception whose own __str__ raises
        detail = "(no message)"
    head = f"filter {name!r} raised {type(error).__name__}: "
    shown = detail if len(detail) <= FILTER_DETAIL else detail[:FILTER_DETAIL] + "…"
    problem = FlowFilterError(head + shown)
    problem.__dict__["whole"] = head + carried_text(detail)
    return problem


def whole_text(error: BaseException) -> str:
    """The whole message of ``error``, for an output that masks it and then shortens it: its
    ``whole`` when it keeps one (its ``str`` is cut, for readers without a redactor: a cut secret
    would escape masking), else ``str(error)``."""
    whole = error.__dict__.get("whole") if hasattr(error, "__dict__") else None
    return whole if isinstance(whole, str) else str(error)


def apply_filter(
    name: str, function: Any, builtin: bool, value: Any, args: list[Any], limit: int
) -> Any:
    """Call one filter; its exception becomes FlowFilterError, text past ``limit`` FlowLimitError.

    Built-in filters that build text get ``limit`` and stop before building past it. A
    built-in filter raises nothing on JSON-shaped data; the code of a hostile value it reads
    (a custom Mapping, a list subclass) may, and that is reported like a custom filter's error.
    """
    try:
        if builtin and function in TEXT_BUILDERS:  # spelled out: no *args call on the hot path
            if not args:
                result = function(value, limit=limit)
            elif len(args) == 1:
                result = function(value, args[0], limit=limit)
            else:
                result = function(value, *args, limit=limit)
        else:
            result = function(value, *args)
    except OutputTooLong:
        raise output_too_long(limit) from None
    except Exception as error:  # never crash the call
        raise _filter_error(name, error) from error
    if type(result) is str and len(result) > limit:
        raise output_too_long(limit)
    return result
