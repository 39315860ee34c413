"""Reading the command line's inputs: documents and contexts, bounded, as UTF-8 text."""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_STATUSES",
    "UsageError",
    "read_context",
    "read_input",
]

import json
import sys
from typing import Any, TextIO

from flowlang.errors import UsageError
from flowlang.expr.shared import kind_name
from flowlang.flow.source import MAX_DOCUMENT, read_limited

#: The exit-code contract of every command: success; the work found problems (findings, a
#: failed run, dead letters written); bad usage or unreadable input.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: Ctrl-C, and a closed output pipe (``| head``): as a shell reports SIGINT and SIGPIPE.
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141

#: The contract in words, for every command's ``--help`` and the README.
EXIT_STATUSES = """exit status:
  0    success
  1    the work found problems: errors found by check (warnings alone: 0),
       a failed run or evaluation, dead letters written (automate, replay)
  2    bad usage or unreadable input: a missing or unreadable file, not UTF-8,
       too large, invalid JSON or document, a template syntax error
  130  interrupted (Ctrl-C); 141: the output pipe was closed (| head)"""


def read_input(name: str, stdin: TextIO, what: str, *, dash_is_stdin: bool = True) -> str:
    """The UTF-8 text of file ``name`` (``-``: standard input), read with the document limit.

    At most ``MAX_DOCUMENT`` + 1 bytes are read (:func:`read_limited`, as for a document), so
    ``/dev/zero``, a FIFO or an endless pipe ends with a message instead of exhausting memory.
    """
    from_stdin = name == "-" and dash_is_stdin
    label = "<stdin>" if from_stdin else name
    raw: bytes | str
    try:
        if from_stdin:
            buffer = getattr(stdin, "buffer", None)
            raw = read_limited(buffer) if buffer is not None else read_limited(stdin)
        else:
            with open(name, "rb") as stream:
                raw = read_limited(stream)
    except OSError as error:
        raise UsageError(f"cannot read {what} {label}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:  # a text stream without a byte buffer
        raise UsageError(f"{label}: {what} is not UTF-8 text ({error.reason})") from None
    if len(raw) > MAX_DOCUMENT:
        raise UsageError(f"{label}: {what} is larger than {MAX_DOCUMENT} bytes")
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{label}: {what} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None


def read_context(name: str | None, stdin: TextIO) -> Any:
    """The JSON object in file ``name`` (``-``: standard input); ``{}`` when no file is named."""
    if name is None:
        return {}
    label = "<stdin>" if name == "-" else name
    text = read_input(name, stdin, "context")

    def whole_number(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise UsageError(
                f"{label}: a number in the context has {len(digits)} digits, more than "
                f"{sys.get_int_max_str_digits()}"
            ) from None

    try:
        context = json.loads(text, parse_int=whole_number)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{label}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise UsageError(f"{label}: JSON nests too deeply") from None
    if not isinstance(context, dict):
        raise UsageError(f"{label}: the context must be a JSON object, not {kind_name(context)}")
    return context
