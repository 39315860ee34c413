"""What a red-team review of ``flowlang test`` found (issue 11), each pinned by a test: patterns
that backtrack without bound, expectations that never fail, secrets in warnings and read errors,
virtual time past the run's deadline, warnings of failed cases, repeated failures, coverage
of other files' workflows, the wall clock in cases without ``now``, and hostile case names."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import cli, run_python

from flowlang.expr.backends import AVAILABLE
from flowlang.flow.load import load_flow
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.results import RunResult
from flowlang.runtime.runner import Runtime, RuntimeSettings
from flowlang.testing.patterns import MAX_TEXT, compile_pattern
from flowlang.testing.runner import run_flow_case
from flowlang.testing.spec import read_cases_file

CASES = Path(__file__).resolve().parent / "flow_cases" / "tests"


def _test(*arguments: str) -> tuple[int, str]:
    return cli("test", *arguments)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    return tmp_path


def _case(folder: Path, body: str, name: str = "x.test.yaml") -> Path:
    path = folder / name
    path.write_text("flow: hand_counted.yaml\ncases:\n" + body, encoding="utf-8")
    return path


# --- 1. patterns admitted are bounded -------------------------------------------------------

_ATOMS = st.sampled_from(["a", "b", "x", "!", ".", "[ab]", r"\w", r"\s", "[^b]"])
_COUNTS = st.sampled_from(["", "", "?", "*", "+", "{2}", "{0,3}", "{1,}", "*?", "{3,40}"])


def _patterns() -> st.SearchStrategy[str]:
    piece = st.builds(lambda atom, count: atom + count, _ATOMS, _COUNTS)
    return st.recursive(
        st.lists(piece, min_size=1, max_size=6).map("".join),
        lambda inner: st.one_of(
            st.builds(lambda a, c: f"(?:{a}){c}", inner, _COUNTS),
            st.builds(lambda a, b: f"(?:{a}|{b})", inner, inner),
            st.lists(inner, min_size=2, max_size=4).map("".join),
        ),
        max_leaves=12,
    )


def _admitted(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except ValueError:
        return False
    return True


_MATCH_ALL = """
    import sys
    from flowlang.testing.patterns import compile_pattern
    texts = {texts!r}
    for source in {patterns!r}:
        pattern = compile_pattern(source)
        for text in texts:
            pattern.matches(text)
    print("done")
