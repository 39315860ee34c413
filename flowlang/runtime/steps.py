"""Steps: one executor per step type; each returns a Transition and never raises on bad data."""

from __future__ import annotations

__all__ = [
    "ASYNC_EXECUTORS",
    "HOST_ACTIONS",
    "SYNC_PLANNERS",
    "StepPlan",
    "Transition",
    "apply_digits",
    "compared_rows",
    "holding_rows",
    "merge_variables",
    "plan_flow",
    "state_full",
    "store_record",
    "store_variables",
    "variable_problem",
]

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from flowlang.expr.limits import Limits
from flowlang.expr.shared import limited_text
from flowlang.expr.values import truthy
from flowlang.flow.build import Endpoint, Row
from flowlang.flow.model import FieldTree, Step
from flowlang.runtime.requests import (
    PreparedRequest,
    RequestError,
    check_header,
    encode_body,
    render_endpoint,
)
from flowlang.runtime.state import (
    INT_MAX,
    INT_MIN,
    DataLimitError,
    data_problem,
    measure_data,
    valid_text,
)

if TYPE_CHECKING:
    from flowlang.runtime.runner import Run


#: Where the run goes after a step, as ``(kind, target, outcome, detail)``: kind ``go`` (to
#: ``target``), ``wait`` (for input), ``end`` (a call-control step handed the call over) or
#: ``complete`` (no next step). A plain tuple: steps return one on every call.
Transition: TypeAlias = tuple[str, str | None, str, dict[str, Any] | None]


def compared_rows(rows: tuple[Row, ...], scope: Mapping[str, Any]) -> list[list[Any]]:
    """The values each row of a taken branch compared, for the trace."""
    return [
        [
            row.property.render(scope),
            row.operator,
            row.value.render(scope) if row.value else None,
        ]
        for row in rows
    ]


def holding_rows(rows: tuple[Row, ...], scope: Mapping[str, Any]) -> list[list[Any]] | None:
    """Rows that could not be compiled, tested one by one: what they compared when all hold."""
    compared = []
    for row in rows:
        holds, left, right = row.holds(scope)
        if not holds:
            return None
        compared.append([left, row.operator, right])
    return compared


def plan_condition_splitter(step: Step) -> Callable[[Run], Transition]:
    """The first branch whose rows all hold (or whose expression is true), else ``otherwise``.

    The trace records why as data: the compared values, formatted only when shown.
    """
    branches = [
        (branch.test, branch.expression, branch.next, f"branch {index}", branch.rows)
        for index, branch in enumerate(step.fields["branches"])
    ]
    otherwise = step.fields["otherwise"]

    def run_step(run: Run) -> Transition:
        scope = run.scope
        for test, expression, target, label, rows in branches:
            if expression is not None:
                value = expression.render(scope)
                if truthy(value):
                    return ("go", target, label, {"expression": expression.source, "value": value})
            elif test is not None:
                if test(scope):
                    return ("go", target, label, {"rows": compared_rows(rows, scope)})
            else:
                compared = holding_rows(rows, scope)
                if compared is not None:
                    return ("go", target, label, {"rows": compared})
        return ("go", otherwise, "otherwise", None)

    return run_step


def collect_input(step: Step, run: Run) -> Transition:
    prompt = step.fields.get("prompt")
    text = limited_text(prompt.render(run.scope), text_limit(prompt)) if prompt is not None else ""
    awaiting = {
        "step": step.id,
        "prompt": text,
        "max_digits": step.fields["max_digits"],
        "min_digits": step.fields["min_digits"],
        "finish_on_key": step.fields["finish_on_key"],
        "timeout": step.fields["timeout"],
    }
    return ("wait", None, "waiting for input", awaiting)


