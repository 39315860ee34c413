"""Hostile documents: patterns that backtrack, documents that grow checks quadratically, and
YAML that used to escape as an exception. Runs on both backends (`make test` runs it twice)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from big_documents import bad_lines_flow, one_line_json_flow, say_chain
from hypothesis import given, settings
from hypothesis import strategies as st
from support import schema_patterns

import flowlang
import flowlang.errors
import flowlang.flow.source as source
from flowlang.flow import check_flow_text
from flowlang.flow.digits import MAX_STATES, DigitPattern, PatternError
from flowlang.flow.fields import field_edges
from flowlang.flow.model import Branch, Step
from flowlang.flow.source import DocumentError, load_document
from flowlang.flow.validate import _Facts, dominator_tree
from flowlang.kinds.collect_input import apply_digits
from flowlang.kinds.registry import STEP_KINDS

ROOT = Path(__file__).parent.parent


# --- 16. collect_input patterns match in linear time -------------------------------------


def pattern_flow(pattern: str) -> str:
    return textwrap.dedent(
        f"""\
        flow: pin
        start: ask
        steps:
          ask:
            type: collect_input
            max_digits: 64
            pattern: {json.dumps(pattern)}
            next: done
            on_no_input: done
            on_invalid: invalid
          done: {{type: hangup}}
          invalid: {{type: hangup}}
        """
    )


@pytest.mark.parametrize("pattern", ["(1+)+2", "(1*)*2", "(1|1)*2", "(1|11)*2", "((1+)+)+2"])
def test_backtracking_patterns_cost_linear_work(pattern: str) -> None:
    """Exponential for a backtracking engine (`(1+)+2` with 27 digits blocked for 3 s); here
    each digit visits each state at most once."""
    flow = flowlang.load_flow_text(pattern_flow(pattern))
    step = flow.steps["ask"]
    compiled = step.fields["pattern"]
    assert isinstance(compiled, DigitPattern)
    before = compiled.visits
    assert apply_digits(step, "1" * 64) == ("invalid", "1" * 64, "invalid")
    assert compiled.visits - before <= 65 * compiled.states
    assert apply_digits(step, "1" * 63 + "2") == ("collected", "1" * 63 + "2", "done")


def test_work_per_match_is_bounded_by_digits_times_states() -> None:
    """A fresh pattern (nothing memoized) on 64 digits, for the largest pattern allowed."""
    pattern = DigitPattern("(" + "[0-9]?" * 60 + "#)*[0-9*]{0,64}")
    assert pattern.states <= MAX_STATES
    assert not pattern.fullmatch("1" * 63 + "x")
    pattern.visits = 0
    pattern.fullmatch("1#" * 32)
    assert pattern.visits <= 65 * pattern.states


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(1)\\1", "backreferences and numeric escapes are not supported at position 3"),
        ("(?=1)1", "only (...), (?:...) and (?P<name>...) groups are supported"),
        ("(?<!2)1", "only (...), (?:...) and (?P<name>...) groups are supported"),
        ("(?i)1", "only (...), (?:...) and (?P<name>...) groups are supported"),
        ("(1+)++2", "possessive quantifiers are not supported at position 5"),
        ("\\b1", "escape \\b is not supported at position 0"),
        ("[0-9]{65}", "a count is at most 64"),
        ("1{3,2}", "min repeat greater than max repeat"),
        ("abc", "'a' is never entered by a caller (only 0-9, * and #) at position 0"),
        ("1**", "multiple repeat at position 2"),
        ("*1", "nothing to repeat at position 0"),
        ("(1", "missing ), unterminated subpattern at position 0"),
        ("1)", "unbalanced parenthesis at position 1"),
        ("[12", "unterminated character set at position 0"),
        ("(" * 40 + "1" + ")" * 40, "groups nest deeper than 32 levels"),
        ("([0-9]{1,64}){1,64}", "pattern is too complex (more than 256 states)"),
        ("1?" * 200, "pattern is too complex (more than 256 states)"),
        ("1" * 1025, "a pattern is at most 1024 characters"),
    ],
)
def test_unsupported_patterns_are_refused_at_load(pattern: str, message: str) -> None:
    flow, findings = check_flow_text(pattern_flow(pattern), name="pin.yaml")
    assert flow is None
    [finding] = findings
    assert message in finding.message
    assert finding.message.startswith("invalid pattern: ")
    assert (finding.position.line, finding.position.step, finding.position.field) == (
        7,
        "ask",
        "pattern",
    )


def test_pattern_syntax_errors_never_escape() -> None:
    """Any text at all: a DigitPattern or a PatternError, nothing else."""
    for text in ["", "\\", "[", "[]", "[^]", "{", "{1}", "1{", "1{,}", "(?P<1>1)", "(?P<a", "\x00"]:
        with contextlib.suppress(PatternError):
            assert DigitPattern(text).fullmatch("1") in (True, False)


# Patterns of the supported subset, built from pieces, and checked against Python's `re`.
_ATOMS = st.sampled_from(
    [
        *["0", "1", "2", "#", "\\*", "\\#", ".", "\\d", "\\D", "\\w", "\\W", "\\s", "\\S"],
        *["[0-2]", "[^1]", "[*#]", "[]1]", "[1-]", "[-1]", "[\\d#]", "[^\\d]", "[#-0]", "[a-z1]"],
        *["^", "$", "\\A", "\\Z", "()"],
    ]
)
_QUANTIFIERS = st.sampled_from(
    ["", "", "", "?", "*", "+", "{2}", "{0,2}", "{1,}", "{,2}", "{,}", "*?", "+?", "??", "{1,3}?"]
)


def _patterns() -> st.SearchStrategy[str]:
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.tuples(children, _QUANTIFIERS).map(lambda pair: f"(?:{pair[0]}){pair[1]}")
        grouped = children.map(lambda inner: f"({inner})")
        named = children.map(lambda inner: f"(?P<g>{inner})")
        sequence = st.lists(children, min_size=2, max_size=3).map("".join)
        either = st.lists(children, min_size=2, max_size=3).map("|".join)
        return quantified | grouped | named | sequence | either

    leaves = st.tuples(_ATOMS, _QUANTIFIERS).map(
        lambda pair: pair[0] if pair[0] in ("^", "$", "\\A", "\\Z") else pair[0] + pair[1]
    )
    return st.recursive(leaves, extend, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_patterns(), st.lists(st.text("0123456789*#", max_size=7), min_size=1, max_size=6))
def test_the_matcher_agrees_with_python_re(pattern: str, inputs: list[str]) -> None:
    try:
        re.compile(pattern)
    except re.error:  # such as a group name used twice: refused by both
        with pytest.raises(PatternError):
            DigitPattern(pattern)
        return
    compiled = DigitPattern(pattern)
    for digits in [*inputs, "", "1", "12", "#", "*"]:
        expected = re.fullmatch(pattern, digits) is not None
        assert compiled.fullmatch(digits) == expected, (pattern, digits)


def test_only_symbols_a_caller_can_enter_ever_match() -> None:
    assert not DigitPattern(".*").fullmatch("12a")
    assert not DigitPattern("[^1]").fullmatch("\n")
    assert DigitPattern(".*").fullmatch("12*#")


def _nested_empty_repeats(levels: int) -> str:
    pattern = "()"
    for _ in range(levels):
        pattern = "(?:" + pattern + "){64}"
    return pattern


def test_repeats_of_empty_groups_compile_in_bounded_work() -> None:
    """`(?:(?:()){64}){64}`...: an empty group built no state, so the state cap never tripped
    while the builder expanded it 64**k times (k=5, 77 characters: about 15 minutes). Run in a
    subprocess so that a regression fails on the timeout instead of hanging the suite."""
    script = textwrap.dedent(
        f"""\
        import flowlang
        from flowlang.flow.digits import DigitPattern
        for levels in (5, 6, 12):
            pattern = "()"
            for _ in range(levels):
                pattern = "(?:" + pattern + "){{64}}"
            compiled = DigitPattern(pattern)
            assert compiled.states <= 2, compiled.states
            assert compiled.fullmatch("") and not compiled.fullmatch("1")
        compiled = DigitPattern("(?:(?:(?:^|$|()){{64}}){{64}}1){{32}}")
        assert compiled.fullmatch("1" * 32) and not compiled.fullmatch("1" * 31)
        flow = flowlang.load_flow_text({pattern_flow(_nested_empty_repeats(5))!r})
        print("ok", flow.steps["ask"].fields["pattern"].states)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")


