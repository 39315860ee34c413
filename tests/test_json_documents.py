"""JSON documents: read by a JSON reader that keeps the position of every value (issue 9).

Which reader reads a document, what JSON gives (the same data as ``json.loads`` where that is
valid document data), where every mark points, the refusals (golden cases in
tests/golden/documents/json_errors.yaml), the limits, and that any text gives a Document or a
DocumentError, never another exception.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from support import load_yaml

import flowlang
from flowlang.automations import check_workflow_text
from flowlang.errors import SourceLines
from flowlang.flow import check_flow, check_flow_text, load_flow, load_flow_text
from flowlang.flow.jsondoc import JsonSyntaxError
from flowlang.flow.source import MAX_DEPTH, MAX_DOCUMENT, Document, DocumentError, load_document
from flowlang.runtime.runner import run_sync

GOLDEN = load_yaml(Path(__file__).parent / "golden" / "documents" / "json_errors.yaml")["cases"]
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _line_starts(text: str) -> list[int]:
    return [0, *(match.end() for match in _BREAKS.finditer(text))]


def _offset(text: str, packed: int) -> int:
    """The offset in ``text`` of a packed mark (its line and column; the quote of a string)."""
    line, column = packed >> 25, packed >> 1 & 0xFFFFFF
    return _line_starts(text)[line] + column


# --- which reader --------------------------------------------------------------------------------


def test_tab_indented_json_is_read() -> None:
    text = '{\n\t"flow": "t",\n\t"start": "a",\n\t"steps": {\n\t\t"a": {"type": "hangup"}\n\t}\n}\n'
    flow = load_flow_text(text)
    assert flow.name == "t" and list(flow.steps) == ["a"]


def test_a_surrogate_pair_escape_reaches_the_host_as_one_character() -> None:
    text = (
        '{"flow": "t", "start": "a", "steps": {'
        '"a": {"type": "say", "text": "hi \\ud83d\\ude00 <<contact.name>>", "next": "b"},'
        '"b": {"type": "hangup"}}}'
    )
    result = run_sync(load_flow_text(text), {"contact": {"name": "\\uD83D\\uDE00"}})
    assert result.instructions[0]["text"] == "hi \U0001f600 \\uD83D\\uDE00"
    upper = load_document('["\\uD83D\\uDE00"]').data
    assert upper == ["\U0001f600"]


@pytest.mark.parametrize(
    ("text", "name", "data"),
    [
        pytest.param('{"a": [1, 2.5, "x"]}', None, {"a": [1, 2.5, "x"]}, id="json text"),
        pytest.param("\ufeff  \n[true, null]", None, [True, None], id="byte order mark"),
        pytest.param("{a: [1, b]}", None, {"a": [1, "b"]}, id="yaml flow style"),
        pytest.param('{"a": 1,}', None, {"a": 1}, id="yaml allows a trailing comma"),
        pytest.param("a: 1\n", None, {"a": 1}, id="yaml block style"),
        pytest.param("[1, 2]\n", "flow.JSON", [1, 2], id="json by name, any case"),
        pytest.param('"just text"', "x.json", "just text", id="a json scalar by name"),
    ],
)
def test_which_reader(text: str, name: str | None, data: Any) -> None:
    assert load_document(text, filename=name).data == data


def test_a_json_name_is_read_as_json_only(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text("flow: t\nstart: a\n")
    with pytest.raises(JsonSyntaxError, match="invalid JSON: expected a value, found 'f'"):
        load_flow(path)
    with pytest.raises(JsonSyntaxError):
        load_flow_text("{a: 1}", name="pasted.json")


def test_when_neither_reader_reads_it_the_error_found_further_is_shown() -> None:
    # JSON fails at line 3 (the trailing comma in a .yaml-named text); YAML at line 2 (a tab)
    json_like = '{\n\t"a": 1,\n\t"b": [1,,2]\n}\n'
    with pytest.raises(DocumentError) as caught:
        load_document(json_like, filename="flow.yaml")
    assert caught.value.message.startswith("invalid JSON: expected a value, found ','")
    assert (caught.value.position.line, caught.value.position.column) == (3, 10)
    # YAML flow style with a mistake late in it: JSON stops at the first key, YAML later
    yaml_like = "{flow: t, steps: [a, b}\n"
    with pytest.raises(DocumentError) as caught:
        load_document(yaml_like)
    assert caught.value.message.startswith("invalid YAML")


def test_json_refusals_are_not_read_again_as_yaml() -> None:
    """YAML would take a duplicate key's text or a lone surrogate escape: they stay JSON's."""
    for text in ('{"a": 1, "a": 2}', '["\\ud800"]', "[NaN]", "[1e999]"):
        with pytest.raises(DocumentError) as caught:
            load_document(text)
        assert not isinstance(caught.value, JsonSyntaxError)
        assert not caught.value.message.startswith("invalid YAML")


def test_a_json_flow_file_names_file_line_column_with_a_caret(tmp_path: Path) -> None:
    path = tmp_path / "billing.json"
    text = (
        '{\n\t"flow": "t",\n\t"start": "a",\n\t"steps": {\n'
        '\t\t"a": {"type": "say", "text": "hi <<contact.name>>", "next": "mian"},\n'
        '\t\t"main": {"type": "hangup"}\n\t}\n}\n'
    )
    path.write_text(text)
    flow, findings = check_flow(path)
    assert flow is None
    finding, unreachable = findings
    assert finding.message.startswith("next goes to step 'mian', which does not exist")
    assert (finding.position.line, finding.position.column) == (5, 64)
    assert (unreachable.position.line, unreachable.position.column) == (6, 3)
    path.write_text(text.replace("name>>", "name"))
    flow, findings = check_flow(path)
    unclosed, target, unreachable = findings  # the step with a fault is still a graph node
    assert target.message.startswith("next goes to step 'mian'")
    assert unreachable.message.startswith("step 'main' is unreachable")
    assert unclosed.message.startswith("expected '>>' to close the expression")
    assert (unclosed.position.line, unclosed.position.column) == (5, 36)
    rendered = unclosed.render()
    assert f"{path}:5:36" in rendered and "^" in rendered


def test_a_json_workflow_is_read_by_the_json_reader() -> None:
    text = (
        '{"workflow": "w", "trigger": "call.ended", "actions": [{"name": "n", "type": '
        '"api_request", "method": "POST", "endpoint": "https://crm.example.com/x",\n'
        '\t"values": [{"key": "smile", "value": "\\ud83d\\ude00", "format": "string"}]}]}'
    )
    workflow, findings = check_workflow_text(text)
    assert workflow is not None, [f.render() for f in findings]
    with pytest.raises(DocumentError, match="half of a surrogate pair"):
        check_workflow_text(text.replace("\\ude00", ""))


# --- golden refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN, ids=[case["name"] for case in GOLDEN])
def test_golden_json_errors(case: dict[str, Any]) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(case["text"], filename="flow.json")
    error = caught.value
    assert error.message == case["message"]
    assert (error.position.line, error.position.column) == (case["line"], case["column"])
    rendered = str(error)
    assert rendered.startswith(case["message"]) and "flow.json" in rendered
    if case["text"].strip():
        assert f"flow.json:{case['line']}:{case['column']}" in rendered and "^" in rendered


# --- limits --------------------------------------------------------------------------------------


def test_nesting_is_limited_as_in_yaml() -> None:
    deepest = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert load_document(deepest, filename="x.json").data is not None
    too_deep = "[" * (MAX_DEPTH + 2) + "1" + "]" * (MAX_DEPTH + 2)
    with pytest.raises(DocumentError) as json_error:
        load_document(too_deep, filename="x.json")
    with pytest.raises(DocumentError) as yaml_error:
        load_document("a: " + too_deep)
    assert json_error.value.message == yaml_error.value.message
    assert "nests deeper than 64 levels" in json_error.value.message


def test_deep_and_huge_inputs_end_with_an_error_not_a_recursion() -> None:
    with pytest.raises(DocumentError, match="nests deeper"):
        load_document("[" * (MAX_DOCUMENT - 10), filename="x.json")
    with pytest.raises(DocumentError, match="nests deeper"):
        load_document('{"a":' * 500_000, filename="x.json")
    with pytest.raises(DocumentError, match="larger than"):
        load_document("[" + " " * MAX_DOCUMENT + "]", filename="x.json")
    # a document at the limit of many escapes and values reads in one pass
    many = "[" + ",".join(['"\\ud83d\\ude00\\n"'] * 200_000) + "]"
    assert len(load_document(many, filename="x.json").data) == 200_000


def test_whole_numbers_within_the_digit_limits() -> None:
    assert load_document("[" + "9" * 1000 + "]").data == [int("9" * 1000)]
    assert load_document("[-" + "9" * 1000 + "]").data == [-int("9" * 1000)]
    with pytest.raises(DocumentError, match="at most 1000 digits"):
        load_document("[" + "9" * 1001 + "]")
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # a process that lowered Python's own limit
    try:
        with pytest.raises(DocumentError, match="at most 640 digits"):
            load_document("[" + "9" * 700 + "]")
        with pytest.raises(DocumentError, match="at most 640 digits"):
            load_document("a: " + "9" * 700 + "\n")  # YAML too
    finally:
        sys.set_int_max_str_digits(previous)


def test_a_raw_lone_surrogate_in_the_text_is_refused_with_its_place() -> None:
    with pytest.raises(DocumentError) as caught:
        load_document('{"a":\n "x\udc00"}', filename="x.json")
    assert "lone surrogate" in caught.value.message
    assert (caught.value.position.line, caught.value.position.column) == (2, 4)


# --- properties ----------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)
_LAYOUTS = st.sampled_from(
    [
        {},
        {"indent": 2},
        {"indent": "\t"},
        {"ensure_ascii": False},
        {"ensure_ascii": False, "indent": 1},
        {"separators": (",", ":")},
        {"separators": (" ,\r\n", " :\n ")},
    ]
)


def _depth(value: Any) -> int:
    stack, deepest = [(value, 0)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _check_marks(document: Document, text: str) -> None:
    """Every value's mark is its first character (``raw_decode`` there gives the value) and
    every key's mark is its opening quote; ``position`` agrees."""
    decoder = json.JSONDecoder()
    starts = _line_starts(text)
    assert document._marks.keys() >= {()}
    for pointer, packed in document._marks.items():
        offset = starts[packed >> 25] + (packed >> 1 & 0xFFFFFF)
        if pointer and pointer[0] == "#key":
            key_pointer = pointer[1:]
            assert text[offset] == '"'
            assert json.decoder.scanstring(text, offset + 1)[0] == key_pointer[-1]
            where = document.key_position(key_pointer)
        else:
            value: Any = document.data
            for part in pointer:
                value = value[part]
            assert decoder.raw_decode(text, offset)[0] == value
            assert bool(packed & 1) == isinstance(value, str)
            where = document.position(pointer)
            offset += packed & 1  # position() points after a string's quote
        assert (where.line, where.column) == SourceLines(text).locate(offset)


