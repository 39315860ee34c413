"""Validate: the step graph (targets, reachability) and data flow (what is certain to exist).

Data flow is a forward must-analysis over the step graph: a fact holds at a step when it holds
on every path from the start. Facts are ``ran:X`` (step X finished; a step whose kind takes
input stored ``input.X`` on every outcome) and the facts a step's kind makes true on some of its
edges (``response:X``: http_request X succeeded, so its response is there: on its ``next`` edge).
After X's failure edge its response may be there (an HTTP error status keeps it) or not (a
timeout): a read of it is fine where X ran on every path and the read is guarded (left of
``??``, piped into ``default``, or a condition row's property with a lenient engine), else a
warning.

Loops: a strongly connected set of steps that no edge leaves, where no step takes input or can
end the run, would spin until the step limit (Tarjan's algorithm, without recursion, linear).

A fact that holds on every path to a step is a dominance question, so the analysis is the
dominator tree of the step graph, not a set of facts per step (which grows with the square of
the steps): ``ran:X`` holds at S when X strictly dominates S, and ``response:X`` when the
edge of X that makes it does (such an edge gets a node of its own). The tree is built by
Lengauer and Tarjan's algorithm, without recursion, in about linear time in steps plus edges;
each check is then two comparisons of DFS numbers.
"""

from __future__ import annotations

__all__ = ["Dominance", "strongly_connected", "validate_flow"]

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet

from flowlang.errors import SourcePosition
from flowlang.expr import ast
from flowlang.flow.build import UNKNOWN_KIND, TemplateUse
from flowlang.flow.model import Finding, Step
from flowlang.kinds.registry import STEP_KINDS
from flowlang.suggest import HintBudget

#: The kinds whose steps store ``input.<id>``, and those that keep ``steps.<id>``, for messages.
_INPUT_KINDS = " and ".join(name for name, kind in STEP_KINDS.items() if kind.takes_input)
_RECORD_KINDS = " and ".join(name for name, kind in STEP_KINDS.items() if kind.keeps_record)
#: Where secrets may be used, for messages: the fields each kind sends to a server.
_SECRET_PLACES = "; ".join(
    f"the {', '.join(kind.secret_fields[:-1])} and {kind.secret_fields[-1]} of {name} steps"
    if len(kind.secret_fields) > 1
    else f"the {kind.secret_fields[0]} of {name} steps"
    for name, kind in STEP_KINDS.items()
    if kind.secret_fields
)
#: "Did you mean" hints per document: each looks at many step ids, so a document with
#: thousands of bad targets gets hints on the first ones only.
_MAX_HINTS = 50


def dominator_tree(successors: list[list[int]]) -> list[int]:
    """The immediate dominator of each node reachable from node 0 (itself for 0; -1 when
    unreachable), by Lengauer and Tarjan's algorithm with path compression, iteratively."""
    count = len(successors)
    # 1. Depth-first numbering from the root.
    number = [-1] * count
    vertex: list[int] = []
    parent: list[int] = []
    stack = [(0, -1)]
    while stack:
        node, from_number = stack.pop()
        if number[node] != -1:
            continue
        number[node] = len(vertex)
        vertex.append(node)
        parent.append(from_number)
        here = number[node]
        for target in reversed(successors[node]):
            if number[target] == -1:
                stack.append((target, here))
    reached = len(vertex)
    predecessors: list[list[int]] = [[] for _ in range(reached)]
    for node in vertex:
        source = number[node]
        for target in successors[node]:
            predecessors[number[target]].append(source)
    # 2. Semidominators, then immediate dominators, in DFS numbers.
    semi = list(range(reached))
    label = list(range(reached))
    ancestor = [-1] * reached
    idom = [0] * reached
    bucket: list[list[int]] = [[] for _ in range(reached)]

    def evaluate(node: int) -> int:
        if ancestor[node] == -1:
            return node
        path = []
        while ancestor[ancestor[node]] != -1:
            path.append(node)
            node = ancestor[node]
        for item in reversed(path):
            up = ancestor[item]
            if semi[label[up]] < semi[label[item]]:
                label[item] = label[up]
            ancestor[item] = ancestor[up]
        return label[path[0]] if path else label[node]

    for current in range(reached - 1, 0, -1):
        for source in predecessors[current]:
            found = evaluate(source)
            if semi[found] < semi[current]:
                semi[current] = semi[found]
        bucket[semi[current]].append(current)
        above = parent[current]
        ancestor[current] = above
        for waiting in bucket[above]:
            found = evaluate(waiting)
            idom[waiting] = found if semi[found] < semi[waiting] else above
        bucket[above] = []
    for current in range(1, reached):
        if idom[current] != semi[current]:
            idom[current] = idom[idom[current]]
    out = [-1] * count
    for current in range(reached):
        out[vertex[current]] = vertex[idom[current]]
    return out


