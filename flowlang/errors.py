"""Errors: the exception classes of flowlang and the caret rendering of source positions."""

from __future__ import annotations

__all__ = [
    "FlowError",
    "FlowFilterError",
    "FlowLimitError",
    "FlowSyntaxError",
    "FlowUndefinedError",
    "SourceLines",
    "SourcePosition",
    "render_caret",
]

import re
from bisect import bisect_right
from dataclasses import dataclass

#: Source lines longer than this are shown as a window around the caret.
_WINDOW = 100


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a piece of source text sits in a larger document (a file, a step, a field).

    ``line`` and ``column`` (1-based) locate the first character of the text in the document;
    positions inside the text are shifted by them when errors are rendered.
    """

    filename: str | None = None
    line: int = 1
    column: int = 1
    step: str | None = None
    field: str | None = None


def line_and_column(source: str, offset: int) -> tuple[int, int, str]:
    """Return the 1-based line, the 1-based column and the text of the line at ``offset``."""
    offset = max(0, min(offset, len(source)))
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    if line_end == -1:
        line_end = len(source)
    line = source.count("\n", 0, offset) + 1
    return line, offset - line_start + 1, source[line_start:line_end]


def render_caret(line_text: str, line_number: int, column: int, width: int = 1) -> str:
    """Render one source line with a caret (or underline of ``width``) under ``column``."""
    return _caret(line_text, 0, len(line_text), line_number, column, width)


def _caret(text: str, start: int, end: int, line_number: int, column: int, width: int) -> str:
    """``render_caret`` for the line ``text[start:end]``, copying no more of it than is shown
    (a one-line JSON document is megabytes long)."""
    length = end - start
    first = column - 1
    if length > _WINDOW:
        left = max(0, first - _WINDOW // 2)
        right = min(length, left + _WINDOW)
        prefix = "…" if left > 0 else ""
        suffix = "…" if right < length else ""
        shown = prefix + text[start + left : start + right].replace("\t", " ") + suffix
        first = first - left + len(prefix)
    else:
        shown = text[start:end].replace("\t", " ")
    width = max(1, min(width, len(shown) - first))
    number = str(line_number)
    gutter = " " * len(number)
    return f"{gutter} |\n{number} | {shown}\n{gutter} | {' ' * first}{'^' * width}"


#: Line breaks as YAML counts them (CR LF, CR, LF, NEL, LS, PS), so line numbers agree.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class SourceLines:
    """A text split into lines once: a line's text by number, the line of an offset by bisection.

    Findings of a large document render their carets from one of these, never by splitting the
    text again for each finding.
    """

    __slots__ = ("_ends", "_starts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        starts, ends = [0], []
        for match in _BREAK.finditer(text):
            ends.append(match.start())
            starts.append(match.end())
        ends.append(len(text))
        self._starts = starts
        self._ends = ends

    def __len__(self) -> int:
        return len(self._starts)

    def line(self, number: int) -> str:
        """The text of the 1-based line ``number`` (empty outside the text)."""
        if not 0 < number <= len(self._starts):
            return ""
        return self.text[self._starts[number - 1] : self._ends[number - 1]]

    def caret(self, number: int, column: int, width: int = 1) -> str:
        """``render_caret`` of line ``number``, without copying the whole line."""
        if not 0 < number <= len(self._starts):
            return _caret("", 0, 0, number, column, width)
        return _caret(
            self.text, self._starts[number - 1], self._ends[number - 1], number, column, width
        )

    def find(self, number: int, needle: str, begin: int = 0, end: int | None = None) -> int:
        """The offset of ``needle`` in line ``number`` between offsets ``begin`` and ``end``
        of that line (-1: not there), without copying the line."""
        if not needle or not 0 < number <= len(self._starts):
            return -1
        start, stop = self._starts[number - 1], self._ends[number - 1]
        if end is not None:
            stop = min(stop, start + end)
        found = self.text.find(needle, start + max(0, begin), stop)
        return found - start if found != -1 else -1

    def locate(self, offset: int) -> tuple[int, int]:
        """The 1-based line and column of the character at ``offset``."""
        offset = max(0, min(offset, len(self.text)))
        index = bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1


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
        line, column, self.source_line = line_and_column(source, self.offset)
        if position is not None:
            if line == 1:
                column += position.column - 1
            line += position.line - 1
        self.line = line
        self.column = column

    def with_position(self, position: SourcePosition) -> FlowSyntaxError:
        """Return the same error placed inside a document at ``position``."""
        return FlowSyntaxError(self.message, self.source, self.offset, self.end, position)

    def location(self) -> str:
        """The ``file:line:column (step 'id', field 'name')`` label of this error."""
        position = self.position or SourcePosition()
        where = f"{position.filename or '<template>'}:{self.line}:{self.column}"
        details = []
        if position.step is not None:
            details.append(f"step {position.step!r}")
        if position.field is not None:
            details.append(f"field {position.field!r}")
        return f"{where} ({', '.join(details)})" if details else where

    def __str__(self) -> str:
        _, column, _ = line_and_column(self.source, self.offset)
        width = min(self.end, len(self.source)) - self.offset
        if "\n" in self.source[self.offset : self.offset + max(width, 0)]:
            width = 1
        caret = render_caret(self.source_line, self.line, column, width)
        # The caret line shows the template line; its column is the column inside that line.
        return f"{self.message}\n  --> {self.location()}\n{caret}"


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
