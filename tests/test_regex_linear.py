"""Every regular expression flowlang runs on outside text costs linear time (issue 8, item 18).

Documents, contexts, events, responses and command lines reach regular expressions in the
document layer, the expression parser and filters, the runtime and the automations. A
backtracking engine turns ambiguity (two quantifiers that can share the same characters, such
as ``\\s*(ms|s)?\\s*$``) into quadratic or exponential time on a long run of one character
followed by a failing tail.

The audit is kept honest by discovery: every compiled pattern in a flowlang module, every
terminal of the expression grammar and every ``pattern`` of the JSON Schema must be listed in
:data:`USES` with the way flowlang calls it (a new one fails :func:`test_every_regex_is_audited`
until someone looks at it), and each is run on adversarial inputs of 50,000 characters, in a
subprocess with a generous timeout, the way it is called.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support import schema_patterns

import flowlang
from flowlang.automations.schema import workflow_schema
from flowlang.expr.parser import _get_lark
from flowlang.flow.schema import flow_schema

# How each pattern is called: "match" (at one position), "fullmatch", "search" (one result,
# from any position: also how jsonschema checks a ``pattern``) or "finditer" (every match:
# also sub and findall). Keyed by the pattern's source text.
USES: dict[str, tuple[str, ...]] = {
    # flowlang/flow/source.py: YAML scalars (PyYAML resolvers call match) and surrogates.
    "[\ud800-\udfff]": ("search", "finditer"),
    r"^(?:true|false)\Z": ("match",),
    r"^(?:null|)\Z": ("match",),
    r"^-?(?:0|[1-9][0-9]*)\Z": ("match",),
    r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)\Z": ("match",),
    # flowlang/flow/source.py: does a text look like JSON (its first character)
    "\ufeff?[ \t\n\r]*[\\[{]": ("match",),
    # flowlang/flow/jsondoc.py: the JSON scanner matches at one position each time
    r"[ \t\n\r]*": ("match",),
    r'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+': ("match",),
    r"[ \t\n\r]*+(?:(?P<comma>,)[ \t\n\r]*+)?+": ("match",),
    (
        r"(-?(?:0|[1-9][0-9]*+)(\.[0-9]++)?+([eE][-+]?[0-9]++)?+)"
        r"[ \t\n\r]*+(?:(?P<comma>,)[ \t\n\r]*+)?+"
    ): ("match",),
    r'"([^"\\\x00-\x1f]*+)"[ \t\n\r]*+:[ \t\n\r]*+': ("match",),
    r'"([^"\\\x00-\x1f]*+)"[ \t\n\r]*+(?:(?P<comma>,)[ \t\n\r]*+)?+': ("match",),
    r"\\(?:u([0-9A-Fa-f]{4})|(.))": ("finditer",),
    # flowlang/automations/store.py: an owner's name (a uuid4 hex)
    r"[0-9a-f]{32}": ("fullmatch",),
    # flowlang/flow/build.py
    r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?": ("fullmatch",),
    r"[!#$%&'*+.^_`|~0-9A-Za-z-]+": ("fullmatch",),  # a header name
    r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$": ("search",),  # the same in flowlang/flow/schema.py
    r"https?://": ("match",),
    # flowlang/flow/schema.py and flowlang/automations/schema.py (JSON Schema, checked by editors
    # and jsonschema with search)
    r"^\s*[0-9]+(\.[0-9]+)?(\s*(ms|s))?\s*$": ("search",),
    r"^[^.]+(\.[^.]+)*$": ("search",),
    r"^[^.]+(\.[^.]+){0,63}$": ("search",),  # a body entry's key, at most 64 parts
    "^[A-Za-z_][A-Za-z0-9_-]*$(?!\n)": ("search",),  # an action's name, whole
    "<<": ("search",),  # a header value holding a template
    "^[\t\x20-\x7e]*$": ("search",),  # a header value as fixed text
    r"^[0-9*#]?$": ("search",),
    # flowlang/kinds/schedules.py (business_hours intervals and exception dates, schema only)
    r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$": ("search",),
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$": ("search",),
    r"^[0-9*#]$": ("search",),  # the keys of a menu's options (propertyNames)
    # flowlang/runtime/secrets.py
    # (and flowlang/automations/schema.py: an action's name, the expression NAME_PATTERN)
    r"^[A-Za-z_][A-Za-z0-9_-]*$": ("fullmatch", "search"),
    r"%(?:[a-f][0-9A-Fa-f]|[0-9A-F][a-f])": ("finditer",),
    r"[A-Za-z0-9]{4,}": ("finditer",),  # f"...{{{MIN_SUBSTRING},}}", with findall
    # flowlang/http_rules.py
    "[\x00-\x08\x0a-\x1f\x7f]": ("search",),
    r"[/?#]": ("search",),
    r"[\w.-]+": ("fullmatch",),
    r"[0-9]{1,5}": ("fullmatch",),
    # flowlang/runtime/state.py
    r"[A-Za-z0-9_.-]{1,100}": ("fullmatch",),
    # flowlang/errors.py
    "\r\n|[\r\n\x85\u2028\u2029]": ("finditer",),
    # flowlang/expr/parser.py: escapes, the fast path for plain paths
    r"\\(u[0-9A-Fa-f]{4}|.)": ("finditer",),
    r"\s*([A-Za-z_][A-Za-z0-9_-]*)": ("match",),
    r"\s*": ("match",),
    # flowlang/expr/values.py and syntax.py
    r"[+-]?[0-9]+(?:\.[0-9]+)?": ("fullmatch",),
    r"[A-Za-z_][A-Za-z0-9_-]*": ("fullmatch", "match"),
    # flowlang/automations
    r"^\+[1-9][0-9]{6,14}$": ("match",),
    # flowlang/serve/voice.py: call ids (CallSid) from webhooks
    r"[A-Za-z0-9_-]{1,64}": ("fullmatch",),
}
#: Sources too long to key by hand: the fast-path segment of expressions.
_LONG_USES = {"(\\.)\\s*([A-Za-z_][A-Za-z0-9_-]*)": ("match",)}
#: Lark's contextual lexer matches its terminals at one position.
_LARK_USE = ("match",)
#: Characters long enough that a quadratic pattern takes minutes (50,000: about 8 s each).
SIZE = 50_000


def _module_patterns() -> dict[str, re.Pattern[str]]:
    """Compiled patterns held by flowlang modules (top level, or one container deep)."""
    found: dict[str, re.Pattern[str]] = {}
    names = [flowlang.__name__] + [
        info.name
        for info in pkgutil.walk_packages(flowlang.__path__, flowlang.__name__ + ".")
        if not info.name.endswith("__main__")
    ]
    for name in names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            values: list[Any] = [value]
            if isinstance(value, (list, tuple)):
                values = [
                    v for item in value for v in (item if isinstance(item, tuple) else [item])
                ]
            elif isinstance(value, dict):
                values = list(value.values())
            for item in values:
                if isinstance(item, re.Pattern) and isinstance(item.pattern, str):
                    found[item.pattern] = item
    return found


def _lark_patterns() -> dict[str, tuple[str, int]]:
    """Each terminal of the expression grammar: its regex and flags."""
    out = {}
    for terminal in _get_lark().terminals:
        flags = re.DOTALL if "s" in terminal.pattern.flags else 0
        out[f"lark:{terminal.name}"] = (terminal.pattern.to_regexp(), flags)
    return out


def _uses(source: str) -> tuple[str, ...] | None:
    if source in USES:
        return USES[source]
    return next((uses for key, uses in _LONG_USES.items() if key in source), None)


def _cases() -> list[tuple[str, str, int, tuple[str, ...]]]:
    cases = []
    for source, pattern in sorted(_module_patterns().items()):
        cases.append((ascii(source)[:60], source, pattern.flags, _uses(source) or ()))
    for source in sorted(set(schema_patterns(flow_schema()) + schema_patterns(workflow_schema()))):
        cases.append((f"schema:{ascii(source)[:52]}", source, 0, _uses(source) or ()))
    for name, (source, flags) in sorted(_lark_patterns().items()):
        cases.append((name, source, flags, _LARK_USE))
    return cases


CASES = _cases()


def test_every_regex_is_audited() -> None:
    """A pattern that is not in USES has not been looked at: add it, with how it is called."""
    missing = [source for _, source, _, uses in CASES if not uses]
    assert not missing, missing
    assert len(CASES) >= 35  # discovery still finds them


# The child: the pattern's own literal characters, some of every kind and some pairs (for
# nested repeats such as (\\.[^.]+)*), repeated to SIZE characters
# after a short prefix and before a failing tail, under each call the code makes.
_CHILD = textwrap.dedent(
    """\
    import json, re, sys
    case = json.loads(sys.stdin.read())
    pattern = re.compile(case["source"], case["flags"])
    size = case["size"]
    alphabet = set(" \\t\\n1a_-.%+e\\\\\\"'/#*ms\\u00a0\\u2028\\u201c\\ud800\\x00x[(")
    alphabet |= {c for c in case["source"] if c.isprintable() or not c.isascii()}
    prefixes = ["", "1", "a", "-1", "1.", "+1", "\\"", "\\\\", "%", "[", "a.", "1 "]
    tails = ["", "\\x00", "!"]
    calls = 0
    pairs = ["a.", "1.", "\\\\a", "\\\\\\\\", "a ", "1e", "%a", "-1", ". ", "\\r\\n", "a-"]
    for filler in sorted(alphabet) + pairs:
        run = filler * (size // len(filler))
        for prefix in prefixes:
            for tail in tails:
                text = prefix + run + tail
                for use in case["uses"]:
                    if use == "finditer":
                        for _ in pattern.finditer(text):
                            pass
                    else:
                        getattr(pattern, use)(text)
                    calls += 1
    print(calls)
    """
)


@pytest.mark.parametrize(
    ("source", "flags", "uses"),
    [pytest.param(source, flags, uses, id=name) for name, source, flags, uses in CASES],
)
def test_regex_is_linear_on_adversarial_input(
    source: str, flags: int, uses: tuple[str, ...]
) -> None:
    """Thousands of calls on 50,000-character inputs finish well within 10 s when each is
    linear; one quadratic call alone takes about 8 s."""
    case = {"source": source, "flags": flags, "uses": list(uses), "size": SIZE}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(case),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 100
