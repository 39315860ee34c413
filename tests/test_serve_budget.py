"""`flowlang check --serve`: the worst case of each webhook's segment against the serve budget
(flowlang.serve.budget). Golden cases in tests/flow_cases/serve_budget/cases.yaml; a property
against a brute-force longest path on generated flows; the command line, hostile documents and a
flow of 5,000 steps."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli

from flowlang.flow.load import check_flow_text, load_flow, load_flow_text
from flowlang.flow.model import CompiledFlow
from flowlang.serve.budget import (
    DEFAULT_BUDGET,
    MAX_FINDINGS,
    SlowSegment,
    budget_findings,
    slow_segments,
)
from flowlang.serve.settings import ServeSettings

ROOT = Path(__file__).parent.parent
CASES = yaml.safe_load(
    (Path(__file__).parent / "flow_cases" / "serve_budget" / "cases.yaml").read_text("utf-8")
)["cases"]
EXAMPLES = sorted((ROOT / "examples" / "flows").glob("*.yaml"))

SLOW = """\
flow: slow
start: a
steps:
  a:
    type: http_request
    endpoint: https://api.example.com/a
    timeout: 5s
    next: b
    on_failure: bye
  b:
    type: http_request
    endpoint: https://api.example.com/b
    timeout: 5s
    next: c
    on_failure: bye
  c:
    type: http_request
    endpoint: https://api.example.com/c
    timeout: 5s
    next: bye
    on_failure: bye
  bye: {type: hangup}
