"""Shared by the atheris harnesses: input decoding, the totality contract and the seed corpus.

The contract every harness checks: only the project's documented errors (FlowError and its
subclasses) may escape; anything else is a finding and atheris stops with the input that did it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
SEPARATOR = "\x00"


def text_of(data: bytes) -> str:
    """Fuzz bytes as text: invalid UTF-8 becomes lone surrogates, as hostile text would carry."""
    return data.decode("utf-8", errors="surrogateescape")


def fingerprint(value: Any) -> str:
    """A comparable text of a rendered value (repr, or JSON where repr cannot cope)."""
    from flowlang.expr.values import to_json

    if isinstance(value, float) and math.isnan(value):
        return "nan"
    try:
        return repr(value)
    except (ValueError, RecursionError):  # digits past int's str limit, very deep data
        return "json:" + to_json(value)


def golden_templates() -> list[str]:
    """Every template of tests/golden (the executable specification) and its context."""
    import yaml

    templates: list[str] = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in (document or {}).get("cases", []) if isinstance(document, dict) else []:
            if isinstance(case, dict) and isinstance(case.get("template"), str):
                templates.append(case["template"])
    return templates


def golden_context() -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((GOLDEN / "context.yaml").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def documents() -> list[Path]:
    """Flow and workflow documents of the examples and test cases (seeds for the loader)."""
    found: list[Path] = []
    for folder in ("examples/flows", "examples/workflows", "tests/flow_cases"):
        found += sorted((ROOT / folder).glob("**/*.yaml"))
    return [path for path in found if path.stat().st_size < 64_000]


def seed(out: Path) -> None:
    """Write the seed corpus of each harness into ``out``/<harness>/ (small: a few hundred files)."""
    contexts = [
        '{"x": [1, 2.5, "a"]}',
        '{"x": {"k": null}}',
        '{"x": NaN}',
        "[[[[[]]]]]",
        '"\\ud800"',
    ]
    (out / "parser").mkdir(parents=True, exist_ok=True)
    (out / "evaluator").mkdir(parents=True, exist_ok=True)
    (out / "documents").mkdir(parents=True, exist_ok=True)
    for number, template in enumerate(golden_templates()):
        raw = template.encode("utf-8", errors="surrogateescape")
        (out / "parser" / f"golden-{number:04}").write_bytes(raw)
        extra = contexts[number % len(contexts)].encode()
        (out / "evaluator" / f"golden-{number:04}").write_bytes(raw + SEPARATOR.encode() + extra)
    for number, path in enumerate(documents()):
        (out / "documents" / f"doc-{number:04}-{path.stem}").write_bytes(path.read_bytes())


if __name__ == "__main__":
    seed(Path(sys.argv[1]))
