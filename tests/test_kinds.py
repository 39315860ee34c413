"""Step kinds as units: the registry's rules, and that a new kind is one module and one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowlang
from flowlang.flow.fields import THEN, Field
from flowlang.kinds.base import HostAction, StepKind
from flowlang.kinds.registry import STEP_KINDS, _by_name

PACKAGE = Path(flowlang.__file__).parent


def _plan(step: object) -> object:
    return lambda run: ("complete", None, "done", None)


def test_a_kind_without_a_way_to_run_is_refused_when_it_is_defined() -> None:
    with pytest.raises(TypeError, match="'idle' needs exactly one way to run"):
        StepKind("idle", "does nothing", {})


def test_a_kind_with_two_ways_to_run_is_refused() -> None:
    with pytest.raises(TypeError, match="not 2"):
        StepKind("both", "x", {}, plan=_plan, host=HostAction(None, "x", True))  # type: ignore[arg-type]


def test_input_network_and_secret_rules_of_a_kind() -> None:
    with pytest.raises(TypeError, match="takes input: it needs plan and resume"):
        StepKind("ask", "x", {}, takes_input=True, plan=_plan)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does network I/O: it needs execute"):
        StepKind("net", "x", {}, network=True, plan=_plan)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"secret fields \['token'\] are not fields"):
        StepKind("s", "x", {"next": THEN}, secret_fields=("token",), plan=_plan)  # type: ignore[arg-type]


def test_the_registry_refuses_a_module_without_a_kind_and_a_kind_given_twice() -> None:
    with pytest.raises(TypeError, match=r"flowlang\.kinds\.base defines no KIND"):
        _by_name(["base"])
    with pytest.raises(TypeError, match=r"'say' is registered twice"):
        _by_name(["say", "say"])


def test_every_kind_is_complete() -> None:
    for name, kind in STEP_KINDS.items():
        assert kind.name == name
        assert kind.summary, name
        assert all(isinstance(spec, Field) for spec in kind.fields.values()), name
        runs = [way for way in (kind.plan, kind.execute, kind.host) if way is not None]
        assert len(runs) == 1, name


def test_only_the_registry_and_kinds_know_step_type_names() -> None:
    """No code outside flowlang/kinds tests a step's type name (the issue's grep)."""
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.parent.joinpath("ext").glob("*.p*")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if 'type == "' in line or 'type != "' in line:
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


NOTE_KIND = '''\
"""Note: record a line in the trace, then go on."""

from __future__ import annotations

from flowlang.flow.fields import THEN, Field
from flowlang.kinds.base import StepKind


def plan_note(step):
    text, target = step.fields["text"], step.fields.get("next")
    return lambda run: ("go" if target else "complete", target, "noted",
                        {"text": text.render(run.scope)})


KIND = StepKind(
    "note",
    "record a line in the trace",
    {"text": Field("template", required=True), "next": THEN},
    plan=plan_note,
)
'''

HOLD_KIND = '''\
"""Hold: put the caller on hold (a call-control instruction without a value), then go on."""

from flowlang.flow.fields import THEN
from flowlang.kinds.base import HostAction
from flowlang.kinds.call_control import host_kind

KIND = host_kind("hold", "put the caller on hold", {"next": THEN}, HostAction(None, "held", False))
'''

NOTE_FLOW = """\
flow: noted
start: first
steps:
  first: {type: note, text: "caller <<call.id>>", next: wait}
  wait: {type: hold, next: bye}
  bye: {type: hangup}
"""

RUN_NOTE = """\
import asyncio, json, sys
import flowlang
from flowlang.expr.backends import AVAILABLE
from flowlang.flow.schema import flow_schema

class Host:
    def __init__(self):
        self.told = []
    async def hold(self, *, step):
        self.told.append(["hold", step])
    async def hangup(self, *, step):
        self.told.append(["hangup", step])

flow = flowlang.load_flow(sys.argv[1])
out = {"schema": "note" in flow_schema()["properties"]["steps"]["additionalProperties"]
       ["properties"]["type"]["enum"], "runs": {}}
for backend in AVAILABLE:
    async def main():
        host = Host()
        async with flowlang.Runtime(backend=backend, host=host) as runtime:
            result = await runtime.start(flow, {"call": {"id": "c-1"}})
            trace = [(r["step"], r["outcome"], r["detail"]) for r in result.trace]
            return [result.status, trace, host.told]
    out["runs"][backend] = asyncio.run(main())
print(json.dumps(out))
"""


def _python(copy_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python run with the package copy in ``copy_home`` first on the path."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(copy_home)},
        cwd=copy_home,
        timeout=120,
        check=False,
    )


def test_a_new_kind_is_one_module_and_one_registry_line(tmp_path: Path) -> None:
    """Copy the package, add flowlang/kinds/note.py (a step without I/O) and hold.py (a
    call-control step without a value that goes on), their lines in registry.py, nothing
    else: each loads, is checked, is in the JSON Schema, and runs on every step loop."""
    copy = tmp_path / "flowlang"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "kinds" / "note.py").write_text(NOTE_KIND, encoding="utf-8")
    (copy / "kinds" / "hold.py").write_text(HOLD_KIND, encoding="utf-8")
    registry = copy / "kinds" / "registry.py"
    text = registry.read_text(encoding="utf-8")
    assert '    "hangup",\n)' in text
    registry.write_text(
        text.replace('    "hangup",\n)', '    "hangup",\n    "note",\n    "hold",\n)')
    )
    flow_file = tmp_path / "noted.yaml"
    flow_file.write_text(NOTE_FLOW, encoding="utf-8")
    script = tmp_path / "run_note.py"
    script.write_text(RUN_NOTE, encoding="utf-8")
    done = _python(tmp_path, str(script), str(flow_file))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["schema"] is True
    assert out["runs"], "no step loop ran"
    for backend, (status, trace, told) in out["runs"].items():
        assert status == "ended", backend
        assert trace == [
            ["first", "noted", {"text": "caller c-1"}],
            ["wait", "held", None],
            ["bye", "hung up", None],
        ]
        assert told == [["hold", "wait"], ["hangup", "bye"]]  # the host's method of each kind
    checked = _python(tmp_path, "-m", "flowlang", "check", str(flow_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(NOTE_FLOW.replace('text: "caller <<call.id>>", ', ""), encoding="utf-8")
    refused = _python(tmp_path, "-m", "flowlang", "check", str(bad))
    assert refused.returncode == 1
    assert "a note step needs text" in refused.stdout
    assert textwrap.dedent("bad.yaml:4:") in refused.stdout