class Dominance:
    """Dominance in a graph of nodes 0..n-1 from root 0: ``dominates(a, b)`` in constant time."""

    def __init__(self, successors: list[list[int]]) -> None:
        idom = dominator_tree(successors)
        count = len(successors)
        children: list[list[int]] = [[] for _ in range(count)]
        for node in range(1, count):
            if idom[node] != -1:
                children[idom[node]].append(node)
        self.reachable = [parent != -1 for parent in idom]
        self._enter = [-1] * count
        self._leave = [-1] * count
        clock = 0
        stack = [(0, False)]
        while stack:
            node, done = stack.pop()
            if done:
                self._leave[node] = clock
                clock += 1
                continue
            self._enter[node] = clock
            clock += 1
            stack.append((node, True))
            stack.extend((child, False) for child in children[node])

    def dominates(self, above: int, below: int) -> bool:
        """Whether every path from the root to ``below`` passes ``above`` (reachable nodes)."""
        return self._enter[above] <= self._enter[below] and self._leave[below] <= self._leave[above]


class _Facts:
    """The facts that hold on entry to each step, answered from the dominator tree."""

    def __init__(self, steps: Mapping[str, Step], start: str) -> None:
        ids = [start, *(step_id for step_id in steps if step_id != start)]
        self.index = {step_id: position for position, step_id in enumerate(ids)}
        successors: list[list[int]] = [[] for _ in ids]
        #: For each (step, fact) its kind makes true on an edge: the node on that edge.
        self.fact_edges: dict[tuple[str, str], int] = {}
        for step_id in ids:
            step = steps[step_id]
            source = self.index[step_id]
            facts = step.kind.edge_facts(step)
            for edge, target in step.targets().items():
                if target not in self.index:
                    continue
                made = facts.get(edge)
                if made:
                    middle = len(successors)
                    successors.append([self.index[target]])
                    successors[source].append(middle)
                    for fact in made:
                        self.fact_edges[(step_id, fact)] = middle
                else:
                    successors[source].append(self.index[target])
        self.dominance = Dominance(successors)

    def reachable(self, step_id: str) -> bool:
        return self.dominance.reachable[self.index[step_id]]

    def ran(self, before: str, at: str) -> bool:
        """Whether step ``before`` finished on every path to step ``at``."""
        if before == at or before not in self.index:
            return False
        return self.dominance.dominates(self.index[before], self.index[at])

    def holds(self, fact: str, before: str, at: str) -> bool:
        """Whether step ``before`` took an edge that makes ``fact`` on every path to ``at``."""
        middle = self.fact_edges.get((before, fact))
        return middle is not None and self.dominance.dominates(middle, self.index[at])


def strongly_connected(successors: list[list[int]]) -> list[list[int]]:
    """The strongly connected components of a graph of nodes 0..n-1, by Tarjan's algorithm
    without recursion (linear in nodes plus edges); each component's nodes, in no set order."""
    count = len(successors)
    index = [-1] * count
    low = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    components: list[list[int]] = []
    clock = 0
    for root in range(count):
        if index[root] != -1:
            continue
        work = [(root, 0)]
        index[root] = low[root] = clock
        clock += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            node, position = work[-1]
            targets = successors[node]
            if position < len(targets):
                work[-1] = (node, position + 1)
                target = targets[position]
                if index[target] == -1:
                    index[target] = low[target] = clock
                    clock += 1
                    stack.append(target)
                    on_stack[target] = True
                    work.append((target, 0))
                elif on_stack[target] and index[target] < low[node]:
                    low[node] = index[target]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                if low[node] < low[parent]:
                    low[parent] = low[node]
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _can_end(step: Step) -> bool:
    """Whether a run can end or complete at the step (a call-control step that hands the call
    over; a step whose optional ``next`` is not given)."""
    kind = step.kind
    host = getattr(kind, "host", None)
    if host is not None and host.ends:
        return True
    then = kind.fields.get("next")
    return then is not None and not then.required and not step.fields.get("next")


