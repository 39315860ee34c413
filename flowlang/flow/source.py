"""Source: read a YAML or JSON document into plain data, keeping the position of every value.

Which reader: a document whose name ends in ``.json`` (any case) is JSON, read by the JSON
reader (``flowlang.flow.jsondoc``) only. Any other document whose first character other than
blanks (and a byte order mark) is ``{`` or ``[`` is read as JSON first; if it is not JSON at all
(a syntax error: YAML's flow style, ``{flow: x}``, is not JSON) it is read as YAML, and if that
fails too the error shown is the one found further into the text (JSON's when both are at the
same place). A JSON text with a value a document refuses (a duplicate key, a lone surrogate,
NaN, a number beyond the limits) is refused as JSON: it is not read again as YAML. Everything
else is YAML.

YAML is read with JSON-compatible scalars only: `true`/`false`/`null`, JSON numbers, and
everything else a string (`no`, `0123`, `12:30` and `2026-01-01` stay strings). Duplicate keys,
anchors, aliases, merge keys and tags are refused: a flow document is data, written by hand.
"""

from __future__ import annotations

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT",
    "MAX_INTEGER_DIGITS",
    "Document",
    "DocumentError",
    "Pointer",
    "decode_document",
    "integer_digit_limit",
    "load_document",
    "paused_collector",
    "read_document_file",
    "read_document_text",
]

import gc
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, AnyStr

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from flowlang.errors import DocumentError, SourceLines, SourcePosition
from flowlang.flow.jsondoc import DuplicateKeys, JsonSyntaxError, first_line, read_json
from flowlang.flow.pointers import (
    MAX_DEPTH,
    MAX_INTEGER_DIGITS,
    Pointer,
    integer_digit_limit,
)
from flowlang.locations import ScalarMap

_CParser: Any
try:  # libyaml's parser, when PyYAML was built with it: the same events, far faster
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - the wheels on PyPI include libyaml
    _CParser = None

#: The path of a value inside a document: keys and list indexes from the top.

#: The largest document read, in bytes (a file) or characters (text).
MAX_DOCUMENT = 4 * 1024 * 1024

_STR, _INT, _FLOAT = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL, _NULL, _MERGE = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_SURROGATE = re.compile("[\ud800-\udfff]")
#: A text that may be JSON: its first character other than blanks opens an object or array.
_JSON_START = re.compile("\ufeff?[ \t\n\r]*[\\[{]")

#: PyYAML's resolvers call ``match``: ``\Z`` ends each (``$`` would also match before a final
#: newline).
_JSON_SCALARS = [
    (_BOOL, re.compile(r"^(?:true|false)\Z"), list("tf")),
    (_NULL, re.compile(r"^(?:null|)\Z"), ["n", ""]),
    (_INT, re.compile(r"^-?(?:0|[1-9][0-9]*)\Z"), list("-0123456789")),
    (
        _FLOAT,
        re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)\Z"),
        list("-0123456789"),
    ),
]
#: A scalar with an explicit JSON tag (``!!int 12``) must be written as JSON writes it.
_JSON_PATTERNS = {tag: pattern for tag, pattern, _ in _JSON_SCALARS}


class _JsonScalarLoader(yaml.SafeLoader):
    """A SafeLoader whose implicit scalar types are JSON's."""


_JsonScalarLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _JSON_SCALARS:
    _JsonScalarLoader.add_implicit_resolver(_tag, _pattern, _first)
_RESOLVER = _JsonScalarLoader("")


