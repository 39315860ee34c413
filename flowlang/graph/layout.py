"""A picture laid out on a plane, top to bottom, by flowlang itself: deterministic (the same
picture gives the same numbers, so layouts have golden tests) and close to linear in the size
of the picture.

The stages of a layered (Sugiyama-style) layout, per group (a workflow; nodes without a group
form the first one), groups side by side:

1. cycles broken by a depth-first search from the first node: its back edges point up;
2. longest-path layering: a node sits two layers below its lowest predecessor, so that between
   two layers of nodes lies a layer of bends, where each edge's text sits beside its edge (an
   item as wide and high as the text: text meets neither a node nor other text);
3. edges over a few layers get a chain of dummy nodes (bends); longer ones, and those between
   groups, leave their source through a bend of their own (with their text), run along a row
   of their own in the gap below it to a lane on the right of the group (one lane per target),
   and along a row of their own above their target, so the dummies stay linear in the edges;
   between groups they cross under every group;
4. a bounded number of barycentric sweeps order each layer;
5. coordinates: each item near the mean of its neighbours, never overlapping its layer.

No edge passes through a node other than its ends: edges cross the gaps between layers, and
within a layer run through their own bend. A node's loops go round its right side, nested,
their text beside them, in room the node keeps in its layer. Sizes come from the text
(:func:`text_width`: a monospace font of :data:`FONT_SIZE` pixels, wide characters two
columns), lines wrapped at :data:`WRAP` columns; the picture's size holds every box and text.
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

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from flowlang.graph.picture import MAX_LINES, Picture, label_lines, text_columns, visible_text

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
#: Edge text: its line height (the font is :data:`EDGE_FONT_SIZE` pixels), the space round it,
#: and its distance from the edge it belongs to.
EDGE_FONT_SIZE = 11
LABEL_LINE = 13
LABEL_PAD = 2
LABEL_GAP = 4
#: Space between an edge running along a gap and the next; between nested loops of a node.
ROW_GAP = 5
LOOP_GAP = 8


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
    the target), and its text: the top-left corner of its box, the box (x, y, width, height;
    None: no text) and its lines (the label wrapped, then the note)."""

    points: tuple[tuple[float, float], ...]
    label_at: tuple[float, float]
    label_box: tuple[float, float, float, float] | None = None
    label_lines: tuple[str, ...] = ()


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
        cut = space if space > cut // 2 else cut  # at a space, unless it leaves a stub
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
    """A node, or a dummy (a bend of an edge, maybe carrying the edge's text), while laying out
    one group. ``width``/``height`` are the room it takes in its layer (a node's own loops and
    their text included); an edge passes it at ``x + anchor``."""

    width: float
    height: float
    layer: int = 0
    x: float = 0.0
    anchor: float = 0.0
    up: list[int] | None = None
    down: list[int] | None = None

    def neighbours(self, towards: str) -> list[int]:
        """The items joined to this one in the layer above (``up``) or below (``down``)."""
        near = self.up if towards == "up" else self.down
        return near if near is not None else []


@dataclass(frozen=True)
class _Inner:
    """An edge between two nodes of one group (local indices)."""

    number: int
    source: int
    target: int


