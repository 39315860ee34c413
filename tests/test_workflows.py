"""Workflow documents, value formats and matching."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from support import load_yaml

from flowlang.automations import Automations, check_workflow, check_workflow_text, load_workflow
from flowlang.automations.formats import ValueFormatError, convert
from flowlang.cli import main

CASES = load_yaml(Path(__file__).parent / "flow_cases" / "invalid_workflows.yaml")["cases"]
EXAMPLES = Path(__file__).parent.parent / "examples" / "workflows"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_workflow_findings(case: dict[str, Any]) -> None:
    workflow, findings = check_workflow_text(case["workflow"], name="wf.yaml")
    summaries = [
        f"{f.severity} {f.position.line}:{f.position.column} {f.message.splitlines()[0]}"
        for f in findings
    ]
    assert summaries == case["findings"]
    assert (workflow is None) == any(s.startswith("error") for s in case["findings"])
    for finding in findings:
        assert "wf.yaml:" in finding.render()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_workflows_are_valid(path: Path) -> None:
    workflow, findings = check_workflow(path)
    assert workflow is not None and findings == [], [f.render() for f in findings]


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("number", "42", 42),
        ("number", "12.50", 12.5),
        ("number", " -3 ", -3),
        ("number", 7, 7),
        ("number", None, None),
        ("string", 75, "75"),
        ("string", None, ""),
        ("string", [1], "[1]"),
        ("boolean", "yes", True),
        ("boolean", "TRUE", True),
        ("boolean", "nope", False),
        ("boolean", 0, False),
        ("boolean", None, False),
        ("boolean", "1", True),
        ("auto", "true", True),
        ("auto", "false", False),
        ("auto", "False", "False"),
        ("auto", "42", 42),
        ("auto", "4.5", 4.5),
        ("auto", "+14155550100", "+14155550100"),
        ("auto", "Ann", "Ann"),
        ("auto", [1, "a"], [1, "a"]),
        ("auto", None, None),
    ],
)
def test_value_formats(fmt: str, value: Any, expected: Any) -> None:
    result = convert("k", fmt, value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value", ["12,5", "1e3", "1_000", "nan", "٤٢", True, [1], float("inf")])
def test_number_format_refuses_other_text_naming_key_and_value(value: Any) -> None:
    with pytest.raises(ValueFormatError, match=r"value of 'call\.waited' is not a number"):
        convert("call.waited", "number", value)


def test_values_nest_and_convert() -> None:
    workflow = load_workflow(EXAMPLES / "missed_call.yaml")
    event = {
        "properties": {
            "name": "Ann",
            "external_number": "+14155550100",
            "waiting_time": "12.5",
            "is_vip": "yes",
        }
    }
    assert workflow.actions[0].fields["values"].build({"event": event}) == {
        "contactName": "Ann",
        "call": {"number": "+14155550100", "waited": 12.5, "vip": True},
    }


def test_matching_by_trigger_and_conditions() -> None:
    workflows = [load_workflow(path) for path in sorted(EXAMPLES.glob("*.yaml"))]
    automations = Automations(workflows)
    missed = {
        "type": "call.ended",
        "id": "e1",
        "properties": {"answered": False, "direction": "inbound"},
    }
    answered = {
        "type": "call.ended",
        "id": "e2",
        "properties": {"answered": True, "direction": "inbound"},
    }
    long_recording = {
        "type": "recording.uploaded",
        "id": "e3",
        "properties": {"duration": 45, "direction": "inbound"},
    }
    short_recording = {
        "type": "recording.uploaded",
        "id": "e4",
        "properties": {"duration": 10, "direction": "inbound"},
    }
    vip = {
        "type": "contact.updated",
        "id": "e5",
        "properties": {"tags": ["Vip"], "changes": {"tags": ["Vip"]}},
    }
    assert [w.name for w in automations.match(missed)] == ["missed-call-follow-up"]
    assert automations.match(answered) == []
    assert [w.name for w in automations.match(long_recording)] == ["transcribe-long-calls"]
    assert automations.match(short_recording) == []
    assert [w.name for w in automations.match(vip)] == ["vip-contact-updated"]
    assert automations.match({"type": "sms.received"}) == []
    assert automations.match({"no": "type"}) == []


def test_check_command_takes_workflows_and_flows() -> None:
    out = io.StringIO()
    files = [str(p) for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert main(["check", *files], stdout=out) == 0
    assert out.getvalue() == "3 files checked: 0 errors, 0 warnings\n"