def _names(ids: list[str]) -> str:
    shown = [repr(step_id) for step_id in ids[:5]]
    if len(ids) > 5:
        shown.append(f"{len(ids) - 5} more")
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _loops(
    steps: Mapping[str, Step], open_ended: AbstractSet[str], reachable: Callable[[str], bool]
) -> list[Finding]:
    """A finding for each set of steps the run could never leave: a strongly connected set of
    steps (a step leading to itself, or a cycle) that no edge leaves, where no step takes input
    (the caller could change the path), can end the run, or is ``open_ended`` (a fault in its
    type or edge fields: its edges are not all known). Only sets the run can reach
    (``reachable``)."""
    ids = list(steps)
    order = {step_id: position for position, step_id in enumerate(ids)}
    successors = [
        list(dict.fromkeys(order[target] for target in step.targets().values() if target in order))
        for step in steps.values()
    ]
    findings = []
    for component in strongly_connected(successors):
        members = {ids[node] for node in component}
        first = ids[min(component)]
        if len(component) == 1 and order[first] not in successors[order[first]]:
            continue  # one step that does not lead to itself: no loop
        if not reachable(first):
            continue  # unreachable: reported as such
        way_out = False
        for step_id in members:
            step = steps[step_id]
            if (
                step_id in open_ended
                or step.kind.takes_input
                or _can_end(step)
                or any(target not in members for target in step.targets().values())
            ):
                way_out = True
                break
        if way_out:
            continue
        step = steps[first]
        if len(component) == 1:
            edge = next(label for label, target in step.targets().items() if target == first)
            at = step.field_positions.get(edge, step.position)
            findings.append(
                Finding(
                    f"step {first!r} leads only to itself ({edge}): a loop with no way out, "
                    "the run would repeat it until the step limit",
                    SourcePosition(at.filename, at.line, at.column, first, edge),
                )
            )
            continue
        names = _names(sorted(members, key=order.__getitem__))
        findings.append(
            Finding(
                f"steps {names} form a loop with no way out: no edge leaves them and none takes "
                "input, so the run would repeat them until the step limit",
                step.position,
            )
        )
    return findings


def validate_flow(
    steps: Mapping[str, Step],
    start: str | None,
    start_position: SourcePosition,
    templates: list[TemplateUse],
    *,
    broken: AbstractSet[str] = frozenset(),
    open_ended: AbstractSet[str] = frozenset(),
    strict: bool = False,
) -> list[Finding]:
    """Every graph and data-flow problem of a flow, also when some of its steps have faults.

    ``broken``: steps with faults, nodes all the same with the edges that built (their
    templates that compiled are checked); ``open_ended``: those whose edges may not all be
    known. Without a known ``start`` (None: missing or not a step id) reachability and data
    flow cannot be checked; targets and loops still are. ``strict``: the engine's templates
    fail on a missing path (so a condition row does not guard one)."""
    findings: list[Finding] = []
    hint = HintBudget(_MAX_HINTS)

    if start is not None and start not in steps:
        findings.append(
            Finding(f"start step {start!r} does not exist{hint(start, steps)}", start_position)
        )
    for step in steps.values():
        for edge, target in step.targets().items():
            if target not in steps:
                field = edge.split("[")[0]  # branches[0], options[1]: in the field
                position = step.field_positions.get(
                    edge, step.field_positions.get(field, step.position)
                )
                findings.append(
                    Finding(
                        f"{edge} goes to step {target!r}, which does not exist"
                        f"{hint(target, steps)}",
                        SourcePosition(
                            position.filename, position.line, position.column, step.id, edge
                        ),
                    )
                )
    if start is None or start not in steps:
        return findings + _loops(steps, open_ended, lambda step_id: True)
    facts = _Facts(steps, start)
    for step_id, step in steps.items():
        if not facts.reachable(step_id):
            findings.append(
                Finding(
                    f"step {step_id!r} is unreachable from the start step {start!r}", step.position
                )
            )
    findings.extend(_loops(steps, open_ended, facts.reachable))
    for use in templates:
        if not facts.reachable(use.step):
            continue
        guarded: set[tuple[int, int]] | None = _guarded_paths(use.template.tree)
        if not strict and _is_row_property(use.field):
            guarded = None  # a row compares a missing value as null
        for reference in use.template.references:
            soft = guarded is None or (reference.start, reference.end) in guarded
            problem = _check_reference(reference.path, use, steps, facts, broken, soft)
            if problem is not None:
                message, severity = problem
                at, width = use.place(reference.start, reference.end)
                findings.append(Finding(f"{reference}: {message}", at, severity, width=width))
    return findings


