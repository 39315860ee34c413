"""Reading a flow test file (``*.test.yaml``) with the same strict rules as flows: positions
for every value, duplicate keys refused, the document size limit, UTF-8 only.

```yaml
flow: account_verification.yaml           # or workflows: [missed_call.yaml, ...]
defaults: {context: {...}, secrets: {...}, responses: [...], now: 2026-12-24T10:00:00+01:00}
cases:
  - name: verified caller hears the balance
    inputs: {ask_account: "12345678#"}     # digits per step; null: no input; a list: in turn
    responses: [{request: POST https://..., status: 200, body: {...}, delay: 0}]
    expect: {status: ended, path: [...], outcomes: {verify: success}, ...}
```

Every key is checked (an unknown one is an error with a "did you mean"); nothing about the
flow is checked here (step ids are checked when the case runs, against the flow).
"""

from __future__ import annotations

__all__ = [
    "CASE_KEYS",
    "FLOW_EXPECT_KEYS",
    "MAX_CASES",
    "WORKFLOW_EXPECT_KEYS",
    "Case",
    "CasesFile",
    "case_error",
    "read_cases_file",
]

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowlang.flow.source import Document, DocumentError, Pointer, load_document
from flowlang.locations import SourceLines
from flowlang.runtime.http import RecordedResponse
from flowlang.runtime.recorded import read_responses
from flowlang.runtime.secrets import MIN_SUBSTRING, Redactor
from flowlang.suggest import did_you_mean
from flowlang.testing.patterns import compile_pattern

#: The most cases one file may hold, and the longest case name.
MAX_CASES = 10_000
MAX_NAME = 200
#: The most answers a case may give (all steps together).
MAX_INPUTS = 1000

TOP_KEYS = ("flow", "workflows", "defaults", "cases")
DEFAULT_KEYS = ("context", "secrets", "responses", "now", "event")
CASE_KEYS = ("name", "context", "secrets", "inputs", "now", "responses", "event", "expect")
FLOW_EXPECT_KEYS = (
    "status",
    "path",
    "path_includes",
    "path_excludes",
    "ends_at",
    "outcomes",
    "instructions",
    "vars",
    "requests",
)
WORKFLOW_EXPECT_KEYS = ("deliveries", "requests", "matched")
STATUSES = ("completed", "ended", "failed", "waiting_for_input")
DELIVERY_KEYS = ("workflow", "action", "outcome", "attempts", "result", "error")
REQUEST_KEYS = ("request", "method", "url", "headers", "body")


@dataclass(frozen=True)
class Case:
    """One case: what it gives the flow (or workflows) and what it expects, as written."""

    name: str
    index: int
    context: dict[str, Any]
    secrets: dict[str, str]
    inputs: dict[str, list[str | None]]
    now: datetime | None
    responses: dict[tuple[str, str], RecordedResponse]
    event: dict[str, Any] | None
    #: Expectations by key, with ``{matches: ...}`` already compiled to TextPattern.
    expect: dict[str, Any]
    #: The recordings the case gives itself (an unused one is a warning; the defaults' are
    #: shared by every case, so not).
    own_responses: frozenset[tuple[str, str]] = frozenset()

    @property
    def pointer(self) -> Pointer:
        """Where the case is in its file."""
        return ("cases", self.index)


@dataclass(frozen=True)
class CasesFile:
    """A test file: the flow or workflows it tests (paths resolved from the file's folder)
    and its cases."""

    path: Path
    document: Document
    flow: Path | None
    workflows: tuple[Path, ...]
    cases: tuple[Case, ...] = field(default=())

    @property
    def for_workflows(self) -> bool:
        return self.flow is None


