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
    "load_workflow",
    "load_workflow_text",
]

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlang.automations.fields import ACTION_COMMON, ACTION_FIELDS, E164, FORMATS
from flowlang.automations.formats import convert
from flowlang.automations.triggers import RECORDING_UPLOADED, TRIGGERS
from flowlang.engine import Engine, Template
from flowlang.errors import SourcePosition
from flowlang.expr.syntax import KEYWORDS, NAME_PATTERN
from flowlang.flow.build import StepBuilder, TemplateUse
from flowlang.flow.conditions import compile_rows
from flowlang.flow.fields import Field
from flowlang.flow.model import FieldTree, Finding, FlowDocumentError, Value, compiled_or_raise
from flowlang.flow.source import (
    Document,
    Pointer,
    read_document_file,
    read_document_text,
    text_not_path_hint,
)
from flowlang.http_rules import origin_of

_TOP_LEVEL = {"workflow", "trigger", "description", "conditions", "expression", "actions"}
#: Roots a workflow's templates may read.
_ROOTS = ("event", "actions", "secrets")
#: Fields of each action type where a secret may be used (what goes to the provider).
_SECRET_FIELDS = {
    "api_request": ("endpoint", "headers", "values"),
    "send_sms": ("auth",),
    "slack_notification": ("token",),
    "transcribe_recording": ("headers",),
}


@dataclass(frozen=True)
class Formatted:
    """A value converted to an api_request format: ``number``, ``string``, ``boolean``, ``auto``."""

    key: str
    format: str
    value: Value

    def render(self, context: Mapping[str, Any]) -> Any:
        return convert(self.key, self.format, self.value.render(context))


@dataclass(frozen=True)
class Action:
    """One compiled action: name, type, compiled fields, and where each field was written."""

    name: str
    type: str
    fields: Mapping[str, Any]
    position: SourcePosition
    field_positions: Mapping[str, SourcePosition] = field(default_factory=dict)


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
        return super().field(spec, raw, where, step_id, name)

    def values(self, raw: Any, pointer: Pointer, owner: str) -> FieldTree | None:
        """``[{key, value, format}]``: the body of an api_request; dotted keys nest."""
        items = self.entries(raw, pointer, owner, "values", "value", {"key", "value", "format"})
        if items is None:
            return None
        entries: list[tuple[str, Value | FieldTree, Pointer]] = []
        for where, label, item in items:
            key = item.get("key")
            if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key) == "":
                self.error("a value needs a key (text)", where, owner, label)
                continue
            fmt = item.get("format", "auto")
            if fmt not in FORMATS:
                hint = self.hint(fmt, FORMATS)
                self.error(
                    f"format must be one of {', '.join(FORMATS)}, not {fmt!r}{hint}",
                    (*where, "format"),
                    owner,
                    label,
                )
                continue
            if "value" not in item:
                self.error("a value needs a value", where, owner, label)
                continue
            compiled = self.value(item["value"], (*where, "value"), owner, f"{label}.value")
            if isinstance(compiled, Value):
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


def _reference_findings(
    builder: WorkflowBuilder, trigger: str, actions: list[Action], uses: list[TemplateUse]
) -> list[Finding]:
    """Reads of roots a workflow does not have, of properties its trigger does not carry, of
    results of actions that do not run before, and secrets outside provider credentials."""
    order = {action.name: index for index, action in enumerate(actions)}
    types = {action.name: action.type for action in actions}
    known = TRIGGERS.get(trigger)
    findings = []
    for use in uses:
        for reference in use.template.references:
            path = reference.path
            position = SourcePosition(
                use.position.filename,
                use.position.line,
                use.position.column + reference.start,
                use.step,
                use.field,
            )
            root = path[0]
            problem: tuple[str, str] | None = None
            if root not in _ROOTS:
                problem = (
                    f"a workflow reads only {', '.join(_ROOTS)}; {root!r} is not there",
                    "error",
                )
            elif root == "secrets":
                owner_type = types.get(use.step)
                allowed = _SECRET_FIELDS.get(owner_type or "", ())
                if not use.field.startswith(allowed) or not allowed:
                    problem = (
                        "secrets may only be used where the provider needs them: an api_request's "
                        "endpoint, headers and values, send_sms auth, the slack token, a "
                        "transcription's headers",
                        "error",
                    )
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
                if use.step == "<conditions>":
                    problem = (
                        "conditions run before any action: actions are not available here",
                        "error",
                    )
                elif not isinstance(target, str) or target not in order:
                    problem = (
                        f"there is no action {target!r}{builder.hint(target, order)}",
                        "error",
                    )
                elif order[target] >= order.get(use.step, -1):
                    problem = (f"action {target!r} does not run before this one", "error")
            if problem is not None:
                findings.append(Finding(f"{reference}: {problem[0]}", position, problem[1]))
    return findings


def _numbers_ok(
    builder: WorkflowBuilder, fields: Mapping[str, Any], where: Pointer, owner: str
) -> bool:
    """Constant SMS numbers are checked now (templated ones when the action runs)."""
    ok = True
    for name in ("sender", "recipient"):
        template = fields.get(name)
        if isinstance(template, Template) and not template.tree.holes:
            number = str(template.render({})).strip()
            if not E164.match(number):
                builder.error(
                    f"{name} must be an E.164 number such as +14155550100, not {number!r}",
                    (*where, name),
                    owner,
                    name,
                )
                ok = False
    return ok


