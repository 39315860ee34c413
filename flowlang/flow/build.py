"""Build: check a flow document against the field table and compile every template once."""

from __future__ import annotations

__all__ = [
    "UNKNOWN_KIND",
    "StepBuilder",
    "TemplateUse",
    "UnknownKind",
    "build_steps",
    "duplicate_findings",
    "enum_spellings",
    "in_document_order",
    "value_kind",
]

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowlang.engine import Engine, Template
from flowlang.errors import FlowSyntaxError, SourcePosition
from flowlang.expr import ast
from flowlang.flow.conditions import compile_rows
from flowlang.flow.digits import DigitPattern, PatternError
from flowlang.flow.fields import CONDITION_OPERATORS, Field, field_edges
from flowlang.flow.model import Branch, Endpoint, FieldTree, Finding, Row, Step, Value
from flowlang.flow.source import Document, Pointer
from flowlang.http_rules import (
    header_name_problem,
    header_value_problem,
    origin_of,
    url_origin,
)
from flowlang.kinds.registry import STEP_KINDS
from flowlang.suggest import HintBudget

#: A duration, matched after stripping the text (one run of white space, so no backtracking
#: between two ``\s*``: that was quadratic in the spaces).
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?")
#: A header name (an RFC 9110 token), used with fullmatch (``$`` would let a final newline by).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENDPOINT_PREFIX = re.compile(r"https?://", re.IGNORECASE)
_MAX_HEADERS = 50
#: The keys a caller can press.
_KEYS = "0123456789*#"
#: The field table of each step kind.
_STEP_FIELDS = {name: kind.fields for name, kind in STEP_KINDS.items()}
#: "Did you mean" hints per document: a document with thousands of mistakes gets hints on the
#: first ones only (each hint compares a name with up to hundreds of options).
MAX_HINTS = 100
#: ``{{...}}`` warnings per document (one per template at most).
MAX_BRACE_WARNINGS = 100
#: The deepest a field tree (``body``, ``variables``) nests, dotted key parts included.
MAX_FIELD_DEPTH = 64


@dataclass(frozen=True)
class TemplateUse:
    """A template in a step, with the field it fills and where it was written."""

    step: str
    field: str
    template: Template
    position: SourcePosition
    #: The document and the template's pointer in it (to place offsets inside the template).
    document: Document | None = dataclasses.field(default=None, repr=False, compare=False)
    pointer: Pointer = ()

    def place(self, begin: int, end: int | None = None) -> tuple[SourcePosition, int]:
        """Where ``template.source[begin:end]`` is written in the document, and the width to
        underline (see ``Document.place``)."""
        if self.document is None:
            at = self.position
            return SourcePosition(at.filename, at.line, at.column + begin, at.step, at.field), 1
        return self.document.place(
            self.pointer,
            self.template.source,
            begin,
            end,
            step=self.step,
            field_name=self.field,
        )