"""


def _flow(text: str, name: str = "t.yaml") -> CompiledFlow:
    return load_flow_text(text, name=name)


def _reported(segments: list[SlowSegment]) -> list[dict[str, Any]]:
    return [
        {
            "start": segment.start,
            "path": list(segment.path),
            "total": segment.total,
            "unbounded": segment.unbounded,
        }
        for segment in segments
    ]


# --- golden cases --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_golden_segments(case: dict[str, Any]) -> None:
    flow = _flow(case["document"])
    budget = case.get("budget", DEFAULT_BUDGET)
    segments, more = slow_segments(flow, budget)
    expected = [{"unbounded": False, **item} for item in case["expect"]]
    assert _reported(segments) == expected
    assert more == 0
    findings = budget_findings(flow, budget)
    assert len(findings) == len(expected)
    for finding, segment in zip(
        findings, sorted(segments, key=lambda s: flow.steps[s.start].position.line), strict=True
    ):
        assert finding.severity == "warning"
        assert finding.position == flow.steps[segment.start].position
        places = [finding.message.find(repr(step_id)) for step_id in segment.path]
        assert -1 not in places
        assert places == sorted(places) or segment.unbounded  # named in order
        assert f"{segment.total:g} s" in finding.message
        assert f"{budget:g} s" in finding.message
        rendered = finding.render()
        assert f"t.yaml:{finding.position.line}:{finding.position.column}" in rendered
        assert rendered.rstrip().endswith("^")


def test_the_path_is_named_in_order_with_each_wait() -> None:
    (finding,) = budget_findings(_flow(SLOW))
    assert finding.message.endswith("'a' (5 s) -> 'b' (5 s) -> 'c' (5 s) -> 'bye'")
    assert "can wait up to 15 s" in finding.message
    assert "over the serve budget of 12 s" in finding.message


def test_an_unbounded_loop_says_so() -> None:
    case = next(case for case in CASES if case["name"].startswith("a loop of requests"))
    (finding,) = budget_findings(_flow(case["document"]))
    assert (
        "step 'poll' can loop through http_request steps without waiting for the caller"
        in finding.message
    )
    assert "'poll' (3 s) -> 'ready' -> back to 'poll'" in finding.message
    assert "until the step limit" in finding.message


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_the_example_flows_fit_the_default_budget(path: Path) -> None:
    flow = load_flow(path)
    assert budget_findings(flow) == []
    # they do wait on HTTP: a tiny budget finds their slowest segment
    segments, _ = slow_segments(flow, 0.001)
    assert segments and max(segment.total for segment in segments) <= DEFAULT_BUDGET


def test_the_default_budget_is_the_serve_segment_deadline() -> None:
    settings = ServeSettings(public_url="https://ivr.example.com", signatures=False)
    assert settings.segment_deadline == DEFAULT_BUDGET


def test_a_timeout_is_capped_as_the_runtime_caps_it() -> None:
    flow = _flow(SLOW)
    (segment,), _ = slow_segments(flow, 10, http_timeout_cap=4)
    assert segment.total == 12
    assert slow_segments(flow, 12, http_timeout_cap=4) == ([], 0)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf, "12", None, True], ids=repr)
def test_a_budget_or_cap_that_is_not_seconds_is_refused(bad: Any) -> None:
    flow = _flow(SLOW)
    with pytest.raises(ValueError, match="must be seconds, more than zero"):
        budget_findings(flow, bad)
    if bad is not None:  # no cap: the runtime's
        with pytest.raises(ValueError, match="must be seconds, more than zero"):
            slow_segments(flow, 12, http_timeout_cap=bad)


# --- many, huge, hostile -------------------------------------------------------------------


def _menus(count: int) -> str:
    steps: dict[str, Any] = {}
    for index in range(count):
        after = f"ask{index + 1}" if index + 1 < count else "bye"
        steps[f"ask{index}"] = {
            "type": "collect_input",
            "prompt": "Code?",
            "next": f"one{index}",
            "on_no_input": "bye",
        }
        for name, then in ((f"one{index}", f"two{index}"), (f"two{index}", after)):
            steps[name] = {
                "type": "http_request",
                "endpoint": "https://api.example.com/x",
                "timeout": "7s",
                "next": then,
                "on_failure": "bye",
            }
    steps["bye"] = {"type": "hangup"}
    return json.dumps({"flow": "many", "start": "ask0", "steps": steps})


def test_many_slow_segments_are_warned_about_up_to_a_limit() -> None:
    flow = _flow(_menus(MAX_FINDINGS + 7), "many.json")
    segments, more = slow_segments(flow)
    assert len(segments) == MAX_FINDINGS and more == 7
    findings = budget_findings(flow)
    assert len(findings) == MAX_FINDINGS + 1
    summary = [finding for finding in findings if "more are not" in finding.message]
    assert len(summary) == 1 and summary[0].message.startswith(f"{MAX_FINDINGS + 7} segments")


def _chain(count: int, timeout: str = "1s", wait_every: int = 0) -> str:
    """``count`` requests in a row (a collect_input every ``wait_every``), each failing back
    three steps (loops through waits only when ``wait_every`` is small enough)."""
    steps: dict[str, Any] = {}
    for index in range(count):
        after = f"s{index + 1}" if index + 1 < count else "bye"
        if wait_every and index % wait_every == 0:
            steps[f"s{index}"] = {
                "type": "collect_input",
                "prompt": "Code?",
                "next": after,
                "on_no_input": "bye",
            }
        else:
            steps[f"s{index}"] = {
                "type": "http_request",
                "endpoint": f"https://api.example.com/{index}",
                "timeout": timeout,
                "next": after,
                "on_failure": "bye",
            }
    steps["bye"] = {"type": "hangup"}
    return json.dumps({"flow": "chain", "start": "s0", "steps": steps})


def test_a_path_of_thousands_of_steps_is_reported_whole_and_shown_short() -> None:
    flow = _flow(_chain(3000), "chain.json")
    (segment,), _ = slow_segments(flow)
    assert len(segment.path) == 3001 and segment.total == 3000
    (finding,) = budget_findings(flow)
    assert len(finding.message) < 600
    assert "'s0' (1 s) -> 's1' (1 s)" in finding.message
    assert "(2989 steps) -> 'bye'" in finding.message


def _generated(count: int) -> str:
    """A flow of ``count`` steps of every kind with edges back and across (as a big IVR)."""
    steps: dict[str, Any] = {}
    for index in range(count):
        me, after = f"s{index}", f"s{index + 1}" if index + 1 < count else "bye"
        kind = index % 6
        if kind == 0:
            steps[me] = {"type": "collect_input", "next": after, "on_no_input": "bye"}
        elif kind in (1, 2):
            steps[me] = {
                "type": "http_request",
                "endpoint": f"https://api.example.com/{index}",
                "timeout": "7s",
                "next": after,
                "on_failure": f"s{max(index - 3, 0)}",
            }
        elif kind == 3:
            steps[me] = {
                "type": "condition_splitter",
                "branches": [
                    {
                        "conditions": [
                            {"property": "<<contact.x>>", "operator": "equals", "value": 1}
                        ],
                        "next": f"s{index * 7919 % count}",
                    }
                ],
                "otherwise": after,
            }
        elif kind == 4:
            steps[me] = {"type": "set_variables", "variables": {"v": "x"}, "next": after}
        else:
            steps[me] = {"type": "say", "text": "hello", "next": after}
    steps["bye"] = {"type": "hangup"}
    return json.dumps({"flow": "generated", "start": "s0", "steps": steps})


def test_a_flow_of_5000_steps_is_checked() -> None:
    flow = _flow(_generated(5000), "big.json")
    segments, _ = slow_segments(flow)
    assert segments and any(segment.unbounded for segment in segments)
    findings = budget_findings(flow)
    assert 0 < len(findings) <= MAX_FINDINGS + 1
    for segment in segments:
        _assert_real_path(flow, segment)


def test_secrets_and_endpoints_stay_out_of_the_warnings() -> None:
    document = SLOW.replace(
        "endpoint: https://api.example.com/a",
        "endpoint: https://api.example.com/a?key=<<secrets.api_key>>\n    headers:\n"
        "      Authorization: Bearer <<secrets.crm_token>>",
    )
    (finding,) = budget_findings(_flow(document))
    rendered = finding.message + finding.render().split("\n", 1)[0]
    assert "secrets" not in rendered and "api.example.com" not in rendered


def test_hostile_step_ids_are_quoted() -> None:
    nasty = "a\u202e\x1b[31m\nb"
    document = json.dumps(
        {
            "flow": "t",
            "start": nasty,
            "steps": {
                nasty: {
                    "type": "http_request",
                    "endpoint": "https://api.example.com/a",
                    "timeout": "10s",
                    "next": "z",
                    "on_failure": "z",
                },
                "z": {
                    "type": "http_request",
                    "endpoint": "https://api.example.com/z",
                    "timeout": "10s",
                    "next": "bye",
                    "on_failure": "bye",
                },
                "bye": {"type": "hangup"},
            },
        }
    )
    (finding,) = budget_findings(_flow(document, "t.json"))
    assert repr(nasty) in finding.message and "\n" not in finding.message


# --- a property: against a brute-force longest path ---------------------------------------

_TIMEOUTS = ("500ms", "1s", "2.5s", "5s", "10s")


def _seconds(duration: str) -> float:
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration[:-1])


@st.composite
def _flows(draw: st.DrawFn) -> tuple[str, dict[str, float]]:
    """A chain of random steps (``next`` always forward, so every step is reachable and no
    loop is closed) with random extra edges anywhere, and each step's wait in seconds."""
    count = draw(st.integers(1, 8))
    names = [f"s{index}" for index in range(count)] + ["bye"]
    anywhere = st.sampled_from(names)
    steps: dict[str, Any] = {}
    waits: dict[str, float] = {"bye": 0.0}
    for index in range(count):
        me, after = names[index], names[index + 1]
        kind = draw(st.sampled_from(("wait", "background", "collect", "menu", "split", "set")))
        waits[me] = 0.0
        if kind in ("wait", "background"):
            timeout = draw(st.sampled_from(_TIMEOUTS))
            step: dict[str, Any] = {
                "type": "http_request",
                "endpoint": "https://api.example.com/x",
                "timeout": timeout,
                "next": after,
            }
            if kind == "wait":
                step["on_failure"] = draw(anywhere)
                if draw(st.booleans()):
                    step["on_timeout"] = draw(anywhere)
                waits[me] = _seconds(timeout)
            else:
                step["parse_response"] = False
        elif kind == "collect":
            step = {"type": "collect_input", "next": after, "on_no_input": draw(anywhere)}
        elif kind == "menu":
            step = {
                "type": "menu",
                "say": "Choose.",
                "options": {"1": after, "2": draw(anywhere)},
                "fallback": draw(anywhere),
            }
        elif kind == "split":
            step = {
                "type": "condition_splitter",
                "branches": [
                    {
                        "conditions": [
                            {"property": "<<contact.x>>", "operator": "equals", "value": 1}
                        ],
                        "next": draw(anywhere),
                    }
                ],
                "otherwise": after,
            }
        else:
            step = {"type": "set_variables", "variables": {"v": "x"}, "next": after}
        steps[me] = step
    steps["bye"] = {"type": "hangup"}
    return json.dumps({"flow": "random", "start": "s0", "steps": steps}), waits


