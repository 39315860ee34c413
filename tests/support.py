"""Test helpers: YAML with JSON scalars only, typed deep equality, a fake clock, the command line
run in this process or in a child (its own session, killed as a group), and waiting, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowlang import MappingSecrets
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import DeadLetterStore
from flowlang.automations.store import LocalStore, event_key
from flowlang.cli import main
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult


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


#: Where FakeClock's time starts.
NOW = 1_800_000_000.0


class StatusHttp:
    """An HTTP stand-in answering ``status`` (with ``body`` when it is 200) after ``delay``
    seconds; ``sent``: the URLs it was sent, in order."""

    def __init__(self, status: int = 200, delay: float = 0.0, body: Any = None) -> None:
        self.status = status
        self.delay = delay
        self.body = {"ok": True} if body is None else body
        self.sent: list[str] = []

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.sent.append(request.url)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status == 200:
            return HttpResult("success", 200, {}, self.body)
        return HttpResult("http_error", self.status, {}, {}, f"HTTP {self.status}")


class FakeClock:
    """Time that moves only when a retry waits; every wait is recorded."""

    def __init__(self) -> None:
        self.current = NOW
        self.waits: list[float] = []

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.current += seconds
        await asyncio.sleep(0)


def stored_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The dead letters of the store ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    with LocalStore(path) as store:
        return [record for _, record in store.dead_letters() if isinstance(record, dict)]


def store_accepted(path: Path, event_id: str) -> bool:
    """Whether the store ``path`` has ``event_id`` accepted (open, or finished in the window)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT 1 FROM events WHERE key = ?", (event_key(event_id),)).fetchone()
    return row is not None


def store_text(path: Path) -> str:
    """Every byte of the store ``path`` and its write-ahead log, as text (latin-1): to look
    for what must never be written."""
    sides = [path, Path(f"{path}-wal")]
    return "".join(p.read_bytes().decode("latin-1") for p in sides if p.is_file())


def cli(*argv: str, stdin: str = "") -> tuple[int, str]:
    """Run the flowlang command line in this process: its exit status and what it printed."""
    out = io.StringIO()
    return main(list(argv), stdout=out, stdin=io.StringIO(stdin)), out.getvalue()


#: A workflow of one request per event, and its recorded response: ``flowlang automate``
#: offline on a long stream (tests/test_cli_automate_stream.py, benchmarks/automate_memory.py).
LOG_WORKFLOW = """
workflow: log
trigger: call.ended
actions:
  - name: log
    type: api_request
    endpoint: https://crm.example.com/log
    values: [{key: id, value: "<<event.id>>"}]
"""
LOG_RESPONSES = "- {request: POST https://crm.example.com/log, status: 200, body: {ok: true}}\n"


def write_log_workflow(folder: Path) -> None:
    """:data:`LOG_WORKFLOW` and :data:`LOG_RESPONSES` as ``wf.yaml`` and ``responses.yaml``."""
    (folder / "wf.yaml").write_text(LOG_WORKFLOW)
    (folder / "responses.yaml").write_text(LOG_RESPONSES)


def automate_argv(
    tmp: Path,
    *,
    workflows: Sequence[Path] = (),
    responses: bool = True,
    store: str | Path = "store.db",
) -> list[str]:
    """``automate`` on the files of the folder ``tmp``: the workflows (``wf.yaml`` when none are
    given), ``events.jsonl``, ``responses.yaml`` (when ``responses``), the store (a name in
    ``tmp``, or a path)."""
    return [
        "automate",
        *(str(path) for path in workflows or [tmp / "wf.yaml"]),
        "--events",
        str(tmp / "events.jsonl"),
        *(["--responses", str(tmp / "responses.yaml")] if responses else []),
        "--store",
        str(tmp / store),
    ]


def automate_command(tmp: Path, *extra: str, concurrency: int = 1) -> list[str]:
    """``flowlang automate`` as a child process on the files of ``tmp`` (no recorded responses:
    it talks to a loopback server), ``concurrency`` events at a time (one by default)."""
    return [
        sys.executable,
        "-m",
        "flowlang.cli",
        *automate_argv(tmp, responses=False),
        "--allow-host",
        "127.0.0.1",
        "--concurrency",
        str(concurrency),
        *extra,
    ]


def clean_env() -> dict[str, str]:
    """This environment without the secrets (``FLOWLANG_SECRET_*``) a test may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_SECRET_")}


def start_automate(
    tmp: Path, *extra: str, concurrency: int = 1, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """Start :func:`automate_command` in its own session (stop it with :func:`kill_group`);
    its standard error goes to ``stderr`` (``subprocess.PIPE`` to read it)."""
    return subprocess.Popen(
        automate_command(tmp, *extra, concurrency=concurrency),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=clean_env(),
        start_new_session=True,
    )


def run_automate(tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run :func:`automate_command` to its end (at most a minute)."""
    return subprocess.run(
        automate_command(tmp), capture_output=True, text=True, timeout=60, env=clean_env()
    )


def wait_for(condition: Callable[[], bool], seconds: float = 30, why: str = "timed out") -> None:
    """Wait, polling, until ``condition`` holds; fail with ``why`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), why


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a child started in its own session, with all it started, and reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter in its own session: a crash fails the
    test instead of ending pytest."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        start_new_session=True,
        check=False,
    )


def schema_patterns(node: Any) -> list[str]:
    """Every ``pattern`` in a JSON Schema."""
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [text for value in node.values() for text in schema_patterns(value)]
    if isinstance(node, list):
        return [text for value in node for text in schema_patterns(value)]
    return []


def kind_case_files(folder: Path) -> dict[str, Path]:
    """The golden case files of a folder of kinds (``tests/golden/kinds``, ``.../actions``),
    by kind name (the file's stem)."""
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def kind_cases(folder: Path) -> list[Any]:
    """Every case of every file in ``folder`` as a pytest param named ``kind: case name``; each
    file says which kind it is (``kind:``), and has cases."""
    params = []
    for stem, path in kind_case_files(folder).items():
        document = load_yaml(path)
        assert document.get("kind") == stem, f"{path.name}: kind must be {stem!r}"
        assert document.get("cases"), f"{path.name} has no cases"
        for case in document["cases"]:
            params.append(pytest.param(case, id=f"{stem}: {case['name']}"))
    return params


def registered_without_cases(folder: Path, registry: Any) -> tuple[list[str], list[str]]:
    """Kinds of ``registry`` without a case file in ``folder``, and case files of no kind."""
    files = kind_case_files(folder)
    return [name for name in registry if name not in files], [
        stem for stem in files if stem not in registry
    ]


#: A workflow of one api_request action (a permanent 400 makes one dead letter of it).
ONE_ACTION = """\
workflow: one_action
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
"""


def one_action_automations(
    http: StatusHttp, text: str = ONE_ACTION, store: LocalStore | None = None
) -> Automations:
    """Automations of the workflow ``text`` sending through ``http``: no retry wait (a fake
    clock); dead letters in ``store`` when one is given (everything kept there), else in
    memory."""
    return Automations(
        [load_workflow_text(text)],
        settings=DeliverySettings(schedule=(0,)),
        http=http,
        secrets=MappingSecrets({}),
        clock=FakeClock(),
        store=store,
        dead_letters=DeadLetterStore(store=store),
    )


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's long write transaction on the store ``path`` (a sqlite3 shell, an
    import batch...): the caller rolls it back and closes it."""
    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker
