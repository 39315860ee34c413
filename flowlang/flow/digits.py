"""Digit patterns: the ``pattern`` of a collect_input step, matched in linear time.

A caller enters only the twelve DTMF symbols ``0-9 * #``. A pattern is compiled once, when the
flow loads, into a Thompson automaton over those symbols, and matched by simulating the set of
its states one symbol at a time (the sets met are memoized, so the automaton becomes a DFA
lazily). Matching costs at most (symbols + 1) x states steps, whatever the pattern: a pattern
such as ``(1+)+2``, exponential for a backtracking engine, is as cheap as any other.

Syntax, a subset of Python's ``re`` with the same meaning (``re.fullmatch`` agrees on every
pattern it accepts):

- literals ``0``-``9`` and ``#``; ``\\*`` and ``\\#`` (any other literal is never entered by a
  caller and is refused);
- ``.`` any symbol; ``\\d`` a digit, ``\\D`` ``*`` or ``#`` (also ``\\w``, ``\\W``, ``\\s``,
  ``\\S``);
- classes ``[0-9*]``, ``[^#]``, with ranges and the escapes above;
- groups ``( )``, ``(?: )``, ``(?P<name> )``; alternatives ``|``;
- ``?``, ``*``, ``+``, ``{m}``, ``{m,}``, ``{,n}``, ``{m,n}`` (counts at most 64), each also
  lazy (``*?``), which changes nothing for a whole-input match;
- anchors ``^``, ``$``, ``\\A``, ``\\Z`` (the whole input is matched anyway).

Refused when the flow loads, with the reason: backreferences, lookarounds, conditionals,
possessive quantifiers, atomic groups, inline flags and comments, ``\\b``/``\\B``, numeric
escapes; patterns longer than 1024 characters, nested deeper than 32 groups or compiling to
more than 256 states (``[0-9]{8,12}`` takes 17, ``\\d{0,64}`` 129, ``(?:\\d\\*?){1,64}`` 256).

Compiling costs at most a fixed number of construction steps, whatever the pattern: before the
automaton is built, a repeat of something that matches only the empty string is reduced to one
copy or none (``(?:(){64}){64}`` builds nothing, 64 x 64 times) and an alternation of single
symbols becomes one class (``(1|2|3)`` is ``[123]``); the builder also counts the nodes it
expands and refuses a pattern past :data:`MAX_BUILD_STEPS`.
"""

from __future__ import annotations

__all__ = [
    "MAX_BUILD_STEPS",
    "MAX_COUNT",
    "MAX_PATTERN",
    "MAX_STATES",
    "DigitPattern",
    "PatternError",
]

from dataclasses import dataclass

from flowlang.errors import PatternError

#: The symbols a caller can enter, in the order of their bits in a symbol set.
SYMBOLS = "0123456789*#"
_BIT = {symbol: 1 << index for index, symbol in enumerate(SYMBOLS)}
_ALL = (1 << len(SYMBOLS)) - 1
_DIGITS = (1 << 10) - 1
_NOT_DIGITS = _ALL & ~_DIGITS
#: Class escapes, as symbol sets: what each matches among the symbols a caller can enter.
_CLASS_ESCAPES = {
    "d": _DIGITS,
    "D": _NOT_DIGITS,
    "w": _DIGITS,
    "W": _NOT_DIGITS,
    "s": 0,
    "S": _ALL,
}

#: The longest pattern, in characters.
MAX_PATTERN = 1024
#: The largest count in ``{m,n}``: a caller enters at most 64 digits.
MAX_COUNT = 64
#: The most automaton states a pattern may compile to (the cost of one symbol, at most: about
#: 1.5 ms for 64 fresh digits at this size, 6 ms at 1,024).
MAX_STATES = 256
#: The most syntax-tree nodes the builder expands for one pattern (a node may be expanded many
#: times, once per copy of a counted repeat): every expansion builds a state or leads to one,
#: so this only stops a pattern whose work would not show in its states.
MAX_BUILD_STEPS = 16 * MAX_STATES
_MAX_GROUP_DEPTH = 32
#: Memoized steps per pattern, (set of states, symbol) -> set of states: at most this many
#: state bits in all (a few tens of kilobytes), and at most 4,096 steps.
_MEMO_BITS = 1 << 18

# Automaton state kinds.
_CHAR, _SPLIT, _BEGIN, _END, _MATCH = range(5)


# --- syntax tree ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Set:
    symbols: int


@dataclass(frozen=True, slots=True)
class _Anchor:
    end: bool


@dataclass(frozen=True, slots=True)
class _Sequence:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Either:
    options: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    item: _Node
    low: int
    high: int | None


