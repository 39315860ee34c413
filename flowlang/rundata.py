"""Run data: measure what a run holds, and store into it within the runtime's data limits.

Run data is what a state carries: plain JSON (text keys, valid Unicode, integers within 64
bits, finite numbers), nested at most ``max_data_depth`` levels under each root, about
``max_state_size`` bytes in all. ``measure`` sizes a value as compact JSON without building
it; the store functions keep a run's running total (``run.data_size``) as steps write
``vars`` and step records. The compiled twins live in ext/_runtime.pyx;
the store functions measure with the one of the run's runtime (``runtime.twins.measure_data``).

Merges and ownership (what a ``set_variables`` merge costs)
-----------------------------------------------------------
A map in ``vars`` may be shared with something observable: another variable
(``x: <<vars.y>>``), a step record, the values a trace row compared, a host instruction, an
HTTP body, the caller's context, a restored state, the RunResult of an earlier segment. A merge
into such a map copies it first (copy-on-write), so that nothing already handed out changes.
A merge into a map the run *owns* changes it in place, and costs what the change costs.

The rule (``run.owned``: ``id(map) -> [map, size]``, holding a strong reference so that an id
is never reused while it is listed; an entry counts only while ``entry[0] is map``):

1. A map becomes owned only when a merge creates it (the copy of a map being merged into),
   of ``IN_PLACE_FROM`` bytes or more as a value of ``vars`` (a smaller one is cheaper to
   copy again), and only if everything in it is plain data (exact ``dict``/``list``/``str``/``int``/
   ``float``/``bool``/None, text keys): plain data cannot change behind the run's back, so its
   measured size stays true. Nothing else is ever owned: values a step renders, the context,
   a restored state. The copy's direct children are disowned when it is made (they are shared
   with the map copied).
2. A merge changes a map in place only when the map is owned and every map above it, up to
   ``vars``, is owned too (the walk goes down from ``vars``: a map reached through a copy is
   shared with the original, so it is copied in its turn).
3. Before a step runs, for every reference of its templates under ``vars`` (``template
   .references``, static, found once per flow by ``flowlang.runtime.loop.vars_reads``), the
   *static prefix* of its path (up to its first computed key or index) names a map: that map
   and every owned map under it are disowned (the walk goes only through owned maps, which
   by rule 2 are the only ones an owned map can hide under: each map is disowned once). A
   prefix of ``vars`` itself (``<<vars>>``, ``vars[vars.key]``, ``vars[0]``), or a template
   whose references are unknown, disowns everything. Every object an expression can obtain
   from ``vars`` (through ``(vars.x ?? 0).a``, ``[vars.m][0].a``, a filter, a computed key)
   is under such a prefix, so nothing a step hands out stays owned: a later merge into it,
   or into anything under it, goes through a copy (2). Only templates read ``vars``, and
   only set_variables writes it. Defense in depth: a value being stored (in place or as a
   variable) is walked, and any owned map in it is disowned. A replaced map, or one
   disowned, leaves ``run.owned`` with its owned subtree, so the run keeps no reference to
   a map that is no longer in ``vars``.
4. A run starts with nothing owned (a new run for every start and resume), so whatever the
   caller passed in or got back from an earlier segment is never changed.

Sizes follow the change: a merge into an owned map measures only the entries it sets (new,
and the replaced ones), at their depth, and adds the difference to the map's size kept in its
entry and to ``run.data_size``. Anything the in-place path cannot decide exactly (a limit
passed, a key that is not exactly ``str``, a map subclass, data that is not plain) goes the
copying path, which gives today's results and messages.
"""

from __future__ import annotations

__all__ = [
    "BAD_INT",
    "BAD_KEY",
    "BAD_KIND",
    "BAD_NUMBER",
    "BAD_TEXT",
    "INT_MAX",
    "INT_MIN",
    "IN_PLACE_FROM",
    "MAX_DATA_DEPTH_CAP",
    "TOO_DEEP",
    "TOO_LARGE",
    "DataLimitError",
    "adopt_merged",
    "data_problem",
    "disown_reads",
    "disown_within",
    "is_plain",
    "lookup_variable",
    "measure",
    "merge_into_owned",
    "merge_owned",
    "merge_variables",
    "owned_entry",
    "settle_stored",
    "state_full",
    "store_record",
    "store_variables",
    "stored_problem",
    "valid_text",
    "variable_problem",
]

import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

from flowlang.errors import DataLimitError