"""


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_patterns(), min_size=4, max_size=12))
def test_every_admitted_pattern_matches_adversarial_texts_in_bounded_time(
    patterns: list[str],
) -> None:
    admitted = [pattern for pattern in patterns if _admitted(pattern)]
    if not admitted:
        return
    n = MAX_TEXT
    texts = ["a" * n, "a" * (n - 1) + "!", "ab" * (n // 2), " " * n, ("a" * 63 + "b") * (n // 64)]
    texts += ["x" * (n - 1) + "\n", "!" * n]
    done = run_python(_MATCH_ALL.format(texts=texts, patterns=admitted), timeout=60)
    assert done.returncode == 0 and "done" in done.stdout, (admitted, done.stderr)


@pytest.mark.parametrize(
    "pattern",
    [
        ".*.*.*x",
        "(?:.?){40}.{40}!",
        "(?:a?){30}a{30}",
        "a{0,1000}a{0,1000}a{0,1000}b",
        "a?" * 25,
        r"\w*\s*\w*x",
        "(?:a{0,1}){2}",
    ],
)
def test_patterns_that_the_review_found_slow_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"repetition inside|too many ways"):
        compile_pattern(pattern)


@pytest.mark.parametrize("pattern", ["https?://.*/api", ".*x", "(?:ab){3}.*", "(a|b).*(c|d)?"])
def test_usual_patterns_are_still_admitted(pattern: str) -> None:
    assert _admitted(pattern)


def test_a_comparison_past_its_time_fails_the_case(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowlang.testing.expect.COMPARE_SECONDS", -1.0)  # already past
    path = _case(
        folder, "  - name: a\n    inputs: {ask: null}\n    expect: {ends_at: {matches: 'b.*'}}\n"
    )
    status, out = _test(str(path))
    assert status == 1, out
    assert "comparing the case's results took longer than -1 s" in out


# --- 2. path_excludes with a pattern --------------------------------------------------------


def test_path_excludes_with_a_pattern_fails_when_a_step_matches(folder: Path) -> None:
    path = _case(
        folder,
        "  - name: a\n    inputs: {ask: null}\n    expect: {path_excludes: [{matches: 'so.*'}]}\n",
    )
    status, out = _test(str(path))
    assert status == 1, out
    assert "is on the path" in out
    passing = _case(
        folder,
        "  - name: a\n    inputs: {ask: null}\n"
        "    expect: {path_excludes: [{matches: 'kn.*'}], path_includes: "
        "[{matches: 'so.*'}], ends_at: {matches: 'b.e'}}\n",
        "y.test.yaml",
    )
    assert _test(str(passing))[0] == 0


# --- 7. one failure per missing recording ---------------------------------------------------


WORKFLOWS = Path(__file__).resolve().parent.parent / "examples" / "workflows"
MISSED_CALL_EVENT = (
    "    event:\n      type: call.ended\n      properties: {answered: false, direction: inbound, "
    "name: Ann, external_number: '+442079460958', waiting_time: 42, is_vip: true}\n"
)
WORKFLOW_SECRETS = (
    "defaults:\n  secrets: {crm_basic: test-crm-basic, sms_key_id: test-sms-id, "
    "sms_key_secret: test-sms-secret, slack_token: test-slack-token}\n"
)


def test_a_missing_recording_asked_on_every_retry_is_one_failure(tmp_path: Path) -> None:
    shutil.copy(WORKFLOWS / "missed_call.yaml", tmp_path)
    path = tmp_path / "w.test.yaml"
    path.write_text(
        "workflows: [missed_call.yaml]\n"
        + WORKFLOW_SECRETS
        + "cases:\n  - name: nothing\n"
        + MISSED_CALL_EVENT
        + "    expect: {matched: [missed-call-follow-up]}\n"
    )
    status, out = _test(str(path))
    assert status == 1, out
    failures = [line for line in out.splitlines() if line.startswith("no recorded response")]
    assert len(failures) == 1, out  # one per request, not one per attempt (log_in_crm stops)
    assert "no recorded response for POST https://crm.example.com/api/activities (8 attempts)" in (
        failures
    )


# --- 3. test secrets never printed ----------------------------------------------------------

SECRET = "topsecret-token-xyz"
#: Places a secret is planted in a test file of hand_counted.yaml: in a recording never used
#: (a warning, or a failure with --strict), in a recording of a failing case, in a read error
#: inside a secrets mapping (a value of the wrong type, a duplicate key, a block), and in a read
#: error on a line that holds the secret outside the mapping.
PLANTED = {
    "unused recording": (
        f"defaults: {{secrets: {{key: {SECRET}}}}}\ncases:\n  - name: a\n    inputs: {{ask: null}}\n"
        f"    responses: [{{request: 'GET https://api.example.com/x?key={SECRET}'}}]\n"
        "    expect: {ends_at: bye}\n"
    ),
    "failing case": (
        f"cases:\n  - name: a\n    secrets: {{key: {SECRET}}}\n    inputs: {{ask: null}}\n"
        f"    responses: [{{request: 'GET https://api.example.com/x?key={SECRET}'}}]\n"
        f"    expect: {{ends_at: known, vars: {{token: {SECRET}}}}}\n"
    ),
    "wrong type beside it": (
        f"defaults:\n  secrets:\n    key: {SECRET}\n    pin: 98765432\ncases:\n"
        "  - name: a\n    expect: {ends_at: bye}\n"
    ),
    "duplicate key": (
        f"cases:\n  - name: a\n    secrets: {{key: {SECRET}, key: {SECRET}}}\n"
        "    expect: {ends_at: bye}\n"
    ),
    "duplicate key in a block": (
        f"defaults:\n  secrets:\n    key: {SECRET}\n    key: {SECRET}-2\ncases:\n"
        "  - name: a\n    expect: {ends_at: bye}\n"
    ),
    "not YAML inside secrets": (
        f"defaults:\n  secrets:\n    key: {SECRET}: x\ncases:\n  - name: a\n"
        "    expect: {ends_at: bye}\n"
    ),
    "unknown key on its line": (
        f"defaults: {{secrets: {{key: {SECRET}}}}}\ncases:\n"
        f"  - {{name: a, expect: {{ends_at: bye}}, bogus: {SECRET}}}\n"
    ),
}
MODES = [(), ("--strict",), ("--coverage",), ("--coverage", "conditions"), ("--backend", "python")]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(sorted(PLANTED)), st.sampled_from(MODES))
def test_a_planted_secret_never_appears_in_any_output(
    folder: Path, place: str, mode: tuple[str, ...]
) -> None:
    path = folder / "s.test.yaml"
    path.write_text("flow: hand_counted.yaml\n" + PLANTED[place], encoding="utf-8")
    report = folder / "coverage.json"
    page = folder / "coverage.html"
    status, out = _test(
        str(path), *mode, "--coverage-json", str(report), "--coverage-html", str(page)
    )
    assert status in (0, 1, 2) and "Traceback" not in out
    written = [p.read_text() for p in (report, page) if p.exists()]
    for text in (out, *written):
        assert SECRET not in text, (place, mode, out)
    if place != "unused recording" or mode == ("--strict",):
        assert status != 0, out  # the planted fault is reported (the secret redacted)


def test_a_read_error_inside_secrets_names_the_place(folder: Path) -> None:
    path = folder / "s.test.yaml"
    path.write_text("flow: hand_counted.yaml\n" + PLANTED["wrong type beside it"])
    status, out = _test(str(path))
    assert status == 2
    assert f"{path}:5:" in out and "secret 'pin' must be a text" in out
    assert "pin: [redacted]" in out and "98765432" not in out


def test_warnings_in_the_pytest_plugin_hold_no_secret(folder: Path) -> None:
    from test_flow_tests_plugin import _pytest

    (folder / "s.test.yaml").write_text("flow: hand_counted.yaml\n" + PLANTED["unused recording"])
    for options in ((), ("--flow-strict",)):
        done = _pytest(folder, "-rA", *options)
        assert SECRET not in done.stdout + done.stderr
        assert "recorded response not used: GET https://api.example.com/x?key=[redacted]" in (
            done.stdout
        ), done.stdout


# --- 5, 6, 10. the pytest plugin: only our files, warnings shown, names escaped -------------


def test_the_plugin_leaves_other_tools_test_yaml_alone(folder: Path) -> None:
    import os

    from test_flow_tests_plugin import _pytest

    (folder / "lint.test.yaml").write_text("rules:\n  - {id: no-tabs, level: error}\n")
    (folder / "binary.test.yaml").write_bytes(b"\xff\xfe\x00flow: x\n")
    (folder / "listed.test.yaml").write_text("- flow: x.yaml\n- workflows: []\n")
    os.mkfifo(folder / "pipe.test.yaml")  # never opened: not a regular file
    alone = _pytest(folder)
    assert alone.returncode == 5, alone.stdout + alone.stderr  # no tests collected, no error
    assert "error" not in alone.stdout.lower()
    _case(
        folder,
        "  - name: a\n    inputs: {ask: null}\n    expect: {ends_at: bye}\n",
        "ours.test.yaml",
    )
    (folder / "json.test.yaml").write_text(
        '{"flow": "hand_counted.yaml", "cases": [{"name": "j", "inputs": {"ask": null}, '
        '"expect": {"ends_at": "bye"}}]}'
    )
    (folder / "bom.test.yaml").write_text(
        "\ufeffflow: hand_counted.yaml\ncases:\n  - name: b\n    inputs: {ask: null}\n"
        "    expect: {ends_at: bye}\n"
    )
    both = _pytest(folder)
    assert both.returncode == 0, both.stdout + both.stderr
    assert "3 passed" in both.stdout


def test_case_names_are_escaped_in_pytest_item_names(folder: Path) -> None:
    from test_flow_tests_plugin import _pytest

    _case(
        folder,
        '  - name: "evil\\e[31m::red\\u202e"\n    inputs: {ask: null}\n'
        "    expect: {ends_at: bye}\n",
    )
    listed = _pytest(folder, "--collect-only")
    assert "x.test.yaml::evil\\x1b[31m:\\:red\\u202e" in listed.stdout, listed.stdout
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout


def test_warnings_of_a_failed_case_are_shown(folder: Path) -> None:
    path = _case(
        folder,
        "  - name: a\n    inputs: {ask: null}\n"
        "    responses: [{request: GET https://api.example.com/never}]\n"
        "    expect: {ends_at: known}\n",
    )
    status, out = _test(str(path))
    assert status == 1
    assert "warnings:\n  recorded response not used: GET https://api.example.com/never" in out
    assert "1 warning(s)" in out


# --- 4. virtual time keeps the run's deadline -----------------------------------------------

SLOW_FLOW = """\
flow: slow
start: r0
steps:
  r0: {type: http_request, endpoint: "https://x.example.com/0", timeout: 10s, next: r1, on_failure: bye}
  r1: {type: http_request, endpoint: "https://x.example.com/1", timeout: 10s, next: bye, on_failure: bye}
  bye: {type: hangup}
