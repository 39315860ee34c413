"""Errors: every exception class of flowlang (and its one warning), each rendering its place."""

from __future__ import annotations

__all__ = [
    "ActionError",
    "AudioError",
    "CallStoreError",
    "DataLimitError",
    "DocumentError",
    "EventError",
    "EventRefusedError",
    "FlowDocumentError",
    "FlowError",
    "FlowFilterError",
    "FlowLimitError",
    "FlowStateError",
    "FlowSyntaxError",
    "FlowTestWarning",
    "FlowUndefinedError",
    "JsonSyntaxError",
    "LineTooLongError",
    "OutputTooLong",
    "PatternError",
    "PurePythonWarning",
    "RecordError",
    "RecordFileError",
    "ReplayInProgressError",
    "RequestError",
    "SharedStoreError",
    "SourceLines",
    "SourcePosition",
    "StoreError",
    "UsageError",
    "ValueFormatError",
    "WebhookAuthError",
    "render_caret",
]

from collections.abc import Sequence
from typing import Protocol

from flowlang.locations import (
    SourceLines,
    SourcePosition,
    place_label,
    render_caret,
    render_place,
)


class _Finding(Protocol):
    """What FlowDocumentError reads of a finding (flowlang.flow.model.Finding)."""

    @property
    def severity(self) -> str: ...

    def render(self) -> str: ...


class FlowError(Exception):
    """Base class of every error flowlang raises on bad input or failed evaluation."""


