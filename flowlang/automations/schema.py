"""Schema: the JSON Schema of workflow documents, generated from the action kinds' field tables.

The shipped file ``flowlang/automations/workflow.schema.json`` is this function's output; a test
keeps it current. It is built from the declarations the loader reads (the action kinds, their
fields and rules across fields, the condition operators, the value formats, the known
triggers), so the two cannot disagree; ``flowlang check`` goes further (templates, references
between actions, duplicate names).
"""

from __future__ import annotations

__all__ = ["SCHEMA_FILE", "workflow_schema", "write_schema"]

from pathlib import Path
from typing import Any

from flowlang.automations.formats import FORMATS
from flowlang.automations.kinds.base import COMMON_FIELDS
from flowlang.automations.kinds.registry import ACTION_KINDS
from flowlang.automations.triggers import TRIGGERS
from flowlang.expr.syntax import KEYWORDS, NAME_PATTERN
from flowlang.flow.build import MAX_FIELD_DEPTH
from flowlang.flow.fields import CONDITION_OPERATORS, Field
from flowlang.flow.schema import TEXT, annotated, condition_row, field_schema, schema_text
from flowlang.http_rules import MAX_HEADER_VALUE

SCHEMA_FILE = Path(__file__).with_name("workflow.schema.json")
#: A dotted key (``call.waited``): no empty part.
_DOTTED_KEY = r"^[^.]+(\.[^.]+)*$"
#: The dotted key of a body entry: no empty part, at most MAX_FIELD_DEPTH parts.
_ENTRY_KEY = rf"^[^.]+(\.[^.]+){{0,{MAX_FIELD_DEPTH - 1}}}$"
#: An action's name: NAME_PATTERN, whole (``$`` alone lets Python's re take "a\n").
_ACTION_NAME = f"^{NAME_PATTERN.pattern}$(?!\n)"
#: What a list in a value may hold: scalars, lists, and maps whose keys are dotted keys (the
#: loader nests them as it nests the entries of a field); ``$defs/listed`` of the schema.
_LISTED = {
    "type": ["string", "number", "boolean", "null", "array", "object"],
    "items": {"$ref": "#/$defs/listed"},
    "propertyNames": {"pattern": _DOTTED_KEY},
    "additionalProperties": {"$ref": "#/$defs/listed"},
}
#: A value a template or a condition may hold: anything but key/value entries.
_SCALAR_OR_LIST = {
    "type": ["string", "number", "boolean", "null", "array"],
    "items": {"$ref": "#/$defs/listed"},
}
#: A header value written as fixed text (no ``<<``): printable ASCII and tab only, as the
#: loader checks it (flowlang.http_rules.header_value_problem); a template is checked when sent.
_HEADER_VALUE = {
    "type": ["string", "number"],
    "anyOf": [
        {"type": "number"},
        {"pattern": "<<"},
        {"pattern": "^[\t\x20-\x7e]*$", "maxLength": MAX_HEADER_VALUE},
    ],
}


def _values_schema() -> dict[str, Any]:
    """``values``: the body entries of an api_request, each a key, a value and a format."""
    entry = {
        "type": "object",
        "required": ["key", "value"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": ["string", "integer"], "minLength": 1, "pattern": _ENTRY_KEY},
            "value": dict(_SCALAR_OR_LIST),
            "format": {"enum": list(FORMATS), "default": "auto"},
        },
    }
    return {"type": "array", "minItems": 1, "items": entry}


def _action_field_schema(spec: Field, name: str) -> dict[str, Any]:
    """The schema of one field of an action: the field kinds of actions, else the common
    ones."""
    if spec.kind == "name":
        return annotated(
            {
                "type": "string",
                "pattern": _ACTION_NAME,
                "not": {"enum": sorted(KEYWORDS)},
            },
            spec,
        )
    if spec.kind == "values":
        return annotated(_values_schema(), spec)
    if spec.kind == "auth":
        parts = ("key_id", "key_secret")
        return annotated(
            {
                "type": "object",
                "required": list(parts),
                "additionalProperties": False,
                "properties": {part: dict(TEXT) for part in parts},
            },
            spec,
        )
    schema = field_schema(spec, name)
    if spec.kind == "headers":
        schema["additionalProperties"] = dict(_HEADER_VALUE)
    return schema