#: The deepest ``max_data_depth`` may be (a state must stay within what orjson writes).
MAX_DATA_DEPTH_CAP = 200
#: Integers run data may hold: what every JSON library here reads back as the same integer.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Codes ``measure`` returns instead of a size.
TOO_DEEP, TOO_LARGE, BAD_INT, BAD_TEXT, BAD_KIND, BAD_KEY, BAD_NUMBER = range(-1, -8, -1)
_SURROGATE = re.compile("[\ud800-\udfff]")


#: A run's owned maps: ``id(map) -> [map, size]`` (see the module docstring; size -1: not kept).
Owned = dict[int, list[Any]]


class RunData(Protocol):
    """What the store functions read and write of a run: its scope, its data size, and the
    runtime's ``data_limits`` (value size, state size, nesting depth)."""

    scope: dict[str, Any]
    data_size: int

    @property
    def runtime(self) -> Any: ...


class OwningRun(RunData, Protocol):
    """A run that stores ``vars``: also the maps it owns."""

    owned: Owned


def valid_text(text: str) -> str:
    """``text`` with any lone surrogate (which UTF-8 and JSON readers refuse) replaced by U+FFFD."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


def _text_size(text: str) -> int:
    """A str or a subclass (read with str's methods: no override runs)."""
    if str.isascii(text) or _SURROGATE.search(text) is None:
        return str.__len__(text) + 2
    return BAD_TEXT


def measure(
    value: Any, depth: int, budget: int, strict: bool, trail: list[Any] | None = None
) -> int:
    """About the size of ``value`` as compact JSON, or a negative code for the first problem.

    ``depth``: how many levels of lists and maps it may nest; ``budget``: the largest size
    accepted (the walk stops there, so shared or huge data costs at most ``budget`` steps).
    ``strict`` (states): only JSON types, text keys, finite numbers; else (contexts, values
    a flow makes) other values count as the null they become. ``trail`` collects the path to
    the problem, innermost first. The compiled twin (ext/_runtime.pyx) gives the same answers.
    """
    kind = type(value)
    if kind is int:  # the common kinds first, by exact type
        size = 8 if INT_MIN <= value <= INT_MAX else BAD_INT
    elif kind is str:
        size = _text_size(value)
    elif kind is dict or kind is list:
        return _measure_container(value, depth, budget, strict, trail)
    elif isinstance(value, str):
        size = _text_size(value)
    elif value is None or isinstance(value, bool):
        size = 5
    elif isinstance(value, int):
        size = 8 if INT_MIN <= int.__int__(value) <= INT_MAX else BAD_INT  # no override runs
    elif isinstance(value, float):
        size = BAD_NUMBER if strict and not math.isfinite(value) else 8
    elif isinstance(value, (dict, list, tuple)) or (not strict and isinstance(value, Mapping)):
        return _measure_container(value, depth, budget, strict, trail)
    elif strict:
        return BAD_KIND
    else:
        size = 5
    return size if size < 0 or size <= budget else TOO_LARGE


def _measure_container(
    value: Any, depth: int, budget: int, strict: bool, trail: list[Any] | None
) -> int:
    if depth <= 0:
        return TOO_DEEP
    size = 2
    if isinstance(value, (list, tuple)):
        if type(value) is not list and type(value) is not tuple:  # a subclass: its code runs
            try:
                value = list(value)
            except Exception:  # a list that cannot be read
                return BAD_KIND
        for index, item in enumerate(value):
            child = measure(item, depth - 1, budget - size - 1, strict, trail)
            if child < 0:
                if trail is not None:
                    trail.append(index)
                return child
            size += child + 1
            if size > budget:
                return TOO_LARGE
        return size if size <= budget else TOO_LARGE
    if type(value) is dict:  # read live, as the compiled twin reads it: a size change meanwhile
        entries: Any = value.items()  # (a custom Mapping's code) raises RuntimeError in both
    else:
        try:
            entries = list(value.items())
        except Exception:  # a mapping that cannot be read
            return BAD_KIND
    for key, item in entries:
        if isinstance(key, str):
            key_size = _text_size(key)
            if key_size < 0:
                if trail is not None:
                    trail.append(key)
                return key_size
        elif strict:
            return BAD_KEY
        else:
            key_size = 8
        size += key_size + 2
        child = measure(item, depth - 1, budget - size, strict, trail)
        if child < 0:
            if trail is not None:
                trail.append(key)
            return child
        size += child
        if size > budget:
            return TOO_LARGE
    return size if size <= budget else TOO_LARGE


def _path(root: str, trail: list[Any]) -> str:
    parts = [root]
    for key in reversed(trail[-12:] if len(trail) > 12 else trail):
        if type(key) is int:
            parts.append(f"[{key}]")
        else:  # a long key is never cut to a prefix: it could be a secret's
            text = str(key)
            parts.append(f".{text}" if len(text) <= 40 else f".<a key of {len(text)} characters>")
    text = "".join(parts).lstrip(".")
    return text + ("…" if len(trail) > 12 else "")


def data_problem(
    value: Any,
    depth: int,
    budget: int,
    strict: bool,
    *,
    root: str,
    depth_limit: int,
    setting: str,
) -> str:
    """Why ``measure`` refused ``value`` (found at ``root``): the problem and the path to it
    (``contact.a[0]``), in words; ``depth_limit`` names the depth limit, ``setting`` the
    RuntimeSettings field whose value ``budget`` is."""
    trail: list[Any] = []
    code = measure(value, depth, budget, strict, trail)
    where = _path(root, trail) or "the value"
    head = where + ": "
    if code == TOO_DEEP:
        return f"{where} nests deeper than {depth_limit} levels (RuntimeSettings.max_data_depth)"
    if code == TOO_LARGE:  # where the budget ran out says little: name the whole
        return f"{root or 'its data'} is larger than {budget} bytes (RuntimeSettings.{setting})"
    if code == BAD_INT:
        return f"{head}an integer outside the 64-bit range (-2**63 to 2**64-1)"
    if code == BAD_TEXT:
        return f"{head}text with a lone surrogate (not valid Unicode)"
    if code == BAD_KEY:
        return f"{head}a map key that is not text"
    if code == BAD_NUMBER:
        return f"{head}a number that is not finite"
    if code == BAD_KIND:
        return f"{head}a value that is not JSON data"
    return "no problem"  # pragma: no cover - called only after measure refused the value


# --- storing into a run -------------------------------------------------------------------------


def lookup_variable(variables: dict[str, Any], key: Any, default: Any = None) -> Any:
    """``variables.get(key, default)``; ``default`` too when a key's ``__eq__`` or ``__hash__``
    raised (a raising key is missing, grammar/SPEC.md §2; as the compiled twin reads it)."""
    try:
        return variables.get(key, default)
    except Exception:
        return default


def merge_variables(variables: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Set ``values`` into ``variables``; nested maps merge copy-on-write, never in place,
    so values an earlier trace entry refers to never change. The entries of ``values`` are read
    once first: a lookup, copy or merge may run a hostile key's or map's code."""
    for key, value in list(values.items()):
        existing = lookup_variable(variables, key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged = dict(existing)
            merge_variables(merged, value)
            variables[key] = merged
        else:
            variables[key] = value


_ABSENT: Any = object()


def _key_size(key: Any) -> int:
    return len(key) + 2 if isinstance(key, str) else 8


def state_full(step_id: str, where: str, max_state: int) -> str:
    """The message of a step whose write would take the run's data past ``max_state``."""
    return (
        f"step {step_id!r} cannot set {where}: the run's data would be larger than "
        f"{max_state} bytes (RuntimeSettings.max_state_size)"
    )


def stored_problem(
    step_id: str, where: str, value: Any, budget: int, setting: str, max_depth: int
) -> str:
    """Why step ``step_id`` cannot store ``value`` at ``where`` (one level under a root, at most
    ``budget`` bytes: the RuntimeSettings field ``setting``)."""
    problem = data_problem(
        value, max_depth - 1, budget, False, root=where, depth_limit=max_depth, setting=setting
    )
    return f"step {step_id!r} cannot set {where}: {problem}"


def variable_problem(step_id: str, key: str, value: Any, limits: tuple[int, int, int]) -> str:
    """Why ``value`` cannot be stored as ``vars.<key>`` (both loops' message)."""
    max_value, _, max_depth = limits
    return stored_problem(step_id, f"vars.{key}", value, max_value, "max_value_size", max_depth)


_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None)})
#: The size (bytes, as ``measure`` counts) from which a map of ``vars`` made by a merge is owned
#: and merged in place: copying and measuring a smaller one costs less than the in-place path.
IN_PLACE_FROM = 1024


