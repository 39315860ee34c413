"""Flow documents: every problem is found, named by file:line:column with the step and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import load_yaml

import flowlang
from flowlang.flow import check_flow, check_flow_text
from flowlang.flow.model import FlowDocumentError
from flowlang.flow.source import DocumentError

CASES = load_yaml(Path(__file__).parent / "flow_cases" / "invalid_flows.yaml")["cases"]


def _summary(finding: Any) -> str:
    first = finding.message.splitlines()[0]
    return f"{finding.position.line}:{finding.position.column} {first}"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_flow_findings(case: dict[str, Any]) -> None:
    try:
        flow, findings = check_flow_text(case["flow"], name="flow.yaml")
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
        flowlang.load_flow_text(text, name="flows/t.yaml")
    rendered = str(caught.value)
    assert "flows/t.yaml:4:34 (step 'a', field 'next')" in rendered
    assert "flows/t.yaml:5:3 (step 'b')" in rendered
    assert len(caught.value.findings) == 2


def test_json_documents_load_like_yaml() -> None:
    text = '{"flow": "t", "start": "a", "steps": {"a": {"type": "say", "text": "hi <<contact.name>>"}}}'
    flow = flowlang.load_flow_text(text)
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
        flowlang.load_flow_text(text)
    assert message in str(caught.value)


def test_examples_are_valid() -> None:
    for path in sorted((Path(__file__).parent.parent / "examples" / "flows").glob("*.yaml")):
        if path.name.endswith(".responses.yaml"):
            continue
        flow, findings = check_flow(path)
        assert flow is not None and findings == [], (path, [f.render() for f in findings])


def test_paths_and_texts_are_separate_calls(tmp_path: Path) -> None:
    """Issue 9: ``load_flow`` reads a file (a str is a path, as for ``open``) and
    ``load_flow_text`` parses text, so a typo in a path is a missing file, never a confusing
    document error, and text from elsewhere never opens a local file."""
    path = tmp_path / "flow.yaml"
    path.write_text("flow: f\nstart: a\nsteps:\n  a: {type: hangup}\n")
    assert flowlang.load_flow(str(path)).name == "f"
    assert flowlang.load_flow(path).name == "f"
    assert flowlang.load_flow_text(path.read_text()).name == "f"
    typo = str(tmp_path / "flwo.yaml")
    with pytest.raises(DocumentError, match=r"cannot read .*flwo\.yaml: No such file"):
        flowlang.load_flow(typo)
    with pytest.raises(FlowDocumentError, match="to read a file, use load_flow"):
        flowlang.load_flow_text(str(path))
    with pytest.raises(ValueError, match="not a file name: use load_flow_text"):
        flowlang.load_flow("flow: f\nstart: a\n")
    with pytest.raises(TypeError):
        flowlang.load_flow_text(path)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flowlang.load_flow(b"flow.yaml")  # type: ignore[arg-type]
    flow = flowlang.load_flow_text(path.read_text(), name="flows/named.yaml")
    assert flow.filename == "flows/named.yaml"