_Node = _Set | _Anchor | _Sequence | _Either | _Repeat


class _Parser:
    """Recursive descent over the pattern; groups nest at most ``_MAX_GROUP_DEPTH`` deep."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.at = 0
        self.names: set[str] = set()

    def peek(self, ahead: int = 0) -> str:
        index = self.at + ahead
        return self.source[index] if index < len(self.source) else ""

    def fail(self, message: str, offset: int | None = None) -> PatternError:
        return PatternError(message, self.at if offset is None else offset)

    def parse(self) -> _Node:
        node = self.alternatives(0)
        if self.at < len(self.source):  # only a ')' stops the top level early
            raise self.fail("unbalanced parenthesis")
        return node

    def alternatives(self, depth: int) -> _Node:
        options = [self.sequence(depth)]
        while self.peek() == "|":
            self.at += 1
            options.append(self.sequence(depth))
        return options[0] if len(options) == 1 else _Either(tuple(options))

    def sequence(self, depth: int) -> _Node:
        items: list[_Node] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.repeat(depth))
        return items[0] if len(items) == 1 else _Sequence(tuple(items))

    def repeat(self, depth: int) -> _Node:
        start = self.at
        item = self.atom(depth)
        bounds = self.quantifier()
        if bounds is None:
            return item
        if isinstance(item, _Anchor):
            raise self.fail("nothing to repeat", start)
        if self.peek() == "?":
            self.at += 1  # lazy: the same set of whole-input matches
        elif self.peek() == "+":
            raise self.fail("possessive quantifiers are not supported")
        if self.quantifier(probe=True) is not None:
            raise self.fail("multiple repeat")
        return _Repeat(item, *bounds)

    def quantifier(self, *, probe: bool = False) -> tuple[int, int | None] | None:
        """The bounds of a quantifier at the cursor (consumed unless ``probe``), or None."""
        char = self.peek()
        simple = {"?": (0, 1), "*": (0, None), "+": (1, None)}
        if char in simple:
            if not probe:
                self.at += 1
            return simple[char]
        if char != "{":
            return None
        end = self.source.find("}", self.at)
        body = self.source[self.at + 1 : end] if end != -1 else ""
        low_text, comma, high_text = body.partition(",")
        if end == -1 or not body or not (low_text.isdigit() or not low_text):
            return None
        if not (high_text.isdigit() or not high_text) or not (low_text or comma):
            return None
        if not low_text.isascii() or not high_text.isascii():
            return None
        low = int(low_text) if low_text else 0
        high = int(high_text) if high_text else (None if comma else low)
        if low > MAX_COUNT or (high is not None and high > MAX_COUNT):
            raise self.fail(f"a count is at most {MAX_COUNT} (a caller enters at most 64 digits)")
        if high is not None and high < low:
            raise self.fail("min repeat greater than max repeat")
        if not probe:
            self.at = end + 1
        return low, high

    def atom(self, depth: int) -> _Node:
        start = self.at
        char = self.peek()
        self.at += 1
        if char == "(":
            return self.group(depth, start)
        if char == "[":
            return _Set(self.character_class(start))
        if char == ".":
            return _Set(_ALL)
        if char in ("^", "$"):
            return _Anchor(char == "$")
        if char == "\\":
            return self.escape(start)
        if char in ("*", "+", "?"):
            raise self.fail("nothing to repeat", start)
        if char == "{":
            self.at = start
            if self.quantifier(probe=True) is not None:
                raise self.fail("nothing to repeat", start)
            self.at = start + 1
        if char in _BIT:
            return _Set(_BIT[char])
        raise self.fail(f"{char!r} is never entered by a caller (only 0-9, * and #)", start)

    def group(self, depth: int, start: int) -> _Node:
        if depth >= _MAX_GROUP_DEPTH:
            raise self.fail(f"groups nest deeper than {_MAX_GROUP_DEPTH} levels", start)
        if self.peek() == "?":
            if self.peek(1) == ":":
                self.at += 2
            elif self.peek(1) == "P" and self.peek(2) == "<":
                close = self.source.find(">", self.at)
                name = self.source[self.at + 3 : close] if close != -1 else ""
                if not name.isidentifier():
                    raise self.fail("bad group name", start)
                if name in self.names:
                    raise self.fail(f"redefinition of group name {name!r}", start)
                self.names.add(name)
                self.at = close + 1
            else:
                raise self.fail(
                    "only (...), (?:...) and (?P<name>...) groups are supported "
                    "(no lookarounds, backreferences, flags or comments)",
                    start,
                )
        inner = self.alternatives(depth + 1)
        if self.peek() != ")":
            raise self.fail("missing ), unterminated subpattern", start)
        self.at += 1
        return _Sequence((inner,))  # a group, even of one anchor, can be repeated

    def escape(self, start: int) -> _Node:
        char = self.peek()
        self.at += 1
        if char in _CLASS_ESCAPES:
            return _Set(_CLASS_ESCAPES[char])
        if char in ("A", "Z"):
            return _Anchor(char == "Z")
        if char in _BIT:
            if char.isdigit():
                raise self.fail("backreferences and numeric escapes are not supported", start)
            return _Set(_BIT[char])
        if char == "" or char.isalnum() or not char.isascii():
            raise self.fail(f"escape \\{char} is not supported", start)
        raise self.fail(f"{char!r} is never entered by a caller (only 0-9, * and #)", start)

    def class_member(self, start: int) -> tuple[int, str | None]:
        """One member of a class: (its symbol set, its literal character if it is one)."""
        char = self.peek()
        if char == "":
            raise self.fail("unterminated character set", start)
        self.at += 1
        if char != "\\":
            return _BIT.get(char, 0), char
        escaped = self.peek()
        self.at += 1
        if escaped in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[escaped], None
        if escaped == "" or escaped.isalnum() or not escaped.isascii():
            raise self.fail(f"escape \\{escaped} is not supported", self.at - 2)
        return _BIT.get(escaped, 0), escaped

    def character_class(self, start: int) -> int:
        negate = self.peek() == "^"
        if negate:
            self.at += 1
        symbols = 0
        first = True
        while True:
            if self.peek() == "]" and not first:
                self.at += 1
                break
            first = False
            member, literal = self.class_member(start)
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.at += 1
                _, high = self.class_member(start)
                if literal is None or high is None or ord(high) < ord(literal):
                    raise self.fail(f"bad character range {literal or '?'}-{high or '?'}", start)
                for symbol, bit in _BIT.items():
                    if ord(literal) <= ord(symbol) <= ord(high):
                        symbols |= bit
            else:
                symbols |= member
        return _ALL & ~symbols if negate else symbols


# --- normal form ---------------------------------------------------------------------------

_EMPTY = _Sequence(())


def _simplify(node: _Node) -> tuple[_Node, bool]:
    """``node`` without work that builds nothing, and whether it can read a symbol.

    A repeat of an item that reads no symbol (only empty groups and anchors) matches where one
    copy does (or anywhere, with zero copies allowed): anchors test the same position again.
    Sequences are flattened, empty items dropped, alternations of single symbols joined.
    """
    if isinstance(node, _Set):
        return node, True
    if isinstance(node, _Anchor):
        return node, False
    if isinstance(node, _Sequence):
        items: list[_Node] = []
        reads = False
        for item in node.items:
            simple, item_reads = _simplify(item)
            reads = reads or item_reads
            if isinstance(simple, _Sequence):
                items.extend(simple.items)
            else:
                items.append(simple)
        return (items[0] if len(items) == 1 else _Sequence(tuple(items))), reads
    if isinstance(node, _Either):
        pairs = [_simplify(option) for option in node.options]
        options = tuple(option for option, _ in pairs)
        reads = any(option_reads for _, option_reads in pairs)
        sets = [option.symbols for option in options if isinstance(option, _Set)]
        if len(sets) == len(options):
            symbols = 0
            for bits in sets:
                symbols |= bits
            return _Set(symbols), True
        return _Either(options), reads
    item, reads = _simplify(node.item)
    if node.high == 0 or item == _EMPTY:
        return _EMPTY, False
    if not reads:
        return (item if node.low else _EMPTY), False
    if node.low == node.high == 1:
        return item, True
    return _Repeat(item, node.low, node.high), True


# --- automaton -----------------------------------------------------------------------------


class _Builder:
    """Thompson's construction, each piece built in front of the state that follows it."""

    def __init__(self) -> None:
        self.kinds: list[int] = [_MATCH]
        self.symbols: list[int] = [0]
        self.first: list[int] = [-1]
        self.second: list[int] = [-1]
        self.steps = 0

    def add(self, kind: int, symbols: int = 0, first: int = -1, second: int = -1) -> int:
        if len(self.kinds) >= MAX_STATES:
            raise PatternError(f"pattern is too complex (more than {MAX_STATES} states)", 0)
        self.kinds.append(kind)
        self.symbols.append(symbols)
        self.first.append(first)
        self.second.append(second)
        return len(self.kinds) - 1

    def build(self, node: _Node, then: int) -> int:
        """The state that matches ``node`` and goes on to ``then``."""
        self.steps += 1
        if self.steps > MAX_BUILD_STEPS:
            raise PatternError(
                f"pattern is too complex (more than {MAX_BUILD_STEPS} construction steps)", 0
            )
        if isinstance(node, _Set):
            return self.add(_CHAR, node.symbols, then)
        if isinstance(node, _Anchor):
            return self.add(_END if node.end else _BEGIN, 0, then)
        if isinstance(node, _Sequence):
            for item in reversed(node.items):
                then = self.build(item, then)
            return then
        if isinstance(node, _Either):
            starts = [self.build(option, then) for option in node.options]
            state = starts[-1]
            for start in reversed(starts[:-1]):
                state = self.add(_SPLIT, 0, start, state)
            return state
        state = then
        if node.high is None:  # item*: a loop back through a split
            loop = self.add(_SPLIT, 0, -1, then)
            self.first[loop] = self.build(node.item, loop)
            state = loop
        else:  # the optional copies, nested: (item(item)?)?
            for _ in range(node.high - node.low):
                state = self.add(_SPLIT, 0, self.build(node.item, state), then)
        for _ in range(node.low):
            state = self.build(node.item, state)
        return state


