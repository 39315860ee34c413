"""The README stays true: its Python example runs and gives the values it shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs_as_shown(capsys: Any) -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Embedding from Python\n\n```python\n(.*?)```", text, re.DOTALL)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    greeting = namespace["greeting"]
    assert greeting.render({"contact": {}, "vars": {"card": "4111111111111111"}}) == (
        "Hello caller, card ********1111"
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "14 50"
    stripped = [line.strip() for line in printed]
    assert "--> flows/billing.yaml:14:50 (step 'route', field 'property')" in stripped


def test_readme_lists_every_builtin_filter() -> None:
    from flowlang.expr.filters import BUILTIN_FILTERS

    text = README.read_text(encoding="utf-8")
    for name in BUILTIN_FILTERS:
        assert f"`{name}" in text, name
