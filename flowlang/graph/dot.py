"""Graphviz DOT: a picture as a ``digraph`` for ``dot -Tsvg``.

Every id and every label is double-quoted, so no text is read as a keyword (``node``, ``graph``,
``subgraph`` …) or a number. In a quoted label ``\\`` is written ``\\\\`` and ``"`` is written
``\\"``, so no text becomes an escape sequence such as ``\\l`` or ``\\N``; ``&`` is written
``&amp;``, since Graphviz reads entity names in labels; lines are joined by ``\\n``. A label is
drawn as :func:`~flowlang.graph.picture.label_lines` gives it. Node ids are generated (``n0``
…), never a step id.
"""

from __future__ import annotations

__all__ = ["SHAPE_ATTRIBUTES", "quote", "quote_label", "to_dot"]

from collections.abc import Collection, Mapping

from flowlang.graph.picture import Picture, PictureEdge, label_lines

#: The Graphviz attributes of each shape.
SHAPE_ATTRIBUTES: Mapping[str, str] = {
    "step": 'shape="box", style="rounded,filled", fillcolor="#f6f8fa"',
    "input": 'shape="parallelogram", style="filled", fillcolor="#ddf4ff"',
    "decision": 'shape="diamond", style="filled", fillcolor="#fff8c5"',
    "request": 'shape="box", style="filled", fillcolor="#fbefff"',
    "host": 'shape="box", style="rounded,filled,bold", fillcolor="#dafbe1"',
    "terminal": 'shape="circle", style="filled", fillcolor="#eaeef2"',
}
_TAKEN = 'color="#1e8e3e", penwidth="3"'
_MISSED = 'color="#d93025", style="dashed"'


def quote(text: str) -> str:
    """``text`` as a DOT double-quoted string: ``\\`` and ``"`` escaped. ``text`` must hold no
    line break (a label's lines are :func:`quote_label`'s)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_label(label: str) -> str:
    """A quoted DOT label that shows ``label`` as :func:`label_lines` draws it."""
    lines = [line.replace("&", "&amp;") for line in label_lines(label)]
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def _edge(edge: PictureEdge, ids: Mapping[str, str], taken: set[int], missed: set[int]) -> str:
    attributes = []
    if "".join(label_lines(edge.label)).strip():
        attributes.append(f"label={quote_label(edge.label)}")
    if edge.edge is not None and edge.edge in taken:
        attributes.append(_TAKEN)
    elif edge.edge is not None and edge.edge in missed:
        attributes.append(_MISSED)
    elif edge.failure:
        attributes.append('style="dashed"')
    listed = f" [{', '.join(attributes)}]" if attributes else ""
    return f"  {quote(ids[edge.source])} -> {quote(ids[edge.target])}{listed};"


def to_dot(picture: Picture, *, taken: Collection[int] = (), missed: Collection[int] = ()) -> str:
    """``picture`` as a DOT ``digraph``: one node per picture node (its shape, its label), the
    nodes of a group in a cluster labelled with the group, one edge per arrow (dashed: a
    failure way); the edges of flow edges in ``taken`` (``FlowEdge.index``) green and thick,
    those in ``missed`` red and dashed."""
    ids = {node.key: f"n{number}" for number, node in enumerate(picture.nodes)}
    lines = [
        "digraph flow {",
        f"  label={quote_label(picture.title)};",
        '  labelloc="t";',
        '  node [fontname="Helvetica", fontsize="11"];',
        '  edge [fontname="Helvetica", fontsize="9"];',
    ]
    groups: dict[str | None, list[str]] = {}
    for node in picture.nodes:
        shape = SHAPE_ATTRIBUTES.get(node.shape, SHAPE_ATTRIBUTES["step"])
        groups.setdefault(node.group, []).append(
            f"{quote(ids[node.key])} [label={quote_label(node.label)}, {shape}];"
        )
    for number, (group, members) in enumerate(groups.items()):
        if group is None:
            lines.extend(f"  {member}" for member in members)
            continue
        lines.append(f"  subgraph {quote(f'cluster_{number}')} {{")
        lines.append(f"    label={quote_label(group)};")
        lines.extend(f"    {member}" for member in members)
        lines.append("  }")
    wanted, unwanted = set(taken), set(missed) - set(taken)
    lines.extend(
        _edge(edge, ids, wanted, unwanted)
        for edge in picture.edges
        if edge.source in ids and edge.target in ids
    )
    lines.append("}")
    return "\n".join(lines) + "\n"
