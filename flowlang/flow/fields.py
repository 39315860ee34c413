"""Fields: the declarative table of step types and their fields.

One table drives the document checks (flowlang.flow.build) and the JSON Schema shipped with the
package (flowlang.flow.schema), so the two cannot disagree.
"""

from __future__ import annotations

__all__ = ["CONDITION_OPERATORS", "FIELDS", "HTTP_METHODS", "STEP_TYPES", "Field"]

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One field of a step: its kind, whether it is required, its default and bounds."""

    #: template, value, step, duration, bool, int, enum, headers, fields, branches, key, pattern
    kind: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: Condition Splitter operators and whether they take a value.
CONDITION_OPERATORS = {
    "equals": True,
    "not_equals": True,
    "contains": True,
    "not_contains": True,
    "starts_with": True,
    "ends_with": True,
    "greater_than": True,
    "greater_or_equal": True,
    "less_than": True,
    "less_or_equal": True,
    "is_empty": False,
    "is_not_empty": False,
}

_NEXT = Field("step", required=True, description="the step that runs next")
_THEN = Field("step", description="the step that runs next; without it the run completes")

FIELDS: dict[str, dict[str, Field]] = {
    "http_request": {
        "endpoint": Field(
            "template", required=True, description="https URL; templated values are percent-encoded"
        ),
        "method": Field("enum", default="GET", choices=HTTP_METHODS),
        "headers": Field("headers", default={}, description="header name to templated value"),
        "body": Field("fields", default={}, description="JSON body; dotted keys nest"),
        "parse_response": Field(
            "bool", default=True, description="wait for the response and keep it"
        ),
        "timeout": Field(
            "duration", default=8.0, minimum=0.05, maximum=10.0, description="total deadline"
        ),
        "follow_redirects": Field("bool", default=False),
        "next": _NEXT,
        "on_failure": Field("step", description="required when parse_response is true"),
        "on_timeout": Field("step", description="defaults to on_failure"),
    },
    "condition_splitter": {
        "branches": Field(
            "branches", required=True, description="tried in order; the first that holds wins"
        ),
        "otherwise": Field("step", required=True, description="the failover branch"),
    },
    "collect_input": {
        "prompt": Field("template", description="what the host says before collecting"),
        "max_digits": Field("int", default=32, minimum=1, maximum=64),
        "min_digits": Field("int", default=1, minimum=1, maximum=64),
        "finish_on_key": Field("key", default="#", description="one of 0-9 * #, or empty for none"),
        "timeout": Field("duration", default=5.0, minimum=0.5, maximum=60.0),
        "pattern": Field(
            "pattern",
            description="regular expression the digits must match: literals 0-9 * #, classes, "
            "groups, |, ?, *, +, {m,n} (counts at most 64); matched in linear time",
        ),
        "next": _NEXT,
        "on_no_input": Field("step", required=True, description="no digits before the timeout"),
        "on_invalid": Field(
            "step", description="digits that fail validation; defaults to on_no_input"
        ),
    },
    "set_variables": {
        "variables": Field("fields", required=True, description="vars.* to set; dotted names nest"),
        "next": _THEN,
    },
    "say": {"text": Field("template", required=True), "next": _THEN},
    "play": {"url": Field("template", required=True), "next": _THEN},
    "transfer": {"target": Field("template", required=True, description="queue, agent or number")},
    "voicemail": {"mailbox": Field("template", default="")},
    "hangup": {},
}

STEP_TYPES = tuple(FIELDS)
