"""Golden flow cases in tests/golden/kinds/<kind>.yaml: the executable spec of each step kind.

Each case is a flow, the data a call brings (context, secrets, recorded responses, the caller's
digits at each step that takes input, the clock) and what must come out: the status, the trace
(step and outcome per row), the host instructions (a ``say`` shows a value), an error text. Every
case runs on both step loops, and every registered kind has a file with cases.

```yaml
kind: http_request
cases:
  - name: a success goes to next and keeps the response
    flow: |               # a whole flow document
      ...
    context: {call: {id: c-1}}          # optional
    secrets: {crm_token: s3cret}        # optional
    responses: [...]                    # optional, in the --responses shape
    inputs: ["12#", null]               # optional: digits at each wait, in order (null: none)
    now: "2026-03-29T01:30:00+00:00"    # optional: the clock of the run (an aware ISO time)
    expect:
      status: completed
      trace: [[lookup, success], [greet, said]]
      instructions: [{action: say, step: greet, text: Hello}]
      error: "took longer"              # optional: text in the run's error
```
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import kind_cases, registered_without_cases

from flowlang import Engine, load_flow_text
from flowlang.expr.backends import AVAILABLE
from flowlang.kinds.registry import STEP_KINDS
from flowlang.runtime.host import RecordingHost
from flowlang.runtime.recorded import load_recorded_responses
from flowlang.runtime.runner import Runtime
from flowlang.runtime.secrets import MappingSecrets

KINDS = Path(__file__).parent / "golden" / "kinds"
#: The most waits a case may answer (every loop in a test is bounded).
MAX_WAITS = 20


def run_case(case: dict[str, Any], loop: str, tmp_path: Path) -> Any:
    """Run one golden case on the ``loop`` backend (templates and step loop); the result,
    with the traces of every resumed part joined, and the host's instructions."""
    flow = load_flow_text(case["flow"], name=f"{case['name']}.yaml", engine=Engine(backend=loop))
    options: dict[str, Any] = {
        "backend": loop,
        "secrets": MappingSecrets(case.get("secrets", {})),
        "host": RecordingHost(),
    }
    if "responses" in case:
        responses = tmp_path / "responses.yaml"
        responses.write_text(yaml.safe_dump(case["responses"]), encoding="utf-8")
        options["http"] = load_recorded_responses(responses)
    if "now" in case:
        moment = datetime.fromisoformat(case["now"])
        options["clock"] = lambda: moment

    async def main() -> Any:
        pending = list(case.get("inputs", []))
        async with Runtime(**options) as runtime:
            result = await runtime.start(flow, case.get("context"))
            trace = list(result.trace)
            for _ in range(MAX_WAITS):
                if result.status != "waiting_for_input" or not pending:
                    break
                result = await runtime.resume(flow, result.state or {}, pending.pop(0))
                trace += result.trace
            result.trace = trace
            return result, options["host"].instructions

    return asyncio.run(main())


@pytest.mark.parametrize("loop", AVAILABLE)
@pytest.mark.parametrize("case", kind_cases(KINDS))
def test_kind_golden(case: dict[str, Any], loop: str, tmp_path: Path) -> None:
    result, told = run_case(case, loop, tmp_path)
    expect = case["expect"]
    rows = [[row["step"], row["outcome"]] for row in result.trace]
    assert result.status == expect["status"], (result.status, result.error, rows)
    if "trace" in expect:
        assert rows == expect["trace"]
    if "instructions" in expect:
        assert result.instructions == expect["instructions"]
        assert told == expect["instructions"]  # what the host was told is what was recorded
    if "error" in expect:
        assert expect["error"] in (result.error or ""), result.error


def test_every_registered_kind_has_golden_cases() -> None:
    assert registered_without_cases(KINDS, STEP_KINDS) == ([], [])
