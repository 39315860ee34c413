"""Console: ``flowlang run`` — run one call in the terminal and show a readable (or JSON) trace."""

from __future__ import annotations

__all__ = ["print_result", "run_from_command_line"]

import argparse
import asyncio
import signal
import ssl
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

from flowlang.cli.inputs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError
from flowlang.cli.terminal import Colours, printable
from flowlang.expr.values import to_json
from flowlang.flow.model import CompiledFlow
from flowlang.graph.html import run_page
from flowlang.graph.model import flow_graph
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.results import describe_why
from flowlang.runtime.runner import RunResult, Runtime, RuntimeSettings
from flowlang.runtime.secrets import EnvironmentSecrets

#: Step outcomes shown as good or bad news (the others are plain: branches, digits).
_GOOD_OUTCOMES = frozenset({"success", "completed", "valid", "ended", "chosen"})
_BAD_OUTCOMES = frozenset(
    {"failure", "failed", "timeout", "invalid_request", "tls_error", "error", "invalid", "fallback"}
)


class NoticedSecrets(EnvironmentSecrets):
    """Secrets from the environment that remember which names were asked for but not set."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: dict[str, None] = {}

    def get(self, name: str) -> str | None:
        value = super().get(name)
        if value is None and isinstance(name, str) and len(self.missing) < 100:
            self.missing[name] = None
        return value


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once while the block blocks (reading a line): the
    event loop's own handler would only cancel the task, which waits for the line."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _describe(entry: dict[str, Any]) -> list[str]:
    """One readable line for a trace entry, plus detail lines."""
    detail = entry.get("detail") or {}
    head = f"  {entry['step']:<14} {entry['type']:<19} {entry['outcome']}"
    lines = []
    request = detail.get("request")
    if request:
        status = detail.get("status")
        arrow = f" -> {status}" if status is not None else ""
        head += f"  {request['method']} {request['url']}{arrow}"
        for name, value in request.get("headers", {}).items():
            lines.append(f"{'':<17}{name}: {value}")
    why = describe_why(detail)
    if why is not None:
        lines.append(f"{'':<17}why: {why}")
    elif entry["outcome"] == "otherwise":
        lines.append(f"{'':<17}why: no branch held")
    for key in ("error", "target", "mailbox"):
        if key in detail:
            lines.append(f"{'':<17}{key}: {detail[key]}")
    lines.extend(f"{'':<17}{line}" for line in _describe_input(detail))
    return [head, *lines]


def _describe_input(detail: Mapping[str, Any]) -> list[str]:
    """What a step that takes input shows of a try: the digits entered (how many), the key
    pressed at a menu, which try it is, and what a fallback came after."""
    lines = []
    if "digits" in detail:
        lines.append(f"digits entered: {detail['digits']}")
    if "key" in detail:
        key = detail["key"]
        lines.append(f"key pressed: {key}" if key is not None else "pressed: not one key")
    if "attempt" in detail and "max_attempts" in detail:
        after = f" (after {detail['after']})" if "after" in detail else ""
        lines.append(f"try {detail['attempt']} of {detail['max_attempts']}{after}")
    if detail.get("prompt_url"):
        lines.append(f"plays: {detail['prompt_url']}")
    return lines


def _paint_outcome(head: str, entry: Mapping[str, Any], colours: Colours) -> str:
    """The head line of a step (already printable) with its outcome painted good or bad."""
    outcome = str(entry["outcome"])
    role = "good" if outcome in _GOOD_OUTCOMES else "bad" if outcome in _BAD_OUTCOMES else None
    if role is None or not colours.enabled:
        return head
    prefix = printable(f"  {entry['step']:<14} {entry['type']:<19} ", one_line=True)
    shown = printable(outcome, one_line=True)
    if not head.startswith(prefix + shown):
        return head
    at = len(prefix)
    return head[:at] + colours.paint(shown, role) + head[at + len(shown) :]


def _print_result(
    result: RunResult, out: TextIO, as_json: bool, colours: Colours | None = None
) -> None:
    """Print the steps and host instructions of one segment of a run (start, or one resume)."""
    colours = colours or Colours(False)
    entries = result.trace
    if as_json:
        for entry in entries:
            out.write(to_json({"event": "step", **entry}) + "\n")
        for instruction in result.instructions:
            out.write(to_json({"event": "instruction", **instruction}) + "\n")
    else:
        for entry in entries:
            head, *rest = (printable(line, one_line=True) for line in _describe(entry))
            head = _paint_outcome(head, entry, colours)
            out.write("\n".join([head, *rest]) + "\n")
        for instruction in result.instructions:
            fields = ", ".join(
                f"{key}={value!r}"
                for key, value in instruction.items()
                if key not in ("action", "step")
            )
            shown = f"  host <- {instruction['action']}({fields})"
            out.write(printable(shown, one_line=True) + "\n")


def print_result(result: RunResult, out: TextIO, colours: Colours | None = None) -> None:
    """Print one leg of a run (a start or a resume) as ``flowlang run`` does: its steps, with
    why each went where it went, and its host instructions (``flowlang test`` shows a failed
    case's trace with it)."""
    _print_result(result, out, False, colours)


def _ask(prompt: str, stdin: TextIO, talk: TextIO) -> str | None:
    """Say what the caller hears on ``talk`` and read the digits, one bounded line."""
    with _interruptible():
        talk.write(printable(f"  caller hears: {prompt}", one_line=True) + "\n")
        talk.flush()
        line = stdin.readline(1024)  # bounded: a caller enters at most 64 digits
    return line.strip() or None


def _heard(awaiting: Mapping[str, Any], step: Any) -> str:
    """What the caller hears before entering digits: the prompt said, then the recording
    played (a menu's ``play``), or a plain request for digits when there is neither."""
    heard = [str(awaiting.get("prompt") or "")]
    if awaiting.get("prompt_url"):
        heard.append(f"[plays {awaiting['prompt_url']}]")
    return " ".join(part for part in heard if part) or f"digits for {step}"


def _report_missing_secrets(secrets: NoticedSecrets) -> None:
    """Name each secret the run asked for but the environment lacks, one line each."""
    for name in secrets.missing:
        shown = printable(name, one_line=True)
        sys.stderr.write(
            f"flowlang: secret {shown!r} is not set: set the environment variable "
            f"{printable(secrets.variable(name), one_line=True)}\n"
        )


async def _main(
    flow: CompiledFlow,
    context: Mapping[str, Any],
    inputs: Mapping[str, deque[str | None]],
    arguments: argparse.Namespace,
    out: TextIO,
    stdin: TextIO,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    secrets = NoticedSecrets()
    options: dict[str, Any] = {
        "settings": RuntimeSettings(allow_hosts=frozenset(arguments.allow_host)),
        "secrets": secrets,
        "ssl_context": ssl_context,
    }
    if arguments.responses:
        options["http"] = load_recorded_responses(arguments.responses)
    now = getattr(arguments, "now", None)
    if now is not None:  # --now: the clock stands still at that time
        options["clock"] = lambda: now
    colours = Colours(False) if arguments.json else Colours.for_stream(out)
    talk = sys.stderr if arguments.json else out  # --json: stdout carries JSON lines only
    if not arguments.json:
        where = f" ({flow.filename})" if flow.filename else ""
        out.write(printable(f"flow {flow.name}{where}", one_line=True) + "\n")
    async with Runtime(**options) as runtime:
        try:
            running = runtime.start(flow, context)
        except ValueError as error:  # a context the runtime cannot take: refused at the door
            sys.stderr.write(printable(f"flowlang: {error}") + "\n")
            return EXIT_BAD_INPUT
        result = await running
        _print_result(result, out, arguments.json, colours)
        trace, instructions = list(result.trace), list(result.instructions)
        while result.status == "waiting_for_input":
            awaiting = result.awaiting or {}
            step = awaiting.get("step")
            answers = inputs.get(step) if isinstance(step, str) else None
            if answers:
                digits = answers.popleft()
            elif arguments.interactive:
                digits = _ask(_heard(awaiting, step), stdin, talk)
            else:
                break
            result = await runtime.resume(flow, result.state or {}, digits)
            _print_result(result, out, arguments.json, colours)
            trace.extend(result.trace)
            instructions.extend(result.instructions)
    background = runtime.background_results
    if arguments.json:
        for item in background:
            out.write(to_json({"event": "background_request", **item}) + "\n")
        summary = {
            "event": "result",
            "status": result.status,
            "error": result.error,
            "awaiting": result.awaiting,
        }
        out.write(to_json(summary) + "\n")
    else:
        for item in background:
            out.write(
                printable(
                    f"  background {item['step']}: {item['outcome']}"
                    + (f" ({item['status']})" if item["status"] else "")
                    + (f": {item['error']}" if item["error"] else ""),
                    one_line=True,
                )
                + "\n"
            )
        # A run-time failure's first line, then its place and caret (when it has them).
        error_head, _, error_place = (result.error or "").partition("\n")
        waiting_at = (result.awaiting or {}).get("step")
        ending = {
            "ended": "ended by a call-control step",
            "completed": "completed",
            "waiting_for_input": f"waiting for input at step {waiting_at!r} "
            "(give it with --input STEP=DIGITS or --interactive)",
            "failed": f"failed: {error_head}",
        }[result.status]
        role = "bad" if result.status == "failed" else "good"
        out.write("result: " + colours.paint(printable(ending, one_line=True), role) + "\n")
        if result.status == "failed" and error_place:
            for line in error_place.split("\n"):
                out.write(printable(line, one_line=True) + "\n")
    _report_missing_secrets(secrets)
    html = getattr(arguments, "html", None)
    if html is not None:
        _write_page(
            html, run_page(flow_graph(flow), trace, status=result.status, instructions=instructions)
        )
    return EXIT_FAILED if result.status == "failed" else EXIT_OK


def _write_page(name: str, page: str) -> None:
    """Write ``--html``'s page (the whole call: every leg of the run) to file ``name``."""
    try:
        with open(name, "wb") as stream:
            stream.write(page.encode("utf-8"))
    except OSError as error:
        shown = printable(name, one_line=True)
        raise UsageError(f"cannot write --html {shown}: {error.strerror or error}") from None


def run_from_command_line(
    flow: CompiledFlow,
    context: Mapping[str, Any],
    inputs: Mapping[str, deque[str | None]] | Mapping[str, str | None],
    arguments: argparse.Namespace,
    out: TextIO,
    stdin: TextIO,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Run ``flow`` for one call as ``flowlang run`` does; returns the exit status.

    ``inputs`` gives each step that takes input its answers in order (a single answer per step is
    taken too); ``ssl_context`` the certificate authorities to trust (the default bundle when
    None)."""
    answers = {
        step: value if isinstance(value, deque) else deque([value])
        for step, value in inputs.items()
    }
    return asyncio.run(_main(flow, context, answers, arguments, out, stdin, ssl_context))
