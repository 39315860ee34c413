"""Backend selection: the compiled evaluator is really loaded where required; env switches work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import flowlang
from flowlang.expr.backends import AVAILABLE


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


@pytest.mark.skipif(
    not _flag("FLOWLANG_REQUIRE_EXTENSIONS"), reason="only where the extension is required"
)
def test_compiled_backend_is_loaded_when_required() -> None:
    import flowlang._expr as compiled

    assert flowlang.BACKEND == "cython"
    assert compiled.__file__ is not None and compiled.__file__.endswith((".so", ".pyd"))
    assert flowlang.compile("<<a>>").backend == "cython"


@pytest.mark.skipif(not _flag("FLOWLANG_NO_EXTENSIONS"), reason="only in pure-Python mode")
def test_pure_python_mode_uses_the_twin() -> None:
    assert flowlang.BACKEND == "python"
    assert AVAILABLE == ("python",)
    with pytest.raises(ValueError, match="cython backend is not available"):
        flowlang.Engine(backend="cython")


def _backend_in_subprocess(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_")}
    return subprocess.run(
        [sys.executable, "-c", "import flowlang; print(flowlang.BACKEND)"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_extensions_forces_python() -> None:
    result = _backend_in_subprocess(FLOWLANG_NO_EXTENSIONS="1")
    assert (result.returncode, result.stdout.strip()) == (0, "python")


@pytest.mark.skipif("cython" not in AVAILABLE, reason="the extension is not built here")
def test_default_is_cython_when_built() -> None:
    result = _backend_in_subprocess()
    assert (result.returncode, result.stdout.strip()) == (0, "cython")


def test_require_extensions_fails_loudly_when_the_extension_cannot_load(tmp_path: object) -> None:
    # A module finder that hides the extension stands in for a machine without a compiler.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'flowlang._runtime': raise ImportError('hidden')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import flowlang\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "FLOWLANG_REQUIRE_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "FLOWLANG_REQUIRE_EXTENSIONS is set" in result.stderr
    fallback = subprocess.run(
        [sys.executable, "-c", code + "print(flowlang.BACKEND)"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fallback.stdout.strip() == "python"


def test_engine_backend_overrides_the_default() -> None:
    assert flowlang.Engine(backend="python").compile("<<a>>").backend == "python"