class _Group:
    """One group's nodes (picture indices) and edges being laid out. Node layers are even; the
    odd layer between two node layers holds the bends of the edges between them, and their
    text, so text never meets a node or another text."""

    def __init__(self, nodes: list[int], rooms: list[tuple[float, float, float]]) -> None:
        self.nodes = nodes
        self.items = [_Item(rooms[n][0], rooms[n][1], anchor=rooms[n][2]) for n in nodes]
        self.local = {node: i for i, node in enumerate(nodes)}
        #: Per edge inside the group: the item chain from its upper to its lower end.
        self.chains: dict[int, list[int]] = {}
        #: Per edge that leaves its node by a lane: the dummy under its source that carries
        #: its text, and its lane (edges into one node share a lane; edges out of the group
        #: leave by the lane of their source).
        self.exits: dict[int, tuple[int, int]] = {}
        #: Per edge that enters its node by a lane: the lane, and the layer of its target.
        self.entries: dict[int, tuple[int, int]] = {}
        self.lane_of: dict[tuple[str, int], int] = {}
        self.reversed: set[int] = set()
        self.layers: list[list[int]] = []
        #: Per gap (below layer g; -1: above the first), the lane edges running along it: on
        #: their way out (``"out"``) or in (``"in"``).
        self.rows: dict[int, list[tuple[str, int]]] = {}

    def lane(self, key: tuple[str, int]) -> int:
        return self.lane_of.setdefault(key, len(self.lane_of))

    def rank(self, edges: list[_Inner]) -> list[tuple[int, int, int]]:
        """Break cycles (back edges of a depth-first search, in node order) and give each node
        the layer of the longest path to it (doubled); returns the edges pointing down."""
        count = len(self.items)
        out: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        for edge in edges:
            out[edge.source].append((edge.target, edge.number))
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
                self.items[target].layer = max(self.items[target].layer, self.items[node].layer + 2)
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
        return forward

    def _dummy(self, layer: int, room: tuple[float, float], left: bool = False) -> int:
        """A bend in ``layer``; with a text of size ``room``, the text right of the edge (left
        of it with ``left``)."""
        width, height = room
        width = DUMMY_WIDTH / 2 + LABEL_GAP + width if width else DUMMY_WIDTH
        anchor = width - DUMMY_WIDTH / 2 if left else DUMMY_WIDTH / 2
        self.items.append(_Item(width, height, layer, anchor=anchor))
        return len(self.items) - 1

    def chain(
        self,
        forward: list[tuple[int, int, int]],
        exits: list[tuple[int, int]],
        entries: list[tuple[int, int]],
        texts: dict[int, tuple[float, float]],
        left: set[int],
    ) -> None:
        """Chains of items for edges (a dummy in each layer they cross; the one next to the
        edge's source carries its text), lanes for the longest edges and those between
        groups. ``texts``: the room of each edge's text; ``left``: the edges whose text is on
        the left of them (the first of twins: the twins' texts face away from each other)."""
        for number, upper, lower in forward:
            if upper == lower:
                continue
            low, high = self.items[upper].layer, self.items[lower].layer
            back = number in self.reversed
            room = texts.get(number, (0.0, 0.0))
            if high - low > 2 * MAX_SPAN:  # down (or up) a lane
                source, target = (lower, upper) if back else (upper, lower)
                exits.append((number, source))
                entries.append((number, target))
                continue
            chain = [upper]
            for layer in range(low + 1, high):
                beside_source = layer == (high - 1 if back else low + 1)
                text = room if beside_source else (0.0, 0.0)
                chain.append(self._dummy(layer, text, number in left and beside_source))
            chain.append(lower)
            self.chains[number] = chain
        for number, source in exits:
            below = self.items[source].layer + 1
            dummy = self._dummy(below, texts.get(number, (0.0, 0.0)))
            self.chains[number] = [source, dummy]
            self.rows.setdefault(below, []).append(("out", number))
            self.exits[number] = (dummy, -1)
        for number, target in entries:
            self.entries[number] = (self.lane(("to", target)), self.items[target].layer)
            self.rows.setdefault(self.items[target].layer - 1, []).append(("in", number))
        for number, (dummy, _) in self.exits.items():
            if number in self.entries:  # inside the group: the lane of its target
                self.exits[number] = (dummy, self.entries[number][0])
            else:  # out of the group: a lane of its source
                self.exits[number] = (dummy, self.lane(("from", self.chains[number][0])))
        for item in self.items:
            item.up, item.down = [], []
        for number, chain in self.chains.items():
            for upper, lower in pairwise(chain):
                if number not in self.exits:  # a lane edge's text follows its source only
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

    def place(self) -> tuple[float, list[float], list[float]]:
        """x of every item (from 0) and the top of every layer; returns the width, the layer
        tops and the layer bottoms (from 0)."""
        for layer in self.layers:
            x = 0.0
            for index in layer:
                self.items[index].x = x
                x += self.items[index].width + NODE_GAP
        followers = {dummy for dummy, _ in self.exits.values()}
        leaders = [[i for i in layer if i not in followers] for layer in self.layers]
        for _ in range(2):
            for rows, towards in ((leaders[1:], "up"), (leaders[-2::-1], "down")):
                for layer in rows:
                    self._settle(layer, towards)
        for layer, placed in zip(self.layers, leaders, strict=True):
            self._fit([i for i in layer if i in followers], placed)
        left = min((item.x for item in self.items), default=0.0)
        for item in self.items:
            item.x -= left
        width = max((item.x + item.width for item in self.items), default=0.0)
        tops, bottoms = [], []
        y = self.gap(-1) if self.rows.get(-1) else 0.0
        for number, layer in enumerate(self.layers):
            tops.append(y)
            y += max((self.items[i].height for i in layer), default=0.0)
            bottoms.append(y)
            y += self.gap(number)
        return width, tops, bottoms

    def gap(self, below: int) -> float:
        """The height of the gap below a layer: room for the lane edges running along it."""
        return max(LAYER_GAP / 2, ROW_GAP * (len(self.rows.get(below, ())) + 1))

    def _fit(self, followers: list[int], placed: list[int]) -> None:
        """Place each of ``followers`` (the texts of lane edges, under their source) as near
        under its source as the items ``placed`` in its layer leave room for."""
        items = self.items
        taken = sorted((items[i].x, items[i].x + items[i].width) for i in placed)
        for index in followers:
            item = items[index]
            source = items[item.neighbours("up")[0]]
            x = source.x + source.anchor - item.anchor
            for start, end in taken:  # sorted: slide right past every item it would meet
                if x < end + NODE_GAP and start < x + item.width + NODE_GAP:
                    x = end + NODE_GAP
            item.x = x
            taken = sorted([*taken, (x, x + item.width)])

    def _settle(self, layer: list[int], towards: str) -> None:
        """Move a layer's items towards their neighbours (where the edges meet them), keeping
        their order and the gap between them: the mean of the overlaps pushed right and
        pushed left."""
        items = self.items
        wanted = []
        for index in layer:
            item = items[index]
            near = item.neighbours(towards)
            if near:
                centre = sum(items[n].x + items[n].anchor for n in near) / len(near)
                wanted.append(centre - item.anchor)
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


