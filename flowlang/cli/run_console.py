"""Console: ``flowlang run`` — run one call in the terminal and show a readable (or JSON) trace."""

from __future__ import annotations

__all__ = ["run_from_command_line"]

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from flowlang.cli.terminal import printable
from flowlang.expr.values import to_json, to_text
from flowlang.flow.model import CompiledFlow
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.runner import RunResult, Runtime, RuntimeSettings


def describe_why(detail: Mapping[str, Any]) -> str | None:
    """Why a Condition Splitter branch was taken, in words, from the trace's data."""
    if "rows" in detail:
        parts = []
        for left, operator, right in detail["rows"]:
            shown = "" if operator in ("is_empty", "is_not_empty") else f" {to_text(right)!r}"
            parts.append(f"{to_text(left)!r} {operator}{shown}")
        return "; ".join(parts)
    if "expression" in detail:
        return f"{detail['expression']} is {to_text(detail['value']) or 'null'}"
    return None


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
    if entry["type"] == "collect_input" and "digits" in detail:
        lines.append(f"{'':<17}digits entered: {detail['digits']}")
    return [head, *lines]


def _print_result(result: RunResult, out: TextIO, as_json: bool) -> None:
    """Print the steps and host instructions of one segment of a run (start, or one resume)."""
    entries = result.trace
    if as_json:
        for entry in entries:
            out.write(to_json({"event": "step", **entry}) + "\n")
        for instruction in result.instructions:
            out.write(to_json({"event": "instruction", **instruction}) + "\n")
    else:
        for entry in entries:
            lines = (printable(line, one_line=True) for line in _describe(entry))
            out.write("\n".join(lines) + "\n")
        for instruction in result.instructions:
            fields = ", ".join(
                f"{key}={value!r}"
                for key, value in instruction.items()
                if key not in ("action", "step")
            )
            shown = f"  host <- {instruction['action']}({fields})"
            out.write(printable(shown, one_line=True) + "\n")


async def _main(
    flow: CompiledFlow,
    context: Mapping[str, Any],
    inputs: dict[str, str | None],
    arguments: argparse.Namespace,
    out: TextIO,
    stdin: TextIO,
) -> int:
    options: dict[str, Any] = {
        "settings": RuntimeSettings(allow_hosts=frozenset(arguments.allow_host))
    }
    if arguments.responses:
        options["http"] = load_recorded_responses(arguments.responses)
    if not arguments.json:
        where = f" ({flow.filename})" if flow.filename else ""
        out.write(printable(f"flow {flow.name}{where}", one_line=True) + "\n")
    async with Runtime(**options) as runtime:
        try:
            running = runtime.start(flow, context)
        except ValueError as error:  # a context the runtime cannot take: refused at the door
            sys.stderr.write(f"flowlang: {error}\n")
            return 2
        result = await running
        _print_result(result, out, arguments.json)
        while result.status == "waiting_for_input":
            awaiting = result.awaiting or {}
            step = awaiting.get("step")
            if step in inputs:
                digits = inputs.pop(step)
            elif arguments.interactive:
                prompt = awaiting.get("prompt") or f"digits for {step}"
                out.write(printable(f"  caller hears: {prompt}", one_line=True) + "\n")
                out.flush()
                line = stdin.readline(1024)  # bounded: a caller enters at most 64 digits
                digits = line.strip() or None
            else:
                break
            result = await runtime.resume(flow, result.state or {}, digits)
            _print_result(result, out, arguments.json)
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
        waiting_at = (result.awaiting or {}).get("step")
        ending = {
            "ended": "ended by a call-control step",
            "completed": "completed",
            "waiting_for_input": f"waiting for input at step {waiting_at!r} "
            "(give it with --input STEP=DIGITS or --interactive)",
            "failed": f"failed: {result.error}",
        }[result.status]
        out.write(printable(f"result: {ending}", one_line=True) + "\n")
    return 1 if result.status == "failed" else 0


def run_from_command_line(
    flow: CompiledFlow,
    context: Mapping[str, Any],
    inputs: dict[str, str | None],
    arguments: argparse.Namespace,
    out: TextIO,
    stdin: TextIO,
) -> int:
    """Run ``flow`` for one call as ``flowlang run`` does; returns the exit status."""
    return asyncio.run(_main(flow, context, inputs, arguments, out, stdin))
