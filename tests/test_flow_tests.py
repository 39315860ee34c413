"""``flowlang test``: test files beside flows, cases run offline on virtual time, failures that
name their place, edge coverage (issue 11, parts 3 and 4)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import cli

from flowlang.expr.backends import AVAILABLE
from flowlang.testing.session import Session
from flowlang.testing.spec import read_cases_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CASES = Path(__file__).resolve().parent / "flow_cases" / "tests"


def _test(*arguments: str) -> tuple[int, str]:
    return cli("test", *arguments)


def test_every_example_flow_and_workflow_has_a_test_file() -> None:
    documents = [
        path
        for folder in ("flows", "workflows")
        for path in sorted((EXAMPLES / folder).glob("*.yaml"))
        if not path.name.endswith(".test.yaml")
    ]
    tested = set()
    for test_file in EXAMPLES.rglob("*.test.yaml"):
        cases_file = read_cases_file(test_file)
        tested |= {p.resolve() for p in (cases_file.flow, *cases_file.workflows) if p is not None}
    assert {path.resolve() for path in documents} <= tested


def test_the_examples_pass_with_full_edge_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _test(str(EXAMPLES), "--fail-under", "100", "--coverage", "--strict")
    assert status == 0, out
    assert "FAIL" not in out and "WARN" not in out
    assert re.search(r"^total\s+(\d+)/\1 100%$", out, re.MULTILINE), out
    assert capsys.readouterr().err == ""


def test_the_hand_counted_flow_has_7_of_11_edges_covered(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    status, out = _test(str(CASES / "hand_counted.cases.yaml"), "--coverage-json", str(report))
    assert status == 0, out
    data = json.loads(report.read_text())
    (flow,) = data["flows"]
    assert flow["edges"] == {"covered": 7, "total": 11, "percent": pytest.approx(700 / 11)}
    assert flow["steps"] == {"covered": 6, "total": 7}
    assert flow["missing_edges"] == [
        "ask --[on_invalid]--> sorry",
        "lookup --[on_failure]--> sorry",
        "route --[otherwise]--> unknown",
        "unknown --[next]--> bye",
    ]
    assert flow["step_hits"]["bye"] == 2 and "unknown" not in flow["step_hits"]


def test_the_coverage_table_names_the_missing_edges_and_fail_under_fails() -> None:
    status, out = _test(str(CASES / "hand_counted.cases.yaml"), "--coverage", "--fail-under", "65")
    assert status == 1
    assert "7/11 64%" in out and "6/7 86%" in out
    assert "  missing: route --[otherwise]--> unknown" in out
    assert "edge coverage 63.6% (7/11) is below --fail-under 65%" in out
    assert _test(str(CASES / "hand_counted.cases.yaml"), "--fail-under", "63")[0] == 0


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="only one step loop is built: nothing to compare")
def test_both_loops_give_the_same_results_and_coverage() -> None:
    results = []
    for backend in AVAILABLE:
        session = Session(backend=backend)
        outcomes = [session.run_file(path) for path in sorted(EXAMPLES.rglob("*.test.yaml"))]
        passed = [(c.case.name, c.passed) for o in outcomes for c in o.cases]
        coverage = {
            name: (dict(cov.step_hits), list(cov.edge_hits)) for name, cov in session.flows.items()
        }
        results.append((passed, coverage))
        assert all(ok for _, ok in passed)
    assert all(result == results[0] for result in results)


def test_failures_name_the_field_and_line_of_the_test_file() -> None:
    expected = json.loads((CASES / "failing.expected.json").read_text())
    session = Session()
    outcome = session.run_file(CASES / "failing.cases.yaml")
    assert outcome.error is None and outcome.load_error is None
    assert [case.case.name for case in outcome.cases] == list(expected)
    for case in outcome.cases:
        field, line, message = expected[case.case.name]
        assert [(f.field, f.message) for f in case.failures] == [(field, message)], case.case.name
        position = case.cases_file.document.position(case.failures[0].pointer)
        assert position.line == line, case.case.name


def test_a_failure_prints_like_check_with_the_trace_of_the_case() -> None:
    status, out = _test(str(CASES / "failing.cases.yaml"), "-k", "wrong path")
    assert status == 1
    assert "  FAIL wrong path" in out and "wrong status" not in out
    block = out[out.index("\nFAIL ") :]
    assert "step 4 differs" in block
    assert re.search(
        r"--> \S*failing\.cases\.yaml:13:34 \(case 'wrong path', field 'expect\.path'\)", block
    )
    assert "13 |       path: [ask, lookup, route, unknown, bye]" in block
    assert '  expected: "unknown"' in block and '  actual:   "known"' in block
    # the trace, as flowlang run prints it: steps, why, instructions
    assert "trace (status: ended):" in block
    assert re.search(r"route\s+condition_splitter\s+branch 0", block)
    assert "host <- hangup()" in block
    assert "0 passed, 1 failed in 1 file(s)" in out


def test_a_request_without_a_recording_fails_even_where_the_flow_has_a_failure_way() -> None:
    status, out = _test(str(CASES / "failing.cases.yaml"), "-k", "no recording")
    assert status == 1
    assert "no recorded response for GET https://api.example.com/numbers/99" in out


def _copy_example(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A copy of an example flow and its test file (in tests/ beside it, as in examples/)."""
    flow = tmp_path / f"{name}.yaml"
    shutil.copy(EXAMPLES / "flows" / f"{name}.yaml", flow)
    (tmp_path / "tests").mkdir(exist_ok=True)
    tests = tmp_path / "tests" / f"{name}.test.yaml"
    shutil.copy(EXAMPLES / "flows" / "tests" / f"{name}.test.yaml", tests)
    return flow, tests