class _Reader:
    """Checks one document; every error is a DocumentError at the value's place."""

    def __init__(self, document: Document) -> None:
        self.document = document

    def fail(self, message: str, pointer: Pointer) -> DocumentError:
        return DocumentError(message, self.document.lines, self.document.position(pointer))

    def keys(self, value: Any, pointer: Pointer, allowed: tuple[str, ...], what: str) -> None:
        if not isinstance(value, dict):
            raise self.fail(f"{what} is key/value fields ({', '.join(allowed)})", pointer)
        for key in value:
            if key not in allowed:
                raise DocumentError(
                    f"unknown {what} field {str(key)[:64]!r}{did_you_mean(key, allowed)}",
                    self.document.lines,
                    self.document.key_position((*pointer, key)),
                )

    def mapping(self, value: Any, pointer: Pointer, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be key/value fields", pointer)
        return value

    def text(self, value: Any, pointer: Pointer, what: str, limit: int = 4096) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{what} must be a text", pointer)
        if len(value) > limit:
            raise self.fail(f"{what} is at most {limit} characters", pointer)
        return value

    def step_id(self, value: Any, pointer: Pointer) -> None:
        if isinstance(value, dict) and set(value) == {"matches"}:
            return
        self.text(value, pointer, "a step id (or {matches: REGEX})", 1000)

    def secrets(self, value: Any, pointer: Pointer) -> dict[str, str]:
        found = self.mapping(value, pointer, "secrets")
        for name, secret in found.items():
            at = (*pointer, name)
            if not isinstance(secret, str):
                raise self.fail(f"secret {str(name)[:64]!r} must be a text", at)
            if len(secret.strip()) < MIN_SUBSTRING:
                raise self.fail(
                    f"a test secret has at least {MIN_SUBSTRING} characters, so that it is "
                    "redacted wherever it appears",
                    at,
                )
        return dict(found)

    def now(self, value: Any, pointer: Pointer) -> datetime:
        moment = None
        if isinstance(value, str) and len(value) <= 64:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                moment = None
        if moment is None or moment.utcoffset() is None:
            raise self.fail(
                "now is an ISO 8601 time with its UTC offset, such as 2026-12-24T10:00:00+01:00",
                pointer,
            )
        try:
            moment.astimezone(UTC)
        except (OverflowError, ValueError):
            raise self.fail("now is out of range", pointer) from None
        return moment

    def inputs(self, value: Any, pointer: Pointer) -> dict[str, list[str | None]]:
        found = self.mapping(value, pointer, "inputs")
        inputs: dict[str, list[str | None]] = {}
        count = 0
        for step, given in found.items():
            at = (*pointer, step)
            answers = given if isinstance(given, list) else [given]
            for number, answer in enumerate(answers):
                if answer is not None and not isinstance(answer, str):
                    where = (*at, number) if isinstance(given, list) else at
                    raise self.fail(
                        'digits are a text in quotes (such as "1234#"), or null for no input',
                        where,
                    )
            count += len(answers)
            if count > MAX_INPUTS:
                raise self.fail(f"a case gives at most {MAX_INPUTS} inputs", at)
            inputs[str(step)] = list(answers)
        return inputs

    def patterns(self, value: Any, pointer: Pointer, depth: int = 0) -> Any:
        """``value`` with every ``{matches: REGEX}`` compiled (a refused pattern: an error)."""
        if isinstance(value, dict):
            if set(value) == {"matches"}:
                source = value["matches"]
                if not isinstance(source, str):
                    raise self.fail("matches takes a regular expression", (*pointer, "matches"))
                try:
                    return compile_pattern(source)
                except ValueError as error:
                    raise self.fail(f"pattern refused: {error}", (*pointer, "matches")) from None
            return {
                key: self.patterns(item, (*pointer, key), depth + 1) for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.patterns(item, (*pointer, n), depth + 1) for n, item in enumerate(value)]
        return value

    def expect(self, value: Any, pointer: Pointer, allowed: tuple[str, ...]) -> dict[str, Any]:
        self.keys(value, pointer, allowed, "expect")
        expect = dict(value)
        if "path" in expect and ("path_includes" in expect or "ends_at" in expect):
            raise self.fail(
                "path is the exact path: path_includes and ends_at go without it",
                (*pointer, "path"),
            )
        for key in ("path", "path_includes", "path_excludes", "instructions", "requests"):
            if key in expect and not isinstance(expect[key], list):
                raise self.fail(f"{key} is a list", (*pointer, key))
        for key in ("path", "path_includes", "path_excludes"):
            for number, step in enumerate(expect.get(key, ())):
                self.step_id(step, (*pointer, key, number))
        for key in ("deliveries", "matched"):
            if key in expect and not isinstance(expect[key], list):
                raise self.fail(f"{key} is a list", (*pointer, key))
        if "ends_at" in expect:
            self.step_id(expect["ends_at"], (*pointer, "ends_at"))
        if "status" in expect and expect["status"] not in STATUSES:
            raise self.fail(
                f"status is one of {', '.join(STATUSES)}"
                + did_you_mean(expect["status"], STATUSES),
                (*pointer, "status"),
            )
        for key in ("outcomes", "vars"):
            if key in expect:
                self.mapping(expect[key], (*pointer, key), key)
        for number, item in enumerate(expect.get("instructions", ())):
            self.mapping(item, (*pointer, "instructions", number), "an instruction")
        for number, item in enumerate(expect.get("requests", ())):
            self.keys(item, (*pointer, "requests", number), REQUEST_KEYS, "request")
        for number, item in enumerate(expect.get("deliveries", ())):
            self.keys(item, (*pointer, "deliveries", number), DELIVERY_KEYS, "delivery")
        return {key: self.patterns(item, (*pointer, key)) for key, item in expect.items()}


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_cases_file(path: Path, text: str | None = None) -> CasesFile:
    """Read and check the test file at ``path`` (or its ``text``, already read). An error's
    source line never shows a secret: a line inside a ``secrets`` mapping is shown up to its
    key, and the test secrets are redacted from any other."""
    try:
        document = load_document(path) if text is None else load_document(text, filename=str(path))
    except DocumentError as error:
        raise _without_secrets(error, None) from None
    try:
        return _read(path, document)
    except DocumentError as error:
        raise _without_secrets(error, document.data) from None


def _secret_values(data: Any) -> list[str]:
    """The texts under every ``secrets`` mapping of a test file's data (defaults and cases)."""
    if not isinstance(data, dict):
        return []
    holders = [data.get("defaults")]
    cases = data.get("cases")
    holders += cases[:MAX_CASES] if isinstance(cases, list) else []
    found = []
    for holder in holders:
        secrets = holder.get("secrets") if isinstance(holder, dict) else None
        if isinstance(secrets, dict):
            found += [str(value) for value in secrets.values() if isinstance(value, (str, int))]
    return [value for value in found if len(value.strip()) >= MIN_SUBSTRING]


def _key_of(line: str) -> str:
    return line.strip().lstrip("-").strip().split(":", 1)[0].strip().strip("'\"")


def _in_secrets(lines: SourceLines, number: int) -> bool:
    """Whether line ``number`` is inside a ``secrets`` mapping (or holds one): the line and
    the lines it is nested in (by indentation), walked upwards."""
    if "secrets" in lines.line(number):
        return True
    indent = len(lines.line(number)) - len(lines.line(number).lstrip())
    for above in range(number - 1, 0, -1):
        line = lines.line(above)
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#") or len(line) - len(stripped) >= indent:
            continue
        if _key_of(line) == "secrets":
            return True
        indent = len(line) - len(stripped)
        if indent == 0:
            break
    return False


def _without_secrets(error: DocumentError, data: Any) -> DocumentError:
    """``error`` with its source lines safe to show (see :func:`read_cases_file`)."""
    lines = error.lines
    if lines is None:
        return error
    number = error.position.line
    shown = [lines.line(n) for n in range(1, len(lines) + 1)]
    if 0 < number <= len(shown) and _in_secrets(lines, number):
        line = shown[number - 1]
        head, colon, _ = line.partition(":")
        shown[number - 1] = (
            f"{head}: [redacted]"
            if colon
            else " " * (len(line) - len(line.lstrip())) + "[redacted]"
        )
    redactor = Redactor()
    for value in _secret_values(data):
        redactor.add(value)
    error.lines = SourceLines(redactor.text("\n".join(shown)))
    return error


def case_error(cases_file: CasesFile, case: Case, message: str) -> DocumentError:
    """An error of the test file at ``case`` (its line shown without secrets)."""
    document = cases_file.document
    error = DocumentError(message, document.lines, document.position(case.pointer))
    return _without_secrets(error, document.data)


def _read(path: Path, document: Document) -> CasesFile:
    reader = _Reader(document)
    data = document.data
    reader.keys(data, (), TOP_KEYS, "test file")
    if ("flow" in data) == ("workflows" in data):
        raise reader.fail("a test file names either a flow (flow:) or workflows (workflows:)", ())
    folder = path.parent
    flow: Path | None = None
    workflows: tuple[Path, ...] = ()
    if "flow" in data:
        flow = folder / reader.text(data["flow"], ("flow",), "flow", 4096)
    else:
        names = data["workflows"]
        names = names if isinstance(names, list) else [names]
        if not names:
            raise reader.fail("workflows names at least one workflow file", ("workflows",))
        workflows = tuple(
            folder / reader.text(name, ("workflows", n), "a workflow file", 4096)
            for n, name in enumerate(names)
        )
    defaults = data.get("defaults", {})
    reader.keys(defaults, ("defaults",), DEFAULT_KEYS, "defaults")
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases:
        raise reader.fail("cases is a list of cases, at least one", ("cases",))
    if len(cases) > MAX_CASES:
        raise reader.fail(f"a test file holds at most {MAX_CASES} cases", ("cases",))
    expect_keys = FLOW_EXPECT_KEYS if flow is not None else WORKFLOW_EXPECT_KEYS
    base = _Case(reader, ("defaults",), defaults, flow is not None)
    seen: dict[str, int] = {}
    read = []
    for index, raw in enumerate(cases):
        pointer: Pointer = ("cases", index)
        reader.keys(raw, pointer, CASE_KEYS, "case")
        name = reader.text(raw.get("name"), (*pointer, "name"), "a case's name", MAX_NAME)
        if name in seen:
            raise reader.fail(
                f"case {name!r} is named twice (first: case {seen[name] + 1})", (*pointer, "name")
            )
        seen[name] = index
        own = _Case(reader, pointer, raw, flow is not None)
        if "expect" not in raw:
            raise reader.fail("a case needs expect: what it should come to", pointer)
        read.append(
            Case(
                name=name,
                index=index,
                context=_merged(base.context, own.context),
                secrets={**base.secrets, **own.secrets},
                inputs=own.inputs,
                now=own.now or base.now,
                responses={**base.responses, **own.responses},
                event=_merged(base.event or {}, own.event) if own.event is not None else base.event,
                expect=reader.expect(raw["expect"], (*pointer, "expect"), expect_keys),
                own_responses=frozenset(own.responses),
            )
        )
    return CasesFile(path, document, flow, workflows, tuple(read))


class _Case:
    """The inputs of a case (or of the defaults), checked."""

    def __init__(self, reader: _Reader, pointer: Pointer, raw: dict[str, Any], flow: bool) -> None:
        self.context = reader.mapping(raw.get("context", {}), (*pointer, "context"), "context")
        self.secrets = reader.secrets(raw.get("secrets", {}), (*pointer, "secrets"))
        self.inputs: dict[str, list[str | None]] = {}
        if "inputs" in raw:
            if not flow:
                raise reader.fail(
                    "inputs are for flows: workflows take an event", (*pointer, "inputs")
                )
            self.inputs = reader.inputs(raw["inputs"], (*pointer, "inputs"))
        if "now" in raw and not flow:
            raise reader.fail("now is for flows (business_hours steps)", (*pointer, "now"))
        self.now = reader.now(raw["now"], (*pointer, "now")) if "now" in raw else None
        self.responses = (
            read_responses(reader.document, (*pointer, "responses"), strict=True)
            if "responses" in raw
            else {}
        )
        self.event: dict[str, Any] | None = None
        if "event" in raw:
            if flow:
                raise reader.fail("event is for workflows: flows take inputs", (*pointer, "event"))
            self.event = reader.mapping(raw["event"], (*pointer, "event"), "event")
