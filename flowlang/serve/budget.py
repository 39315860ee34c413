"""Budget: how long one webhook of a flow can wait at worst, against Twilio's 15 s.

A *segment* is what one webhook runs: from the flow's start, or from a step that takes input
once it is resumed, through the steps that follow until the next step that takes input (where
the run waits for the caller again) or the end. Its worst case is the longest path through it,
each step weighing its longest possible wait: an HTTP request that waits for its response
weighs its ``timeout`` (capped as the runtime caps it); a request sent in the background
(``parse_response: false``) and every other step weigh nothing.

The graph is the flow's numbered edges (:func:`flowlang.graph.model.flow_graph`) with each step
that takes input split in two: the run arriving there (a segment ends) and the run resuming
from it (a segment starts). A cycle left in that graph takes no input; one that waits on HTTP
can repeat until the step limit (reported as unbounded), one that does not weighs nothing.
Cycles are collapsed (Tarjan's algorithm), then the longest path from every step is one pass in
topological order, so the check is linear in steps plus edges. Times are whole microseconds, so
a total is exact and equals the sum along its path.
"""

from __future__ import annotations

__all__ = ["DEFAULT_BUDGET", "SlowSegment", "budget_findings", "slow_segments"]

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from flowlang.errors import SourceLines
from flowlang.flow.build import in_document_order
from flowlang.flow.model import CompiledFlow, Finding, Step
from flowlang.flow.validate import strongly_connected
from flowlang.graph.model import flow_graph
from flowlang.runtime.runner import RuntimeSettings
from flowlang.serve.settings import TWILIO_BUDGET

#: Seconds ``flowlang check --serve`` allows a segment (ServeSettings.segment_deadline's default).
DEFAULT_BUDGET = 12.0
#: Findings per flow at most (each names a path as long as the flow); then one that says more.
MAX_FINDINGS = 50
#: Steps a message names at most; a longer path shows its slow steps and its ends.
_MAX_SHOWN = 12
_MICRO = 1_000_000


@dataclass(frozen=True)
class SlowSegment:
    """A segment whose worst case is over the budget: the step it starts from (the flow's start,
    or the step that takes input, resumed), the path (step ids in order, from ``start`` to the
    step where it waits or ends) and its total wait, seconds. ``unbounded``: ``path`` is a loop
    (back to its first step) that waits on HTTP and takes no input, and ``total`` one pass."""

    start: str
    path: tuple[str, ...]
    total: float
    unbounded: bool = False


def _wait(step: Step, cap: int) -> int:
    """The longest a step can keep a webhook waiting, microseconds."""
    kind = step.kind
    if not getattr(kind, "network", False) or step.fields.get("parse_response") is False:
        return 0  # no I/O, or sent in the background: the run goes on at once
    timeout: object = step.fields.get("timeout")
    if timeout is None:
        spec = kind.fields.get("timeout")
        timeout = spec.default if spec is not None else None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        return cap  # not a number of seconds: the runtime's cap is the most it can wait
    if not math.isfinite(timeout) or timeout < 0:
        return cap
    return min(round(timeout * _MICRO), cap)


def _micro(seconds: float, name: str) -> int:
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be seconds, more than zero, not {seconds!r}")
    return round(seconds * _MICRO)


