"""The README stays true: every ```python block in it runs, and gives the values it shows.

Each block runs under the section it sits in, with what that section's harness below gives
it: the stand-ins for the embedder's side that the README names, and recorded responses in
place of the network. A block that truly cannot run is marked in the README by the line
``<!-- not run: REASON -->`` just before it; it is still compiled, and its test id carries the
reason. A new block without a harness or a mark fails ``test_every_python_block_runs``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import flowlang
from flowlang.runtime.recorded import load_recorded_responses

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")


@dataclass(frozen=True)
class Block:
    section: str  # the heading it sits under, without the #s
    line: int  # where its code starts in README.md
    code: str
    not_run: str | None  # the reason given by a <!-- not run: ... --> mark

    def compiled(self) -> Any:
        """The code, with README.md line numbers in tracebacks; top-level await allowed."""
        padded = "\n" * (self.line - 1) + self.code
        return compile(padded, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def python_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        headings = re.findall(r"^#{2,4} (.+)$", before, re.MULTILINE)
        previous = before.rstrip("\n").rsplit("\n", 1)[-1]
        mark = NOT_RUN.match(previous)
        line = before.count("\n") + 2
        blocks.append(
            Block(
                headings[-1] if headings else "",
                line,
                match.group(1),
                mark.group(1) if mark else None,
            )
        )
    return blocks


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    """Execute a block in ``namespace``, awaiting it when it awaits at top level."""
    result = eval(block.compiled(), namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)


# --- harnesses, by section ------------------------------------------------------------------


def embedding(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {}
    run_block(block, namespace)
    greeting = namespace["greeting"]
    assert greeting.render({"contact": {}, "vars": {"card": "4111111111111111"}}) == (
        "Hello caller, card ********1111"
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "14 50"
    stripped = [line.strip() for line in printed]
    assert "--> flows/billing.yaml:14:50 (step 'route', field 'property')" in stripped


def running_flows(
    block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FLOWLANG_SECRET_BILLING_TOKEN", "readme-billing-token")
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_TOKEN", "readme-crm-token")
    recorded = load_recorded_responses(
        ROOT / "examples/flows/data/account_verification.responses.yaml"
    )
    made: list[flowlang.Runtime] = []

    class OfflineRuntime(flowlang.Runtime):  # the README's arguments, and recorded responses
        def __init__(self, **options: Any) -> None:
            super().__init__(http=recorded, **options)
            made.append(self)

    monkeypatch.setattr(flowlang, "Runtime", OfflineRuntime)
    asked: list[tuple[str, Any]] = []

    async def collect_digits(call_id: str, awaiting: Any) -> str:
        asked.append((call_id, awaiting))
        return "12345678#"

    host = flowlang.RecordingHost()
    namespace: dict[str, Any] = {"ivr_host": host, "saved": {}, "collect_digits": collect_digits}
    run_block(block, namespace)
    context = json.loads(
        (ROOT / "examples/flows/data/account_verification.context.json").read_text()
    )

    async def process_lifetime() -> list[Any]:
        calls = [namespace["handle_call"](f"call-{n}", context) for n in range(3)]
        results = await asyncio.gather(*calls)
        await namespace["shutdown"]()
        return results

    results = asyncio.run(process_lifetime())
    assert len(made) == 1, "one runtime for the process"
    assert [result.status for result in results] == ["ended"] * 3, [r.error for r in results]
    assert sorted(call_id for call_id, _ in asked) == ["call-0", "call-1", "call-2"]
    assert namespace["saved"] == {}
    said = [i["text"] for i in host.instructions if i["action"] == "say"]
    assert said == ["Your balance is 42.5 dollars, due on 2026-12-01."] * 3
    assert [entry["status"] for entry in made[0].background_results] == [201] * 3


FLOW_V1 = """\
flow: pin
start: ask
steps:
  ask: {type: collect_input, prompt: "Your PIN?", max_digits: 4, next: thanks, on_no_input: bye}
  thanks: {type: say, text: "Thanks, version one", next: bye}
  bye: {type: hangup}
