"""Flows: load a call-flow document, check it, and compile it into an immutable CompiledFlow."""

from __future__ import annotations

__all__ = ["CompiledFlow", "FlowDocumentError", "load_flow"]

import os
from pathlib import Path

from flowlang.engine import Engine
from flowlang.flow.build import build_steps
from flowlang.flow.model import CompiledFlow, Finding, FlowDocumentError
from flowlang.flow.source import Document, paused_collector, read_document, text_not_path_hint
from flowlang.flow.validate import validate_flow

_TOP_LEVEL = {"flow", "start", "steps", "description"}


def check_flow(
    text: str | Path | Document | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    engine: Engine | None = None,
    filename: str | None = None,
) -> tuple[CompiledFlow | None, list[Finding]]:
    """Load and check a flow; return it (None when it has errors) and every finding.

    ``text`` is the document (YAML or JSON): a str is never taken for a file name. Read a file
    with ``path=`` (or by passing a :class:`pathlib.Path`).
    """
    with paused_collector():
        return _check_flow(read_document(text, path, filename), engine or Engine())


def _check_flow(document: Document, engine: Engine) -> tuple[CompiledFlow | None, list[Finding]]:
    data = document.data
    if not isinstance(data, dict):
        return None, [
            Finding(
                "a flow document is key/value fields (flow, start, steps)"
                + text_not_path_hint(data),
                document.position(()),
            ).with_caret(document.lines)
        ]
    steps, builder = build_steps(document, engine)
    for key in data:
        if key not in _TOP_LEVEL:
            builder.error(
                f"unknown top-level field {str(key)!r}; expected flow, start, steps, description",
                (key,),
                key=True,
            )
    name = data.get("flow")
    if not isinstance(name, str) or not name:
        builder.error("a flow needs a name: flow: <name>", ("flow",) if "flow" in data else ())
    start = data.get("start")
    if start is None or isinstance(start, bool) or not isinstance(start, (str, int)):
        builder.error(
            "a flow needs start: the id of its first step", ("start",) if "start" in data else ()
        )
    findings = builder.findings
    if not findings:
        start_position = document.position(("start",), field_name="start")
        found = validate_flow(steps, str(start), start_position, builder.templates)
        findings = [finding.with_caret(document.lines) for finding in found]
    errors = [finding for finding in findings if finding.severity == "error"]
    if errors:
        return None, findings
    fingerprint = document.fingerprint
    flow = CompiledFlow(
        str(name), str(start), steps, document.text, document.filename, fingerprint, tuple(findings)
    )
    return flow, findings


def load_flow(
    text: str | Path | Document | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    engine: Engine | None = None,
    filename: str | None = None,
) -> CompiledFlow:
    """Parse, validate and compile a flow (YAML or JSON): its text, or a file read with
    ``path=`` (or given as a :class:`pathlib.Path`).

    Raises FlowDocumentError listing every problem, each with file:line:column, step and field.
    """
    flow, findings = check_flow(text, path=path, engine=engine, filename=filename)
    if flow is None:
        raise FlowDocumentError(findings)
    return flow