@dataclass(frozen=True)
class Document:
    """The data of a document and where each value came from."""

    data: Any
    text: str
    filename: str | None
    #: Pointer (and ``("#key", *pointer)`` for keys) to a packed position (see ``_pack``).
    _marks: dict[Pointer, int] = field(repr=False)
    #: Scalar maps built on the error path (see ``scalar_map``), by pointer.
    _scalars: dict[Pointer, tuple[str, ScalarMap]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: Each duplicate key (read with ``keep_duplicates``): its message and position, in
    #: document order; the data holds the first value of each key.
    duplicates: tuple[tuple[str, SourcePosition], ...] = ()

    def refuse_duplicates(self) -> None:
        """Raise DocumentError for the first duplicate key, if any (for a reader that reports
        no more than one error per document)."""
        if self.duplicates:
            message, position = self.duplicates[0]
            raise DocumentError(message, self.text, position)

    @property
    def fingerprint(self) -> str:
        """A short hash of the text: a resumed run or replay checks it is the same document."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    @cached_property
    def lines(self) -> SourceLines:
        """The document's lines, split once (for carets under findings)."""
        return SourceLines(self.text)

    def position(
        self, pointer: Pointer, *, step: str | None = None, field_name: str | None = None
    ) -> SourcePosition:
        """The position of the value at ``pointer`` (or of its nearest enclosing value).

        For a quoted scalar the column is that of its first character after the quote, so
        offsets inside a template string map onto the file.
        """
        probe = pointer
        while probe not in self._marks and probe:
            probe = probe[:-1]
        packed = self._marks.get(probe, 0)
        line, column = packed >> 25, (packed >> 1 & 0xFFFFFF) + (packed & 1)
        return SourcePosition(self.filename, line + 1, column + 1, step, field_name)

    def scalar_map(self, pointer: Pointer, value: str) -> ScalarMap:
        """Where each character of the text ``value`` at ``pointer`` is written (built on first
        use, then kept: the error path of a template asks for it)."""
        found = self._scalars.get(pointer)
        if found is None or found[0] is not value:
            packed = self._marks.get(pointer, 0)
            start = self.lines.offset((packed >> 25) + 1, (packed >> 1 & 0xFFFFFF) + 1)
            found = self._scalars[pointer] = (value, ScalarMap(self.text, start, value))
        return found[1]

    def place(
        self,
        pointer: Pointer,
        value: str,
        begin: int,
        end: int | None = None,
        *,
        step: str | None = None,
        field_name: str | None = None,
    ) -> tuple[SourcePosition, int]:
        """Where ``value[begin:end]`` (``value``: the text at ``pointer``) is written: its
        position in the document and the width to underline on that line."""
        if pointer not in self._marks:
            return self.position(pointer, step=step, field_name=field_name), 1
        scalar = self.scalar_map(pointer, value)
        line, column, width = scalar.span(begin, begin + 1 if end is None else end, self.lines)
        return SourcePosition(self.filename, line, column, step, field_name), width

    def key_position(self, pointer: Pointer) -> SourcePosition:
        """The position of the key naming the value at ``pointer``."""
        packed = self._marks.get(("#key", *pointer), self._marks.get(pointer, 0))
        return SourcePosition(self.filename, (packed >> 25) + 1, (packed >> 1 & 0xFFFFFF) + 1)


def _error(message: str, text: str, filename: str | None, line: int, column: int) -> DocumentError:
    return DocumentError(message, text, SourcePosition(filename, line + 1, column + 1))


def read_limited(stream: IO[AnyStr]) -> AnyStr:
    """At most the document limit plus one byte (or character) of ``stream``: a file, FIFO,
    device or endless pipe ends here, and a result longer than ``MAX_DOCUMENT`` is too large."""
    return stream.read(MAX_DOCUMENT + 1)


def _read_limited(path: Path, filename: str) -> bytes:
    """At most the document limit plus one byte of ``path`` (a file, FIFO or device)."""
    try:
        with path.open("rb") as stream:
            return read_limited(stream)
    except OSError as error:
        raise DocumentError(
            f"cannot read {path}: {error.strerror or error}", "", SourcePosition(filename)
        ) from None


def decode_document(raw: bytes, filename: str | None) -> str:
    """The UTF-8 text of a document's bytes, within the size limit (DocumentError if not)."""
    if len(raw) > MAX_DOCUMENT:
        raise DocumentError(
            f"document is larger than {MAX_DOCUMENT} bytes", "", SourcePosition(filename)
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DocumentError(
            f"document is not UTF-8 text ({error.reason} at byte {error.start}, line {line})",
            "",
            SourcePosition(filename),
        ) from None


def load_document(
    source: str | Path, *, filename: str | None = None, keep_duplicates: bool = False
) -> Document:
    """Read a flow or workflow document from a path or from its text.

    A path is read up to the size limit only (``/dev/zero`` and FIFOs end with an error).
    JSON or YAML: see the module's docstring. A duplicate key is refused (DocumentError), or
    with ``keep_duplicates`` kept in ``Document.duplicates`` (every one, for a checker that
    reports all faults; the first value of each key is read).
    """
    if isinstance(source, Path):
        filename = filename or str(source)
        text = decode_document(_read_limited(source, filename), filename)
    else:
        text = source
        if len(text) > MAX_DOCUMENT:
            raise DocumentError(
                f"document is larger than {MAX_DOCUMENT} characters", "", SourcePosition(filename)
            )
    if text.startswith("\ufeff"):  # a byte order mark: no column of the document counts it
        text = text[1:]
    marks: dict[Pointer, int] = {}
    duplicates = DuplicateKeys(keep_duplicates)
    if filename is not None and filename[-5:].lower() == ".json":
        data = read_json(text, filename, marks, duplicates)
    elif _JSON_START.match(text):
        data = _json_else_yaml(text, filename, marks, duplicates)
    else:
        data = _Composer(text, filename, marks, duplicates).document()
    found = tuple(
        (message, SourcePosition(filename, line, column))
        for message, line, column in duplicates.found
    )
    return Document(data, text, filename, marks, duplicates=found)


def _json_else_yaml(
    text: str, filename: str | None, marks: dict[Pointer, int], duplicates: DuplicateKeys
) -> Any:
    """The data of a text that looks like JSON: JSON's, or YAML's when it is not JSON at all."""
    try:
        return read_json(text, filename, marks, duplicates)
    except JsonSyntaxError as json_error:
        marks.clear()
        duplicates.found.clear()
        try:
            return _Composer(text, filename, marks, duplicates).document()
        except DocumentError as yaml_error:
            json_at, yaml_at = json_error.position, yaml_error.position
            if (yaml_at.line, yaml_at.column) > (json_at.line, json_at.column):
                raise yaml_error from None
            raise json_error from None


def _parser(text: str) -> Any:
    """An event parser of ``text``: libyaml's when PyYAML has it (fast), else PyYAML's own.

    Either way events are read one at a time: nothing in the parser recurses.
    """
    # libyaml takes a tab inside a plain scalar that PyYAML refuses, and reads a byte order mark
    # after the start differently: such texts go to PyYAML's parser, whose reading is the rule.
    if (
        _CParser is not None
        and "\t" not in text
        and "\ufeff" not in text[1:]
        and not _SURROGATE.search(text)
    ):
        return _CParser(text)
    return _JsonScalarLoader(text)


class _Composer:
    """Turn parser events straight into plain data, recording the position of every value.

    No node tree is built and nothing recurses; anchors' aliases, tags other than the JSON ones,
    duplicate keys and nesting deeper than the limit are refused as they are met.
    """

    def __init__(
        self,
        text: str,
        filename: str | None,
        marks: dict[Pointer, int],
        duplicates: DuplicateKeys | None = None,
    ) -> None:
        self.text = text
        self.filename = filename
        self.marks = marks
        self.duplicates = duplicates if duplicates is not None else DuplicateKeys()
        self.line_texts: list[str] | None = None

    def fail(self, message: str, mark: Any) -> DocumentError:
        return _error(message, self.text, self.filename, mark.line, mark.column)

    def document(self) -> Any:
        try:
            parser = _parser(self.text)
            if isinstance(parser, _JsonScalarLoader):
                return self._read(parser)
            try:
                return self._read(parser)
            except yaml.YAMLError as libyaml_error:
                # libyaml words syntax problems its own way and places a few elsewhere (at the
                # end of a text with no final newline): PyYAML's parser reads the broken text
                # again so that the error is the same either way (libyaml's when PyYAML reads
                # it: a surrogate escape, which only libyaml refuses).
                self.marks.clear()
                self.duplicates.found.clear()
                self._read(_JsonScalarLoader(self.text))
                raise libyaml_error from None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = error.problem or error.context or "invalid YAML"
            line, column = (mark.line, mark.column) if mark is not None else (0, 0)
            raise _error(
                f"invalid YAML: {problem}", self.text, self.filename, line, column
            ) from None
        except yaml.YAMLError as error:  # a reader error: a character YAML does not allow
            raise DocumentError(
                f"invalid YAML: {error}", self.text, SourcePosition(self.filename)
            ) from None

    def _read(self, parser: Any) -> Any:
        """The document's data from ``parser``'s events (PyYAML's errors pass through)."""
        try:
            parser.get_event()  # stream start
            if parser.check_event(StreamEndEvent):
                raise DocumentError("document is empty", self.text, SourcePosition(self.filename))
            parser.get_event()  # document start
            data = self.compose(parser)
            self.duplicates.drop()
            parser.get_event()  # document end
            if not parser.check_event(StreamEndEvent):
                raise self.fail(
                    "a file holds one document: found a second one (---)",
                    parser.peek_event().start_mark,
                )
        finally:
            parser.dispose()
        return data

    def compose(self, parser: Any) -> Any:
        """Read the events of the document's root value into plain data."""
        marks = self.marks
        root: dict[int, Any] = {0: None}
        # The enclosing collections: (container, its pointer, the slot being filled) each.
        stack: list[tuple[Any, Pointer, Any]] = []
        container: Any = root
        pointer: Pointer = ()
        slot: Any = 0  # a dict's key (None: a key comes next), a list's index
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                container, pointer, slot = stack.pop()
            else:
                mark = event.start_mark
                if kind is AliasEvent:
                    raise self.fail("aliases (*name) are not allowed", mark)
                if slot is None:  # the key of a mapping entry
                    if kind is not ScalarEvent:
                        raise self.fail("a key must be a plain value", mark)
                    key = self.key(event)
                    if key in container:
                        message = DuplicateKeys.message(key, first_line(marks, pointer, key))
                        if not self.duplicates.keep:
                            raise self.fail(message, mark)
                        key = self.duplicates.stand_in(
                            container, message, mark.line + 1, mark.column + 1
                        )
                    marks[("#key", *pointer, key)] = _pack(mark, None)
                    slot = key
                    continue
                where = (*pointer, slot) if stack else ()
                if len(stack) > MAX_DEPTH:
                    raise self.fail(f"document nests deeper than {MAX_DEPTH} levels", mark)
                if kind is ScalarEvent:
                    if not event.value and not event.style:  # an empty plain value: null
                        mark = self.empty_value_mark(mark)
                    marks[where] = _pack(mark, event.style)
                    value = self.scalar(event)
                else:
                    is_list = kind is SequenceStartEvent
                    if event.tag not in (None, "!", _SEQ if is_list else _MAP):
                        raise self.fail(f"tag {event.tag!r} is not allowed", mark)
                    marks[where] = _pack(mark, None)
                    value = [] if is_list else {}
                if type(container) is list:
                    container.append(value)
                else:
                    container[slot] = value
                if kind is not ScalarEvent:
                    stack.append((container, pointer, slot))
                    container, pointer = value, where
                    slot = 0 if type(value) is list else None
                    continue
            if not stack:
                return root[0]
            slot = None if type(container) is dict else slot + 1

    def empty_value_mark(self, mark: Any) -> Any:
        """Where an empty value is: right after its ``:``, before any blanks (libyaml puts it
        at the next token, PyYAML's parser somewhere between; both agree on this place)."""
        if self.line_texts is None:
            self.line_texts = self.text.split("\n")
        line, column = mark.line, mark.column
        text = self.line_texts[line] if line < len(self.line_texts) else ""
        while 0 < column <= len(text) and text[column - 1] == " ":
            column -= 1
        return _Place(line, column)

    def key(self, event: Any) -> Any:
        """A mapping key: text, or an integer (other scalars keep their text)."""
        key = self.scalar(event)
        if isinstance(key, float) or key is None or isinstance(key, bool):
            return event.value
        return key

    def scalar(self, event: Any) -> Any:
        """The value of a scalar: JSON's types only, read without PyYAML's constructors."""
        tag = event.tag
        value: str = event.value
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(ScalarNode, value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _STR:
            return value
        if tag == _MERGE:
            raise self.fail("merge keys (<<) are not allowed", event.start_mark)
        pattern = _JSON_PATTERNS.get(tag)
        if pattern is None:
            raise self.fail(f"tag {tag!r} is not allowed", event.start_mark)
        if not pattern.fullmatch(value):
            raise self.fail(
                f"{value[:40]!r} is not a valid {tag.rsplit(':', 1)[-1]}", event.start_mark
            )
        if tag == _INT:
            limit = integer_digit_limit()
            if len(value.lstrip("-")) > limit:
                raise self.fail(
                    f"a whole number has at most {limit} digits (quote it to keep it as text)",
                    event.start_mark,
                )
            return int(value)
        if tag == _FLOAT:
            number = float(value)
            if number in (float("inf"), float("-inf")):
                raise self.fail("number is out of range", event.start_mark)
            return number
        if tag == _BOOL:
            return value == "true"
        return None


@dataclass(frozen=True)
class _Place:
    """A line and column (0-based), as a parser's mark gives them."""

    line: int
    column: int


def _pack(mark: Any, style: str | None) -> int:
    """A position as one int (line, column, and whether the scalar is quoted): a big document
    has one per value, so they are kept small."""
    line: int = mark.line
    column: int = mark.column
    return (line << 24 | column) << 1 | (style in ('"', "'"))


@contextmanager
def paused_collector() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a document is loaded and checked.

    Checking a large document creates hundreds of thousands of objects that all live on (the
    compiled flow); every full collection walks all of them again, which was half the time of
    a 4 MiB document. Nothing a check creates needs collecting promptly. The collector is
    enabled again at the end unless it was already disabled (then it is left alone).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def read_document_file(
    source: str | os.PathLike[str] | Document, *, keep_duplicates: bool = False
) -> Document:
    """The document in file ``source`` (a str is always a path), or ``source`` itself when it
    is a Document already read. A missing file is a DocumentError that names it; a str that
    spans lines is a document's text given by mistake (ValueError)."""
    if isinstance(source, Document):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a document's path is a str or a path, not {type(source).__name__}")
    name = os.fspath(source)
    if not isinstance(name, str):
        raise TypeError("a document's path is a str or a path, not bytes")
    if "\n" in name or name.lstrip().startswith("{"):
        raise ValueError(
            "this is a document's text, not a file name: use load_flow_text or "
            "load_workflow_text (or check_flow_text, check_workflow_text) for text"
        )
    return load_document(Path(name), keep_duplicates=keep_duplicates)


def read_document_text(text: str, name: str | None, *, keep_duplicates: bool = False) -> Document:
    """The document whose text is ``text`` (never taken for a file name), named ``name`` in
    messages."""
    if not isinstance(text, str):
        raise TypeError(f"a document's text is a str, not {type(text).__name__}")
    return load_document(text, filename=name, keep_duplicates=keep_duplicates)


def text_not_path_hint(data: Any) -> str:
    """A hint for a document that is one plain string: it was probably meant as a file name."""
    if not isinstance(data, str):
        return ""
    return " (this is the text itself: to read a file, use load_flow or load_workflow)"