def test_the_builder_counts_its_work_not_only_its_states() -> None:
    """The last line of defence: a tree whose expansion builds no state still stops, early."""
    from flowlang.flow import digits

    tree: Any = digits._Sequence(())
    for _ in range(4):
        tree = digits._Repeat(tree, 64, 64)
    builder = digits._Builder()
    with pytest.raises(PatternError, match="more than 4096 construction steps"):
        builder.build(tree, 0)
    assert builder.steps == digits.MAX_BUILD_STEPS + 1 == 4097
    assert len(builder.kinds) == 1


@pytest.mark.parametrize(
    "pattern",
    [
        "(?:^){2}1",
        "1(?:$){3}",
        "(?:$)*1",
        "(?:^|$){3}",
        "(?:^|$)?1",
        "(?:()|1){3}",
        "()*1",
        "(?:(?:){5}|2){2}",
        "(?:1|2|3){2}",
        "(?:\\d|\\*|#)+",
        "(?:1|2|^)+",
        "(?:1|$){2}",
        "1{0}2",
        "(?:1){1}",
        "(?:1|(?:2|3)){1,2}",
        "(?:|1)*",
        "(?:^1|2$){0,2}",
    ],
)
def test_the_normal_form_keeps_the_meaning(pattern: str) -> None:
    """Every input up to 4 symbols over 1 2 #, against Python's ``re``."""
    compiled = DigitPattern(pattern)
    for size in range(5):
        for symbols in itertools.product("12#", repeat=size):
            digits = "".join(symbols)
            assert compiled.fullmatch(digits) == bool(re.fullmatch(pattern, digits)), digits


