"""A picture laid out on a plane, top to bottom, by flowlang itself: deterministic (the same
picture gives the same numbers, so layouts have golden tests) and close to linear in the size
of the picture.

The stages of a layered (Sugiyama-style) layout, per group (a workflow; nodes without a group
form the first one), groups side by side:

1. cycles broken by a depth-first search from the first node: its back edges point up;
2. longest-path layering: a node sits one layer below its lowest predecessor;
3. edges over a few layers get a chain of dummy nodes (bends); longer ones run down a lane on
   the right of the group (one lane per target), so the dummies stay linear in the edges;
4. a bounded number of barycentric sweeps order each layer;
5. coordinates: each node near the mean of its neighbours, never overlapping its layer.

Sizes come from the text: a monospace font of :data:`FONT_SIZE` pixels, lines wrapped at
:data:`WRAP` characters.
"""

from __future__ import annotations

__all__ = [
    "FONT_SIZE",
    "WRAP",
    "EdgeRoute",
    "GroupBox",
    "Layout",
    "NodeBox",
    "layout",
    "text_width",
    "wrap_lines",
]

from dataclasses import dataclass
from itertools import pairwise

from flowlang.graph.picture import MAX_LINES, Picture, label_lines, text_columns

#: The font size of node text, in pixels; a character is :data:`CHAR_WIDTH` wide.
FONT_SIZE = 12
CHAR_WIDTH = 7.2
LINE_HEIGHT = 15
#: Node and edge text is wrapped at this many columns a line, and cut after
#: :data:`~flowlang.graph.picture.MAX_LINES` lines.
WRAP = 28
PAD_X = 14
PAD_Y = 9
MIN_WIDTH = 60
#: Space between nodes in a layer, between layers, around a group, between groups.
NODE_GAP = 28
LAYER_GAP = 46
MARGIN = 20
GROUP_GAP = 40
GROUP_TITLE = 24
#: An edge over more layers than this runs down a lane at the side instead of bending through
#: dummy nodes; lanes are this far apart.
MAX_SPAN = 6
LANE_GAP = 12
#: Ordering sweeps (each one down and one up).
SWEEPS = 4
DUMMY_WIDTH = 14


@dataclass(frozen=True)
class NodeBox:
    """Where a node is drawn: its top-left corner, size and the lines of its text."""

    key: str
    x: float
    y: float
    width: float
    height: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class EdgeRoute:
    """How an edge is drawn: a polyline from its source to its target (the last point touches
    the target), and where its text goes."""

    points: tuple[tuple[float, float], ...]
    label_at: tuple[float, float]


@dataclass(frozen=True)
class GroupBox:
    """The frame around one group's nodes, with its title (None: the nodes of no group)."""

    title: str | None
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Layout:
    """A laid-out picture: one box per node and one route per edge, in the picture's order."""

    width: float
    height: float
    nodes: tuple[NodeBox, ...]
    edges: tuple[EdgeRoute, ...]
    groups: tuple[GroupBox, ...]


def text_width(line: str) -> float:
    """How wide ``line`` is drawn, in pixels: its columns (:func:`text_columns`: wide
    characters two, combining marks none) times :data:`CHAR_WIDTH`. Node and edge text alike."""
    return text_columns(line) * CHAR_WIDTH


def _wrap(text: str) -> list[str]:
    """One line of text wrapped at :data:`WRAP` columns, at a space when there is one."""
    lines: list[str] = []
    while text_columns(text) > WRAP:
        cut, columns = 0, 0
        for at, char in enumerate(text):
            columns += text_columns(char)
            if columns > WRAP:
                break
            cut = at + 1
        cut = max(cut, 1)
        space = text.rfind(" ", 1, cut + 1)
        cut = space if space > 0 else cut
        lines.append(text[:cut])
        text = text[cut:].lstrip()
    lines.append(text)
    return lines


def wrap_lines(label: str) -> tuple[str, ...]:
    """A label's lines as the picture draws them: the lines of :func:`label_lines` (the text
    every format draws), each wrapped at :data:`WRAP` columns (at a space when there is one),
    at most :data:`MAX_LINES` lines, the last cut with an ellipsis."""
    lines = [part for line in label_lines(label) for part in _wrap(line)]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES]
        last = lines[-1]
        while last and text_columns(last) > WRAP - 1:
            last = last[:-1]
        lines[-1] = last + "…"
    return tuple(lines)


def _round(value: float) -> float:
    return float(round(value, 1))


@dataclass
class _Item:
    """A node or a dummy while laying out one group."""

    width: float
    height: float
    layer: int = 0
    x: float = 0.0
    up: list[int] | None = None
    down: list[int] | None = None

    def neighbours(self, towards: str) -> list[int]:
        """The items joined to this one in the layer above (``up``) or below (``down``)."""
        near = self.up if towards == "up" else self.down
        return near if near is not None else []


