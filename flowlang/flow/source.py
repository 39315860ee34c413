"""Source: read a YAML or JSON document into plain data, keeping the position of every value.

YAML is read with JSON-compatible scalars only: `true`/`false`/`null`, JSON numbers, and
everything else a string (`no`, `0123`, `12:30` and `2026-01-01` stay strings). Duplicate keys,
anchors, aliases, merge keys and tags are refused: a flow document is data, written by hand.
"""

from __future__ import annotations

__all__ = ["Document", "DocumentError", "Pointer", "load_document", "read_document"]

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flowlang.errors import FlowError, SourcePosition, render_caret

#: The path of a value inside a document: keys and list indexes from the top.
Pointer = tuple[str | int, ...]

_MAX_DOCUMENT = 4 * 1024 * 1024
_MAX_DEPTH = 64

_JSON_SCALARS = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf")),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:null|)$"), ["n", ""]),
    ("tag:yaml.org,2002:int", re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789")),
    (
        "tag:yaml.org,2002:float",
        re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)$"),
        list("-0123456789"),
    ),
]


class _JsonScalarLoader(yaml.SafeLoader):
    """A SafeLoader whose implicit scalar types are JSON's."""


_JsonScalarLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _JSON_SCALARS:
    _JsonScalarLoader.add_implicit_resolver(_tag, _pattern, _first)


class DocumentError(FlowError):
    """A document that cannot be read; ``str()`` names file:line:column with a caret."""

    def __init__(self, message: str, text: str, position: SourcePosition) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        lines = text.splitlines() or [""]
        line_text = lines[position.line - 1] if 0 < position.line <= len(lines) else ""
        self._caret = render_caret(line_text, position.line, position.column)

    def __str__(self) -> str:
        where = (
            f"{self.position.filename or '<document>'}:{self.position.line}:{self.position.column}"
        )
        if self.position.step is not None:
            where += f" (step {self.position.step!r})"
        return f"{self.message}\n  --> {where}\n{self._caret}"


