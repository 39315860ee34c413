"""``flowlang schema flow|workflow``: print the JSON Schema shipped in the package (for editors),
or with ``--path`` where the installed file is (for a ``yaml-language-server`` modeline)."""

from __future__ import annotations

__all__ = ["add_schema_command"]

import argparse
from pathlib import Path
from typing import Any, TextIO

from flowlang.automations.schema import SCHEMA_FILE as WORKFLOW_SCHEMA
from flowlang.cli.inputs import EXIT_OK, EXIT_STATUSES, UsageError
from flowlang.flow.schema import SCHEMA_FILE as FLOW_SCHEMA

#: The shipped schema file of each kind of document.
SCHEMAS: dict[str, Path] = {"flow": FLOW_SCHEMA, "workflow": WORKFLOW_SCHEMA}


def add_schema_command(commands: Any) -> None:
    """Add ``schema`` to the subcommands ``commands`` (argparse's subparsers action)."""
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of flow or workflow documents (for editors)",
        description="Print the JSON Schema of flow or workflow documents shipped in the "
        "package, or (--path) where the installed file is: point a YAML language server at it.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.add_argument("document", choices=sorted(SCHEMAS), help="which kind of document")
    schema.add_argument(
        "--path", action="store_true", help="print the installed file's path, not its text"
    )
    schema.set_defaults(handler=_schema)


def _schema(arguments: argparse.Namespace, stdout: TextIO, stdin: TextIO) -> int:
    path = SCHEMAS[arguments.document]
    if arguments.path:
        stdout.write(f"{path}\n")
        return EXIT_OK
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(
            f"the {arguments.document} schema is missing from the installed package ({path}: "
            f"{error.strerror}); reinstall flowlang"
        ) from None
    stdout.write(text)
    return EXIT_OK