@settings(max_examples=300, deadline=None)
@given(value=_VALUES, layout=_LAYOUTS)
@example(value={"a": "\U0001f600 \u2028 \x85 \ud7ff", "b": [[], {}]}, layout={})
@example(value={"a": "\U0001f600 \u2028 \x85", "b": [-0.0, 1e300]}, layout={"ensure_ascii": False})
def test_json_data_and_marks(value: Any, layout: dict[str, Any]) -> None:
    assume(_depth(value) <= MAX_DEPTH)
    text = json.dumps(value, **layout)
    document = load_document(text, filename="x.json")
    assert document.data == json.loads(text) == value
    _check_marks(document, text)
    if text[:1] in "[{":  # found by its first character too, with the same data and marks
        sniffed = load_document(text)
        assert sniffed.data == value and sniffed._marks == document._marks


@settings(max_examples=200, deadline=None)
@given(value=_VALUES)
def test_json_marks_match_the_yaml_readers(value: Any) -> None:
    """Where libyaml reads a JSON text (ASCII, no tabs), both readers record the same marks."""
    assume(_depth(value) <= MAX_DEPTH and isinstance(value, (dict, list)))
    text = json.dumps(value, indent=2)
    from flowlang.flow.source import _Composer

    yaml_marks: dict[Any, int] = {}
    try:
        yaml_data = _Composer(text, None, yaml_marks).document()
    except DocumentError:  # surrogate escapes: libyaml refuses them
        assume(False)
    document = load_document(text, filename="x.json")
    assert yaml_data == document.data
    assert yaml_marks == document._marks


