"""Logs: one JSON object per line for each state change, through the secret redaction.

A line (keys in this order, then the record's own fields)::

    {"ts":"2026-11-30T09:48:19.925Z","level":"info","logger":"flowlang.serve",
     "event":"run.suspended","flow":"billing","fingerprint":"f6c29d98","call_id":"CA123",
     "step":"ask_account","steps":1,"duration_ms":0.4,"trace_id":"4bf9...","span_id":"00f0..."}

``event`` is the record's message; the fields are what the record was given in ``extra``;
``trace_id`` and ``span_id`` are the current span's when one is active (or given). Every text
is masked by the process's secret redaction (the record factory of
:func:`~flowlang.runtime.secrets.install_log_redaction` masks the message and arguments only;
the formatter masks the fields too). Bodies are never logged; caller numbers are never given.
"""

from __future__ import annotations

__all__ = ["JsonLogFormatter", "configure_json_logging", "redact_text"]

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from flowlang.observe.tracing import current_ids
from flowlang.runtime.secrets import SecretLogFilter, holds_secret, install_log_redaction

#: The longest text of one field (longer is cut); a line stays a few KB at most.
MAX_FIELD = 4096
#: Fields of a record at most (the rest are left out).
MAX_FIELDS = 64
#: The attributes every LogRecord has: anything else on a record is a field of its line.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_FILTER = SecretLogFilter()


def redact_text(text: str) -> str:
    """``text`` with every secret value a run of this process used masked (``[redacted]``),
    by the same redaction as log records."""
    if not holds_secret(text):
        return text
    record = logging.LogRecord("flowlang", logging.INFO, "", 0, text, None, None)
    _FILTER.filter(record)
    return record.getMessage()


def _plain(value: Any) -> Any:
    """A field value as JSON may hold it: numbers, booleans and None as they are; text cut and
    masked; anything else as its text."""
    if value is None or isinstance(value, bool | int | float):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return None
        return value
    text = value if isinstance(value, str) else repr(value)
    return redact_text(text[:MAX_FIELD])


#: The last whole second formatted, and its text up to the milliseconds (records come in
#: bursts within one second: the date is formatted once per second, not once per line).
_last_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    global _last_second
    second = int(created) if 0 <= created < 1e11 else -1
    # datetime's own rounding: the fraction to whole microseconds, half to even
    micros = round((created - second) * 1e6) if second >= 0 else -1
    if not 0 <= micros <= 999_999:  # out of range, or rounded up to the next second
        moment = datetime.fromtimestamp(created, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    cached, prefix = _last_second
    if cached != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (second, prefix)
    return f"{prefix}{micros // 1000:03d}Z"


class JsonLogFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its message
            message = str(record.msg)
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _plain(message),
        }
        fields = 0
        attributes = record.__dict__
        for key in [key for key in attributes if key not in _STANDARD]:
            if key in line or key.startswith("_"):
                continue
            value = attributes[key]
            kind = type(value)
            if kind is str:
                line[key[:100]] = redact_text(value[:MAX_FIELD])
            elif kind is int or kind is bool or value is None:  # nothing to mask or cut
                line[key[:100]] = value
            else:
                line[key[:100]] = _plain(value)
            fields += 1
            if fields == MAX_FIELDS:
                break
        if "trace_id" not in line:
            ids = current_ids()
            if ids is not None:
                line["trace_id"], line["span_id"] = ids
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or self.formatException(record.exc_info)
            line["exception"] = _plain(text)
        try:
            return orjson.dumps(line).decode()
        except (TypeError, orjson.JSONEncodeError):  # text orjson refuses (a lone surrogate)
            return json.dumps(line, ensure_ascii=True, default=str)


#: The handler configure_json_logging installed last (replaced by the next call).
_installed: logging.Handler | None = None


def configure_json_logging(
    stream: IO[str] | None = None, level: str | int = "INFO", *, propagate: bool = False
) -> logging.Handler:
    """Write the records of the ``flowlang`` loggers (every child: ``flowlang.serve`` ...) as
    JSON lines to ``stream`` (stderr when None) from ``level`` on; the handler masks secrets
    too. A second call replaces the first one's handler. ``propagate``: whether the records
    also go on to the root logger's handlers (off: each state change is one line)."""
    global _installed
    install_log_redaction()
    logger = logging.getLogger("flowlang")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(_FILTER)
    if _installed is not None:
        logger.removeHandler(_installed)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    _installed = handler
    return handler
