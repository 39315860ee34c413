"""Parser: template text to AST, through the scanner and the Lark LALR grammar.

Lark runs only here, at compile time. Its callbacks build flowlang's own AST while the LALR
parser reduces (no Lark tree, no recursive transform), so a deep input cannot overflow the
stack. Plain paths such as ``contact.custom_fields["MRR"]`` take a fast path that yields the
very same AST (a property test checks that it agrees with the grammar).
"""

from __future__ import annotations

__all__ = ["parse_expression", "parse_template"]

import re
import threading
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from flowlang.errors import FlowSyntaxError
from flowlang.expr import ast
from flowlang.expr.limits import Limits
from flowlang.expr.scanner import HoleSpan, scan_template
from flowlang.expr.syntax import KEYWORDS, Syntax

#: Lark token types the error messages look at (names from grammar/flowlang.lark).
_END, _INT, _LPAR, _LSQB, _NAME, _PIPE = "$END", "INT", "LPAR", "LSQB", "NAME", "PIPE"

GRAMMAR_FILE = "flowlang.lark"


def load_grammar_text() -> str:
    """The text of grammar/flowlang.lark, from the installed package or the source tree."""
    try:
        return resources.files("flowlang.grammar").joinpath(GRAMMAR_FILE).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        source_tree = FilePath(__file__).resolve().parents[2] / "grammar" / GRAMMAR_FILE
        return source_tree.read_text("utf-8")


# --- literals -------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "/": "/",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "“": "“",
    "”": "”",
    "‘": "‘",
    "’": "’",
}


class _LiteralError(Exception):
    """A literal that cannot be decoded; carries an absolute span for the syntax error."""

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end


def decode_string(token_text: str, start: int) -> str:
    """Decode a quoted string token (quotes included) whose first character is at ``start``."""
    body = token_text[1:-1]
    if "\\" not in body:
        return body
    pieces: list[str] = []
    position = 0
    pending_high: str | None = None
    for match in _ESCAPE.finditer(body):
        pieces.append(body[position : match.start()])
        code = match.group(1)
        if len(code) == 5:
            char = chr(int(code[1:], 16))
            if (
                pending_high is not None
                and match.start() == position
                and "\udc00" <= char <= "\udfff"
            ):
                pieces.pop()  # the empty text between the two escapes
                pieces[-1] = chr(
                    0x10000 + ((ord(pending_high) - 0xD800) << 10) + (ord(char) - 0xDC00)
                )
                pending_high = None
                position = match.end()
                continue
            pending_high = char if "\ud800" <= char <= "\udbff" else None
            pieces.append(char)
        else:
            pending_high = None
            decoded = _SIMPLE_ESCAPES.get(code)
            if decoded is None:
                offset = start + 1 + match.start()
                raise _LiteralError(f"unknown escape sequence '\\{code}'", offset, offset + 2)
            pieces.append(decoded)
        position = match.end()
    pieces.append(body[position:])
    return "".join(pieces)


def decode_number(text: str, start: int) -> int | float:
    """Decode an INT or DECIMAL token."""
    if "." not in text:
        return int(text)
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _LiteralError("number is out of range", start, start + len(text))
    return value


# --- Lark callbacks -------------------------------------------------------------------------

_offset = threading.local()


def _start(item: Any) -> int:
    """Offset in the template where a token or node starts."""
    if isinstance(item, Token):
        return int(item.start_pos or 0) + int(_offset.value)
    return int(item.start)


def _end(item: Any) -> int:
    """Offset in the template just past a token or node."""
    if isinstance(item, Token):
        return int(item.end_pos or 0) + int(_offset.value)
    return int(item.end)


def _nodes(children: list[Any]) -> tuple[Any, ...]:
    return tuple(child for child in children if not isinstance(child, Token))