@dataclass(frozen=True)
class Document:
    """The data of a document and where each value came from."""

    data: Any
    text: str
    filename: str | None
    _marks: dict[Pointer, tuple[int, int, str | None]] = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """A short hash of the text: a resumed run or replay checks it is the same document."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

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
        line, column, style = self._marks.get(probe, (0, 0, None))
        if style in ('"', "'"):
            column += 1
        return SourcePosition(self.filename, line + 1, column + 1, step, field_name)

    def key_position(self, pointer: Pointer) -> SourcePosition:
        """The position of the key naming the value at ``pointer``."""
        line, column, _ = self._marks.get(
            ("#key", *pointer), self._marks.get(pointer, (0, 0, None))
        )
        return SourcePosition(self.filename, line + 1, column + 1)


def _error(message: str, text: str, filename: str | None, line: int, column: int) -> DocumentError:
    return DocumentError(message, text, SourcePosition(filename, line + 1, column + 1))


def load_document(source: str | Path, *, filename: str | None = None) -> Document:
    """Read a flow or workflow document from a path or from its text."""
    if isinstance(source, Path):
        filename = filename or str(source)
        try:
            raw = source.read_bytes()
        except OSError as error:
            raise DocumentError(
                f"cannot read {source}: {error.strerror}", "", SourcePosition(filename)
            ) from None
        if len(raw) > _MAX_DOCUMENT:
            raise DocumentError(
                f"document is larger than {_MAX_DOCUMENT} bytes", "", SourcePosition(filename)
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DocumentError(
                f"document is not UTF-8 text ({error.reason})", "", SourcePosition(filename)
            ) from None
    else:
        text = source
        if len(text) > _MAX_DOCUMENT:
            raise DocumentError(
                f"document is larger than {_MAX_DOCUMENT} characters", "", SourcePosition(filename)
            )
    try:
        root = yaml.compose(text, Loader=_JsonScalarLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        raise _error(f"invalid YAML: {problem}", text, filename, line, column) from None
    except yaml.YAMLError as error:  # pragma: no cover - PyYAML marks its errors
        raise DocumentError(f"invalid YAML: {error}", text, SourcePosition(filename)) from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise DocumentError(
            f"document nests deeper than {_MAX_DEPTH} levels", text, SourcePosition(filename)
        ) from None
    if root is None:
        raise DocumentError("document is empty", text, SourcePosition(filename))
    marks: dict[Pointer, tuple[int, int, str | None]] = {}
    data = _convert(root, text, filename, marks)
    return Document(data, text, filename, marks)


def _convert(
    root: Node, text: str, filename: str | None, marks: dict[Pointer, tuple[int, int, str | None]]
) -> Any:
    """Turn composed YAML nodes into plain data without recursion, recording positions."""
    constructor = _JsonScalarLoader("")  # only used to construct scalar values
    result: list[Any] = [None]
    # Each work item: node, pointer, container to fill, key in that container, depth.
    work: list[tuple[Node, Pointer, Any, Any, int]] = [(root, (), result, 0, 0)]
    seen: set[int] = set()
    while work:
        node, pointer, container, slot, depth = work.pop()
        mark = node.start_mark
        if depth > _MAX_DEPTH:
            raise _error(
                f"document nests deeper than {_MAX_DEPTH} levels",
                text,
                filename,
                mark.line,
                mark.column,
            )
        if id(node) in seen:  # an alias shares its anchor's node: refuse it, never expand it
            raise _error("aliases (*name) are not allowed", text, filename, mark.line, mark.column)
        seen.add(id(node))
        marks[pointer] = (mark.line, mark.column, getattr(node, "style", None))
        if isinstance(node, ScalarNode):
            if (
                node.tag not in {tag for tag, _, _ in _JSON_SCALARS}
                and node.tag != "tag:yaml.org,2002:str"
            ):
                raise _error(
                    f"tag {node.tag!r} is not allowed", text, filename, mark.line, mark.column
                )
            value = constructor.construct_object(node, deep=False)
            if isinstance(value, float) and value in (float("inf"), float("-inf")):
                raise _error("number is out of range", text, filename, mark.line, mark.column)
            container[slot] = value
        elif isinstance(node, SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise _error(
                    f"tag {node.tag!r} is not allowed", text, filename, mark.line, mark.column
                )
            items: list[Any] = [None] * len(node.value)
            container[slot] = items
            for index, child in enumerate(node.value):
                work.append((child, (*pointer, index), items, index, depth + 1))
        elif isinstance(node, MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise _error(
                    f"tag {node.tag!r} is not allowed", text, filename, mark.line, mark.column
                )
            mapping: dict[Any, Any] = {}
            container[slot] = mapping
            for key_node, value_node in node.value:
                key_mark = key_node.start_mark
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _error(
                        "merge keys (<<) are not allowed",
                        text,
                        filename,
                        key_mark.line,
                        key_mark.column,
                    )
                if not isinstance(key_node, ScalarNode):
                    raise _error(
                        "a key must be a plain value",
                        text,
                        filename,
                        key_mark.line,
                        key_mark.column,
                    )
                key = constructor.construct_object(key_node, deep=False)
                if isinstance(key, float) or key is None or isinstance(key, bool):
                    key = key_node.value  # keys stay text unless they are integers
                if key in mapping:
                    raise _error(
                        f"duplicate key {key!r}", text, filename, key_mark.line, key_mark.column
                    )
                mapping[key] = None
                marks[("#key", *pointer, key)] = (key_mark.line, key_mark.column, None)
                work.append((value_node, (*pointer, key), mapping, key, depth + 1))
        else:  # pragma: no cover - compose yields only these three kinds
            raise _error("unsupported YAML node", text, filename, mark.line, mark.column)
    return result[0]


def read_document(path_or_text: str | Path, filename: str | None = None) -> Document:
    """Read a document given as a Path, as a path string (one line naming a file), or as text."""
    if isinstance(path_or_text, Path):
        return load_document(path_or_text, filename=filename)
    looks_like_path = "\n" not in path_or_text and not path_or_text.lstrip().startswith("{")
    if looks_like_path and os.path.isfile(path_or_text):
        return load_document(Path(path_or_text), filename=filename)
    return load_document(path_or_text, filename=filename)