class _Group:
    """One group's nodes (picture indices) and edges (picture indices) being laid out."""

    def __init__(self, nodes: list[int], sizes: list[tuple[float, float]]) -> None:
        self.nodes = nodes
        self.items = [_Item(*sizes[n]) for n in nodes]
        self.local = {node: i for i, node in enumerate(nodes)}
        #: Per picture edge inside the group: the item chain from source to target.
        self.chains: dict[int, list[int]] = {}
        #: Per long edge: its lane at the side.
        self.lanes: dict[int, int] = {}
        self.lane_count = 0
        self.reversed: set[int] = set()
        self.layers: list[list[int]] = []

    def rank(self, edges: list[tuple[int, int, int]]) -> None:
        """Break cycles (back edges of a depth-first search, in node order) and give each item
        the layer of the longest path to it."""
        count = len(self.items)
        out: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        for number, source, target in edges:
            out[source].append((target, number))
        state = [0] * count  # 0 new, 1 on the stack, 2 done
        forward: list[tuple[int, int, int]] = []
        for root in range(count):
            if state[root]:
                continue
            state[root] = 1
            stack = [(root, 0)]
            while stack:
                node, at = stack[-1]
                if at < len(out[node]):
                    stack[-1] = (node, at + 1)
                    target, number = out[node][at]
                    if state[target] == 1:
                        self.reversed.add(number)
                        forward.append((number, target, node))
                        continue
                    forward.append((number, node, target))
                    if state[target] == 0:
                        state[target] = 1
                        stack.append((target, 0))
                else:
                    state[node] = 2
                    stack.pop()
        incoming = [0] * count
        succ: list[list[int]] = [[] for _ in range(count)]
        for _, source, target in forward:
            if source != target:
                succ[source].append(target)
                incoming[target] += 1
        ready = [i for i in range(count) if incoming[i] == 0]
        ready.reverse()
        while ready:
            node = ready.pop()
            for target in succ[node]:
                self.items[target].layer = max(self.items[target].layer, self.items[node].layer + 1)
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
        self._chain(forward)

    def _chain(self, forward: list[tuple[int, int, int]]) -> None:
        """Chains of items for edges (dummies for bends), lanes for the longest edges."""
        lane_of: dict[int, int] = {}  # one lane per node the long edges lead to
        for number, source, target in forward:
            low, high = self.items[source].layer, self.items[target].layer
            if source == target:
                self.chains[number] = [source]
                continue
            if high - low > MAX_SPAN:
                leads_to = source if number in self.reversed else target
                self.lanes[number] = lane_of.setdefault(leads_to, len(lane_of))
                self.chains[number] = [source, target]
                continue
            chain = [source]
            for layer in range(low + 1, high):
                self.items.append(_Item(DUMMY_WIDTH, 0.0, layer))
                chain.append(len(self.items) - 1)
            chain.append(target)
            self.chains[number] = chain
        self.lane_count = len(lane_of)
        for item in self.items:
            item.up, item.down = [], []
        for number, chain in self.chains.items():
            if number in self.lanes:
                continue
            for upper, lower in pairwise(chain):
                self.items[upper].neighbours("down").append(lower)
                self.items[lower].neighbours("up").append(upper)

    def order(self) -> None:
        """Layers ordered by a few barycentric sweeps, starting from creation order."""
        depth = max((item.layer for item in self.items), default=-1) + 1
        self.layers = [[] for _ in range(depth)]
        for index, item in enumerate(self.items):
            self.layers[item.layer].append(index)
        position = [0.0] * len(self.items)
        for layer in self.layers:
            for at, index in enumerate(layer):
                position[index] = at
        for _ in range(SWEEPS):
            for rows, towards in ((self.layers[1:], "up"), (self.layers[-2::-1], "down")):
                for layer in rows:
                    keys = []
                    for index in layer:
                        near = self.items[index].neighbours(towards)
                        centre = (
                            sum(position[n] for n in near) / len(near) if near else position[index]
                        )
                        keys.append((centre, position[index], index))
                    keys.sort()
                    layer[:] = [index for _, _, index in keys]
                    for at, index in enumerate(layer):
                        position[index] = at

    def place(self) -> tuple[float, list[float]]:
        """x of every item (from 0) and the top of every layer; returns the width and the
        layer tops (from 0)."""
        for layer in self.layers:
            x = 0.0
            for index in layer:
                self.items[index].x = x
                x += self.items[index].width + NODE_GAP
        for _ in range(2):
            for rows, towards in ((self.layers[1:], "up"), (self.layers[-2::-1], "down")):
                for layer in rows:
                    self._settle(layer, towards)
        left = min((item.x for item in self.items), default=0.0)
        for item in self.items:
            item.x -= left
        width = max((item.x + item.width for item in self.items), default=0.0)
        tops, y = [], 0.0
        for layer in self.layers:
            tops.append(y)
            y += max((self.items[i].height for i in layer), default=0.0) + LAYER_GAP
        tops.append(y)  # where a layer below the last would start
        return width, tops

    def _settle(self, layer: list[int], towards: str) -> None:
        """Move a layer's items towards the centres of their neighbours, keeping their order
        and the gap between them: the mean of the overlaps pushed right and pushed left."""
        items = self.items
        wanted = []
        for index in layer:
            item = items[index]
            near = item.neighbours(towards)
            if near:
                centre = sum(items[n].x + items[n].width / 2 for n in near) / len(near)
                wanted.append(centre - item.width / 2)
            else:
                wanted.append(item.x)
        pushed: list[float] = []  # each as far left as it wants, pushed right by the others
        for at in range(len(layer)):
            floor = pushed[-1] + items[layer[at - 1]].width + NODE_GAP if at else wanted[0]
            pushed.append(max(wanted[at], floor))
        pulled = wanted[:]  # each as far right as it wants, pushed left by the others
        for at in range(len(layer) - 2, -1, -1):
            ceiling = pulled[at + 1] - items[layer[at]].width - NODE_GAP
            pulled[at] = min(wanted[at], ceiling)
        placed = [(a + b) / 2 for a, b in zip(pushed, pulled, strict=True)]
        for at, index in enumerate(layer):
            items[index].x = placed[at]


