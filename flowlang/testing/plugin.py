"""The pytest plugin (entry point ``pytest11``): ``pytest`` collects flow test files
(``*.test.yaml``) too, each case a test item whose failure reads as ``flowlang test`` shows it.
Only flowlang's own are collected: a regular file, UTF-8, with a top-level ``flow:`` or
``workflows:`` key (a cheap look at its lines; another tool's ``lint.test.yaml`` is left alone).
A passing case's warnings (unused recordings or inputs) are Python warnings of the class
:class:`flowlang.FlowTestWarning`, shown in pytest's warnings summary (``filterwarnings =
error`` fails them); a failing case's report lists them.

Importing this module imports pytest only: flowlang's loader and runtime are imported when a
test file is collected. Options: ``--flow-backend`` (the step loop) and ``--flow-strict``
(unused recordings and inputs fail their case).
"""

from __future__ import annotations

__all__ = ["FlowCaseItem", "FlowTestFile", "is_flow_test_file"]

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flowlang.errors import FlowTestWarning  # a light module (no loader, no runtime)

if TYPE_CHECKING:
    from flowlang.testing.session import Session
    from flowlang.testing.spec import Case, CasesFile

#: The suffix of the files collected.
SUFFIX = ".test.yaml"
_SESSION = pytest.StashKey["Session"]()
#: The most bytes of a file read to find its top-level keys.
_MAX_SCAN = 16 * 1024 * 1024
_OUR_KEYS = ("flow", "workflows")


def is_flow_test_file(path: Path) -> bool:
    """Whether ``path`` is a flowlang test file: a regular file of UTF-8 text with a
    top-level ``flow:`` or ``workflows:`` key (its lines are looked at, nothing is loaded)."""
    try:
        if not path.is_file():  # never open a FIFO or a device
            return False
        with path.open("rb") as stream:
            data = stream.read(_MAX_SCAN + 1)
    except OSError:
        return False
    try:
        text = data[:_MAX_SCAN].decode("utf-8", "ignore" if len(data) > _MAX_SCAN else "strict")
    except UnicodeDecodeError:
        return False
    for line in text.removeprefix("\ufeff").splitlines():  # a byte order mark aside
        if line[:1] in ("", " ", "\t", "#", "-"):  # not a top-level key
            continue
        if line.partition(":")[0].strip().strip("{'\" ") in _OUR_KEYS:
            return True
    return False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowlang", "flow tests (*.test.yaml)")
    group.addoption(
        "--flow-backend",
        choices=("cython", "python"),
        default=None,
        help="the step loop flow cases run on (default: the compiled one when built)",
    )
    group.addoption(
        "--flow-strict",
        action="store_true",
        default=False,
        help="unused recorded responses and inputs fail their case",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIX) and is_flow_test_file(file_path):
        collector: pytest.Collector = FlowTestFile.from_parent(parent, path=file_path)
        return collector
    return None


def _session(config: pytest.Config) -> Session:
    session = config.stash.get(_SESSION, None)
    if session is None:
        from flowlang.testing.session import Session

        session = Session(
            backend=config.getoption("flow_backend"), strict=config.getoption("flow_strict")
        )
        config.stash[_SESSION] = session
    return session


class FlowTestFile(pytest.File):
    """A flow test file: one item per case."""

    def collect(self) -> Iterator[pytest.Item]:
        outcome = _session(self.config).read(self.path)
        # CollectError: pytest shows its message alone, without a traceback.
        if outcome.error is not None:
            raise self.CollectError(_printable(f"the test file cannot be read:\n{outcome.error}"))
        if outcome.load_error is not None:
            raise self.CollectError(
                _printable(f"what the test file tests does not load:\n{outcome.load_error}")
            )
        cases_file = outcome.cases_file
        assert cases_file is not None
        for case in cases_file.cases:
            yield FlowCaseItem.from_parent(
                self, name=_item_name(case.name), cases_file=cases_file, case=case
            )


class FlowCaseItem(pytest.Item):
    """One case of a flow test file."""

    def __init__(self, *, cases_file: CasesFile, case: Case, **options: Any) -> None:
        super().__init__(**options)
        self.cases_file = cases_file
        self.case = case

    def runtest(self) -> None:
        from flowlang.cli.testing import case_report

        outcome = _session(self.config).run_case_now(self.cases_file, self.case)
        if outcome.failures:
            pytest.fail(case_report(outcome), pytrace=False)  # the report alone, no traceback
        for warning in outcome.warnings:  # redacted, made printable
            warnings.warn(FlowTestWarning(_printable(warning)), stacklevel=1)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        position = self.cases_file.document.position(self.case.pointer)
        return self.path, position.line - 1, f"case {self.case.name!r}"


def _item_name(name: str) -> str:
    """A case name as a pytest item's: on one line, control characters escaped, and no
    ``::`` (pytest's separator of node ids)."""
    return _printable(name, one_line=True).replace("::", ":\\:")


def _printable(text: str, *, one_line: bool = False) -> str:
    from flowlang.cli.terminal import printable

    return printable(text, one_line=one_line)
