"""Mermaid: a picture as a ``flowchart TD`` that pastes into GitHub and GitLab Markdown.

Nothing a document holds reaches the chart unescaped: node ids are generated (``n0``, ``n1`` …,
never a step id: ``end``, ``1`` or ``a b`` would break it), every label is in double quotes,
and in a label every character that Mermaid, the HTML it renders or its preprocessing could
read is written as an entity code (``#35;`` for ``#``, ``#quot;`` …): ``"`` would close the
label, ``<``/``>``/``&`` would be HTML, a backtick starts a Markdown string, ``%`` could start a
comment or an ``%%{init}%%`` directive (read anywhere in the text), ``$$`` math, ``|`` an edge
text, ``ﬂ`` and ``¶`` Mermaid's own stand-ins for entity codes (which it decodes twice: see
``_ENTITIES``), ``:`` before ``fa-`` an icon (``fa:fa-car``); and ``style`` or ``classDef``
(a line holding them loses its last ``;`` in Mermaid's preprocessing) gets a code for its first
letter. A label is drawn as :func:`~flowlang.graph.picture.label_lines` gives it (one line per
line, control characters as stand-ins, shortened), its lines joined by ``<br/>``.
"""

from __future__ import annotations

__all__ = [
    "LINK_STYLES",
    "MAX_EDGES",
    "MAX_TEXT",
    "SHAPE_STYLES",
    "encode_label",
    "limits_exceeded",
    "to_mermaid",
]

from collections.abc import Collection, Mapping

from flowlang.graph.picture import SHAPES, Picture, PictureEdge, label_lines

#: Characters written as Mermaid entity codes inside a label (``#`` first: every code starts
#: with it, so a ``#`` of the text is never read as the start of one).
_ENTITIES: Mapping[str, str] = {
    "#": "#35;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "%": "#37;",
    "|": "#124;",
    "$": "#36;",
    "\\": "#92;",
    # Mermaid stands its entity codes in for these (``ﬂ°°35¶ß``) and turns them back into
    # HTML entities twice: in the label, then in the whole SVG it made (where the label's text
    # is text again). So each is written as the text that the second pass turns into its
    # entity code (``ﬂ°°64258¶ß``), spelt with entity codes the first pass decodes.
    "\ufb02": "#64258;°°64258#182;ß",
    "\u00b6": "#64258;°°182#182;ß",
}
#: Mermaid draws ``fa:fa-car`` (and ``fab:``, ``fas:``, ``far:``, ``fal:``, ``fak:`` …) as an
#: icon, dropping the text: a ``:`` before ``fa-`` is written as its code.
_ICON = ":fa-"
#: Words Mermaid's preprocessing reads in a line holding ``:``, ``#`` and ``;`` (it cuts the
#: line's last ``;``, which ends an entity code): their first letter is written as a code.
_PREPROCESSED = ("style", "classDef")
#: What Mermaid draws by default: at most this many arrows (``maxEdges``) and characters of
#: chart text (``maxTextSize``); a bigger chart shows an error instead.
MAX_EDGES = 500
MAX_TEXT = 50_000
#: The opening and closing brackets of each shape.
_BRACKETS: Mapping[str, tuple[str, str]] = {
    "step": ("(", ")"),
    "input": ("[/", "/]"),
    "decision": ("{", "}"),
    "request": ("[", "]"),
    "host": ("([", "])"),
    "terminal": ("((", "))"),
}
#: The look of each shape (``classDef``).
SHAPE_STYLES: Mapping[str, str] = {
    "step": "fill:#f6f8fa,stroke:#57606a",
    "input": "fill:#ddf4ff,stroke:#0969da",
    "decision": "fill:#fff8c5,stroke:#9a6700",
    "request": "fill:#fbefff,stroke:#8250df",
    "host": "fill:#dafbe1,stroke:#1a7f37",
    "terminal": "fill:#eaeef2,stroke:#24292f",
}
#: The look of the arrows a run took and of those no run took (``linkStyle``).
LINK_STYLES: Mapping[str, str] = {
    "taken": "stroke:#1e8e3e,stroke-width:3px",
    "missed": "stroke:#d93025,stroke-width:2px,stroke-dasharray:4",
}


