"""Records: JSON lines that always read back, read with bounded memory, and events at the door.

Dead-letter lines and the store's values are written with ``json.dumps(...,
ensure_ascii=True)``: pure ASCII, so any text (a lone surrogate such as ``"\\ud800"`` included)
is written as an escape that ``json.loads`` turns back into the same text. Reading takes one
line at a time, at most ``limit`` bytes of it (a longer line is skipped without being held in
memory); a line that is not UTF-8, not JSON, nests too deeply or is not an object is reported
with its file and line number and skipped, never fatal.
"""

from __future__ import annotations

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_EVENT_DEPTH",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_DEPTH",
    "MAX_RECORD_SKIP",
    "EventError",
    "LineTooLongError",
    "RecordError",
    "RecordFileError",
    "append_line",
    "bounded_lines",
    "check_event",
    "check_record_file",
    "decode_record",
    "decoded_lines",
    "encode_record",
    "nests_deeper_than",
    "read_records",
]

import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from flowlang.errors import EventError, LineTooLongError, RecordError, RecordFileError
from flowlang.expr.shared import carried_text, kind_name
from flowlang.expr.values import plain_json

#: An event nests at most this deep (the depth of JSON the HTTP layer accepts).
MAX_EVENT_DEPTH = 64
#: An event, written as ASCII JSON, is at most this many bytes.
MAX_EVENT_BYTES = 1024 * 1024
#: A dead-letter line (or a record in the store) is at most this many bytes (written and read).
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: A dead-letter line longer than MAX_RECORD_BYTES is skipped up to this many bytes;
#: past it (a file of zeros, say) the file is refused: it is not JSON lines.
MAX_RECORD_SKIP = 2 * MAX_RECORD_BYTES
#: A dead-letter record nests at most this deep (an event or result plus wrappers).
MAX_RECORD_DEPTH = 2 * MAX_EVENT_DEPTH + 8
_CHUNK = 1024 * 1024


def check_record_file(path: Path, what: str) -> None:
    """RecordFileError unless ``path`` is a regular file or does not exist yet: checked before
    a lock is made next to it or it is read (``/dev/zero`` never ends, a FIFO blocks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise RecordFileError(f"{what} {path} cannot be used: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise RecordFileError(
            f"{what} {path} is not a regular file (a device, FIFO or directory): refused"
        )


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON-shaped ``value`` nests containers more than ``limit`` deep (no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def encode_record(record: Mapping[str, Any], limit: int = MAX_RECORD_BYTES) -> str:
    """One line of ASCII JSON (with its newline); RecordError when it could not be read back."""
    try:
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise RecordError(f"cannot be written as JSON ({error})") from None
    if len(line) >= limit:
        raise RecordError(f"is larger than {limit} bytes")
    return line + "\n"


def append_line(path: Path, line: str, sync: bool = False) -> None:
    """Append ``line`` (from :func:`encode_record`) to ``path``, flushed (and on the disk, with
    ``sync``); OSError when the file cannot take it."""
    with path.open("a", encoding="ascii") as handle:
        handle.write(line)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def decode_record(raw: bytes, depth: int = MAX_RECORD_DEPTH) -> dict[str, Any]:
    """The object of one line; RecordError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f"invalid JSON: {error.msg}", error.colno) from None
    except RecursionError:
        raise RecordError(f"nests deeper than {depth} levels") from None
    except ValueError as error:  # an integer too long to convert, for one
        raise RecordError(f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RecordError(f"not a JSON object but {kind_name(value)}")
    if nests_deeper_than(value, depth):
        raise RecordError(f"nests deeper than {depth} levels")
    return value


def bounded_lines(
    stream: IO[Any], limit: int, max_skip: int, label: str | None = None
) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line without its newline)``; None for a line longer than ``limit`` bytes,
    which is skipped in chunks. LineTooLongError (naming ``label``, when given) once a line goes
    past ``max_skip`` bytes: every read has a bound (``/dev/zero`` ends too)."""
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        data = chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk
        number += 1
        if data.endswith(b"\n") or len(chunk) <= limit:
            yield number, data.rstrip(b"\r\n")
            continue
        skipped = len(data)
        while True:  # the rest of an overlong line, a chunk at a time
            chunk = stream.readline(_CHUNK)
            if not chunk or chunk[-1:] in ("\n", b"\n"):
                break
            skipped += len(chunk)
            if skipped > max_skip:
                where = f"{label}:" if label is not None else "line "
                raise LineTooLongError(
                    f"{where}{number} goes on past {max_skip} bytes without a newline: "
                    "not JSON lines (refused)"
                )
        yield number, None


def decoded_lines(
    stream: IO[Any], limit: int, max_skip: int, label: str | None = None
) -> Iterator[tuple[int, bytes | None, dict[str, Any] | RecordError | None]]:
    """``(line number, line, its object or why it is not one)`` for each line that is not
    blank, read as :func:`bounded_lines` reads them; ``(number, None, None)`` for a line longer
    than ``limit`` bytes (skipped). The one reader of dead-letter and event lines."""
    for number, raw in bounded_lines(stream, limit, max_skip, label):
        if raw is None:
            yield number, None, None
        elif raw.strip():
            try:
                yield number, raw, decode_record(raw)
            except RecordError as error:
                yield number, raw, error


def read_records(
    path: Path, limit: int = MAX_RECORD_BYTES, max_skip: int = MAX_RECORD_SKIP
) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """The records of a JSON-lines file with their line numbers, and a message per bad line
    (``file:line: why``). A missing file has none. A torn last line is reported like any other.
    RecordFileError for a path that is not a regular file; LineTooLongError (naming the file)
    for a line that goes on past ``max_skip`` bytes."""
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    check_record_file(path, "file")
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return records, problems
    with handle:
        for number, _, record in decoded_lines(handle, limit, max_skip, str(path)):
            if record is None:
                problems.append(f"{path}:{number}: skipped: longer than {limit} bytes")
            elif isinstance(record, RecordError):
                problems.append(f"{record.where(str(path), number)} (skipped)")
            else:
                records.append((number, record))
    return records, problems


def check_event(
    event: Any, depth: int = MAX_EVENT_DEPTH, size: int = MAX_EVENT_BYTES
) -> dict[str, Any]:
    """The event as plain JSON data, accepted at the door; EventError saying why it is not."""
    if not isinstance(event, Mapping):
        raise EventError("an event is an object with an id and a type (text)")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise EventError("an event needs an id (text) so that it is delivered once")
    shown = carried_text(ascii(event_id))  # whole: the output masks it, then shortens it
    if nests_deeper_than(event, depth):
        raise EventError(f"event {shown} nests deeper than {depth} levels")
    plain: dict[str, Any] = plain_json(event)
    if len(json.dumps(plain, ensure_ascii=True, separators=(",", ":"))) > size:
        raise EventError(f"event {shown} is larger than {size} bytes as JSON")
    return plain
