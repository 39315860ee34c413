"""``flowlang check --format text|json|github|sarif``, ``-`` for standard input, ``--syntax``,
and the ``{{...}}`` warning; outside text in findings escaped in every format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import cli

from flowlang import check_flow, check_flow_text
from flowlang.automations import check_workflow_text
from flowlang.cli.reports import RULES, artifact_uri, escape_data, escape_property
from flowlang.engine import Engine

BROKEN = (
    "flow: t\nstart: a\nsteps:\n"
    "  a: {type: say, text: 'Hi <<contact.name', next: b}\n"
    "  b: {type: say, text: 'Bye'}\n"
)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "my flows" / "bad,one:x%.yaml"  # a name that needs escaping everywhere
    path.parent.mkdir()
    path.write_text(BROKEN)
    return path


def test_text_is_the_default_and_has_carets(broken: Path) -> None:
    status, out = cli("check", str(broken))
    assert status == 1
    assert f"{broken}:4:28 (step 'a', field 'text')" in out
    assert "\x1b[" not in out  # not a terminal
    assert out.rstrip().endswith("1 file checked: 1 error, 0 warnings")


def test_json_is_one_document(broken: Path, tmp_path: Path) -> None:
    status, out = cli("check", "--format", "json", str(broken), str(tmp_path / "missing.yaml"))
    assert status == 2  # an unreadable file wins: bad input
    document = json.loads(out)
    assert set(document) == {"findings", "summary"}
    assert document["summary"] == {"files": 2, "errors": 2, "warnings": 0}
    first, missing = document["findings"]
    assert first == {
        "file": str(broken),
        "line": 4,
        "column": 28,
        "severity": "error",
        "rule": "error",
        "message": "expected '>>' to close the expression opened here",
        "step": "a",
        "field": "text",
    }
    assert missing["rule"] == "unreadable" and missing["line"] is None
    assert "missing.yaml" in missing["message"]


def test_json_of_a_clean_file_has_no_findings() -> None:
    flow = str(Path(__file__).parent.parent / "examples" / "flows" / "vip_routing.yaml")
    status, out = cli("check", "--format", "json", flow)
    assert status == 0
    assert json.loads(out) == {
        "findings": [],
        "summary": {"files": 1, "errors": 0, "warnings": 0},
    }


def test_a_document_that_does_not_parse_is_a_syntax_finding(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("flow: t\nsteps: [\n")
    status, out = cli("check", "--format", "json", str(path))
    assert status == 1
    (finding,) = json.loads(out)["findings"]
    assert finding["rule"] == "syntax" and finding["severity"] == "error"
    assert isinstance(finding["line"], int) and isinstance(finding["column"], int)


def test_github_annotations(broken: Path) -> None:
    status, out = cli("check", "--format", "github", str(broken))
    assert status == 1
    line = out.splitlines()[0]
    file = str(broken).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert line == (
        f"::error file={file},line=4,col=28,"
        "title=flowlang error (step 'a'%2C field 'text')"
        "::expected '>>' to close the expression opened here"
    )
    assert len(out.splitlines()) == 1


def test_toolkit_escaping_rules() -> None:
    """As actions/toolkit's escapeData and escapeProperty (packages/core/src/command.ts)."""
    assert escape_data("50% a\r\nb: c, d") == "50%25 a%0D%0Ab: c, d"
    assert escape_property("50% a\r\nb: c, d") == "50%25 a%0D%0Ab%3A c%2C d"
    assert escape_data("%0A") == "%250A"  # an escape in the text stays text


def sarif(out: str) -> dict[str, Any]:
    """The SARIF log, checked against the properties SARIF 2.1.0 requires (no schema is
    available offline): version, runs, tool.driver.name, each result's message.text, and
    the shape of locations and regions."""
    log = json.loads(out)
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "flowlang"
    assert isinstance(driver["version"], str) and driver["version"]
    assert re.fullmatch(r"https://\S+", driver["informationUri"])
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert rule_ids == list(RULES)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note", "none")
    for result in run["results"]:
        assert result["ruleId"] in rule_ids
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note", "none")
        assert isinstance(result["message"]["text"], str) and result["message"]["text"]
        for location in result.get("locations", []):
            physical = location["physicalLocation"]
            uri = physical["artifactLocation"]["uri"]
            assert re.fullmatch(r"[A-Za-z0-9._~:/%!$&'()*+,;=@-]+", uri), uri
            region = physical.get("region")
            if region is not None:
                assert set(region) == {"startLine", "startColumn"}
                assert region["startLine"] >= 1 and region["startColumn"] >= 1
    return log