class StepBuilder:
    """Checks and compiles the fields of one document, collecting findings."""

    def __init__(self, document: Document, engine: Engine) -> None:
        self.document = document
        self.engine = engine
        self.findings: list[Finding] = []
        self.templates: list[TemplateUse] = []
        #: Warnings that do not stop the checks that follow (``findings`` holds errors).
        self.warnings: list[Finding] = []
        #: ``did_you_mean`` while this document's budget of hints lasts, then ``""``.
        self.hint = HintBudget(MAX_HINTS)
        #: The steps that did not build (kept as graph nodes: see :func:`build_steps`).
        self.broken: set[str] = set()
        #: Those of them whose edges may not all be known (an unknown type, a wrong edge field).
        self.open_ended: set[str] = set()
        #: Hosts an endpoint may reach with plain http (a flow run's ``allow_hosts``; empty:
        #: https only). None: not checked here (a workflow's run decides).
        self.http_hosts: frozenset[str] | None = None

    # --- reporting ------------------------------------------------------------------------

    def error(
        self,
        message: str,
        pointer: Pointer,
        step: str | None = None,
        field: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        position = self.document.key_position(pointer) if key else self.document.position(pointer)
        position = SourcePosition(position.filename, position.line, position.column, step, field)
        self.findings.append(Finding(message, position).with_caret(self.document.lines))

    # --- kinds ----------------------------------------------------------------------------

    def template(self, raw: Any, pointer: Pointer, step: str, field: str) -> Template | None:
        if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
            self.error(f"expected text, found {value_kind(raw)}", pointer, step, field)
            return None
        text = raw if isinstance(raw, str) else str(raw)
        position = self.document.position(pointer, step=step, field_name=field)
        try:
            template = self.engine.compile(text, position=position)
        except FlowSyntaxError as error:
            at, width = self.document.place(
                pointer, text, error.offset, error.end, step=step, field_name=field
            )
            placed = error.placed_at(at, self.document.lines, width)
            self.findings.append(Finding(error.message, at, detail=str(placed)))
            return None
        self.templates.append(TemplateUse(step, field, template, position, self.document, pointer))
        self.literal_braces(template, pointer, step, field)
        return template

    def literal_braces(self, template: Template, pointer: Pointer, step: str, field: str) -> None:
        """Warn about ``{{...}}`` in the literal text of a template in the default syntax: it
        is sent as those characters (a CloudTalk document is read with the cloudtalk syntax)."""
        if self.engine.syntax.name != "flowlang" or len(self.warnings) >= MAX_BRACE_WARNINGS:
            return
        source = template.source
        start = 0
        for hole in (*template.tree.holes, None):
            end = hole.start if hole is not None else len(source)
            opening = source.find("{{", start, end)
            closing = source.find("}}", opening + 2, end) if opening >= 0 else -1
            if closing >= 0:
                found = source[opening : closing + 2]
                inner = found[2:-2].strip()
                advice = f"write <<{inner}>>" if 0 < len(inner) <= 80 else "write <<...>>"
                at, width = self.document.place(
                    pointer, source, opening, closing + 2, step=step, field_name=field
                )
                self.warnings.append(
                    Finding(
                        f"{_shorten(found)} is sent as literal text: templates in this syntax "
                        f"are written <<...>> ({advice}, or read a CloudTalk document with the "
                        "cloudtalk syntax: --syntax cloudtalk)",
                        at,
                        "warning",
                        width=width,
                    ).with_caret(self.document.lines)
                )
                return
            if hole is not None:
                start = hole.end

    def value(self, raw: Any, pointer: Pointer, step: str, field: str) -> Value | FieldTree | None:
        """A field value: strings are templates, lists and maps are compiled item by item."""
        if isinstance(raw, str):
            template = self.template(raw, pointer, step, field)
            return None if template is None else Value(template)
        if isinstance(raw, dict):
            return self.field_tree(raw, pointer, step, field)
        if isinstance(raw, list):
            items = [
                self.value(item, (*pointer, index), step, field) for index, item in enumerate(raw)
            ]
            if any(item is None for item in items):
                return None
            if all(isinstance(item, Value) and item.template is None for item in items):
                return Value(None, [item.literal for item in items])  # type: ignore[union-attr]
            return Value(_ListTemplate(tuple(items)))  # type: ignore[arg-type]
        return Value(None, raw)

    def field_tree(self, raw: Any, pointer: Pointer, step: str, field: str) -> FieldTree | None:
        """Key/value entries whose dotted keys nest; ``a`` and ``a.b`` together are an error."""
        if not isinstance(raw, dict):
            self.error(f"expected key/value entries, found {value_kind(raw)}", pointer, step, field)
            return None
        entries = []
        ok = True
        for key, item in raw.items():
            compiled = self.value(item, (*pointer, key), step, field)
            if compiled is None:
                ok = False
            else:
                entries.append((str(key), compiled, (*pointer, key)))
        tree = self.nest(entries, step, field)
        return tree if ok else None

    def nest(
        self, entries: list[tuple[str, Value | FieldTree, Pointer]], step: str, field: str
    ) -> FieldTree | None:
        """Build the nested tree of dotted keys; report empty parts and conflicting keys."""
        root: dict[str, Any] = {}
        ok = True
        for key, compiled, item_pointer in entries:
            parts = key.split(".")
            if any(not part for part in parts):
                self.error(f"key {key!r} has an empty part", item_pointer, step, field, key=True)
                ok = False
                continue
            depth = len(parts) + (_tree_depth(compiled) if isinstance(compiled, FieldTree) else 0)
            if depth > MAX_FIELD_DEPTH:
                self.error(
                    f"key {_shorten(key)} nests deeper than {MAX_FIELD_DEPTH} levels "
                    "(its dotted parts and the entries under it)",
                    item_pointer,
                    step,
                    field,
                    key=True,
                )
                ok = False
                continue
            problem = _insert(root, parts, compiled)
            if problem is not None:
                self.error(
                    f"key {key!r} conflicts with {problem}", item_pointer, step, field, key=True
                )
                ok = False
        return _dict_to_tree(root, self.engine.backend) if ok else None

    def duration(
        self, raw: Any, pointer: Pointer, step: str, name: str, spec: Field
    ) -> float | None:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            seconds = _as_float(raw)
        else:
            match = _DURATION.fullmatch(raw.strip()) if isinstance(raw, str) else None
            if match is None:
                found = _shown(raw)
                self.error(
                    f"expected a duration such as 3s or 500ms, found {found}", pointer, step, name
                )
                return None
            seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        if (
            spec.minimum is not None
            and spec.maximum is not None
            and not spec.minimum <= seconds <= spec.maximum
        ):
            self.error(
                f"{name} must be between {_seconds(spec.minimum)} and {_seconds(spec.maximum)}, "
                f"not {_seconds(seconds)}",
                pointer,
                step,
                name,
            )
            return None
        return seconds

    def scalar(self, raw: Any, pointer: Pointer, step: str, name: str, spec: Field) -> Any:
        kind = spec.kind
        if kind == "bool":
            if not isinstance(raw, bool):
                self.error(f"expected true or false, found {value_kind(raw)}", pointer, step, name)
                return None
            return raw
        if kind == "int":
            raw = _whole(raw)  # 16000.0 is the whole number 16000, as in JSON Schema
            if not isinstance(raw, int) or isinstance(raw, bool):
                found = f"{raw!r}" if isinstance(raw, float) else value_kind(raw)
                self.error(f"expected a whole number, found {found}", pointer, step, name)
                return None
            if (
                spec.minimum is not None
                and spec.maximum is not None
                and not spec.minimum <= raw <= spec.maximum
            ):
                shown = raw if abs(raw) < 10**20 else "a larger number"
                self.error(
                    f"{name} must be between {spec.minimum:g} and {spec.maximum:g}, not {shown}",
                    pointer,
                    step,
                    name,
                )
                return None
            return raw
        if kind == "enum":
            spellings = enum_spellings(spec, name)
            chosen = spellings.get(raw) if isinstance(raw, str) else None
            if chosen is None:
                also = " (or in lower case)" if len(spellings) > len(spec.choices) else ""
                self.error(
                    f"{name} must be one of {', '.join(spec.choices)}{also}, not {_shown(raw)}",
                    pointer,
                    step,
                    name,
                )
            return chosen
        if kind == "step":
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                self.error(f"expected a step id, found {value_kind(raw)}", pointer, step, name)
                return None
            return str(raw)
        if kind == "key":
            raw = _whole(raw)
            if raw is None:
                text = ""
            elif isinstance(raw, str) or (type(raw) is int and 0 <= raw <= 9):
                text = str(raw)
            else:  # a boolean, a list, a number that is not one digit (maybe 5000 digits long)
                text = "??"
            if len(text) > 1 or (text and text not in _KEYS):
                self.error(
                    f"finish_on_key must be one of 0-9, * or #, or empty, not {_shown(raw)}",
                    pointer,
                    step,
                    name,
                )
                return None
            return text
        if kind == "pattern":
            if not isinstance(raw, str):
                self.error(
                    f"expected a regular expression, found {value_kind(raw)}", pointer, step, name
                )
                return None
            try:
                return DigitPattern(raw)
            except PatternError as error:
                self.error(f"invalid pattern: {error}", pointer, step, name)
                return None
        raise AssertionError(kind)  # pragma: no cover

    def headers(
        self, raw: Any, pointer: Pointer, step: str
    ) -> tuple[tuple[str, Template], ...] | None:
        if not isinstance(raw, dict):
            self.error(
                f"expected header names and values, found {value_kind(raw)}",
                pointer,
                step,
                "headers",
            )
            return None
        if len(raw) > _MAX_HEADERS:
            self.error(f"at most {_MAX_HEADERS} headers are allowed", pointer, step, "headers")
            return None
        out = []
        for name, value in raw.items():
            name_text = str(name)
            if not _HEADER_NAME.fullmatch(name_text):
                self.error(
                    f"{_shorten(name_text)} is not a valid header name",
                    (*pointer, name),
                    step,
                    "headers",
                    key=True,
                )
                continue
            problem = header_name_problem(name_text)
            if problem is not None:
                self.error(problem, (*pointer, name), step, "headers", key=True)
                continue
            template = self.template(value, (*pointer, name), step, f"headers.{name_text}")
            if template is None:
                continue
            if not template.tree.holes:
                problem = header_value_problem(str(template.render({})))
                if problem:
                    self.error(f"header {name_text!r} {problem}", (*pointer, name), step, "headers")
                    continue
            out.append((name_text, template))
        return tuple(out)

    def endpoint(self, raw: Any, pointer: Pointer, step: str) -> Endpoint | None:
        """The endpoint, whose scheme, host, port and the character ending them ('/', '?', '#'
        or the end) are fixed text: no value can send the request anywhere else."""
        template = self.template(raw, pointer, step, "endpoint")
        if template is None:
            return None
        parts = template.tree.parts
        prefix = parts[0] if parts and isinstance(parts[0], str) else ""
        scheme = _ENDPOINT_PREFIX.match(prefix)
        if scheme is None or (len(parts) > 1 and len(prefix) == scheme.end()):
            self.error(
                "an endpoint must start with fixed text https://host/ "
                "(the host cannot be templated)",
                pointer,
                step,
                "endpoint",
            )
            return None
        if len(parts) > 1 and not any(char in prefix[scheme.end() :] for char in "/?#"):
            self.endpoint_error(
                "the host and port of an endpoint must be fixed text, ended by a fixed '/', '?' "
                "or '#' before any <<...>> (the host cannot be templated)",
                pointer,
                step,
                template,
                len(template.source) if isinstance(parts[1], str) else parts[1].start,
            )
            return None
        try:
            origin = origin_of(prefix)
        except ValueError as error:
            self.endpoint_error(f"invalid endpoint: {error}", pointer, step, template, scheme.end())
            return None
        hosts = self.http_hosts
        if hosts is not None and origin.scheme != "https" and origin.host.strip("[]") not in hosts:
            self.endpoint_error(
                f"plain http to {origin.host} is not allowed: an endpoint must use https:// "
                "(the runtime refuses plain http except to hosts it is told to allow)",
                pointer,
                step,
                template,
                0,
            )
            return None
        problem = _fixed_text_problem(template) or _host_problem(origin.host, scheme.end())
        if problem is not None:
            self.endpoint_error(
                f"invalid endpoint: {problem[0]}", pointer, step, template, problem[1]
            )
            return None
        pieces: list[str | Template] = []
        for part in parts:
            if isinstance(part, ast.Hole):
                source = template.source[part.start : part.end]
                pieces.append(self.engine.compile(source))
            else:
                pieces.append(part)
        return Endpoint(tuple(pieces), origin.scheme, origin.host)

    def endpoint_error(
        self, message: str, pointer: Pointer, step: str, template: Template, offset: int
    ) -> None:
        """Report ``message`` with the caret at ``offset`` in the endpoint."""
        at, width = self.document.place(
            pointer, template.source, offset, step=step, field_name="endpoint"
        )
        self.findings.append(Finding(message, at, width=width).with_caret(self.document.lines))

    def entries(
        self, raw: Any, pointer: Pointer, step: str, label: str, noun: str, known: set[str] | None
    ) -> list[tuple[Pointer, str, dict[str, Any]]] | None:
        """The maps of a non-empty list (``branches``, ``conditions``), each checked for its kind
        and unknown fields; None when ``raw`` is not such a list. Bad items are reported and left
        out, so a caller compares the count with ``len(raw)``."""
        if not isinstance(raw, list) or not raw:
            self.error(f"expected a list of {noun}s", pointer, step, label)
            return None
        out = []
        for index, item in enumerate(raw):
            where = (*pointer, index)
            item_label = f"{label}[{index}]"
            if not isinstance(item, dict):
                fields = f" ({', '.join(sorted(known))})" if known else ""
                self.error(
                    f"expected {_article(noun)}{fields}, found {value_kind(item)}",
                    where,
                    step,
                    item_label,
                )
                continue
            if known is not None:
                self.unknown_fields(item, known, where, step, noun)
            out.append((where, item_label, item))
        return out

    def branches(self, raw: Any, pointer: Pointer, step: str) -> tuple[Branch, ...] | None:
        items = self.entries(
            raw, pointer, step, "branches", "branch", {"conditions", "expression", "next"}
        )
        if items is None:
            return None
        out = []
        for where, label, item in items:
            target = self.scalar(
                item.get("next"), (*where, "next"), step, f"{label}.next", Field("step")
            )
            if "next" not in item:
                self.error("a branch needs next", where, step, label)
            has_rows, has_expression = "conditions" in item, "expression" in item
            if has_rows == has_expression:
                self.error("a branch needs either conditions or expression", where, step, label)
                continue
            if has_expression:
                expression = self.template(
                    item["expression"], (*where, "expression"), step, f"{label}.expression"
                )
                if expression is not None and target is not None:
                    out.append(Branch((), expression, target))
                continue
            rows = self.rows(item["conditions"], (*where, "conditions"), step, label)
            if rows is not None and target is not None:
                out.append(Branch(rows, None, target, compile_rows(rows, self.engine)))
        return tuple(out) if len(out) == len(raw) else None

    def rows(self, raw: Any, pointer: Pointer, step: str, label: str) -> tuple[Row, ...] | None:
        items = self.entries(
            raw,
            pointer,
            step,
            f"{label}.conditions",
            "condition",
            {"property", "operator", "value"},
        )
        if items is None:
            return None
        rows = []
        for where, field, item in items:
            row = self.row(item, where, step, field)
            if row is not None:
                rows.append(row)
        return tuple(rows) if len(rows) == len(raw) else None

    def row(self, item: dict[Any, Any], where: Pointer, step: str, field: str) -> Row | None:
        """One condition row; every part is checked whatever the others found (an unknown
        operator does not hide a fault in the property or the value)."""
        operator = item.get("operator")
        known = isinstance(operator, str) and operator in CONDITION_OPERATORS
        ok = known
        if not known:
            hint = self.hint(operator, CONDITION_OPERATORS) if isinstance(operator, str) else ""
            if "operator" not in item:
                self.error(
                    f"a condition needs an operator: one of {', '.join(CONDITION_OPERATORS)}",
                    where,
                    step,
                    field,
                )
            elif not isinstance(operator, str):
                self.error(
                    f"expected an operator (one of {', '.join(CONDITION_OPERATORS)}), "
                    f"found {value_kind(operator)}",
                    (*where, "operator"),
                    step,
                    field,
                )
            else:
                self.error(
                    f"unknown operator {_shorten(operator)}{hint}",
                    (*where, "operator"),
                    step,
                    field,
                )
        prop = None
        if "property" in item:
            prop = self.row_part(item["property"], (*where, "property"), step, f"{field}.property")
        else:
            self.error("a condition needs a property", where, step, field)
        ok = ok and prop is not None
        value = None
        takes_value = CONDITION_OPERATORS[operator] if isinstance(operator, str) and known else None
        if "value" in item:
            value = self.row_part(item["value"], (*where, "value"), step, f"{field}.value")
            if takes_value is False:
                self.error(f"operator {operator!r} takes no value", (*where, "value"), step, field)
                ok = False
            ok = ok and value is not None
        elif takes_value:
            self.error(f"operator {operator!r} needs a value", where, step, field)
            ok = False
        if not ok or not isinstance(prop, Value) or not isinstance(operator, str):
            return None
        return Row(prop, operator, value if takes_value else None)

    def row_part(self, raw: Any, pointer: Pointer, step: str, field: str) -> Value | None:
        """A condition's property or value: text or a scalar (a list of them too)."""
        if isinstance(raw, dict):
            self.error(
                "a property or value must be text or a scalar, not key/value entries",
                pointer,
                step,
                field,
            )
            return None
        compiled = self.value(raw, pointer, step, field)
        return compiled if isinstance(compiled, Value) else None

    def unknown_fields(
        self, raw: dict[Any, Any], known: set[str], pointer: Pointer, step: str, what: str
    ) -> None:
        for name in raw:
            if name not in known:
                hint = self.hint(name, sorted(known))
                self.error(
                    f"unknown field {str(name)!r} for {what}{hint}",
                    (*pointer, name),
                    step,
                    str(name),
                    key=True,
                )

    # --- steps ----------------------------------------------------------------------------

    def typed_fields(
        self,
        owner: str,
        raw: Any,
        pointer: Pointer,
        tables: Mapping[str, Mapping[str, Field]],
        noun: str,
        common: Mapping[str, Field] | None = None,
    ) -> tuple[str, dict[str, Any], dict[str, SourcePosition]] | None:
        """Check and compile a map whose ``type`` picks its field table (a step, an action).

        ``common`` fields are allowed for every type. Returns the type, the compiled fields and
        where each was written; None when anything was wrong (the findings say what).
        """
        found = self.partial_fields(owner, raw, pointer, tables, noun, common)
        if found is None or not found[3]:
            return None
        return found[0], found[1], found[2]

    def partial_fields(
        self,
        owner: str,
        raw: Any,
        pointer: Pointer,
        tables: Mapping[str, Mapping[str, Field]],
        noun: str,
        common: Mapping[str, Field] | None = None,
    ) -> tuple[str, dict[str, Any], dict[str, SourcePosition], bool] | None:
        """:meth:`typed_fields` that keeps what did compile: the type, the fields (None where a
        field was wrong), their positions and whether all was right; None when the type is
        unknown (or ``raw`` is no map)."""
        if not isinstance(raw, dict):
            self.error(f"a {noun} is key/value fields, found {value_kind(raw)}", pointer, owner)
            return None
        kind = raw.get("type")
        if not isinstance(kind, str) or kind not in tables:
            self.unknown_type(kind, raw, pointer, owner, tables, noun)
            return None
        table = {**(common or {}), **tables[kind]}
        self.unknown_fields(raw, {"type", *table}, pointer, owner, f"a {kind} {noun}")
        before = len(self.findings)
        fields: dict[str, Any] = {}
        positions: dict[str, SourcePosition] = {}
        for name, spec in table.items():
            where = (*pointer, name)
            positions[name] = self.document.position(
                where if name in raw else pointer, step=owner, field_name=name
            )
            if spec.kind == "options" and isinstance(raw.get(name), dict):
                for key in raw[name]:  # each option's own place, for its edge's findings
                    label = f"{name}[{key}]"
                    positions[label] = self.document.position(
                        (*where, key), step=owner, field_name=label
                    )
            if name not in raw:
                if spec.required:
                    self.error(f"a {kind} {noun} needs {name}", pointer, owner, name, key=True)
                fields[name] = _default_for(spec, self.engine.backend)
                continue
            fields[name] = self.field(spec, raw[name], where, owner, name)
        return kind, fields, positions, len(self.findings) == before

    def unknown_type(
        self,
        kind: Any,
        raw: Mapping[Any, Any],
        pointer: Pointer,
        owner: str,
        tables: Mapping[str, Any],
        noun: str,
    ) -> None:
        """Report a missing or unknown ``type`` of a map whose type picks its fields."""
        choices = ", ".join(tables)
        if "type" not in raw:
            self.error(f"{_article(noun)} needs a type: one of {choices}", pointer, owner, "type")
            return
        hint = (self.hint(kind, tables) if isinstance(kind, str) else "") or (
            f"; expected one of {choices}"
        )
        self.error(f"unknown {noun} type {_shown(kind)}{hint}", (*pointer, "type"), owner, "type")

    def step(self, step_id: str, raw: Any, pointer: Pointer) -> tuple[Step, bool]:
        """The step at ``pointer`` and whether it built. A step with faults is kept as a node
        of the graph all the same (its kind when known, the edges its fields name), so the
        checks of the graph still run: see :func:`build_steps`."""
        key_position = self.document.key_position(pointer)
        position = SourcePosition(
            key_position.filename, key_position.line, key_position.column, step_id
        )
        found = self.partial_fields(step_id, raw, pointer, _STEP_FIELDS, "step")
        if found is None:  # no kind: its edges are what its fields of edge names name
            raw_fields = raw if isinstance(raw, dict) else {}
            edges = _raw_edges(_ANY_EDGE_FIELDS, raw_fields)
            positions = {
                name: self.document.position((*pointer, name), step=step_id, field_name=name)
                for name in _ANY_EDGE_FIELDS
                if name in raw_fields
            }
            self.open_ended.add(step_id)
            return Step(step_id, UNKNOWN_KIND, {}, position, positions, edges), False
        step_type, fields, positions, ok = found
        kind = STEP_KINDS[step_type]
        if kind.check is not None:  # also beside other faults (None in a wrong field)
            before = len(self.findings)
            kind.check(self, fields, raw, pointer, step_id)
            ok = ok and len(self.findings) == before
        if ok:
            edges = tuple(
                edge
                for name in kind.edge_fields
                for edge in field_edges(name, kind.fields[name], fields.get(name))
            )
        else:  # the edges that did build, and those a failed field still names plainly
            table = {name: kind.fields[name] for name in kind.edge_fields}
            edges = _raw_edges(table, raw)
            if any(
                fields.get(name) is None and (name in raw or spec.required)
                for name, spec in table.items()
            ):
                self.open_ended.add(step_id)
        return Step(step_id, kind, fields, position, positions, edges), ok

    def field(self, spec: Field, raw: Any, where: Pointer, step_id: str, name: str) -> Any:
        kind = spec.kind
        if kind == "custom" and spec.parse is not None:
            return spec.parse(self, raw, where, step_id, name)
        handlers: dict[str, Callable[[], Any]] = {
            "template": lambda: self.template(raw, where, step_id, name),
            "endpoint": lambda: self.endpoint(raw, where, step_id),
            "options": lambda: self.options(raw, where, step_id, name),
            "duration": lambda: self.duration(raw, where, step_id, name, spec),
            "headers": lambda: self.headers(raw, where, step_id),
            "fields": lambda: self.field_tree(raw, where, step_id, name),
            "branches": lambda: self.branches(raw, where, step_id),
        }
        handler = handlers.get(kind)
        return handler() if handler is not None else self.scalar(raw, where, step_id, name, spec)

    def options(self, raw: Any, pointer: Pointer, step: str, name: str) -> dict[str, str] | None:
        """A map from one key the caller presses (0-9, * or #) to the step it leads to."""
        if not isinstance(raw, dict) or not raw:
            found = "no option" if isinstance(raw, dict) else value_kind(raw)
            self.error(
                f"expected keys (0-9, * or #) and the steps they lead to, found {found}",
                pointer,
                step,
                name,
            )
            return None
        out: dict[str, str] = {}
        for key, target in raw.items():
            text = str(key)
            where = (*pointer, key)
            if len(text) != 1 or text not in _KEYS or isinstance(key, bool):
                self.error(
                    f"an option is one key: 0-9, * or #, not {_shown(text)}",
                    where,
                    step,
                    f"{name}[{text}]" if len(text) == 1 else name,
                    key=True,
                )
                continue
            if text in out:
                self.error(f"option {text!r} is given twice", where, step, name, key=True)
                continue
            chosen = self.scalar(target, where, step, f"{name}[{text}]", Field("step"))
            if chosen is not None:
                out[text] = chosen
        return out if len(out) == len(raw) else None


def enum_spellings(spec: Field, name: str) -> dict[str, str]:
    """Every spelling the loader accepts for an ``enum`` field, with the choice it means: the
    choices as written, and for ``method`` also in lower case (exactly, ASCII: not ``Get``)."""
    spellings = {choice: choice for choice in spec.choices}
    if name == "method":
        spellings.update({choice.lower(): choice for choice in spec.choices})
    return spellings


class _ListTemplate:
    """A list whose items are templates or values, rendered item by item (duck-types Template)."""

    def __init__(self, items: tuple[Value | FieldTree, ...]) -> None:
        self.items = items

    def render(self, context: Any) -> list[Any]:
        return [
            item.render(context) if isinstance(item, Value) else item.build(context)
            for item in self.items
        ]


def _insert(root: dict[str, Any], parts: list[str], compiled: Value | FieldTree) -> str | None:
    """Put ``compiled`` at ``parts`` in the nested dict; a description of the conflict, or None."""
    node = root
    for depth, part in enumerate(parts):
        existing = node.get(part)
        prefix = ".".join(parts[: depth + 1]) if existing is not None else ""
        if depth == len(parts) - 1:
            if existing is None:
                node[part] = (
                    _tree_to_dict(compiled) if isinstance(compiled, FieldTree) else compiled
                )
                return None
            if isinstance(existing, dict) and isinstance(compiled, FieldTree):
                conflict = _merge(existing, _tree_to_dict(compiled))
                return None if conflict is None else repr(conflict)
            return f"another entry for {prefix!r}"
        if existing is None:
            node[part] = {}
        elif not isinstance(existing, dict):
            return f"the value of {prefix!r}"
        node = node[part]
    return None  # pragma: no cover - parts is never empty


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> str | None:
    for key, value in extra.items():
        existing = into.get(key)
        if existing is None:
            into[key] = value
        elif isinstance(existing, dict) and isinstance(value, dict):
            conflict = _merge(existing, value)
            if conflict:
                return f"{key}.{conflict}"
        else:
            return key
    return None


def _tree_depth(tree: FieldTree) -> int:
    """How deep a field tree nests (trees are built bounded, so this recursion is too)."""
    return 1 + max(
        (_tree_depth(item) for _, item in tree.entries if isinstance(item, FieldTree)), default=0
    )


def _shorten(text: str) -> str:
    """``repr`` of a name, cut to a readable length for a message."""
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _shown(raw: Any) -> str:
    """A document value as a message shows it: text cut to a readable length, anything else
    by its kind (a whole number may have a thousand digits)."""
    return _shorten(raw) if isinstance(raw, str) else value_kind(raw)


def _tree_to_dict(tree: FieldTree) -> dict[str, Any]:
    return {
        key: _tree_to_dict(item) if isinstance(item, FieldTree) else item
        for key, item in tree.entries
    }


def _dict_to_tree(node: dict[str, Any], backend: str) -> FieldTree:
    return FieldTree(
        tuple(
            (key, _dict_to_tree(item, backend) if isinstance(item, dict) else item)
            for key, item in node.items()
        ),
        backend,
    )


def _default_for(spec: Field, backend: str) -> Any:
    """The compiled default of an absent field (a field tree built by ``backend``)."""
    if spec.kind in ("fields", "values"):
        return FieldTree((), backend)
    if spec.kind == "headers":
        return ()
    if spec.kind == "template" and spec.default is not None:
        return Value(None, spec.default)
    return spec.default


def value_kind(value: Any) -> str:
    """What a document value is, for messages: ``null``, ``a boolean``, ``a number``, ``text``,
    ``a list`` or ``key/value entries``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "key/value entries"


def _whole(raw: Any) -> Any:
    """An integral float as the whole number it is (JSON does not tell 16000.0 from 16000);
    anything else as it is."""
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def _as_float(raw: float) -> float:
    """A number as a float; a whole number too large for one is infinite (out of any bounds)."""
    try:
        return float(raw)
    except OverflowError:
        return float("inf") if raw > 0 else float("-inf")


def _article(noun: str) -> str:
    """``a step``, ``an action``."""
    return f"{'an' if noun[:1] in tuple('aeiou') else 'a'} {noun}"


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "a number too large"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


@dataclass(frozen=True)
class UnknownKind:
    """The kind of a step whose type is unknown: a node of the graph that takes no input, keeps
    no record and makes no facts (its faults are reported; the checks beyond it still run)."""

    name: str = "unknown"
    fields: Mapping[str, Field] = dataclasses.field(default_factory=dict)
    takes_input: bool = False
    keeps_record: bool = False
    network: bool = False
    host: None = None

    def edge_facts(self, step: Step) -> Mapping[str, frozenset[str]]:
        """No facts."""
        return {}


UNKNOWN_KIND = UnknownKind()


def _edge_fields_of_every_kind() -> dict[str, Field]:
    """The edge fields of every kind by name (the first kind's declaration of a name)."""
    found: dict[str, Field] = {}
    for table in _STEP_FIELDS.values():
        for name, spec in table.items():
            if spec.is_edge:
                found.setdefault(name, spec)
    return found


#: Where a step of an unknown type may lead: its fields named as any kind's edge fields.
_ANY_EDGE_FIELDS = _edge_fields_of_every_kind()


def _step_id(raw: Any) -> str | None:
    return None if isinstance(raw, bool) or not isinstance(raw, (str, int)) else str(raw)


def _raw_edges(table: Mapping[str, Field], raw: Mapping[Any, Any]) -> tuple[tuple[str, str], ...]:
    """The edges the edge fields of ``raw`` (a step's document map) name plainly: a step id
    written as text or a whole number, per branch and per option too."""
    edges: list[tuple[str, str]] = []
    for name, spec in table.items():
        value = raw.get(name)
        if spec.kind == "step":
            target = _step_id(value)
            if target is not None:
                edges.append((name, target))
        elif spec.kind == "branches" and isinstance(value, list):
            for index, item in enumerate(value):
                target = _step_id(item.get("next")) if isinstance(item, dict) else None
                if target is not None:
                    edges.append((f"{name}[{index}]", target))
        elif spec.kind == "options" and isinstance(value, dict):
            for key, item in value.items():
                target = _step_id(item)
                if target is not None and not isinstance(key, bool):
                    edges.append((f"{name}[{key}]", target))
    return tuple(edges)


#: A stand-in for each templated value when the fixed text of an endpoint is checked (values
#: are percent-encoded, so any value reads as plain characters there).
_HOLE_STAND_IN = "0"


def _host_problem(host: str, offset: int) -> tuple[str, int] | None:
    """Why a host name cannot be looked up (an empty label, a label or name too long, a label
    starting or ending with '-'), with ``offset`` to point at; None for a good one or an IP."""
    if host.startswith("[") or ":" in host or not host:
        return None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253:
        return f"the host name is longer than 253 characters ({len(host)})", offset
    for label in labels:
        if not label:
            return f"the host name {_shorten(host)} has an empty label (two dots)", offset
        if len(label) > 63:
            return f"a label of the host name is longer than 63 characters ({len(label)})", offset
        if label.startswith("-") or label.endswith("-"):
            return f"the host name label {_shorten(label)} starts or ends with '-'", offset
    return None


def _fixed_text_problem(template: Template) -> tuple[str, int] | None:
    """Why the sender could not read the endpoint's URL whatever its values are (a control
    character, a URL too long), and the offset to point at; None when it can."""
    source = template.source
    for offset, char in enumerate(source):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"the control character {char!r} cannot be sent in a URL", offset
    sample = "".join(
        part if isinstance(part, str) else _HOLE_STAND_IN for part in template.tree.parts
    )
    try:
        url_origin(sample)
    except ValueError as error:
        return str(error), 0
    return None


def build_steps(
    document: Document, engine: Engine, http_hosts: frozenset[str] = frozenset()
) -> tuple[dict[str, Step], StepBuilder]:
    """Check and compile the ``steps`` of a flow document (the caller checks the top level).

    Every step is a node of the returned graph, also one with faults (like a compiler, so the
    graph's checks still find the faults beyond it): its id is then in ``builder.broken``, its
    fields hold None where a field was wrong, and its edges are those of its edge fields that
    name a step plainly; a step of an unknown type has :data:`UNKNOWN_KIND`.
    """
    builder = StepBuilder(document, engine)
    builder.http_hosts = frozenset(host.lower().strip("[]") for host in http_hosts)
    steps: dict[str, Step] = {}
    raw_steps = document.data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        builder.error("a flow needs steps: a map of step id to step", ("steps",))
        return steps, builder
    for key, raw in raw_steps.items():
        step_id = str(key)
        if step_id in steps:
            builder.error(
                f"step id {step_id!r} is given twice (as a number and as text)",
                ("steps", key),
                step_id,
                key=True,
            )
            continue
        step, ok = builder.step(step_id, raw, ("steps", key))
        steps[step_id] = step
        if not ok:
            builder.broken.add(step_id)
    return steps, builder


def in_document_order(findings: list[Finding]) -> list[Finding]:
    """The findings sorted by line and column (errors first at one place), each once."""
    seen: set[tuple[int, int, str, str]] = set()
    out = []
    for finding in sorted(
        findings,
        key=lambda item: (
            item.position.line or 0,
            item.position.column or 0,
            item.severity != "error",
        ),
    ):
        key = (
            finding.position.line or 0,
            finding.position.column or 0,
            finding.severity,
            finding.message,
        )
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out


def duplicate_findings(document: Document) -> list[Finding]:
    """Every duplicate key of a document read with ``keep_duplicates`` (the first named), as
    findings."""
    return [
        Finding(message, position).with_caret(document.lines)
        for message, position in document.duplicates
    ]
