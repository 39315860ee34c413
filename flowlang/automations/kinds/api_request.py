"""api_request: send the event's values as JSON to any https endpoint."""

from __future__ import annotations

__all__ = ["KIND"]

from collections.abc import Mapping
from typing import Any

from flowlang.automations.kinds.base import Action, ActionKind, delivered
from flowlang.automations.providers import Providers
from flowlang.flow.fields import HTTP_METHODS, Field
from flowlang.flow.source import Pointer
from flowlang.http_rules import PreparedRequest, check_header, encode_body, render_endpoint
from flowlang.kinds.base import Checker

#: Methods whose requests carry no body (common servers ignore or refuse one).
BODYLESS = ("GET", "DELETE")


def check_api_request(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, owner: str
) -> None:
    """A GET or DELETE request has no body (its ``values``)."""
    method = fields.get("method")
    if method in BODYLESS and raw.get("values"):
        checker.error(
            f"a {method} request has no body; put values in the endpoint, where templated values "
            "are percent-encoded",
            (*pointer, "values"),
            owner,
            "values",
        )


def prepare(
    action: Action, scope: Mapping[str, Any], providers: Providers, key: str, limit: int
) -> PreparedRequest:
    """The request: the endpoint, the headers, the Idempotency-Key and the values as JSON."""
    fields = action.fields
    url = render_endpoint(fields["endpoint"].parts, scope)
    headers = [
        (name, check_header(name, template.render(scope))) for name, template in fields["headers"]
    ]
    headers.append(("Idempotency-Key", key))
    method = fields["method"]
    if method in BODYLESS:  # without values (checked when the workflow loads)
        return PreparedRequest(method, url, tuple(headers))
    return PreparedRequest(
        method,
        url,
        (*headers, ("Content-Type", "application/json")),
        encode_body(fields["values"].build(scope), limit),
    )


KIND = ActionKind(
    "api_request",
    "send values as JSON to an https endpoint; the result is the response body",
    {
        "endpoint": Field(
            "endpoint",
            required=True,
            description="https URL; values are encoded",
            examples=(
                "https://crm.example.com/api/activities",
                "https://crm.example.com/api/contacts/<<event.properties.contact_id>>",
            ),
        ),
        "method": Field("enum", default="POST", choices=HTTP_METHODS),
        "headers": Field(
            "headers", default={}, examples=({"Authorization": "Bearer <<secrets.crm_token>>"},)
        ),
        "values": Field(
            "values",
            default=[],
            description="key, value and format of each body entry (not with GET or DELETE)",
            examples=(
                [
                    {
                        "key": "contactName",
                        "value": "<<event.properties.name>>",
                        "format": "string",
                    },
                    {"key": "call.waited", "value": "<<event.properties.waiting_time>>"},
                ],
            ),
        ),
        "timeout": Field("duration", default=15.0, minimum=0.05, maximum=30.0),
    },
    secret_fields=("endpoint", "headers", "values"),
    check=check_api_request,
    # A GET or DELETE refuses its values field itself, so editors mark the values line, as
    # flowlang check does.
    schema_rules={
        "if": {
            "required": ["method"],
            "properties": {
                "method": {"enum": [*BODYLESS, *(method.lower() for method in BODYLESS)]}
            },
        },
        "then": {"properties": {"values": {"not": {}}}},
    },
    prepare=prepare,
    interpret=delivered,
)
