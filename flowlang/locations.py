"""Locations: where text sits in a document, and the one rendering of a place with its caret.

A template is the value of a scalar; an error inside it counts offsets in that value. The
value is not always written verbatim: YAML folds line breaks in plain and quoted scalars,
block scalars (``|``, ``>``) drop their indentation, quotes and escapes (``''``, ``\\n``,
``\\u263A``, JSON's surrogate pairs) stand for other characters. :class:`ScalarMap` reads the
scalar's written form again, next to its value, and maps each offset of the value to the offset
in the document where that character is written (an escape or folded break: where it starts).
It is built on the error path only, from the document text, where the scalar starts and its
value; a written form it does not reproduce exactly maps every offset to the start of the value.

:func:`render_place` is the one rendering of a place: the message, ``--> file:line:column
(step 'id', field 'name')`` and the source line with a caret (or underline) under the text.
"""

from __future__ import annotations

__all__ = [
    "ScalarMap",
    "SourceLines",
    "SourcePosition",
    "place_label",
    "render_caret",
    "render_place",
]

import re
import unicodedata
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


def place_label(position: SourcePosition, default: str = "<flow>") -> str:
    """``file:line:column (step 'id', field 'name')`` (no line and column when line is 0)."""
    where = position.filename or default
    if position.line > 0:
        where += f":{position.line}:{position.column}"
    details = []
    if position.step is not None:
        details.append(f"step {position.step!r}")
    if position.field is not None:
        details.append(f"field {position.field!r}")
    return f"{where} ({', '.join(details)})" if details else where


def render_place(
    message: str,
    position: SourcePosition,
    lines: SourceLines | None = None,
    width: int = 1,
    *,
    default: str = "<flow>",
    caret_at: tuple[int, int] | None = None,
) -> str:
    """The message, the place (``  --> file:line:column (step, field)``) and, given the text's
    ``lines``, the line with a caret (``width`` wide) under ``position``'s column.

    ``caret_at`` (line, column in ``lines``) shows another text's line under the place (a
    template's own, when no document is at hand); the line is numbered as ``position``'s.
    """
    head = f"{message}\n  --> {place_label(position, default)}"
    if lines is None:
        return head
    line, column = caret_at if caret_at is not None else (position.line, position.column)
    return f"{head}\n{lines.caret(line, column, width, number_shown=position.line)}"


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
    # The line as it is shown (characters a terminal acts on as escapes) and the caret under
    # it: an escape takes its own width, wide characters two cells.
    before = _shown_escaped(shown[:first])
    marked = _shown_escaped(shown[first : first + width])
    line = before + marked + _shown_escaped(shown[first + width :])
    indent = _display_width(before)
    marks = max(1, _display_width(marked))
    return f"{gutter} |\n{number} | {line}\n{gutter} | {' ' * indent}{'^' * marks}"


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: The characters a terminal acts on (controls but tab, bidirectional controls, lone surrogates)
#: and the escapes a source line shows them as: the same as ``flowlang.cli.terminal.printable``
#: writes (a test keeps them equal), so the caret sits under the line as printed.
_LINE_ESCAPES = {
    code: _escape(code)
    for code in (
        *range(0x00, 0x09),
        *range(0x0A, 0x20),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        *range(0xD800, 0xE000),
    )
}


def _shown_escaped(text: str) -> str:
    """``text`` with the characters of :data:`_LINE_ESCAPES` written as their escapes."""
    return text if text.isascii() and text.isprintable() else text.translate(_LINE_ESCAPES)


def _display_width(text: str) -> int:
    """How many terminal cells ``text`` takes: East Asian wide and full-width characters two,
    combining marks and zero-width format characters none, others one."""
    if text.isascii():
        return len(text)
    cells = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        cells += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return cells