"""
LOOPS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(name not in AVAILABLE, reason=f"the {name} loop is not built"),
    )
    for name in ("cython", "python")
]


@pytest.mark.parametrize("backend", LOOPS)
def test_a_case_past_the_run_deadline_fails_as_the_real_run_does(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_path = tmp_path / "slow.yaml"
    flow_path.write_text(SLOW_FLOW)
    flow = load_flow(flow_path)
    settings_ = RuntimeSettings(run_deadline=1.0)
    delays = {("GET", f"https://x.example.com/{n}"): 0.7 for n in range(2)}

    async def real() -> RunResult:  # sleeps 1 s: r1 passes the deadline 0.3 s into its 0.7 s
        responses = {key: RecordedResponse(200, {}, {}, delay) for key, delay in delays.items()}
        async with Runtime(http=RecordedHttp(responses), settings=settings_, backend=backend) as rt:
            return await rt.start(flow, {})

    on_network = asyncio.run(real())
    text = (
        "flow: slow.yaml\ncases:\n  - name: slow\n    responses:\n"
        + "".join(
            f"      - {{request: {m} {url}, status: 200, body: {{}}, delay: {d}}}\n"
            for (m, url), d in delays.items()
        )
        + "    expect: {status: ended}\n"
    )
    cases = read_cases_file(tmp_path / "s.test.yaml", text)
    monkeypatch.setattr("flowlang.testing.runner.RuntimeSettings", lambda: settings_)
    offline = asyncio.run(run_flow_case(flow, cases.cases[0], backend))
    assert on_network.status == offline.status == "failed"
    assert on_network.error == offline.error == "the run took longer than 1s"
    assert [row["step"] for row in on_network.trace] == [row["step"] for row in offline.trace]
    assert [row["step"] for row in offline.trace] == ["r0"]


@pytest.mark.parametrize("backend", LOOPS)
def test_seven_answers_of_9_5_s_pass_the_60_s_deadline_in_flowlang_test(
    tmp_path: Path, backend: str
) -> None:
    steps = "".join(
        f"  r{n}: {{type: http_request, endpoint: 'https://x.example.com/{n}', timeout: 10s, "
        f"next: {'r' + str(n + 1) if n < 6 else 'bye'}, on_failure: bye}}\n"
        for n in range(7)
    )
    (tmp_path / "dl.yaml").write_text(
        f"flow: dl\nstart: r0\nsteps:\n{steps}  bye: {{type: hangup}}\n"
    )
    responses = "".join(
        f"      - {{request: GET https://x.example.com/{n}, status: 200, body: {{}}, delay: 9.5}}\n"
        for n in range(7)
    )
    path = tmp_path / "dl.test.yaml"
    path.write_text(
        "flow: dl.yaml\ncases:\n  - name: slow\n    responses:\n"
        + responses
        + "    expect: {status: ended}\n"
    )
    status, out = _test(str(path), "--backend", backend)
    assert status == 1, out
    # as flowlang run reports it (within CASE_SECONDS of wall time: no real sleep of 66.5 s)
    assert "the run failed: the run took longer than 60s" in out, out
    assert "r5             http_request        success" in out
    assert "r6             http_request" not in out


# --- 8. workflow coverage counts a file's own workflows -------------------------------------

RECORDINGS = (
    "  responses:\n"
    "    - {request: POST https://crm.example.com/api/activities, status: 201, body: {id: 501}}\n"
    "    - {request: POST https://sms.example.com/v1/messages, status: 201, body: {id: s}}\n"
    "    - {request: POST https://slack.com/api/chat.postMessage, body: {ok: true}}\n"
)


def test_workflow_coverage_counts_only_the_events_of_its_own_test_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(WORKFLOWS / "missed_call.yaml", tmp_path / name)
    (tmp_path / "a" / "a.test.yaml").write_text(
        "workflows: [missed_call.yaml]\n" + WORKFLOW_SECRETS + RECORDINGS + "cases:\n"
        "  - name: all three\n"
        + MISSED_CALL_EVENT
        + "    expect: {matched: [missed-call-follow-up]}\n"
    )
    (tmp_path / "b" / "b.test.yaml").write_text(
        "workflows: [./missed_call.yaml]\ncases:\n  - name: answered\n"
        "    event: {type: call.ended, properties: {answered: true}}\n    expect: {matched: []}\n"
    )
    report = tmp_path / "coverage.json"
    status, out = _test(
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "--coverage",
        "conditions",
        "--coverage-json",
        str(report),
    )
    assert status == 0, out
    data = json.loads(report.read_text())
    covered = {row["file"]: row["actions"]["covered"] for row in data["workflows"]}
    assert covered == {
        f"{tmp_path / 'a' / 'missed_call.yaml'} (missed-call-follow-up)": 3,
        f"{tmp_path / 'b' / 'missed_call.yaml'} (missed-call-follow-up)": 0,
    }
    assert "./" not in json.dumps(data)  # names normalised
    seen = {row["file"]: row["conditions"][0]["true"] for row in data["conditions"]}
    assert list(seen.values()) == [1, 0]  # b's answered call only: "answered equals false" false


# --- 9. a flow that reads the clock needs now -----------------------------------------------

HOURS_FLOW = """\
flow: hours
start: hours
steps:
  hours:
    type: business_hours
    schedule: {time_zone: UTC, weekly: {monday: ["09:00-17:00"]}}
    open: bye
    closed: bye
  bye: {type: hangup}