class _Segments:
    """The split graph of one flow, its collapsed cycles and the worst case from each node."""

    def __init__(self, flow: CompiledFlow, cap: int) -> None:
        steps = flow.steps
        self.names: list[str] = list(steps)
        index = {step_id: node for node, step_id in enumerate(self.names)}
        #: The node of the run arriving at each step that takes input (it waits there).
        self.arrival: dict[str, int] = {}
        for step_id, step in steps.items():
            if step.kind.takes_input:
                self.arrival[step_id] = len(self.names)
                self.names.append(step_id)
        count = len(self.names)
        self.cost = [_wait(step, cap) for step in steps.values()] + [0] * len(self.arrival)
        targets: list[dict[int, None]] = [{} for _ in range(count)]
        for edge in flow_graph(flow).edges:
            if edge.target is None or edge.source not in index or edge.target not in index:
                continue
            target = self.arrival.get(edge.target, index[edge.target])
            targets[index[edge.source]][target] = None
        self.successors = [list(nodes) for nodes in targets]
        self.index = index
        #: Tarjan's algorithm emits a component after every component it leads to (reverse
        #: topological order): each is settled after its successors (else ``worst`` raises).
        self.components = strongly_connected(self.successors)
        self.component = [0] * count
        for number, members in enumerate(self.components):
            for node in members:
                self.component[node] = number
        self.cyclic = [
            len(members) > 1 or members[0] in self.successors[members[0]]
            for members in self.components
        ]
        #: The longest wait from each component on (None: through a loop that waits).
        self.worst: list[int | None] = []
        #: The edge the longest path leaves each component by (None: it ends there).
        self.exit: list[tuple[int, int] | None] = []
        #: Components that are loops waiting on HTTP.
        self.loops: list[int] = []
        for number, members in enumerate(self.components):
            self._settle(number, members)

    def _settle(self, number: int, members: list[int]) -> None:
        component, worst = self.component, self.worst
        if self.cyclic[number] and any(self.cost[node] for node in members):
            self.loops.append(number)
            worst.append(None)
            self.exit.append(None)
            return
        best: int | None = 0
        leave: tuple[int, int] | None = None
        for node in members:
            for target in self.successors[node]:
                other = component[target]
                if other == number:
                    continue
                after = worst[other]
                if after is None:
                    best, leave = None, (node, target)
                    break
                if leave is None or (best is not None and after > best):
                    best, leave = after, (node, target)
            if best is None:
                break
        own = 0 if self.cyclic[number] else self.cost[members[0]]
        worst.append(None if best is None else own + best)
        self.exit.append(leave)

    def sources(self, start: str) -> tuple[list[int], set[int]]:
        """The nodes segments start from (the start first, then the steps that take input,
        resumed, in document order) and every node a run can reach."""
        first = self.arrival.get(start, self.index[start])
        seen = {first}
        queue = deque([first])
        while queue:
            node = queue.popleft()
            following = list(self.successors[node])
            if node >= len(self.index):  # arriving at a step that takes input: it resumes
                following.append(self.index[self.names[node]])
            for target in following:
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        resumed = [self.index[step_id] for step_id, node in self.arrival.items() if node in seen]
        return [first, *resumed], seen

    def inside(self, begin: int, end: int) -> list[int]:
        """A path from ``begin`` to ``end`` within their component (``[begin]`` when equal)."""
        if begin == end:
            return [begin]
        number = self.component[begin]
        came: dict[int, int] = {begin: begin}
        queue = deque([begin])
        while queue:
            node = queue.popleft()
            for target in self.successors[node]:
                if self.component[target] != number or target in came:
                    continue
                came[target] = node
                if target == end:
                    path = [end]
                    while path[-1] != begin:
                        path.append(came[path[-1]])
                    return path[::-1]
                queue.append(target)
        raise AssertionError("a component is strongly connected")  # pragma: no cover

    def longest(self, source: int) -> list[int]:
        """The nodes of the longest path from ``source`` (whose worst case is bounded)."""
        path: list[int] = []
        node = source
        while True:
            leave = self.exit[self.component[node]]
            if leave is None:
                path.append(node)
                return path
            inner, after = leave
            path.extend(self.inside(node, inner))
            node = after

    def first_waiting(self, number: int) -> int:
        """The first step (in document order) of a loop that waits on HTTP that waits."""
        return min(node for node in self.components[number] if self.cost[node])

    def cycle(self, number: int) -> list[int]:
        """A loop through the loop's first step that waits, back to it (not repeated)."""
        first = self.first_waiting(number)
        if first in self.successors[first]:
            return [first]
        back = next(node for node in self.successors[first] if self.component[node] == number)
        return [first, *self.inside(back, first)[:-1]]


def _seconds(micro: int) -> str:
    return f"{micro / _MICRO:g} s"