def _split(flow: CompiledFlow) -> tuple[dict[str, list[str]], str, list[str]]:
    """The split graph, independently of flowlang.serve.budget: a step that takes input is
    ``in:X`` (the run arrives and waits) and ``X`` (resumed); the start and the segment starts."""
    takes = {step_id for step_id, step in flow.steps.items() if step.kind.takes_input}
    graph = {
        step_id: [f"in:{t}" if t in takes else t for t in step.targets().values()]
        for step_id, step in flow.steps.items()
    }
    graph.update({f"in:{step_id}": [] for step_id in takes})
    start = f"in:{flow.start}" if flow.start in takes else flow.start
    return graph, start, sorted(takes)


def _reach(graph: dict[str, list[str]], node: str) -> set[str]:
    seen, todo = {node}, [node]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _longest(graph: dict[str, list[str]], node: str, weight: dict[str, float]) -> float:
    best = 0.0

    def walk(at: str, seen: frozenset[str], total: float) -> None:
        nonlocal best
        best = max(best, total)
        for target in graph[at]:
            if target not in seen:
                walk(target, seen | {target}, total + weight.get(target, 0.0))

    walk(node, frozenset({node}), weight.get(node, 0.0))
    return best


def _assert_real_path(flow: CompiledFlow, segment: SlowSegment) -> None:
    path = segment.path
    assert path[0] == segment.start
    pairs = list(itertools.pairwise(path))
    if segment.unbounded:
        pairs.append((path[-1], path[0]))
    for before, after in pairs:
        assert after in flow.steps[before].targets().values()
    inner = path if segment.unbounded else path[1:-1]
    assert not any(flow.steps[step_id].kind.takes_input for step_id in inner)