@pytest.mark.parametrize(
    ("pattern", "states"),
    [
        ("[0-9]{8}", 9),
        ("[0-9]{8,12}", 17),
        ("(1|2|3)", 2),
        ("\\d{4}#?", 7),
        ("[0-9]{4,6}#", 10),
        ("\\d{0,64}", 129),
        ("[0-9*]{4,64}#?", 127),
        ("(?:\\d|\\*){0,64}", 129),
        ("(?:1|2|3|4|5|6|7|8){0,64}", 129),
        ("(?:\\d\\*?){1,64}", 256),
        ("[0-9]{4}(?:\\*[0-9]{4}){0,12}", 77),
        ("(?:[0-9]{3}\\*?)*", 7),
    ],
)
def test_real_keypad_patterns_fit_the_state_cap(pattern: str, states: int) -> None:
    """PINs, account numbers, menus and the widest counted forms fit 256 states; the cost of
    one fresh 64-digit match is then at most 65 x 256 state visits."""
    compiled = DigitPattern(pattern)
    assert compiled.states == states <= MAX_STATES == 256
    for digits in ("1" * 64, "1*" * 32, "12345678"):
        compiled.visits = 0
        assert compiled.fullmatch(digits) == bool(re.fullmatch(pattern, digits))
        assert compiled.visits <= 65 * MAX_STATES


# --- 18. checking grows linearly -----------------------------------------------------------


def _set_analysis(steps: dict[str, Step], start: str) -> dict[str, set[str] | None]:
    """The facts of the old analysis: a set of facts per step, intersected to a fixpoint."""

    def edge_facts(step: Step, edge: str) -> set[str]:
        facts = {f"ran:{step.id}"}
        if step.kind.takes_input:
            facts.add(f"input:{step.id}")
        facts.update(f"{fact}:{step.id}" for fact in step.kind.edge_facts(step).get(edge, ()))
        return facts

    facts: dict[str, set[str] | None] = {step_id: None for step_id in steps}
    facts[start] = set()
    pending = [start]
    while pending:
        step_id = pending.pop()
        entry = facts[step_id]
        assert entry is not None
        for edge, target in steps[step_id].targets().items():
            if target not in steps:
                continue
            out = entry | edge_facts(steps[step_id], edge)
            current = facts[target]
            updated = set() if target == start else out if current is None else current & out
            if current != updated:
                facts[target] = updated
                pending.append(target)
    return facts