def _condition_schema() -> dict[str, Any]:
    """One condition row; an operator that takes a value needs one, the others take none."""
    row = condition_row()
    row["properties"] = {
        **row["properties"],
        "property": dict(_SCALAR_OR_LIST),
        "value": dict(_SCALAR_OR_LIST),
    }
    takes = [name for name, needs in CONDITION_OPERATORS.items() if needs]
    takes_none = [name for name, needs in CONDITION_OPERATORS.items() if not needs]
    row["allOf"] = [
        {
            "if": {"properties": {"operator": {"enum": takes}}, "required": ["operator"]},
            "then": {"required": ["value"]},
        },
        {
            "if": {"properties": {"operator": {"enum": takes_none}}, "required": ["operator"]},
            "then": {"not": {"required": ["value"]}},
        },
    ]
    return row


def _action_schema() -> dict[str, Any]:
    """One action: its ``type`` picks the fields (the common ones and the kind's own)."""
    rules = []
    for type_name, kind in ACTION_KINDS.items():
        table = {**COMMON_FIELDS, **kind.fields}
        properties: dict[str, Any] = {"type": {"const": type_name, "description": kind.summary}}
        properties.update({name: _action_field_schema(spec, name) for name, spec in table.items()})
        required = ["type", *(name for name, spec in table.items() if spec.required)]
        rules.append(
            {
                "if": {"properties": {"type": {"const": type_name}}, "required": ["type"]},
                "then": {
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                    **kind.schema_rules,
                },
            }
        )
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(ACTION_KINDS)}},
        "allOf": rules,
    }


def _trigger_rules() -> list[dict[str, Any]]:
    """An action kind that runs on one trigger only makes the workflow's trigger that one."""
    return [
        {
            "if": {
                "required": ["actions"],
                "properties": {
                    "actions": {
                        "contains": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"const": type_name}},
                        }
                    }
                },
            },
            "then": {"properties": {"trigger": {"const": kind.trigger}}},
        }
        for type_name, kind in ACTION_KINDS.items()
        if kind.trigger is not None
    ]


def workflow_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a workflow document."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flowlang.dev/schema/workflow.schema.json",
        "title": "flowlang workflow automation",
        "type": "object",
        "required": ["workflow", "trigger", "actions"],
        "additionalProperties": False,
        "properties": {
            "workflow": {
                "type": "string",
                "minLength": 1,
                "description": "the workflow's name, unique in a set (it makes the "
                "idempotency keys)",
            },
            "description": {"type": "string"},
            "trigger": {
                "type": "string",
                "minLength": 1,
                "description": "the event type the workflow runs on (known ones, or an "
                "application's own)",
                "examples": list(TRIGGERS),
            },
            "conditions": {
                "type": "array",
                "minItems": 1,
                "items": _condition_schema(),
                "description": "rows that must all hold (or give expression)",
                "examples": [
                    [
                        {
                            "property": "<<event.properties.answered>>",
                            "operator": "equals",
                            "value": False,
                        },
                        {"property": "<<event.properties.tags>>", "operator": "is_not_empty"},
                    ]
                ],
            },
            "expression": {
                **TEXT,
                "description": "one condition that must hold (or give conditions)",
                "examples": ["<<event.properties.waiting_time > 60>>"],
            },
            "actions": {
                "type": "array",
                "minItems": 1,
                "items": _action_schema(),
                "description": "run in order; templates read event, actions.<name>.result and "
                "secrets",
            },
        },
        "not": {"required": ["conditions", "expression"]},
        "allOf": _trigger_rules(),
        "$defs": {"listed": _LISTED},
    }


def write_schema() -> None:
    """Write the shipped schema file again (``make schema``; after adding an action kind)."""
    SCHEMA_FILE.write_text(schema_text(workflow_schema()), encoding="utf-8")
