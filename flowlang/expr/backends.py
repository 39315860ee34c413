"""Backends: choose between the Cython evaluator and its pure-Python twin.

At import, ``FLOWLANG_NO_EXTENSIONS=1`` forces the Python backend and
``FLOWLANG_REQUIRE_EXTENSIONS=1`` makes a missing compiled extension an ImportError. Without
either, a missing extension gives one :class:`flowlang.PurePythonWarning` and the Python
backend. No other module reads the environment.
"""

from __future__ import annotations

__all__ = [
    "AVAILABLE",
    "DEFAULT_BACKEND",
    "compiled_helper",
    "get_builder",
    "resolve_backend",
]

import importlib
import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

from flowlang.errors import PurePythonWarning
from flowlang.expr import ir, pyeval

Builder = Callable[[ir.Node, int], Callable[[Any], Any]]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _first_caller_outside() -> int:
    """The stacklevel, for a warning given here, of the first frame outside flowlang and the
    import machinery: the line of the embedder's code that made flowlang choose a backend."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level = 1
    frame: FrameType | None = sys._getframe(2)  # 2: the caller of _load_extension
    while frame is not None:
        filename = frame.f_code.co_filename
        if "importlib" in filename and "_bootstrap" in filename:
            frame = frame.f_back  # warnings.warn does not count these frames either
            continue
        if not filename.startswith(package):
            break
        level, frame = level + 1, frame.f_back
    return level + 1


def _load_extension() -> ModuleType | None:
    if _flag("FLOWLANG_NO_EXTENSIONS"):
        return None
    try:
        extension = importlib.import_module("flowlang._cevaluator")
    except ImportError as error:
        if _flag("FLOWLANG_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "FLOWLANG_REQUIRE_EXTENSIONS is set but the compiled extension "
                "flowlang._cevaluator could not be imported; build it with "
                "'pip install -e .' (needs a C compiler)"
            ) from None
        reason = str(error).splitlines()[0] if str(error) else "not built"
        warnings.warn(
            f"flowlang's compiled extension is not available ({reason}): using the slower "
            "pure-Python backend; reinstall with a C compiler and the Python headers, or set "
            "FLOWLANG_NO_EXTENSIONS=1 to choose the pure-Python backend without this warning",
            PurePythonWarning,
            stacklevel=_first_caller_outside(),
        )
        return None
    return extension


_extension = _load_extension()

#: The backends this process can use.
AVAILABLE: tuple[str, ...] = ("cython", "python") if _extension is not None else ("python",)
#: The backend engines use unless told otherwise.
DEFAULT_BACKEND = AVAILABLE[0]


def resolve_backend(name: str | None) -> str:
    """The backend called ``name`` (None: the default), checked against what this process has."""
    chosen = DEFAULT_BACKEND if name is None else name
    if chosen == "cython" and _extension is None:
        raise ValueError(
            "the cython backend is not available in this process "
            "(extension not built, or FLOWLANG_NO_EXTENSIONS is set)"
        )
    if chosen not in ("cython", "python"):
        raise ValueError(f"unknown backend {name!r}; expected 'cython' or 'python'")
    return chosen


def get_builder(name: str | None) -> tuple[str, Builder]:
    """The backend called ``name`` (None for the default) and its IR-to-evaluator builder."""
    chosen = resolve_backend(name)
    if chosen == "python" or _extension is None:
        return chosen, pyeval.build_evaluator
    builder: Builder = _extension.build_evaluator
    return chosen, builder


def compiled_helper(
    name: str, fallback: Callable[..., Any], backend: str | None = None
) -> Callable[..., Any]:
    """The compiled twin of ``fallback`` on the ``cython`` backend, else ``fallback`` itself.

    ``backend`` None means the process default.
    """
    if resolve_backend(backend) == "python" or _extension is None:
        return fallback
    helper: Callable[..., Any] = getattr(_extension, name)
    return helper
