"""api_request value formats: ``auto`` never changes a value's text; every bad ``number`` names
its key and its value (also beyond 64 bits), masked when it is a secret."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flowlang.automations.formats import ValueFormatError, auto_value, convert


@example("+442079460958")
@example("02134")
@example("0")
@example("-0")
@example("0.5")
@example("12.50")
@example("1.0")
@example("1e3")
@example("True")
@example(" 42")
@example("18446744073709551615")
@example("18446744073709551616")
@example("-9223372036854775809")
@example("100000000000000000000.0")
@given(
    st.text(max_size=30)
    | st.from_regex(r"[+-]?[0-9]{1,25}(\.[0-9]{1,20})?", fullmatch=True)
    | st.sampled_from(["true", "false", "null", "TRUE"])
)
def test_auto_never_changes_the_text_of_a_string(text: str) -> None:
    result = auto_value(text)
    assert result == text or orjson.dumps(result).decode() == text
    if type(result) is not str:
        assert orjson.dumps(result).decode() == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+442079460958", "+442079460958"),
        ("02134", "02134"),
        ("0", 0),
        ("-7", -7),
        ("4.5", 4.5),
        ("12.50", "12.50"),
        ("18446744073709551615", 2**64 - 1),
        ("18446744073709551616", "18446744073709551616"),  # beyond 64 bits: kept as text
        ("true", True),
        ("True", "True"),
        (Decimal("12.50"), 12.5),
        (Decimal("1E+2"), 100),
        (Decimal("0.1234567890123456789"), "0.1234567890123456789"),
        (date(2026, 12, 1), "2026-12-01"),
        (datetime(2026, 12, 1, 9, 30, tzinfo=UTC), "2026-12-01T09:30:00+00:00"),
        ([1, "02"], [1, "02"]),
        (None, None),
    ],
)
def test_auto_values(value: Any, expected: Any) -> None:
    result = convert("k", "auto", value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (2**64, "'18446744073709551616'"),
        (-(2**63) - 1, "'-9223372036854775809'"),
        ("123456789012345678901234567890", "'123456789012345678901234567890'"),
        (Decimal("1E+30"), "'1000000000000000000000000000000'"),
        (Decimal("1E+1000000000"), "'1E+1000000000'"),
        (10**5000, "'(an integer of 16610 bits, not shown)'"),
    ],
    ids=["2**64", "below int64", "long text", "decimal 1E+30", "decimal 1E+1e9", "10**5000"],
)
def test_a_number_beyond_64_bits_names_key_and_value(value: Any, shown: str) -> None:
    for fmt in ("number", "auto"):
        if fmt == "auto" and not isinstance(value, int):
            continue  # auto keeps such text as text, and such a decimal as its text
        with pytest.raises(ValueFormatError) as caught:
            convert("call.id", fmt, value)
        assert str(caught.value).startswith("value of 'call.id' ")
        assert str(caught.value).endswith(shown)
        assert "64 bits" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "value of 'k' is not a number: 'nan'"),
        (Decimal("sNaN"), "value of 'k' is not a number: 'NaN'"),
        (Decimal("-Infinity"), "value of 'k' is not a number: '-Infinity'"),
        (
            Decimal("0.1234567890123456789"),
            "value of 'k' has more digits than a JSON number carries exactly: "
            "'0.1234567890123456789'",
        ),
        (date(2026, 12, 1), "value of 'k' is not a number: '2026-12-01'"),
    ],
)
def test_every_bad_number_names_key_and_value(value: Any, message: str) -> None:
    with pytest.raises(ValueFormatError) as caught:
        convert("k", "number", value)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12.50"), 12.5),
        (Decimal("-3"), -3),
        (Decimal("0.1"), 0.1),
        ("2" * 19, 2 * 10**18 + int("2" * 18)),
    ],
)
def test_number_converts_decimals_exactly(value: Any, expected: Any) -> None:
    result = convert("k", "number", value)
    assert result == expected and type(result) is type(expected)


def test_a_huge_number_in_a_message_is_not_built() -> None:
    with pytest.raises(ValueFormatError, match="not shown"):
        convert("k", "number", 7**1_200_000)  # a million digits: its text is never built
