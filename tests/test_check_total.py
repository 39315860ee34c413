"""``flowlang check`` is total: whatever a flow or workflow document holds, checking it ends in
findings, each placed on a line of the document, never in an exception.

The documents are the example flows and workflows and the planted ones
(tests/flow_cases/planted*/), each with one to three values replaced, inserted or removed at
random places: any JSON value (lists, maps, nulls, booleans, numbers, whole numbers hundreds of
digits long, text with control characters and bidirectional controls, templates good and bad).
The suite runs a few examples; ``--hypothesis-profile thorough`` runs many more.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from flowlang.automations import check_workflow_text
from flowlang.errors import DocumentError
from flowlang.flow.load import check_flow_text
from flowlang.flow.model import Finding
from flowlang.flow.source import load_document

ROOT = Path(__file__).parent.parent
CASES = Path(__file__).parent / "flow_cases"


def _documents(*folders: Path) -> list[Any]:
    paths = [
        path
        for folder in folders
        for path in sorted(folder.glob("*"))
        if path.suffix in (".yaml", ".json") and "expected" not in path.name
    ]
    return [load_document(path, keep_duplicates=True).data for path in paths]


FLOWS = _documents(ROOT / "examples" / "flows", CASES / "planted")
WORKFLOWS = _documents(ROOT / "examples" / "workflows", CASES / "planted_workflows")


def _keys(value: Any) -> set[str]:
    """Every key of a document, at any depth (the field names a mutation may write)."""
    if isinstance(value, dict):
        return {str(key) for key in value} | {k for item in value.values() for k in _keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in _keys(item)}
    return set()


KEYS = sorted(
    {k for document in FLOWS + WORKFLOWS for k in _keys(document)}
    | {"type", "operator", "property", "value", "conditions", "expression", "next", "zzz"}
)

_TEXTS = st.sampled_from(
    [
        "",
        " ",
        "x",
        "GET",
        "Get",
        "po\u017ft",
        "90s",
        "0ms",
        "0.01s",
        " 3 s ",
        "12",
        "#",
        "+14155550100",
        "https://a.example.com/x",
        "http://a.example.com/x",
        "https://a.example.com/<<event.id>>",
        "https://<<vars.host>>/",
        "<<event.id>>",
        "<<contact.name | upper>>",
        "<<secrets.x>>",
        "<<actions.a.result>>",
        "<<a +>>",
        "<<",
        "{{x}}",
        "equals",
        "and",
        "a\n",
        "X-A\n",
        "a.b",
        "a..b",
        ".nan",
        "\u202e<<a>>\u2066",
        "\x1b[2J",
        "\x00",
        "\ud800",
        "\x9b",
    ]
) | st.text(max_size=12)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 20),
    st.integers(-(10**400), 10**400),
    st.sampled_from([16000.0, 1e300, 1.5, -0.0, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXTS,
)
#: Any JSON value, small.
VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths of every map and list in ``value`` (the document itself first)."""
    found = []
    if isinstance(value, (dict, list)):
        found.append(path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found.extend(_containers(item, (*path, key)))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated(draw: st.DrawFn, bases: list[Any]) -> Any:
    """A copy of one of ``bases`` with one to three values replaced, added or removed."""
    document = json.loads(json.dumps(draw(st.sampled_from(bases))))
    for _ in range(draw(st.integers(1, 3))):
        node = _at(document, draw(st.sampled_from(_containers(document))))
        operation = draw(st.sampled_from(["replace", "add", "remove"]))
        if isinstance(node, dict):
            keys = list(node)
            if operation == "remove" and keys:
                del node[draw(st.sampled_from(keys))]
            elif operation == "replace" and keys:
                node[draw(st.sampled_from(keys))] = draw(VALUES)
            else:
                node[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = draw(VALUES)
        elif operation == "remove" and node:
            del node[draw(st.integers(0, len(node) - 1))]
        elif operation == "replace" and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(VALUES)
        else:
            node.insert(draw(st.integers(0, len(node))), draw(VALUES))
    return document


def _texts(document: Any) -> list[tuple[str, str]]:
    """The document as JSON and as YAML (each with its own reader)."""
    out = [("mutated.json", json.dumps(document))]
    with contextlib.suppress(yaml.YAMLError, ValueError):  # text PyYAML cannot write
        out.append(("mutated.yaml", yaml.safe_dump(document, allow_unicode=True)))
    return out


def _assert_placed(findings: list[Finding], text: str) -> None:
    lines = max(1, text.count("\n") + (not text.endswith("\n")))
    for finding in findings:
        assert finding.position.line is not None, finding
        assert 1 <= finding.position.line <= lines, (finding.position, lines)
        assert finding.position.column is not None and finding.position.column >= 1, finding
        assert finding.render()


def _check(check: Any, text: str, name: str) -> list[Finding]:
    """The findings of a check; a document that cannot be read at all (PyYAML writes a lone
    surrogate as an escape its reader refuses) is the one error allowed, and it is placed too."""
    try:
        _, findings = check(text, name=name)
    except DocumentError as error:
        return [Finding(error.message, error.position)]
    return list(findings)


@given(mutated(FLOWS))
def test_check_flow_is_total(document: Any) -> None:
    for name, text in _texts(document):
        _assert_placed(_check(check_flow_text, text, name), text)


@given(mutated(WORKFLOWS))
def test_check_workflow_is_total(document: Any) -> None:
    for name, text in _texts(document):
        _assert_placed(_check(check_workflow_text, text, name), text)


# --- what the property found (each failed with a traceback before) ---------------------------


def _flow_with_row(row: str) -> str:
    return (
        "flow: f\nstart: a\nsteps:\n  a:\n    type: condition_splitter\n    branches:\n"
        f"      - conditions: [{row}]\n        next: b\n    otherwise: b\n  b:\n    type: hangup\n"
    )


def _workflow_with_row(row: str) -> str:
    return (
        "workflow: w\ntrigger: call.ended\nconditions:\n"
        f"  - {row}\n"
        "actions:\n  - {name: a, type: slack_notification, token: t, channel: c, text: hi}\n"
    )


@pytest.mark.parametrize("operator", ["[equals]", "{a: 1}", "[]", "{}"])
@pytest.mark.parametrize("check", [check_flow_text, check_workflow_text])
def test_an_operator_that_is_a_list_or_a_map_is_a_finding(operator: str, check: Any) -> None:
    text = (_flow_with_row if check is check_flow_text else _workflow_with_row)(
        f"{{property: x, operator: {operator}, value: 1}}"
    )
    compiled, findings = check(text)
    assert compiled is None
    assert [f.message.split(" (")[0] for f in findings] == ["expected an operator"]
    assert "found a list" in findings[0].message or "found key/value" in findings[0].message


# --- the shared builder: faults no longer hidden, names exact, messages plain ---------------


def test_every_part_of_a_row_is_checked_whatever_the_others_found() -> None:
    text = _workflow_with_row(
        '{property: "<<event.id +>>", operator: equal, value: "<<event.id |>>"}\n  - {operator: equals}'
    )
    _, findings = check_workflow_text(text)
    messages = [f.message for f in findings]
    assert any("no arithmetic" in m for m in messages)  # in the property
    assert any(m.startswith("unknown operator 'equal'") for m in messages)
    assert any("filter name" in m for m in messages)  # in the value
    assert "a condition needs a property" in messages  # the second row: both of its faults
    assert "operator 'equals' needs a value" in messages


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n", "\nX-A"])
def test_a_header_name_with_a_line_break_is_refused(name: str) -> None:
    flow = (
        "flow: f\nstart: a\nsteps:\n  a:\n    type: http_request\n"
        "    endpoint: https://crm.example.com/x\n"
        f"    headers: {{{json.dumps(name)}: v}}\n    next: b\n    on_failure: b\n"
        "  b: {type: hangup}\n"
    )
    compiled, findings = check_flow_text(flow)
    assert compiled is None
    assert [f.message for f in findings] == [f"{name!r} is not a valid header name"]


@pytest.mark.parametrize(
    ("written", "ok"),
    [("GET", True), ("get", True), ("Get", False), ("po\u017ft", False), ("P\u039fST", False)],
)
def test_a_method_is_one_of_the_exact_ascii_spellings(written: str, ok: bool) -> None:
    flow = (
        "flow: f\nstart: a\nsteps:\n  a:\n    type: http_request\n"
        f"    endpoint: https://crm.example.com/x\n    method: {written}\n"
        "    next: b\n    on_failure: b\n  b: {type: hangup}\n"
    )
    compiled, findings = check_flow_text(flow)
    assert (compiled is not None) == ok, findings
    if not ok:
        assert findings[0].message.startswith("method must be one of GET, POST")


def test_a_missing_type_and_a_list_of_actions_read_plainly() -> None:
    _, findings = check_flow_text("flow: f\nstart: a\nsteps:\n  a: {next: a}\n")
    assert findings[0].message.startswith("a step needs a type: one of ")
    _, findings = check_workflow_text("workflow: w\ntrigger: call.ended\nactions: [1]\n")
    assert findings[0].message.startswith("expected an action, found a number")


def test_a_whole_number_written_with_a_point_is_that_number() -> None:
    flow = (
        "flow: f\nstart: a\nsteps:\n  a:\n    type: collect_input\n"
        "    max_digits: 4.0\n    next: b\n    on_no_input: b\n  b: {type: hangup}\n"
    )
    compiled, findings = check_flow_text(flow)
    assert compiled is not None, findings
    assert compiled.steps["a"].fields["max_digits"] == 4
    _, findings = check_flow_text(flow.replace("4.0", "4.5"))
    assert findings[0].message == "expected a whole number, found 4.5"
