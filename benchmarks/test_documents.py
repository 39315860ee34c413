"""Document benchmarks: load and check time and peak memory as documents grow (issue 8, item 18).

Chained-step flows of 1k, 5k and 20k steps, the longest chained flow within the 4 MiB document
limit, a flow with 40,000 bad lines (one finding each) and a workflow of 20,000 actions. Each is
timed (load + check, the median of a few rounds) and then checked once more under tracemalloc
for its peak; a table is printed at the end. Outside `make test` and `make bench`:

    FLOWLANG_REQUIRE_EXTENSIONS=1 .venv/bin/python -m pytest benchmarks/test_documents.py \\
        --benchmark-only -q -s
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from big_documents import bad_lines_flow, chained_flow, chained_flow_of_size, chained_workflow

from flowlang.automations import check_workflow_text
from flowlang.flow import check_flow
from flowlang.flow.source import MAX_DOCUMENT, paused_collector


def _check_workflow(text: str) -> Any:
    """check_workflow as `flowlang check` calls it (the collector paused)."""
    with paused_collector():
        return check_workflow_text(text)


CASES: dict[str, tuple[Callable[[], str], Callable[[str], Any], int]] = {
    # name: (document maker, checker, expected findings)
    "flow, 1k steps": (lambda: chained_flow(1_000), check_flow, 0),
    "flow, 5k steps": (lambda: chained_flow(5_000), check_flow, 0),
    "flow, 20k steps": (lambda: chained_flow(20_000), check_flow, 0),
    "flow at the 4 MiB limit": (lambda: chained_flow_of_size(MAX_DOCUMENT), check_flow, 0),
    "flow, 40k bad lines": (lambda: bad_lines_flow(40_000), check_flow, 40_000),
    "workflow, 20k actions": (lambda: chained_workflow(20_000), _check_workflow, 0),
}
RESULTS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RESULTS:
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
    steps = text.count("\n    type: ")
    benchmark.group = "D documents"
    benchmark.extra_info.update(workload=name, bytes=len(text.encode()))
    RESULTS[name] = {
        "bytes": len(text.encode()),
        "count": expected or steps,
        "seconds": benchmark.stats.stats.median,
        "peak": _peak(check, text),
    }