def _recording_origin_ok(
    builder: WorkflowBuilder, fields: dict[str, Any], where: Pointer, owner: str
) -> bool:
    """A transcription's headers (credentials) go only to a fixed origin: ``recording_origin``
    is plain ``https://host[:port]`` text, required with headers. Kept as an origin string."""
    template = fields.get("recording_origin")
    if template is None:
        if fields.get("headers"):
            builder.error(
                "headers for the recording server need recording_origin (the fixed "
                "https://host they may be sent to)",
                (*where, "headers"),
                owner,
                "headers",
            )
            return False
        return True
    text = str(template.render({})) if not template.tree.holes else ""
    try:
        origin = origin_of(text) if text else None
    except ValueError as error:
        origin, problem = None, str(error)
    else:
        problem = "it must be fixed text (no <<...>>)"
    if origin is None or text.rstrip("/").count("/") != 2:
        builder.error(
            f"recording_origin is https://host[:port] only: {problem}"
            if origin is None
            else "recording_origin is https://host[:port] only, without a path",
            (*where, "recording_origin"),
            owner,
            "recording_origin",
        )
        return False
    fields["recording_origin"] = origin
    return True


def check_workflow(
    path: str | os.PathLike[str] | Document, *, engine: Engine | None = None
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    """Load and check the workflow in file ``path`` (YAML or JSON; a str is always a path);
    return it (None when it has errors) and every finding."""
    return _check_workflow(read_document_file(path), engine or Engine())


def check_workflow_text(
    text: str, *, name: str | None = None, engine: Engine | None = None
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    """:func:`check_workflow` for a document given as text; ``name`` labels it in messages."""
    return _check_workflow(read_document_text(text, name), engine or Engine())


def _check_workflow(
    document: Document, engine: Engine
) -> tuple[CompiledWorkflow | None, list[Finding]]:
    builder = WorkflowBuilder(document, engine)
    data = document.data
    if not isinstance(data, dict):
        builder.error(
            "a workflow document is key/value fields (workflow, trigger, actions)"
            + text_not_path_hint(data),
            (),
        )
        return None, builder.findings
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
    trigger = data.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        builder.error(
            "a workflow needs a trigger: the event type it runs on",
            ("trigger",) if "trigger" in data else (),
        )
        trigger = ""
    condition: Callable[[Mapping[str, Any]], Any] | None = None
    if "conditions" in data and "expression" in data:
        builder.error("give conditions or expression, not both", ("expression",), key=True)
    elif "conditions" in data:
        rows = builder.rows(data["conditions"], ("conditions",), "<conditions>", "conditions")
        if rows is not None:
            condition = compile_rows(rows, engine)
            if condition is None:  # pragma: no cover - every row form lowers
                builder.error("these conditions cannot be compiled", ("conditions",))
    elif "expression" in data:
        template = builder.template(
            data["expression"], ("expression",), "<conditions>", "expression"
        )
        if template is not None:
            condition = template.render
    actions: list[Action] = []
    raw_actions = data.get("actions")
    items = builder.entries(raw_actions, ("actions",), "<workflow>", "actions", "action", None)
    seen: set[str] = set()
    for where, _, item in items or []:
        owner = str(item.get("name", f"actions[{where[-1]}]"))
        found = builder.typed_fields(owner, item, where, ACTION_FIELDS, "action", ACTION_COMMON)
        if found is None:
            continue
        action_type, fields, positions = found
        if owner in seen:
            builder.error(f"action name {owner!r} is used twice", (*where, "name"), owner, "name")
            continue
        seen.add(owner)
        if action_type == "transcribe_recording" and trigger != RECORDING_UPLOADED:
            builder.error(
                f"transcribe_recording needs the trigger {RECORDING_UPLOADED!r}, not {trigger!r}",
                (*where, "type"),
                owner,
                "type",
            )
            continue
        if action_type == "send_sms" and not _numbers_ok(builder, fields, where, owner):
            continue
        if action_type == "transcribe_recording" and not _recording_origin_ok(
            builder, fields, where, owner
        ):
            continue
        actions.append(
            Action(owner, action_type, fields, document.position(where, step=owner), positions)
        )
    findings = list(builder.findings)
    if not findings:
        findings = [
            finding.with_caret(document.lines)
            for finding in _reference_findings(builder, trigger, actions, builder.templates)
        ]
    findings += builder.warnings
    if any(finding.severity == "error" for finding in findings):
        return None, findings
    fingerprint = document.fingerprint
    workflow = CompiledWorkflow(
        str(name),
        trigger,
        condition,
        tuple(actions),
        document.text,
        document.filename,
        fingerprint,
        tuple(findings),
        document.position(("workflow",)),
    )
    return workflow, findings


def load_workflow(
    path: str | os.PathLike[str] | Document, *, engine: Engine | None = None
) -> CompiledWorkflow:
    """Parse, check and compile the workflow in file ``path`` (YAML or JSON; a str is always a
    path; see :func:`load_workflow_text` for a document's text).

    Raises FlowDocumentError listing every problem, each with file:line:column.
    """
    return compiled_or_raise(check_workflow(path, engine=engine))


def load_workflow_text(
    text: str, *, name: str | None = None, engine: Engine | None = None
) -> CompiledWorkflow:
    """:func:`load_workflow` for a document given as text; ``name`` labels it in messages."""
    return compiled_or_raise(check_workflow_text(text, name=name, engine=engine))


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