@settings(max_examples=150)
@given(_flows(), st.sampled_from((1.0, 5.0, 12.0)))
def test_reports_match_a_brute_force_longest_path(
    generated: tuple[str, dict[str, float]], budget: float
) -> None:
    document, waits = generated
    flow, findings = check_flow_text(document, name="random.json")
    assert flow is not None, [finding.render() for finding in findings]
    segments, more = slow_segments(flow, budget)
    assert more == 0
    budget_findings(flow, budget)  # never raises
    for segment in segments:
        _assert_real_path(flow, segment)
        assert segment.total == pytest.approx(sum(waits[step_id] for step_id in segment.path))
        assert segment.unbounded or segment.total > budget

    graph, start, takes = _split(flow)
    reached = _reach(graph, start)
    for step_id in takes:
        if f"in:{step_id}" in reached:
            reached |= _reach(graph, step_id)
    looping = {
        node
        for node in reached
        if waits.get(node, 0.0) and any(node in _reach(graph, t) for t in graph[node])
    }
    loops = [segment for segment in segments if segment.unbounded]
    assert {segment.path[0] for segment in loops} <= looping
    assert bool(loops) == bool(looping)
    sources = [start] + [step_id for step_id in takes if f"in:{step_id}" in reached]
    expected = {}
    for source in sources:
        ahead = _reach(graph, source)
        if ahead & looping:
            continue  # through a loop that waits: reported as the loop
        worst = _longest(graph, source, waits)
        if worst > budget + 1e-9:
            expected[source.removeprefix("in:")] = worst
    found = {segment.start: segment.total for segment in segments if not segment.unbounded}
    assert found == pytest.approx(expected)


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def slow_file(tmp_path: Path) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW, encoding="utf-8")
    return path


