"""The graph of a flow: its steps as nodes, every way on from a step as a numbered edge, and
the edges a run's trace took, in order. Pictures (Mermaid, DOT, the HTML viewer) and coverage
(``flowlang test``) all read this one model, so they cannot disagree about what an edge is.

An edge is a label of ``Step.targets()`` (``next``, ``on_failure``, ``branches[0]``,
``options[1]`` …) or :data:`~flowlang.kinds.base.END`, the edge of a step where the run can end
(a call-control step that hands the call over, or a step without ``next`` whose kind lets the
run complete there). Which edge a trace row took is its kind's ``outcome_edge``.
"""

from __future__ import annotations

__all__ = ["END", "Coverage", "FlowEdge", "FlowGraph", "flow_graph"]

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlang.flow.model import CompiledFlow, Step
from flowlang.kinds.base import END

#: Edge labels drawn as failure edges (dashed): the ways a step goes when it did not succeed.
_FAILURE_LABELS = frozenset({"on_failure", "on_timeout", "on_no_input", "on_invalid", "fallback"})
#: The outcome of a trace row for a step that failed (the run stopped there).
_FAILED = "failed"


@dataclass(frozen=True)
class FlowEdge:
    """One way on from a step: its number in the graph, the step it leaves, the step it leads to
    (None: the run ends there), its label, and whether it is a failure edge."""

    index: int
    source: str
    target: str | None
    label: str
    failure: bool


@dataclass(frozen=True)
class FlowGraph:
    """A flow's steps (in document order) and edges (numbered in step order, then in the
    order of the step's fields)."""

    name: str
    start: str
    steps: Mapping[str, Step[Any]]
    edges: tuple[FlowEdge, ...]
    #: The edges of each step by label.
    by_step: Mapping[str, Mapping[str, FlowEdge]] = field(repr=False)

    def visits(
        self, trace: Iterable[Mapping[str, Any]]
    ) -> Iterator[tuple[str, bool, FlowEdge | None]]:
        """Each trace entry as (step id, whether it begins a visit, the edge it took or None):
        a step that waits for input and then resumes (or asks again) is one visit."""
        open_visit: str | None = None
        for entry in trace:
            step_id = entry["step"]
            edge = self.edge_taken(step_id, entry["outcome"], entry.get("detail"))
            yield step_id, step_id != open_visit, edge
            open_visit = step_id if edge is None else None

    def edge_taken(
        self, step_id: str, outcome: str, detail: Mapping[str, Any] | None = None
    ) -> FlowEdge | None:
        """The edge a trace row of ``step_id`` with ``outcome`` took; None when it took none
        (the step waits for input or asks again, or failed)."""
        step = self.steps.get(step_id)
        if step is None or outcome == _FAILED:
            return None
        label = step.kind.outcome_edge(step, outcome, detail)
        return None if label is None else self.by_step[step_id].get(label)

    def path(self, trace: Iterable[Mapping[str, Any]]) -> list[FlowEdge]:
        """The edges a run took, in order, from its trace entries (``RunResult.trace``; the
        entries of several legs of a suspended run, joined, give the whole call)."""
        taken = []
        for entry in trace:
            edge = self.edge_taken(entry["step"], entry["outcome"], entry.get("detail"))
            if edge is not None:
                taken.append(edge)
        return taken


def _step_edges(step: Step[Any]) -> list[tuple[str, str | None]]:
    edges: list[tuple[str, str | None]] = list(step.targets().items())
    kind = step.kind
    host = getattr(kind, "host", None)
    then = kind.fields.get("next")
    if (host is not None and host.ends) or (
        then is not None and not then.required and not step.fields.get("next")
    ):
        edges.append((END, None))
    return edges


def flow_graph(flow: CompiledFlow) -> FlowGraph:
    """The graph of a compiled flow."""
    edges: list[FlowEdge] = []
    by_step: dict[str, dict[str, FlowEdge]] = {}
    for step_id, step in flow.steps.items():
        own = by_step[step_id] = {}
        for label, target in _step_edges(step):
            edge = FlowEdge(len(edges), step_id, target, label, label in _FAILURE_LABELS)
            edges.append(edge)
            own[label] = edge
    return FlowGraph(flow.name, flow.start, flow.steps, tuple(edges), by_step)


@dataclass
class Coverage:
    """How often each step ran and each edge was taken over many runs of one flow."""

    graph: FlowGraph
    step_hits: dict[str, int] = field(default_factory=dict)
    edge_hits: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.edge_hits:
            self.edge_hits = [0] * len(self.graph.edges)

    def add(self, trace: Iterable[Mapping[str, Any]]) -> None:
        """Count one run's trace entries: each visit of a step once (a step that waits for
        input and then resumes, or asks again, is one visit), each edge taken."""
        for step_id, begins, edge in self.graph.visits(trace):
            if step_id not in self.graph.steps:
                continue
            if begins:
                self.step_hits[step_id] = self.step_hits.get(step_id, 0) + 1
            if edge is not None:
                self.edge_hits[edge.index] += 1

    @property
    def missing_edges(self) -> list[FlowEdge]:
        """The edges no run took, in graph order."""
        return [edge for edge in self.graph.edges if not self.edge_hits[edge.index]]
