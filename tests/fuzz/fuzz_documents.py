"""Fuzz the document loader: any bytes load (or check) as a flow or raise a FlowError.

load_document (YAML hardening, depth and size limits, non-UTF-8 text) and load_flow
(checking and compiling every field). Run: python tests/fuzz/fuzz_documents.py CORPUS_DIR
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from flowlang.errors import FlowError
    from flowlang.flow import load_flow_text
    from flowlang.flow.source import load_document


def one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
    try:
        load_document(text)
    except FlowError:
        return
    # A newline keeps the text from being taken for a file name (one line naming a file).
    with contextlib.suppress(FlowError):
        load_flow_text(text + "\n")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
