"""The shipped JSON Schema of workflows is current, accepts every example, agrees with the loader
both ways, and `flowlang schema` prints both schemas shipped in the package."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from support import load_yaml

import flowlang
from flowlang.automations import check_workflow_text, load_workflow_text
from flowlang.automations.schema import SCHEMA_FILE, workflow_schema
from flowlang.cli import main
from flowlang.flow.schema import SCHEMA_FILE as FLOW_SCHEMA_FILE
from flowlang.flow.schema import flow_schema
from flowlang.flow.source import DocumentError, load_document

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "workflows"
CASES = load_yaml(Path(__file__).parent / "flow_cases" / "invalid_workflows.yaml")["cases"]
PLANTED = Path(__file__).parent / "flow_cases" / "planted_workflows"
SCHEMA = workflow_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_shipped_schema_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_match_the_schema(path: Path) -> None:
    VALIDATOR.validate(load_document(path).data)


# Findings the schema cannot express: templates and what they read, references between actions,
# names unique in the list, fixed values a template field must hold, and the hosts a run lets
# plain http reach (--allow-host).
_BEYOND_SCHEMA = (
    "plain http to",
    "expected a filter",
    "expected an expression",
    "does not parse",
    "does not run before",
    "there is no action",
    "is not there",
    "not available here",
    "secrets may only",
    "is used twice",
    "E.164",
    "recording_origin is https",
    "host cannot be templated",
    "must be fixed text",
    "invalid endpoint",
    "line break",
    "is not a valid header",
)


def _documents() -> list[Any]:
    params = [pytest.param(case["workflow"], id=case["name"]) for case in CASES]
    for path in sorted(PLANTED.glob("*.yaml")):
        if not path.name.endswith(".expected.yaml"):
            params.append(pytest.param(path.read_text(), id=f"planted: {path.stem}"))
    return params


@pytest.mark.parametrize("text", _documents())
def test_schema_and_loader_agree(text: str) -> None:
    """What the loader refuses, the schema refuses (unless only for reasons beyond a schema);
    what the schema refuses, the loader refuses."""
    try:
        data = load_document(text).data
    except DocumentError:
        pytest.skip("not readable as a document")
    errors = [f.message for f in check_workflow_text(text)[1] if f.severity == "error"]
    if VALIDATOR.is_valid(data):
        assert not errors or all(
            any(word in error for word in _BEYOND_SCHEMA) for error in errors
        ), errors
    else:
        assert errors, [error.message for error in VALIDATOR.iter_errors(data)]


def test_schema_refuses_a_body_on_get_and_delete() -> None:
    action = {"name": "a", "type": "api_request", "endpoint": "https://crm.example.com/x"}
    values = [{"key": "k", "value": "v"}]
    for method in ("GET", "get", "DELETE", "delete"):
        document = {
            "workflow": "w",
            "trigger": "call.ended",
            "actions": [{**action, "method": method, "values": values}],
        }
        (error,) = VALIDATOR.iter_errors(document)
        # The values line, as flowlang check marks it, not the whole action.
        assert list(error.absolute_path) == ["actions", 0, "values"], method
        del document["actions"][0]["values"]
        assert VALIDATOR.is_valid(document), method


# --- documents the schema accepts load: drawn from the schema's own examples ---------------


def _from_schema(node: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """A value of a field, drawn from what its schema offers an editor: examples, the enum, a
    const, the default, or true and false."""
    if "examples" in node:
        return st.sampled_from(node["examples"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "const" in node:
        return st.just(node["const"])
    if "default" in node:
        return st.just(node["default"])
    if node.get("type") == "boolean":
        return st.booleans()
    raise AssertionError(f"a field offers no value to draw: {node}")  # pragma: no cover


def _action_schemas() -> list[dict[str, Any]]:
    return [rule["then"] for rule in SCHEMA["properties"]["actions"]["items"]["allOf"]]


@st.composite
def _action(draw: st.DrawFn, then: dict[str, Any], index: int) -> dict[str, Any]:
    action = {}
    for name, node in then["properties"].items():
        if name in then["required"] or draw(st.booleans()):
            action[name] = draw(_from_schema(node))
    action["name"] = f"{action['name']}_{index}"  # names are unique in a workflow
    return action


@st.composite
def _workflows(draw: st.DrawFn) -> dict[str, Any]:
    top = SCHEMA["properties"]
    kinds = draw(st.lists(st.sampled_from(_action_schemas()), min_size=1, max_size=4))
    document: dict[str, Any] = {
        "workflow": "drawn",
        "trigger": draw(_from_schema(top["trigger"])),
        "actions": [draw(_action(then, index)) for index, then in enumerate(kinds)],
    }
    condition = draw(st.sampled_from(["conditions", "expression", None]))
    if condition is not None:
        document[condition] = draw(_from_schema(top[condition]))
    return document


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(document=_workflows())
def test_what_the_schema_accepts_loads(document: dict[str, Any]) -> None:
    if not VALIDATOR.is_valid(document):
        return  # the schema's rules across fields refused the draw (a GET with values ...)
    workflow = load_workflow_text(json.dumps(document), name="drawn.json")
    assert [action.id for action in workflow.actions] == [a["name"] for a in document["actions"]]


def test_draws_reach_every_action_kind_and_optional_field() -> None:
    """The strategy above is not vacuous: every action kind has an example for every field."""
    for then in _action_schemas():
        for node in then["properties"].values():
            assert isinstance(_from_schema(node), st.SearchStrategy)


# --- flowlang schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "generated"),
    [("flow", FLOW_SCHEMA_FILE, flow_schema()), ("workflow", SCHEMA_FILE, SCHEMA)],
)
def test_schema_command_prints_the_shipped_schema(
    document: str, path: Path, generated: dict[str, Any]
) -> None:
    out = io.StringIO()
    assert main(["schema", document], stdout=out) == 0
    assert out.getvalue() == path.read_text(encoding="utf-8")
    assert json.loads(out.getvalue()) == generated
    located = io.StringIO()
    assert main(["schema", document, "--path"], stdout=located) == 0
    shown = Path(located.getvalue().removesuffix("\n"))
    assert shown == path and shown.is_file()
    assert shown.is_relative_to(Path(flowlang.__file__).parent)


def test_schema_command_refuses_other_documents(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["schema", "steps\x1b[31m"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_schema_command_names_a_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowlang.cli import schemas

    monkeypatch.setitem(schemas.SCHEMAS, "workflow", tmp_path / "workflow.schema.json")
    assert main(["schema", "workflow"], stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "the workflow schema is missing from the installed package" in err
    assert str(tmp_path) in err and "Traceback" not in err


def _editor_support() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Editor support\n", 1)[1]
    return section.split("\n## ", 1)[0]


def test_readme_editor_support_is_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands the README shows run and write the files its settings name."""
    text = _editor_support()
    commands = text.split("```sh\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".vscode").mkdir()
    ran = 0
    for line in commands.splitlines():
        words = line.split("#", 1)[0].split()
        assert words[0] == "flowlang", line
        target = words[words.index(">") + 1] if ">" in words else None
        argv = words[1 : words.index(">")] if target else words[1:]
        out = io.StringIO()
        assert main(argv, stdout=out) == 0, line
        if target:
            Path(target).write_text(out.getvalue(), encoding="utf-8")
        ran += 1
    assert ran == 3
    settings = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    for schema_file, globs in settings["yaml.schemas"].items():
        document = json.loads((tmp_path / schema_file).read_text())
        assert document["title"].startswith("flowlang") and globs
    modeline = text.split("```yaml\n", 1)[1].splitlines()[0]
    relative = modeline.removeprefix("# yaml-language-server: $schema=")
    assert (tmp_path / "workflows" / relative).resolve() == tmp_path / ".vscode" / (
        "workflow.schema.json"
    )


# --- what the schema accepts, the loader accepts: documents drawn from the schema itself -----

#: Annotations, not rules: left out of the schemas handed to hypothesis-jsonschema.
_ANNOTATIONS = ("description", "examples", "default", "title")


def _leaf(node: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if key not in _ANNOTATIONS}


def _drawn(node: Mapping[str, Any], depth: int = 2) -> st.SearchStrategy[Any]:
    """Values of the schema ``node``: maps and lists are put together here (small, each part
    drawn from its own schema, ``$defs`` followed ``depth`` levels deep), scalars drawn by
    hypothesis-jsonschema (whose own maps need Hypothesis internals the installed Hypothesis no
    longer has, and which does not follow recursive references)."""
    if "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    types = node.get("type")
    if types == "object":
        return _drawn_map(node, depth)
    items = node.get("items")
    if types == "array" and isinstance(items, Mapping):
        return st.lists(_drawn(items, depth), min_size=node.get("minItems", 0), max_size=3)
    if isinstance(types, list) and {"array", "object"} & set(types):
        scalars = [name for name in types if name not in ("array", "object")]
        shape = ("items", "propertyNames", "additionalProperties")
        scalar = {key: value for key, value in _leaf(node).items() if key not in shape}
        options = [from_schema({**scalar, "type": scalars})]
        if depth > 0 and "array" in types:
            options.append(st.lists(_drawn(node["items"], depth - 1), max_size=3))
        if depth > 0 and "object" in types:
            options.append(_drawn_map({**node, "type": "object"}, depth - 1))
        return st.one_of(options)
    return from_schema(_leaf(node))


@st.composite
def _drawn_map(draw: st.DrawFn, node: Mapping[str, Any], depth: int = 2) -> dict[str, Any]:
    required = node.get("required", [])
    out = {}
    for name, field_node in node.get("properties", {}).items():
        if name in required or draw(st.booleans()):
            out[name] = draw(_drawn(field_node, depth))
    more = node.get("additionalProperties")
    if isinstance(more, Mapping):
        names = from_schema({"type": "string", **node.get("propertyNames", {})})
        extra = draw(st.dictionaries(names, _drawn(more, depth), max_size=3))
        out.update({key: value for key, value in extra.items() if key not in out})
    return out


@st.composite
def _schema_workflows(draw: st.DrawFn) -> dict[str, Any]:
    top = SCHEMA["properties"]
    document: dict[str, Any] = {
        name: draw(_drawn(top[name]))
        for name in ("workflow", "trigger", "description", "conditions", "expression")
        if name in SCHEMA["required"] or draw(st.booleans())
    }
    kinds = draw(st.lists(st.sampled_from(_action_schemas()), min_size=1, max_size=3))
    document["actions"] = [draw(_drawn_map(then)) for then in kinds]
    return document


#: What a drawn document the schema accepts may still be refused for, fairly: what no schema
#: states (see _BEYOND_SCHEMA; a drawn text holding ``<<`` is rarely a sound template), keys of
#: a values list that clash across entries (``a`` and ``a.b``: a rule between items), and a
#: duration written as text out of range (the schema checks its spelling; a range over spelled
#: numbers and units is no rule a schema states readably; a number is bounded by the schema).
_FAIR = (*_BEYOND_SCHEMA, "to close the expression", "conflicts with", "timeout must be between")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(document=_schema_workflows())
def test_what_the_schema_accepts_the_loader_accepts(document: dict[str, Any]) -> None:
    if not VALIDATOR.is_valid(document):
        return  # refused by a rule across fields (a GET with values, both conditions forms ...)
    errors = [
        f.message
        for f in check_workflow_text(json.dumps(document), name="drawn.json")[1]
        if f.severity == "error"
    ]
    unfair = [error for error in errors if not any(word in error for word in _FAIR)]
    assert not unfair, (unfair, document)


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("name", "a", True),
        ("name", "a\n", False),  # Python's re lets $ match before a final line break
        ("values", [{"key": ".".join(["a"] * 64), "value": 1}], True),
        ("values", [{"key": ".".join(["a"] * 65), "value": 1}], False),
        ("headers", {"X-A": "a\tb"}, True),
        ("headers", {"X-A": "a\x1fb"}, False),
        ("headers", {"X-A": "café"}, False),
        ("headers", {"X-A": "<<event.properties.name>> café"}, True),  # checked when sent
        ("headers", {"X-A": 5}, True),
    ],
)
def test_schema_refuses_what_the_loader_refuses(field: str, value: Any, valid: bool) -> None:
    action = {"name": "a", "type": "api_request", "endpoint": "https://crm.example.com/x"}
    document = {"workflow": "w", "trigger": "call.ended", "actions": [{**action, field: value}]}
    assert VALIDATOR.is_valid(document) is valid
    errors = [f for f in check_workflow_text(json.dumps(document))[1] if f.severity == "error"]
    assert (not errors) is valid, errors