class _BuildAst(Transformer[Token, Any]):
    """LALR callbacks: each turns the reduced children into flowlang AST nodes."""

    def root(self, children: list[Any]) -> ast.Path:
        token = children[0]
        start, end = _start(token), _end(token)
        if str(token) in KEYWORDS:
            # The contextual lexer reads a keyword as a NAME where the keyword cannot stand.
            raise _LiteralError(f"{str(token)!r} is a keyword and cannot start a path", start, end)
        return ast.Path(ast.Root(str(token), start=start, end=end), (), start=start, end=end)

    def literal(self, children: list[Any]) -> ast.Literal:
        token = children[0]
        start, end = _start(token), _end(token)
        kind = token.type
        value: ast.LiteralValue
        if kind in ("STRING", "TYPO_DQ_STRING", "TYPO_SQ_STRING"):
            value = decode_string(str(token), start)
        elif kind in ("INT", "DECIMAL"):
            value = decode_number(str(token), start)
        else:
            value = {"TRUE": True, "FALSE": False, "NULL": None}[kind]
        return ast.Literal(value, start=start, end=end)

    def list_literal(self, children: list[Any]) -> ast.ListLiteral:
        items = children[1] if len(children) == 3 and children[1] is not None else ()
        return ast.ListLiteral(tuple(items), start=_start(children[0]), end=_end(children[-1]))

    def list_items(self, children: list[Any]) -> tuple[Any, ...]:
        return _nodes(children)

    def arguments(self, children: list[Any]) -> tuple[Any, ...]:
        return _nodes(children)

    def group(self, children: list[Any]) -> Any:
        return children[1]

    def member(self, children: list[Any]) -> ast.Member:
        name = children[0]
        return ast.Member(str(name), start=_start(name), end=_end(name))

    def keyword(self, children: list[Any]) -> Token:
        return children[0]  # type: ignore[no-any-return]

    def member_segment(self, children: list[Any]) -> ast.Member:
        dot, member = children
        return ast.Member(member.name, start=_start(dot), end=member.end)

    def index_segment(self, children: list[Any]) -> ast.Index:
        return ast.Index(children[1], start=_start(children[0]), end=_end(children[2]))

    def postfix(self, children: list[Any]) -> ast.Path:
        # ``primary segment+``, reduced once for the whole chain: the path is built in one go.
        target = children[0]
        segments: tuple[ast.Segment, ...] = tuple(children[1:])
        if isinstance(target, ast.Path):  # ``(a.b).c`` is the path ``a.b.c``
            base, segments = target.base, (*target.segments, *segments)
        else:
            base = target
        return ast.Path(base, segments, start=target.start, end=segments[-1].end)

    def not_expr(self, children: list[Any]) -> ast.Not:
        return ast.Not(children[1], start=_start(children[0]), end=_end(children[1]))

    def _bool_op(self, op: str, children: list[Any]) -> ast.BoolOp:
        operands = _nodes(children)
        return ast.BoolOp(op, operands, start=_start(operands[0]), end=_end(operands[-1]))

    def and_expr(self, children: list[Any]) -> ast.BoolOp:
        return self._bool_op("and", children)

    def or_expr(self, children: list[Any]) -> ast.BoolOp:
        return self._bool_op("or", children)

    def comp_op(self, children: list[Any]) -> str:
        return " ".join(str(token) for token in children)

    def comparison(self, children: list[Any]) -> ast.Compare:
        left, op, right = children
        return ast.Compare(op, left, right, start=_start(left), end=_end(right))

    def coalesce(self, children: list[Any]) -> ast.Coalesce:
        operands = _nodes(children)
        return ast.Coalesce(operands, start=_start(operands[0]), end=_end(operands[-1]))

    def filter(self, children: list[Any]) -> ast.FilterCall:
        name = children[0]
        args = children[2] if len(children) == 4 and children[2] is not None else ()
        return ast.FilterCall(str(name), tuple(args), start=_start(name), end=_end(children[-1]))

    def pipe(self, children: list[Any]) -> ast.Pipe:
        operand = children[0]
        filters = tuple(child for child in children[1:] if isinstance(child, ast.FilterCall))
        return ast.Pipe(operand, filters, start=_start(operand), end=filters[-1].end)


_parser_lock = threading.Lock()
_lark: Lark | None = None


def _get_lark() -> Lark:
    global _lark
    if _lark is None:
        with _parser_lock:
            if _lark is None:
                _lark = Lark(
                    load_grammar_text(),
                    parser="lalr",
                    lexer="contextual",
                    keep_all_tokens=True,
                    maybe_placeholders=True,
                    transformer=_BuildAst(),
                )
    return _lark


# --- the fast path for plain paths ----------------------------------------------------------

_FAST_ROOT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*)")
_FAST_SEGMENT = re.compile(
    r"""\s*(?:
        (\.)\s*([A-Za-z_][A-Za-z0-9_-]*)
      | (\[)\s*(?:(-?[0-9]{1,18})|"([^"\\]*)"|'([^'\\]*)')\s*(\])
    )""",
    re.VERBOSE,
)
_TRAILING_SPACE = re.compile(r"\s*")