class FlowSyntaxError(FlowError):
    """A template or expression that does not compile.

    ``line`` and ``column`` are 1-based and count in the document given by ``position``
    (or in the template text itself when there is none); ``offset`` counts in the template text.
    ``str()`` renders the message, the place and a caret under the offending text.
    """

    def __init__(
        self,
        message: str,
        source: str,
        offset: int,
        end: int | None = None,
        position: SourcePosition | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.offset = max(0, min(offset, len(source)))
        self.end = self.offset + 1 if end is None else max(end, self.offset + 1)
        self.position = position
        template = SourceLines(source)
        line, column = template.locate(self.offset)
        if position is not None:  # text written verbatim from ``position`` (see placed_at)
            if line == 1:
                column += position.column - 1
            line += position.line - 1
        self.line = line
        self.column = column
        #: The document's lines and the underline's width, once placed in a document.
        self._document: tuple[SourceLines, int] | None = None

    @property
    def source_line(self) -> str:
        """The template's own line holding the offending text."""
        template = SourceLines(self.source)
        return template.line(template.locate(self.offset)[0])

    def with_position(self, position: SourcePosition) -> FlowSyntaxError:
        """Return the same error placed inside a document at ``position``."""
        return FlowSyntaxError(self.message, self.source, self.offset, self.end, position)

    def placed_at(self, at: SourcePosition, lines: SourceLines, width: int) -> FlowSyntaxError:
        """The same error at ``at``: where the offending text is written in the document whose
        ``lines`` are given (rendered with the document's own line, ``width`` underlined)."""
        error = FlowSyntaxError(self.message, self.source, self.offset, self.end, at)
        error.line, error.column = at.line, at.column
        error._document = (lines, width)
        return error

    def place(self) -> SourcePosition:
        """Where the error is: file, line, column, step and field."""
        position = self.position or SourcePosition()
        return SourcePosition(
            position.filename, self.line, self.column, position.step, position.field
        )

    def location(self) -> str:
        """The ``file:line:column (step 'id', field 'name')`` label of this error."""
        return place_label(self.place(), "<template>")

    def __str__(self) -> str:
        if self._document is not None:
            lines, width = self._document
            return render_place(self.message, self.place(), lines, width)
        template = SourceLines(self.source)
        line, column = template.locate(self.offset)
        width = min(self.end, len(self.source)) - self.offset
        if "\n" in self.source[self.offset : self.offset + max(width, 0)]:
            width = 1
        # The caret line shows the template's line, numbered as the document's.
        return render_place(
            self.message,
            self.place(),
            template,
            width,
            default="<template>",
            caret_at=(line, column),
        )


class FlowUndefinedError(FlowError):
    """Strict mode: a path did not resolve.

    ``resolved`` is the longest prefix that resolved (for example ``contact.custom_fields``),
    ``segment`` the part that failed (for example ``["MRR"]``), ``path`` the whole path.
    """

    def __init__(self, path: str, resolved: str, segment: str, reason: str) -> None:
        self.path = path
        self.resolved = resolved
        self.segment = segment
        self.reason = reason
        super().__init__(f"undefined: {path}: {reason}")


class FlowLimitError(FlowError):
    """A configured limit was exceeded while rendering (for example the rendered size)."""


class FlowFilterError(FlowError):
    """A filter registered by the application raised an exception."""


# --- running flows ---------------------------------------------------------------------------


class FlowStateError(FlowError):
    """A state that cannot be resumed: malformed, altered, unsigned, from another or a changed
    flow, not waiting for input, or already resumed."""


class DataLimitError(FlowLimitError):
    """Run data beyond a limit of the runtime (a value, the whole state, nesting, a number)."""


class RequestError(FlowError):
    """A request that cannot be sent as built (a bad header value, a body that is not JSON)."""


class OutputTooLong(Exception):  # noqa: N818 - raised as FlowLimitError by the evaluators
    """Internal: a text being built would pass the rendered-size limit."""


# --- documents -------------------------------------------------------------------------------


class DocumentError(FlowError):
    """A document that cannot be read; ``str()`` names file:line:column with a caret."""

    def __init__(self, message: str, text: str | SourceLines, position: SourcePosition) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        #: The document's lines; None for one that could not be read (no line to show).
        self.lines: SourceLines | None = None
        if text:
            self.lines = SourceLines(text) if isinstance(text, str) else text  # one per document

    def __str__(self) -> str:
        position = self.position
        if self.lines is None:
            position = SourcePosition(position.filename, 0, 0, position.step, position.field)
        return render_place(self.message, position, self.lines, default="<document>")


class JsonSyntaxError(DocumentError):
    """Text that is not JSON at all (as opposed to JSON with a value a document refuses)."""


class FlowDocumentError(FlowError):
    """A flow or workflow document with errors; ``findings`` lists every one of them."""

    def __init__(self, findings: Sequence[_Finding]) -> None:
        self.findings = findings
        errors = [finding for finding in findings if finding.severity == "error"]
        summary = f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the document"
        super().__init__(summary)

    def __str__(self) -> str:
        return "\n\n".join(finding.render() for finding in self.findings)


class PatternError(ValueError):
    """A pattern outside the supported syntax; ``offset`` is where in the pattern."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at position {offset}")
        self.message = message
        self.offset = offset


# --- the command line --------------------------------------------------------------------------


class UsageError(Exception):
    """Input the command cannot use; the message says which and why."""


class ReplayInProgressError(OSError):
    """Another ``flowlang replay`` is replaying this dead-letter file."""


# --- workflow automations ----------------------------------------------------------------------


class RecordError(ValueError):
    """A record that cannot be written or read back; the message says why (``column``: where
    in the line, when known)."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column

    def where(self, label: str, line: int) -> str:
        """``label:line[:column]: message``."""
        column = f":{self.column}" if self.column is not None else ""
        return f"{label}:{line}{column}: {self}"


class EventError(ValueError):
    """An event refused at the door (no id, too deep, too large); the message says why."""


class LineTooLongError(ValueError):
    """A stream whose line goes on past the skip limit (such as /dev/zero): not JSON lines."""


class RecordFileError(ValueError):
    """A dead-letter (or other JSON-lines) path that is not a regular file (a device, FIFO,
    directory)."""


class AudioError(FlowError):
    """A recording whose format cannot be sent as it is (names the field that would fix it)."""


class ActionError(FlowError):
    """An action that cannot be performed as written for this event (not worth retrying)."""


class ValueFormatError(FlowError):
    """A value that does not convert to its format; says which key and what value (the whole
    value: it is masked, then shortened, where it is output; see carried_text). With
    ``limit``: the value's text would be longer than ``limit`` characters. ``reason`` replaces
    "is not a {fmt}" (a number JSON cannot carry exactly, for one)."""

    def __init__(
        self, key: str, fmt: str, shown: str, limit: int | None = None, reason: str | None = None
    ) -> None:
        # ``shown``: the value as a message may show it (flowlang.automations.formats._shown)
        if limit is not None:
            message = f"value of {key!r} is longer than {limit} characters as a {fmt}"
        else:
            message = f"value of {key!r} {reason or f'is not a {fmt}'}: {shown!r}"
        super().__init__(message)
        self.key = key
        self.format = fmt


class StoreError(OSError):
    """The local store (an SQLite file) cannot be used: not a store, damaged, read-only, of
    another schema version, locked too long, or the disk is full; the message names the file
    and says what to do."""


# --- warnings ----------------------------------------------------------------------------------


class CallStoreError(RuntimeError):
    """flowlang serve's call store could not be reached or answered with an error (the message
    never holds a password; the store's own exception is the ``__cause__``)."""


class SharedStoreError(RuntimeError):
    """The automations' shared store (Redis) could not be reached or answered with an error
    (the message names the server with its password masked, and never holds a password in
    any form; the client's own exception is the ``__cause__``)."""


class WebhookAuthError(ValueError):
    """A request that does not prove its sender; ``reason`` is a short fixed phrase
    (``missing headers``, ``bad headers``, ``bad timestamp``, ``stale timestamp``,
    ``bad signature``) that never holds a secret nor a header's value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventRefusedError(Exception):
    """An event flowlang serve refused at the door: the HTTP ``status`` to answer and the
    ``reason`` (no secret in it)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FlowTestWarning(UserWarning):
    """A warning of a flow test case (a recorded response or inputs it did not use), given by
    the pytest plugin for a case that passed."""


class PurePythonWarning(RuntimeWarning):
    """The compiled extension is missing, so the slower pure-Python backend is used.

    Given once per process, when the backend is chosen (the first template compiled, or the
    first read of ``flowlang.BACKEND``); never when ``FLOWLANG_NO_EXTENSIONS=1`` asks for the
    pure-Python backend. ``import flowlang`` chooses no backend, so right after it
    ``warnings.filterwarnings("ignore", category=flowlang.PurePythonWarning)`` silences it.
    """
