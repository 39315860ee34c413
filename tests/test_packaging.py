"""The grammar ships inside the installed package, and is the one in grammar/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flowlang.expr.parser import load_grammar_text

REPO = Path(__file__).parent.parent


def test_grammar_is_a_package_resource() -> None:
    package = resources.files("flowlang.grammar")
    assert package.joinpath("flowlang.lark").is_file()
    assert package.joinpath("SPEC.md").is_file()


def test_the_parser_loads_the_repository_grammar() -> None:
    assert load_grammar_text() == (REPO / "grammar" / "flowlang.lark").read_text(encoding="utf-8")
