"""`flowlang check` of workflows reports every fault at once: planted-fault workflows, each with
all its findings written beside it, in document order, each once; one fault never hides
another."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import load_yaml

from flowlang.automations import check_workflow, check_workflow_text, load_workflow_text
from flowlang.automations.providers import Providers
from flowlang.automations.workflow import is_workflow_document
from flowlang.cli import main

PLANTED = Path(__file__).parent / "flow_cases" / "planted_workflows"
SCENARIOS = sorted(p for p in PLANTED.glob("*.yaml") if not p.name.endswith(".expected.yaml"))


def _summary(severity: str, line: int, column: int, message: str) -> str:
    return f"{severity} {line}:{column} {message.splitlines()[0]}"


def _expected(path: Path) -> list[str]:
    findings = load_yaml(path.with_suffix(".expected.yaml"))["findings"]
    assert isinstance(findings, list) and findings, f"{path.name}: no findings written"
    return [str(finding) for finding in findings]


def test_every_scenario_has_its_findings_written() -> None:
    expected = sorted(PLANTED.glob("*.expected.yaml"))
    assert [p.name.removesuffix(".expected.yaml") for p in expected] == [p.stem for p in SCENARIOS]
    assert len(SCENARIOS) >= 6


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_planted_faults_are_all_reported(path: Path) -> None:
    workflow, findings = check_workflow(path)
    summaries = [
        _summary(f.severity, f.position.line, f.position.column, f.message) for f in findings
    ]
    assert summaries == _expected(path)
    assert workflow is None
    places = [(f.position.line, f.position.column) for f in findings]
    assert places == sorted(places), "findings are in document order"
    for finding in findings:
        assert finding.render().count(f"{path}:{finding.position.line}:") == 1


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_check_command_reports_the_same(path: Path) -> None:
    out = io.StringIO()
    assert main(["check", "--format", "json", str(path)], stdout=out) == 1
    reported = json.loads(out.getvalue())["findings"]
    assert [
        _summary(f["severity"], f["line"], f["column"], f["message"]) for f in reported
    ] == _expected(path)


# --- one fault never hides another: faults planted in separate actions add up ---------------

#: Actions with one fault each (an error, found in the action itself), and a sound one.
_FAULTY = {
    "get_with_body": (
        "{name: N, type: api_request, endpoint: 'https://crm.example.com/x', method: GET, "
        "values: [{key: k, value: v}]}"
    ),
    "delete_with_body": (
        "{name: N, type: api_request, endpoint: 'https://crm.example.com/x', method: delete, "
        "values: [{key: k, value: v}]}"
    ),
    "template_error": "{name: N, type: slack_notification, token: t, channel: c, text: '<<a +>>'}",
    "unknown_field": "{name: N, type: slack_notification, token: t, channel: c, text: x, to: y}",
    "unknown_type": "{name: N, type: send_fax, number: '+14155550100'}",
    "missing_field": "{name: N, type: slack_notification, token: t, channel: c}",
    "bad_number": (
        "{name: N, type: send_sms, sender: '555', recipient: '+14155550100', text: hi, "
        "auth: {key_id: a, key_secret: b}}"
    ),
    "later_result": (
        "{name: N, type: slack_notification, token: t, channel: c, "
        "text: '<<actions.zz_last.result.ok>>'}"
    ),
    "secret_in_text": (
        "{name: N, type: slack_notification, token: t, channel: c, text: '<<secrets.token>>'}"
    ),
    "wrong_trigger": "{name: N, type: transcribe_recording}",
    "bad_duration": (
        "{name: N, type: api_request, endpoint: 'https://crm.example.com/x', timeout: 2 hours}"
    ),
}
_SOUND = "{name: zz_last, type: slack_notification, token: t, channel: c, text: hi}"


def _workflow(actions: list[str]) -> str:
    lines = "".join(f"  - {action}\n" for action in actions)
    return f"workflow: w\ntrigger: call.ended\nactions:\n{lines}  - {_SOUND}\n"


def _errors_at(text: str) -> list[tuple[int, str]]:
    """The errors of a workflow: (line, message)."""
    return [
        (f.position.line, f.message) for f in check_workflow_text(text)[1] if f.severity == "error"
    ]


@settings(max_examples=60, deadline=None)
@given(faults=st.lists(st.sampled_from(sorted(_FAULTY)), min_size=1, max_size=6))
def test_faults_in_separate_actions_add_up(faults: list[str]) -> None:
    """Each faulty action, alone before a sound one, has its own errors; together, the workflow
    has exactly all of them, each on its action's line, in order."""
    actions = [_FAULTY[fault].replace("N", f"a{index}", 1) for index, fault in enumerate(faults)]
    expected = []
    for index, action in enumerate(actions):
        alone = _errors_at(_workflow([action]))
        assert alone, f"{faults[index]}: no error alone"
        expected += [(index + 4, message) for _, message in alone]
    assert _errors_at(_workflow(actions)) == expected


