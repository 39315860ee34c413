"""The command line's shared contract: exit statuses for every command, help for every option,
no Python class names in messages, and the README's command lines run as written."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flowlang.cli import _parser
from flowlang.cli.inputs import EXIT_STATUSES

ROOT = Path(__file__).parent.parent
FLOWS = ROOT / "examples" / "flows"
FLOW = str(FLOWS / "account_verification.yaml")
WORKFLOW = str(ROOT / "examples" / "workflows" / "missed_call.yaml")
COMMANDS = ("eval", "run", "check", "automate", "replay")


def flowlang(
    *argv: str, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "flowlang.cli", *argv],
        input=stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
        cwd=cwd,
        env=env,
    )
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result


def argv_with_file(command: str, path: str, tmp: Path) -> list[str]:
    """``command`` with ``path`` in the place of its main input file."""
    return {
        "eval": ["eval", "<<a>>", "--context", path],
        "run": ["run", path],
        "check": ["check", path],
        "automate": [
            "automate",
            path,
            "--events",
            str(tmp / "events.jsonl"),
            "--store",
            str(tmp / "store.db"),
        ],
        "replay": ["replay", path],
    }[command]


BAD_USAGE = {
    "eval": ["eval"],  # no template
    "run": ["run", FLOW, "--input"],  # an option without its value
    "check": ["check", "--format", "yaml", FLOW],  # not a format
    "automate": ["automate", WORKFLOW],  # --events is required
    "replay": ["replay", "--no-such-option", "dead.jsonl"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", ["missing file", "not UTF-8", "bad usage"])
def test_every_command_keeps_the_exit_status_contract(
    command: str, case: str, tmp_path: Path
) -> None:
    """2 for bad usage or unreadable input, the same for every command."""
    (tmp_path / "events.jsonl").write_text("")
    if case == "bad usage":
        argv = BAD_USAGE[command]
    elif case == "missing file":
        argv = argv_with_file(command, str(tmp_path / "nope.yaml"), tmp_path)
    else:
        latin = tmp_path / "latin.yaml"
        latin.write_bytes(b'{"a": "caf\xe9"}\n')
        argv = argv_with_file(command, str(latin), tmp_path)
    result = flowlang(*argv)
    # replay reads its file line by line: a line that is not UTF-8 is a record it cannot
    # replay, left in the file (1: the work found problems); the file itself was readable.
    expected = 1 if (command, case) == ("replay", "not UTF-8") else 2
    assert result.returncode == expected, (result.stdout[-500:], result.stderr[-500:])
    shown = result.stdout + result.stderr
    if case == "missing file":
        assert "nope.yaml" in shown
    elif case == "not UTF-8":
        assert "not UTF-8" in shown


def test_run_and_check_agree_on_a_missing_file_and_check_says_1_for_errors(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "flows" / "vip_rooting.yaml")
    assert flowlang("run", missing).returncode == 2
    assert flowlang("check", missing).returncode == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: t\nstart: a\nsteps:\n  a: {type: say, text: hi, next: nowhere}\n")
    assert flowlang("check", str(broken)).returncode == 1
    assert flowlang("run", str(broken)).returncode == 2  # a flow that cannot run: bad input


def test_the_failures_of_the_work_exit_1(tmp_path: Path) -> None:
    assert flowlang("eval", "<<a.b>>", "--strict", "--context", "-", stdin=b"{}").returncode == 1
    flow = tmp_path / "loops.yaml"
    flow.write_text(  # a way out the run never takes: check refuses a loop without one
        "flow: t\nstart: a\nsteps:\n  a: {type: condition_splitter, otherwise: a, "
        "branches: [{expression: '<<vars.never>>', next: b}]}\n  b: {type: hangup}\n"
    )
    result = flowlang("run", str(flow))
    assert result.returncode == 1
    assert "result: failed: step 'a' ran more than 10 times in a row" in result.stdout


def test_messages_name_no_python_class(tmp_path: Path) -> None:
    result = flowlang("eval", "<<a.b>>", "--strict", "--context", "-", stdin=b'{"a": {}}')
    assert result.returncode == 1
    assert result.stderr.startswith("flowlang: evaluation failed: undefined: a.b")
    assert not re.search(r"\b[A-Z][a-z]+(Error|Exception)\b", result.stderr)


# --- help -------------------------------------------------------------------------------------


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no commands")


def test_top_level_help_names_every_command_without_rst_marks() -> None:
    result = flowlang("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        line = next(
            (line for line in result.stdout.splitlines() if line.strip().startswith(command)),
            "",
        )
        assert len(line.split()) > 3, f"{command} has no one-line description: {line!r}"
    assert "``" not in result.stdout and ":func:" not in result.stdout
    assert "exit status:" in result.stdout and "2    bad usage or unreadable input" in (
        result.stdout
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_states_the_exit_statuses(command: str) -> None:
    result = flowlang(command, "--help")
    assert result.returncode == 0
    assert EXIT_STATUSES in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_has_help(command: str) -> None:
    parser = subparsers(_parser())[command]
    missing = {
        (command, action.dest)
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    }
    assert not missing, f"options without help: {sorted(missing)}"


def test_top_level_options_have_help() -> None:
    parser = _parser()
    assert all(action.help for action in parser._actions)


def test_run_help_tells_how_secrets_are_given() -> None:
    result = flowlang("run", "--help")
    assert "FLOWLANG_SECRET_<NAME>" in result.stdout
    assert "FLOWLANG_SECRET_CRM_TOKEN" in result.stdout


# --- the README -------------------------------------------------------------------------------


def readme_command_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Command line\n\n```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def demo_secrets() -> dict[str, str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.search(r"DEMO_SECRETS := (.*?)\n\n", makefile, re.DOTALL)
    assert found is not None
    words = shlex.split(found.group(1).replace("\\\n", " "))
    return dict(word.split("=", 1) for word in words)


#: The exit status each README command line gives, by its first words.
README_STATUSES = {
    "flowlang eval '<<contact.nickname>>' --strict": 1,
}


def test_every_readme_command_line_runs(tmp_path: Path) -> None:
    """Each line of the README's Command line block runs from the repository root, as
    written (``flowlang`` is this interpreter's command line), with the demo secrets."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "flowlang").write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m flowlang.cli "$@"\n'
    )
    (shim / "flowlang").chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_SECRET_")},
        **demo_secrets(),
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    lines = readme_command_lines()
    assert len(lines) >= 8
    for line in lines:
        assert "ctx.json" not in line and " FLOW " not in line, line
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
        expected = next(
            (code for start, code in README_STATUSES.items() if line.startswith(start)), 0
        )
        assert result.returncode == expected, (line, result.stdout[-800:], result.stderr[-800:])
        assert "Traceback" not in result.stderr
        assert (result.stdout + result.stderr).strip(), line
