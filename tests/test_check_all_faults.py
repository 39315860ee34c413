"""``flowlang check`` reports every fault of a flow at once, in document order, each once: the
planted-fault flows in tests/flow_cases/planted/, loops with no way out, endpoints the runtime
would refuse, and reads of a response after a failure edge (guarded ones are fine)."""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import cli, load_yaml
from test_loop_twins import flows

import flowlang
from flowlang import check_flow, check_flow_text
from flowlang.cli import main
from flowlang.engine import Engine
from flowlang.flow.model import Finding
from flowlang.flow.source import DocumentError, load_document
from flowlang.flow.validate import strongly_connected
from flowlang.kinds.registry import STEP_KINDS
from flowlang.runtime.http import RecordedHttp, RecordedResponse

PLANTED = Path(__file__).parent / "flow_cases" / "planted"
EXPECTED: dict[str, list[str]] = load_yaml(PLANTED / "expected.yaml")


def _summary(finding: Finding) -> str:
    return f"{finding.position.line}:{finding.position.column} {finding.message}"


# --- planted faults ------------------------------------------------------------------------------


def test_every_planted_flow_has_its_expected_findings() -> None:
    files = sorted(path.name for path in PLANTED.iterdir() if path.name != "expected.yaml")
    assert files == sorted(EXPECTED)
    assert any(name.endswith(".json") for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_reports_exactly_the_planted_faults_in_document_order(name: str) -> None:
    flow, findings = check_flow(PLANTED / name)
    assert flow is None
    summaries = [_summary(finding) for finding in findings]
    expected = EXPECTED[name]
    assert len(summaries) == len(expected), summaries
    for summary, wanted in zip(summaries, expected, strict=True):
        place, fragment = wanted.split(" ", 1)
        assert summary.startswith(f"{place} "), (summary, wanted)
        assert fragment in summary, (summary, wanted)
    places = [(finding.position.line or 0, finding.position.column or 0) for finding in findings]
    assert places == sorted(places)
    assert len(set(summaries)) == len(summaries)  # each once
    for finding in findings:
        rendered = finding.render()
        assert f"{PLANTED / name}:{finding.position.line}:" in rendered and "^" in rendered


def test_the_command_line_reports_them_all(tmp_path: Path) -> None:
    status, out = cli("check", "--format", "json", *(str(PLANTED / name) for name in EXPECTED))
    assert status == 1
    report = json.loads(out)
    assert report["summary"]["errors"] == sum(len(found) for found in EXPECTED.values())


def test_on_failure_to_an_unknown_step_is_one_fault_at_on_failure() -> None:
    _, findings = check_flow(PLANTED / "on_failure_unknown.yaml")
    (finding,) = findings
    assert finding.position.field == "on_failure" and finding.position.step == "lookup"
    assert not any("on_timeout" in item.message for item in findings)


def test_a_timeout_without_on_timeout_still_takes_on_failure_at_run_time(backend: str) -> None:
    text = (PLANTED / "on_failure_unknown.yaml").read_text().replace("agnet", "done")
    flow = flowlang.load_flow_text(text)
    assert "on_timeout" not in flow.step("lookup").targets()
    url = "https://crm.example.com/api/contacts"
    http = RecordedHttp({("GET", url): RecordedResponse(200, {}, {}, delay=10)})
    result = _run(flow, backend, http, {})
    assert [(row["step"], row["outcome"]) for row in result.trace] == [
        ("lookup", "timeout"),
        ("done", "hung up"),
    ]


def test_duplicate_keys_are_refused_at_the_first_outside_the_checker() -> None:
    text = (PLANTED / "three_duplicate_keys.yaml").read_text()
    with pytest.raises(DocumentError) as caught:
        load_document(text, filename="d.yaml")
    assert caught.value.message == "duplicate key 'flow' (first at line 2)"
    kept = load_document(text, filename="d.yaml", keep_duplicates=True)
    assert [message for message, _ in kept.duplicates] == [
        "duplicate key 'flow' (first at line 2)",
        "duplicate key 'text' (first at line 8)",
        "duplicate key 'b' (first at line 11)",
    ]
    assert kept.data["flow"] == "duplicates" and kept.data["steps"]["a"]["text"] == "Hello"


def test_a_workflow_with_duplicate_keys_still_reports_the_first(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workflow: w\nworkflow: v\ntrigger: call.ended\nactions: []\n")
    status, out = cli("check", str(path))
    assert status == 1
    assert "duplicate key 'workflow' (first at line 1)" in out


def test_many_duplicate_keys_are_each_reported_once() -> None:
    body = "".join(f"  k{index % 50}: {{type: hangup}}\n" for index in range(3000))
    _, findings = check_flow_text(f"flow: f\nstart: k0\nsteps:\n{body}")
    duplicates = [finding for finding in findings if "duplicate key" in finding.message]
    assert len(duplicates) == 3000 - 50
    assert duplicates[0].message == "duplicate key 'k0' (first at line 4)"


# --- loops ---------------------------------------------------------------------------------------


def _ring(count: int, way_out: bool = False) -> str:
    steps = {
        f"s{index}": {"type": "set_variables", "variables": {"i": index}, "next": f"s{index + 1}"}
        for index in range(count)
    }
    steps[f"s{count - 1}"]["next"] = "s0"
    if way_out:
        steps["s0"] = {
            "type": "condition_splitter",
            "branches": [{"expression": "<<vars.i == 3>>", "next": "done"}],
            "otherwise": "s1",
        }
        steps["done"] = {"type": "hangup"}
    return json.dumps({"flow": "ring", "start": "s0", "steps": steps})


def test_a_long_cycle_without_exit_is_one_finding_without_recursion() -> None:
    _, findings = check_flow_text(_ring(20_000), name="ring.json")
    (finding,) = findings
    assert finding.message.startswith("steps 's0', 's1', 's2', 's3', 's4' and 19995 more form")
    assert finding.position.step == "s0"


def test_a_cycle_with_a_way_out_is_fine() -> None:
    flow, findings = check_flow_text(_ring(50, way_out=True), name="ring.json")
    assert flow is not None and findings == []


def test_a_step_that_takes_input_is_a_way_out() -> None:
    flow, findings = check_flow(PLANTED / "cycle_without_exit.yaml")
    assert flow is None
    assert [finding.position.step for finding in findings] == ["first"]  # not ask/check


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda count: st.lists(
            st.lists(st.integers(0, count - 1), max_size=4), min_size=count, max_size=count
        )
    )
)
def test_strongly_connected_components_match_mutual_reachability(
    successors: list[list[int]],
) -> None:
    count = len(successors)
    reach = [{node} for node in range(count)]
    for node in range(count):
        pending = [node]
        while pending:
            for target in successors[pending.pop()]:
                if target not in reach[node]:
                    reach[node].add(target)
                    pending.append(target)
    components = strongly_connected(successors)
    assert sorted(node for component in components for node in component) == list(range(count))
    for component in components:
        for node in range(count):
            together = node in component
            mutual = component[0] in reach[node] and node in reach[component[0]]
            assert together == mutual


