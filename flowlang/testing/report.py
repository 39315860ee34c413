"""Failures of flow tests as text, the way ``flowlang check`` writes findings: what is wrong,
``file:line:column (case 'name', field 'expect.path')``, the test file's line with a caret,
then the expected and actual values. The text is plain (the command line and the pytest
plugin make it safe for a terminal) and has every test secret redacted.
"""

from __future__ import annotations

__all__ = ["MAX_SHOWN", "delivery_lines", "failure_lines", "shown_value"]

import json
from typing import Any

from flowlang.testing.expect import UNSET, Failure, delivery_rows
from flowlang.testing.patterns import TextPattern
from flowlang.testing.runner import CaseRun
from flowlang.testing.spec import CasesFile

#: The longest value shown (characters of its JSON): longer ones are cut with an ellipsis.
MAX_SHOWN = 600


def _plain(value: Any) -> Any:
    if isinstance(value, TextPattern):
        return {"matches": value.source}
    return repr(value)


def shown_value(value: Any) -> str:
    """A value as compact JSON (a pattern as ``{"matches": ...}``), cut to MAX_SHOWN."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=_plain)
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def failure_lines(cases_file: CasesFile, run: CaseRun, failure: Failure) -> list[str]:
    """One failure: the message, its place with the source line and caret, the values."""
    document = cases_file.document
    position = document.position(failure.pointer)
    name = run.case.name if len(run.case.name) <= 80 else run.case.name[:79] + "…"
    place = f"{cases_file.path}:{position.line}:{position.column}"
    lines = [failure.message, f"  --> {place} (case {name!r}, field {failure.field!r})"]
    lines.extend(document.lines.caret(position.line, position.column).split("\n"))
    if failure.expected is not UNSET:
        lines.append(f"  expected: {shown_value(failure.expected)}")
    if failure.actual is not UNSET:
        lines.append(f"  actual:   {shown_value(failure.actual)}")
    return [run.redactor.text(line) for line in lines]


def delivery_lines(run: CaseRun) -> list[str]:
    """What the workflows did for a case's event: one line per delivery (secrets redacted)."""
    if run.dispatch is None:
        return []
    lines = [f"  event matched: {', '.join(run.dispatch.matched) or 'no workflow'}"]
    for row in delivery_rows(run):
        error = f": {row['error']}" if row["error"] else ""
        lines.append(
            f"  {row['workflow']} / {row['action']}: {row['outcome']} "
            f"after {row['attempts']} attempt(s){error}"
        )
        if row["result"] is not None:
            lines.append(f"      result: {shown_value(row['result'])}")
    return lines
