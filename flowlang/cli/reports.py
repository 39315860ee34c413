"""``flowlang check`` output: findings as text, JSON, GitHub workflow commands or SARIF 2.1.0.

Every text that comes from a document (messages quote its keys and values, file names) is first
made :func:`~flowlang.cli.terminal.printable` (control characters, bidirectional controls and
lone surrogates written as escapes), then escaped as the format requires: JSON string escapes,
the GitHub Actions toolkit's ``escapeData``/``escapeProperty``, or nothing more (text).
"""

from __future__ import annotations

__all__ = ["FORMATS", "RULES", "Report", "render_reports"]

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, metadata
from urllib.parse import quote

from flowlang import __version__
from flowlang.cli.terminal import Colours, printable
from flowlang.flow.model import Finding
from flowlang.flow.source import DocumentError

#: Stable rule ids, one per kind of report, with what each means (SARIF ``rules``).
RULES: dict[str, tuple[str, str]] = {
    "unreadable": ("error", "The file cannot be read: missing, not UTF-8 text, or too large."),
    "syntax": ("error", "The document is not valid YAML or JSON."),
    "error": ("error", "The document has an error: a field, the step graph, a template."),
    "warning": ("warning", "The document may not do what was meant."),
}
_RULE_IDS = list(RULES)
_PYPI = "https://pypi.org/project/flowlang/"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _after(rendered: str, message: str, file: str) -> str:
    """The lines a rendering adds after ``message``: the place, the source line, the caret;
    the file's name made printable on one line (a name may hold a newline)."""
    after = rendered[len(message) :] if rendered.startswith(message) else ""
    shown = printable(file, one_line=True)
    return after.replace(file, shown) if shown != file else after


@dataclass(frozen=True)
class Report:
    """One thing ``check`` reports about one file, with its place when it has one."""

    file: str
    rule: str
    message: str
    line: int | None = None
    column: int | None = None
    step: str | None = None
    field: str | None = None
    #: What the text format shows after the message: the place, the source line, the caret.
    context: str = ""

    @property
    def severity(self) -> str:
        return RULES[self.rule][0]

    @classmethod
    def of_finding(cls, file: str, finding: Finding) -> Report:
        position = finding.position
        rendered = finding.render().split(": ", 1)[1]  # after "error: " or "warning: "
        return cls(
            file,
            "error" if finding.severity == "error" else "warning",
            finding.message,
            position.line,
            position.column,
            position.step,
            position.field,
            _after(rendered, finding.message, position.filename or file),
        )

    @classmethod
    def of_document_error(cls, file: str, error: DocumentError) -> Report:
        position = error.position
        where = f"{position.filename or '<document>'}:{position.line}:{position.column}"
        placed = where in str(error)  # a document without text has no line to point at
        return cls(
            file,
            "syntax",
            error.message,
            position.line if placed else None,
            position.column if placed else None,
            position.step,
            None,
            _after(str(error), error.message, position.filename or file),
        )

    @classmethod
    def unreadable(cls, file: str, message: str) -> Report:
        return cls(file, "unreadable", message)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(reports: Sequence[Report], files: int) -> dict[str, int]:
    """How many files were checked, and how many errors and warnings were found."""
    errors = sum(1 for report in reports if report.severity == "error")
    return {"files": files, "errors": errors, "warnings": len(reports) - errors}


def _text(reports: Sequence[Report], files: int, colours: Colours) -> str:
    chunks = []
    for report in reports:
        lines = [
            colours.paint(report.severity, report.severity)
            + ": "
            + colours.paint(printable(report.message, one_line=True), "strong")
        ]
        for line in report.context.split("\n")[1:]:
            line = printable(line, one_line=True)
            if line.strip().startswith("|") and line.strip("| ").strip("^") == "":
                gutter, bar, under = line.partition("|")
                carets = under.lstrip(" ")
                line = gutter + bar + under[: len(under) - len(carets)]
                line += colours.paint(carets, "caret")
            elif line.lstrip().startswith("-->"):
                line = colours.paint(line, "muted")
            lines.append(line)
        chunks.append("\n".join(lines) + "\n\n")
    counts = summary(reports, files)
    chunks.append(
        f"{_plural(counts['files'], 'file')} checked: "
        + colours.paint(_plural(counts["errors"], "error"), "error" if counts["errors"] else "good")
        + ", "
        + colours.paint(
            _plural(counts["warnings"], "warning"), "warning" if counts["warnings"] else "good"
        )
        + "\n"
    )
    return "".join(chunks)