def slow_segments(
    flow: CompiledFlow,
    budget: float = DEFAULT_BUDGET,
    *,
    http_timeout_cap: float | None = None,
    limit: int = MAX_FINDINGS,
) -> tuple[list[SlowSegment], int]:
    """The loops of ``flow`` that wait on HTTP without taking input, then the segments a run
    can reach whose worst case is over ``budget`` seconds (the start's first, then those
    resumed from steps that take input, in document order); at most ``limit`` in all, with
    how many more there are. A segment that can reach such a loop is reported as the loop.

    ``http_timeout_cap``: the longest an HTTP request may wait (RuntimeSettings'
    ``http_timeout_cap`` by default). ValueError for a budget or cap that is not a positive,
    finite number of seconds.
    """
    budget_micro = _micro(budget, "the budget")
    cap = _micro(
        RuntimeSettings.http_timeout_cap if http_timeout_cap is None else http_timeout_cap,
        "http_timeout_cap",
    )
    if flow.start not in flow.steps:
        return [], 0
    graph = _Segments(flow, cap)
    sources, reached = graph.sources(flow.start)
    names, cost = graph.names, graph.cost
    # each candidate's path is made only when it is shown (at most ``limit`` of them)
    candidates: list[tuple[Callable[[], list[int]], bool]] = [
        (partial(graph.cycle, number), True)
        for number in sorted(graph.loops, key=graph.first_waiting)
        if graph.components[number][0] in reached
    ]
    for source in sources:
        worst = graph.worst[graph.component[source]]
        if worst is not None and worst > budget_micro:
            candidates.append((partial(graph.longest, source), False))
    found = []
    for make_path, unbounded in candidates[:limit]:
        path = make_path()
        total = sum(cost[node] for node in path) / _MICRO
        found.append(
            SlowSegment(names[path[0]], tuple(names[node] for node in path), total, unbounded)
        )
    return found, max(0, len(candidates) - limit)


def _shown(path: Sequence[str], steps: Mapping[str, Step], cap: int, back: bool) -> str:
    """The path as ``'a' -> 'b' (5 s) -> …``: every step when it is short, else its ends and
    its slow steps (at most ``_MAX_SHOWN``), the steps between counted."""
    waits = [_wait(steps[step_id], cap) for step_id in path]
    keep = list(range(len(path)))
    if len(path) > _MAX_SHOWN:
        slow = [position for position in range(1, len(path) - 1) if waits[position]]
        keep = sorted({0, len(path) - 1, *slow[: _MAX_SHOWN - 2]})
    parts: list[str] = []
    previous = -1
    for position in keep:
        skipped = position - previous - 1
        if skipped:
            parts.append(f"({skipped} step{'' if skipped == 1 else 's'})")
        wait = f" ({_seconds(waits[position])})" if waits[position] else ""
        parts.append(f"{path[position]!r}{wait}")
        previous = position
    if back:
        parts.append(f"back to {path[0]!r}")
    return " -> ".join(parts)


def budget_findings(
    flow: CompiledFlow,
    budget: float = DEFAULT_BUDGET,
    *,
    http_timeout_cap: float | None = None,
) -> list[Finding]:
    """Warnings for the segments of ``flow`` (one webhook's work each) that can wait longer
    than ``budget`` seconds on HTTP requests, and for loops that can wait on HTTP without
    taking input; each names its path and total and points at the path's first step (with
    the document's line and a caret). See :func:`slow_segments`."""
    segments, more = slow_segments(flow, budget, http_timeout_cap=http_timeout_cap)
    cap = _micro(
        RuntimeSettings.http_timeout_cap if http_timeout_cap is None else http_timeout_cap,
        "http_timeout_cap",
    )
    limit = (
        f"the serve budget of {budget:g} s (Twilio gives up on a webhook at {TWILIO_BUDGET:g} s)"
    )
    findings = []
    for segment in segments:
        step = flow.steps[segment.start]
        shown = _shown(segment.path, flow.steps, cap, segment.unbounded)
        total = _seconds(round(segment.total * _MICRO))
        if segment.unbounded:
            kinds = sorted(
                {
                    flow.steps[step_id].type
                    for step_id in segment.path
                    if _wait(flow.steps[step_id], cap)
                }
            )
            message = (
                f"step {segment.start!r} can loop through {' and '.join(kinds)} steps without "
                f"waiting for the caller: one pass {shown} can wait {total}, and one webhook "
                f"could repeat it until the step limit, past {limit}"
            )
        elif segment.start == flow.start and not step.kind.takes_input:
            message = (
                f"the first webhook of a call can wait up to {total} on HTTP requests, over "
                f"{limit}: {shown}"
            )
        else:
            message = (
                f"the webhook that resumes step {segment.start!r} can wait up to {total} on "
                f"HTTP requests, over {limit}: {shown}"
            )
        findings.append(Finding(message, step.position, "warning"))
    if more:
        findings.append(
            Finding(
                f"{len(segments) + more} segments or loops of this flow can wait longer than "
                f"{limit}; the first {len(segments)} are warned about, {more} more are not",
                flow.steps[flow.start].position,
                "warning",
            )
        )
    lines = SourceLines(flow.source)
    return in_document_order([finding.with_caret(lines) for finding in findings])