# --- endpoints -----------------------------------------------------------------------------------


def _request_flow(endpoint: str, extra: str = "") -> str:
    return (
        "flow: f\nstart: call\nsteps:\n  call:\n    type: http_request\n"
        f"    endpoint: {json.dumps(endpoint)}\n    next: done\n    on_failure: done\n{extra}"
        "  done: {type: hangup}\n"
    )


@pytest.mark.parametrize(
    ("endpoint", "fragment", "column"),
    [
        ("http://crm.example.com/x", "plain http to crm.example.com is not allowed", 16),
        ("https://crm.example.com:80a/", "the port '80a' is not a number", 24),
        ("https://crm..example.com/<<call.uuid>>", "has an empty label", 24),
        ("https://-crm.example.com/", "starts or ends with '-'", 24),
        ("https://crm.example.com/a\tb", "the control character '\\t'", 41),
        ("https://crm.example.com/" + "a" * 70_000, "not a valid URL (URL too long)", 16),
    ],
)
def test_endpoints_the_sender_would_refuse_are_check_errors(
    endpoint: str, fragment: str, column: int
) -> None:
    flow, findings = check_flow_text(_request_flow(endpoint), name="f.yaml")
    assert flow is None
    (finding,) = findings
    assert fragment in finding.message
    assert (finding.position.line, finding.position.column) == (6, column)
    assert finding.position.field == "endpoint" and "^" in finding.render()


