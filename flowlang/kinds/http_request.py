"""HTTP Request: send a request to a fixed https origin and keep (or ignore) its response."""

from __future__ import annotations

__all__ = ["KIND", "prepare_request", "send_request"]

from collections.abc import Mapping
from typing import Any

from flowlang.flow.fields import HTTP_METHODS, NEXT, Field
from flowlang.flow.model import Endpoint, FieldTree, Step
from flowlang.flow.source import Pointer
from flowlang.http_rules import (
    BODY_METHODS,
    PreparedRequest,
    RequestError,
    check_header,
    encode_body,
    render_endpoint,
)
from flowlang.kinds.base import END, Checker, RunView, StepKind, Transition
from flowlang.rundata import DataLimitError, store_record, valid_text


def prepare_request(
    step: Step, scope: Mapping[str, Any], max_body: int, twins: Any = None
) -> PreparedRequest:
    """Render and check everything a request needs; RequestError when it cannot be sent,
    naming the secrets it reads that are not set (each looked up once: ``secrets.use``).

    ``twins``: the runtime's (``runtime.twins``) for the body's checks; None: the Python ones.
    """
    request: PreparedRequest = scope["secrets"].prepare(
        scope, lambda used: _build_request(step, used, max_body, twins), (RequestError,)
    )
    return request


def _build_request(
    step: Step, scope: Mapping[str, Any], max_body: int, twins: Any
) -> PreparedRequest:
    endpoint: Endpoint = step.fields["endpoint"]
    url = render_endpoint(endpoint.parts, scope)
    headers = [
        (name, check_header(name, template.render(scope)))
        for name, template in step.fields["headers"]
    ]
    body_tree: FieldTree = step.fields["body"]
    body = None
    if body_tree or step.fields["method"] in BODY_METHODS:
        if twins is None:
            body = encode_body(body_tree.build(scope), max_body)
        else:
            body = encode_body(
                body_tree.build(scope),
                max_body,
                exceeds=twins.json_length_exceeds,
                scan=twins.first_non_finite,
            )
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return PreparedRequest(step.fields["method"], url, tuple(headers), body)


async def send_request(step: Step, run: RunView) -> Transition:
    """Send the step's request; keep the outcome (and response) in ``steps.<id>``."""
    settings = run.runtime.settings
    try:
        request = prepare_request(step, run.scope, settings.max_request_body, run.runtime.twins)
    except RequestError as error:
        message = valid_text(run.redact(str(error)))
        store_record(run, step.id, "steps", {"outcome": "invalid_request", "error": message})
        return (
            "go",
            step.fields["on_failure"] or step.fields["next"],
            "invalid_request",
            {"error": message},
        )
    summary = run.request_summary(request)
    timeout = min(step.fields["timeout"], settings.http_timeout_cap)
    if not step.fields["parse_response"]:
        run.runtime.send_in_background(run, step.id, request, timeout, summary)
        store_record(run, step.id, "steps", {"outcome": "sent"})
        return ("go", step.fields["next"], "sent", {"request": summary})
    result = await run.runtime.http.send(
        request,
        timeout=timeout,
        max_body=settings.max_response_body,
        follow_redirects=step.fields["follow_redirects"],
    )
    record: dict[str, Any] = {"outcome": result.outcome}
    if result.response is not None and result.outcome in ("success", "http_error"):
        record["response"] = result.response
    failure = valid_text(run.redact(result.error)) if result.error is not None else None
    if failure is not None:
        record["error"] = failure
    detail: dict[str, Any] = {
        "request": summary,
        "status": result.status,
        "duration_ms": round(result.duration * 1000, 1),
    }
    if failure is not None:
        detail["error"] = failure
    try:
        store_record(run, step.id, "steps", record)
    except DataLimitError as refused:  # the response cannot be kept: the step fails
        detail["error"] = str(refused)
        store_record(run, step.id, "steps", {"outcome": "too_large", "error": str(refused)})
        return ("go", step.fields["on_failure"], "too_large", detail)
    if result.outcome == "success":
        return ("go", step.fields["next"], "success", detail)
    if result.outcome == "timeout":
        return ("go", step.fields["on_timeout"] or step.fields["on_failure"], "timeout", detail)
    return ("go", step.fields["on_failure"], result.outcome, detail)


def check_request(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, step_id: str
) -> None:
    """A step that parses its response needs on_failure; a GET has no body. (A timeout without
    on_timeout takes on_failure: the executor and ``request_edge`` say so; no on_timeout edge
    is made up, so a fault of on_failure is reported once, where it is written.)"""
    if fields.get("parse_response") and "on_failure" not in raw:
        checker.error(
            "an http_request step that parses its response needs on_failure (the failover)",
            pointer,
            step_id,
            "on_failure",
            key=True,
        )
    if fields.get("method") == "GET" and fields.get("body"):
        checker.error(
            "a GET request has no body; put parameters in the endpoint, where templated values "
            "are percent-encoded",
            (*pointer, "body"),
            step_id,
            "body",
        )


def response_facts(step: Step) -> Mapping[str, frozenset[str]]:
    """The response is certain only on the success (``next``) edge of a step that parses it
    (after an HTTP error status it is kept too, but ``on_failure`` is also taken with none)."""
    return {"next": frozenset({"response"})} if step.fields.get("parse_response") else {}


def request_edge(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """``next`` on success (or once sent in the background); ``on_timeout`` for a timeout when
    the step has one; ``on_failure`` for every other outcome."""
    if outcome in ("success", "sent"):
        return "next" if step.fields.get("next") else END
    if outcome == "timeout" and step.fields.get("on_timeout"):
        return "on_timeout"
    return "on_failure" if step.fields.get("on_failure") else None


KIND = StepKind(
    "http_request",
    "call an HTTP API and branch on the outcome",
    {
        "endpoint": Field(
            "endpoint", required=True, description="https URL; templated values are percent-encoded"
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
        "next": NEXT,
        "on_failure": Field("step", description="required when parse_response is true"),
        "on_timeout": Field("step", description="defaults to on_failure"),
    },
    edge_facts=response_facts,
    outcome_edge=request_edge,
    keeps_record=True,
    secret_fields=("endpoint", "headers", "body"),
    network=True,
    check=check_request,
    execute=send_request,
)
