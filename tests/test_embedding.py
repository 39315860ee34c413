"""Embedding: public names load on first use; the backend warning; ``python -m flowlang``.

Import-cost checks run in fresh interpreters (this one has loaded everything already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowlang

RUNTIME_MODULES = (
    "asyncio",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "yaml",
    "ssl",
    "flowlang.runtime",
    "flowlang.flow",
    "flowlang.automations",
)
BLOCK_EXTENSION = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("flowlang._expr", "flowlang._runtime"):
            raise ImportError("blocked by the test")
sys.meta_path.insert(0, _Block())
"""


def _python(code: str, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_")}
    return subprocess.run(
        [sys.executable, *options, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        check=False,
    )


@pytest.mark.parametrize("mode", ["cython", "python"])
def test_rendering_loads_no_runtime_module(mode: str) -> None:
    # The extension is built here, so it is the default; FLOWLANG_REQUIRE_EXTENSIONS would load
    # the expression core at import (on purpose: a missing extension fails there).
    env = {} if mode == "cython" else {"FLOWLANG_NO_EXTENSIONS": "1"}
    ran = _python(
        """
        import json, sys
        import flowlang
        after_import = sorted(m for m in sys.modules if m.startswith("flowlang"))
        values = [
            flowlang.render('<<contact.emails[0]>>', {"contact": {"emails": ["ann@example.com"]}}),
            flowlang.render("Hi <<name | upper>>, <<vars.n ?? 3>>", {"name": "ann"}),
            flowlang.compile("<<a>>").render({"a": [1]}),
            flowlang.Engine(strict=True).compile("<<a.b>>").render({"a": {"b": 2}}),
            flowlang.BACKEND,
        ]
        print(json.dumps({"values": values, "after_import": after_import, "modules": sorted(sys.modules)}))
    """,
        "-W",
        "error",
        **env,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["values"] == ["ann@example.com", "Hi ANN, 3", [1], 2, mode]
    assert report["after_import"] == ["flowlang"], "import flowlang loads nothing else of flowlang"
    loaded = [m for m in report["modules"] if m.startswith(RUNTIME_MODULES)]
    assert loaded == [], loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in flowlang.__all__:
        assert getattr(flowlang, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from flowlang import *", namespace)
    assert set(flowlang.__all__) <= set(namespace)
    assert set(flowlang.__all__) <= set(dir(flowlang))
    assert flowlang.Runtime is __import__("flowlang.runtime.runner").runtime.runner.Runtime
    assert flowlang.FlowError is __import__("flowlang.errors").errors.FlowError


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'flowlang' has no attribute 'Runtim'"):
        flowlang.Runtim  # noqa: B018
    assert not hasattr(flowlang, "__wrapped__")
    with pytest.raises(ImportError):
        exec("from flowlang import nothing_here", {})


@given(st.text(max_size=40))
def test_any_other_name_is_an_attribute_error_naming_it(name: str) -> None:
    if name in flowlang.__all__ or name in vars(flowlang) or hasattr(types.ModuleType("m"), name):
        return  # a public name, or one every module has (__dict__, __class__, ...)
    with pytest.raises(AttributeError) as raised:
        getattr(flowlang, name)
    assert repr(name) in str(raised.value)


def test_a_missing_extension_warns_once_by_a_category_one_can_filter() -> None:
    probe = (
        BLOCK_EXTENSION
        + """
import json, warnings
import flowlang
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    flowlang.render("<<a>>", {"a": 1})
    flowlang.render("<<b>>", {"b": 1})
    backend = flowlang.BACKEND
print(json.dumps([backend, [[w.category.__name__, str(w.message), w.filename] for w in caught]]))
"""
    )
    ran = _python(probe)
    assert ran.returncode == 0, ran.stderr
    backend, caught = json.loads(ran.stdout)
    assert backend == "python"
    assert len(caught) == 1, caught
    category, message, filename = caught[0]
    assert category == "PurePythonWarning" and "\n" not in message
    assert "blocked by the test" in message and "FLOWLANG_NO_EXTENSIONS=1" in message
    assert filename == "<string>", "the warning points at the embedder's line, not at flowlang"

    # `import flowlang` chooses no backend yet: an embedder filters the category right after it.
    quiet = _python(
        BLOCK_EXTENSION
        + """
import warnings, flowlang
warnings.filterwarnings("ignore", category=flowlang.PurePythonWarning)
flowlang.render('<<a>>', {})
""",
        "-W",
        "error",
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = _python(BLOCK_EXTENSION + "import flowlang; flowlang.render('<<a>>', {})", "-W", "error")
    assert loud.returncode == 1 and "PurePythonWarning" in loud.stderr


def test_asking_for_the_python_backend_does_not_warn() -> None:
    ran = _python(
        BLOCK_EXTENSION
        + "import flowlang; print(flowlang.render('<<a>>', {'a': 1}), flowlang.BACKEND)",
        "-W",
        "error",
        FLOWLANG_NO_EXTENSIONS="1",
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "1 python\n", "")


def test_requiring_the_extension_when_it_is_missing_fails_at_import() -> None:
    ran = _python(BLOCK_EXTENSION + "import flowlang", FLOWLANG_REQUIRE_EXTENSIONS="1")
    assert ran.returncode == 1
    assert (
        "ImportError: FLOWLANG_REQUIRE_EXTENSIONS is set but the compiled extension" in ran.stderr
    )
    assert "PurePythonWarning" not in ran.stderr


def test_python_dash_m_flowlang_is_the_command_line() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "flowlang", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (version.returncode, version.stdout) == (0, f"flowlang {flowlang.__version__}\n")
    evaluated = subprocess.run(
        [sys.executable, "-m", "flowlang", "eval", "<<a | length>>", "--context", "-"],
        input='{"a": [1, 2]}',
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (evaluated.returncode, evaluated.stdout) == (0, "2\n"), evaluated.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "flowlang", "eval", "<<a[>>"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
