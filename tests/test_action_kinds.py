"""Workflow action kinds as registered units: golden cases per kind, declarations checked at
import, and what the registry drives (field tables, secret fields, triggers).

Golden cases live in tests/golden/actions/<kind>.yaml; every registered kind has a file:

```yaml
kind: api_request
cases:
  - name: ...
    workflow: |               # a whole workflow document
      ...
    event: {id: e-1, type: call.ended, properties: {...}}
    secrets: {crm: s3cret}              # optional
    responses: [...]                    # optional, in the --responses shape
    schedule: [0, 5]                    # optional: the retry schedule (default: one attempt)
    expect:
      deliveries: [[log, delivered]]    # action and outcome, in order
      result: {...}                     # optional: the first delivery's result
      attempts: 2                       # optional: the first delivery's attempts
      error: "text"                     # optional: in the first delivery's error
      requests: [{request: POST URL, headers: {...}, body: {...}}]  # optional: all sent
      lookups: {crm: 1}                 # optional: provider lookups per secret name
```
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import FakeClock, kind_cases, registered_without_cases

from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.kinds.base import (
    COMMON_FIELDS,
    ActionKind,
    delivered,
)
from flowlang.automations.kinds.registry import ACTION_KINDS
from flowlang.automations.workflow import check_workflow_text
from flowlang.flow.fields import Field
from flowlang.flow.model import FlowDocumentError, Step
from flowlang.http_rules import PreparedRequest
from flowlang.kinds.base import StepKind, registered
from flowlang.kinds.registry import STEP_KINDS
from flowlang.runtime.recorded import load_recorded_responses

GOLDEN = Path(__file__).parent / "golden" / "actions"
PACKAGE = Path(__file__).parent.parent / "flowlang" / "automations"


class CountingSecrets:
    """A secrets provider that counts every lookup, per name."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.lookups: Counter[str] = Counter()

    def get(self, name: str) -> str | None:
        self.lookups[name] += 1
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return "the secrets mapping"


def run_case(
    case: dict[str, Any], tmp_path: Path
) -> tuple[Any, list[PreparedRequest], Counter[str]]:
    """Dispatch the case's event to its workflow against recorded responses."""
    workflow = load_workflow_text(case["workflow"], name=f"{case['name']}.yaml")
    responses = tmp_path / "responses.yaml"
    responses.write_text(yaml.safe_dump(case.get("responses", [])), encoding="utf-8")
    http = load_recorded_responses(responses)
    secrets = CountingSecrets(case.get("secrets", {}))
    settings = DeliverySettings(schedule=tuple(case.get("schedule", [0])))

    async def main() -> Any:
        async with Automations(
            [workflow], settings=settings, http=http, secrets=secrets, clock=FakeClock()
        ) as automations:
            return await automations.dispatch(case["event"])

    result = asyncio.run(main())
    return result, list(http.requests), secrets.lookups


@pytest.mark.parametrize("case", kind_cases(GOLDEN))
def test_action_golden(case: dict[str, Any], tmp_path: Path) -> None:
    result, requests, lookups = run_case(case, tmp_path)
    expect = case["expect"]
    rows = [[delivery.action, delivery.outcome] for delivery in result.deliveries]
    first = result.deliveries[0]
    assert rows == expect["deliveries"], (rows, first.error)
    if "result" in expect:
        assert first.result == expect["result"]
    if "attempts" in expect:
        assert first.attempts == expect["attempts"]
    if "error" in expect:
        assert expect["error"] in (first.error or ""), first.error
    if "requests" in expect:
        assert len(requests) == len(expect["requests"])
        for sent, wanted in zip(requests, expect["requests"], strict=True):
            assert f"{sent.method} {sent.url}" == wanted["request"]
            headers = dict(sent.headers)
            for name, value in wanted.get("headers", {}).items():
                assert headers.get(name) == value, (name, headers)
            assert len(headers.get("Idempotency-Key", "")) == 32
            if "body" in wanted:
                body = None if sent.body is None else json.loads(sent.body)
                assert body == wanted["body"]
    if "lookups" in expect:  # one provider lookup per secret and use (one attempt here)
        assert dict(lookups) == expect["lookups"]


def test_every_registered_action_kind_has_golden_cases() -> None:
    assert registered_without_cases(GOLDEN, ACTION_KINDS) == ([], [])


# --- the registry drives the loader -----------------------------------------------------------

#: The smallest valid action of each kind, and the trigger it runs on.
MINIMAL = {
    "api_request": ("call.ended", "{endpoint: 'https://crm.example.com/x'}"),
    "send_sms": (
        "call.ended",
        "{sender: '+14155550100', recipient: '+14155550101', text: hi, auth: {key_id: i, key_secret: s}}",
    ),
    "slack_notification": ("call.ended", "{token: t, channel: c, text: hi}"),
    "transcribe_recording": ("recording.uploaded", "{}"),
}


def _minimal(kind: str, **replace: str) -> str:
    trigger, fields = MINIMAL[kind]
    data = yaml.safe_load(fields)
    data.update({name: yaml.safe_load(value) for name, value in replace.items()})
    document = {
        "workflow": "w",
        "trigger": trigger,
        "actions": [{"name": "a", "type": kind, **data}],
    }
    return yaml.safe_dump(document, sort_keys=False)


def test_every_registered_kind_has_a_minimal_action() -> None:
    assert sorted(MINIMAL) == sorted(ACTION_KINDS)