def _sizes(picture: Picture) -> tuple[list[tuple[str, ...]], list[tuple[float, float]]]:
    lines = [wrap_lines(node.label) for node in picture.nodes]
    sizes = [
        (
            max(MIN_WIDTH, max(text_width(line) for line in text) + 2 * PAD_X),
            float(len(text) * LINE_HEIGHT + 2 * PAD_Y),
        )
        for text in lines
    ]
    return lines, sizes


@dataclass(frozen=True)
class _Way:
    """How an edge goes between its ends: through bends, or down a lane at x (None: not)."""

    bends: tuple[tuple[float, float], ...] = ()
    lane: float | None = None


def layout(picture: Picture) -> Layout:
    """Lay out ``picture``: positions and sizes of its nodes, polylines of its edges."""
    lines, sizes = _sizes(picture)
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    members: dict[str | None, list[int]] = {}
    for at, node in enumerate(picture.nodes):
        members.setdefault(node.group, []).append(at)
    groups = [_Group(nodes, sizes) for nodes in members.values()]
    group_of = {node: group for group in groups for node in group.nodes}
    inner: dict[int, list[tuple[int, int, int]]] = {id(group): [] for group in groups}
    for number, edge in enumerate(picture.edges):
        source, target = index.get(edge.source), index.get(edge.target)
        if source is not None and target is not None and group_of[target] is group_of[source]:
            group = group_of[source]
            inner[id(group)].append((number, group.local[source], group.local[target]))
    boxes: list[NodeBox] = []
    frames: list[GroupBox] = []
    ways: dict[int, _Way] = {}
    left, height = float(MARGIN), 0.0
    titled = len(members) > 1 or None not in members
    top = MARGIN + (GROUP_TITLE if titled else 0)
    for name, group in zip(members, groups, strict=True):
        group.rank(inner[id(group)])
        group.order()
        width, tops = group.place()
        for local, member in enumerate(group.nodes):
            item = group.items[local]
            x, y = left + item.x, top + tops[item.layer]
            boxes.append(
                NodeBox(picture.nodes[member].key, x, y, item.width, item.height, lines[member])
            )
        body = tops[-1] - LAYER_GAP
        for number, chain in group.chains.items():
            if number in group.lanes:
                ways[number] = _Way(lane=left + width + LANE_GAP * (1 + group.lanes[number]))
                continue
            bends = [
                (left + group.items[i].x + DUMMY_WIDTH / 2, top + tops[group.items[i].layer] + dy)
                for i in chain[1:-1]
                for dy in (
                    0.0,
                    tops[group.items[i].layer + 1] - LAYER_GAP - tops[group.items[i].layer],
                )
            ]
            if number in group.reversed:
                bends.reverse()
            ways[number] = _Way(tuple(bends))
        width += LANE_GAP * (group.lane_count + 1) if group.lane_count else 0
        if titled:
            frames.append(
                GroupBox(
                    name, left - MARGIN / 2, MARGIN / 2, width + MARGIN, body + GROUP_TITLE + MARGIN
                )
            )
        height = max(height, top + body)
        left += width + GROUP_GAP
    by_key = {box.key: box for box in boxes}
    twins = _twins(picture)
    seen: dict[str, int] = {}
    sibling = []  # each edge's place among the edges leaving its source
    for edge in picture.edges:
        sibling.append(seen.get(edge.source, 0))
        seen[edge.source] = sibling[-1] + 1
    routes = tuple(
        _route(
            by_key[edge.source],
            by_key[edge.target],
            ways.get(number, _Way()),
            twins[number],
            sibling[number] % 2,
        )
        if edge.source in by_key and edge.target in by_key
        else EdgeRoute((), (0.0, 0.0))
        for number, edge in enumerate(picture.edges)
    )
    ordered = sorted(boxes, key=lambda box: index[box.key])
    return Layout(
        _round(left - GROUP_GAP + MARGIN if members else 2 * MARGIN),
        _round(height + MARGIN),
        tuple(_rounded_box(box) for box in ordered),
        routes,
        tuple(_rounded_frame(frame) for frame in frames),
    )


