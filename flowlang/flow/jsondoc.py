"""JSON documents: read JSON text into plain data, keeping the position of every value and key.

A hand-written scanner, not the ``json`` module: ``json`` gives no positions for values, and its
decoder recurses. This one walks the text once with an explicit stack (linear time, no
recursion) and records positions exactly as the YAML composer does (``Document`` reads both
alike). It reads RFC 8259 JSON and refuses what a flow must not hold: duplicate keys, lone
surrogates (a ``\\ud83d\\ude00`` pair is one character), NaN and Infinity, whole numbers of
more than ``MAX_INTEGER_DIGITS`` digits, numbers beyond the float range and nesting deeper than
the document limit. A UTF-8 byte order mark at the start is skipped.

Problems of syntax raise :class:`JsonSyntaxError` (a DocumentError): a text that only looks
like JSON may then be read as YAML (see ``source.load_document``). Every other refusal is a
plain DocumentError: the text is JSON, and wrong.
"""

from __future__ import annotations

__all__ = ["DuplicateKeys", "JsonSyntaxError", "first_line", "read_json"]

import re
from typing import Any

from flowlang.errors import DocumentError, JsonSyntaxError, SourceLines, SourcePosition
from flowlang.flow.pointers import MAX_DEPTH, Pointer, integer_digit_limit

_SPACE = re.compile(r"[ \t\n\r]*")
#: A string up to its closing quote: plain characters and JSON's escapes, nothing else.
_STRING = re.compile(r'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+')
_NUMBER_TEXT = r"-?(?:0|[1-9][0-9]*+)(\.[0-9]++)?+([eE][-+]?[0-9]++)?+"
#: Blanks after a value, and the comma (and blanks) after them if there is one.
_AFTER_TEXT = r"[ \t\n\r]*+(?:(?P<comma>,)[ \t\n\r]*+)?+"
_AFTER = re.compile(_AFTER_TEXT)
#: A number and what follows it (group 1: its fraction, 2: its exponent).
_NUMBER = re.compile(f"({_NUMBER_TEXT})" + _AFTER_TEXT)
#: A key without escapes, its colon and the blanks around it.
_KEY = re.compile(r'"([^"\\\x00-\x1f]*+)"[ \t\n\r]*+:[ \t\n\r]*+')
#: A string without escapes and what follows it.
_PLAIN_STRING = re.compile(r'"([^"\\\x00-\x1f]*+)"' + _AFTER_TEXT)
#: An escape inside a string already matched by ``_STRING``.
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))")
#: What libyaml and ``SourceLines`` count as line breaks (lines must agree with the carets).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r"}
_SIMPLE_ESCAPES["t"] = "\t"
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
_NOT_NUMBERS = ("NaN", "Infinity", "-Infinity")
_CLOSER = {"{": "}", "[": "]"}
_INFINITY = float("inf")


class DuplicateKeys:
    """The duplicate keys of one document, in the order they are met (document order).

    Refused at the first one (DocumentError), or, when ``keep``, collected: the reader puts a
    duplicate's value under a stand-in key (so the first value stays, and the positions kept
    are the first's) and :meth:`drop` takes the stand-ins out when the document is read.
    """

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        #: ``(message, line, column)`` of each duplicate key (1-based).
        self.found: list[tuple[str, int, int]] = []
        self._stand_ins: list[tuple[dict[Any, Any], object]] = []

    @staticmethod
    def message(key: object, first: int | None) -> str:
        """The message for a duplicate of ``key`` whose first is on line ``first``."""
        where = f" (first at line {first})" if first is not None else ""
        return f"duplicate key {key!r}{where}"

    def stand_in(self, mapping: dict[Any, Any], message: str, line: int, column: int) -> object:
        """Record a duplicate key (``keep`` only); the key to read its value under."""
        self.found.append((message, line, column))
        slot = object()
        self._stand_ins.append((mapping, slot))
        return slot

    def drop(self) -> None:
        """Take every duplicate's value out of the data (the first value of each key stays)."""
        for mapping, slot in self._stand_ins:
            mapping.pop(slot, None)
        self._stand_ins.clear()