def test_sarif_log(broken: Path) -> None:
    status, out = cli("check", "--format", "sarif", str(broken))
    assert status == 1
    (result,) = sarif(out)["runs"][0]["results"]
    assert result["ruleId"] == "error" and result["level"] == "error"
    assert result["message"]["text"] == "expected '>>' to close the expression opened here"
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == artifact_uri(str(broken))
    assert physical["artifactLocation"]["uri"].startswith("file:///")
    assert "my%20flows/bad%2Cone%3Ax%25.yaml" in physical["artifactLocation"]["uri"]
    assert physical["region"] == {"startLine": 4, "startColumn": 28}
    assert result["properties"] == {"step": "a", "field": "text"}


def test_artifact_uris() -> None:
    assert artifact_uri("flows/a b.yaml") == "flows/a%20b.yaml"
    assert artifact_uri("/x/#?.yaml") == "file:///x/%23%3F.yaml"


def test_standard_input_is_read_with_dash() -> None:
    status, out = cli("check", "--format", "json", "-", stdin=BROKEN)
    assert status == 1
    findings = json.loads(out)["findings"]
    assert {finding["file"] for finding in findings} == {"<stdin>"}
    status, out = cli("check", "-", stdin=BROKEN)
    assert "<stdin>:4:28 (step 'a', field 'text')" in out
    status, out = cli("check", "--format", "sarif", "-", stdin=BROKEN)
    assert "locations" not in sarif(out)["runs"][0]["results"][0]  # no file to point at


def test_standard_input_once_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("check", "-", "-", stdin=BROKEN)[0] == 2
    assert "standard input ('-') can be read once only" in capsys.readouterr().err


# --- {{...}} in the default syntax --------------------------------------------------------------

BRACES = (
    "flow: t\nstart: a\nsteps:\n"
    "  a: {type: say, text: 'Hi {{contact.name}} and <<call.id>>', next: b}\n"
    "  b:\n    type: say\n    text: Bye {{ contact.first_name }}\n"
)


def test_literal_braces_are_a_warning_with_their_place() -> None:
    flow, findings = check_flow_text(BRACES, name="f.yaml")
    assert flow is not None  # a warning does not stop the flow
    assert [(f.severity, f.position.line, f.position.column) for f in findings] == [
        ("warning", 4, 28),
        ("warning", 7, 15),
    ]
    assert findings[0].message.startswith("'{{contact.name}}' is sent as literal text")
    assert "write <<contact.name>>" in findings[0].message
    assert flow.warnings == tuple(findings)
    status, out = cli("check", "-", stdin=BRACES)
    assert status == 0  # warnings alone
    assert "1 file checked: 0 errors, 2 warnings" in out


def test_literal_braces_do_not_hide_the_errors_found_later() -> None:
    text = BRACES.replace("next: b}", "next: nowhere}")
    _, findings = check_flow_text(text)
    assert [(f.severity, f.position.line) for f in findings] == [
        ("warning", 4),
        ("error", 4),
        ("error", 5),  # b is unreachable now
        ("warning", 7),
    ]
    assert "goes to step 'nowhere', which does not exist" in findings[1].message


def test_cloudtalk_syntax_reads_braces_as_templates(tmp_path: Path) -> None:
    _, findings = check_flow_text(BRACES, engine=Engine(syntax="cloudtalk"))
    assert findings == []
    path = tmp_path / "f.yaml"
    path.write_text(BRACES)
    assert cli("check", "--syntax", "cloudtalk", str(path)) == (
        0,
        "1 file checked: 0 errors, 0 warnings\n",
    )
    assert check_flow(path)[1] != []


def test_workflows_warn_too() -> None:
    text = (
        "workflow: w\ntrigger: call.ended\nactions:\n"
        "  - {name: a, type: slack_notification, token: '<<secrets.t>>', channel: '#x', "
        "text: 'call {{event.call.id}}'}\n"
    )
    workflow, findings = check_workflow_text(text)
    assert workflow is not None, findings
    assert [f.severity for f in findings] == ["warning"]
    assert "'{{event.call.id}}' is sent as literal text" in findings[0].message


def test_braces_inside_a_hole_or_unclosed_are_not_reported() -> None:
    text = "flow: t\nstart: a\nsteps:\n  a: {type: say, text: \"<<'{{x}}'>> {{ open\"}\n"
    assert check_flow_text(text)[1] == []


def test_brace_warnings_are_bounded() -> None:
    steps = "".join(
        f"  s{i}: {{type: say, text: '{{{{x}}}}', next: s{i + 1}}}\n" for i in range(300)
    )
    text = f"flow: t\nstart: s0\nsteps:\n{steps}  s300: {{type: hangup}}\n"
    assert len(check_flow_text(text)[1]) == 100
