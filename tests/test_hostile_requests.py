"""Hostile request bodies: values only an embedding application can build (custom Mappings that
change their parents, list subclasses, shared sublists). Encoding never crashes the process,
never builds text past the limit, and ends in bytes or a RequestError."""

from __future__ import annotations

import math
import textwrap
import tracemalloc
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from strategies import (
    BrokenList,
    BrokenMap,
    FineMap,
    HostileError,
    Opaque,
    RaisingFloat,
    RaisingInt,
    RaisingStr,
    hostile_values,
    json_values,
)
from support import run_python

from flowlang.http_rules import RequestError, _plain_body, encode_body

LIMIT = 64 * 1024


_CLEARS_PARENT_LIST = """
    shared = [[n] for n in range(50)]
    class M(Mapping):
        def __iter__(self): shared.clear(); return iter(["k"])
        def __getitem__(self, k): return 1
        def __len__(self): return 1
    shared.append(M()); shared.extend([n] * 3 for n in range(500))
    body, head = {"items": shared}, 10
"""
_CLEARS_PARENT_DICT = """
    parent = {str(n): [n] for n in range(50)}
    class M(Mapping):
        def __iter__(self): parent.clear(); return iter(["k"])
        def __getitem__(self, k): return 1
        def __len__(self): return 1
    parent["m"] = M()
    parent.update({f"z{n}": [n] * 3 for n in range(500)})
    body, head = parent, 1
"""


@pytest.mark.parametrize(
    ("setup", "start"),
    [(_CLEARS_PARENT_LIST, '{"items":'), (_CLEARS_PARENT_DICT, "{")],
    ids=["clears_its_parent_list", "clears_a_dict_it_is_in"],
)
def test_a_mapping_that_changes_its_parent_does_not_crash_the_process(
    setup: str, start: str
) -> None:
    result = run_python(
        "from collections.abc import Mapping\n"
        + textwrap.dedent(setup)
        + textwrap.dedent(
            """
            from flowlang.http_rules import RequestError, encode_body
            try:
                print(encode_body(body, 10**7)[:head].decode())
            except RequestError as error:
                print("refused", error)
            """
        ),
        timeout=60,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith((start, "refused"))


def test_shared_sublists_are_refused_before_their_text_is_built() -> None:
    row = ["x" * 100] * 100  # about 10 KB of text, a few hundred bytes in memory
    body = {"rows": [row] * 2000}  # about 20 MB of text
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="more than the limit of 65536"):
            encode_body(body, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak


def test_a_body_just_under_the_limit_is_sent_and_just_over_is_refused() -> None:
    text = "x" * (LIMIT - 8)
    assert len(encode_body({"a": text}, LIMIT)) == LIMIT - 8 + 8  # {"a":"..."}
    with pytest.raises(RequestError, match="limit"):
        encode_body({"ab": text}, LIMIT)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"a": BrokenList([1, 2])}, {"a": [1, 2]}),  # the base type's items: no override runs
        ({"a": (RaisingInt(3), RaisingFloat(0.5))}, {"a": [3, 0.5]}),
        ({RaisingStr("k"): RaisingStr("v")}, {"k": "v"}),
        ({"a": FineMap({"b": [True, None]})}, {"a": {"b": [True, None]}}),
        ({1: "one", None: 2}, {"1": "one", "null": 2}),
        ([-(2**63), 2**64 - 1], [-(2**63), 2**64 - 1]),
    ],
)
def test_hostile_values_are_sent_as_their_plain_json(body: Any, sent: Any) -> None:
    assert orjson.loads(encode_body(body, LIMIT)) == sent


class LoudDecimal(Decimal):
    def __str__(self) -> str:
        raise HostileError("ran")


class LoudDate(datetime):
    def isoformat(self, *args: Any, **kwargs: Any) -> str:
        raise HostileError("ran")


