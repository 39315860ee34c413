"""Workflow: load a workflow automation document, check it, and compile it once.

A workflow has a trigger (an event type), optional conditions (rows that must all hold, or one
expression) evaluated by the compiled core, and actions that run in order. Templates see
``event`` (the event: ``event.id``, ``event.type``, ``event.properties.*``), ``actions``
(``actions.<name>.result`` of earlier actions) and ``secrets``.
"""

from __future__ import annotations

__all__ = [
    "Action",
    "CompiledWorkflow",
    "check_unique_names",
    "check_workflow",
    "check_workflow_text",
    "is_workflow_document",
    "load_workflow",
    "load_workflow_text",
]

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlang.automations.formats import FORMATS, convert
from flowlang.automations.kinds.base import COMMON_FIELDS, Action, ActionKind
from flowlang.automations.kinds.registry import ACTION_KINDS
from flowlang.automations.triggers import TRIGGERS
from flowlang.engine import Engine, Template
from flowlang.errors import SourcePosition
from flowlang.expr.syntax import KEYWORDS, NAME_PATTERN
from flowlang.flow.build import (
    StepBuilder,
    TemplateUse,
    duplicate_findings,
    in_document_order,
    value_kind,
)
from flowlang.flow.conditions import compile_rows
from flowlang.flow.fields import Field
from flowlang.flow.model import (
    FieldTree,
    Finding,
    FlowDocumentError,
    Row,
    Value,
    compiled_or_raise,
)
from flowlang.flow.source import (
    Document,
    Pointer,
    read_document_file,
    read_document_text,
    text_not_path_hint,
)

_TOP_LEVEL = {"workflow", "trigger", "description", "conditions", "expression", "actions"}
#: Roots a workflow's templates may read.
_ROOTS = ("event", "actions", "secrets")
#: The owner named in the findings of the conditions (no action has this name).
_CONDITIONS = "<conditions>"
#: The field table of each action kind: its own fields after the common ones.
_TABLES: Mapping[str, Mapping[str, Field]] = {
    name: {**COMMON_FIELDS, **kind.fields} for name, kind in ACTION_KINDS.items()
}


def is_workflow_document(data: Any) -> bool:
    """Whether a parsed document is a workflow rather than a flow: it names a ``workflow``, or
    it has a workflow's ``trigger`` or ``actions`` and none of a flow's ``steps`` or ``start``
    (a workflow that forgot its name is still checked as a workflow)."""
    if not isinstance(data, dict):
        return False
    if "workflow" in data:
        return True
    return ("trigger" in data or "actions" in data) and not ("steps" in data or "start" in data)


@dataclass(frozen=True)
class Formatted:
    """A value converted to an api_request format: ``number``, ``string``, ``boolean``, ``auto``."""

    key: str
    format: str
    value: Value

    def render(self, context: Mapping[str, Any]) -> Any:
        return convert(self.key, self.format, self.value.render(context))