def apply_digits(step: Step, digits: str | None) -> tuple[str, str, str]:
    """(outcome, value, target) for the digits a caller entered (None: none before the timeout).

    Never raises and runs no code of the caller's: a str subclass is read as the plain text it
    holds; anything that is not a str is no input (``Runtime.resume`` refuses it before).
    """
    on_no_input = step.fields["on_no_input"]
    on_invalid = step.fields.get("on_invalid") or on_no_input
    if digits is None or not isinstance(digits, str):
        return "no input", "", on_no_input
    if type(digits) is not str:
        digits = str.__str__(digits)  # a plain copy, made in C
    if len(digits) > 256:
        return "invalid", "", on_invalid
    finish = step.fields["finish_on_key"]
    if finish and finish in digits:
        digits = digits[: digits.index(finish)]
    if not digits:
        return "no input", "", on_no_input
    if any(char not in "0123456789*#" for char in digits):
        return "invalid", "", on_invalid
    if not step.fields["min_digits"] <= len(digits) <= step.fields["max_digits"]:
        return "invalid", digits, on_invalid
    pattern = step.fields.get("pattern")  # a DigitPattern: linear time, whatever it says
    if pattern is not None and not pattern.fullmatch(digits):
        return "invalid", digits, on_invalid
    return "collected", digits, step.fields["next"]


def lookup_variable(variables: dict[str, Any], key: Any, default: Any = None) -> Any:
    """``variables.get(key, default)``; ``default`` too when a key's ``__eq__`` or ``__hash__``
    raised (a raising key is missing, grammar/SPEC.md §2; as the compiled twin reads it)."""
    try:
        return variables.get(key, default)
    except Exception:
        return default