@st.composite
def _graphs(draw: st.DrawFn) -> dict[str, Step]:
    """Random step graphs over every registered kind, each edge field drawn."""
    count = draw(st.integers(1, 9))
    ids = [f"s{index}" for index in range(count)]
    targets = st.sampled_from([*ids, None, "missing"])
    steps = {}
    for step_id in ids:
        kind = STEP_KINDS[draw(st.sampled_from(sorted(STEP_KINDS)))]
        fields: dict[str, Any] = {"parse_response": draw(st.booleans())}
        for name in kind.edge_fields:
            spec = kind.fields[name]
            if spec.kind == "branches":
                nexts = draw(st.lists(st.sampled_from(ids), max_size=2))
                fields[name] = tuple(Branch((), None, target) for target in nexts)
            elif spec.kind == "options":
                keys = draw(st.lists(st.sampled_from("12*"), max_size=3, unique=True))
                fields[name] = {key: draw(st.sampled_from(ids)) for key in keys}
            else:
                fields[name] = draw(targets)
        edges = tuple(
            edge
            for name in kind.edge_fields
            for edge in field_edges(name, kind.fields[name], fields[name])
        )
        steps[step_id] = Step(step_id, kind, fields, flowlang.SourcePosition(), {}, edges)
    return steps


@settings(max_examples=400, deadline=None)
@given(_graphs(), st.data())
def test_dominance_answers_what_the_set_analysis_did(steps: dict[str, Step], data: Any) -> None:
    start = data.draw(st.sampled_from(sorted(steps)))
    expected = _set_analysis(steps, start)
    facts = _Facts(steps, start)
    for at, entry in expected.items():
        assert facts.reachable(at) == (entry is not None)
        if entry is None:
            continue
        for before, step in steps.items():
            assert facts.ran(before, at) == (f"ran:{before}" in entry), (before, at)
            holds = facts.holds("response", before, at)
            assert holds == (f"response:{before}" in entry), (before, at)
            if step.kind.takes_input:
                assert facts.ran(before, at) == (f"input:{before}" in entry)


def test_dominator_tree_of_a_long_chain_and_a_wide_fan() -> None:
    """No recursion: a chain of 100,000 nodes, and a node with 100,000 successors."""
    chain = [[index + 1] for index in range(99_999)] + [[]]
    idom = dominator_tree(chain)
    assert idom[0] == 0 and idom[99_999] == 99_998
    fan = [list(range(1, 100_001)), *([[100_001]] * 100_000), []]
    assert dominator_tree(fan)[100_001] == 0