"""


def resuming_across_edits(
    block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    namespace: dict[str, Any] = {"flowlang": flowlang}
    run_block(block, namespace)
    v1 = flowlang.load_flow_text(FLOW_V1)
    v2 = flowlang.load_flow_text(FLOW_V1.replace("version one", "version two"))

    async def calls() -> tuple[Any, Any, Any]:
        waiting = await namespace["on_call"](v1, {})
        assert waiting.status == "waiting_for_input", waiting.error
        # The flow is edited and reloaded while the caller types: the call ends on v1.
        resumed = await namespace["on_digits"](v2, waiting.state, "1234")
        fresh = await namespace["on_call"](v2, {})
        return waiting, resumed, fresh

    _, resumed, fresh = asyncio.run(calls())
    assert resumed.status == "ended", resumed.error
    said = [i["text"] for i in resumed.instructions if i["action"] == "say"]
    assert said == ["Thanks, version one"], resumed.instructions
    assert fresh.state is not None and v2.fingerprint[:16] in json.dumps(fresh.state)


def automations(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any) -> None:
    import flowlang.automations

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWLANG_SECRET_CRM_BASIC", "readme-crm-basic")
    monkeypatch.setenv("FLOWLANG_SECRET_SLACK_TOKEN", "readme-slack-token")
    recorded = load_recorded_responses(ROOT / "examples/workflows/data/responses.yaml")

    class OfflineAutomations(flowlang.automations.Automations):
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, http=recorded, **options)

    monkeypatch.setattr(flowlang.automations, "Automations", OfflineAutomations)
    # `paths`: the workflow the section shows just above the block.
    section = README.read_text(encoding="utf-8").split("## Workflow automations\n", 1)[1]
    workflow = re.search(r"^```yaml\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert workflow is not None
    (tmp_path / "missed_call.yaml").write_text(workflow.group(1), encoding="utf-8")
    namespace: dict[str, Any] = {"Path": Path, "paths": [tmp_path / "missed_call.yaml"]}
    run_block(block, namespace)
    result = namespace["result"]
    assert result.matched == ["missed-call-follow-up"], result.errors
    assert [(d.action, d.outcome) for d in result.deliveries] == [
        ("log_in_crm", "delivered"),
        ("tell_team", "delivered"),
    ], result.deliveries
    assert result.deliveries[1].result["ok"] is True
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text() == ""


Harness = Callable[[Block, pytest.MonkeyPatch, Path, Any], None]
HARNESSES: dict[str, Harness] = {
    "Running flows from Python": running_flows,
    "Resuming across flow edits": resuming_across_edits,
    "Workflow automations": automations,
    "Embedding from Python": embedding,
}


def _block_id(block: Block) -> str:
    return f"{block.section} (not run: {block.not_run})" if block.not_run else block.section


@pytest.mark.parametrize("block", python_blocks(), ids=_block_id)
def test_every_python_block_runs(
    block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    code = block.compiled()  # a syntax error fails here, for marked blocks too
    if block.not_run:
        assert code is not None and block.not_run.strip()
        return
    harness = HARNESSES.get(block.section)
    assert harness is not None, (
        f"README.md:{block.line}: a python block under {block.section!r} that no test runs; "
        "give it a harness in tests/test_readme.py or mark it <!-- not run: reason -->"
    )
    harness(block, monkeypatch, tmp_path, capsys)


def test_the_blocks_are_found() -> None:
    sections = [block.section for block in python_blocks()]
    assert len(sections) == len(set(sections)), (
        "one python block per section (harnesses are by section)"
    )
    assert set(HARNESSES) <= set(sections), "a harness for a section without a python block"


def test_readme_lists_every_builtin_filter() -> None:
    from flowlang.expr.filters import BUILTIN_FILTERS

    text = README.read_text(encoding="utf-8")
    for name in BUILTIN_FILTERS:
        assert f"`{name}" in text, name