def merge_variables(variables: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Set ``values`` into ``variables``; nested maps merge copy-on-write, never in place,
    so values an earlier trace entry refers to never change. The entries of ``values`` are read
    once first: a lookup, copy or merge may run a hostile key's or map's code."""
    for key, value in list(values.items()):
        existing = lookup_variable(variables, key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged = dict(existing)
            merge_variables(merged, value)
            variables[key] = merged
        else:
            variables[key] = value


_ABSENT: Any = object()


def _key_size(key: Any) -> int:
    return len(key) + 2 if isinstance(key, str) else 8


def state_full(step_id: str, where: str, max_state: int) -> str:
    """The message of a step whose write would take the run's data past ``max_state``."""
    return (
        f"step {step_id!r} cannot set {where}: the run's data would be larger than "
        f"{max_state} bytes (RuntimeSettings.max_state_size)"
    )


def stored_problem(
    step_id: str, where: str, value: Any, budget: int, setting: str, max_depth: int
) -> str:
    """Why step ``step_id`` cannot store ``value`` at ``where`` (one level under a root, at most
    ``budget`` bytes: the RuntimeSettings field ``setting``)."""
    problem = data_problem(
        value, max_depth - 1, budget, False, root=where, depth_limit=max_depth, setting=setting
    )
    return f"step {step_id!r} cannot set {where}: {problem}"


def variable_problem(step_id: str, key: str, value: Any, limits: tuple[int, int, int]) -> str:
    """Why ``value`` cannot be stored as ``vars.<key>`` (both loops' message)."""
    max_value, _, max_depth = limits
    return stored_problem(step_id, f"vars.{key}", value, max_value, "max_value_size", max_depth)


def store_variables(run: Run, step_id: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` into ``vars`` (nested maps merge copy-on-write), each checked against
    the run's data limits before it is stored: DataLimitError names the step and variable."""
    variables = run.scope["vars"]
    limits = run.runtime.data_limits
    max_value, max_state, max_depth = limits
    total = run.data_size
    try:
        for key, given in values.items():
            value = given
            try:  # lookup_variable, inline on the hot path
                existing = variables.get(key, _ABSENT)
            except Exception:
                existing = _ABSENT
            if isinstance(existing, dict) and isinstance(value, dict):
                value = dict(existing)
                merge_variables(value, given)
            if type(value) is int and INT_MIN <= value <= INT_MAX:  # the common case, inline
                size = 8
            else:
                size = measure_data(value, max_depth - 1, max_value, False)
                if size < 0:
                    raise DataLimitError(variable_problem(step_id, key, value, limits))
            if existing is _ABSENT:
                after = total + size + _key_size(key) + 2
            elif type(existing) is int and INT_MIN <= existing <= INT_MAX:
                after = total + size - 8
            else:
                after = total + size - max(measure_data(existing, max_depth, max_state, False), 0)
            if after > max_state:
                raise DataLimitError(state_full(step_id, f"vars.{key}", max_state))
            total = after
            variables[key] = value
    finally:
        run.data_size = total


def store_record(run: Run, step_id: str, root: str, record: dict[str, Any]) -> None:
    """Store a step's record as ``<root>.<step id>`` within the run's data limits."""
    container = run.scope[root]
    _, max_state, max_depth = run.runtime.data_limits
    size = measure_data(record, max_depth - 1, max_state, False)
    where = f"{root}.{step_id}"
    if size < 0:
        problem = stored_problem(step_id, where, record, max_state, "max_state_size", max_depth)
        raise DataLimitError(problem)
    existing = container.get(step_id, _ABSENT)
    if existing is _ABSENT:
        total = run.data_size + size + _key_size(step_id) + 2
    else:
        total = run.data_size + size - max(measure_data(existing, max_depth, max_state, False), 0)
    if total > max_state:
        raise DataLimitError(state_full(step_id, where, max_state))
    run.data_size = total
    container[step_id] = record


def plan_set_variables(step: Step) -> Callable[[Run], Transition]:
    """Set ``vars.*``; nested maps merge copy-on-write; values within the data limits."""
    build = step.fields["variables"].build
    names = [key for key, _ in step.fields["variables"].entries]
    target = step.fields.get("next")
    kind = "go" if target else "complete"
    step_id = step.id

    def run_step(run: Run) -> Transition:
        store_variables(run, step_id, build(run.scope))
        return (kind, target, "set", {"variables": list(names)})

    return run_step


def plan_collect_input(step: Step) -> Callable[[Run], Transition]:
    """Suspend the run until the host brings the caller's digits."""
    return lambda run: collect_input(step, run)


#: Call-control steps: the field whose text goes to the host (None: the action takes none),
#: the outcome, and whether the run ends there (the call is the host's from then on).
HOST_ACTIONS: dict[str, tuple[str | None, str, bool]] = {
    "say": ("text", "said", False),
    "play": ("url", "played", False),
    "transfer": ("target", "transferred", True),
    "voicemail": ("mailbox", "voicemail", True),
    "hangup": (None, "hung up", True),
}


_DEFAULT_MAX_OUTPUT = Limits().max_output


def text_limit(value: Any) -> int:
    """The longest text a host action's field may render: its engine's ``max_output`` (the
    limit its template text already has; a list or map is refused before its JSON is built)."""
    template = getattr(value, "template", value)  # a field is a Template or a Value
    return getattr(template, "max_output", None) or _DEFAULT_MAX_OUTPUT


async def host_action(step: Step, run: Run) -> Transition:
    """Tell the host what to do (say, play, transfer, voicemail, hangup), then go on or end."""
    field, outcome, ends = HOST_ACTIONS[step.type]
    if field is None:
        await run.instruct(step.type, step.id)
        return ("end", None, outcome, None)
    value = limited_text(step.fields[field].render(run.scope), text_limit(step.fields[field]))
    await run.instruct(step.type, step.id, field, value)
    if ends:
        return ("end", None, outcome, {field: value})
    target = step.fields.get("next")
    return ("go" if target else "complete", target, outcome, None)


def prepare_request(step: Step, scope: Mapping[str, Any], max_body: int) -> PreparedRequest:
    """Render and check everything a request needs; RequestError when it cannot be sent."""
    endpoint: Endpoint = step.fields["endpoint"]
    url = render_endpoint(endpoint.parts, scope)
    headers = [
        (name, check_header(name, template.render(scope)))
        for name, template in step.fields["headers"]
    ]
    body_tree: FieldTree = step.fields["body"]
    body = None
    if body_tree or step.fields["method"] in ("POST", "PUT", "PATCH"):
        body = encode_body(body_tree.build(scope), max_body)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return PreparedRequest(step.fields["method"], url, tuple(headers), body)


async def http_request(step: Step, run: Run) -> Transition:
    settings = run.runtime.settings
    secrets = run.scope["secrets"]
    secrets.take_missing()
    try:
        request = prepare_request(step, run.scope, settings.max_request_body)
        missing = secrets.take_missing()
        if missing is not None:
            raise RequestError(missing)
    except RequestError as error:
        message = valid_text(run.redact(str(error)))
        store_record(run, step.id, "steps", {"outcome": "invalid_request", "error": message})
        return (
            "go",
            step.fields["on_failure"] or step.fields["next"],
            "invalid_request",
            {"error": message},
        )
    summary = run.request_summary(request)
    timeout = min(step.fields["timeout"], settings.http_timeout_cap)
    if not step.fields["parse_response"]:
        run.runtime.send_in_background(run, step.id, request, timeout, summary)
        store_record(run, step.id, "steps", {"outcome": "sent"})
        return ("go", step.fields["next"], "sent", {"request": summary})
    result = await run.runtime.http.send(
        request,
        timeout=timeout,
        max_body=settings.max_response_body,
        follow_redirects=step.fields["follow_redirects"],
    )
    record: dict[str, Any] = {"outcome": result.outcome}
    if result.response is not None and result.outcome in ("success", "http_error"):
        record["response"] = result.response
    failure = valid_text(run.redact(result.error)) if result.error is not None else None
    if failure is not None:
        record["error"] = failure
    detail: dict[str, Any] = {
        "request": summary,
        "status": result.status,
        "duration_ms": round(result.duration * 1000, 1),
    }
    if failure is not None:
        detail["error"] = failure
    try:
        store_record(run, step.id, "steps", record)
    except DataLimitError as refused:  # the response cannot be kept: the step fails
        detail["error"] = str(refused)
        store_record(run, step.id, "steps", {"outcome": "too_large", "error": str(refused)})
        return ("go", step.fields["on_failure"], "too_large", detail)
    if result.outcome == "success":
        return ("go", step.fields["next"], "success", detail)
    if result.outcome == "timeout":
        return ("go", step.fields["on_timeout"] or step.fields["on_failure"], "timeout", detail)
    return ("go", step.fields["on_failure"], result.outcome, detail)


#: Steps without I/O are planned once per flow into plain calls; the others are awaited.
SYNC_PLANNERS: dict[str, Callable[[Step], Callable[[Run], Transition]]] = {
    "condition_splitter": plan_condition_splitter,
    "collect_input": plan_collect_input,
    "set_variables": plan_set_variables,
}
ASYNC_EXECUTORS: dict[str, Callable[[Step, Run], Awaitable[Transition]]] = {
    "http_request": http_request,
    **{action: host_action for action in HOST_ACTIONS},
}


#: For each step: the step, and either its planned plain call or its awaited executor.
StepPlan: TypeAlias = (
    "dict[str, tuple[Step, Callable[[Run], Transition] | None, "
    "Callable[[Step, Run], Awaitable[Transition]] | None]]"
)


def plan_flow(steps: Mapping[str, Step]) -> StepPlan:
    """Prepare every step of a flow once (targets, builders and labels bound in closures)."""
    plan: StepPlan = {}
    for step_id, step in steps.items():
        planner = SYNC_PLANNERS.get(step.type)
        if planner is not None:
            plan[step_id] = (step, planner(step), None)
        else:
            plan[step_id] = (step, None, ASYNC_EXECUTORS[step.type])
    return plan