def _parse_plain_path(text: str, offset: int) -> ast.Path | None:
    """Parse ``text`` if it is a plain path of names, integer and simple string keys."""
    match = _FAST_ROOT.match(text)
    if match is None or match.group(1) in KEYWORDS:
        return None
    name = match.group(1)
    root = ast.Root(name, start=offset + match.start(1), end=offset + match.end(1))
    segments: list[ast.Segment] = []
    position = match.end()
    length = len(text)
    while True:
        match = _FAST_SEGMENT.match(text, position)
        if match is None:
            break
        if match.group(1):
            segments.append(
                ast.Member(match.group(2), start=offset + match.start(1), end=offset + match.end(2))
            )
        else:
            digits = match.group(4)
            if digits is not None:
                literal_start = match.start(4)
                literal = ast.Literal(
                    int(digits), start=offset + literal_start, end=offset + match.end(4)
                )
            else:
                group = 5 if match.group(5) is not None else 6
                literal = ast.Literal(
                    match.group(group),
                    start=offset + match.start(group) - 1,
                    end=offset + match.end(group) + 1,
                )
            segments.append(
                ast.Index(literal, start=offset + match.start(3), end=offset + match.end(7))
            )
        position = match.end()
    trailing = _TRAILING_SPACE.match(text, position)
    if trailing is None or trailing.end() != length:
        return None
    end = segments[-1].end if segments else root.end
    return ast.Path(root, tuple(segments), start=root.start, end=end)


# --- errors ---------------------------------------------------------------------------------

_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "TYPO_DQ_STRING": "a string",
    "TYPO_SQ_STRING": "a string",
    "INT": "a number",
    "DECIMAL": "a number",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "NULL": "'null'",
    "NOT": "'not'",
    "AND": "'and'",
    "OR": "'or'",
    "IN": "'in'",
    "CONTAINS": "'contains'",
    "STARTS_WITH": "'starts_with'",
    "ENDS_WITH": "'ends_with'",
    "EQ": "'=='",
    "NE": "'!='",
    "LT": "'<'",
    "LE": "'<='",
    "GT": "'>'",
    "GE": "'>='",
    "COALESCE": "'??'",
    "PIPE": "'|'",
    "DOT": "'.'",
    "COMMA": "','",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "$END": "the end of the expression",
}
_EXPRESSION_STARTS = {"NAME", "STRING", "INT", "LSQB", "LPAR"}
_CHARACTER_HINTS = {
    "=": "use '==' to compare",
    "&": "use 'and'",
    "!": "use 'not' or '!='",
    "{": "maps cannot be written in expressions",
    "}": "maps cannot be written in expressions",
    "+": "there is no arithmetic in expressions",
    "*": "there is no arithmetic in expressions",
    "/": "there is no arithmetic in expressions",
}


def _describe_found(token: Token) -> str:
    if token.type == _END:
        return "the end of the expression"
    return f"{str(token)!r}"


def _open_bracket(error: UnexpectedToken) -> tuple[Token, Any] | None:
    """The innermost bracket still open when the parser failed, and what stands before it."""
    interactive = error.interactive_parser
    if interactive is None:
        return None
    stack = interactive.parser_state.value_stack
    for position in range(len(stack) - 1, -1, -1):
        item = stack[position]
        if isinstance(item, Token) and item.type in (_LSQB, _LPAR):
            before = stack[position - 1] if position > 0 else None
            return item, before
    return None


def _previous_value(error: UnexpectedToken) -> Any:
    """What the parser had just read when it failed (a token or an AST node)."""
    interactive = error.interactive_parser
    if interactive is None or not interactive.parser_state.value_stack:
        return None
    return interactive.parser_state.value_stack[-1]


