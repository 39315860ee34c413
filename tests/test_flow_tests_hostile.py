"""Hostile test files for ``flowlang test``: huge, deep, malformed, not UTF-8, wrong types at
every key, patterns that would backtrack, secrets in expectations, control characters, and
1,000 generated cases. Each ends in a clear message naming the place (exit 2 for a test file
that cannot be read, 1 for failed cases), never a traceback, a hang or a leaked secret."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli

from flowlang.flow.source import MAX_DOCUMENT
from flowlang.testing.patterns import MAX_TEXT, compile_pattern
from flowlang.testing.spec import MAX_CASES

CASES = Path(__file__).resolve().parent / "flow_cases" / "tests"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
SECRET = "hunter2-very-secret-token"


def _test(*arguments: str) -> tuple[int, str]:
    return cli("test", *arguments)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    return tmp_path


def _write(folder: Path, text: str | bytes) -> Path:
    path = folder / "x.test.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path, message: str, line: int | None = None) -> str:
    status, out = _test(str(path))
    assert status == 2, out
    assert "ERROR the test file cannot be read" in out
    assert message in out, out
    if line is not None:
        assert re.search(rf"{re.escape(str(path))}:{line}:\d+", out), out
    assert "Traceback" not in out
    return out


GOOD_CASE = "  - {name: ok, inputs: {ask: null}, expect: {ends_at: bye}}\n"

#: Wrong values at every key: (the file's text after the flow line, the message, its line).
WRONG_TYPES = {
    "top level a list": ("- flow\n", "test file is key/value fields", None),
    "unknown top key": ("flwo: x\ncases: []\n", "unknown test file field 'flwo'", 2),
    "flow and workflows": ("workflows: [a.yaml]\ncases:\n" + GOOD_CASE, "either a flow", None),
    "cases not a list": ("cases: {name: x}\n", "cases is a list of cases", 2),
    "no cases": ("cases: []\n", "at least one", 2),
    "case not a mapping": ("cases: [just text]\n", "case is key/value fields", 2),
    "unknown case key": ("cases:\n  - {name: a, expcet: {}}\n", "did you mean 'expect'?", 3),
    "name not text": ("cases:\n  - {name: [1], expect: {}}\n", "a case's name must be a text", 3),
    "name twice": ("cases:\n" + GOOD_CASE + GOOD_CASE, "case 'ok' is named twice", 4),
    "no expect": ("cases:\n  - {name: a}\n", "a case needs expect", 3),
    "context a list": (
        "cases:\n  - {name: a, context: [1], expect: {}}\n",
        "context must be key/value",
        3,
    ),
    "secrets not text": (
        "cases:\n  - {name: a, secrets: {t: 1234567}, expect: {}}\n",
        "must be a text",
        3,
    ),
    "secret too short": (
        "cases:\n  - {name: a, secrets: {t: abc}, expect: {}}\n",
        "at least 4 characters",
        3,
    ),
    "inputs a list": (
        "cases:\n  - {name: a, inputs: [1], expect: {}}\n",
        "inputs must be key/value",
        3,
    ),
    "digits a number": (
        "cases:\n  - {name: a, inputs: {ask: 12}, expect: {}}\n",
        "digits are a text",
        3,
    ),
    "digits in a list": (
        "cases:\n  - {name: a, inputs: {ask: ['1', {}]}, expect: {}}\n",
        "digits are a text",
        3,
    ),
    "now naive": (
        "cases:\n  - {name: a, now: '2026-12-24T10:00:00', expect: {}}\n",
        "UTC offset",
        3,
    ),
    "now a number": ("cases:\n  - {name: a, now: 12, expect: {}}\n", "UTC offset", 3),
    "event for a flow": (
        "cases:\n  - {name: a, event: {type: x}, expect: {}}\n",
        "event is for workflows",
        3,
    ),
    "responses a map": (
        "cases:\n  - {name: a, responses: {a: 1}, expect: {}}\n",
        "a list of responses",
        3,
    ),
    "response request": (
        "cases:\n  - {name: a, responses: [{request: FETCH x}], expect: {}}\n",
        "request must be 'METHOD URL'",
        3,
    ),
    "response status": (
        "cases:\n  - {name: a, responses: [{request: GET https://a.example/, status: 99}], expect: {}}\n",
        "HTTP status code",
        3,
    ),
    "response delay": (
        "cases:\n  - {name: a, responses: [{request: GET https://a.example/, delay: -1}], expect: {}}\n",
        "delay must be",
        3,
    ),
    "response unknown key": (
        "cases:\n  - {name: a, responses: [{request: GET https://a.example/, stauts: 200}], expect: {}}\n",
        "did you mean 'status'?",
        3,
    ),
    "expect a list": ("cases:\n  - {name: a, expect: [1]}\n", "expect is key/value fields", 3),
    "unknown expect key": (
        "cases:\n  - {name: a, expect: {pth: [a]}}\n",
        "did you mean 'path'?",
        3,
    ),
    "workflow key for a flow": (
        "cases:\n  - {name: a, expect: {deliveries: []}}\n",
        "unknown expect field 'deliveries'",
        3,
    ),
    "status unknown": ("cases:\n  - {name: a, expect: {status: done}}\n", "status is one of", 3),
    "path a text": ("cases:\n  - {name: a, expect: {path: ask}}\n", "path is a list", 3),
    "path of numbers": (
        "cases:\n  - {name: a, expect: {path: [1]}}\n",
        "a step id (or {matches: REGEX}) must be a text",
        3,
    ),
    "path and ends_at": (
        "cases:\n  - {name: a, expect: {path: [a], ends_at: b}}\n",
        "path is the exact path",
        3,
    ),
    "outcomes a list": (
        "cases:\n  - {name: a, expect: {outcomes: [a]}}\n",
        "outcomes must be key/value",
        3,
    ),
    "instruction a text": (
        "cases:\n  - {name: a, expect: {instructions: [say]}}\n",
        "an instruction must be key/value",
        3,
    ),
    "vars a list": ("cases:\n  - {name: a, expect: {vars: [a]}}\n", "vars must be key/value", 3),
    "request unknown key": (
        "cases:\n  - {name: a, expect: {requests: [{uri: x}]}}\n",
        "unknown request field 'uri'",
        3,
    ),
    "matches a number": (
        "cases:\n  - {name: a, expect: {ends_at: {matches: 1}}}\n",
        "matches takes a regular expression",
        3,
    ),
    "defaults unknown key": (
        "defaults: {secret: {}}\ncases:\n" + GOOD_CASE,
        "did you mean 'secrets'?",
        2,
    ),
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_wrong_types_at_every_key_are_named_at_their_place(folder: Path, name: str) -> None:
    rest, message, line = WRONG_TYPES[name]
    text = rest if rest.startswith("-") else "flow: hand_counted.yaml\n" + rest
    _refused(_write(folder, text), message, None if line is None else line)


def test_a_huge_test_file_is_refused_by_size(folder: Path) -> None:
    path = _write(folder, "flow: hand_counted.yaml\n# " + "x" * MAX_DOCUMENT + "\n")
    _refused(path, f"larger than {MAX_DOCUMENT} bytes")


def test_too_many_cases_are_refused(folder: Path) -> None:
    case = "  - {{name: c{0}, expect: {{}}}}\n"
    text = "flow: hand_counted.yaml\ncases:\n" + "".join(
        case.format(n) for n in range(MAX_CASES + 1)
    )
    _refused(_write(folder, text), f"at most {MAX_CASES} cases", 3)


def test_deep_nesting_is_refused_by_the_loader(folder: Path) -> None:
    deep = "{a: " * 10_000 + "1" + "}" * 10_000
    text = (
        f"flow: hand_counted.yaml\ncases:\n  - name: deep\n    context: {deep}\n    expect: {{}}\n"
    )
    _refused(_write(folder, text), "nest", 4)


def test_a_context_deeper_than_the_runtime_takes_fails_its_case(folder: Path) -> None:
    deep = "{a: " * 60 + "1" + "}" * 60  # within the document's limit, beyond a run's data
    text = (
        "flow: hand_counted.yaml\ncases:\n  - name: deep\n    inputs: {ask: null}\n"
        f"    context: {{vars: {deep}}}\n    expect: {{ends_at: bye}}\n"
    )
    status, out = _test(str(_write(folder, text)))
    assert status in (0, 1) and "Traceback" not in out
    if status == 1:
        assert "the context is refused" in out


def test_malformed_yaml_is_named_at_its_place(folder: Path) -> None:
    _refused(_write(folder, "flow: hand_counted.yaml\ncases: [\n  - {name: a\n"), "x.test.yaml:")


def test_a_test_file_that_is_not_utf8_is_refused(folder: Path) -> None:
    _refused(_write(folder, b"flow: hand_counted.yaml\ncases: \xff\xfe\n"), "not UTF-8")


def test_a_duplicate_key_is_refused(folder: Path) -> None:
    text = "flow: hand_counted.yaml\ncases:\n  - {name: a, name: b, expect: {}}\n"
    _refused(_write(folder, text), "duplicate", 3)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a+)+$", "repetition inside a repetition"),
        ("(a|aa)*b", "alternatives inside a repetition"),
        ("(x+x+)+y", "repetition inside a repetition"),
        (r"(a)\1", "backreference"),
        ("(?=a)a", "lookahead"),
        ("a{1,100000}", "a count is at most"),
        ("a*b*c*d*e", "too many ways"),
        (".*.*.*x", "too many ways"),
        ("(?:.?){40}.{40}!", "repetition inside a repetition"),
        ("a?" * 25, "too many ways"),
        ("[", "not a regular expression"),
        ("x" * 300, "at most 256 characters"),
    ],
)
def test_patterns_that_could_backtrack_are_refused(folder: Path, pattern: str, why: str) -> None:
    text = (
        "flow: hand_counted.yaml\ncases:\n  - name: a\n    inputs: {ask: null}\n"
        f"    expect: {{ends_at: {{matches: {json.dumps(pattern)}}}}}\n"
    )
    _refused(_write(folder, text), why, 5)


def test_an_accepted_pattern_is_bounded_in_text_length() -> None:
    pattern = compile_pattern("a*a?b")
    assert pattern.matches("aaab")
    assert not pattern.matches("a" * (MAX_TEXT + 1))  # not run at all: not a match
    assert not pattern.matches(12)


def test_secrets_in_expectations_are_never_printed(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "vip_routing.yaml", tmp_path / "vip_routing.yaml")
    path = tmp_path / "secret.test.yaml"
    path.write_text(
        "flow: vip_routing.yaml\n"
        "cases:\n"
        "  - name: the author wrote the secret in an expectation\n"
        f"    secrets: {{crm_token: {SECRET}}}\n"
        "    context: {call: {external_number: '+14155550100'}}\n"
        "    responses: [{request: 'GET https://crm.example.com/api/contacts?phone=%2B14155550100', status: 500}]\n"
        "    expect:\n"
        f"      requests: [{{headers: {{Authorization: Bearer {SECRET}x}}}}]\n"
        f"      vars: {{token: {SECRET}}}\n"
    )
    status, out = _test(str(path))
    assert status == 1
    assert "field 'expect.requests'" in out and "field 'expect.vars'" in out
    assert "Bearer [redacted]" in out
    assert SECRET not in out
    status, out = _test(str(path), "--coverage")
    assert SECRET not in out


def test_control_characters_in_names_are_escaped(folder: Path) -> None:
    text = (
        "flow: hand_counted.yaml\ncases:\n"
        '  - {name: "evil \\e[31m\\u202e name", inputs: {ask: null}, expect: {ends_at: known}}\n'
    )
    status, out = _test(str(_write(folder, text)))
    assert status == 1
    assert "\x1b" not in out and "\u202e" not in out
    assert "evil \\x1b[31m\\u202e name" in out


_STEPS = ["ask", "lookup", "route", "known", "unknown", "sorry", "bye", "nowhere"]


def _generated_case(rng: random.Random, number: int) -> dict[str, Any]:
    """A random case for the hand-counted flow: any inputs, recordings and expectations."""
    case: dict[str, Any] = {"name": f"generated {number}"}
    if rng.random() < 0.8:
        case["inputs"] = {
            rng.choice(["ask", "lookup", "x"]): rng.choice(
                [None, "1", "12345", "*#", "", ["1", None]]
            )
        }
    if rng.random() < 0.6:
        digits = rng.choice(["1", "12", "12345", "99"])
        case["responses"] = [
            {
                "request": f"GET https://api.example.com/numbers/{digits}",
                "status": rng.choice([200, 201, 404, 500, 599]),
                "body": rng.choice(
                    [{"known": True}, {"known": False}, "text", [1, 2], None, {"known": "yes"}]
                ),
                "delay": rng.choice([0, 0.5, 11, 60]),
            }
        ]
    expect: dict[str, Any] = {}
    for key in rng.sample(
        [
            "status",
            "path",
            "ends_at",
            "outcomes",
            "instructions",
            "vars",
            "requests",
            "path_excludes",
        ],
        rng.randint(0, 4),
    ):
        if key == "status":
            expect[key] = rng.choice(["completed", "ended", "failed", "waiting_for_input"])
        elif key in ("path", "ends_at") and ({"path", "ends_at"} & set(expect)):
            continue  # path is exact: ends_at goes without it
        elif key == "path":
            expect[key] = rng.sample(_STEPS, rng.randint(0, 4))
        elif key == "ends_at":
            expect[key] = rng.choice([*_STEPS, {"matches": "b.*"}])
        elif key == "path_excludes":
            expect[key] = rng.sample(_STEPS, 2)
        elif key == "outcomes":
            expect[key] = {
                rng.choice(_STEPS): rng.choice(["success", {"matches": "b.*"}, ["a", "b"]])
            }
        elif key == "instructions":
            expect[key] = [{"action": rng.choice(["say", "hangup"]), "text": {"matches": "We.*"}}]
        elif key == "vars":
            expect[key] = {"x": rng.choice([1, "a", None, {"y": [1]}])}
        else:
            expect[key] = [{"request": {"matches": "GET .*"}, "body": {"a": 1}}]
    case["expect"] = expect
    return case


def test_1000_generated_cases_never_crash(folder: Path) -> None:
    rng = random.Random(11)
    cases = [_generated_case(rng, number) for number in range(1000)]
    path = folder / "generated.test.yaml"
    path.write_text(json.dumps({"flow": "hand_counted.yaml", "cases": cases}))
    for backend in ("python",):
        status, out = _test(str(path), "--backend", backend, "--coverage")
        assert status in (0, 1), out[-2000:]
        assert "Traceback" not in out
        summary = out.strip().split("\n")
        assert any(
            re.fullmatch(r"\d+ passed(, \d+ failed)?(, \d+ warning\(s\))? in 1 file\(s\)", line)
            for line in summary
        )


@settings(max_examples=25)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=20))
def test_generated_case_files_never_crash(seed: int, count: int) -> None:
    import tempfile

    rng = random.Random(seed)
    cases = [_generated_case(rng, number) for number in range(count)]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(CASES / "hand_counted.yaml", folder / "hand_counted.yaml")
        path = folder / "g.test.yaml"
        path.write_text(json.dumps({"flow": "hand_counted.yaml", "cases": cases}))
        status, out = _test(str(path))
        assert status in (0, 1), out[-2000:]
