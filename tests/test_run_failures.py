"""A run that fails inside a step names the step, the field and the place (file:line:column and
a caret under the failing text), and leaves a ``failed`` trace row; on both step loops."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from flowlang import Engine, RunResult, RuntimeSettings, load_flow_text, run_sync
from flowlang.cli import main
from flowlang.expr.backends import AVAILABLE
from flowlang.runtime.host import RecordingHost
from flowlang.runtime.secrets import MappingSecrets

SECRET = "s3cret-value-9431"


def _run(text: str, loop: str, context: dict[str, Any], **engine: Any) -> RunResult:
    flow = load_flow_text(text, name="flow.yaml", engine=Engine(backend=loop, **engine))
    return run_sync(
        flow,
        context,
        backend=loop,
        host=RecordingHost(),
        secrets=MappingSecrets({"token": SECRET}),
    )


def _failed_row(result: RunResult) -> dict[str, Any]:
    row = result.trace[-1]
    assert row["outcome"] == "failed"
    return row


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_strict_failure_in_a_say_text(loop: str) -> None:
    text = (
        "flow: t\nstart: hi\nsteps:\n"
        "  hi: {type: say, text: 'Hello', next: greet}\n"
        "  greet: {type: say, text: 'Dear <<contact.nmae>>'}\n"
    )
    result = _run(text, loop, {"contact": {"name": "Ada"}}, strict=True)
    assert result.status == "failed"
    assert result.error == (
        "FlowUndefinedError: undefined: contact.nmae: contact has no key .nmae\n"
        "  --> flow.yaml:5:36 (step 'greet', field 'text')\n"
        "  |\n"
        "5 |   greet: {type: say, text: 'Dear <<contact.nmae>>'}\n"
        "  |                                    ^^^^^^^^^^^^"
    )
    assert [row["outcome"] for row in result.trace] == ["said", "failed"]
    row = _failed_row(result)
    assert (row["step"], row["type"]) == ("greet", "say")
    assert row["detail"] == {
        "error": "FlowUndefinedError: undefined: contact.nmae: contact has no key .nmae",
        "field": "text",
    }


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_strict_failure_in_a_block_scalar_template(loop: str) -> None:
    text = (
        "flow: t\nstart: greet\nsteps:\n  greet:\n    type: say\n    text: >\n"
        "      Dear <<contact.name>>,\n\n      your plan is <<contact.plan.tier>>\n"
    )
    result = _run(text, loop, {"contact": {"name": "Ada"}}, strict=True)
    assert result.error is not None
    assert result.error.split("\n")[1:] == [
        "  --> flow.yaml:9:22 (step 'greet', field 'text')",
        "  |",
        "9 |       your plan is <<contact.plan.tier>>",
        "  |                      ^^^^^^^^^^^^^^^^^",
    ]
    assert _failed_row(result)["detail"]["field"] == "text"


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_strict_failure_in_an_http_header_masks_the_secret(loop: str) -> None:
    def boom(value: Any) -> Any:
        raise ValueError(f"cannot use {value}")

    text = (
        "flow: t\nstart: lookup\nsteps:\n  lookup:\n    type: http_request\n"
        "    endpoint: https://crm.example.com/contacts\n"
        "    headers:\n"
        '      Authorization: "Bearer <<secrets.token | boom>>"\n'
        "    next: done\n    on_failure: done\n"
        "  done: {type: say, text: done}\n"
    )
    result = _run(text, loop, {}, strict=True, filters={"boom": boom})
    assert result.error is not None
    assert SECRET not in result.error
    assert SECRET not in json.dumps(result.trace)
    assert result.error.split("\n")[1:] == [
        "  --> flow.yaml:8:30 (step 'lookup', field 'headers.Authorization')",
        "  |",
        '8 |       Authorization: "Bearer <<secrets.token | boom>>"',
        "  |                              ^^^^^^^^^^^^^^^^^^^^^^^^",
    ]
    row = _failed_row(result)
    assert (row["step"], row["type"]) == ("lookup", "http_request")
    assert row["detail"]["field"] == "headers.Authorization"


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_strict_failure_in_a_condition_branch(loop: str) -> None:
    text = (
        "flow: t\nstart: route\nsteps:\n  route:\n    type: condition_splitter\n"
        "    branches:\n"
        "      - conditions:\n"
        "          - {property: '<<contact.tier>>', operator: equals, value: gold}\n"
        "        next: done\n"
        "    otherwise: done\n"
        "  done: {type: say, text: done}\n"
    )
    result = _run(text, loop, {"contact": {}}, strict=True)
    assert result.error is not None
    assert result.error.split("\n")[1] == (
        "  --> flow.yaml:8:27 (step 'route', field 'branches[0].conditions[0].property')"
    )
    assert result.error.split("\n")[-2:] == [
        "8 |           - {property: '<<contact.tier>>', operator: equals, value: gold}",
        "  |                           ^^^^^^^^^^^^",
    ]
    assert _failed_row(result)["type"] == "condition_splitter"


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_strict_failure_in_a_json_document(loop: str) -> None:
    text = json.dumps(
        {"flow": "t", "start": "a", "steps": {"a": {"type": "say", "text": "\u263a\n<<x.y>>"}}},
        indent=1,
    )
    flow = load_flow_text(text, name="flow.json", engine=Engine(backend=loop, strict=True))
    result = run_sync(flow, {}, backend=loop, host=RecordingHost())
    assert result.error is not None
    assert result.error.split("\n")[1:] == [
        "  --> flow.json:7:23 (step 'a', field 'text')",
        "  |",
        '7 |    "text": "\\u263a\\n<<x.y>>"',
        "  |                       ^^^",
    ]


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_data_limit_keeps_its_message_and_leaves_a_row(loop: str) -> None:
    text = (
        "flow: t\nstart: keep\nsteps:\n  keep:\n    type: set_variables\n"
        "    variables: {big: '<<contact.big>>'}\n"
    )
    flow = load_flow_text(text, name="flow.yaml", engine=Engine(backend=loop))
    settings = RuntimeSettings(max_value_size=1024)
    result = run_sync(flow, {"contact": {"big": "x" * 2000}}, backend=loop, settings=settings)
    assert result.status == "failed"
    assert result.error == (
        "step 'keep' cannot set vars.big: vars.big is larger than 1024 bytes "
        "(RuntimeSettings.max_value_size)"
    )
    row = _failed_row(result)
    assert (row["step"], row["type"]) == ("keep", "set_variables")
    assert row["detail"] == {"error": result.error}


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_host_exception_names_no_place_but_leaves_a_row(loop: str) -> None:
    class BrokenHost(RecordingHost):
        async def say(self, text: str, *, step: str) -> None:
            raise RuntimeError("the host is down")

    flow = load_flow_text(
        "flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi}\n",
        name="flow.yaml",
        engine=Engine(backend=loop),
    )
    result = run_sync(flow, {}, backend=loop, host=BrokenHost())
    assert result.error == "RuntimeError: the host is down"
    assert _failed_row(result)["detail"] == {"error": "RuntimeError: the host is down"}


def test_the_run_command_shows_the_place(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "flow: t\nstart: hello\nsteps:\n  hello:\n    type: say\n    text: |-\n"
        "      Twice:\n      <<contact.big>><<contact.big>>\n",
        encoding="utf-8",
    )
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"contact": {"big": "x" * 60_000}}), encoding="utf-8")
    out = io.StringIO()
    status = main(["run", str(flow), "--context", str(context)], stdout=out, stdin=io.StringIO())
    assert status == 1
    lines = out.getvalue().splitlines()
    at = lines.index(
        "result: failed: FlowLimitError: rendered text is longer than the limit of "
        "100000 characters"
    )
    assert lines[at + 1 :] == [
        f"  --> {flow}:8:7 (step 'hello', field 'text')",
        "  |",
        "8 |       <<contact.big>><<contact.big>>",
        "  |       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    ]
    assert any("failed" in line and "hello" in line for line in lines[:at])


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_failure_in_a_huge_one_line_document_shows_a_window(loop: str) -> None:
    filler = {
        f"s{index}": {"type": "say", "text": "x" * 200, "next": f"s{index + 1}"}
        for index in range(2000)
    }
    filler["s1999"].pop("next")
    steps = {"a": {"type": "say", "text": "y" * 5000 + "<<x.y>>", "next": "s0"}, **filler}
    text = json.dumps({"flow": "t", "start": "a", "steps": steps})
    assert len(text) > 400_000 and "\n" not in text
    flow = load_flow_text(text, name="flow.json", engine=Engine(backend=loop, strict=True))
    result = run_sync(flow, {}, backend=loop, host=RecordingHost())
    assert result.error is not None
    _, place, _, line, marker = result.error.split("\n")
    assert place == "  --> flow.json:1:5071 (step 'a', field 'text')"
    assert len(line) < 120 and line.startswith("1 | …")
    assert line[marker.index("^") : marker.index("^") + 3] == "x.y"


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_flow_without_its_document_names_the_field(loop: str) -> None:
    import dataclasses

    text = "flow: t\nstart: a\nsteps:\n  a:\n    type: say\n    text: '<<x.y>>'\n"
    flow = load_flow_text(text, name="flow.yaml", engine=Engine(backend=loop, strict=True))
    bare = dataclasses.replace(flow, source="", prepared={})
    result = run_sync(bare, {}, backend=loop, host=RecordingHost())
    assert result.error is not None
    assert result.error.split("\n")[1:] == ["  --> flow.yaml:6:12 (step 'a', field 'text')"]
    assert _failed_row(result)["detail"]["field"] == "text"


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_byte_order_mark_counts_in_no_column(loop: str) -> None:
    """A document that starts with U+FEFF: the caret is under the failing text on line 1."""
    text = "\ufeff{flow: t, start: a, steps: {a: {type: say, text: 'hi <<contact.nope>>'}}}\n"
    result = _run(text, loop, {"contact": {}}, strict=True)
    assert "--> flow.yaml:1:56 (step 'a', field 'text')" in (result.error or "")
    assert result.error is not None and result.error.endswith("^" * 12)


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_long_message_never_pushes_the_place_out(loop: str) -> None:
    def shout(value: Any) -> Any:
        raise ValueError("y" * 5000)

    text = "flow: t\nstart: a\nsteps:\n  a: {type: say, text: '<<contact.name | shout>>'}\n"
    flow = load_flow_text(
        text, name="flow.yaml", engine=Engine(backend=loop, filters={"shout": shout})
    )
    result = run_sync(flow, {"contact": {"name": "x"}}, backend=loop)
    assert result.status == "failed"
    assert "--> flow.yaml:4:" in (result.error or "")
    assert (result.error or "").rstrip().endswith("^")


def test_a_flow_that_fails_again_and_again_is_read_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowlang.runtime import failures

    reads = []
    original = failures.load_document
    monkeypatch.setattr(
        failures, "load_document", lambda *a, **k: reads.append(1) or original(*a, **k)
    )
    text = "flow: t\nstart: a\nsteps:\n  a: {type: say, text: 'Dear <<contact.nope>>'}\n"
    flow = load_flow_text(text, name="flow.yaml", engine=Engine(strict=True))
    for _ in range(3):
        assert run_sync(flow, {"contact": {}}).status == "failed"
    assert len(reads) == 1
