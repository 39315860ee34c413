"""Menu: say or play a prompt, read one key, go to its option; re-prompt, then fall back."""

from __future__ import annotations

__all__ = [
    "KIND",
    "RETRIES",
    "check_menu",
    "plan_menu",
    "pressed_key",
    "resume_menu",
    "tries_before",
]

from collections.abc import Callable, Mapping
from typing import Any

from flowlang.expr.shared import limited_text
from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.flow.source import Pointer
from flowlang.kinds.base import Checker, Resumed, RunView, StepKind, Transition
from flowlang.kinds.call_control import text_limit
from flowlang.kinds.collect_input import entered_digits

#: The outcomes of a try after which the menu asks again (while tries are left).
RETRIES = ("invalid", "no input")
#: The prompt fields: a menu has exactly one.
_PROMPTS = ("say", "play")


def pressed_key(digits: Any) -> str | None:
    """The one key a caller pressed (0-9, * or #); None for no input, ``""`` for anything that
    is not one key (several keys, other characters, very long text, not text at all).

    Never raises and runs no code of the caller's (a str subclass is read as plain text)."""
    if digits is not None and not isinstance(digits, str):
        return ""
    entered = entered_digits(digits, "")
    if entered is None:
        return None
    return entered if len(entered) == 1 else ""


def tries_before(step: Step, record: Any) -> tuple[int, str | None]:
    """How many tries the caller has had at this visit of the menu, and the outcome of the
    last (``invalid`` or ``no input``), from the menu's record ``input.<id>``; ``(0, None)``
    on a fresh visit (no record, or the last visit ended: a key was chosen, or fallback).

    ValueError for a record the menu cannot have written (a state edited by hand): a retry
    whose ``attempts`` is not a whole number from 1 to ``max_attempts - 1``.
    """
    if record is None:
        return 0, None
    if type(record) is not dict:
        raise ValueError(f"input.{step.id[:80]} is not the record of a menu")
    outcome = record.get("outcome")
    if type(outcome) is not str or outcome not in RETRIES:
        return 0, None
    attempts, most = record.get("attempts"), step.fields["max_attempts"]
    if type(attempts) is not int or not 1 <= attempts < most:
        raise ValueError(
            f"input.{step.id[:80]}.attempts is not a number of tries from 1 to {most - 1}"
        )
    return attempts, outcome


def plan_menu(step: Step) -> Callable[[RunView], Transition]:
    """Suspend the run until the host brings the caller's key: the prompt, preceded on a
    retry by the message for what went wrong (``invalid_message``, ``no_input_message``)."""
    fields = step.fields
    say, play = fields.get("say"), fields.get("play")
    messages = {
        "invalid": fields.get("invalid_message"),
        "no input": fields.get("no_input_message"),
    }
    timeout, most = fields["timeout"], fields["max_attempts"]

    def rendered(template: Any, run: RunView) -> str:
        return limited_text(template.render(run.scope), text_limit(template))

    def run_step(run: RunView) -> Transition:
        tries, last = tries_before(step, run.scope["input"].get(step.id))
        message = messages.get(last) if last is not None else None
        parts = (rendered(part, run) for part in (message, say) if part is not None)
        said = [text for text in parts if text]
        awaiting: dict[str, Any] = {
            "step": step.id,
            "prompt": " ".join(said),
            "max_digits": 1,
            "min_digits": 1,
            "finish_on_key": "",
            "timeout": timeout,
            "attempt": tries + 1,
            "max_attempts": most,
        }
        if play is not None:
            awaiting["prompt_url"] = rendered(play, run)
        return ("wait", None, "waiting for input", awaiting)

    return run_step


def resume_menu(step: Step, digits: str | None, previous: Any) -> Resumed:
    """The caller's key at a menu: its option (``chosen``); else, with tries left, the menu
    again (``invalid``, ``no input``); else ``fallback``. The record ``input.<id>`` holds the
    key chosen (``value``, ``""`` for none), the tries of this visit and the outcome."""
    tries = tries_before(step, previous)[0] + 1
    most = step.fields["max_attempts"]
    key = pressed_key(digits)
    options = step.fields["options"]
    if key and key in options:
        record = {"value": key, "attempts": tries, "outcome": "chosen"}
        return "chosen", record, options[key], {"key": key, "attempt": tries, "max_attempts": most}
    outcome = "no input" if key is None else "invalid"
    detail: dict[str, Any] = {"attempt": tries, "max_attempts": most}
    if key is not None:
        detail["key"] = key or None  # None: not one key
    if tries >= most:
        record = {"value": "", "attempts": tries, "outcome": "fallback"}
        return "fallback", record, step.fields["fallback"], {**detail, "after": outcome}
    return outcome, {"value": "", "attempts": tries, "outcome": outcome}, step.id, detail


def menu_edge(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """``options[key]`` for the key chosen; ``fallback``; no edge while the menu waits or asks
    again."""
    if outcome == "chosen" and detail is not None:
        return f"options[{detail.get('key')}]"
    return "fallback" if outcome == "fallback" else None


def check_menu(
    checker: Checker, fields: dict[str, Any], raw: dict[str, Any], pointer: Pointer, step_id: str
) -> None:
    """A menu says its prompt or plays it: exactly one of ``say`` and ``play``."""
    given = [name for name in _PROMPTS if name in raw]
    if len(given) > 1:
        checker.error(
            "a menu says its prompt or plays it, not both: keep say or play",
            (*pointer, "play"),
            step_id,
            "play",
            key=True,
        )
    elif not given:
        checker.error(
            "a menu needs its prompt: say (text) or play (the URL of a recording)",
            pointer,
            step_id,
            "say",
            key=True,
        )


KIND = StepKind(
    "menu",
    "say or play a menu and go where the caller's key leads",
    {
        "say": Field("template", description="the menu, said to the caller (or play)"),
        "play": Field("template", description="the URL of the menu's recording (or say)"),
        "options": Field(
            "options", required=True, description="each key (0-9, * or #) and its step"
        ),
        "timeout": Field(
            "duration",
            default=5.0,
            minimum=0.5,
            maximum=60.0,
            description="how long the host waits for a key",
        ),
        "max_attempts": Field(
            "int",
            default=3,
            minimum=1,
            maximum=10,
            description="tries before the fallback",
            examples=(1, 3),
        ),
        "invalid_message": Field(
            "template",
            description="said before the prompt again after a key with no option",
            examples=("Sorry, that is not an option.",),
        ),
        "no_input_message": Field(
            "template", description="said before the prompt again after no key"
        ),
        "fallback": Field(
            "step", required=True, description="after max_attempts tries without a valid key"
        ),
    },
    takes_input=True,
    sample={"say": "For sales press 1, for support press 2."},
    schema_rules={"oneOf": [{"required": ["say"]}, {"required": ["play"]}]},
    check=check_menu,
    plan=plan_menu,
    outcome_edge=menu_edge,
    resume=resume_menu,
)