def test_no_trigger_hides_no_action_fault_and_adds_none() -> None:
    text = _workflow([_FAULTY["wrong_trigger"].replace("N", "t"), _FAULTY["template_error"]])
    errors = _errors_at(text.replace("trigger: call.ended\n", ""))
    # Line 1: no trigger; line 3, the transcription: no mismatch follows; line 4: its fault.
    assert [line for line, _ in errors] == [1, 4]
    assert "needs a trigger" in errors[0][1] and "no arithmetic" in errors[1][1]


# --- a GET or DELETE request has no body -----------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "get", "DELETE", "delete"])
def test_bodyless_methods_load_without_values_and_send_no_body(method: str) -> None:
    workflow = load_workflow_text(
        "workflow: w\ntrigger: call.ended\nactions:\n"
        f"  - {{name: a, type: api_request, endpoint: 'https://crm.example.com/x', method: {method}}}\n"
    )
    (action,) = workflow.actions
    request = _prepare(action, _scope(), Providers(), "key-1", 10_000)
    assert request.method == method.upper()
    assert request.body is None
    assert not any(name.lower() == "content-type" for name, _ in request.headers)


def test_other_methods_still_send_the_values() -> None:
    workflow = load_workflow_text(
        "workflow: w\ntrigger: call.ended\nactions:\n"
        "  - {name: a, type: api_request, endpoint: 'https://crm.example.com/x', method: PUT, "
        "values: [{key: k, value: v}]}\n"
    )
    request = _prepare(workflow.actions[0], _scope(), Providers(), "key-1", 10_000)
    assert json.loads(request.body or b"") == {"k": "v"}


def _prepare(action: Any, *args: Any) -> Any:
    """The request the action's kind prepares (its templates read no secrets here)."""
    return action.kind.prepare(action, *args)


def _scope() -> dict[str, Any]:
    return {"event": {"id": "e1", "type": "call.ended", "properties": {}}, "actions": {}}


