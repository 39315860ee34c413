"""Schema: the JSON Schema of flow documents, generated from the step kinds' field tables.

The shipped file ``flowlang/flow/flow.schema.json`` is this function's output; a test keeps it
current. Editors use it for completion and checks; ``flowlang check`` goes further (graph, data
flow, templates).
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_FILE",
    "STEP_ID",
    "TEXT",
    "annotated",
    "condition_row",
    "field_schema",
    "flow_schema",
    "schema_text",
    "write_schema",
]

import json
from pathlib import Path
from typing import Any

from flowlang.flow.build import enum_spellings
from flowlang.flow.digits import MAX_PATTERN
from flowlang.flow.fields import CONDITION_OPERATORS, Field
from flowlang.kinds.registry import STEP_KINDS

SCHEMA_FILE = Path(__file__).with_name("flow.schema.json")
#: A step id: text or a whole number.
STEP_ID = {"type": ["string", "integer"]}
#: A template: text, or a number written as one.
TEXT = {"type": ["string", "number"]}


def condition_row() -> dict[str, Any]:
    """One condition row: ``{property, operator, value}``."""
    return {
        "type": "object",
        "required": ["property", "operator"],
        "additionalProperties": False,
        "properties": {
            "property": {},
            "operator": {"enum": list(CONDITION_OPERATORS)},
            "value": {},
        },
    }


def annotated(schema: dict[str, Any], spec: Field) -> dict[str, Any]:
    """``schema`` with the field's description, examples and default (for editors)."""
    if spec.description:
        schema["description"] = spec.description
    if spec.examples:
        schema["examples"] = list(spec.examples)
    if spec.default is not None and spec.kind not in ("headers", "fields", "values"):
        schema["default"] = spec.default
    return schema


def field_schema(spec: Field, name: str = "") -> dict[str, Any]:
    """The JSON Schema of field ``name`` of one of the common field kinds."""
    kind = spec.kind
    schema: dict[str, Any]
    if kind in ("template", "endpoint"):
        schema = dict(TEXT)
    elif kind == "custom" and spec.schema is not None:
        schema = dict(spec.schema)
    elif kind == "options":
        schema = {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[0-9*#]$"},
            "additionalProperties": STEP_ID,
        }
    elif kind == "step":
        schema = dict(STEP_ID)
    elif kind == "duration":
        bounds = f"{_seconds(spec.minimum)} to {_seconds(spec.maximum)}"
        schema = {
            "anyOf": [
                {"type": "number", "minimum": spec.minimum, "maximum": spec.maximum},
                {
                    "type": "string",
                    "pattern": r"^\s*[0-9]+(\.[0-9]+)?(\s*(ms|s))?\s*$",
                    # A pattern cannot bound the number it spells without becoming unreadable.
                    "description": f"a duration such as 3s or 500ms, from {bounds}: "
                    "flowlang check enforces the bounds of this text form, this schema does not",
                },
            ]
        }
    elif kind == "bool":
        schema = {"type": "boolean"}
    elif kind == "int":
        schema = {"type": "integer", "minimum": spec.minimum, "maximum": spec.maximum}
    elif kind == "enum":
        # Exactly the spellings the loader reads (a method in upper or lower case).
        schema = {"enum": list(enum_spellings(spec, name))}
    elif kind == "headers":
        schema = {
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"pattern": r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
            "additionalProperties": TEXT,
        }
    elif kind == "fields":
        schema = {"type": "object", "propertyNames": {"pattern": r"^[^.]+(\.[^.]+)*$"}}
    elif kind == "branches":
        row = condition_row()
        schema = {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["conditions", "next"],
                        "additionalProperties": False,
                        "properties": {
                            "conditions": {"type": "array", "minItems": 1, "items": row},
                            "next": STEP_ID,
                        },
                    },
                    {
                        "type": "object",
                        "required": ["expression", "next"],
                        "additionalProperties": False,
                        "properties": {"expression": TEXT, "next": STEP_ID},
                    },
                ]
            },
        }
    elif kind == "key":
        schema = {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9*#]?$"},
                {"type": "integer", "minimum": 0, "maximum": 9},
                {"type": "null"},
            ]
        }
    elif kind == "pattern":
        schema = {"type": "string", "format": "regex", "maxLength": MAX_PATTERN}
    else:  # pragma: no cover
        raise AssertionError(kind)
    return annotated(schema, spec)


def _seconds(value: float | None) -> str:
    """A bound as a duration is written: ``500ms``, ``10s``."""
    if value is None:  # pragma: no cover - every duration field has bounds
        return "any"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def flow_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow document."""
    step_rules = []
    sections: dict[str, Any] = {}
    for step_type, step_kind in STEP_KINDS.items():
        table = step_kind.fields
        sections.update(step_kind.sections)
        properties: dict[str, Any] = {
            "type": {"const": step_type, "description": step_kind.summary}
        }
        properties.update({name: field_schema(spec, name) for name, spec in table.items()})
        required = ["type", *(name for name, spec in table.items() if spec.required)]
        step_rules.append(
            {
                "if": {"properties": {"type": {"const": step_type}}, "required": ["type"]},
                "then": {
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                    **step_kind.schema_rules,
                },
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flowlang.dev/schema/flow.schema.json",
        "title": "flowlang call flow",
        "type": "object",
        "required": ["flow", "start", "steps"],
        "additionalProperties": False,
        "properties": {
            "flow": {"type": "string", "minLength": 1, "description": "the flow's name"},
            "description": {"type": "string"},
            "start": {**STEP_ID, "description": "the id of the first step"},
            "steps": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": list(STEP_KINDS)}},
                    "allOf": step_rules,
                },
            },
            **sections,
        },
    }


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as its shipped file holds it."""
    return json.dumps(schema, indent=2) + "\n"


def write_schema() -> None:
    """Write the shipped schema file again (``make schema``; after adding a step kind)."""
    SCHEMA_FILE.write_text(schema_text(flow_schema()), encoding="utf-8")
