"""Flow documents: every problem is found, named by file:line:column with the step and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import load_yaml

import flowlang
from flowlang.flow import check_flow
from flowlang.flow.model import FlowDocumentError
from flowlang.flow.source import DocumentError

CASES = load_yaml(Path(__file__).parent / "flow_cases" / "invalid_flows.yaml")["cases"]


def _summary(finding: Any) -> str:
    first = finding.message.splitlines()[0]
    return f"{finding.position.line}:{finding.position.column} {first}"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_flow_findings(case: dict[str, Any]) -> None:
    try:
        flow, findings = check_flow(case["flow"], filename="flow.yaml")
    except DocumentError as error:
        findings = [error]
        flow = None
        summaries = [f"{error.position.line}:{error.position.column} {error.message}"]
    else:
        summaries = [_summary(finding) for finding in findings]
    assert summaries == case["errors"]
    assert (flow is None) == bool(case["errors"])
    for finding in findings:
        rendered = str(finding) if isinstance(finding, DocumentError) else finding.render()
        assert "flow.yaml:" in rendered and "^" in rendered


def test_load_flow_raises_with_every_finding() -> None:
    text = "flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi, next: nowhere}\n  b: {type: hangup}\n"
    with pytest.raises(flowlang.FlowDocumentError) as caught:
        flowlang.load_flow(text, filename="flows/t.yaml")
    rendered = str(caught.value)
    assert "flows/t.yaml:4:34 (step 'a', field 'next')" in rendered
    assert "flows/t.yaml:5:3 (step 'b')" in rendered
    assert len(caught.value.findings) == 2


def test_json_documents_load_like_yaml() -> None:
    text = '{"flow": "t", "start": "a", "steps": {"a": {"type": "say", "text": "hi <<contact.name>>"}}}'
    flow = flowlang.load_flow(text)
    assert flow.steps["a"].fields["text"].render({"contact": {"name": "Ann"}}) == "hi Ann"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
        ("a: !!python/object:os.system x\n", "is not allowed"),
        ("a: [" * 200 + "]" * 200, "nests deeper than 64 levels"),
        ("a: [1\n", "invalid YAML"),
        ("", "document is empty"),
    ],
)
def test_hostile_documents_are_refused_with_a_position(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        flowlang.load_flow(text)
    assert message in str(caught.value)


def test_examples_are_valid() -> None:
    for path in sorted((Path(__file__).parent.parent / "examples" / "flows").glob("*.yaml")):
        if path.name.endswith(".responses.yaml"):
            continue
        flow, findings = check_flow(path)
        assert flow is not None and findings == [], (path, [f.render() for f in findings])


def test_a_flow_text_is_never_taken_for_a_path(tmp_path: Path) -> None:
    """Issue 8 item 13's rule for flows too: a str is the document; a file is read only when
    the caller says so (path= or a Path), so text from elsewhere never opens a local file."""
    path = tmp_path / "flow.yaml"
    path.write_text("flow: f\nstart: a\nsteps:\n  a: {type: hangup}\n")
    with pytest.raises(FlowDocumentError, match="to read a file, pass path="):
        flowlang.load_flow(str(path))
    assert flowlang.load_flow(path=str(path)).name == "f"
    assert flowlang.load_flow(path).name == "f"
    with pytest.raises(TypeError):
        flowlang.load_flow("flow: f", path=str(path))