def _text_room(lines: tuple[str, ...]) -> tuple[float, float]:
    """Width and height of an edge's text."""
    if not lines:
        return 0.0, 0.0
    return (
        max(text_width(line) for line in lines) + 2 * LABEL_PAD,
        len(lines) * LABEL_LINE + 2 * LABEL_PAD,
    )


def _edge_lines(label: str, note: str) -> tuple[str, ...]:
    """The lines of an edge's text: its label wrapped, then its note (path numbers, counts)."""
    lines = wrap_lines(label) if "".join(label_lines(label)).strip() else ()
    shown = visible_text(" ".join(note.split()))
    return (*lines, shown) if shown else lines


def layout(picture: Picture, notes: Mapping[int, str] | None = None) -> Layout:
    """Lay out ``picture``: positions and sizes of its nodes, polylines of its edges, boxes of
    their text. ``notes``: a text added under an edge's label (by its position), sized too."""
    notes = notes or {}
    lines = [wrap_lines(node.label) for node in picture.nodes]
    sizes = [
        (
            max(MIN_WIDTH, max(text_width(line) for line in text) + 2 * PAD_X),
            float(len(text) * LINE_HEIGHT + 2 * PAD_Y),
        )
        for text in lines
    ]
    edge_lines = [
        _edge_lines(edge.label, notes.get(at, "")) for at, edge in enumerate(picture.edges)
    ]
    texts = {at: _text_room(text) for at, text in enumerate(edge_lines) if text}
    index = {node.key: at for at, node in enumerate(picture.nodes)}
    loops: dict[int, list[int]] = {}
    for number, edge in enumerate(picture.edges):
        if edge.source == edge.target and edge.source in index:
            loops.setdefault(index[edge.source], []).append(number)
    rooms = []
    for at, (width, height) in enumerate(sizes):
        mine = loops.get(at, [])
        if not mine:
            rooms.append((width, height, width / 2))
            continue
        beside = [texts.get(number, (0.0, 0.0)) for number in mine]
        room_width = width + LOOP_GAP * (len(mine) + 1) + max(w for w, _ in beside)
        room_height = max(height, sum(h for _, h in beside))
        rooms.append((room_width, room_height, width / 2))
    members: dict[str | None, list[int]] = {}
    for at, node in enumerate(picture.nodes):
        members.setdefault(node.group, []).append(at)
    groups = [_Group(nodes, rooms) for nodes in members.values()]
    group_of = {node: group for group in groups for node in group.nodes}
    inner: dict[int, list[_Inner]] = {id(group): [] for group in groups}
    exits: dict[int, list[tuple[int, int]]] = {id(group): [] for group in groups}
    entries: dict[int, list[tuple[int, int]]] = {id(group): [] for group in groups}
    across = []
    for number, edge in enumerate(picture.edges):
        source, target = index.get(edge.source), index.get(edge.target)
        if source is None or target is None:
            continue
        home, away = group_of[source], group_of[target]
        if home is away:
            inner[id(home)].append(_Inner(number, home.local[source], home.local[target]))
        else:
            exits[id(home)].append((number, home.local[source]))
            entries[id(away)].append((number, away.local[target]))
            across.append(number)
    shifts = _twins(picture)
    on_left = {number for number, shift in enumerate(shifts) if shift < 0 and number in texts}
    titled = len(members) > 1 or None not in members
    top = MARGIN + (GROUP_TITLE if titled else 0)
    left, bottom = float(MARGIN), 0.0
    boxes: dict[int, NodeBox] = {}
    frames: list[GroupBox] = []
    placed: list[tuple[_Group, float, list[float], list[float], float]] = []
    for name, group in zip(members, groups, strict=True):
        forward = group.rank(inner[id(group)])
        group.chain(forward, exits[id(group)], entries[id(group)], texts, on_left)
        group.order()
        width, tops, bottoms = group.place()
        for local, member in enumerate(group.nodes):
            item = group.items[local]
            boxes[member] = NodeBox(
                picture.nodes[member].key,
                left + item.x,
                top + tops[item.layer],
                sizes[member][0],
                sizes[member][1],
                lines[member],
            )
        body = bottoms[-1] if bottoms else 0.0
        if group.rows.get(len(bottoms) - 1):  # edges leaving by a lane below the last layer
            body += group.gap(len(bottoms) - 1)
        lanes = len(group.lane_of)
        placed.append((group, left, [top + y for y in tops], [top + y for y in bottoms], width))
        width += LANE_GAP * (lanes + 1) if lanes else 0
        if titled:
            frames.append(
                GroupBox(
                    name, left - MARGIN / 2, MARGIN / 2, width + MARGIN, body + GROUP_TITLE + MARGIN
                )
            )
        bottom = max(bottom, top + body + (MARGIN / 2 if titled else 0))
        left += width + GROUP_GAP
    floor = {number: bottom + ROW_GAP * (at + 1) for at, number in enumerate(across)}
    routes = _Routes(picture, boxes, index, edge_lines, texts, on_left)
    for group, x0, tops, bottoms, width in placed:
        routes.group(group, x0, tops, bottoms, width, floor)
    routes.join()
    routes.loops(loops)
    height = bottom + (ROW_GAP * (len(across) + 1) if across else 0.0)
    label_right = max((r[0] + r[2] for r in routes.boxes.values()), default=0.0)
    label_bottom = max((r[1] + r[3] for r in routes.boxes.values()), default=0.0)
    return Layout(
        _round(max(left - GROUP_GAP + MARGIN if members else 2 * MARGIN, label_right + MARGIN)),
        _round(max(height, label_bottom) + MARGIN),
        tuple(_rounded_box(boxes[at]) for at in range(len(picture.nodes))),
        tuple(routes.route(number) for number in range(len(picture.edges))),
        tuple(_rounded_frame(frame) for frame in frames),
    )


