"""Fuzz the evaluators: the compiled one must agree with its Python twin, and never crash.

An input is a template, optionally followed by NUL and JSON data (put in the context as
``x``; NaN and Infinity allowed). The context is the golden one plus hostile values (NaN,
infinity, a 5,000-digit integer, lone surrogates, deep and cyclic data, a list sharing one
sublist 2**17 times). Each template renders lenient and strict on both backends; the outcomes
(value, or error class and message) must be equal and only FlowError may escape.
Run: python tests/fuzz/fuzz_evaluator.py CORPUS_DIR
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris
from common import SEPARATOR, fingerprint, golden_context, text_of

with atheris.instrument_imports():
    import flowlang
    from flowlang.errors import FlowError
    from flowlang.expr.backends import AVAILABLE


def _hostile_context() -> dict[str, Any]:
    context = golden_context()
    cycle: list[Any] = [1, "a"]
    cycle.append(cycle)
    deep: Any = "bottom"
    for _ in range(300):
        deep = {"k": [deep]}
    shared: Any = ["abcd"]
    for _ in range(17):
        shared = [shared, shared]
    context["hostile"] = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "big": 7**6000,
        "surrogate": "a\ud800b\udfff",
        "nul": "a\x00b",
        "cycle": cycle,
        "deep": deep,
        "shared": shared,
        "long": "é" * 60_000,
        "numbers": ["42", " 7 ", "-0.5", "1e3", "٣"],
    }
    return context


CONTEXT = _hostile_context()
ENGINES = {
    (backend, strict): flowlang.Engine(backend=backend, strict=strict, cache_size=0)
    for backend in AVAILABLE
    for strict in (False, True)
}
CLOUDTALK = {backend: flowlang.Engine(backend=backend, syntax="cloudtalk") for backend in AVAILABLE}


def _outcome(engine: flowlang.Engine, template: str, context: dict[str, Any]) -> tuple[str, str]:
    try:
        return "ok", fingerprint(engine.render(template, context))
    except FlowError as error:
        return type(error).__name__, str(error)


def _data(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, too deep, too many digits
        return raw


def one_input(data: bytes) -> None:
    text = text_of(data)
    template, _, raw = text.partition(SEPARATOR)
    context = dict(CONTEXT)
    context["x"] = _data(raw) if raw else None
    for strict in (False, True):
        outcomes = {
            backend: _outcome(ENGINES[backend, strict], template, context) for backend in AVAILABLE
        }
        assert len(set(outcomes.values())) == 1, (template, strict, outcomes)
    if "{{" in template:
        outcomes = {
            backend: _outcome(CLOUDTALK[backend], template, context) for backend in AVAILABLE
        }
        assert len(set(outcomes.values())) == 1, (template, "cloudtalk", outcomes)


def main() -> None:
    if "cython" not in AVAILABLE:
        print("fuzz_evaluator: the compiled evaluator is not built; nothing to compare")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