def is_plain(value: Any) -> bool:
    """Whether ``value`` is plain data: exact dicts with ``str`` keys, exact lists, and exact
    str, int, float, bool or None (no code of the value runs; it was measured first, so it
    is finite and bounded)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    return False
                stack.append(child)
        elif kind is list:
            stack.extend(item)
        elif kind not in _PLAIN_LEAVES:
            return False
    return True


def owned_entry(owned: Owned, value: Any) -> list[Any] | None:
    """The entry ``[map, size]`` of ``value`` when the run owns it, else None (an id listed
    for another object does not count)."""
    held = owned.get(id(value))
    return held if held is not None and held[0] is value else None


def _disown(owned: Owned, value: Any) -> None:
    """Disown ``value`` and its owned subtree (walking only through owned maps: a map under
    an owned one is owned only if reached through owned maps, rule 2; each map is disowned
    once)."""
    if owned_entry(owned, value) is None:
        return
    del owned[id(value)]
    stack = [value]
    while stack:
        for child in stack.pop().values():
            if type(child) is dict and owned_entry(owned, child) is not None:
                del owned[id(child)]
                stack.append(child)


def disown_within(owned: Owned, value: Any) -> None:
    """Disown every owned map inside ``value``, a value being stored (defense in depth: the
    reads rule already disowned whatever a template could obtain from ``vars``). ``value`` was
    measured first, so the walk is bounded; only the base types' own methods run."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if type(item) is dict:
                _disown(owned, item)
            stack.extend(dict.values(item))
        elif isinstance(item, list):
            stack.extend(list.__iter__(item))
        elif isinstance(item, tuple):
            stack.extend(tuple.__iter__(item))