def test_check_serve_prints_the_warning_with_its_place_and_a_caret(slow_file: Path) -> None:
    status, out = cli("check", "--serve", str(slow_file))
    assert status == 0  # warnings alone
    assert "warning: the first webhook of a call can wait up to 15 s on HTTP requests" in out
    assert f"--> {slow_file}:4:3 (step 'a')" in out
    assert "4 |   a:\n  |   ^\n" in out
    assert out.endswith("1 file checked: 0 errors, 1 warning\n")


def test_check_without_serve_is_unchanged(slow_file: Path) -> None:
    assert cli("check", str(slow_file)) == (0, "1 file checked: 0 errors, 0 warnings\n")


def test_serve_budget_sets_the_budget_and_implies_serve(slow_file: Path) -> None:
    assert cli("check", "--serve-budget", "15", str(slow_file))[1].endswith("0 warnings\n")
    status, out = cli("check", "--serve-budget", "14.5", str(slow_file))
    assert status == 0 and "over the serve budget of 14.5 s" in out


def test_check_serve_in_json(slow_file: Path) -> None:
    status, out = cli("check", "--serve", "--format", "json", str(slow_file))
    document = json.loads(out)
    (finding,) = document["findings"]
    assert (finding["line"], finding["column"], finding["step"]) == (4, 3, "a")
    assert finding["severity"] == "warning" and status == 0


def test_check_serve_leaves_workflows_and_faulty_flows_alone(tmp_path: Path) -> None:
    workflows = sorted((ROOT / "examples" / "workflows").glob("*.yaml"))[:2]
    for path in workflows:
        assert cli("check", "--serve", str(path)) == cli("check", str(path))
    faulty = tmp_path / "faulty.yaml"
    faulty.write_text(
        SLOW.replace(
            "next: bye\n    on_failure: bye\n  bye", "next: nowhere\n    on_failure: bye\n  bye"
        ),
        encoding="utf-8",
    )
    status, out = cli("check", "--serve", str(faulty))
    assert status == 1 and "nowhere" in out and "webhook" not in out


def test_check_serve_reads_non_utf8_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(("# caf\xe9\n" + SLOW).encode("latin-1"))
    status, out = cli("check", "--serve", str(path))
    assert status == 2 and "not UTF-8" in out


def test_check_serve_on_the_examples_warns_about_nothing() -> None:
    status, out = cli("check", "--serve", *(str(path) for path in EXAMPLES))
    assert status == 0 and out.endswith(f"{len(EXAMPLES)} files checked: 0 errors, 0 warnings\n")


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-1",
        "nan",
        "abc",
        "1e309",
        "inf",
        "",
        "1_0",
        "\uff11\uff12",
        "-0",
        "1e",
        "+-1",
        ".",
        "9" * 400,
    ],
)
def test_a_bad_serve_budget_is_a_usage_error(
    value: str, slow_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = cli("check", f"--serve-budget={value}", str(slow_file))
    assert (status, out) == (2, "")
    error = capsys.readouterr().err
    assert error.startswith("flowlang: --serve-budget takes seconds, more than zero")
    assert len(error) < 300
