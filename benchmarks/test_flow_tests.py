"""``flowlang test`` of 1,000 cases (issue 11): the account-verification flow's seven example
cases repeated to 1,000, run by the command line in-process (read, run offline on virtual
time, compare, coverage), on each step loop. Outside `make test` and `make bench`:

    make bench-tests

prints the cases per second of each loop (the README's figures).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flowlang.cli import main
from flowlang.expr.backends import AVAILABLE
from flowlang.flow.source import load_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"
CASES = 1000


@pytest.fixture(scope="module")
def thousand_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    shutil.copy(EXAMPLES / "account_verification.yaml", folder / "account_verification.yaml")
    data: dict[str, Any] = load_document(EXAMPLES / "tests" / "account_verification.test.yaml").data
    data["flow"] = "account_verification.yaml"
    examples = data["cases"]
    data["cases"] = [
        {**examples[number % len(examples)], "name": f"case {number}"} for number in range(CASES)
    ]
    path = folder / "thousand.test.yaml"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("backend", ["cython", "python"])
def test_flowlang_test_of_1000_cases(benchmark: Any, thousand_cases: Path, backend: str) -> None:
    if backend not in AVAILABLE:
        pytest.skip("the compiled step loop is not built")
    benchmark.group = "flowlang test, 1,000 cases"

    def run() -> str:
        out = io.StringIO()
        assert main(["test", str(thousand_cases), "--backend", backend, "--coverage"], out) == 0
        return out.getvalue()

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert f"{CASES} passed in 1 file(s)" in out
    median = benchmark.stats.stats.median
    print(f"\nflowlang test, {CASES} cases, {backend} loop: {CASES / median:,.0f} cases/s")