class _Routes:
    """The polylines of a picture's edges and the boxes of their text, group by group."""

    def __init__(
        self,
        picture: Picture,
        boxes: dict[int, NodeBox],
        index: dict[str, int],
        lines: list[tuple[str, ...]],
        texts: dict[int, tuple[float, float]],
        left: set[int],
    ) -> None:
        self.picture = picture
        self.left = left
        self.node = boxes
        self.index = index
        self.lines = lines
        self.texts = texts
        self.shift = _twins(picture)
        self.points: dict[int, list[tuple[float, float]]] = {}
        self.boxes: dict[int, tuple[float, float, float, float]] = {}
        #: Edges that leave by a lane, until their way in is known.
        self.outs: dict[int, list[tuple[float, float]]] = {}
        self.ins: dict[int, list[tuple[float, float]]] = {}

    def _text(self, number: int, x: float, y: float) -> None:
        if number in self.texts:
            width, height = self.texts[number]
            self.boxes[number] = (x, y, width, height)

    def group(
        self,
        group: _Group,
        x0: float,
        tops: list[float],
        bottoms: list[float],
        width: float,
        floor: dict[int, float],
    ) -> None:
        """Routes of the edges of ``group`` placed at ``x0`` with these layer tops/bottoms;
        ``floor``: the row under every group of each edge between groups."""
        items = group.items
        lane_x = {lane: x0 + width + LANE_GAP * (1 + lane) for lane in range(len(group.lane_of))}
        rows: dict[tuple[str, int], float] = {}
        for gap, keys in group.rows.items():
            start = bottoms[gap] if gap >= 0 else tops[0] - ROW_GAP * (len(keys) + 1)
            for place, key in enumerate(keys):
                rows[key] = start + ROW_GAP * (place + 1)

        def at(index: int) -> float:
            return x0 + items[index].x + items[index].anchor

        for number, chain in group.chains.items():
            edge = self.picture.edges[number]
            source = self.node[self.index[edge.source]]
            shift = self.shift[number]
            if number in group.exits:  # out of its source, along a row, then a lane
                dummy, lane = group.exits[number]
                x = _bottom_x(source, shift, back=False)
                layer = items[dummy].layer
                out = rows[("out", number)]
                points = [(x, source.y + source.height), (x, bottoms[layer - 1])]
                points += [(at(dummy), tops[layer]), (at(dummy), out), (lane_x[lane], out)]
                self._text(number, at(dummy) + LABEL_GAP, tops[layer])
                if number in group.entries:
                    points += self._way_in(number, lane_x[lane], rows[("in", number)])
                    self.points[number] = points
                else:
                    points.append((lane_x[lane], floor[number]))
                    self.outs[number] = points
                continue
            target = self.node[self.index[edge.target]]
            back = number in group.reversed
            ordered = chain[::-1] if back else chain
            bends: list[tuple[float, float]] = []
            for dummy in ordered[1:-1]:
                layer = items[dummy].layer
                ends = [(at(dummy), tops[layer]), (at(dummy), bottoms[layer])]
                bends += ends[::-1] if back else ends
                if items[dummy].height and number in self.left:
                    self._text(number, at(dummy) - LABEL_GAP - self.texts[number][0], tops[layer])
                elif items[dummy].height:
                    self._text(number, at(dummy) + LABEL_GAP, tops[layer])
            source_layer = items[ordered[0]].layer
            target_layer = items[ordered[-1]].layer
            if back:  # up: out of the source's top, into the target's bottom (right of centre)
                end_x = _bottom_x(target, shift, back=True)
                points = [(_bottom_x(source, shift, back=True), source.y), *bends]
                points += [(end_x, bottoms[target_layer]), (end_x, target.y + target.height)]
            else:
                start_x = _bottom_x(source, shift, back=False)
                points = [(start_x, source.y + source.height), (start_x, bottoms[source_layer])]
                points += [*bends, (_bottom_x(target, shift, back=False), target.y)]
            self.points[number] = points
        for number, (lane, _) in group.entries.items():
            if number not in group.exits:  # from another group: up this lane from the floor
                self.ins[number] = self._way_in(number, lane_x[lane], rows[("in", number)])

    def _way_in(self, number: int, lane: float, row: float) -> list[tuple[float, float]]:
        """From a lane along an entry row, down into the target's top."""
        target = self.node[self.index[self.picture.edges[number].target]]
        x = _bottom_x(target, self.shift[number], back=False)
        return [(lane, row), (x, row), (x, target.y)]

    def join(self) -> None:
        """The edges between groups: out of one group, along the floor, into the other."""
        for number, points in self.outs.items():
            way_in = self.ins[number]
            self.points[number] = [*points, (way_in[0][0], points[-1][1]), *way_in]

    def loops(self, loops: dict[int, list[int]]) -> None:
        """Each loop of a node round its right side, nested, with its text beside them."""
        for at, numbers in loops.items():
            box = self.node[at]
            right = box.x + box.width
            step = (box.height / 2 - 2) / (len(numbers) + 1)
            text_x = right + LOOP_GAP * (len(numbers) + 1)
            text_y = box.y
            for k, number in enumerate(numbers):
                x = right + LOOP_GAP * (k + 1)
                upper = box.y + box.height / 2 - step * (k + 1)
                lower = box.y + box.height / 2 + step * (k + 1)
                self.points[number] = [(right, upper), (x, upper), (x, lower), (right, lower)]
                if number in self.texts:
                    self._text(number, text_x, text_y)
                    text_y += self.texts[number][1]

    def route(self, number: int) -> EdgeRoute:
        """The finished route of edge ``number`` (no points: an edge to a node not drawn)."""
        points = self.points.get(number)
        if not points:
            return EdgeRoute((), (0.0, 0.0), None, ())
        clean = [points[0]]
        for point in points[1:]:
            if (_round(point[0]), _round(point[1])) != (_round(clean[-1][0]), _round(clean[-1][1])):
                clean.append(point)
        if len(clean) == 1:
            clean.append(clean[0])
        box = self.boxes.get(number)
        rounded_box = None if box is None else tuple(_round(v) for v in box)
        label_at = (rounded_box[0], rounded_box[1]) if rounded_box else (0.0, 0.0)
        return EdgeRoute(
            tuple((_round(x), _round(y)) for x, y in clean),
            (label_at[0], label_at[1]),
            rounded_box,  # type: ignore[arg-type]
            self.lines[number] if box is not None else (),
        )


def _bottom_x(box: NodeBox, shift: float, *, back: bool) -> float:
    """Where an edge meets a node's top or bottom: near the centre (twins apart) going down,
    right of it going up, so that the two never share a line."""
    if back:
        return box.x + box.width * 3 / 4 + shift * min(6.0, box.width / 8)
    return box.x + box.width / 2 + shift * min(12.0, box.width / 2 - 6)


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