def test_plain_http_is_accepted_for_the_hosts_a_run_allows() -> None:
    text = _request_flow("http://crm.test:8080/x")
    assert check_flow_text(text, allow_hosts=["crm.test"])[0] is not None
    assert check_flow_text(text, allow_hosts=["other.test"])[0] is None


def test_flowlang_check_allows_plain_http_to_the_hosts_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(_request_flow("http://crm.test:8080/x"), encoding="utf-8")
    refused, allowed = io.StringIO(), io.StringIO()
    assert main(["check", str(path)], stdout=refused) == 1
    assert "plain http to crm.test is not allowed" in refused.getvalue()
    assert main(["check", "--allow-host", "crm.test", str(path)], stdout=allowed) == 0


def test_a_url_the_sender_refuses_at_run_time_takes_on_failure(backend: str) -> None:
    """A value that makes the URL unreadable (too long here) is the step's outcome, never an
    exception out of the run; nothing is contacted (the URL is refused before any lookup)."""
    text = _request_flow("https://crm.example.com/<<contact.name>>").replace(
        "  done: {type: hangup}", "  done: {type: say, text: '<<steps.call.outcome>>'}"
    )
    flow = flowlang.load_flow_text(text)
    result = _run(flow, backend, None, {"contact": {"name": "a" * 70_000}})
    assert result.status == "completed"
    first = result.trace[0]
    assert (first["step"], first["outcome"]) == ("call", "invalid_request")
    assert "URL too long" in result.trace[0]["detail"]["error"]
    assert result.instructions[0]["text"] == "invalid_request"


# --- reads of a response after a failure edge ---------------------------------------------------

BRANCH_ON_404 = """\
flow: lookup
start: lookup
steps:
  lookup:
    type: http_request
    endpoint: https://crm.example.com/api/contacts/<<call.external_number>>
    next: found
    on_failure: why
  why:
    type: condition_splitter
    branches:
      - conditions:
          - {property: "<<steps.lookup.response.status ?? 0>>", operator: equals, value: 404}
        next: unknown
    otherwise: agent
  found: {type: say, text: "Hello <<steps.lookup.response.body.name>>", next: agent}
  unknown: {type: say, text: "We do not know <<steps.lookup.response.body.error ?? 'you'>>"}
  agent: {type: transfer, target: "+14155550100"}
"""


def _run(
    flow: flowlang.CompiledFlow, backend: str, http: Any, context: dict[str, Any]
) -> flowlang.RunResult:
    async def main() -> flowlang.RunResult:
        options: dict[str, Any] = {"backend": backend}
        if http is not None:
            options["http"] = http
        async with flowlang.Runtime(**options) as runtime:
            return await runtime.start(flow, context)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "body", "delay", "path"),
    [
        (404, {"error": "no such contact"}, 0.0, ["lookup", "why", "unknown"]),
        (500, {}, 0.0, ["lookup", "why", "agent"]),
        (200, {"name": "Ada"}, 0.0, ["lookup", "found", "agent"]),
        (200, {}, 10.0, ["lookup", "why", "agent"]),  # a timeout: no response at all
    ],
)
def test_a_flow_branches_on_a_404_after_the_failure_edge(
    backend: str, status: int, body: Any, delay: float, path: list[str]
) -> None:
    flow, findings = check_flow_text(BRANCH_ON_404, name="lookup.yaml")
    assert findings == [] and flow is not None
    url = "https://crm.example.com/api/contacts/%2B14155550123"
    http = RecordedHttp({("GET", url): RecordedResponse(status, {}, body, delay=delay)})
    result = _run(flow, backend, http, {"call": {"external_number": "+14155550123"}})
    assert [row["step"] for row in result.trace] == path
    if status == 404:
        assert result.instructions[0]["text"] == "We do not know no such contact"


