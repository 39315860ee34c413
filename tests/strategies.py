"""Hypothesis strategies: syntax trees, templates, JSON-shaped and hostile contexts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from flowlang.expr import ast
from flowlang.expr.filters import BUILTIN_FILTERS
from flowlang.expr.syntax import KEYWORDS

NAME_START = "abcxyzABC_"
NAME_REST = NAME_START + "0123456789-"

plain_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_START),
    st.text(NAME_REST, max_size=6),
).filter(lambda name: name not in KEYWORDS)
member_names = plain_names | st.sampled_from(sorted(KEYWORDS))
strings = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
literal_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
literals = st.builds(ast.Literal, literal_values)
roots = st.builds(ast.Root, plain_names)


def _segments(children: st.SearchStrategy[Any], min_size: int) -> st.SearchStrategy[Any]:
    segment = st.one_of(st.builds(ast.Member, member_names), st.builds(ast.Index, children))
    return st.lists(segment, min_size=min_size, max_size=3).map(tuple)


def _paths(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    from_root = st.builds(ast.Path, roots, _segments(children, 0))
    # A path's base is never itself a path: the parser merges `(a.b).c` into `a.b.c`.
    other_base = children.filter(lambda node: not isinstance(node, ast.Path))
    from_value = st.builds(ast.Path, other_base, _segments(children, 1))
    return from_root | from_value


def _extend(
    children: st.SearchStrategy[Any], filter_call: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    operands = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(ast.ListLiteral, st.lists(children, max_size=3).map(tuple)),
        _paths(children),
        st.builds(ast.Not, children),
        st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), operands),
        st.builds(ast.Compare, st.sampled_from(ast.COMPARISON_OPERATORS), children, children),
        st.builds(ast.Coalesce, operands),
        st.builds(
            ast.Pipe, children, st.lists(filter_call(children), min_size=1, max_size=2).map(tuple)
        ),
    )


def _any_filter(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(ast.FilterCall, plain_names, st.lists(children, max_size=2).map(tuple))


def _builtin_filter(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    calls = [
        st.builds(
            ast.FilterCall,
            st.just(spec.name),
            st.lists(children, min_size=spec.min_args, max_size=spec.max_args).map(tuple),
        )
        for spec in BUILTIN_FILTERS.values()
    ]
    return st.one_of(calls)


def _leaves(root_names: st.SearchStrategy[str] | None) -> st.SearchStrategy[Any]:
    if root_names is None:
        return literals | st.builds(ast.Path, roots, st.just(()))
    return literals | st.builds(ast.Path, st.builds(ast.Root, root_names), st.just(()))


def expressions(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any syntax tree the parser can produce (filters by any name)."""
    return st.recursive(_leaves(None), lambda c: _extend(c, _any_filter), max_leaves=max_leaves)


CONTEXT_KEYS = ["a", "b", "c", "0", "1", "x"]
context_roots = st.sampled_from(["a", "b", "c", "missing"])
_keys = st.sampled_from(CONTEXT_KEYS)
_small_literals = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.0, 2.0]),
    st.sampled_from(["a", "b", "0", "1", "", "A b", "x", " 2 ", "true"]),
    st.sampled_from(["12.50", "2026-12-01", "2026-12-01T09:30:00", "09:30:00", "1E+2"]),
)


