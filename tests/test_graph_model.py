"""The flow graph: every way on from a step is one numbered edge, and a run's trace maps onto
the edges it took, the same for both step loops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import flowlang
from flowlang.expr.backends import AVAILABLE
from flowlang.flow.load import load_flow
from flowlang.graph.model import Coverage, flow_graph
from flowlang.runtime.recorded import load_recorded_responses

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"


def _run(backend: str, digits: list[str | None], responses: str | None) -> list[dict[str, Any]]:
    flow = load_flow(EXAMPLES / "account_verification.yaml")
    context = json.loads((EXAMPLES / "data" / "account_verification.context.json").read_text())

    async def main() -> list[dict[str, Any]]:
        http = load_recorded_responses(EXAMPLES / "data" / responses) if responses else None
        secrets = {"billing_token": "b", "crm_token": "c"}
        options: dict[str, Any] = {"backend": backend, "secrets": secrets}
        if http is not None:
            options["http"] = http
        async with flowlang.Runtime(**options) as runtime:
            result = await runtime.start(flow, context)
            trace = list(result.trace)
            for entry in digits:
                result = await runtime.resume(flow, result.state or {}, entry)
                trace.extend(result.trace)
            return trace

    return asyncio.run(main())


def test_the_account_flow_has_one_edge_per_way_on() -> None:
    graph = flow_graph(load_flow(EXAMPLES / "account_verification.yaml"))
    labels = [(edge.source, edge.label, edge.target) for edge in graph.edges]
    assert ("verify", "on_timeout", "agent") in labels
    assert ("check", "branches[1]", "all_paid") in labels
    assert ("goodbye", "end", None) in labels
    assert [edge.index for edge in graph.edges] == list(range(len(graph.edges)))
    assert {edge.label for edge in graph.edges if edge.failure} == {
        "on_failure",
        "on_timeout",
        "on_no_input",
        "on_invalid",
    }


def test_a_run_maps_onto_the_edges_it_took(backend: str) -> None:
    graph = flow_graph(load_flow(EXAMPLES / "account_verification.yaml"))
    trace = _run(backend, ["12345678#"], "account_verification.responses.yaml")
    taken = [(edge.source, edge.label) for edge in graph.path(trace)]
    assert taken == [
        ("ask_account", "next"),
        ("verify", "next"),
        ("check", "branches[0]"),
        ("balance_due", "next"),
        ("log_call", "next"),
        ("goodbye", "end"),
    ]
    no_input = [(edge.source, edge.label) for edge in graph.path(_run(backend, [None], None))]
    assert no_input == [("ask_account", "on_no_input"), ("agent", "end")]


def test_coverage_counts_visits_and_edges_the_same_for_both_loops() -> None:
    results = []
    for backend in [name for name in ("cython", "python") if name in AVAILABLE]:
        graph = flow_graph(load_flow(EXAMPLES / "account_verification.yaml"))
        coverage = Coverage(graph)
        coverage.add(_run(backend, ["12345678#"], "account_verification.responses.yaml"))
        coverage.add(_run(backend, [None], None))
        results.append((coverage.step_hits, coverage.edge_hits))
        assert coverage.step_hits["ask_account"] == 2  # waited, then resumed: one visit each run
        assert coverage.step_hits["agent"] == 1
        missing = {(edge.source, edge.label) for edge in coverage.missing_edges}
        assert ("verify", "on_failure") in missing and ("ask_account", "next") not in missing
    assert all(result == results[0] for result in results)
