"""e164 on hostile input: huge text is refused before it is parsed, other kinds give null, and a
str subclass is read as its plain text. The golden cases are in tests/golden/phone_numbers.yaml."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from support import run_python

import flowlang
from flowlang.expr.filters import MAX_PHONE_TEXT

EngineFactory = Callable[..., flowlang.Engine]


class LyingStr(str):
    def strip(self, chars: Any = None) -> str:
        raise AssertionError("an override ran")

    def __len__(self) -> int:
        raise AssertionError("an override ran")

    def __iter__(self) -> Any:
        raise AssertionError("an override ran")

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "value",
    [
        "+44" + "2" * 1_000_000,  # a megabyte of digits
        "+44 20 7946 0958" + " " * 1_000_000,
        "(" * 1_000_000,
        "+" + "0" * (MAX_PHONE_TEXT),
    ],
    ids=["digits", "trailing spaces", "parentheses", "just past the bound"],
)
def test_long_text_is_null_without_being_parsed(make_engine: EngineFactory, value: str) -> None:
    template = make_engine().compile('<<p | e164("GB")>>')
    template.render({"p": "+44 20 7946 0958"})  # phonenumbers imported and warm
    tracemalloc.start()
    try:
        result = template.render({"p": value})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result is None
    assert peak < 1024 * 1024  # nothing the size of the input is built


@pytest.mark.parametrize(
    "value",
    [Decimal("442079460958"), 2**70, -14155550100, 0, 1.5, date(2026, 12, 1), {"n": 1}, [1], ""],
    ids=["decimal", "huge int", "negative", "zero", "float", "date", "map", "list", "empty"],
)
def test_other_kinds_are_null(make_engine: EngineFactory, value: Any) -> None:
    assert make_engine().render("<<p | e164>>", {"p": value}) is None


@pytest.mark.parametrize(
    "region", ["G" * 1_000_000, ["GB"], {"r": "GB"}, 1.5, None, "", "+", "0044"]
)
def test_a_bad_region_is_null_for_national_numbers(make_engine: EngineFactory, region: Any) -> None:
    assert make_engine().render("<<p | e164(r)>>", {"p": "020 7946 0958", "r": region}) is None


def test_a_str_subclass_is_read_as_its_text(make_engine: EngineFactory) -> None:
    engine = make_engine()
    assert engine.render("<<p | e164>>", {"p": LyingStr("+44 20 7946 0958")}) == "+442079460958"
    assert engine.render("<<p | e164(r)>>", {"p": "020 7946 0958", "r": LyingStr("GB")}) == (
        "+442079460958"
    )


def test_importing_flowlang_does_not_import_phonenumbers() -> None:
    result = run_python(
        """
        import sys
        import flowlang
        flowlang.render("<<a>>", {"a": 1})
        print("phonenumbers" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