def test_a_mutated_flow_fails_its_test_file(tmp_path: Path) -> None:
    flow, tests = _copy_example(tmp_path, "account_verification")
    assert _test(str(tests))[0] == 0
    text = flow.read_text()
    swapped = text.replace("next: balance_due", "next: @").replace(
        "next: all_paid", "next: balance_due"
    )
    flow.write_text(swapped.replace("next: @", "next: all_paid"))
    status, out = _test(str(tests))
    assert status == 1
    assert "  FAIL verified caller with a balance hears it" in out
    assert "  FAIL a fully paid account is thanked" in out
    assert "field 'expect.path'" in out


def test_unused_recordings_and_inputs_warn_and_fail_with_strict(tmp_path: Path) -> None:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    tests = tmp_path / "extra.test.yaml"
    tests.write_text(
        "flow: hand_counted.yaml\n"
        "cases:\n"
        "  - name: more than asked\n"
        "    inputs: {ask: [null, '7']}\n"
        "    responses: [{request: GET https://api.example.com/never, status: 200}]\n"
        "    expect: {ends_at: bye}\n"
    )
    status, out = _test(str(tests))
    assert status == 0
    assert "  WARN more than asked" in out
    assert "recorded response not used: GET https://api.example.com/never" in out
    assert "inputs not used: ask (1 left)" in out
    status, out = _test(str(tests), "--strict")
    assert status == 1
    assert "recorded response not used: GET https://api.example.com/never (--strict)" in out


def test_a_delay_beyond_the_timeout_is_a_timeout_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded delays of 60 s against a 4 s timeout and of 3 s within it: virtual time, so
    # nothing sleeps; the runtime's own outcome and error for the timeout.
    _, tests = _copy_example(tmp_path, "account_verification")
    cases_file = read_cases_file(tests)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def noted_sleep(seconds: float, *args: Any) -> Any:
        slept.append(seconds)
        return await real_sleep(0, *args)

    monkeypatch.setattr(asyncio, "sleep", noted_sleep)
    session = Session()
    session.read(tests)
    (case,) = [c for c in cases_file.cases if "slow" in c.name]
    for delay, outcome_of_verify in ((60.0, "timeout"), (3.0, "success")):
        responses = {
            key: type(r)(r.status, r.headers, r.body, delay) for key, r in case.responses.items()
        }
        changed = type(case)(**{**case.__dict__, "responses": responses})
        outcome = asyncio.run(session.run_case(cases_file, changed))
        verify = [e for e in outcome.run.trace if e["step"] == "verify"]
        assert verify[0]["outcome"] == outcome_of_verify
        if outcome_of_verify == "timeout":
            assert verify[0]["detail"]["error"] == "no complete response within 4s"
    assert verify[0]["detail"]["duration_ms"] == 3000.0
    assert [seconds for seconds in slept if seconds > 0] == []


def test_a_flow_that_does_not_load_shows_its_findings_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(
        "flow: broken\nstart: a\nsteps:\n  a: {type: say, text: hi, next: nowhere}\n"
    )
    tests = tmp_path / "broken.test.yaml"
    tests.write_text("flow: broken.yaml\ncases:\n  - {name: x, expect: {status: completed}}\n")
    status, out = _test(str(tests))
    assert status == 1
    assert "ERROR what it tests does not load" in out
    assert "nowhere" in out and "broken.yaml:4:" in out