def adopt_merged(owned: Owned, merged: dict[str, Any], size: int) -> None:
    """Own ``merged``, a map a merge just made (size ``size``, or -1 under another map), if
    it is plain data (and, as a value of ``vars``, of ``IN_PLACE_FROM`` bytes or more); its
    direct children, shared with the map it copied, are disowned (with their owned subtrees)."""
    if 0 <= size < IN_PLACE_FROM or not is_plain(merged):
        return
    for child in merged.values():
        if type(child) is dict:
            _disown(owned, child)
    owned[id(merged)] = [merged, size]


def disown_reads(owned: Owned, variables: Any, paths: tuple[tuple[Any, ...], ...]) -> None:
    """Disown what a step may read: for each path under ``vars`` (its static prefix, the keys
    after ``vars``), the owned subtree of the map at its end, or of the map where a key that
    is not text, a value that is not a map or a raising key stops it; an empty path (``vars``
    itself, or a computed first key) disowns everything."""
    for path in paths:
        node = variables
        for key in path:
            if type(key) is not str:  # computed, or an index: anything under node
                break
            try:
                child = node.get(key)
            except Exception:  # a hostile key of the map: anything under it
                break
            if type(child) is not dict:  # nothing owned below a value that is not a map
                node = None
                break
            node = child
        if node is variables:
            owned.clear()
            return
        if node is not None:
            _disown(owned, node)
            if not owned:
                return


def _plan_merge(
    run: OwningRun,
    target: dict[str, Any],
    values: dict[str, Any],
    depth: int,
    actions: list[tuple[dict[str, Any], str, Any, Any, bool]],
) -> int | None:
    """The size change of merging ``values`` into the owned map ``target`` (whose depth for
    ``measure`` is ``depth``), the writes to make appended to ``actions``; None when the
    in-place path cannot decide it exactly (the copying path does)."""
    owned = run.owned
    measure_data = run.runtime.twins.measure_data
    max_value, max_state, _ = run.runtime.data_limits
    delta = 0
    for key, value in values.items():
        if type(key) is not str:
            return None
        existing = target.get(key, _ABSENT)
        adopt = False
        if type(existing) is dict and type(value) is dict:
            if owned_entry(owned, existing) is not None:
                inner = _plan_merge(run, existing, value, depth - 1, actions)
                if inner is None:
                    return None
                delta += inner
                continue
            merged: Any = dict(existing)
            merge_variables(merged, value)
            adopt = True
        elif isinstance(existing, dict) and isinstance(value, dict):
            return None  # a subclass: copied as the copying path copies it
        else:
            merged = value
        size = measure_data({key: merged}, depth, max_value + 2, False)
        if size < 0 or not is_plain(merged):
            return None
        if existing is not _ABSENT:
            old = measure_data({key: existing}, depth + 1, max_state + 2, False)
            if old < 0:
                return None
            size -= old
        else:
            size -= 2
        delta += size
        actions.append((target, key, merged, existing, adopt))
    return delta


