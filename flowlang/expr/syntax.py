"""Syntax: template delimiters and the lexical facts shared by the scanner, parser and printer."""

from __future__ import annotations

__all__ = [
    "KEYWORDS",
    "NAME_PATTERN",
    "QUOTE_PAIRS",
    "SYNTAXES",
    "Syntax",
    "get_syntax",
]

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Syntax:
    """The delimiters of template holes; ``\\`` before an opening delimiter makes it literal."""

    name: str
    open: str
    close: str


SYNTAXES = {
    "flowlang": Syntax("flowlang", "<<", ">>"),
    "cloudtalk": Syntax("cloudtalk", "{{", "}}"),
}


def get_syntax(name: str) -> Syntax:
    """Return the syntax called ``name`` or raise ValueError listing the known ones."""
    try:
        return SYNTAXES[name]
    except KeyError:
        known = ", ".join(repr(key) for key in SYNTAXES)
        raise ValueError(f"unknown syntax {name!r}; expected one of {known}") from None


#: An opening quote and the characters that close it (as in grammar/flowlang.lark).
QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "“": "“”",
    "”": "“”",
    "„": "“”",
    "‘": "‘’",
    "’": "‘’",
    "‚": "‘’",
}

#: A name: a root, a member after a dot, a filter (as the NAME terminal of the grammar).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

#: Words that are keywords, so cannot be a root name (they may follow a dot).
KEYWORDS = frozenset(
    ["true", "false", "null", "and", "or", "not", "in", "contains", "starts_with", "ends_with"]
)