def test_thousands_of_faults_are_each_reported_once_in_order() -> None:
    """A hostile document: 1,500 actions with two faults each, and every one of them reported
    (the did-you-mean hints stop after a budget; the findings do not)."""
    count = 1_500
    actions = [
        f"{{name: a{index}, type: api_request, endpoint: 'https://crm.example.com/x', "
        f"method: GET, values: [{{key: k, value: v}}], timout: 3}}"
        for index in range(count)
    ]
    errors = _errors_at(_workflow(actions))
    assert len(errors) == 2 * count
    assert [line for line, _ in errors] == [4 + index // 2 for index in range(2 * count)]
    assert all("GET request has no body" in message for message in [m for _, m in errors][::2])
    assert all("unknown field 'timout'" in message for message in [m for _, m in errors][1::2])


# --- flows and workflows told apart by their keys ----------------------------------------------


@pytest.mark.parametrize(
    ("data", "workflow"),
    [
        ({"workflow": "w"}, True),
        ({"workflow": None, "steps": {}}, True),
        ({"trigger": "call.ended"}, True),
        ({"actions": []}, True),
        ({"trigger": "call.ended", "steps": {}}, False),
        ({"actions": [], "start": "a"}, False),
        ({"flow": "f", "start": "a", "steps": {}}, False),
        ({}, False),
        (["workflow"], False),
        ("workflow: w", False),
    ],
)
def test_workflow_documents_are_told_by_their_keys(data: Any, workflow: bool) -> None:
    assert is_workflow_document(data) is workflow


def test_a_nameless_workflow_is_checked_as_a_workflow() -> None:
    out = io.StringIO()
    text = "trigger: call.ended\nactions:\n  - {name: a, type: slack_notification, token: t, channel: c}\n"
    assert main(["check", "--format", "json", "-"], stdout=out, stdin=io.StringIO(text)) == 1
    messages = [f["message"] for f in json.loads(out.getvalue())["findings"]]
    assert messages == [
        "a workflow needs a name: workflow: <name>",
        "a slack_notification action needs text",
    ]


# --- plain http endpoints: only to the hosts a run allows -------------------------------------

_HTTP = (
    "workflow: w\ntrigger: call.ended\nactions:\n"
    "  - {name: a, type: api_request, endpoint: 'http://127.0.0.1:8080/x/<<event.id>>'}\n"
)


def test_a_plain_http_endpoint_is_an_error_unless_its_host_is_allowed() -> None:
    workflow, findings = check_workflow_text(_HTTP)
    assert workflow is None
    (finding,) = findings
    assert finding.message.startswith("plain http to 127.0.0.1 is not allowed")
    assert (finding.position.line, finding.position.column) == (4, 45)
    allowed, findings = check_workflow_text(_HTTP, allow_hosts=["127.0.0.1"])
    assert allowed is not None and findings == []
    assert check_workflow_text(_HTTP, allow_hosts=["crm.example.com"])[0] is None


def test_automate_checks_endpoints_against_its_allowed_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "w.yaml").write_text(_HTTP, encoding="utf-8")
    (tmp_path / "events.jsonl").write_text("", encoding="utf-8")
    argv = ["automate", str(tmp_path / "w.yaml"), "--events", str(tmp_path / "events.jsonl")]
    argv += ["--store", str(tmp_path / "store.db")]
    assert main(argv, stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "plain http to 127.0.0.1 is not allowed" in err and "Traceback" not in err
    assert main([*argv, "--allow-host", "127.0.0.1"], stdout=io.StringIO()) == 0


# --- conditions the core cannot lower are tested row by row, as in flows ----------------------


@pytest.mark.parametrize(
    ("tags", "name", "expected"),
    [(["Bob", "vip"], "Bob", True), (["Bob", "vip"], "Al", False), ([], "Bob", False)],
)
def test_a_list_value_holding_a_template_is_tested(tags: Any, name: str, expected: bool) -> None:
    workflow = load_workflow_text(
        "workflow: w\ntrigger: call.ended\nconditions:\n"
        "  - {property: '<<event.properties.tags>>', operator: is_not_empty}\n"
        "  - {property: '<<event.properties.tags>>', operator: equals, "
        "value: ['<<event.properties.name>>', vip]}\n"
        "actions:\n  - {name: a, type: slack_notification, token: t, channel: c, text: hi}\n"
    )
    event = {"id": "e", "type": "call.ended", "properties": {"tags": tags, "name": name}}
    assert workflow.matches(event) is expected
    scope = {"event": event}
    assert expected is all(row.holds(scope)[0] for row in workflow.rows)


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("http://rec.example.com/<<event.id>>.wav", (), True),
        ("http://rec.example.com/<<event.id>>.wav", ("rec.example.com",), False),
        ("HTTP://[::1]:8080/a.wav", ("::1",), False),
        ("https://rec.example.com/a.wav", (), False),
        ("gs://recordings/a.wav", (), False),
        ("http://<<event.properties.host>>/a.wav", (), False),  # the run's guard decides
    ],
)
def test_a_plain_http_recording_url_reaches_allowed_hosts_only(
    url: str, allowed: tuple[str, ...], refused: bool
) -> None:
    text = (
        "workflow: w\ntrigger: recording.uploaded\nactions:\n"
        f"  - {{name: a, type: transcribe_recording, recording_url: '{url}'}}\n"
    )
    errors = [
        f.message
        for f in check_workflow_text(text, allow_hosts=allowed)[1]
        if f.severity == "error"
    ]
    assert [e.split(":", 1)[0] for e in errors] == (
        [f"plain http to {url[7:].split('/', 1)[0]} is not allowed"] if refused else []
    )


# --- fields read as the schema reads them -----------------------------------------------------


def test_a_whole_number_written_with_a_point_is_a_whole_number() -> None:
    text = (
        "workflow: w\ntrigger: recording.uploaded\nactions:\n"
        "  - {name: a, type: transcribe_recording, sample_rate: %s}\n"
    )
    (action,) = load_workflow_text(text % "16000.0").actions
    assert action.fields["sample_rate"] == 16000 and type(action.fields["sample_rate"]) is int
    assert load_workflow_text(text % "1.6e4").actions[0].fields["sample_rate"] == 16000
    errors = _errors_at(text % "16000.5")
    assert len(errors) == 1 and "whole number" in errors[0][1]
