"""Collect Input: suspend the run until the host brings the caller's digits."""

from __future__ import annotations

__all__ = [
    "KIND",
    "apply_digits",
    "awaiting_digits",
    "entered_digits",
    "plan_collect_input",
    "resume_collect_input",
]

from collections.abc import Callable, Mapping
from typing import Any

from flowlang.expr.shared import limited_text
from flowlang.flow.fields import NEXT, Field
from flowlang.flow.model import Step
from flowlang.flow.source import Pointer
from flowlang.kinds.base import END, Checker, Resumed, RunView, StepKind, Transition
from flowlang.kinds.call_control import text_limit


def awaiting_digits(step: Step, run: RunView, prompt: Any) -> Transition:
    """The ``wait`` transition of a step that collects digits: what the host says (``prompt``,
    a field value or None), and how to collect them (the step's digit rules)."""
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


def plan_collect_input(step: Step) -> Callable[[RunView], Transition]:
    """Suspend the run until the host brings the caller's digits."""
    prompt = step.fields.get("prompt")
    return lambda run: awaiting_digits(step, run, prompt)


def entered_digits(digits: str | None, finish_on_key: str) -> str | None:
    """The digits a caller entered, as plain text up to the finish key; None for no input,
    ``""`` for an entry that is not digits at all (too long, other characters).

    Never raises and runs no code of the caller's: a str subclass is read as the plain text it
    holds; anything that is not a str is no input (``Runtime.resume`` refuses it before).
    """
    if digits is None or not isinstance(digits, str):
        return None
    if type(digits) is not str:
        digits = str.__str__(digits)  # a plain copy, made in C
    if len(digits) > 256:
        return ""
    if finish_on_key and finish_on_key in digits:
        digits = digits[: digits.index(finish_on_key)]
    if not digits:
        return None
    if any(char not in "0123456789*#" for char in digits):
        return ""
    return digits


def apply_digits(step: Step, digits: str | None) -> tuple[str, str, str]:
    """(outcome, value, target) for the digits a caller entered (None: none before the timeout)."""
    on_no_input = step.fields["on_no_input"]
    on_invalid = step.fields.get("on_invalid") or on_no_input
    entered = entered_digits(digits, step.fields["finish_on_key"])
    if entered is None:
        return "no input", "", on_no_input
    if not entered:
        return "invalid", "", on_invalid
    if not step.fields["min_digits"] <= len(entered) <= step.fields["max_digits"]:
        return "invalid", entered, on_invalid
    pattern = step.fields.get("pattern")  # a DigitPattern: linear time, whatever it says
    if pattern is not None and not pattern.fullmatch(entered):
        return "invalid", entered, on_invalid
    return "collected", entered, step.fields["next"]


def resume_collect_input(step: Step, digits: str | None, previous: Any) -> Resumed:
    """The record ``{"value": digits}`` of the caller's entry and where it leads (the previous
    record plays no part: each visit collects afresh); the trace shows how many digits."""
    outcome, value, target = apply_digits(step, digits)
    return outcome, {"value": value}, target, {"digits": len(value)}


def digits_edge(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """``next`` for digits collected; ``on_no_input``; ``on_invalid`` (or ``on_no_input`` when
    the step has none); no edge while the step waits."""
    if outcome == "collected":
        return "next" if step.fields.get("next") else END
    if outcome == "invalid" and step.fields.get("on_invalid"):
        return "on_invalid"
    return "on_no_input" if outcome in ("no input", "invalid") else None


def check_digit_rules(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, step_id: str
) -> None:
    """min_digits may not be larger than max_digits."""
    low, high = fields.get("min_digits"), fields.get("max_digits")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        checker.error(
            "min_digits is larger than max_digits", (*pointer, "min_digits"), step_id, "min_digits"
        )


KIND = StepKind(
    "collect_input",
    "collect digits from the caller",
    {
        "prompt": Field("template", description="what the host says before collecting"),
        "max_digits": Field("int", default=32, minimum=1, maximum=64),
        "min_digits": Field("int", default=1, minimum=1, maximum=64),
        "finish_on_key": Field("key", default="#", description="one of 0-9 * #, or empty for none"),
        "timeout": Field("duration", default=5.0, minimum=0.5, maximum=60.0),
        "pattern": Field(
            "pattern",
            description="regular expression the digits must match: literals 0-9 * #, classes, "
            "groups, |, ?, *, +, {m,n} (counts at most 64); matched in linear time",
        ),
        "next": NEXT,
        "on_no_input": Field("step", required=True, description="no digits before the timeout"),
        "on_invalid": Field(
            "step", description="digits that fail validation; defaults to on_no_input"
        ),
    },
    takes_input=True,
    check=check_digit_rules,
    outcome_edge=digits_edge,
    plan=plan_collect_input,
    resume=resume_collect_input,
)