def test_folders_are_searched_for_test_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    shutil.copy(CASES / "hand_counted.cases.yaml", tmp_path / "hand.cases.yaml")
    (tmp_path / ".hidden").mkdir()
    shutil.copy(CASES / "failing.cases.yaml", tmp_path / ".hidden" / "x.test.yaml")
    assert _test(str(tmp_path))[0] == 2  # nothing to test: a usage error, not a pass
    assert "no test files (*.test.yaml) in" in capsys.readouterr().err
    shutil.copy(CASES / "hand_counted.cases.yaml", tmp_path / "hand.test.yaml")
    status, out = _test(str(tmp_path))
    assert status == 0 and "2 passed in 1 file(s)" in out


def test_a_missing_path_and_a_bad_option_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _test(str(tmp_path / "nothing-here"))[0] == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert _test(str(EXAMPLES), "--fail-under", "140")[0] == 2
    assert "--fail-under takes a percent" in capsys.readouterr().err


def test_coverage_html_writes_the_viewer_page(tmp_path: Path) -> None:
    page = tmp_path / "coverage.html"
    status, _ = _test(str(CASES / "hand_counted.cases.yaml"), "--coverage-html", str(page))
    assert status == 0
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().lower().startswith("<!doctype")
    assert "hand-counted" in html and "<svg" in html
    assert "edges 7/11" in html


def test_condition_coverage_is_reported_on_request(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    status, out = _test(
        str(CASES / "hand_counted.cases.yaml"),
        "--coverage=conditions",
        "--coverage-json",
        str(report),
    )
    assert status == 0
    assert "conditions 1/2 outcomes (50.0%)" in out
    assert "never false" in out
    data: dict[str, Any] = json.loads(report.read_text())
    (conditions,) = data["conditions"]
    assert conditions["seen"] == 1 and conditions["possible"] == 2
    assert (
        _test(
            str(CASES / "hand_counted.cases.yaml"), "--coverage=conditions", "--backend", "cython"
        )[0]
        == 2
    )


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Testing flows\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_test_file_passes_and_its_failure_is_shown_as_printed(tmp_path: Path) -> None:
    section = _readme_section()
    found = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert found is not None
    shutil.copy(EXAMPLES / "flows" / "account_verification.yaml", tmp_path)
    (tmp_path / "tests").mkdir()
    tests = tmp_path / "tests" / "account_verification.test.yaml"
    tests.write_text(found.group(1))
    assert _test(str(tests), "--strict")[0] == 0
    shown = re.search(r"```\n(step 4 differs\n.*?)```", section, re.DOTALL)
    assert shown is not None
    tests.write_text(found.group(1).replace("check, balance_due,", "check, all_paid,"))
    status, out = _test(str(tests))
    assert status == 1
    assert shown.group(1).replace("--> examples/flows/", f"--> {tmp_path}/") in out


def test_one_flow_named_two_ways_is_covered_as_one(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    text = (CASES / "hand_counted.cases.yaml").read_text()
    (tmp_path / "a.test.yaml").write_text(text)
    (tmp_path / "sub" / "b.test.yaml").write_text(
        text.replace("flow: hand_counted.yaml", "flow: ../sub/../hand_counted.yaml")
    )
    session = Session()
    for path in (tmp_path / "a.test.yaml", tmp_path / "sub" / "b.test.yaml"):
        assert all(case.passed for case in session.run_file(path).cases)
    (coverage,) = session.flows.values()
    assert coverage.step_hits["bye"] == 4


def test_the_examples_see_every_condition_true_and_false() -> None:
    status, out = _test(str(EXAMPLES), "--coverage=conditions")
    assert status == 0
    found = re.findall(r": conditions (\d+)/(\d+) outcomes", out)
    assert len(found) == 7  # four flows, three workflows
    assert all(seen == possible for seen, possible in found), out


def test_the_readme_command_lines_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    block = re.search(r"```sh\n(.*?)```", _readme_section(), re.DOTALL)
    assert block is not None
    monkeypatch.chdir(ROOT)
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    assert len(lines) >= 4
    for words in lines:
        assert words[:2] == ["flowlang", "test"], words
        arguments = [str(tmp_path / w) if w.startswith("coverage.") else w for w in words[2:]]
        status, out = _test(*arguments)
        assert status == 0, (words, out[-1500:])
    assert (tmp_path / "coverage.json").exists() and (tmp_path / "coverage.html").exists()


def test_inputs_for_a_step_that_takes_none_fail_with_a_hint(tmp_path: Path) -> None:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    tests = tmp_path / "x.test.yaml"
    tests.write_text(
        "flow: hand_counted.yaml\ncases:\n  - name: typo\n    inputs: {ak: null, lookup: '1'}\n"
        "    expect: {}\n"
    )
    status, out = _test(str(tests))
    assert status == 1
    assert "the flow has no step 'ak' that takes input; did you mean 'ask'?" in out
    assert "the flow has no step 'lookup' that takes input" in out
    assert "x.test.yaml:4:" in out