def _safe(text: str | None) -> str | None:
    return None if text is None else printable(text, one_line=True)


def _json(reports: Sequence[Report], files: int, colours: Colours) -> str:
    findings = []
    for report in reports:
        item: dict[str, object] = {
            "file": _safe(report.file),
            "line": report.line,
            "column": report.column,
            "severity": report.severity,
            "rule": report.rule,
            "message": _safe(report.message),
            "step": _safe(report.step),
            "field": _safe(report.field),
        }
        findings.append(item)
    document = {"findings": findings, "summary": summary(reports, files)}
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def escape_data(text: str) -> str:
    """A GitHub workflow command's message, escaped as the actions toolkit's ``escapeData``."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value, as the toolkit's ``escapeProperty``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(reports: Sequence[Report], files: int, colours: Colours) -> str:
    lines = []
    for report in reports:
        properties = [("file", report.file)]
        if report.line is not None:
            properties += [("line", str(report.line)), ("col", str(report.column))]
        title = f"flowlang {report.rule}"
        where = [f"step {report.step!r}"] if report.step is not None else []
        where += [f"field {report.field!r}"] if report.field is not None else []
        if where:
            title += f" ({', '.join(where)})"
        properties.append(("title", title))
        shown = ",".join(
            f"{name}={escape_property(_safe(value) or '')}" for name, value in properties
        )
        lines.append(f"::{report.severity} {shown}::{escape_data(_safe(report.message) or '')}\n")
    return "".join(lines)


def artifact_uri(file: str) -> str:
    """A SARIF ``artifactLocation.uri`` for a file name: a relative URI reference (``/``
    separators, percent-encoded), or a ``file://`` URI for an absolute path."""
    try:
        raw = os.fsencode(file)  # a name that is not UTF-8 keeps its bytes (surrogateescape)
    except UnicodeEncodeError:
        raw = file.encode("utf-8", "backslashreplace")
    encoded = quote(raw.replace(b"\\", b"/"), safe="/")
    return f"file://{encoded}" if file.startswith("/") else encoded


def _sarif_result(report: Report) -> dict[str, object]:
    result: dict[str, object] = {
        "ruleId": report.rule,
        "ruleIndex": _RULE_IDS.index(report.rule),
        "level": report.severity,
        "message": {"text": printable(report.message, one_line=True)},
    }
    if report.file != "<stdin>":
        physical: dict[str, object] = {"artifactLocation": {"uri": artifact_uri(report.file)}}
        if report.line is not None and report.column is not None:
            physical["region"] = {"startLine": report.line, "startColumn": report.column}
        result["locations"] = [{"physicalLocation": physical}]
    properties = {
        key: printable(value, one_line=True)
        for key, value in (("step", report.step), ("field", report.field))
        if value is not None
    }
    if properties:
        result["properties"] = properties
    return result


def information_uri() -> str:
    """The project's home page from the installed metadata, else its page on PyPI."""
    try:
        meta = metadata("flowlang")
    except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return _PYPI
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() in ("homepage", "home", "source", "repository") and url.strip():
            return url.strip()
    home = meta.get_all("Home-page") or []
    return str(home[0]) if home else _PYPI


def _sarif(reports: Sequence[Report], files: int, colours: Colours) -> str:
    rules = [
        {
            "id": rule,
            "shortDescription": {"text": description},
            "defaultConfiguration": {"level": level},
        }
        for rule, (level, description) in RULES.items()
    ]
    log = {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "flowlang",
                        "version": __version__,
                        "informationUri": information_uri(),
                        "rules": rules,
                    }
                },
                "results": [_sarif_result(report) for report in reports],
            }
        ],
    }
    return json.dumps(log, ensure_ascii=False, indent=2) + "\n"


FORMATS: dict[str, Callable[[Sequence[Report], int, Colours], str]] = {
    "text": _text,
    "json": _json,
    "github": _github,
    "sarif": _sarif,
}


def render_reports(
    reports: Sequence[Report], files: int, output_format: str, colours: Colours
) -> str:
    """Everything ``check`` prints, in ``output_format`` (a key of :data:`FORMATS`)."""
    return FORMATS[output_format](reports, files, colours)