def _is_row_property(field: str) -> bool:
    """Whether a template fills the property of a condition row (``branches[0].conditions[1]
    .property``)."""
    return ".conditions[" in field and field.endswith(".property")


def _guarded_paths(tree: ast.TemplateTree) -> set[tuple[int, int]]:
    """The spans of the paths that read as null when missing, never failing the template: on
    the left of ``??``, or piped into ``default`` (the engine lowers them soft)."""
    found: set[tuple[int, int]] = set()
    pending: list[tuple[ast.Node, bool]] = [(hole.expr, False) for hole in tree.holes]
    while pending:
        node, soft = pending.pop()
        if isinstance(node, ast.Path):
            if soft and isinstance(node.base, ast.Root):
                found.add((node.start, node.end))
            pending.extend((child, False) for child in node.children())
        elif isinstance(node, ast.Coalesce):
            *lefts, last = node.operands
            pending.extend((left, True) for left in lefts)
            pending.append((last, soft))
        elif isinstance(node, ast.Pipe):
            operand_soft = soft or node.filters[0].name == "default"
            pending.append((node.operand, operand_soft))
            pending.extend((call, False) for call in node.filters)
        else:
            pending.extend((child, False) for child in node.children())
    return found


def _check_reference(
    path: tuple[object, ...],
    use: TemplateUse,
    steps: Mapping[str, Step],
    facts: _Facts,
    broken: AbstractSet[str],
    soft: bool,
) -> tuple[str, str] | None:
    root = path[0]
    if root == "secrets":
        field = use.field.split(".", 1)[0].split("[", 1)[0]  # headers.X, body.a.b: the field
        if field not in steps[use.step].kind.secret_fields:
            return (f"secrets may only be used in {_SECRET_PLACES}", "error")
        return None
    if root not in ("input", "steps") or len(path) < 2:
        return None
    target = path[1]
    if target is None:
        return ("the step id is computed, so this cannot be checked before the call", "warning")
    target_id = str(target)
    step = steps.get(target_id)
    if step is not None and step.kind is UNKNOWN_KIND:
        return None  # its type is unknown (reported): what it stores is too
    if root == "input":
        if step is None:
            return (f"there is no step {target_id!r}", "error")
        if not step.kind.takes_input:
            return (
                f"step {target_id!r} is a {step.type} step, which takes no input "
                f"({_INPUT_KINDS} steps do)",
                "error",
            )
        if not facts.ran(target_id, use.step):
            return (f"step {target_id!r} may not have run on every path to this step", "error")
        return None
    if len(path) < 3 or path[2] not in ("response", "outcome"):
        return None
    if step is None:
        return (f"there is no step {target_id!r}", "error")
    if not step.kind.keeps_record:
        return (
            f"step {target_id!r} is a {step.type} step, which keeps no steps.{target_id} "
            f"record ({_RECORD_KINDS} steps do)",
            "error",
        )
    if path[2] == "outcome":
        if not facts.ran(target_id, use.step):
            return (f"step {target_id!r} may not have run on every path to this step", "error")
        return None
    if target_id not in broken and not any(
        "response" in made for made in step.kind.edge_facts(step).values()
    ):
        return (
            f"step {target_id!r} does not parse a response "
            "(an http_request with parse_response: true "
            "does)",
            "error",
        )
    if facts.holds("response", target_id, use.step):
        return None
    if not facts.ran(target_id, use.step):
        return (
            f"step {target_id!r} may not have run on every path to this step "
            "(its response is read before it runs)",
            "error",
        )
    if soft:
        return None  # read after its failure edge, guarded: null when no response came
    return (
        f"step {target_id!r} may have failed on the way here, and then its response may be "
        "missing (an HTTP error status keeps it; a timeout or connection error does not): "
        f"guard the read, e.g. <<{_dotted(path)} ?? 0>>",
        "warning",
    )


def _dotted(path: tuple[object, ...]) -> str:
    """A reference's path written with dots, for a message (a long one cut short)."""
    text = ".".join(str(part) for part in path)
    return text if len(text) <= 80 else text[:77] + "..."
