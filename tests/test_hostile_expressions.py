"""Hostile input, expression layer: both backends, no crash, no disagreement, bounded memory.

Objects whose own code changes the data being read, raises, or lies about itself can only come
from an embedding application, but a crash of the compiled evaluator takes every call down:
those cases run in a subprocess, so that a segfault fails the test instead of killing pytest.
The rules they check are in flowlang/expr/values.py ("Hostile values"). Existing cases of this
layer live in tests/test_limits.py and tests/test_properties.py; nothing here repeats them.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from support import run_python

import flowlang
from flowlang import FlowError, FlowFilterError, FlowLimitError, FlowSyntaxError, Limits
from flowlang.expr.backends import AVAILABLE
from flowlang.expr.parser import parse_template
from flowlang.expr.printer import print_template
from flowlang.expr.syntax import SYNTAXES
from flowlang.expr.values import int_text

EngineFactory = Callable[..., flowlang.Engine]
LIMIT_MESSAGE = "rendered text is longer than the limit of 100000 characters"

# --- helpers ------------------------------------------------------------------------------------

# Runs in a fresh interpreter: defines the hostile classes, then the test's own code, which
# prints one JSON line. Every backend this process has is tried.
_PRELUDE = textwrap.dedent(
    """
    import json, math, sys
    from collections.abc import Mapping
    import flowlang
    from flowlang.expr.backends import AVAILABLE

    class Shrinker(Mapping):
        '''A map whose own methods empty (or shrink) the list or dict it sits in.'''
        def __init__(self, victim, keep=0):
            self.victim, self.keep = victim, keep
        def _strike(self):
            if isinstance(self.victim, list):
                del self.victim[self.keep:]
            else:
                self.victim.clear()
        def __len__(self):
            self._strike()
            return 7
        def __iter__(self):
            self._strike()
            return iter(["k"])
        def __getitem__(self, key):
            self._strike()
            return 1
        def items(self):
            self._strike()
            return [("k", 1)]
        def values(self):
            self._strike()
            return [1]

    def render_all(template, make_context):
        out = {}
        for backend in AVAILABLE:
            engine = flowlang.Engine(backend=backend)
            try:
                value = engine.render(template, make_context())
                out[backend] = ["ok", repr(value)]
            except flowlang.FlowError as error:
                out[backend] = [type(error).__name__, str(error)]
        return out
    """
)


def _run_isolated(body: str) -> Any:
    """Run ``body`` after the prelude in a subprocess; its last stdout line, parsed as JSON."""
    result = run_python(_PRELUDE + textwrap.dedent(body))
    assert result.returncode == 0, (
        f"subprocess died with {result.returncode} (negative: a signal, -11 is a segfault)\n"
        f"{result.stderr[-2000:]}"
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _agreed(results: dict[str, list[str]]) -> list[str]:
    """The one result every backend gave (they must agree)."""
    assert set(results) == set(AVAILABLE)
    values = list(results.values())
    assert all(value == values[0] for value in values), results
    return values[0]


def _on_every_backend(template: str, context: Mapping[str, Any], **options: Any) -> Any:
    """Render on every available backend; the agreed value, or the agreed error (kind, text)."""
    outcomes = []
    for backend in AVAILABLE:
        engine = flowlang.Engine(backend=backend, **options)
        try:
            outcomes.append(("ok", engine.render(template, context)))
        except FlowError as error:
            outcomes.append((type(error).__name__, str(error)))
    first = outcomes[0]
    for other in outcomes[1:]:
        assert repr(other) == repr(first), (template, outcomes)
    return first


class _Memory:
    """Peak traced memory since the last ``reset`` above what was traced at that reset."""

    def __init__(self) -> None:
        self.base = 0

    def reset(self) -> None:
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]

    def peak(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.base


@pytest.fixture
def memory() -> Iterator[_Memory]:
    """tracemalloc on while the test runs (call ``reset`` once the inputs are built)."""
    tracemalloc.start()
    meter = _Memory()
    meter.reset()
    try:
        yield meter
    finally:
        tracemalloc.stop()


# --- item 21: a list or dict changed under the compiled evaluator ---------------------------------


def test_contains_survives_a_list_emptied_by_a_comparison() -> None:
    # The first element's comparison (a map against a map reads its length) empties the list:
    # the compiled loop used the size read before the loop and read past the end (segfault).
    results = _run_isolated(
        """
        def context():
            items = []
            items.append(Shrinker(items))
            items.extend({"n": n} for n in range(200))
            return {"items": items, "item": {"n": 5}}
        print(json.dumps({
            "in": render_all("<<item in items>>", context),
            "contains": render_all("<<items contains item>>", context),
            "not in": render_all("<<item not in items>>", context),
        }))
        """
    )
    assert _agreed(results["in"]) == ["ok", "False"]
    assert _agreed(results["contains"]) == ["ok", "False"]
    assert _agreed(results["not in"]) == ["ok", "True"]


def test_contains_survives_a_list_shrunk_to_a_prefix() -> None:
    # Shrinking to 3 items (not emptying): the loop must stop at the new end, and agree.
    results = _run_isolated(
        """
        def context():
            items = [{"n": 0}, {"n": 1}]
            items.append(Shrinker(items, keep=3))
            items.extend({"n": n} for n in range(3, 300))
            return {"items": items, "item": {"n": 250}}
        print(json.dumps(render_all("<<item in items>>", context)))
        """
    )
    assert _agreed(results) == ["ok", "False"]


def test_body_scan_survives_containers_changed_while_scanned() -> None:
    # The request-body scan (first_non_finite): a map inside a list empties that list, and a map
    # inside a dict empties that dict, while the compiled scan walks them.
    results = _run_isolated(
        """
        from flowlang.expr.values import first_non_finite as python_scan
        scans = {"python": python_scan}
        if "cython" in AVAILABLE:
            from flowlang._expr import first_non_finite as compiled_scan
            scans["cython"] = compiled_scan

        def in_list():
            outer = [[1.5]]
            outer.append(Shrinker(outer))
            outer.extend([[n, 2.5]] for n in range(300))
            outer.append(float("nan"))
            return {"body": outer}

        def in_dict():
            outer = {"a": [1.0]}
            outer["m"] = Shrinker(outer)
            outer.update({f"k{n}": [n, {"x": 1.0}] for n in range(300)})
            outer["last"] = float("-inf")
            return [outer]

        out = {}
        for name, make in (("list", in_list), ("dict", in_dict)):
            out[name] = {backend: repr(scan(make())) for backend, scan in scans.items()}
        print(json.dumps(out))
        """
    )
    for case, expected in (("list", "nan"), ("dict", "-inf")):
        found = set(results[case].values())
        assert found == {expected}, (case, results[case])


def test_json_of_a_map_that_empties_its_parent_does_not_crash() -> None:
    # orjson walks dicts and lists through borrowed references; a custom Mapping read from its
    # ``default`` hook that empties the parent crashed the process.
    results = _run_isolated(
        """
        def in_dict():
            parent = {f"a{n}": [n] * 3 for n in range(50)}
            parent["m"] = Shrinker(parent)
            parent.update({f"z{n}": [n] * 3 for n in range(50)})
            return {"d": parent}

        def in_list():
            parent = [[n] for n in range(50)]
            parent.append(Shrinker(parent))
            parent.extend([n] * 3 for n in range(500))
            return {"d": parent}

        out = {}
        for name, make in (("dict", in_dict), ("list", in_list)):
            out[name] = {
                "json": render_all("<<d | json>>", make),
                "text": render_all("[<<d>>]", make),
                "join": render_all("<<d | join>>", make),
            }
        print(json.dumps(out))
        """
    )
    for case in ("dict", "list"):
        for form, outcome in results[case].items():
            kind, text = _agreed(outcome)
            assert kind == "ok", (case, form, text)
    # Whatever the map's code did to the data, the text written is JSON.
    for case in ("dict", "list"):
        json.loads(ast.literal_eval(_agreed(results[case]["json"])[1]))


def test_dict_key_whose_eq_raises_is_a_missing_key_on_both_backends() -> None:
    # A stored key with the hash of "name" (or of the root "contact") whose __eq__ raises: the
    # compiled lookup swallowed the error (null), the Python twin raised it. Now: missing.
    class Evil:
        armed = False

        def __init__(self, twin: str) -> None:
            self.twin = twin

        def __hash__(self) -> int:
            return hash(self.twin)

        def __eq__(self, other: object) -> bool:
            if Evil.armed:
                raise ValueError("boom")
            return False

    contact: dict[Any, Any] = {Evil("name"): 1, "name": "Ann", Evil("7"): 2, "7": "seven"}
    context: dict[Any, Any] = {Evil("contact"): 0, "contact": contact, "k": "name"}
    Evil.armed = True
    try:
        assert _on_every_backend("<<contact.name>>", context) == ("ok", None)
        assert _on_every_backend("<<contact.name ?? 'none'>>", context) == ("ok", "none")
        assert _on_every_backend("<<contact[k]>>", context) == ("ok", None)
        assert _on_every_backend("<<contact[7]>>", context) == ("ok", None)
        assert _on_every_backend("<<'name' in contact>>", context) == ("ok", False)
        assert _on_every_backend("<<contact == contact>>", context) == ("ok", True)
        kind, message = _on_every_backend("<<contact.name>>", context, strict=True)
        assert kind == "FlowUndefinedError" and "name" in message
        assert _on_every_backend("<<k>>", context) == ("ok", "name")
    finally:
        Evil.armed = False


# --- subclasses and custom containers: overrides never run, errors are contained ---------------


class _BoomError(Exception):
    pass


class _LyingInt(int):
    def __eq__(self, other: object) -> bool:
        raise _BoomError("__eq__")

    def __lt__(self, other: object) -> bool:
        raise _BoomError("__lt__")

    def __gt__(self, other: object) -> bool:
        raise _BoomError("__gt__")

    __hash__ = int.__hash__


class _LyingStr(str):
    def __contains__(self, other: object) -> bool:
        raise _BoomError("__contains__")

    def __eq__(self, other: object) -> bool:
        raise _BoomError("__eq__")

    def strip(self, chars: Any = None) -> str:
        raise _BoomError("strip")

    def __lt__(self, other: object) -> bool:
        raise _BoomError("__lt__")

    def __len__(self) -> int:
        raise _BoomError("__len__")

    def __getitem__(self, index: Any) -> str:
        raise _BoomError("__getitem__")

    def lower(self) -> str:
        raise _BoomError("lower")

    __hash__ = str.__hash__


class _BrokenList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        raise _BoomError("__iter__")

    def __len__(self) -> int:
        raise _BoomError("__len__")


class _BrokenMap(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise _BoomError("__getitem__")

    def __iter__(self) -> Iterator[str]:
        raise _BoomError("__iter__")

    def __len__(self) -> int:
        raise _BoomError("__len__")


def test_number_and_string_subclasses_are_read_as_their_base_type() -> None:
    context = {
        "n": _LyingInt(61),
        "s": _LyingStr("lead 42"),
        "t": _LyingStr(" 42 "),
        "p": _LyingStr("+1 (415) 555-0100"),
    }
    assert _on_every_backend("<<n == 61>>", context) == ("ok", True)
    assert _on_every_backend("<<n > 60 and n < 62>>", context) == ("ok", True)
    assert _on_every_backend("<<n in [1, 61]>>", context) == ("ok", True)
    assert _on_every_backend("<<s contains 'ad 4'>>", context) == ("ok", True)
    assert _on_every_backend("<<s == 'lead 42'>>", context) == ("ok", True)
    assert _on_every_backend("<<s < 'm'>>", context) == ("ok", True)
    assert _on_every_backend("<<t == 42>>", context) == ("ok", True)  # number text, no .strip()
    assert _on_every_backend("<<s starts_with 'lead'>>", context) == ("ok", True)
    assert _on_every_backend("<<not s>>", context) == ("ok", False)
    assert _on_every_backend("<<s | length>>", context) == ("ok", 7)
    assert _on_every_backend("<<s | first>><<s | last>>", context) == ("ok", "l2")
    assert _on_every_backend("<<s | upper>>", context) == ("ok", "LEAD 42")
    assert _on_every_backend("<<n | boolean>>", context) == ("ok", True)
    assert _on_every_backend("<<s | boolean>>", context) == ("ok", False)
    assert _on_every_backend("<<p | e164>>", context) == ("ok", "+14155550100")
    assert _on_every_backend("<<n | number>>", context) == ("ok", 61)


def test_containers_whose_code_raises_behave_as_opaque() -> None:
    context = {"l": _BrokenList([1, 2]), "m": _BrokenMap()}
    assert _on_every_backend("<<l contains 1>>", context) == ("ok", False)
    assert _on_every_backend("<<1 in m>>", context) == ("ok", False)
    assert _on_every_backend("<<l[0]>>", context) == ("ok", None)
    assert _on_every_backend("<<m.k>>", context) == ("ok", None)
    assert _on_every_backend("<<not l>>", context) == ("ok", False)  # true, like opaque values
    assert _on_every_backend("<<l == l>>", context) == ("ok", True)  # equal only to itself
    assert _on_every_backend("<<m == l>>", context) == ("ok", False)
    assert _on_every_backend("[<<l>>|<<m>>]", context) == ("ok", "[null|null]")
    assert _on_every_backend("<<[m, 1] | json>>", context) == ("ok", "[null,1]")


@pytest.mark.parametrize("filter_name", ["join", "length", "first", "default('x')", "urlencode"])
def test_a_builtin_filter_on_a_broken_container_is_a_filter_error(filter_name: str) -> None:
    template = f"<<l | {filter_name}>>" if filter_name != "urlencode" else "<<m | urlencode>>"
    kind, message = _on_every_backend(template, {"l": _BrokenList([1]), "m": _BrokenMap()})
    name = filter_name.split("(")[0]
    assert kind == "FlowFilterError"
    assert message.startswith(f"filter {name!r} raised _BoomError")


def test_an_exception_whose_str_raises_is_still_reported() -> None:
    class SilentError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def explode(value: Any) -> Any:
        raise SilentError

    for backend in AVAILABLE:
        engine = flowlang.Engine(backend=backend, filters={"explode": explode})
        with pytest.raises(FlowFilterError, match="'explode' raised SilentError"):
            engine.render("<<1 | explode>>", {})


# --- item 17 (expressions): output limits checked while building, not after ----------------------


def test_join_with_a_huge_separator_stops_before_allocating(
    make_engine: EngineFactory, memory: _Memory
) -> None:
    context = {"items": list(range(1000)), "sep": "s" * 50_000}
    memory.reset()
    with pytest.raises(FlowLimitError, match=LIMIT_MESSAGE):
        make_engine().render("<<items | join(sep)>>", context)
    assert memory.peak() < 2_000_000  # the joined text would be 50 MB


def test_text_of_a_shared_list_is_refused_before_it_is_written(
    make_engine: EngineFactory, memory: _Memory
) -> None:
    # 2**22 references to one small list are a few hundred bytes of memory and 50 MB of JSON.
    value: Any = ["abcdefgh"]
    for _ in range(22):
        value = [value, value]
    engine = make_engine()
    memory.reset()
    for template in ("<<v | json>>", "x<<v>>", "<<v | string>>", "<<[v] | join>>"):
        with pytest.raises(FlowLimitError, match=LIMIT_MESSAGE):
            engine.render(template, {"v": value})
    assert memory.peak() < 2_000_000


def test_a_list_of_lists_is_cut_item_by_item_in_join(
    make_engine: EngineFactory, memory: _Memory
) -> None:
    block = ["x" * 1000] * 90  # each item's JSON is 90 KB: under the limit alone
    context = {"items": [block] * 1000}
    memory.reset()
    with pytest.raises(FlowLimitError, match=LIMIT_MESSAGE):
        make_engine().render("<<items | join>>", context)
    assert memory.peak() < 3_000_000


@pytest.mark.parametrize(
    "template", ["<<s | upper>>", "<<s | lower>>", "<<s | urlencode>>", "<<m | urlencode>>"]
)
def test_growing_string_filters_refuse_long_input_before_building(
    make_engine: EngineFactory, memory: _Memory, template: str
) -> None:
    context = {"s": "é" * 400_000, "m": {f"k{n}": "é" * 50 for n in range(20_000)}}
    engine = make_engine()
    memory.reset()
    with pytest.raises(FlowLimitError, match=LIMIT_MESSAGE):
        engine.render(template, context)
    assert memory.peak() < 1_500_000


def test_big_integers_count_toward_the_limit_without_being_written(
    make_engine: EngineFactory,
) -> None:
    big = 7**12_000
    digits = len(int_text(big))
    assert digits == 10_142
    engine = make_engine()
    with pytest.raises(FlowLimitError, match=LIMIT_MESSAGE):
        engine.render("<<n | json>>", {"n": [big] * 20})
    assert len(engine.render("<<n | json>>", {"n": [big] * 9})) == 9 * digits + 10


def test_limits_are_exact_at_the_boundary() -> None:
    limit = 100
    for template, context, ok in [
        ("<<l | join('')>>", {"l": ["x" * 50, "y" * 50]}, True),
        ("<<l | join('')>>", {"l": ["x" * 50, "y" * 51]}, False),
        ("<<l | join('-')>>", {"l": ["x" * 49, "y" * 50]}, True),
        ("<<l | json>>", {"l": ["x" * 94]}, True),  # ["…"] is 98 characters
        ("<<l | json>>", {"l": ["x" * 96, 1]}, False),
        ("<<m | urlencode>>", {"m": {"a": "x" * 48, "b": "y" * 47}}, True),
        ("<<m | urlencode>>", {"m": {"a": "x" * 48, "b": "y" * 48}}, False),
    ]:
        kind, value = _on_every_backend(template, context, limits=Limits(max_output=limit))
        assert (kind == "ok") is ok, (template, kind, value)
        if ok:
            assert len(value) <= limit
        else:
            assert value == f"rendered text is longer than the limit of {limit} characters"


# --- malformed, huge and deep input ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<<'\ud800'>>",
        "<<a\udcff>>",
        "\udcff<<a>>\ud800",
        "<<a | default('\U0010ffff')>>",
        "<<'\x00'>>",
        "<<a\x00b>>",
        "<<" + "\u0661" * 10 + ">>",  # Arabic-Indic digits are not numbers
        "<<'" + "\\" * 4000 + "'>>",
        "<<" + "'" * 4000 + ">>",
        "<<" + "a|" * 2000 + "a>>",
        "<<" + "[1," * 31 + "]" * 31 + ">>",
        "<<" + "a ?? " * 800 + "a>>",
        "<<" * 20_000,
        ">>" * 20_000,
        "<<a>>" * 20_000,
    ],
)
def test_malformed_templates_compile_or_raise_a_syntax_or_limit_error(
    make_engine: EngineFactory, source: str
) -> None:
    engine = make_engine()
    try:
        template = engine.compile(source)
    except (FlowSyntaxError, FlowLimitError):
        return
    with contextlib.suppress(FlowLimitError):
        template.render({"a": "\ud800"})


def test_surrogates_and_nul_in_data_render_on_both_backends() -> None:
    context = {"s": "a\ud800\x00b", "l": ["\udfff", "\x00"], "m": {"\ud800": "\udc00"}}
    assert _on_every_backend("<<s>>!", context) == ("ok", "a\ud800\x00b!")
    assert _on_every_backend("<<l | join('\ud800')>>", context) == ("ok", "\udfff\ud800\x00")
    assert _on_every_backend("<<m | json>>", context) == ("ok", '{"\\ud800":"\\udc00"}')
    assert _on_every_backend("<<s | urlencode>>", context)[0] == "ok"
    assert _on_every_backend("<<s | upper | length>>", context) == ("ok", 4)
    assert _on_every_backend("<<s contains '\x00'>>", context) == ("ok", True)


def _deep_list(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_data_200k_deep_is_handled_without_recursion() -> None:
    deep, other = _deep_list(200_000), _deep_list(200_000)
    context = {"d": deep, "e": other, "f": _deep_list(200_000, 2)}
    assert _on_every_backend("<<d == e>>", context) == ("ok", True)
    assert _on_every_backend("<<d == f>>", context) == ("ok", False)
    assert _on_every_backend("<<d in [f, e]>>", context) == ("ok", True)
    assert _on_every_backend("<<d | json>>", context) == (
        "FlowLimitError",
        LIMIT_MESSAGE,
    )
    kind, text = _on_every_backend("<<d | json>>", context, limits=Limits(max_output=500_000))
    assert kind == "ok" and text == "[" * 200_000 + "1" + "]" * 200_000
    assert _on_every_backend("<<d | length>>", context) == ("ok", 1)


def test_cyclic_data_in_comparisons_joins_and_limits() -> None:
    a: list[Any] = [1]
    a.append(a)
    b: list[Any] = [1]
    b.append(b)
    m: dict[str, Any] = {"k": "v"}
    m["self"] = [m, a]
    context = {"a": a, "b": b, "m": m}
    assert _on_every_backend("<<a == a>>", context) == ("ok", True)
    assert _on_every_backend("<<a | join('+')>>", context) == ("ok", "1+[1,null]")
    assert _on_every_backend("<<m | json>>", context) == (
        "ok",
        '{"k":"v","self":[null,[1,null]]}',
    )
    assert _on_every_backend("<<m contains 'k'>>", context) == ("ok", True)
    assert _on_every_backend("<<1 in a>>", context) == ("ok", True)


def test_huge_integers_compare_and_convert_on_both_backends() -> None:
    big = 7**12_000
    context = {"n": big, "m": big + 1, "t": int_text(big)[:39]}
    assert _on_every_backend("<<n == n>>", context) == ("ok", True)
    assert _on_every_backend("<<n < m>>", context) == ("ok", True)
    assert _on_every_backend("<<n > 1.5>>", context) == ("ok", True)
    assert _on_every_backend("<<n == t>>", context) == ("ok", False)
    assert _on_every_backend("<<n | e164>>", context) == ("ok", None)
    assert _on_every_backend("<<n | string | length>>", context) == ("ok", 10_142)
    assert _on_every_backend("<<n | number == n>>", context) == ("ok", True)
    assert _on_every_backend("<<n in [1, n]>>", context) == ("ok", True)


def test_nan_everywhere_agrees_on_both_backends() -> None:
    nan = float("nan")
    context = {"x": nan, "l": [nan], "m": {"k": nan}}
    assert _on_every_backend("<<x in l>>", context) == ("ok", False)
    assert _on_every_backend("<<l == l>>", context) == ("ok", False)
    assert _on_every_backend("<<m == m>>", context) == ("ok", False)
    assert _on_every_backend("<<x < 1 or x >= 1>>", context) == ("ok", False)
    assert _on_every_backend("<<x | number>>", context) == ("ok", None)
    assert _on_every_backend("<<x | boolean>>", context) == ("ok", False)
    assert _on_every_backend("<<l | join>>", context) == ("ok", "")
    assert _on_every_backend("<<m | urlencode>>", context) == ("ok", "k=")
    assert _on_every_backend("<<not x>>", context)[0] == "ok"
    assert math.isnan(_on_every_backend("<<x ?? 1>>", context)[1])


def test_body_scan_ends_on_cyclic_and_shared_data() -> None:
    # The twin looped forever on a list inside itself; both walked a list sharing one sublist
    # 2**40 times path by path. Now each container is read once (the twin) or the compiled
    # walk hands a value with too many containers to the twin.
    results = _run_isolated(
        """
        import time
        from flowlang.expr.values import first_non_finite as python_scan
        scans = {"python": python_scan}
        if "cython" in AVAILABLE:
            from flowlang._expr import first_non_finite as compiled_scan
            scans["cython"] = compiled_scan
        cycle = [1.0, {"k": 2.0}]
        cycle.append(cycle)
        cycle[1]["back"] = cycle
        shared = [1.5, "x"]
        for _ in range(40):
            shared = [shared, shared]
        out = {}
        for backend, scan in scans.items():
            started = time.monotonic()
            out[backend] = [
                repr(scan(cycle)),
                repr(scan([shared, float("inf")])),
                repr(scan({"a": shared, "b": [cycle, float("nan")]})),
                time.monotonic() - started,
            ]
        print(json.dumps(out))
        """
    )
    for backend, (in_cycle, after_shared, in_map, seconds) in results.items():
        assert (in_cycle, after_shared, in_map) == ("None", "inf", "nan"), backend
        assert seconds < 10, backend


@pytest.mark.parametrize(
    "source",
    [
        '<<"\\ud800\udc96">>',  # an escaped high surrogate, then a raw low one: two characters
        '<<"a\\ud800\\ud800\udc00b">>',
        '<<x | default("\udc00\\ud800")>>',
    ],
)
def test_printed_surrogates_read_back_as_the_same_string(source: str) -> None:
    # Found by fuzz_parser: the printer escaped both halves, and "\ud800\udc96" written as two
    # escapes reads back as one astral character.
    syntax = SYNTAXES["flowlang"]
    tree = parse_template(source, syntax, Limits())
    assert parse_template(print_template(tree, syntax), syntax, Limits()) == tree