@pytest.mark.parametrize(
    "read",
    [
        "<<steps.lookup.response.status ?? 0>>",
        "<<steps.lookup.response.body.error | default('none')>>",
        "<<(steps.lookup.response.status ?? 0) == 404>>",
    ],
)
def test_a_guarded_read_after_the_failure_edge_is_fine(read: str) -> None:
    text = BRANCH_ON_404.replace(
        "We do not know <<steps.lookup.response.body.error ?? 'you'>>", read
    )
    flow, findings = check_flow_text(text)
    assert flow is not None and findings == []


def test_an_unguarded_read_after_the_failure_edge_is_a_warning() -> None:
    text = BRANCH_ON_404.replace("?? 'you'>>", ">>")
    flow, findings = check_flow_text(text, name="f.yaml")
    assert flow is not None
    (finding,) = findings
    assert finding.severity == "warning"
    assert finding.message.startswith("steps.lookup.response.body.error: step 'lookup' may have")
    assert "<<steps.lookup.response.body.error ?? 0>>" in finding.message
    assert (finding.position.line, finding.position.column) == (17, 48)


def test_a_row_guards_its_read_unless_the_engine_is_strict() -> None:
    text = BRANCH_ON_404.replace("response.status ?? 0>>", "response.status>>")
    flow, findings = check_flow_text(text)  # lenient: a missing status reads as null
    assert flow is not None and findings == []
    strict = Engine(strict=True)
    flow, findings = check_flow_text(text, engine=strict)
    assert flow is not None and [finding.severity for finding in findings] == ["warning"]


def test_a_read_before_the_request_ran_is_still_an_error() -> None:
    text = BRANCH_ON_404.replace("start: lookup", "start: unknown").replace(
        "'you'>>\"}", "'you'>>\", next: lookup}"
    )
    flow, findings = check_flow_text(text)
    assert flow is None
    assert [finding.message.split(": ", 1)[1][:40] for finding in findings] == [
        "step 'lookup' may not have run on every "
    ]


# --- nothing hidden: a planted fault adds findings, never takes one away ------------------------


def _template_field(step: dict[str, Any]) -> str | None:
    kind = STEP_KINDS[step["type"]]
    for name, spec in kind.fields.items():
        if spec.kind == "template" and isinstance(step.get(name), str):
            return name
    return None


def _plant(document: dict[str, Any], choice: int, seed: int) -> dict[str, Any]:
    """The document with one fault that changes no edge of the graph."""
    planted = json.loads(json.dumps(document))
    steps = planted["steps"]
    ids = list(steps)
    victim = steps[random.Random(seed).choice(ids)]
    if choice == 0:
        victim["bogus_field"] = 1
    elif choice == 1:
        steps["orphan_step"] = {"type": "hangup"}
    elif choice == 2:
        planted["unknown_top"] = True
    elif choice == 3:
        field = _template_field(victim)
        if field is None:
            victim["bogus_field"] = 1
        else:
            victim[field] += " <<unclosed"
    else:
        steps["spin_step"] = {"type": "set_variables", "variables": {"a": 1}, "next": "spin_step"}
    return planted


def _found(findings: list[Finding]) -> Counter[tuple[str, str, str | None, str | None]]:
    return Counter(
        (finding.severity, finding.message, finding.position.step, finding.position.field)
        for finding in findings
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(), st.integers(0, 4), st.integers(0, 1000))
def test_a_planted_fault_hides_no_finding_of_the_clean_flow(
    document: dict[str, Any], choice: int, seed: int
) -> None:
    _, clean = check_flow_text(json.dumps(document), name="f.json")
    _, faulty = check_flow_text(json.dumps(_plant(document, choice, seed)), name="f.json")
    assert not _found(clean) - _found(faulty)
    assert len(faulty) > len(clean)
    places = [(item.position.line or 0, item.position.column or 0) for item in faulty]
    assert places == sorted(places)


def test_a_kinds_own_checks_run_beside_a_field_fault() -> None:
    text = (
        "flow: t\nstart: a\nsteps:\n  a:\n    type: http_request\n"
        "    endpoint: https://x.example.com/\n    timeout: banana\n    body: {a: 1}\n"
        "    next: b\n  b: {type: hangup}\n"
    )
    _, findings = check_flow_text(text)
    assert [(finding.position.line, finding.position.field) for finding in findings] == [
        (4, "on_failure"),  # needs on_failure
        (7, "timeout"),
        (8, "body"),  # a GET has no body
    ]