def evaluable_expressions(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Trees whose paths mostly hit the generated contexts and whose filters are built in."""
    leaves = st.builds(ast.Literal, _small_literals) | st.builds(
        ast.Path, st.builds(ast.Root, context_roots), st.just(())
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        segment = st.one_of(
            st.builds(ast.Member, st.sampled_from(["a", "b", "c", "x"])),
            st.builds(ast.Index, st.builds(ast.Literal, st.one_of(_keys, st.integers(-3, 3)))),
            st.builds(ast.Index, children),
        )
        path = st.builds(
            ast.Path, st.builds(ast.Root, context_roots), st.lists(segment, max_size=3).map(tuple)
        )
        return path | _extend(children, _builtin_filter)

    return st.recursive(leaves, extend, max_leaves=max_leaves)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["a", "b", "0", "1", "", "true", "12.5"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_keys | st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
contexts = st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3)


# --- decimals and dates: values an application reads from a database ---------------------------

decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(places=2, min_value=-1000, max_value=1000),
    st.sampled_from(["12.50", "1E+2", "-0", "0.000", "1E-7", "1E+5000", "sNaN", "-Infinity"]).map(
        Decimal
    ),
)
_zones = st.sampled_from([None, UTC, timezone(timedelta(hours=-5)), ZoneInfo("Europe/Rome")])
dates = st.one_of(
    st.dates(),
    st.datetimes(timezones=_zones),
    st.times(timezones=st.sampled_from([None, UTC])),
    st.sampled_from([date(2026, 12, 1), datetime(2026, 12, 1, 9, 30), time(9, 30)]),
)
rich_scalars = st.one_of(json_scalars, decimals, dates)
rich_values = st.recursive(
    rich_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=12,
)
#: Contexts of JSON values, decimals and dates (Python's date, datetime and time).
rich_contexts = st.dictionaries(st.sampled_from(["a", "b", "c"]), rich_values, max_size=3)


# --- hostile values: what only an embedding application can put in a context ------------------


class HostileError(Exception):
    """Raised by every overridden method of the hostile classes below."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise HostileError("refused")


def _pretty(self: Any, printer: Any, cycle: bool) -> None:
    """Hypothesis prints a failing example with this (its own list and dict printers would
    iterate and call the overrides, and a crash there hides the real failure): the class name
    and the plain repr, which runs none of the overrides."""
    text = repr(self)
    name = type(self).__name__
    printer.text(text if text.startswith(name) else f"{name}({text})")


class RaisingInt(int):
    """An int whose comparison and conversion overrides raise (the base type's never run)."""

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __str__ = _refuse  # type: ignore[assignment]
    __hash__ = int.__hash__
    _repr_pretty_ = _pretty


class RaisingFloat(float):
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __str__ = _refuse  # type: ignore[assignment]
    __hash__ = float.__hash__
    _repr_pretty_ = _pretty


class RaisingStr(str):
    """A str whose overrides raise; as a dict key its ``__eq__`` raises on a hash match."""

    __eq__ = __ne__ = __lt__ = __contains__ = _refuse  # type: ignore[assignment]
    strip = lower = upper = startswith = endswith = _refuse  # type: ignore[assignment]
    __hash__ = str.__hash__
    _repr_pretty_ = _pretty


class BrokenList(list):  # type: ignore[type-arg]
    """A list whose own iteration, length and items raise (its repr still works)."""

    __iter__ = __len__ = __getitem__ = __contains__ = __reversed__ = _refuse  # type: ignore[assignment]
    _repr_pretty_ = _pretty


class BrokenMap(Mapping[Any, Any]):
    def __init__(self, data: dict[Any, Any]) -> None:
        self.data = data

    __getitem__ = __iter__ = __len__ = __contains__ = items = keys = values = _refuse  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BrokenMap({self.data!r})"

    _repr_pretty_ = _pretty


class FineMap(Mapping[Any, Any]):
    """A well-behaved custom Mapping (read through its methods)."""

    def __init__(self, data: dict[Any, Any]) -> None:
        self.data = data

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"FineMap({self.data!r})"

    _repr_pretty_ = _pretty


class RaisingDecimal(Decimal):
    """A Decimal whose text, comparison and conversion overrides raise."""

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __str__ = _refuse  # type: ignore[assignment]
    __format__ = __float__ = __int__ = is_zero = is_nan = adjusted = as_tuple = _refuse  # type: ignore[assignment]
    __hash__ = Decimal.__hash__
    _repr_pretty_ = _pretty


class RaisingDatetime(datetime):
    """A datetime whose text, comparison and field overrides raise."""

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __str__ = __format__ = _refuse  # type: ignore[assignment]
    isoformat = utcoffset = replace = strftime = timetuple = toordinal = _refuse  # type: ignore[assignment]
    year = month = day = hour = tzinfo = property(_refuse)  # type: ignore[assignment]
    __hash__ = object.__hash__  # datetime's own hash calls the (raising) utcoffset
    _repr_pretty_ = _pretty


class RaisingDate(date):
    __eq__ = __lt__ = __str__ = __format__ = isoformat = _refuse  # type: ignore[assignment]
    year = month = day = property(_refuse)  # type: ignore[assignment]
    __hash__ = object.__hash__
    _repr_pretty_ = _pretty


class RaisingZone(tzinfo):
    """A time zone whose own code raises: the datetime behaves as opaque where it is read."""

    utcoffset = dst = tzname = _refuse  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "RaisingZone()"


class Opaque:
    __eq__ = __bool__ = __str__ = __len__ = __iter__ = _refuse  # type: ignore[assignment]
    __hash__ = object.__hash__
    _repr_pretty_ = _pretty


def _hostile_dicts(
    keys: st.SearchStrategy[Any], values: st.SearchStrategy[Any], max_size: int
) -> st.SearchStrategy[dict[Any, Any]]:
    """Dicts whose keys may be RaisingStr: keys are told apart by their plain text (building
    the dict then compares no two keys, whose hashes differ)."""
    return st.lists(
        st.tuples(keys, values), max_size=max_size, unique_by=lambda pair: str.__str__(pair[0])
    ).map(dict)


hostile_scalars = st.one_of(
    json_scalars,
    st.integers(-3, 3).map(RaisingInt),
    st.sampled_from([0.5, -1.0, float("nan")]).map(RaisingFloat),
    st.sampled_from(["a", "b", "0", "1", "", " 2 ", "true"]).map(RaisingStr),
    st.builds(Opaque),
    decimals,
    dates,
    st.sampled_from(["12.50", "0", "NaN", "1E+2"]).map(RaisingDecimal),
    st.sampled_from([(2026, 12, 1), (2026, 12, 1, 9, 30), (2026, 1, 2, 3, 4, 5, 6)]).map(
        lambda fields: RaisingDatetime(*fields)
    ),
    st.builds(RaisingDate, st.just(2026), st.just(12), st.just(1)),
    # built, not st.just: hypothesis hashes a constant, and an aware datetime's hash asks its zone
    st.builds(lambda: datetime(2026, 12, 1, 9, 30, tzinfo=RaisingZone())),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.lists(children, max_size=3).map(BrokenList)
        | _hostile_dicts(_keys | _keys.map(RaisingStr), children, max_size=4)
        | st.dictionaries(_keys, children, max_size=3).map(FineMap)
        | st.dictionaries(_keys, children, max_size=3).map(BrokenMap)
    ),
    max_leaves=16,
)
hostile_contexts = _hostile_dicts(
    st.sampled_from(["a", "b", "c"]) | st.sampled_from(["a", "b"]).map(RaisingStr),
    hostile_values,
    max_size=3,
)