class DigitPattern:
    """A compiled digit pattern: ``fullmatch(digits)`` in time linear in ``len(digits)``."""

    __slots__ = (
        "_accepts",
        "_first",
        "_initial",
        "_kinds",
        "_memo",
        "_memo_size",
        "_second",
        "_start",
        "_symbols",
        "pattern",
        "visits",
    )

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise PatternError("a pattern is text", 0)
        if len(pattern) > MAX_PATTERN:
            raise PatternError(f"a pattern is at most {MAX_PATTERN} characters", MAX_PATTERN)
        self.pattern = pattern
        tree, _ = _simplify(_Parser(pattern).parse())
        builder = _Builder()
        start = builder.build(tree, 0)
        self._kinds = builder.kinds
        self._symbols = builder.symbols
        self._first = builder.first
        self._second = builder.second
        self._start = start
        #: For each symbol: the set (bit mask) of symbol states that accept it.
        self._accepts = {
            symbol: sum(
                1 << state
                for state, kind in enumerate(builder.kinds)
                if kind == _CHAR and builder.symbols[state] & bit
            )
            for symbol, bit in _BIT.items()
        }
        self._memo: dict[tuple[int, str, bool], int] = {}
        self._memo_size = min(4096, _MEMO_BITS // len(builder.kinds))
        #: States visited while following empty moves since the pattern was compiled (a
        #: measure of work: at most (symbols + 1) x states per match).
        self.visits = 0
        #: The states before the first symbol: of a non-empty input, of the empty one.
        self._initial = (
            self._closure([start], True, False),
            self._closure([start], True, True),
        )

    @property
    def states(self) -> int:
        """The number of states of the automaton."""
        return len(self._kinds)

    def __repr__(self) -> str:
        return f"DigitPattern({self.pattern!r})"

    def _closure(self, seeds: list[int], at_start: bool, at_end: bool) -> int:
        """The symbol and match states reachable from ``seeds`` without reading a symbol."""
        kinds, first, second = self._kinds, self._first, self._second
        seen = 0
        found = 0
        stack = seeds
        visits = 0
        while stack:
            state = stack.pop()
            bit = 1 << state
            if seen & bit:
                continue
            seen |= bit
            visits += 1
            kind = kinds[state]
            if kind in (_CHAR, _MATCH):
                found |= bit
            elif kind == _SPLIT:
                stack.append(second[state])
                stack.append(first[state])
            elif (kind == _BEGIN and at_start) or (kind == _END and at_end):
                stack.append(first[state])
        self.visits += visits
        return found

    def _step(self, states: int, symbol: str, at_end: bool) -> int:
        key = (states, symbol, at_end)
        memo = self._memo
        found = memo.get(key)
        if found is None:
            moving = states & self._accepts[symbol]
            seeds = []
            first = self._first
            while moving:
                low = moving & -moving
                seeds.append(first[low.bit_length() - 1])
                moving ^= low
            found = self._closure(seeds, False, at_end)
            if len(memo) < self._memo_size:
                memo[key] = found
        return found

    def fullmatch(self, digits: str) -> bool:
        """Whether the whole of ``digits`` matches (False for any symbol a caller cannot enter)."""
        size = len(digits)
        states = self._initial[size == 0]
        accepts = self._accepts
        memo = self._memo
        last = size - 1
        for index, symbol in enumerate(digits):
            found = memo.get((states, symbol, index == last))
            if found is None:
                if symbol not in accepts:
                    return False
                found = self._step(states, symbol, index == last)
            states = found
            if not states:
                return False
        return bool(states & 1)
