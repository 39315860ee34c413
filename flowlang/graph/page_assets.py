"""The style sheet and script of the HTML viewer, inlined into every page (the page loads
nothing). The script reads the page's data from ``<script type="application/json"
id="flowlang-data">`` and writes every text with ``textContent``, never as markup."""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

STYLE = """
body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#1f2328;background:#f6f8fa}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #d0d7de}
h1{font-size:18px;margin:0 0 4px}
.summary{margin:0;color:#57606a}
.summary span{margin-right:14px}
.body{display:flex;align-items:flex-start;gap:12px;padding:12px}
main{flex:1 1 auto;min-width:0}
section.picture{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin-bottom:12px}
section.picture h2{font-size:15px;margin:0;padding:8px 12px;border-bottom:1px solid #d0d7de}
.canvas{overflow:auto;max-height:80vh}
aside{flex:0 0 340px;position:sticky;top:12px;max-height:calc(100vh - 24px);overflow:auto;
background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
aside h2{font-size:15px;margin:0 0 6px;overflow-wrap:anywhere}
aside h3{font-size:13px;margin:10px 0 4px;color:#57606a}
aside dl{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 8px}
aside dt{color:#57606a}
aside dd{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;
font-size:12px}
section.listing{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
section.listing h2{font-size:15px;margin:4px 0}
ol.steps{margin:8px 0 0;padding-left:28px}
ol.steps button{font:inherit;background:none;border:0;padding:1px 2px;color:#0969da;cursor:pointer;
text-align:left}
ol.steps .outcome{color:#57606a}
.flowlang-graph{display:block;font:12px ui-monospace,monospace}
.node{cursor:pointer}
.node>rect,.node>polygon,.node>ellipse{fill:#fff;stroke:#57606a;stroke-width:1.2}
.node>rect.inner{fill:none;stroke:#afb8c1}
.node text{text-anchor:middle;fill:#1f2328}
.node .head{font-weight:bold}
.shape-input>polygon{fill:#ddf4ff}
.shape-decision>polygon{fill:#fff8c5}
.shape-host>rect{fill:#fbefff}
.shape-terminal>ellipse{fill:#eaeef2}
.node:focus{outline:none}
.node:focus>:first-child,.node.selected>:first-child{stroke:#0969da;stroke-width:3}
.node.visited>:first-child{stroke:#1a7f37;stroke-width:2}
.node.stopped>:first-child{stroke:#cf222e;stroke-width:3}
.node.unvisited,.node.unrun{opacity:.55}
.node.unrun>:first-child{stroke:#cf222e;stroke-dasharray:4 3}
.edge polyline{fill:none;stroke:#8c959f;stroke-width:1.3}
.edge.failure polyline{stroke-dasharray:6 4}
.edge text{paint-order:stroke;stroke:#fff;stroke-width:3px;fill:#57606a;font-size:11px}
.edge .note{fill:#0550ae;font-weight:bold}
.edge.taken polyline{stroke:#0969da;stroke-width:2.6}
.edge.covered polyline{stroke:#1a7f37;stroke-width:2.4;stroke-dasharray:none}
.edge.covered .note{fill:#1a7f37}
.edge.uncovered .note{fill:#cf222e}
.edge.uncovered polyline{stroke:#cf222e;stroke-dasharray:6 4}
.arrow-plain{fill:#8c959f}.arrow-taken{fill:#0969da}.arrow-covered{fill:#1a7f37}
.arrow-uncovered{fill:#cf222e}
.group>rect{fill:none;stroke:#d0d7de;stroke-dasharray:3 3}
.group>text{fill:#57606a;font-weight:bold}
ul.instructions{margin:4px 0 0;padding-left:20px}
li.more{color:#57606a;list-style:none}
"""

SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("flowlang-data").textContent);
  var panel = document.getElementById("detail");

  function make(tag, text, css) {
    var element = document.createElement(tag);
    if (text !== undefined) element.textContent = String(text);
    if (css) element.className = css;
    return element;
  }

  function select(picture, node) {
    var chosen = document.querySelectorAll(".node.selected");
    for (var i = 0; i < chosen.length; i++) chosen[i].classList.remove("selected");
    var svg = document.querySelector('svg[data-picture="' + picture + '"]');
    var box = svg && svg.querySelector('[data-node="' + node + '"]');
    if (box) box.classList.add("selected");
  }

  function show(picture, node) {
    var shown = data.pictures[picture];
    var item = shown && shown.nodes[node];
    if (!item) return;
    while (panel.firstChild) panel.removeChild(panel.firstChild);
    panel.appendChild(make("h2", item.title));
    if (!item.sections.length) panel.appendChild(make("p", data.empty, "hint"));
    item.sections.forEach(function (section) {
      panel.appendChild(make("h3", section.heading));
      var list = make("dl");
      section.rows.forEach(function (row) {
        list.appendChild(make("dt", row[0]));
        list.appendChild(make("dd", row[1]));
      });
      panel.appendChild(list);
    });
    panel.setAttribute("data-shown", picture + ":" + node);
    select(picture, node);
  }

  function open(event) {
    var target = event.target.closest("[data-node]");
    if (!target) return;
    var holder = target.closest("[data-picture]");
    if (!holder) return;
    event.preventDefault();
    show(Number(holder.getAttribute("data-picture")), Number(target.getAttribute("data-node")));
  }

  document.addEventListener("click", open);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") open(event);
  });
})();
"""