def encode_label(label: str) -> str:
    """The text of a quoted Mermaid label (without the quotes) that shows ``label`` as
    :func:`label_lines` draws it: entity codes for the characters Mermaid reads, lines joined
    by ``<br/>``; a single space for a label with no text."""
    drawn = label_lines(label)
    if not "".join(drawn).strip():
        return " "
    lines = []
    for line in drawn:
        encoded = "".join(_ENTITIES.get(char, char) for char in line)
        encoded = encoded.replace(_ICON, "#58;" + _ICON[1:])
        for word in _PREPROCESSED:
            encoded = encoded.replace(word, f"#{ord(word[0])};{word[1:]}")
        lines.append(encoded)
    return "<br/>".join(lines)


def _shape(shape: str) -> str:
    return shape if shape in _BRACKETS else "step"


def _arrow(edge: PictureEdge, source: str, target: str) -> str:
    arrow = "-.->" if edge.failure else "-->"
    text = "".join(label_lines(edge.label)).strip()
    if not text:
        return f"    {source} {arrow} {target}"
    return f'    {source} {arrow}|"{encode_label(edge.label)}"| {target}'


def to_mermaid(
    picture: Picture, *, taken: Collection[int] = (), missed: Collection[int] = ()
) -> str:
    """``picture`` as a Mermaid ``flowchart TD``: one node per picture node (its shape, its
    label), nodes of a group in a ``subgraph`` titled with the group, one arrow per edge
    (dashed: a failure way), the arrows of flow edges in ``taken`` (``FlowEdge.index``) drawn
    green and thick, those in ``missed`` red and dashed."""
    ids = {node.key: f"n{number}" for number, node in enumerate(picture.nodes)}
    lines = ["flowchart TD"]
    groups: dict[str | None, list[str]] = {}
    for node in picture.nodes:
        opening, closing = _BRACKETS[_shape(node.shape)]
        groups.setdefault(node.group, []).append(
            f'{ids[node.key]}{opening}"{encode_label(node.label)}"{closing}'
        )
    for number, (group, members) in enumerate(groups.items()):
        if group is None:
            lines.extend(f"    {member}" for member in members)
            continue
        lines.append(f'    subgraph g{number} ["{encode_label(group)}"]')
        lines.extend(f"        {member}" for member in members)
        lines.append("    end")
    drawn: list[PictureEdge] = [
        edge for edge in picture.edges if edge.source in ids and edge.target in ids
    ]
    lines.extend(_arrow(edge, ids[edge.source], ids[edge.target]) for edge in drawn)
    for shape in SHAPES:
        members = [ids[node.key] for node in picture.nodes if _shape(node.shape) == shape]
        if members:
            lines.append(f"    classDef {shape} {SHAPE_STYLES[shape]}")
            lines.append(f"    class {','.join(members)} {shape}")
    for name, wanted in (("taken", set(taken)), ("missed", set(missed) - set(taken))):
        links = [str(place) for place, edge in enumerate(drawn) if edge.edge in wanted]
        if links:
            lines.append(f"    linkStyle {','.join(links)} {LINK_STYLES[name]}")
    return "\n".join(lines) + "\n"


def limits_exceeded(chart: str) -> list[str]:
    """What in ``chart`` (a :func:`to_mermaid` text) is over Mermaid's default limits, each as
    a sentence with the numbers; empty when Mermaid draws it."""
    over = []  # labels hold no ">" (it is a code): only an arrow line holds "-->"
    arrows = sum(1 for line in chart.split("\n") if " -->" in line or " -.->" in line)
    if arrows > MAX_EDGES:
        over.append(f"{arrows} arrows (Mermaid draws at most {MAX_EDGES}: maxEdges)")
    if len(chart) > MAX_TEXT:
        over.append(f"{len(chart)} characters (Mermaid reads at most {MAX_TEXT}: maxTextSize)")
    return over
