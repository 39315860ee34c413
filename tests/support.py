"""Test helpers: YAML with JSON scalars only, typed deep equality, and a fake clock."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import yaml


class JsonScalarLoader(yaml.SafeLoader):
    """YAML whose plain scalars resolve as in JSON: no `yes`/`no` booleans, octal or dates."""


JsonScalarLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|false)$", "tf"),
    ("tag:yaml.org,2002:null", r"^(?:null|)$", ["n", ""]),
    ("tag:yaml.org,2002:int", r"^-?(?:0|[1-9][0-9]*)$", "-0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)$",
        "-0123456789",
    ),
):
    JsonScalarLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def load_yaml(path: Path) -> Any:
    """Load a YAML file with JSON scalars."""
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=JsonScalarLoader)


def same(actual: Any, expected: Any) -> bool:
    """Equality that also requires equal types: 1, 1.0 and True are three different results."""
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in actual
        )
    return bool(actual == expected)


class FakeClock:
    """Time that moves only when a retry waits; every wait is recorded."""

    def __init__(self) -> None:
        self.current = 1_800_000_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.current += seconds
        await asyncio.sleep(0)