@pytest.mark.parametrize("kind", list(ACTION_KINDS))
def test_a_minimal_action_loads_as_a_step_of_its_kind(kind: str) -> None:
    workflow = load_workflow_text(_minimal(kind))
    (action,) = workflow.actions
    assert isinstance(action, Step)
    assert action.kind is ACTION_KINDS[kind] and action.type == kind and action.id == "a"
    assert action.edges == () and action.targets() == {}
    assert set(action.fields) == set(COMMON_FIELDS) | set(ACTION_KINDS[kind].fields)


def _template_fields(kind: ActionKind) -> list[str]:
    return [name for name, spec in kind.fields.items() if spec.kind == "template"]


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (name, field)
        for name, kind in ACTION_KINDS.items()
        for field in _template_fields(kind)
        if field not in kind.secret_fields and field != "recording_origin"
    ],
)
def test_secrets_are_refused_outside_the_kinds_secret_fields(kind: str, field: str) -> None:
    _, findings = check_workflow_text(_minimal(kind, **{field: '"<<secrets.x>>"'}))
    errors = [finding.message for finding in findings if finding.severity == "error"]
    assert len(errors) == 1, errors
    assert f"(in a {kind} action: " in errors[0] and "secrets.x" in errors[0]


#: A value that reads a secret, for each kind of secret field.
_SECRET_VALUES = {
    "endpoint": '"https://crm.example.com/<<secrets.x>>"',
    "headers": '{Authorization: "<<secrets.x>>"}',
    "values": '[{key: k, value: "<<secrets.x>>"}]',
    "auth": '{key_id: "<<secrets.x>>", key_secret: "<<secrets.x>>"}',
    "token": '"<<secrets.x>>"',
}


@pytest.mark.parametrize(
    ("kind", "field"),
    [(name, field) for name, kind in ACTION_KINDS.items() for field in kind.secret_fields],
)
def test_secrets_are_accepted_in_the_kinds_secret_fields(kind: str, field: str) -> None:
    extra = {field: _SECRET_VALUES[field]}
    if kind == "transcribe_recording":
        extra["recording_origin"] = "https://rec.example.com"
    _, findings = check_workflow_text(_minimal(kind, **extra))
    assert [finding.message for finding in findings] == []


@pytest.mark.parametrize(
    "kind", [name for name, kind in ACTION_KINDS.items() if kind.trigger is not None]
)
def test_a_kind_that_needs_a_trigger_refuses_others(kind: str) -> None:
    text = _minimal(kind).replace(MINIMAL[kind][0], "call.ended")
    with pytest.raises(FlowDocumentError) as raised:
        load_workflow_text(text, name="w.yaml")
    assert f"{kind} needs the trigger {ACTION_KINDS[kind].trigger!r}, not 'call.ended'" in str(
        raised.value
    )


def test_an_unknown_action_type_lists_the_registered_ones() -> None:
    with pytest.raises(FlowDocumentError) as raised:
        load_workflow_text("workflow: w\ntrigger: t\nactions:\n  - {name: a, type: telex}\n")
    assert f"expected one of {', '.join(ACTION_KINDS)}" in str(raised.value)


# --- declarations are checked at import --------------------------------------------------------

_FIELDS = {"text": Field("template", required=True)}


async def _perform(*_: Any) -> Any:  # pragma: no cover - never called
    return "delivered", None, None, None


def _prepare(*_: Any) -> Any:  # pragma: no cover - never called
    return None


@pytest.mark.parametrize(
    ("ways", "expected"),
    [
        ({}, "needs exactly one way to perform it"),
        ({"prepare": _prepare}, "needs both prepare and interpret"),
        ({"interpret": delivered}, "needs both prepare and interpret"),
        (
            {"prepare": _prepare, "interpret": delivered, "perform": _perform},
            "needs exactly one way to perform it",
        ),
        ({"perform": _perform, "secret_fields": ("token",)}, "secret fields ['token'] are not"),
        ({"perform": _perform, "fields": {"name": Field("template")}}, "common to all"),
    ],
    ids=["none", "prepare only", "interpret only", "both ways", "unknown secret field", "clash"],
)
def test_an_action_kind_is_checked_when_it_is_declared(ways: dict[str, Any], expected: str) -> None:
    options = {"fields": _FIELDS, **ways}
    with pytest.raises(TypeError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        ActionKind("telex", "send a telex", **options)


def test_the_registries_refuse_a_module_without_a_kind_and_a_name_twice() -> None:
    with pytest.raises(TypeError, match="defines no KIND"):
        registered("flowlang.automations.kinds", ("api_request", "base"), ActionKind)
    with pytest.raises(TypeError, match="'api_request' is registered twice"):
        registered("flowlang.automations.kinds", ("api_request", "api_request"), ActionKind)
    with pytest.raises(TypeError, match="defines no KIND"):  # a step kind is not an action kind
        registered("flowlang.kinds", ("say",), ActionKind)
    assert dict(registered("flowlang.kinds", ("say",), StepKind)) == {"say": STEP_KINDS["say"]}


def test_step_and_action_kinds_share_one_base() -> None:
    from flowlang.kinds.base import Kind

    assert all(isinstance(kind, Kind) for kind in (*STEP_KINDS.values(), *ACTION_KINDS.values()))
    for kind in ACTION_KINDS.values():
        assert set(kind.secret_fields) <= set(kind.fields)


def test_no_code_in_automations_tests_an_action_type_string() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if 'type == "' in line or 'type != "' in line
    ]
    assert offenders == []