def test_twenty_thousand_steps_check_in_bounded_memory(tmp_path: Path) -> None:
    """20,000 chained steps: the per-step fact sets made this 9.3 GB; now the whole process,
    interpreter included, stays under 300 MB. A fresh process (its peak is its own), with its
    address space limited, so that a regression fails instead of exhausting the machine."""
    path = tmp_path / "chain.yaml"
    path.write_text(say_chain(20_000))
    program = textwrap.dedent(
        f"""\
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from flowlang.flow import check_flow
        flow, findings = check_flow({str(path)!r})
        assert flow is not None and findings == [], findings[:3]
        # VmHWM is this program's own peak: getrusage's ru_maxrss also counts the forked
        # parent's pages from before exec (a large pytest process), so it would measure pytest.
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) < 300


def test_forty_thousand_bad_lines_split_the_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every finding used to split the whole document again to show its line (54 s)."""
    splits = []
    original = flowlang.errors.SourceLines.__init__

    def counting(self: Any, text: str) -> None:
        splits.append(len(text))
        original(self, text)

    monkeypatch.setattr(flowlang.errors.SourceLines, "__init__", counting)
    flow, findings = check_flow_text(bad_lines_flow(40_000))
    assert flow is None and len(findings) == 40_000
    assert "unknown field 'bad_field_39999' for a hangup step" in findings[-1].message
    assert "bad_field_39999: 39999" in (findings[-1].detail or "")
    assert len(splits) == 1


def test_did_you_mean_hints_are_budgeted() -> None:
    """3,000 bad targets among 3,000 steps: a hint compares a name with every step id, so only
    the first ones get a hint."""
    lines = ["flow: t\nstart: s0\nsteps:\n"]
    lines += [
        f"  s{index}: {{type: say, text: hi, next: s{index + 1}x}}\n" for index in range(3000)
    ]
    flow, findings = check_flow_text("".join(lines))
    assert flow is None and len(findings) == 3000 + 2999  # each target, each unreachable step
    hinted = [finding for finding in findings if "did you mean" in finding.message]
    assert 0 < len(hinted) <= 50
    assert hinted[0].message.endswith("which does not exist; did you mean 's1'?")


def _duration_flow(timeout: str) -> str:
    return (
        "flow: slow\nstart: ask\nsteps:\n  ask:\n    type: collect_input\n    prompt: hi\n"
        f"    timeout: {json.dumps(timeout)}\n    next: bye\n    on_no_input: bye\n"
        "  bye: {type: hangup}\n"
    )


def test_a_duration_is_checked_in_linear_time_and_shown_short() -> None:
    """`1<spaces>x`: the duration regex backtracked between its two `\\s*` (60,000 spaces:
    12 s; a 4 MiB document: about a day). In a subprocess, so a regression fails on the
    timeout; the message shows the start of the value, not a megabyte of it."""
    script = textwrap.dedent(
        f"""\
        from flowlang.flow import check_flow_text
        for filler in (" ", "\\t", "0"):
            flow, findings = check_flow_text({_duration_flow("1")!r}.replace(
                '"1"', '"1' + filler * 1_000_000 + 'x"'))
            assert flow is None
            [finding] = findings
            assert len(finding.message) < 300, len(finding.message)
            print(finding.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second, third = done.stdout.splitlines()
    assert first.startswith("expected a duration such as 3s or 500ms, found '1      ")
    assert first.endswith("...'") and second.endswith("...'") and third.endswith("...'")


_OLD_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*$")


@settings(max_examples=300, deadline=None)
@given(st.text(" \t\n\x0b\x1c\x85\xa0\u2028\u30001.0ms", max_size=12))
def test_durations_read_as_before_and_as_the_schema_says(text: str) -> None:
    """The same texts are durations, with the same values, as with the old regex; the JSON
    Schema's (unambiguous) pattern accepts exactly those."""
    from flowlang.flow.schema import flow_schema

    [schema_pattern] = {p for p in schema_patterns(flow_schema()) if "(ms|s)" in p}
    flow, findings = check_flow_text(_duration_flow(text))
    old = _OLD_DURATION.match(text)
    assert (re.search(schema_pattern, text) is not None) == (old is not None)
    if old is None:
        assert flow is None and "expected a duration" in findings[0].message
        return
    value = float(old.group(1)) / (1000 if old.group(2) == "ms" else 1)
    if 0.5 <= value <= 60:
        assert flow is not None, findings
        assert flow.steps["ask"].fields["timeout"] == value
    else:
        assert flow is None and "timeout must be between" in findings[0].message


# --- documents that escaped as exceptions ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "1" * 5000 + "\n", "a whole number has at most 1000 digits"),
        ("a: !!int abc\n", "'abc' is not a valid int"),
        ("a: !!int ''\n", "'' is not a valid int"),
        ("a: !!int 1:" + "1:" * 200_000 + "1\n", "is not a valid int"),
        ("a: !!float .nan\n", "'.nan' is not a valid float"),
        ("a: !!bool yes\n", "'yes' is not a valid bool"),
        ("a: 1e999\n", "number is out of range"),
        ("a: [" * 1_000_000, "document nests deeper than 64 levels"),
        ("a: 1\n---\nb: 2\n", "a file holds one document: found a second one"),
        ("a: !!set {x}\n", "tag 'tag:yaml.org,2002:set' is not allowed"),
        ("a: !!merge <<\n", "merge keys (<<) are not allowed"),
        ("a: \ud800\n", "invalid YAML"),
        ("? [a]\n: 1\n", "a key must be a plain value"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
    ],
)
def test_hostile_yaml_is_a_document_error(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(text, filename="x.yaml")
    assert message in str(caught.value)
    assert "x.yaml" in str(caught.value)


_YAML_PIECES = st.sampled_from(
    [
        *["a: 1\n", "b: 'x'\n", 'c: "y"\n', "d: [1, 'two', {e: f}]\n", "g:\n  - h\n  - 'i'\n"],
        *["j: {k: [l, m]}\n", "n: |\n  text\n", "o: null\n", "p: -1.5e3\n", "q: é€\n"],
        *["r: 1\r\n", 's: "x\ty"\n', "t: x\u2029", "u: 'a\n\n  b'\n", "v: [1,\n 2]\n"],
    ]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_YAML_PIECES, min_size=1, max_size=8, unique=True))
def test_libyaml_and_the_python_parser_give_the_same_data_and_positions(pieces: list[str]) -> None:
    text = "".join(pieces)

    def outcome() -> Any:
        try:
            document = load_document(text)
        except DocumentError as error:
            return str(error).splitlines()[1]  # the place (messages differ in wording)
        return document.data, document._marks

    fast, slow = _both_parsers(outcome)
    assert fast == slow


# --- libyaml and the pure parser on whole flow documents -----------------------------------

#: Text for scalars: ASCII, accents, CJK, an emoji outside the BMP, quotes, a backslash, '#'.
_SCALAR_TEXT = st.lists(
    st.sampled_from([*"abz XY09_-.:,#'\"/\\é中😀€|", "<<vars.v0>>"]),
    min_size=1,
    max_size=16,
).map("".join)
_COMMENT = st.text(alphabet=st.sampled_from(list("ab #:é😀\"'-")), max_size=16)


@st.composite
def _scalar(draw: st.DrawFn, indent: int) -> str:
    """A string value after ``key:`` in one of YAML's five styles (the text after the colon)."""
    text = draw(_SCALAR_TEXT).strip() or "x"
    style = draw(st.sampled_from(["plain", "single", "double", "literal", "folded"]))
    pad = " " * (indent + 2)
    if style == "single":
        return " '" + text.replace("'", "''") + "'"
    if style == "double":
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return ' "' + escaped + ("\\u00e9\\t" if draw(st.booleans()) else "") + '"'
    if style in ("literal", "folded"):
        lines = draw(st.lists(_SCALAR_TEXT, min_size=1, max_size=3))
        head = " |" if style == "literal" else " >"
        return head + "".join(f"\n{pad}{line.strip() or 'x'}" for line in lines)
    if text[0] in "'\"#|>-:,[]{}&*!%@`?<" or ": " in text or " #" in text or text[-1] in ":":
        return " '" + text.replace("'", "''") + "'"
    return " " + text


@st.composite
def _flow_document(draw: st.DrawFn) -> str:
    """A chained flow in the shapes a person writes: comments, nested bodies, every scalar style."""
    count = draw(st.integers(min_value=1, max_value=8))
    lines = [
        "# a generated flow",
        "flow: generated" + draw(st.sampled_from(["", "  # é"])),
        "start: s0",
        "steps:",
    ]

    def comment(indent: int) -> None:
        if draw(st.booleans()):
            lines.append(" " * indent + "# " + draw(_COMMENT))

    for index in range(count):
        after = f"s{index + 1}" if index + 1 < count else "done"
        comment(2)
        lines.append(f"  s{index}:")
        kind = draw(st.sampled_from(["set", "request", "split", "flowstyle"]))
        if kind == "set":
            lines.append("    type: set_variables")
            lines.append("    variables:")
            for number in range(draw(st.integers(min_value=1, max_value=3))):
                comment(6)
                lines.append(f"      v{number}:" + draw(_scalar(6)))
        elif kind == "request":
            lines += ["    type: http_request", "    method: POST"]
            lines.append("    endpoint: 'https://crm.example.com/api/<<vars.v0>>'")
            lines.append("    body:")
            lines.append("      note:" + draw(_scalar(6)))
            lines.append("      nested:")
            lines.append("        - item:" + draw(_scalar(10)))
            lines.append("        - [1, 'two', {three: 3}]")
            lines.append(f"    on_failure: {after}")
        elif kind == "split":
            lines += ["    type: condition_splitter", "    branches:"]
            lines += ["      - conditions:", "          - property: <<vars.v0>>"]
            lines.append("            operator: equals")
            lines.append("            value:" + draw(_scalar(12)))
            lines.append(f"        next: {after}")
            lines.append(f"    otherwise: {after}")
            lines.append(f"  # s{index} ends")
            continue
        else:
            lines[-1] = f"  s{index}: {{type: set_variables, variables: {{a: 'é😀', b: [1, 2]}},"
            lines.append(f"    next: {after}}}")
            continue
        lines.append(f"    next: {after}" + draw(st.sampled_from(["", "  # next"])))
    lines += ["  done:", "    type: hangup"]
    return "\n".join(lines) + "\n"


#: Edits that break a document: each inserted at a generated offset.
_BREAKS = [
    "\x85",
    "\u2028",
    "\ufeff",
    "\t",
    ": ",
    "[",
    "{",
    '"',
    "'",
    "*x",
    "&a ",
    "!!set ",
    "\n  s0:\n",
    "- ",
    "%",
    "@",
    "\n\t",
]


def _both_parsers(outcome: Any) -> tuple[Any, Any]:
    """``outcome()`` with libyaml's parser, then with the pure one."""
    fast = outcome()
    original = source._CParser
    try:
        source._CParser = None
        slow = outcome()
    finally:
        source._CParser = original
    return fast, slow


def _document_outcome(text: str) -> Any:
    try:
        document = load_document(text, filename="f.yaml")
    except DocumentError as error:
        return _error_outcome(error)
    return document.data, document._marks


def _error_outcome(error: flowlang.errors.FlowError) -> Any:
    return str(error)


def _flow_outcome(text: str) -> Any:
    try:
        flow, findings = check_flow_text(text, name="f.yaml")
    except DocumentError as error:
        return _error_outcome(error)
    steps = None if flow is None else (flow.start, tuple(flow.steps), flow.fingerprint)
    return steps, [(finding.message, finding.position, finding.render()) for finding in findings]


@pytest.mark.skipif(source._CParser is None, reason="PyYAML is built without libyaml")
@settings(max_examples=40, deadline=None)
@given(_flow_document())
def test_libyaml_and_the_python_parser_load_whole_flows_alike(text: str) -> None:
    fast, slow = _both_parsers(lambda: _document_outcome(text))
    assert fast == slow
    assert not isinstance(fast, str), fast  # the generated document is valid YAML
    fast, slow = _both_parsers(lambda: _flow_outcome(text))
    assert fast == slow
    steps, findings = fast
    assert steps is not None, findings
    assert steps[0] == "s0" and "done" in steps[1]


@pytest.mark.skipif(source._CParser is None, reason="PyYAML is built without libyaml")
@settings(max_examples=50, deadline=None)
@given(_flow_document(), st.sampled_from(_BREAKS), st.floats(min_value=0, max_value=1))
def test_libyaml_and_the_python_parser_fail_alike_on_broken_flows(
    text: str, edit: str, where: float
) -> None:
    at = int(where * len(text))
    for broken in (text[:at], text[:at] + edit + text[at:]):
        fast, slow = _both_parsers(lambda broken=broken: _document_outcome(broken))
        assert fast == slow
        fast, slow = _both_parsers(lambda broken=broken: _flow_outcome(broken))
        assert fast == slow


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        ("a: b: c\n", "mapping values are not allowed here", "f.yaml:1:5"),
        ("a: [1, 2\n", "expected ',' or ']', but got '<stream end>'", "f.yaml:2:1"),
        ("- a\nb: 1\n", "expected <block end>, but found '?'", "f.yaml:2:1"),
        ("a:\n  b: 1\n  c", "could not find expected ':'", "f.yaml:3:4"),
        ("a: b\tc\n", "found character '\\t' that cannot start any token", "f.yaml:1:5"),
    ],
)
def test_a_broken_document_reads_the_same_whichever_parser(
    text: str, message: str, place: str
) -> None:
    """libyaml words syntax problems its own way, places one at the end of a text with no final
    newline elsewhere, and takes a tab inside a plain scalar: the loader gives PyYAML's error."""
    fast, slow = _both_parsers(lambda: _document_outcome(text))
    assert fast == slow
    assert f"invalid YAML: {message}" in fast
    assert place in fast