def _twins(picture: Picture) -> list[float]:
    """For each edge, where it runs among the edges between the same two nodes: from -1 (first)
    to 1 (last); 0 for an edge with no twin."""
    pairs: dict[tuple[str, str], list[int]] = {}
    for number, edge in enumerate(picture.edges):
        pairs.setdefault((edge.source, edge.target), []).append(number)
    shift = [0.0] * len(picture.edges)
    for numbers in pairs.values():
        half = (len(numbers) - 1) / 2
        for at, number in enumerate(numbers):
            shift[number] = (at - half) / half if half else 0.0
    return shift


def _rounded_box(box: NodeBox) -> NodeBox:
    return NodeBox(
        box.key, _round(box.x), _round(box.y), _round(box.width), _round(box.height), box.lines
    )


def _rounded_frame(frame: GroupBox) -> GroupBox:
    return GroupBox(
        frame.title, _round(frame.x), _round(frame.y), _round(frame.width), _round(frame.height)
    )


def _route(source: NodeBox, target: NodeBox, way: _Way, shift: float, odd: int) -> EdgeRoute:
    """The polyline of an edge: out of the source's bottom (top, when it goes up), through its
    bends, into the target's top (bottom); a loop round the right side; a lane down the side.
    ``odd``: the text of every other edge of a source sits higher, clear of its neighbour's."""
    right = source.x + source.width
    # twins apart, but on the sides of their nodes
    side_shift = shift * min(8.0, min(source.height, target.height) / 2 - 8)
    shift *= min(12.0, min(source.width, target.width) / 2 - 6)
    if source.key == target.key:
        mid = source.y + source.height / 2 + side_shift
        points = [(right, mid - 6), (right + 18, mid - 6), (right + 18, mid + 6), (right, mid + 6)]
        return _finish(points, (right + 22, mid))
    if way.lane is not None:
        start = (right, source.y + source.height / 2 + side_shift)
        end = (target.x + target.width, target.y + target.height / 2 + side_shift)
        points = [start, (way.lane, start[1]), (way.lane, end[1]), end]
        return _finish(points, (way.lane + 4, (start[1] + end[1]) / 2))
    below = target.y > source.y
    if not below and not way.bends:  # one layer up: round the right sides, clear of the rest
        side = max(right, target.x + target.width) + 16 + abs(side_shift)
        start = (right, source.y + source.height / 2)
        end = (target.x + target.width, target.y + target.height / 2)
        points = [start, (side, start[1]), (side, end[1]), end]
        return _finish(points, (side + 4, (start[1] + end[1]) / 2))
    start = (source.x + source.width / 2 + shift, source.y + (source.height if below else 0.0))
    end = (target.x + target.width / 2 + shift, target.y + (0.0 if below else target.height))
    points = [start, *way.bends, end]
    if len(points) == 2 and abs(start[0] - end[0]) > 0.5:
        middle = (start[1] + end[1]) / 2
        points = [start, (start[0], middle), (end[0], middle), end]
        # the text on the last leg: the legs of one source's edges share the middle row
        return _finish(points, (end[0], end[1] - 6 - 12 * odd))
    if len(points) % 2:
        label = points[len(points) // 2]
    else:
        a, b = points[len(points) // 2 - 1], points[len(points) // 2]
        label = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    return _finish(points, (label[0], label[1] + 12 * odd))


def _finish(points: list[tuple[float, float]], label: tuple[float, float]) -> EdgeRoute:
    return EdgeRoute(
        tuple((_round(x), _round(y)) for x, y in points), (_round(label[0]), _round(label[1]))
    )