def test_decimals_and_dates_are_sent_as_numbers_and_iso_text() -> None:
    """Issue 9: a context's Decimal is a JSON number with exactly its digits and a date is its
    ISO 8601 text (grammar/SPEC.md), as they render; overrides of subclasses never run."""
    body = {
        "balance": Decimal("12.50"),
        "big": Decimal("1E+2"),
        "tiny": LoudDecimal("0.0000001"),
        "due": date(2026, 12, 1),
        "at": LoudDate(2026, 12, 1, 9, 30, tzinfo=UTC),
        "opens": time(9, 30, 15, 250),
    }
    data = encode_body(body, LIMIT)
    assert data == (
        b'{"balance":12.50,"big":100,"tiny":0.0000001,"due":"2026-12-01",'
        b'"at":"2026-12-01T09:30:00+00:00","opens":"09:30:15.000250"}'
    )
    assert orjson.loads(data)["balance"] == 12.5
    # As keys they are their text, as the json filter writes them (found by review).
    keys = {Decimal("1.50"): 1, date(2026, 12, 1): 2, LoudDecimal("2"): 3}
    assert encode_body(keys, LIMIT) == b'{"1.50":1,"2026-12-01":2,"2":3}'


def _self_containing() -> list[Any]:
    looped: list[Any] = [1]
    looped.append(looped)
    return looped


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"a": BrokenMap({"b": 1})}, "reading a BrokenMap raised HostileError"),
        ({"a": Opaque()}, "a value of type Opaque is not JSON"),
        ({"a": [RaisingFloat(float("nan"))]}, "nan is not a JSON number"),
        ({"a": {"b": -math.inf}}, "-inf is not a JSON number"),
        ({"a": 2**64}, "beyond 64 bits"),
        ({"a": RaisingInt(-(2**63) - 1)}, "beyond 64 bits"),
        ({(1, 2): "tuple key"}, "a key of type tuple is not JSON"),
        (_self_containing(), "contains itself"),
        ({"a": Decimal("NaN")}, "is not a JSON number"),
        ({"a": [Decimal("-Infinity")]}, "is not a JSON number"),
        ({"a": Decimal("1E+100000")}, "exponent beyond 1000"),
    ],
)
def test_what_json_cannot_carry_exactly_is_a_request_error(body: Any, problem: str) -> None:
    with pytest.raises(RequestError, match="the body cannot be sent") as caught:
        encode_body(body, LIMIT)
    assert problem in str(caught.value)


def test_deep_bodies_are_a_request_error_not_a_recursion_error() -> None:
    body: Any = 1
    for _ in range(100_000):
        body = [body]
    with pytest.raises(RequestError):
        encode_body(body, 10**7)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values.map(lambda value: [value, value]))
def test_the_fast_path_and_the_plain_copy_agree(value: Any, shared: Any) -> None:
    """Exact JSON bodies go through orjson directly; the same rules on the plain copy agree."""
    for body in (value, shared):
        try:
            fast = encode_body(body, LIMIT)
        except RequestError:
            with pytest.raises(RequestError):
                orjson.dumps(_plain_body(body, LIMIT), option=orjson.OPT_NON_STR_KEYS)
        else:
            assert fast == orjson.dumps(_plain_body(body, LIMIT), option=orjson.OPT_NON_STR_KEYS)


@settings(max_examples=300, deadline=None)
@given(hostile_values)
def test_hostile_bodies_end_in_bytes_or_a_request_error(value: Any) -> None:
    try:
        data = encode_body({"v": value}, LIMIT)
    except RequestError:
        return
    assert len(data) <= LIMIT
    orjson.loads(data)


def test_a_raising_custom_mapping_key_is_refused_not_raised() -> None:
    class Keys(Mapping[Any, Any]):
        def __getitem__(self, key: Any) -> Any:
            raise KeyError(key)

        def __iter__(self) -> Any:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    with pytest.raises(RequestError, match="reading a Keys raised KeyError"):
        encode_body({"m": Keys()}, LIMIT)
