"""Document benchmarks: load and check time and peak memory as documents grow (issue 8, item 18).

Chained-step flows of 1k, 5k and 20k steps, the longest chained flow within the 4 MiB document
limit (as YAML, and the same flow as JSON), a flow with 40,000 bad lines (one finding each), the
largest flows the limit allows of small steps in one loop with no way out (one finding: the
graph checks over every step) and of small steps with two faults each (every fault reported, the
graph still checked), and a workflow of 20,000 actions. Each is timed (load + check, the median of a few rounds) and then
checked once more under tracemalloc for its peak; a table is printed at the end. Loading alone
(no check) is timed for the 4 MiB flow as YAML and as JSON, the same data. Outside `make test`
and `make bench`:

    FLOWLANG_REQUIRE_EXTENSIONS=1 .venv/bin/python -m pytest benchmarks/test_documents.py \\
        --benchmark-only -q -s
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from big_documents import bad_lines_flow, chained_flow, chained_flow_of_size, chained_workflow

from flowlang.automations import check_workflow_text
from flowlang.flow import check_flow_text
from flowlang.flow.source import MAX_DOCUMENT, load_document, paused_collector


def _check_workflow(text: str) -> Any:
    """check_workflow as `flowlang check` calls it (the collector paused)."""
    with paused_collector():
        return check_workflow_text(text)


def _as_json(yaml_text: str) -> str:
    """The same document as compact JSON (what a generator or an editor's export writes)."""
    return json.dumps(load_document(yaml_text).data)


def _load(text: str) -> Any:
    with paused_collector():
        return load_document(text)


def _ring(count: int) -> str:
    """``count`` small steps, each leading to the next and the last to the first: one loop with
    no way out (one finding), the graph checks (reachability, loops) over every step."""
    parts = ["flow: ring\nstart: s0\nsteps:\n"]
    parts.extend(
        f"  s{index}: {{type: set_variables, variables: {{a: 1}}, next: s{(index + 1) % count}}}\n"
        for index in range(count)
    )
    return "".join(parts)


def _faulty_chain(count: int) -> str:
    """``count`` chained steps with two faults each (a template that does not compile, an
    unknown field): every step is still a node, so the graph checks run over all of them."""
    parts = ["flow: faults\nstart: s0\nsteps:\n"]
    parts.extend(
        f"  s{index}: {{type: say, text: 'hi <<x', bogus: 1, next: s{index + 1}}}\n"
        for index in range(count)
    )
    parts.append(f"  s{count}: {{type: hangup}}\n")
    return "".join(parts)


def _largest(make: Callable[[int], str]) -> tuple[str, int]:
    """The largest document ``make(count)`` within the document limit, and its count."""
    low, high = 1, MAX_DOCUMENT // 20
    while low < high:
        middle = (low + high + 1) // 2
        if len(make(middle).encode()) <= MAX_DOCUMENT:
            low = middle
        else:
            high = middle - 1
    return make(low), low


@functools.cache
def _largest_ring() -> tuple[str, int]:
    return _largest(_ring)


@functools.cache
def _largest_faulty_chain() -> tuple[str, int]:
    return _largest(_faulty_chain)


CASES: dict[str, tuple[Callable[[], str], Callable[[str], Any], int]] = {
    # name: (document maker, checker, expected findings)
    "flow, 1k steps": (lambda: chained_flow(1_000), check_flow_text, 0),
    "flow, 5k steps": (lambda: chained_flow(5_000), check_flow_text, 0),
    "flow, 20k steps": (lambda: chained_flow(20_000), check_flow_text, 0),
    "flow at the 4 MiB limit": (lambda: chained_flow_of_size(MAX_DOCUMENT), check_flow_text, 0),
    "the same flow as JSON": (
        lambda: _as_json(chained_flow_of_size(MAX_DOCUMENT)),
        check_flow_text,
        0,
    ),
    "flow, 40k bad lines": (lambda: bad_lines_flow(40_000), check_flow_text, 40_000),
    "4 MiB flow, one loop over every step": (lambda: _largest_ring()[0], check_flow_text, 1),
    "4 MiB flow, two faults in every step": (
        lambda: _largest_faulty_chain()[0],
        check_flow_text,
        2 * _largest_faulty_chain()[1],
    ),
    "workflow, 20k actions": (lambda: chained_workflow(20_000), _check_workflow, 0),
}
RESULTS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RESULTS and not LOADS:
        return
    lines = [
        "",
        "| document | size | steps or findings | load + check | peak traced memory |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in RESULTS.items():
        lines.append(
            f"| {name} | {row['bytes'] / 1e6:.2f} MB | {row['count']:,.0f} | "
            f"{row['seconds']:.2f} s | {row['peak'] / 1e6:.0f} MB |"
        )
    if len(LOADS) == 2:
        lines.append(
            f"\nload only, the 4 MiB flow: YAML {LOADS['yaml']:.2f} s, JSON {LOADS['json']:.2f} s "
            f"(JSON / YAML {LOADS['json'] / LOADS['yaml']:.2f})"
        )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


def _peak(check: Callable[[str], Any], text: str) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        check(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_load_and_check(benchmark: Any, name: str) -> None:
    make, check, expected = CASES[name]
    text = make()
    rounds = 3 if len(text) < 1_000_000 else 1
    result, findings = benchmark.pedantic(check, args=(text,), rounds=rounds, iterations=1)
    assert len(findings) == expected
    assert (result is None) == bool(expected)
    steps = len(getattr(result, "steps", None) or getattr(result, "actions", ())) if result else 0
    benchmark.group = "D documents"
    benchmark.extra_info.update(workload=name, bytes=len(text.encode()))
    RESULTS[name] = {
        "bytes": len(text.encode()),
        "count": expected or steps,
        "seconds": benchmark.stats.stats.median,
        "peak": _peak(check, text),
    }


LOADS: dict[str, float] = {}


@pytest.mark.parametrize("form", ["yaml", "json"])
def test_load_only(benchmark: Any, form: str) -> None:
    """Reading the 4 MiB flow into data and positions, without checking it: YAML (libyaml's
    events) against JSON (the JSON reader), the same data."""
    text = chained_flow_of_size(MAX_DOCUMENT)
    if form == "json":
        text = _as_json(text)
    document = benchmark.pedantic(_load, args=(text,), rounds=3, iterations=1)
    assert len(document.data["steps"]) > 20_000
    benchmark.group = "D document load"
    LOADS[form] = benchmark.stats.stats.median