#: Line breaks as YAML counts them (CR LF, CR, LF, NEL, LS, PS), so line numbers agree.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_BREAKS = "\r\n\x85\u2028\u2029"


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

    def caret(self, number: int, column: int, width: int = 1, *, number_shown: int = 0) -> str:
        """``render_caret`` of line ``number`` (shown numbered ``number_shown`` if given),
        without copying the whole line."""
        shown = number_shown or number
        if not 0 < number <= len(self._starts):
            return _caret("", 0, 0, shown, column, width)
        return _caret(
            self.text, self._starts[number - 1], self._ends[number - 1], shown, column, width
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

    def offset(self, line: int, column: int) -> int:
        """The offset of 1-based ``line`` and ``column`` (clamped to the text)."""
        line = max(1, min(line, len(self._starts)))
        return min(self._starts[line - 1] + max(0, column - 1), len(self.text))


# --- the written form of a scalar ------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "0": "\0",
    "a": "\x07",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\x0b",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_CODE_LENGTHS = {"x": 2, "u": 4, "U": 8}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class _Reader:
    """Decode a scalar's written form from ``start``, recording where each character is written;
    it stops as soon as ``want`` characters are decoded (it never reads past the scalar)."""

    def __init__(self, text: str, start: int, want: int) -> None:
        self.text = text
        self.pos = start
        self.want = want
        self.chars: list[str] = []
        self.offsets: list[int] = []

    def done(self) -> bool:
        return len(self.chars) >= self.want or self.pos >= len(self.text)

    def emit(self, chars: str, offset: int) -> None:
        for char in chars:
            self.chars.append(char)
            self.offsets.append(offset)

    def line_break(self) -> str:
        """Read the break at ``pos``: ``\\n`` (LS and PS stay themselves), or "" if none."""
        text, pos = self.text, self.pos
        if text.startswith("\r\n", pos):
            self.pos += 2
            return "\n"
        char = text[pos] if pos < len(text) else ""
        if char and char in _BREAKS:
            self.pos += 1
            return char if char in "\u2028\u2029" else "\n"
        return ""

    def flow_spaces(self, blanks: str) -> None:
        """Blanks and line breaks inside a plain or quoted scalar, folded as YAML folds them."""
        text, at = self.text, self.pos
        end = at
        while end < len(text) and text[end] in blanks:
            end += 1
        if end >= len(text) or text[end] not in _BREAKS:
            for index in range(at, end):
                self.emit(text[index], index)
            self.pos = end
            return
        self.pos = end
        first_at = end
        first = self.line_break()
        breaks: list[tuple[str, int]] = []
        while True:
            while self.pos < len(text) and text[self.pos] in blanks:
                self.pos += 1
            at = self.pos
            found = self.line_break()
            if not found:
                break
            breaks.append((found, at))
        if first != "\n":
            self.emit(first, first_at)
        elif not breaks:
            self.emit(" ", first_at)
        for found, at in breaks:
            self.emit(found, at)

    def plain(self) -> None:
        text = self.text
        while not self.done():
            char = text[self.pos]
            if char in " \t" or char in _BREAKS:
                self.flow_spaces(" \t")
            else:
                self.emit(char, self.pos)
                self.pos += 1

    def single(self) -> None:
        text = self.text
        self.pos += 1
        while not self.done():
            char = text[self.pos]
            if char == "'":
                self.emit("'", self.pos)  # '' is one quote (a lone one ends the scalar)
                self.pos += 2
            elif char in " \t" or char in _BREAKS:
                self.flow_spaces(" \t")
            else:
                self.emit(char, self.pos)
                self.pos += 1

    def double(self) -> None:
        text = self.text
        self.pos += 1
        while not self.done():
            char = text[self.pos]
            if char == "\\":
                self.escape()
            elif char in " \t" or char in _BREAKS:
                self.flow_spaces(" \t")
            else:
                self.emit(char, self.pos)
                self.pos += 1

    def escape(self) -> None:
        """The escape at ``pos`` (a backslash): one character, or an escaped line break."""
        text, at = self.text, self.pos
        code = text[at + 1 : at + 2]
        if code in _SIMPLE_ESCAPES:
            self.emit(_SIMPLE_ESCAPES[code], at)
            self.pos += 2
            return
        length = _CODE_LENGTHS.get(code)
        if length is not None:
            digits = text[at + 2 : at + 2 + length]
            if len(digits) == length and _is_hex(digits):
                value = int(digits, 16)
                self.pos = at + 2 + length
                low = text[self.pos : self.pos + 6]
                pair = len(low) == 6 and low[:2] == "\\u" and _is_hex(low[2:])
                if 0xD800 <= value < 0xDC00 and pair:
                    second = int(low[2:], 16)
                    if 0xDC00 <= second < 0xE000:  # a surrogate pair (JSON): one character
                        value = 0x10000 + (value - 0xD800 << 10) + (second - 0xDC00)
                        self.pos += 6
                self.emit(chr(value) if value <= 0x10FFFF else "\ufffd", at)
                return
        self.pos += 1
        if self.line_break():  # an escaped break: nothing, and the next line's blanks go
            while True:
                while self.pos < len(text) and text[self.pos] in " \t":
                    self.pos += 1
                found_at = self.pos
                found = self.line_break()
                if not found:
                    return
                self.emit(found, found_at)
            return
        self.emit("\\", at)  # not an escape YAML knows: the reader refused it already

    def block(self, value: str) -> None:
        """A literal (``|``) or folded (``>``) block scalar, its header at ``pos``."""
        text = self.text
        folded = text[self.pos] == ">"
        while self.pos < len(text) and text[self.pos] not in _BREAKS:
            self.pos += 1  # the header: indicators, blanks, a comment
        self.line_break()
        indent = _block_indent(text, self.pos, value)
        if indent is None:
            return
        self.skip_indent(indent, first=True)
        line_break = ""
        while not self.done() and self.column() == indent:
            leading_non_space = text[self.pos] not in " \t"
            while self.pos < len(text) and text[self.pos] not in _BREAKS and not self.done():
                self.emit(text[self.pos], self.pos)
                self.pos += 1
            if self.done():
                return
            break_at = self.pos
            line_break = self.line_break()
            breaks = self.skip_indent(indent)
            if self.pos >= len(text) or self.column() != indent:
                self.emit(line_break, break_at)
                for found, at in breaks:
                    self.emit(found, at)
                return
            if folded and line_break == "\n" and leading_non_space and text[self.pos] not in " \t":
                if not breaks:
                    self.emit(" ", break_at)
            else:
                self.emit(line_break, break_at)
            for found, at in breaks:
                self.emit(found, at)

    def column(self) -> int:
        """The 0-based column of ``pos`` (blanks only count: the line was read from its start)."""
        line_start = self.pos
        while line_start > 0 and self.text[line_start - 1] not in _BREAKS:
            line_start -= 1
        return self.pos - line_start

    def skip_indent(self, indent: int, *, first: bool = False) -> list[tuple[str, int]]:
        """Blank lines of a block scalar (each a break; emitted at the start when ``first``)
        and the indentation of the next line."""
        text = self.text
        breaks: list[tuple[str, int]] = []
        while True:
            line_start = self.pos
            while self.pos < len(text) and self.pos - line_start < indent and text[self.pos] == " ":
                self.pos += 1
            at = self.pos
            found = self.line_break() if at >= len(text) or text[at] in _BREAKS else ""
            if not found:
                if first:
                    for char, where in breaks:
                        self.emit(char, where)
                    return []
                return breaks
            breaks.append((found, at))


def _is_hex(digits: str) -> bool:
    """Whether ``digits`` is one or more hexadecimal digits."""
    return bool(digits) and all(char in _HEX_DIGITS for char in digits)


def _block_indent(text: str, pos: int, value: str) -> int | None:
    """The indentation of a block scalar's content starting at ``pos``: its first line with
    text less what the value keeps of that line's leading spaces."""
    kept = len(value) - len(value.lstrip("\n"))
    rest = value[kept:]
    value_line = rest.split("\n", 1)[0]
    value_lead = len(value_line) - len(value_line.lstrip(" "))
    while pos < len(text):  # leading blank lines (blanks, then a break)
        end = pos
        while end < len(text) and text[end] in " \t":
            end += 1
        if end >= len(text) or text[end] not in _BREAKS:
            break
        pos = end + (2 if text.startswith("\r\n", end) else 1)
    lead = 0
    while pos + lead < len(text) and text[pos + lead] == " ":
        lead += 1
    indent = lead - value_lead
    return indent if indent >= 0 else None


class ScalarMap:
    """Where each character of a scalar's value is written in the document text.

    ``offset(k)`` is the document offset of ``value[k]`` (``k == len(value)``: just after the
    last one); a character that is an escape, a doubled quote or a folded line break maps to
    where its written form starts. When the written form at ``start`` does not read back as
    ``value`` (a scalar this reader does not know), every offset is the start of the value.
    """

    __slots__ = ("_offsets", "exact", "start")

    def __init__(self, text: str, start: int, value: str) -> None:
        reader = _Reader(text, start, len(value))
        char = text[start : start + 1]
        if char == '"':
            reader.double()
        elif char == "'":
            reader.single()
        elif char in ("|", ">"):
            reader.block(value)
        else:
            reader.plain()
        self.exact = "".join(reader.chars[: len(value)]) == value
        self._offsets = reader.offsets[: len(value)] if self.exact else []
        #: Where the value's first character is written (after an opening quote).
        self.start = start + 1 if char in ("'", '"') else start
        if self.exact and value:
            self.start = self._offsets[0]
            self._offsets.append(min(self._offsets[-1] + 1, len(text)))

    def offset(self, k: int) -> int:
        """The document offset where ``value[k]`` is written."""
        if not self._offsets:
            return self.start
        return self._offsets[max(0, min(k, len(self._offsets) - 1))]

    def span(self, begin: int, end: int, lines: SourceLines) -> tuple[int, int, int]:
        """The line, column and width (on that line) of ``value[begin:end]``."""
        first = self.offset(begin)
        line, column = lines.locate(first)
        if end <= begin + 1 or not self._offsets:
            return line, column, 1
        last_line, last_column = lines.locate(self.offset(end - 1))
        if last_line != line:
            return line, column, max(1, len(lines.line(line)) - column + 1)
        return line, column, max(1, last_column - column + 1)