def test_positions_point_at_values_keys_and_quoted_text() -> None:
    document = load_document("a:\n  b: 'quoted'\n  c: [1, 2]\n", filename="x.yaml")
    assert document.data == {"a": {"b": "quoted", "c": [1, 2]}}
    assert (document.position(("a", "b")).line, document.position(("a", "b")).column) == (2, 7)
    assert (document.key_position(("a", "c")).line, document.key_position(("a", "c")).column) == (
        3,
        3,
    )
    assert document.position(("a", "c", 1)).column == 10
    assert document.position(("a", "missing")).line == 2  # the nearest enclosing value


def _dotted_flow(parts: int) -> str:
    key = ".".join(["a"] * parts)
    return (
        "flow: t\nstart: s\nsteps:\n  s:\n    type: set_variables\n    variables:\n"
        f"      ? {key}\n      : 1\n"
    )


def test_dotted_keys_nest_at_most_64_levels() -> None:
    """A key of 1,000 dotted parts was a RecursionError (100,000 parts: 66 s, then the same)."""
    flow, findings = check_flow_text(_dotted_flow(1000))
    assert flow is None
    [finding] = findings
    assert "nests deeper than 64 levels" in finding.message
    assert (finding.position.line, finding.position.field) == (7, "variables")
    flow = flowlang.load_flow_text(_dotted_flow(64))
    built = flow.steps["s"].fields["variables"].build({})
    for _ in range(63):
        built = built["a"]
    assert built == {"a": 1}


