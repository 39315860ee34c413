"""Generated large documents: chained-step flows and documents full of bad lines (tests, benchmarks)."""

from __future__ import annotations

import json

__all__ = [
    "bad_lines_flow",
    "chained_flow",
    "chained_flow_of_size",
    "chained_workflow",
    "one_line_json_flow",
    "say_chain",
]


def _step(index: int, count: int) -> str:
    """One step of the chain: the kinds rotate, each reads what earlier steps left."""
    me, after = f"s{index}", f"s{index + 1}" if index + 1 < count else "done"
    kind = index % 4
    if kind == 0:
        return (
            f"  {me}:\n    type: collect_input\n    prompt: Enter the code for <<vars.v{max(index - 1, 0)}>>\n"
            f"    pattern: '[0-9]{{4}}#?'\n    next: {after}\n    on_no_input: done\n"
        )
    if kind == 1:
        return (
            f"  {me}:\n    type: http_request\n    method: POST\n"
            f"    endpoint: https://crm.example.com/api/<<input.s{index - 1}>>\n"
            f"    body:\n      code: <<input.s{index - 1}>>\n      step: '{me}'\n"
            f"    next: {after}\n    on_failure: done\n"
        )
    if kind == 2:
        return (
            f"  {me}:\n    type: set_variables\n    variables:\n"
            f"      v{index}: <<steps.s{index - 1}.response.body.tier | default('none')>>\n"
            f"      w{index}: <<input.s{index - 2}>>\n    next: {after}\n"
        )
    return (
        f"  {me}:\n    type: condition_splitter\n    branches:\n"
        f"      - conditions:\n          - property: <<vars.v{index - 1}>>\n"
        f"            operator: equals\n            value: gold\n        next: {after}\n"
        f"    otherwise: {after}\n"
    )


def chained_flow(count: int) -> str:
    """A flow of ``count`` chained steps (collect, request, set, split, repeated) and a hangup."""
    parts = ["flow: chained\nstart: s0\nsteps:\n"]
    parts.extend(_step(index, count) for index in range(count))
    parts.append("  done:\n    type: hangup\n")
    return "".join(parts)


def chained_flow_of_size(size: int) -> str:
    """The longest chained flow whose text is at most ``size`` bytes."""
    low, high = 1, size // 40
    while low < high:
        middle = (low + high + 1) // 2
        if len(chained_flow(middle).encode()) <= size:
            low = middle
        else:
            high = middle - 1
    return chained_flow(low)


def bad_lines_flow(count: int) -> str:
    """A flow whose one step has ``count`` unknown fields: one finding per line."""
    lines = [f"    bad_field_{index}: {index}\n" for index in range(count)]
    return "flow: bad\nstart: a\nsteps:\n  a:\n    type: hangup\n" + "".join(lines)


def chained_workflow(count: int) -> str:
    """A workflow of ``count`` api_request actions, each reading the result of the one before."""
    parts = ["workflow: chained\ntrigger: call.ended\nactions:\n"]
    for index in range(count):
        previous = f"<<actions.a{index - 1}.result.status>>" if index else "first"
        parts.append(
            f"  - name: a{index}\n    type: api_request\n    method: POST\n"
            f"    endpoint: https://crm.example.com/api/calls\n"
            f"    values:\n      - key: previous\n        value: {previous}\n"
        )
    return "".join(parts)


def say_chain(count: int) -> str:
    """``count`` say steps, each going to the next: the smallest steps a long chain can have."""
    parts = ["flow: chain\nstart: s0\nsteps:\n"]
    parts.extend(
        f"  s{index}: {{type: say, text: hello, next: s{index + 1}}}\n" for index in range(count)
    )
    parts.append(f"  s{count}: {{type: hangup}}\n")
    return "".join(parts)


def one_line_json_flow(count: int) -> str:
    """A JSON flow on one line: ``count`` steps, each with an unknown field and a template that
    does not compile (two findings per step, all on line 1)."""
    steps = {
        f"s{index}": {"type": "say", "text": f"hi <<contact.name{index}", "bad": index}
        for index in range(count)
    }
    return json.dumps({"flow": "t", "start": "s0", "steps": steps})