def merge_owned(
    run: OwningRun, key: str, target: dict[str, Any], held: list[Any], values: dict[str, Any]
) -> int | None:
    """Merge ``values`` in place into ``vars.<key>``, the owned map ``target`` (its entry
    ``held``): the run's new data size, or None (nothing changed) when the copying path must
    decide (a limit passed, data that is not plain …)."""
    max_value, max_state, max_depth = run.runtime.data_limits
    actions: list[tuple[dict[str, Any], str, Any, Any, bool]] = []
    delta = _plan_merge(run, target, values, max_depth - 1, actions)
    if delta is None:
        return None
    size = held[1] + delta
    after = run.data_size + delta
    if size > max_value or after > max_state:
        return None
    owned = run.owned
    for parent, name, value, existing, adopt in actions:
        parent[name] = value
        settle_stored(owned, existing, value, -1 if adopt else None)
    held[1] = size
    return after


def merge_into_owned(run: OwningRun, key: str, existing: Any, values: Any) -> int | None:
    """Merge ``values`` in place into ``vars.<key>`` when ``existing`` (its value) is a map
    the run owns as a value of ``vars``: the run's new data size; None when the copying path
    must do it (not owned, or ``merge_owned`` cannot decide)."""
    if type(existing) is not dict or type(values) is not dict:
        return None
    held = owned_entry(run.owned, existing)
    if held is None or held[1] < 0:
        return None
    return merge_owned(run, key, existing, held, values)


def settle_stored(owned: Owned, existing: Any, value: Any, adopt_size: int | None) -> None:
    """Ownership after ``value`` was stored over ``existing``: the replaced map leaves the run
    with its owned subtree, owned maps inside ``value`` are disowned (rule 3's defense in
    depth), and with ``adopt_size`` (not None: ``value`` is a map a merge made) it is adopted
    (``adopt_merged``)."""
    if owned:
        if type(existing) is dict:
            _disown(owned, existing)  # replaced: nothing refers to it any more
        if isinstance(value, (dict, list, tuple)):
            disown_within(owned, value)
    if adopt_size is not None:
        adopt_merged(owned, value, adopt_size)


def store_variables(run: OwningRun, step_id: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` into ``vars`` (nested maps merge copy-on-write, in place into maps the
    run owns: see the module docstring), each checked against the run's data limits before it
    is stored: DataLimitError names the step and variable."""
    variables = run.scope["vars"]
    runtime = run.runtime
    limits = runtime.data_limits
    max_value, max_state, max_depth = limits
    measure_data = runtime.twins.measure_data
    owned = run.owned
    total = run.data_size
    try:
        for key, given in values.items():
            value = given
            try:  # lookup_variable, inline on the hot path
                existing = variables.get(key, _ABSENT)
            except Exception:
                existing = _ABSENT
            merged = False
            if isinstance(existing, dict) and isinstance(value, dict):
                if owned:
                    run.data_size = total
                    after = merge_into_owned(run, key, existing, given)
                    if after is not None:
                        total = after
                        continue
                value = dict(existing)
                merge_variables(value, given)
                merged = True
            if type(value) is int and INT_MIN <= value <= INT_MAX:  # the common case, inline
                size = 8
            else:
                size = measure_data(value, max_depth - 1, max_value, False)
                if size < 0:
                    raise DataLimitError(variable_problem(step_id, key, value, limits))
            if existing is _ABSENT:
                after = total + size + _key_size(key) + 2
            elif type(existing) is int and INT_MIN <= existing <= INT_MAX:
                after = total + size - 8
            else:
                after = total + size - max(measure_data(existing, max_depth, max_state, False), 0)
            if after > max_state:
                raise DataLimitError(state_full(step_id, f"vars.{key}", max_state))
            total = after
            variables[key] = value
            if owned or (merged and size >= IN_PLACE_FROM):
                settle_stored(owned, existing, value, size if merged else None)
    finally:
        run.data_size = total


def store_record(run: RunData, step_id: str, root: str, record: dict[str, Any]) -> None:
    """Store a step's record as ``<root>.<step id>`` within the run's data limits."""
    container = run.scope[root]
    runtime = run.runtime
    _, max_state, max_depth = runtime.data_limits
    measure_data = runtime.twins.measure_data
    size = measure_data(record, max_depth - 1, max_state, False)
    where = f"{root}.{step_id}"
    if size < 0:
        problem = stored_problem(step_id, where, record, max_state, "max_state_size", max_depth)
        raise DataLimitError(problem)
    existing = container.get(step_id, _ABSENT)
    if existing is _ABSENT:
        total = run.data_size + size + _key_size(step_id) + 2
    else:
        total = run.data_size + size - max(measure_data(existing, max_depth, max_state, False), 0)
    if total > max_state:
        raise DataLimitError(state_full(step_id, where, max_state))
    run.data_size = total
    container[step_id] = record