"""


def test_a_case_without_now_of_a_flow_that_reads_the_clock_is_an_error_at_the_case(
    tmp_path: Path,
) -> None:
    (tmp_path / "hours.yaml").write_text(HOURS_FLOW)
    path = tmp_path / "h.test.yaml"
    path.write_text(
        "flow: hours.yaml\ncases:\n  - name: at a time\n    now: 2026-12-07T10:00:00+00:00\n"
        "    expect: {outcomes: {hours: open}}\n  - name: whenever\n    expect: {ends_at: bye}\n"
    )
    status, out = _test(str(path))
    assert status == 2, out
    assert "case 'whenever' needs now: (in the case or the defaults): step 'hours' reads" in out
    assert f"{path}:6:" in out
    path.write_text(
        "flow: hours.yaml\ndefaults: {now: 2026-12-07T10:00:00+00:00}\ncases:\n"
        "  - name: whenever\n    expect: {outcomes: {hours: open}}\n"
    )
    assert _test(str(path))[0] == 0


# --- 11. nits: a FIFO is not searched, -k matching nothing is a usage error -----------------


def test_a_fifo_named_like_a_test_file_is_not_opened(folder: Path) -> None:
    import os

    _case(folder, "  - name: a\n    inputs: {ask: null}\n    expect: {ends_at: bye}\n")
    os.mkfifo(folder / "pipe.test.yaml")
    status, out = _test(str(folder))  # would block on open() if the FIFO were read
    assert status == 0, out
    assert "pipe.test.yaml" not in out
    status, out = _test(str(folder / "pipe.test.yaml"))
    assert status == 2


def test_k_matching_no_case_exits_2_with_a_message(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _case(folder, "  - name: a\n    inputs: {ask: null}\n    expect: {ends_at: bye}\n")
    status, _ = _test(str(path), "-k", "nothing like it")
    assert status == 2
    assert "no case name holds -k 'nothing like it' in 1 test file(s)" in capsys.readouterr().err


def test_a_missing_step_is_named_once() -> None:
    from flowlang.testing.expect import _list_failure

    failure = _list_failure("expect.path", ["a", "b"], ["a"], ("x",), "step")
    assert failure is not None
    assert failure.message == "step 2 is missing (1 instead of 2)"