def test_findings_on_a_one_line_document_copy_only_what_they_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JSON document is one line of up to 4 MiB: a caret shows a window of it, and neither
    rendering nor finding the template copies or scans the whole line per finding."""

    def whole_line(self: Any, number: int) -> str:
        raise AssertionError("a finding copied a whole line")

    monkeypatch.setattr(flowlang.errors.SourceLines, "line", whole_line)
    flow, findings = check_flow_text(one_line_json_flow(2000))
    # each step's two faults, and every step but the first unreachable (no step has next)
    assert flow is None and len(findings) == 2000 * 2 + 1999
    unclosed, unknown = findings[-2:]
    assert unknown.message == "unknown field 'bad' for a say step"
    assert unclosed.message == "expected '>>' to close the expression opened here"
    assert (
        unclosed.detail is not None and '"hi <<contact.name1999", "bad": 1999}' in unclosed.detail
    )
    assert all(
        len(line) < 200 for finding in findings for line in (finding.detail or "").split("\n")
    )


def test_the_collector_is_paused_only_while_a_document_is_checked() -> None:
    import gc

    assert gc.isenabled()
    with pytest.raises(DocumentError):
        check_flow_text("a: [1\n")
    assert gc.isenabled()
    flow, _ = check_flow_text(say_chain(3))
    assert flow is not None and gc.isenabled()
    gc.disable()
    try:
        with source.paused_collector():
            assert not gc.isenabled()
        assert not gc.isenabled()  # an application's choice is left alone
    finally:
        gc.enable()


def test_workflow_hints_are_budgeted() -> None:
    """2,000 reads of actions that do not exist, each compared with 2,000 action names."""
    from flowlang.automations import check_workflow_text

    parts = ["workflow: w\ntrigger: call.ended\nactions:\n"]
    parts += [
        f"  - name: a{index}\n    type: api_request\n    method: POST\n"
        f"    endpoint: https://crm.example.com/x\n"
        f"    values:\n      - key: k\n        value: <<actions.b{index}.result>>\n"
        for index in range(2000)
    ]
    workflow, findings = check_workflow_text("".join(parts))
    assert workflow is None and len(findings) == 2000
    hinted = [finding for finding in findings if "did you mean" in finding.message]
    assert 0 < len(hinted) <= 100
    assert re.search(r"there is no action 'b(\d+)'; did you mean 'a\1'\?$", hinted[0].message)


@pytest.mark.parametrize(
    "field",
    # a YAML key longer than 1,024 characters must be an explicit one (? key : value)
    ["method: {}", "finish_on_key: {}", "timeout: {}", "headers:\n      ? {} y\n      : x"],
)
def test_messages_show_long_document_values_cut(field: str) -> None:
    """A 100,000-character value in a field is named in its message cut to a readable length,
    never whole (a finding per such field would otherwise copy the document into the report)."""
    long_value = "X" * 100_000
    step_type = "collect_input" if "finish" in field or "timeout" in field else "http_request"
    extra = (
        "prompt: hi\n    on_no_input: a\n    next: a"
        if step_type == "collect_input"
        else "endpoint: https://crm.example.com/x\n    on_failure: a\n    next: a"
    )
    text = (
        f"flow: f\nstart: s\nsteps:\n  s:\n    type: {step_type}\n    {extra}\n"
        f"    {field.format(long_value)}\n  a: {{type: hangup}}\n"
    )
    flow, findings = check_flow_text(text)
    assert flow is None and findings
    assert all(len(finding.message) < 400 for finding in findings), [
        len(finding.message) for finding in findings
    ]


@pytest.mark.skipif(source._CParser is None, reason="PyYAML is built without libyaml")
@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n\ufeff",  # a byte order mark after the start: libyaml took it, PyYAML refuses
        "a: 1\n\ufeffb: 2\n",  # ... and the other way round
        "a: {b: [1: , 2]}\n",  # empty values: libyaml placed them at the next token
        "a: {x: , y: 1}\n",
        "a: [x:   ]\n",
    ],
)
def test_libyaml_and_the_python_parser_agree_where_they_once_differed(text: str) -> None:
    fast, slow = _both_parsers(lambda: _document_outcome(text))
    assert fast == slow
