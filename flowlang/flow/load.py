"""Load: read a call-flow document, check it, and compile it into an immutable CompiledFlow."""

from __future__ import annotations

__all__ = [
    "CompiledFlow",
    "FlowDocumentError",
    "check_flow",
    "check_flow_text",
    "in_document_order",
    "load_flow",
    "load_flow_text",
]

import os
from collections.abc import Iterable

from flowlang.engine import Engine
from flowlang.flow.build import build_steps, duplicate_findings, in_document_order
from flowlang.flow.model import CompiledFlow, Finding, FlowDocumentError, compiled_or_raise
from flowlang.flow.source import (
    Document,
    paused_collector,
    read_document_file,
    read_document_text,
    text_not_path_hint,
)
from flowlang.flow.validate import validate_flow
from flowlang.kinds.registry import STEP_KINDS

#: Top-level fields of a flow: its own, and the sections its step kinds read (``schedules``).
_TOP_LEVEL = (
    "flow",
    "start",
    "steps",
    "description",
    *sorted({section for kind in STEP_KINDS.values() for section in kind.sections}),
)


def check_flow(
    path: str | os.PathLike[str] | Document,
    *,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> tuple[CompiledFlow | None, list[Finding]]:
    """Load and check the flow in file ``path`` (YAML or JSON; a str is always a path); return
    the flow (None when it has errors) and every finding, in document order.

    ``allow_hosts``: hosts an endpoint may reach with plain http (the run's ``allow_hosts``);
    any other ``http://`` endpoint is an error."""
    with paused_collector():
        return _check_flow(
            read_document_file(path, keep_duplicates=True),
            engine or Engine(),
            frozenset(allow_hosts),
        )


def check_flow_text(
    text: str,
    *,
    name: str | None = None,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> tuple[CompiledFlow | None, list[Finding]]:
    """:func:`check_flow` for a document given as text; ``name`` labels it in messages (a name
    ending in ``.json`` reads it as JSON only; otherwise JSON or YAML by its first character,
    as for files)."""
    with paused_collector():
        document = read_document_text(text, name, keep_duplicates=True)
        return _check_flow(document, engine or Engine(), frozenset(allow_hosts))


def _check_flow(
    document: Document, engine: Engine, http_hosts: frozenset[str] = frozenset()
) -> tuple[CompiledFlow | None, list[Finding]]:
    data = document.data
    duplicates = duplicate_findings(document)
    if not isinstance(data, dict):
        return None, [
            *duplicates,
            Finding(
                "a flow document is key/value fields (flow, start, steps)"
                + text_not_path_hint(data),
                document.position(()),
            ).with_caret(document.lines),
        ]
    steps, builder = build_steps(document, engine, http_hosts)
    for kind in STEP_KINDS.values():  # sections no step read are checked all the same
        if kind.read_sections is not None and any(section in data for section in kind.sections):
            kind.read_sections(builder)
    for key in data:
        if key not in _TOP_LEVEL:
            builder.error(
                f"unknown top-level field {str(key)!r}; expected {', '.join(_TOP_LEVEL)}",
                (key,),
                key=True,
            )
    name = data.get("flow")
    if not isinstance(name, str) or not name:
        builder.error("a flow needs a name: flow: <name>", ("flow",) if "flow" in data else ())
    start = data.get("start")
    start_id: str | None = None
    if start is None or isinstance(start, bool) or not isinstance(start, (str, int)):
        builder.error(
            "a flow needs start: the id of its first step", ("start",) if "start" in data else ()
        )
    else:
        start_id = str(start)
    start_position = document.position(("start",), field_name="start")
    found: list[Finding] = []
    if steps:  # without steps, the fault that says so is all there is to say
        found = validate_flow(
            steps,
            start_id,
            start_position,
            builder.templates,
            broken=builder.broken,
            open_ended=builder.open_ended,
            strict=engine.strict,
        )
    findings = in_document_order(
        [
            *duplicates,
            *builder.findings,
            *(finding.with_caret(document.lines) for finding in found),
            *builder.warnings,
        ]
    )
    if any(finding.severity == "error" for finding in findings):
        return None, findings
    flow = CompiledFlow(
        str(name),
        str(start),
        steps,
        document.text,
        document.filename,
        document.fingerprint,
        tuple(findings),
    )
    return flow, findings


def load_flow(
    path: str | os.PathLike[str] | Document,
    *,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> CompiledFlow:
    """Parse, validate and compile the flow in file ``path`` (YAML or JSON; a str is always a
    path, as in ``open``; see :func:`load_flow_text` for a document's text). A file named
    ``*.json`` is JSON; any other is JSON when its first character is ``{`` or ``[`` and it
    reads as JSON, else YAML.

    Raises FlowDocumentError listing every problem, each with file:line:column, step and field;
    a file that cannot be read or parsed raises another FlowError that names it.
    """
    return compiled_or_raise(check_flow(path, engine=engine, allow_hosts=allow_hosts))


def load_flow_text(
    text: str,
    *,
    name: str | None = None,
    engine: Engine | None = None,
    allow_hosts: Iterable[str] = (),
) -> CompiledFlow:
    """:func:`load_flow` for a document given as text; ``name`` labels it in messages."""
    return compiled_or_raise(
        check_flow_text(text, name=name, engine=engine, allow_hosts=allow_hosts)
    )
