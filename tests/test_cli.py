"""`flowlang eval`: values as JSON, context from a file or standard input, exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowlang.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples" / "expressions"


def run(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    status = main(["eval", *argv], stdout=out, stdin=io.StringIO(stdin))
    return status, out.getvalue()


def test_eval_prints_values_as_json_lines() -> None:
    status, out = run(
        "<<contact.emails[0]>>",
        "<<contact.tags>>",
        "<<contact.nope>>",
        "<<call.waiting_time > 60>>",
        "--context",
        str(EXAMPLES / "context.json"),
    )
    assert status == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        "ann@example.com",
        ["Vip", "CampaignA"],
        None,
        True,
    ]


def test_eval_reads_the_context_from_standard_input() -> None:
    assert run("<<a.b>>", "--context", "-", stdin='{"a": {"b": [1, 2.5]}}') == (0, "[1,2.5]\n")


def test_eval_cloudtalk_syntax() -> None:
    assert run("{{a}} and <<a>>", "--syntax", "cloudtalk", "--context", "-", stdin='{"a": 1}') == (
        0,
        '"1 and <<a>>"\n',
    )


def test_eval_strict_fails_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("<<a.b>>", "--strict", "--context", "-", stdin='{"a": {}}') == (1, "")
    assert "undefined: a.b: a has no key .b" in capsys.readouterr().err


def test_syntax_error_prints_the_caret_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run('<<contact.custom_fields["Plan Tier">>')[0] == 2
    err = capsys.readouterr().err
    assert "expected ']' to close the index" in err
    assert "<template>:1:36" in err and err.rstrip().endswith("^")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"a": ', "<stdin>:1:7: invalid JSON"),
        ("[1, 2]", "the context must be a JSON object, not a list"),
        ("[" * 100_000, "JSON nests too deeply"),
    ],
)
def test_bad_context_exits_2(stdin: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("<<a>>", "--context", "-", stdin=stdin)[0] == 2
    assert message in capsys.readouterr().err


def test_missing_context_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("<<a>>", "--context", str(tmp_path / "nope.json"))[0] == 2
    assert "cannot read context" in capsys.readouterr().err


def test_the_installed_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowlang.cli", "eval", "<<x | upper>>", "--context", "-"],
        input='{"x": "hi"}',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, '"HI"\n')