def first_line(marks: dict[Pointer, int], pointer: Pointer, key: str | int) -> int | None:
    """The line (1-based) where ``key`` of the map at ``pointer`` was first written."""
    packed = marks.get(("#key", *pointer, key))
    return None if packed is None else (packed >> 25) + 1


def read_json(
    text: str,
    filename: str | None,
    marks: dict[Pointer, int],
    duplicates: DuplicateKeys | None = None,
) -> Any:
    """The data of the JSON document ``text``; fills ``marks`` (pointer to packed position).

    Raises DocumentError (JsonSyntaxError for text that is not JSON) naming line and column;
    a duplicate key is refused too unless ``duplicates`` keeps them.
    """
    found = duplicates if duplicates is not None else DuplicateKeys()
    data = _Scanner(text, filename, marks, found).document()
    found.drop()
    return data


class _Scanner:
    """One pass over the text: values, keys and structure, with an explicit stack."""

    def __init__(
        self,
        text: str,
        filename: str | None,
        marks: dict[Pointer, int],
        duplicates: DuplicateKeys,
    ) -> None:
        self.text = text
        self.filename = filename
        self.marks = marks
        self.duplicates = duplicates
        # Offsets where lines start (and one past the end), for packing positions in order.
        self.starts = [0, *(match.end() for match in _LINE_BREAK.finditer(text)), len(text) + 1]
        self._lines: SourceLines | None = None

    # --- errors -----------------------------------------------------------------------------

    def fail(self, message: str, offset: int, *, syntax: bool = True) -> DocumentError:
        """The error for ``message`` at ``offset`` (line and column counted as for carets)."""
        if self._lines is None:
            self._lines = SourceLines(self.text)
        line, column = self._lines.locate(offset)
        kind = JsonSyntaxError if syntax else DocumentError
        prefix = "invalid JSON: " if syntax else ""
        return kind(prefix + message, self._lines, SourcePosition(self.filename, line, column))

    def unexpected(self, offset: int, expected: str) -> DocumentError:
        text = self.text
        if offset >= len(text):
            return self.fail(f"the document ends where {expected} was expected", offset)
        found = text[offset]
        shown = repr(found) if found.isprintable() else f"U+{ord(found):04X}"
        return self.fail(f"expected {expected}, found {shown}", offset)

    # --- the document -----------------------------------------------------------------------

    def document(self) -> Any:
        text = self.text
        if not self.text.isascii():
            lone = _SURROGATE.search(text)
            if lone is not None:
                raise self.fail(
                    "the text holds a lone surrogate (not a Unicode character)",
                    lone.start(),
                    syntax=False,
                )
        start = 1 if text.startswith("\ufeff") else 0
        pos = _SPACE.match(text, start).end()  # type: ignore[union-attr]
        if pos == len(text):
            raise DocumentError("document is empty", text, SourcePosition(self.filename))
        return self.compose(pos)

    def compose(self, pos: int) -> Any:
        """Read the root value at ``pos`` and everything in it, then check nothing follows.

        The common tokens take one regular-expression match each, blanks and the comma after
        them included; anything else (escapes, errors) takes the slower methods below.
        """
        text, marks, starts = self.text, self.marks, self.starts
        key_match, string_match, number_match = _KEY.match, _PLAIN_STRING.match, _NUMBER.match
        after_match, space = _AFTER.match, _SPACE.match
        size = len(text)
        line, next_line = 0, starts[1]
        root: dict[int, Any] = {0: None}
        # The enclosing collections: (container, its pointer, the slot being filled) each.
        stack: list[tuple[Any, Pointer, Any]] = []
        container: Any = root
        pointer: Pointer = ()
        slot: Any = 0  # a dict's key, a list's index
        want_key = False
        while True:
            while next_line <= pos:
                line += 1
                next_line = starts[line + 1]
            if want_key:  # --- a key at pos, then its value ---
                found = key_match(text, pos)
                if found is not None:
                    slot = found.group(1)
                    value_at = found.end()
                else:
                    slot, value_at = self.key(pos)
                if slot in container:
                    slot = self.duplicate(slot, pointer, container, pos)
                marks[("#key", *pointer, slot)] = (line << 24 | pos - starts[line]) << 1
                want_key = False
                pos = value_at
                continue
            # --- one value at pos, then what follows it ---
            where = (*pointer, slot) if stack else ()
            if len(stack) > MAX_DEPTH:
                raise self.fail(f"document nests deeper than {MAX_DEPTH} levels", pos, syntax=False)
            char = text[pos] if pos < size else ""
            value: Any
            if char == '"':
                marks[where] = (line << 24 | pos - starts[line]) << 1 | 1
                found = string_match(text, pos)
                if found is None:
                    value, end = self.string(pos)
                    found = after_match(text, end)
                else:
                    value = found.group(1)
            elif char == "{" or char == "[":
                marks[where] = (line << 24 | pos - starts[line]) << 1
                value = {} if char == "{" else []
                if type(container) is list:
                    container.append(value)
                else:
                    container[slot] = value
                end = space(text, pos + 1).end()  # type: ignore[union-attr]
                if end >= size or text[end] != _CLOSER[char]:  # not empty: enter it
                    stack.append((container, pointer, slot))
                    container, pointer = value, where
                    slot, want_key = 0, char == "{"
                    pos = end
                    continue
                found = after_match(text, end + 1)
            else:
                marks[where] = (line << 24 | pos - starts[line]) << 1
                found = number_match(text, pos)
                if found is None:
                    value, end = self.scalar(pos, char)
                    found = after_match(text, end)
                else:
                    value = self.number(
                        found.group(1), found.group(2) is None and found.group(3) is None, pos
                    )
            if char != "{" and char != "[":
                if type(container) is list:
                    container.append(value)
                else:
                    container[slot] = value
            # --- after a value: a comma, or the end of one or more containers ---
            while True:
                pos = found.end()  # type: ignore[union-attr]
                if not stack:
                    if pos != size or found.group("comma") is not None:  # type: ignore[union-attr]
                        at = found.start("comma")  # type: ignore[union-attr]
                        raise self.unexpected(pos if at < 0 else at, "the end of the document")
                    return root[0]
                if found.group("comma") is not None:  # type: ignore[union-attr]
                    if pos < size and (text[pos] == "]" or text[pos] == "}"):
                        at = found.start("comma")  # type: ignore[union-attr]
                        raise self.fail("a comma before a closing bracket", at)
                    if type(container) is list:
                        slot += 1
                    else:
                        want_key = True
                    break
                closer = "]" if type(container) is list else "}"
                if pos < size and text[pos] == closer:
                    container, pointer, slot = stack.pop()
                    found = after_match(text, pos + 1)
                    continue
                raise self.unexpected(pos, f"',' or '{closer}'")

    def duplicate(self, key: str, pointer: Pointer, mapping: dict[Any, Any], pos: int) -> object:
        """A duplicate ``key`` at ``pos``: refused, or recorded (the key to read its value
        under: see DuplicateKeys)."""
        message = DuplicateKeys.message(key, first_line(self.marks, pointer, key))
        error = self.fail(message, pos, syntax=False)
        if not self.duplicates.keep:
            raise error
        at = error.position
        return self.duplicates.stand_in(mapping, message, at.line or 1, at.column or 1)

    def key(self, pos: int) -> tuple[str, int]:
        """The key at ``pos`` and where its value starts."""
        text = self.text
        if pos >= len(text) or text[pos] != '"':
            raise self.unexpected(pos, "a key in double quotes")
        key, end = self.string(pos)
        end = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if end >= len(text) or text[end] != ":":
            raise self.unexpected(end, "':' after the key")
        return key, _SPACE.match(text, end + 1).end()  # type: ignore[union-attr]

    # --- values -----------------------------------------------------------------------------

    def string(self, pos: int) -> tuple[str, int]:
        """The text of the string whose opening quote is at ``pos``, and the offset after it."""
        text = self.text
        body_end = _STRING.match(text, pos + 1).end()  # type: ignore[union-attr]
        if body_end >= len(text):
            raise self.fail("a string is not closed (a '\"' is missing)", pos)
        char = text[body_end]
        if char != '"':
            if char == "\\":
                escape = text[body_end : body_end + 6]
                raise self.fail(f"'{escape[:2]}' is not an escape JSON knows", body_end)
            raise self.fail(
                f"a control character (U+{ord(char):04X}) in a string must be written as "
                "an escape (\\n, \\t, \\u0000 …)",
                body_end,
            )
        body = text[pos + 1 : body_end]
        if "\\" in body:
            body = self.unescape(body, pos + 1)
        return body, body_end + 1

    def unescape(self, body: str, offset: int) -> str:
        """``body`` (checked by ``_STRING``) with its escapes decoded; a surrogate pair is one
        character, a lone surrogate an error (``offset``: where ``body`` starts)."""
        parts: list[str] = []
        done = 0
        high: re.Match[str] | None = None  # a high surrogate waiting for its low half
        for match in _ESCAPE.finditer(body):
            parts.append(body[done : match.start()])
            done = match.end()
            code_text = match.group(1)
            if high is not None:
                code = int(code_text, 16) if code_text is not None else -1
                if 0xDC00 <= code <= 0xDFFF and match.start() == high.end():
                    first = int(high.group(1), 16)
                    parts.append(chr(0x10000 + (first - 0xD800 << 10) + (code - 0xDC00)))
                    high = None
                    continue
                raise self._lone(high, offset)
            if code_text is None:
                parts.append(_SIMPLE_ESCAPES[match.group(2)])
                continue
            code = int(code_text, 16)
            if 0xD800 <= code <= 0xDBFF:
                high = match
            elif 0xDC00 <= code <= 0xDFFF:
                raise self._lone(match, offset)
            else:
                parts.append(chr(code))
        if high is not None:
            raise self._lone(high, offset)
        parts.append(body[done:])
        return "".join(parts)

    def _lone(self, escape: re.Match[str], offset: int) -> DocumentError:
        return self.fail(
            f"'{escape.group()}' is half of a surrogate pair, alone: not a character "
            "(write the pair, as in \\ud83d\\ude00, or the character itself)",
            offset + escape.start(),
            syntax=False,
        )

    def scalar(self, pos: int, char: str) -> tuple[Any, int]:
        """The true, false or null at ``pos`` and the offset after it (numbers are read by
        ``number``: anything else here is an error)."""
        text = self.text
        literal = _LITERALS.get(char)
        if literal is not None and text.startswith(literal[0], pos):
            return literal[1], pos + len(literal[0])
        for word in _NOT_NUMBERS:
            if text.startswith(word, pos):
                raise self.fail(
                    f"{word} is not a number in JSON (quote it to keep it as text)",
                    pos,
                    syntax=False,
                )
        raise self.unexpected(pos, "a value")

    def number(self, digits: str, whole: bool, pos: int) -> int | float:
        """The value of the JSON number ``digits`` (a whole number if ``whole``) at ``pos``."""
        if whole:
            limit = integer_digit_limit()
            if len(digits) > limit and len(digits.lstrip("-")) > limit:
                raise self.fail(
                    f"a whole number has at most {limit} digits (quote it to keep it as text)",
                    pos,
                    syntax=False,
                )
            return int(digits)
        value = float(digits)
        if value == _INFINITY or value == -_INFINITY:
            raise self.fail("number is out of range", pos, syntax=False)
        return value
