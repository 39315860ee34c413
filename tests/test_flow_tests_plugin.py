"""The pytest plugin: ``pytest`` collects ``*.test.yaml`` files, each case an item whose failure
reads like ``flowlang test``'s; the plugin imports nothing of flowlang's runtime until a test
file is collected. Runs pytest in a child process (its own session, killed with its group on
overrun) on files made in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from support import run_python

CASES = Path(__file__).resolve().parent / "flow_cases" / "tests"


def _pytest(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    (folder / "pytest.ini").write_text("[pytest]\n")  # not the project's settings
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_plugin_is_an_entry_point_of_pytest() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("flowlang") == "flowlang.testing.plugin"


def test_importing_the_plugin_imports_no_runtime() -> None:
    done = run_python(
        """
        import json, sys
        import flowlang.testing.plugin
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    heavy = [
        name
        for name in loaded
        if name.startswith(("flowlang.runtime", "flowlang.flow", "flowlang.cli", "flowlang.auto"))
        or name in ("flowlang._runtime", "httpx", "yaml", "flowlang.testing.session")
    ]
    assert heavy == []  # (flowlang._expr may load: FLOWLANG_REQUIRE_EXTENSIONS checks it)


def test_pytest_collects_each_case_and_reports_a_failure_like_the_command_line(
    tmp_path: Path,
) -> None:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    shutil.copy(CASES / "hand_counted.cases.yaml", tmp_path / "good.test.yaml")
    shutil.copy(CASES / "failing.cases.yaml", tmp_path / "planted.test.yaml")
    done = _pytest(tmp_path, "-k", "good or (wrong and path) or (wrong and end)")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 failed, 2 passed" in done.stdout
    assert "planted.test.yaml:13:34 (case 'wrong path', field 'expect.path')" in done.stdout
    assert "planted.test.yaml:38:23 (case 'wrong end', field 'expect.ends_at')" in done.stdout
    assert "trace (status: ended):" in done.stdout
    assert "Traceback" not in done.stdout and "flowlang/testing/" not in done.stdout
    listed = _pytest(tmp_path, "--collect-only", "good.test.yaml")
    assert "good.test.yaml::a known number" in listed.stdout
    assert "good.test.yaml::no input" in listed.stdout


def test_an_unreadable_test_file_is_a_readable_collection_error(tmp_path: Path) -> None:
    (tmp_path / "bad.test.yaml").write_text("flow: x.yaml\ncases:\n  - {name: a, expcet: {}}\n")
    done = _pytest(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown case field 'expcet'; did you mean 'expect'?" in done.stdout
    assert "bad.test.yaml:3:" in done.stdout
    assert "Traceback" not in done.stdout


def test_the_plugin_options_pick_the_loop_and_strictness(tmp_path: Path) -> None:
    shutil.copy(CASES / "hand_counted.yaml", tmp_path / "hand_counted.yaml")
    (tmp_path / "x.test.yaml").write_text(
        "flow: hand_counted.yaml\ncases:\n  - name: unused recording\n    inputs: {ask: null}\n"
        "    responses: [{request: GET https://api.example.com/x}]\n    expect: {ends_at: bye}\n"
    )
    assert _pytest(tmp_path, "--flow-backend", "python").returncode == 0
    strict = _pytest(tmp_path, "--flow-strict")
    assert strict.returncode == 1
    assert "recorded response not used: GET https://api.example.com/x (--strict)" in strict.stdout