_ESCAPES = st.sampled_from(
    ["\\ud83d", "\\ude00", "\\uD83D\\uDE00", "\\u0000", "\\n", "\\\\", '\\"', "\\/", "\\u00e9"]
)
#: Pieces of a string's body: text (written as json.dumps writes it) or an escape as is.
_PIECES = st.lists(
    st.text(max_size=3).map(lambda text: json.dumps(text)[1:-1]) | _ESCAPES, max_size=8
)


@settings(max_examples=300, deadline=None)
@given(pieces=_PIECES)
@example(pieces=["\\\\", "ud83d"])  # an escaped backslash, then text: no escape at all
@example(pieces=["\\ud83d", "\\ud83d", "\\ude00"])
def test_escapes_decode_as_json_loads_or_are_refused_when_lone(pieces: list[str]) -> None:
    text = '["' + "".join(pieces) + '"]'
    expected = json.loads(text)[0]
    lone = re.search("[\ud800-\udfff]", expected)
    try:
        data = load_document(text, filename="x.json").data
    except DocumentError as error:
        assert lone is not None, error
        assert "half of a surrogate pair" in error.message
        assert text[error.position.column - 1 : error.position.column + 1] == "\\u"
    else:
        assert lone is None and data == [expected]


_JSONISH = st.text(
    alphabet='{}[]",:0123456789-+.eE truefalsnulNaIiy\t\n\r\\/u\ud83d\x85', max_size=60
)


@settings(max_examples=1000, deadline=None)
@given(text=_JSONISH | st.text(st.characters(codec=None), max_size=40))
@example(text='["\\ud83d"')
@example(text="[" * 70)
@example(text='{"a":1}\udc00')
@example(text="-")
@example(text='{"a" :')
def test_any_text_gives_a_document_or_a_document_error(text: str) -> None:
    for name in ("x.json", None):
        try:
            document = load_document(text, filename=name)
        except DocumentError as error:
            assert str(error)  # renders, caret and all
        else:
            assert isinstance(document, Document)
            if name == "x.json":
                reference = json.loads(text.removeprefix("\ufeff"))
                assert document.data == reference
                assert not (isinstance(reference, float) and math.isnan(reference))


def test_check_flow_text_reads_json_with_positions() -> None:
    flow, findings = check_flow_text('{"flow": "t", "start": "a", "steps": {"a": {"type": "bad"}}}')
    assert flow is None
    assert findings[0].position.line == 1 and findings[0].position.column > 40
    assert isinstance(flowlang.FlowError, type)
