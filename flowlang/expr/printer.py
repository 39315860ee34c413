"""Printer: the canonical text of an AST, which parses back to an equal AST."""

from __future__ import annotations

__all__ = ["print_expression", "print_segment", "print_string", "print_template"]

import math
from decimal import Decimal

from flowlang.expr import ast
from flowlang.expr.syntax import Syntax

# Binding strength of each level of the grammar, loosest first.
_OR, _AND, _NOT, _COMPARE, _COALESCE, _PIPE, _POSTFIX = range(1, 8)

_STRING_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def print_string(value: str) -> str:
    """A double-quoted string literal; control characters and surrogates are escaped.

    The one exception: a low surrogate right after a high one is written as itself, because
    the two escapes side by side would read back as one character (a UTF-16 pair).
    """
    out = ['"']
    previous = ""
    for char in value:
        escaped = _STRING_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif "\udc00" <= char <= "\udfff" and "\ud800" <= previous <= "\udbff":
            out.append(char)
        elif char < " " or "\ud800" <= char <= "\udfff" or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
        previous = char
    out.append('"')
    return "".join(out)


def _print_literal(value: ast.LiteralValue) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a decimal literal is always finite")
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else text + ".0"
    return print_string(value)


def _precedence(node: ast.Expr) -> int:
    if isinstance(node, ast.BoolOp):
        return _OR if node.op == "or" else _AND
    if isinstance(node, ast.Not):
        return _NOT
    if isinstance(node, ast.Compare):
        return _COMPARE
    if isinstance(node, ast.Coalesce):
        return _COALESCE
    if isinstance(node, ast.Pipe):
        return _PIPE
    return _POSTFIX


def _operand(node: ast.Expr, minimum: int) -> str:
    """Print ``node``, in parentheses unless it binds at least as tight as ``minimum``."""
    text = print_expression(node)
    return text if _precedence(node) >= minimum else f"({text})"


def print_segment(segment: ast.Segment) -> str:
    """``.name`` or ``[index]``."""
    if isinstance(segment, ast.Member):
        return f".{segment.name}"
    return f"[{print_expression(segment.index)}]"


def print_expression(node: ast.Expr) -> str:
    """The canonical text of an expression."""
    if isinstance(node, ast.Literal):
        return _print_literal(node.value)
    if isinstance(node, ast.ListLiteral):
        return "[" + ", ".join(print_expression(item) for item in node.items) + "]"
    if isinstance(node, ast.Path):
        if isinstance(node.base, ast.Root):
            base = node.base.name
        elif isinstance(node.base, (ast.Literal, ast.ListLiteral)):
            base = print_expression(node.base)
        else:
            base = f"({print_expression(node.base)})"
        return base + "".join(print_segment(segment) for segment in node.segments)
    if isinstance(node, ast.Not):
        return "not " + _operand(node.operand, _NOT)
    if isinstance(node, ast.BoolOp):
        strength = _OR if node.op == "or" else _AND
        return f" {node.op} ".join(_operand(item, strength + 1) for item in node.operands)
    if isinstance(node, ast.Compare):
        return f"{_operand(node.left, _COALESCE)} {node.op} {_operand(node.right, _COALESCE)}"
    if isinstance(node, ast.Coalesce):
        return " ?? ".join(_operand(item, _PIPE) for item in node.operands)
    if isinstance(node, ast.Pipe):
        filters = "".join(_print_filter(call) for call in node.filters)
        return _operand(node.operand, _POSTFIX) + filters
    raise TypeError(f"not an expression node: {node!r}")  # pragma: no cover


def _print_filter(call: ast.FilterCall) -> str:
    if not call.args:
        return f" | {call.name}"
    return f" | {call.name}(" + ", ".join(print_expression(arg) for arg in call.args) + ")"


def print_template(tree: ast.TemplateTree, syntax: Syntax) -> str:
    """The canonical text of a template; literal delimiters in text are escaped."""
    out = []
    parts = tree.parts
    for position, part in enumerate(parts):
        if isinstance(part, ast.Hole):
            out.append(f"{syntax.open}{print_expression(part.expr)}{syntax.close}")
            continue
        text = _escape_text(part, syntax)
        if position + 1 < len(parts):  # a hole follows: its delimiter must not look escaped
            text += "\\" * (len(text) - len(text.rstrip("\\")))
        out.append(text)
    return "".join(out)


def _escape_text(text: str, syntax: Syntax) -> str:
    """Escape each opening delimiter in literal text, doubling the backslashes before it."""
    pieces = text.split(syntax.open)
    out = [pieces[0]]
    for piece in pieces[1:]:
        previous = out[-1]
        out[-1] = previous + "\\" * (len(previous) - len(previous.rstrip("\\")))
        out.append("\\" + syntax.open + piece)
    return "".join(out)