def _token_error_message(error: UnexpectedToken) -> str:
    expected = set(error.expected)
    found = _describe_found(error.token)
    if "RSQB" in expected or "RPAR" in expected:
        opened = _open_bracket(error)
        if opened is not None:
            bracket, before = opened
            if bracket.type == _LSQB and "RSQB" in expected:
                what = (
                    "the index"
                    if before is not None and not isinstance(before, Token)
                    else "the list"
                )
                return f"expected ']' to close {what}, found {found}"
            if bracket.type == _LPAR and "RPAR" in expected:
                what = (
                    "the filter arguments"
                    if isinstance(before, Token) and before.type == _NAME
                    else "the parentheses"
                )
                return f"expected ')' to close {what}, found {found}"
    if expected >= _EXPRESSION_STARTS:
        return f"expected an expression, found {found}"
    if (
        expected
        <= {
            "NAME",
            "TRUE",
            "FALSE",
            "NULL",
            "NOT",
            "AND",
            "OR",
            "IN",
            "CONTAINS",
            "STARTS_WITH",
            "ENDS_WITH",
        }
        and "NAME" in expected
    ):
        previous = _previous_value(error)
        if isinstance(previous, Token) and previous.type == _PIPE:
            return f"expected a filter name after '|', found {found}"
        if error.token.type == _INT:
            return f"expected a name after '.', found {found}; write [{error.token}] for an index"
        return f"expected a name after '.', found {found}"
    if error.token.type == _END:
        return "unexpected end of the expression"
    previous = _previous_value(error)
    if error.token.type == _LPAR and isinstance(previous, Token) and previous.type == _NAME:
        return (
            f"unexpected '(' after {str(previous)!r}: "
            "filters are applied with '|', as in value | name(argument)"
        )
    if (
        error.token.type
        in ("EQ", "NE", "LT", "LE", "GT", "GE", "IN", "CONTAINS", "STARTS_WITH", "ENDS_WITH")
        and "$END" in expected
    ):
        return (
            f"unexpected {found}: a comparison takes one operator; "
            "use parentheses and 'and' to combine comparisons"
        )
    if _open_bracket(error) is None:
        return (
            f"unexpected {found}; expected an operator, '|' and a filter, "
            "or the end of the expression"
        )
    names = sorted({_TERMINAL_NAMES.get(name, name) for name in expected})
    listed = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    return f"unexpected {found}; expected one of: {listed}"


def _syntax_error(
    error: UnexpectedInput, source: str, offset: int, text_end: int
) -> FlowSyntaxError:
    """Turn a Lark error into a FlowSyntaxError that says what was expected, and where."""
    if isinstance(error, UnexpectedToken):
        token = error.token
        message = _token_error_message(error)
        if token.type == _END:
            return FlowSyntaxError(message, source, text_end)
        token_start = offset + int(token.start_pos or 0)
        token_end = offset + int(token.end_pos or 0)
        return FlowSyntaxError(message, source, token_start, token_end)
    if isinstance(error, UnexpectedCharacters):
        char = error.char
        hint = _CHARACTER_HINTS.get(char)
        message = f"unexpected character {char!r}" + (f"; {hint}" if hint else "")
        return FlowSyntaxError(message, source, offset + int(error.pos_in_stream or 0))
    return FlowSyntaxError(str(error).splitlines()[0], source, offset)  # pragma: no cover


# --- entry points ---------------------------------------------------------------------------


def parse_expression(source: str, start: int, end: int, limits: Limits) -> ast.Expr:
    """Parse ``source[start:end]`` as one expression; spans count in ``source``."""
    text = source[start:end]
    if end - start > limits.max_expression_length:
        raise FlowSyntaxError(
            f"expression is longer than {limits.max_expression_length} characters",
            source,
            start,
            end,
        )
    tree: ast.Expr | None = _parse_plain_path(text, start)
    if tree is None:
        if not text.strip():
            raise FlowSyntaxError("expected an expression", source, start, max(end, start + 1))
        tree = _parse_with_lark(source, text, start)
    _check_size(tree, source, limits)
    return tree


def _parse_with_lark(source: str, text: str, start: int) -> ast.Expr:
    parser = _get_lark()
    _offset.value = start
    try:
        tree: ast.Expr = parser.parse(text)  # type: ignore[assignment]
        return tree
    except _LiteralError as error:
        raise FlowSyntaxError(error.message, source, error.start, error.end) from None
    except UnexpectedInput as error:
        text_end = start + len(text.rstrip())
        raise _syntax_error(error, source, start, text_end) from None


def _check_size(tree: ast.Expr, source: str, limits: Limits) -> None:
    """Refuse a tree over the depth or node limits, pointing at where the limit is crossed."""
    if tree.size > limits.max_nodes:
        raise FlowSyntaxError(
            f"expression has more than {limits.max_nodes} nodes", source, tree.start, tree.end
        )
    if tree.depth <= limits.max_depth:
        return
    node: ast.Node = tree
    while True:  # walk down the deepest branch to the node that crosses the limit
        deeper = [child for child in node.children() if child.depth > limits.max_depth]
        if not deeper:
            break
        node = deeper[0]
    raise FlowSyntaxError(
        f"expression nests deeper than {limits.max_depth} levels", source, node.start
    )


def parse_template(source: str, syntax: Syntax, limits: Limits) -> ast.TemplateTree:
    """Parse a whole template: literal text and ``<<expr>>`` holes."""
    parts: list[str | ast.Hole] = []
    for part in scan_template(source, syntax, limits):
        if isinstance(part, HoleSpan):
            expr = parse_expression(source, part.expr_start, part.expr_end, limits)
            parts.append(ast.Hole(expr, part.start, part.end))
        else:
            parts.append(part)
    return ast.TemplateTree(tuple(parts))