@dataclass(frozen=True)
class CompiledWorkflow:
    """A loaded, checked and compiled workflow: immutable, shared by every dispatch."""

    name: str
    trigger: str
    condition: Callable[[Mapping[str, Any]], Any] | None
    actions: tuple[Action, ...]
    source: str
    filename: str | None
    fingerprint: str
    warnings: tuple[Finding, ...] = ()
    #: Where the name is written (``workflow: <name>``).
    position: SourcePosition | None = None
    #: The conditions as written, rows or one expression (``condition`` is what runs): what
    #: condition coverage (flowlang.testing.conditions) evaluates one by one.
    rows: tuple[Row, ...] = field(default=(), compare=False, repr=False)
    expression: Template | None = field(default=None, compare=False, repr=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (already of this trigger) meets the conditions."""
        return self.condition is None or bool(self.condition({"event": event}))


class WorkflowBuilder(StepBuilder):
    """The step builder, with the field kinds of actions: names, values lists and SMS auth."""

    def field(self, spec: Field, raw: Any, where: Pointer, step_id: str, name: str) -> Any:
        if spec.kind == "name":
            if not isinstance(raw, str) or not NAME_PATTERN.fullmatch(raw) or raw in KEYWORDS:
                self.error(
                    f"an action name is a plain name (letters, digits, _ and -), not {raw!r}",
                    where,
                    step_id,
                    name,
                )
                return None
            return raw
        if spec.kind == "values":
            return self.values(raw, where, step_id)
        if spec.kind == "auth":
            return self.auth(raw, where, step_id)
        if spec.kind == "int" and isinstance(raw, float) and raw.is_integer():
            # 16000.0 is the whole number 16000 (JSON, and JSON Schema's integer, agree).
            raw = int(raw)
        return super().field(spec, raw, where, step_id, name)

    def action_fields(
        self, owner: str, raw: dict[str, Any], pointer: Pointer
    ) -> tuple[ActionKind | None, dict[str, Any], dict[str, SourcePosition]]:
        """Check and compile the fields of one action, each on its own: the action's kind
        (None when its type is unknown: then only the common fields are checked), its compiled
        fields (None for a field with errors) and where each was written."""
        type_name = raw.get("type")
        kind = ACTION_KINDS.get(type_name) if isinstance(type_name, str) else None
        if kind is None:
            hint = (
                self.hint(type_name, ACTION_KINDS) or f"; expected one of {', '.join(ACTION_KINDS)}"
            )
            where = (*pointer, "type") if "type" in raw else pointer
            self.error(f"unknown action type {type_name!r}{hint}", where, owner, "type")
            table = COMMON_FIELDS
        else:
            table = _TABLES[kind.name]
            self.unknown_fields(raw, {"type", *table}, pointer, owner, _a(kind.name, "action"))
        fields: dict[str, Any] = {}
        positions: dict[str, SourcePosition] = {}
        for name, spec in table.items():
            where = (*pointer, name)
            positions[name] = self.document.position(
                where if name in raw else pointer, step=owner, field_name=name
            )
            if name in raw:
                fields[name] = self.field(spec, raw[name], where, owner, name)
                continue
            if spec.required:
                noun = _a(kind.name if kind is not None else "", "action")
                self.error(f"{noun} needs {name}", pointer, owner, name, key=True)
            fields[name] = self.default(spec)
        return kind, fields, positions

    def default(self, spec: Field) -> Any:
        """The compiled value of an absent field: its default."""
        if spec.kind in ("fields", "values"):
            return FieldTree((), self.engine.backend)
        if spec.kind == "headers":
            return ()
        if spec.kind == "template" and spec.default is not None:
            return Value(None, spec.default)
        return spec.default

    def values(self, raw: Any, pointer: Pointer, owner: str) -> FieldTree | None:
        """``[{key, value, format}]``: the body of an api_request; dotted keys nest."""
        items = self.entries(raw, pointer, owner, "values", "value", {"key", "value", "format"})
        if items is None:
            return None
        entries: list[tuple[str, Value | FieldTree, Pointer]] = []
        for where, label, item in items:
            # The key, the format and the value are each checked: one fault hides no other.
            key = item.get("key")
            sound = True
            if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key) == "":
                self.error("a value needs a key (text)", where, owner, label)
                sound = False
            fmt = item.get("format", "auto")
            if fmt not in FORMATS:
                hint = self.hint(fmt, FORMATS)
                self.error(
                    f"format must be one of {', '.join(FORMATS)}, not {fmt!r}{hint}",
                    (*where, "format"),
                    owner,
                    label,
                )
                sound = False
            if "value" not in item:
                self.error("a value needs a value", where, owner, label)
                continue
            compiled = self.value(item["value"], (*where, "value"), owner, f"{label}.value")
            if isinstance(compiled, Value):
                if sound:
                    entries.append(
                        (str(key), Value(Formatted(str(key), fmt, compiled)), (*where, "key"))
                    )
            elif compiled is not None:
                self.error(
                    "a value is text or a scalar, not key/value entries", where, owner, label
                )
        if len(entries) != len(raw):
            return None
        return self.nest(entries, owner, "values")

    def auth(self, raw: Any, pointer: Pointer, owner: str) -> dict[str, Template] | None:
        """``{key_id, key_secret}`` for the SMS provider's basic authentication."""
        if not isinstance(raw, dict):
            self.error("auth is key_id and key_secret", pointer, owner, "auth")
            return None
        self.unknown_fields(raw, {"key_id", "key_secret"}, pointer, owner, "auth")
        out = {}
        for part in ("key_id", "key_secret"):
            if part not in raw:
                self.error(f"auth needs {part}", pointer, owner, "auth", key=True)
                continue
            template = self.template(raw[part], (*pointer, part), owner, f"auth.{part}")
            if template is not None:
                out[part] = template
        return out if len(out) == 2 else None


def _secret_problem(kind: ActionKind | None, field: str) -> tuple[str, str] | None:
    """Why a template of ``field`` (of an action of ``kind``, None: the conditions) may not read
    ``secrets``, or None: only the kind's secret fields go to the provider."""
    allowed = kind.secret_fields if kind is not None else ()
    if allowed and field.split(".", 1)[0].split("[", 1)[0] in allowed:
        return None
    where = (
        f"in a {kind.name} action: {_spoken(allowed)}"
        if kind is not None and allowed
        else "in the fields that go to a provider"
    )
    return f"secrets may only be used where the provider needs them ({where})", "error"


def _a(*words: str) -> str:
    """``a send_sms action``, ``an api_request action``: the words after the right article."""
    phrase = " ".join(word for word in words if word)
    return f"{'an' if phrase[:1] in tuple('aeiou') else 'a'} {phrase}"


def _spoken(names: tuple[str, ...]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _reference_findings(
    builder: WorkflowBuilder,
    trigger: str | None,
    names: Mapping[str, int],
    kinds: Mapping[int, ActionKind | None],
    uses: list[TemplateUse],
) -> list[Finding]:
    """Reads of roots a workflow does not have, of properties its trigger does not carry, of
    results of actions that do not run before, and secrets outside provider credentials.

    ``names``: the place in the list of every action by its name (the first of a name);
    ``kinds``: the kind of every action by its place (None: its type is unknown), whether or
    not the action has errors of its own."""
    known = TRIGGERS.get(trigger) if trigger is not None else None
    findings = []
    for use in uses:
        for reference in use.template.references:
            path = reference.path
            position, width = use.place(reference.start, reference.end)
            root = path[0]
            # The place of the action the template is in (None: the conditions).
            place = use.pointer[1] if use.pointer[:1] == ("actions",) else None
            problem: tuple[str, str] | None = None
            if root not in _ROOTS:
                problem = (
                    f"a workflow reads only {', '.join(_ROOTS)}; {root!r} is not there",
                    "error",
                )
            elif root == "secrets":
                kind = kinds.get(place) if isinstance(place, int) else None
                problem = _secret_problem(kind, use.field)
            elif (
                root == "event" and len(path) >= 3 and path[1] == "properties" and known is not None
            ):
                prop = path[2]
                if isinstance(prop, str) and prop not in known:
                    problem = (
                        f"trigger {trigger!r} does not carry property {prop!r}"
                        f"{builder.hint(prop, sorted(known))}",
                        "warning",
                    )
            elif root == "actions" and len(path) >= 2:
                target = path[1]
                if not isinstance(place, int):
                    problem = (
                        "conditions run before any action: actions are not available here",
                        "error",
                    )
                elif not isinstance(target, str) or target not in names:
                    problem = (
                        f"there is no action {target!r}{builder.hint(target, names)}",
                        "error",
                    )
                elif names[target] >= place:
                    problem = (f"action {target!r} does not run before this one", "error")
            if problem is not None:
                findings.append(
                    Finding(f"{reference}: {problem[0]}", position, problem[1], width=width)
                )
    return findings


def check_workflow(
    path: str | os.PathLike[str] | Document,
    *,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    """Load and check the workflow in file ``path`` (YAML or JSON; a str is always a path);
    return it (None when it has errors) and every finding.

    ``allow_hosts``: hosts an endpoint may reach with plain http (the run's ``allow_hosts``);
    any other ``http://`` endpoint is an error, as in flows."""
    return _check_workflow(
        read_document_file(path, keep_duplicates=True), engine or Engine(), allow_hosts
    )


def check_workflow_text(
    text: str,
    *,
    name: str | None = None,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    """:func:`check_workflow` for a document given as text; ``name`` labels it in messages."""
    return _check_workflow(
        read_document_text(text, name, keep_duplicates=True), engine or Engine(), allow_hosts
    )


def _check_workflow(
    document: Document, engine: Engine, allow_hosts: Iterable[str]
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    """Every check runs, whatever the others found: one fault never hides another."""
    builder = WorkflowBuilder(document, engine)
    builder.http_hosts = frozenset(host.lower().strip("[]") for host in allow_hosts)
    data = document.data
    if not isinstance(data, dict):
        builder.error(
            "a workflow document is key/value fields (workflow, trigger, actions)"
            + text_not_path_hint(data),
            (),
        )
        return None, in_document_order([*duplicate_findings(document), *builder.findings])
    for key in data:
        if key not in _TOP_LEVEL:
            builder.error(
                f"unknown top-level field {str(key)!r}{builder.hint(key, sorted(_TOP_LEVEL))}",
                (key,),
                key=True,
            )
    name = data.get("workflow")
    if not isinstance(name, str) or not name:
        builder.error(
            "a workflow needs a name: workflow: <name>", ("workflow",) if "workflow" in data else ()
        )
    if "description" in data and not isinstance(data["description"], str):
        builder.error(
            f"a description is text, not {value_kind(data['description'])}", ("description",)
        )
    trigger = data.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        builder.error(
            "a workflow needs a trigger: the event type it runs on",
            ("trigger",) if "trigger" in data else (),
        )
        trigger = None
    elif trigger not in TRIGGERS:
        _unknown_trigger(builder, trigger)
    condition, rows, template = _condition(builder, data)
    actions, names, kinds = _actions(builder, data, trigger)
    references = _reference_findings(builder, trigger, names, kinds, builder.templates)
    findings = [
        *duplicate_findings(document),
        *builder.findings,
        *(finding.with_caret(document.lines) for finding in references),
        *builder.warnings,
    ]
    findings = in_document_order(findings)
    if trigger is None or any(finding.severity == "error" for finding in findings):
        return None, findings
    workflow = CompiledWorkflow(
        str(name),
        trigger,
        condition,
        tuple(actions),
        document.text,
        document.filename,
        document.fingerprint,
        tuple(findings),
        document.position(("workflow",)),
        rows or (),
        template,
    )
    return workflow, findings


def _unknown_trigger(builder: WorkflowBuilder, trigger: str) -> None:
    """A trigger close to a known one is most likely misspelled: a warning with the known one.

    Events are dispatched by their type exactly and an application may send events of its own
    types, so a trigger that is not known is not an error; one close to a known trigger would
    never run where that one was meant, and its ``event.properties`` go unchecked."""
    hint = builder.hint(trigger, TRIGGERS)
    if hint:
        builder.warnings.append(
            Finding(
                f"trigger {trigger!r} is not a known event type{hint} (the workflow runs only "
                "on events of exactly this type; its event.properties are not checked)",
                builder.document.position(("trigger",)),
                "warning",
            ).with_caret(builder.document.lines)
        )


def _condition(
    builder: WorkflowBuilder, data: dict[str, Any]
) -> tuple[Callable[[Mapping[str, Any]], Any] | None, tuple[Row, ...] | None, Template | None]:
    """The compiled conditions (None when there are none) and the rows or expression they were
    compiled from; both forms are checked even when a document (wrongly) gives both."""
    condition: Callable[[Mapping[str, Any]], Any] | None = None
    rows: tuple[Row, ...] | None = None
    template: Template | None = None
    both = "conditions" in data and "expression" in data
    if both:
        builder.error("give conditions or expression, not both", ("expression",), key=True)
    if "conditions" in data:
        rows = builder.rows(data["conditions"], ("conditions",), _CONDITIONS, "conditions")
        if rows is not None:
            # As a flow's branch: one compiled evaluator, or (a row the core cannot lower,
            # such as a list holding a template) each row tested on its own, same semantics.
            condition = compile_rows(rows, builder.engine) or _each_row(rows)
    if "expression" in data:
        template = builder.template(data["expression"], ("expression",), _CONDITIONS, "expression")
        if template is not None:
            condition = template.render
    return (None if both else condition), rows, template


def _each_row(rows: tuple[Row, ...]) -> Callable[[Mapping[str, Any]], bool]:
    """Whether every row holds, each tested on its own (as a flow's branch without a test)."""

    def every_row_holds(scope: Mapping[str, Any]) -> bool:
        return all(row.holds(scope)[0] for row in rows)

    return every_row_holds


def _actions(
    builder: WorkflowBuilder, data: dict[str, Any], trigger: str | None
) -> tuple[list[Action], dict[str, int], dict[int, ActionKind | None]]:
    """The compiled actions (those without errors), the place of every action by its name (the
    first of a name) and the kind of every action by its place (None: an unknown type), for the
    checks of the templates.

    ``trigger``: None when the workflow has none (actions are not checked against it then)."""
    document = builder.document
    actions: list[Action] = []
    names: dict[str, int] = {}
    kinds: dict[int, ActionKind | None] = {}
    items = builder.entries(
        data.get("actions"), ("actions",), "<workflow>", "actions", "action", None
    )
    for where, _, item in items or []:
        # The raw place in the list (a template's pointer holds it), not the place among the
        # maps: an item that is not a map must not shift the later ones.
        index = int(where[-1])
        owner = str(item.get("name", f"actions[{index}]"))
        before = len(builder.findings)
        kind, fields, positions = builder.action_fields(owner, item, where)
        kinds[index] = kind
        if owner in names:
            builder.error(f"action name {owner!r} is used twice", (*where, "name"), owner, "name")
        else:
            names[owner] = index
        if kind is None:
            continue
        if kind.trigger is not None and trigger is not None and trigger != kind.trigger:
            builder.error(
                f"{kind.name} needs the trigger {kind.trigger!r}, not {trigger!r}",
                (*where, "type"),
                owner,
                "type",
            )
        if kind.check is not None:
            kind.check(builder, fields, item, where, owner)
        if len(builder.findings) == before:
            actions.append(
                Action(owner, kind, fields, document.position(where, step=owner), positions)
            )
    return actions, names, kinds


def load_workflow(
    path: str | os.PathLike[str] | Document,
    *,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> CompiledWorkflow:
    """Parse, check and compile the workflow in file ``path`` (YAML or JSON; a str is always a
    path; see :func:`load_workflow_text` for a document's text; ``allow_hosts`` as for
    :func:`check_workflow`).

    Raises FlowDocumentError listing every problem, each with file:line:column.
    """
    return compiled_or_raise(check_workflow(path, engine=engine, allow_hosts=allow_hosts))


def load_workflow_text(
    text: str,
    *,
    name: str | None = None,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> CompiledWorkflow:
    """:func:`load_workflow` for a document given as text; ``name`` labels it in messages."""
    return compiled_or_raise(
        check_workflow_text(text, name=name, engine=engine, allow_hosts=allow_hosts)
    )


def _where(position: SourcePosition | None) -> str:
    if position is None:
        return "<document>"
    return f"{position.filename or '<document>'}:{position.line}:{position.column}"


def check_unique_names(workflows: Iterable[CompiledWorkflow]) -> None:
    """FlowDocumentError when two workflows of one set share a name (they would share
    idempotency keys, and a receiver that honours them would keep only the first)."""
    first: dict[str, CompiledWorkflow] = {}
    findings = []
    for workflow in workflows:
        earlier = first.setdefault(workflow.name, workflow)
        if earlier is not workflow:
            findings.append(
                Finding(
                    f"workflow name {workflow.name!r} is used twice: at {_where(earlier.position)}"
                    f" and at {_where(workflow.position)}; names must be unique (they make "
                    "the idempotency keys)",
                    workflow.position or SourcePosition(workflow.filename),
                )
            )
    if findings:
        raise FlowDocumentError(findings)
