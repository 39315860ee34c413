"""The golden cases in tests/golden/*.yaml: the executable specification, on both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import load_yaml, same

import flowlang

GOLDEN = Path(__file__).parent / "golden"
DEFAULT_CONTEXT = load_yaml(GOLDEN / "context.yaml")


def _cases() -> list[Any]:
    params = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        if path.name == "context.yaml":
            continue
        document = load_yaml(path)
        options = document.get("options", {})
        for case in document["cases"]:
            params.append(pytest.param(case, options, id=f"{path.stem}: {case['name']}"))
    return params


@pytest.mark.parametrize(("case", "options"), _cases())
def test_golden(
    case: dict[str, Any], options: dict[str, Any], make_engine: Callable[..., flowlang.Engine]
) -> None:
    engine = make_engine(**options)
    context = case.get("context", DEFAULT_CONTEXT)
    error = case.get("error")
    if error is None:
        assert "expect" in case, "a golden case needs `expect` or `error`"
        result = engine.render(case["template"], context)
        assert same(result, case["expect"]), f"got {result!r}, expected {case['expect']!r}"
        return
    expected_type = getattr(flowlang, error.get("type", "FlowSyntaxError"))
    with pytest.raises(flowlang.FlowError) as caught:
        engine.render(case["template"], context)
    raised = caught.value
    assert type(raised) is expected_type, f"raised {type(raised).__name__}: {raised}"
    if isinstance(raised, flowlang.FlowSyntaxError):
        assert raised.message == error["message"]
        assert (raised.line, raised.column) == (error["line"], error["column"])
        assert "^" in str(raised) and error["message"] in str(raised)
    else:
        assert str(raised) == error["message"]
    for attribute in ("resolved", "segment"):
        if attribute in error:
            assert getattr(raised, attribute) == error[attribute]
