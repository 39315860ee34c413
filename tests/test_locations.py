"""The location model: offsets inside a template map onto the document for every way a scalar
is written (golden cases in tests/flow_cases/locations.yaml, and a property over generated text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlang.flow.load import check_flow_text
from flowlang.flow.source import load_document
from flowlang.locations import ScalarMap, SourceLines, SourcePosition, render_place

GOLDEN = Path(__file__).parent / "flow_cases" / "locations.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(GOLDEN.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_golden_location(case: dict[str, Any]) -> None:
    _, findings = check_flow_text(case["document"], name=case["file"])
    expect = case["expect"]
    found = [finding for finding in findings if finding.severity == expect["severity"]]
    if case["name"].startswith("data-flow"):
        found = [finding for finding in found if "input.ask" in finding.message]
    assert len(found) == 1, [finding.render() for finding in findings]
    rendered = found[0].render().split("\n")
    assert rendered[1].split("--> ", 1)[1].split(" (")[0] == expect["at"]
    assert "\n".join(rendered[3:]) == expect["caret"].rstrip("\n")


def test_golden_cases_cover_every_style_and_kind() -> None:
    names = {case["name"] for case in CASES}
    kinds = ("syntax error", "data-flow finding", "literal braces", "endpoint error")
    styles = (
        "plain, on two lines",
        "single-quoted",
        "double-quoted with escapes",
        "double-quoted on lines",
        "literal block",
        "literal block, indented, strip",
        "folded block, keep",
        "JSON string",
        "JSON string with escapes",
    )
    for kind in kinds:
        for style in styles:
            assert f"{kind}, {style}" in names


_ALPHABET = list("ab z:#-'\"\\\n\t{}<>|é☺😀x")
_texts = st.text(st.sampled_from(_ALPHABET), max_size=40)


def _check_literal_characters(document_text: str, pointer: tuple[str, ...], escaped: str) -> None:
    """Every character of the value not written as an escape is found where the model says."""
    document = load_document(document_text)
    value: Any = document.data
    for key in pointer:
        value = value[key]
    assert isinstance(value, str)
    lines = document.lines
    previous = -1
    for k, char in enumerate(value):
        if char in escaped or char.isspace():
            continue
        at, width = document.place(pointer, value, k)
        assert width == 1
        offset = lines.offset(at.line, at.column)
        assert document_text[offset] == char, (k, value, at)
        assert offset > previous
        previous = offset


@settings(max_examples=150)
@given(
    _texts,
    st.sampled_from([None, "'", '"', "|", ">"]),
    st.integers(min_value=12, max_value=80),
    st.booleans(),
)
def test_offsets_point_at_their_character_in_yaml(
    text: str, style: str | None, width: int, nested: bool
) -> None:
    data: dict[str, Any] = {"t": text}
    pointer: tuple[str, ...] = ("t",)
    if nested:
        data, pointer = {"steps": {"s": data}}, ("steps", "s", "t")
    written = yaml.dump(data, default_style=style, allow_unicode=True, width=width)
    # A double-quoted scalar may write these as escapes (PyYAML escapes any character beyond
    # the BMP); two single quotes stand for one.
    _check_literal_characters(written, pointer, "\\\"'\t😀")


@settings(max_examples=100)
@given(_texts, st.booleans(), st.booleans())
def test_offsets_point_at_their_character_in_json(
    text: str, ascii_only: bool, indent: bool
) -> None:
    written = json.dumps({"a": {"t": text}}, ensure_ascii=ascii_only, indent=2 if indent else None)
    escaped = '\\"' + "".join(char for char in _ALPHABET if ascii_only and not char.isascii())
    _check_literal_characters(written, ("a", "t"), escaped)


def test_a_written_form_the_reader_does_not_know_maps_to_the_start() -> None:
    scalar = ScalarMap("t: abc\n", 3, "xyz")
    assert not scalar.exact
    assert scalar.offset(2) == 3


def test_a_span_over_lines_underlines_to_the_end_of_its_first_line() -> None:
    text = "t: |\n  ab cd\n  ef\n"
    lines = SourceLines(text)
    scalar = ScalarMap(text, 3, "ab cd\nef\n")
    assert scalar.span(3, 8, lines) == (2, 6, 2)
    assert scalar.span(0, 2, lines) == (2, 3, 2)


def test_render_place_names_the_place_and_underlines() -> None:
    lines = SourceLines("a: 1\nb: <<x>>\n")
    shown = render_place("bad", SourcePosition("f.yaml", 2, 4, "s", "text"), lines, 5)
    assert shown == (
        "bad\n  --> f.yaml:2:4 (step 's', field 'text')\n  |\n2 | b: <<x>>\n  |    ^^^^^"
    )
    assert render_place("bad", SourcePosition(None, 0, 0)) == "bad\n  --> <flow>"


def test_workflow_references_in_block_scalars_are_placed() -> None:
    from flowlang.automations import check_workflow_text

    text = (
        "workflow: w\ntrigger: call.ended\nactions:\n  - name: s\n    type: slack_notification\n"
        "    token: t\n    channel: c\n    text: |\n      Hello\n      <<event.properties.nmae>>\n"
    )
    _, findings = check_workflow_text(text, name="w.yaml")
    found = [finding for finding in findings if "nmae" in finding.message]
    assert found, [finding.render() for finding in findings]
    assert (found[0].position.line, found[0].position.column) == (10, 9)
    assert found[0].render().endswith("\n   |         ^^^^^^^^^^^^^^^^^^^^^")


@pytest.mark.parametrize(
    ("before", "cells"),
    [("abc", 3), ("日本語", 6), ("e\u0301e\u0301", 2), ("\u200bx", 1), ("😀", 2)],
)
def test_the_caret_stands_under_its_character_on_screen(before: str, cells: int) -> None:
    """The caret's indent is the display width of what precedes it: wide characters take two
    cells, combining marks and zero-width characters none."""
    from flowlang.locations import render_caret

    text = f"{before}<<x.>>"
    rendered = render_caret(text, 1, len(before) + 1, 2)
    assert rendered.splitlines()[-1] == "  | " + " " * cells + "^^"


# --- a line shown with escapes: the caret under the character as shown ---------------------

_SHOWN_ALPHABET = list("ab <>+\t\u202e\u2066\u2069\x9b\x7f\x1b\ud800é☺界\u0301")


@settings(max_examples=200)
@given(st.text(st.sampled_from(_SHOWN_ALPHABET), min_size=1, max_size=60), st.data())
def test_caret_sits_under_the_character_as_the_terminal_shows_it(
    line: str, data: st.DataObject
) -> None:
    """The source line is shown as the command line prints it (``printable``); the caret's
    indent is the width of what is shown before the character, its marks the width of the
    character as shown (an escape is several cells)."""
    from flowlang.cli.terminal import printable
    from flowlang.locations import render_caret

    column = data.draw(st.integers(1, len(line)))
    _, shown_line, caret_line = render_caret(line, 7, column).split("\n")
    printed = printable(line.replace("\t", " "))
    assert shown_line == "7 | " + printed
    before = printable(line[: column - 1].replace("\t", " "))
    marked = printable(line[column - 1])
    cells = _cells(before)
    assert caret_line == "  | " + " " * cells + "^" * max(1, _cells(marked))


def _cells(text: str) -> int:
    """Terminal cells, counted here independently of flowlang: wide two, marks none."""
    import unicodedata

    return sum(
        0
        if unicodedata.category(char) in ("Mn", "Me", "Cf")
        else 2
        if unicodedata.east_asian_width(char) in ("W", "F")
        else 1
        for char in text
    )
