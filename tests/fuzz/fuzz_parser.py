"""Fuzz the scanner and parser: any text compiles or raises FlowSyntaxError/FlowLimitError.

Also: a parsed template printed back parses to the same tree (both syntaxes), and the fast
path for plain paths agrees with the grammar. Run: python tests/fuzz/fuzz_parser.py CORPUS_DIR
(libFuzzer options such as -max_total_time=60 pass through).
"""

from __future__ import annotations

import sys

import atheris
from common import text_of

with atheris.instrument_imports():
    from flowlang.errors import FlowLimitError, FlowSyntaxError
    from flowlang.expr.limits import Limits
    from flowlang.expr.parser import _parse_plain_path, _parse_with_lark, parse_template
    from flowlang.expr.printer import print_template
    from flowlang.expr.syntax import SYNTAXES

LIMITS = Limits()


def one_input(data: bytes) -> None:
    source = text_of(data)
    for syntax in SYNTAXES.values():
        try:
            tree = parse_template(source, syntax, LIMITS)
        except (FlowSyntaxError, FlowLimitError):
            continue
        printed = print_template(tree, syntax)
        again = parse_template(printed, syntax, LIMITS)
        assert again == tree, (source, printed)
    if len(source) <= 200:
        fast = _parse_plain_path(source, 0)
        if fast is not None:
            try:
                slow = _parse_with_lark(source, source, 0)
            except FlowSyntaxError:
                return  # e.g. a keyword as root: only the grammar decides
            assert fast == slow, source


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
