"""Fuzz the evaluators: the compiled one must agree with its Python twin, and never crash.

An input is a template, optionally followed by NUL and JSON data (put in the context as
``x``; NaN and Infinity allowed). The context is the golden one plus hostile values (NaN,
infinity, a 5,000-digit integer, lone surrogates, deep and cyclic data, a list sharing one
sublist 2**17 times, subclasses whose overrides raise, custom and broken Mappings). Each template renders lenient and strict on both backends; the outcomes
(value, or error class and message) must be equal and only FlowError may escape.
Run: python tests/fuzz/fuzz_evaluator.py CORPUS_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import atheris
from common import SEPARATOR, fingerprint, golden_context, text_of

with atheris.instrument_imports():
    import flowlang
    from flowlang.errors import FlowError
    from flowlang.expr.backends import AVAILABLE


def _refuse(*args: Any) -> Any:
    raise RuntimeError("hostile")


class _Int(int):
    __eq__ = __lt__ = __gt__ = __le__ = __ge__ = __bool__ = __str__ = _refuse  # type: ignore[assignment]
    __hash__ = int.__hash__


class _Str(str):
    __eq__ = __contains__ = __lt__ = strip = lower = upper = startswith = _refuse  # type: ignore[assignment]
    __hash__ = str.__hash__


class _BrokenList(list):  # type: ignore[type-arg]
    __iter__ = __len__ = __getitem__ = _refuse  # type: ignore[assignment]


class _Map(Mapping[str, Any]):
    def __init__(self, data: dict[str, Any], broken: bool) -> None:
        self.data, self.broken = data, broken

    def __getitem__(self, key: str) -> Any:
        return _refuse() if self.broken else self.data[key]

    def __iter__(self) -> Iterator[str]:
        return _refuse() if self.broken else iter(self.data)

    def __len__(self) -> int:
        return _refuse() if self.broken else len(self.data)

    def __repr__(self) -> str:
        return f"_Map({self.data!r}, {self.broken})"


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
        "objects": {
            "int": _Int(61),
            "str": _Str("lead 42"),
            "list": _BrokenList([1, "a"]),
            "map": _Map({"a": 1, "b": [2.5]}, broken=False),
            "broken": _Map({"a": 1}, broken=True),
            "tuple": (1, "a", None),
            "opaque": object(),
        },
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
