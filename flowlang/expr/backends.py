"""Backends: the one table of compiled twins, and the choice between them and the Python ones.

The compiled extension comes in two modules, one per layer: ``flowlang._expr`` (ext/_expr.pyx:
the expression evaluator, field trees, JSON walks of values) and ``flowlang._runtime``
(ext/_runtime.pyx: the step loop and run data, built on the first's node types).
:data:`ACCELERATORS` lists every compiled twin with its module and its Python twin; the selection
below, the twin-agreement tests and an exhaustiveness test all read it.

At import, ``FLOWLANG_NO_EXTENSIONS=1`` forces the Python backend and
``FLOWLANG_REQUIRE_EXTENSIONS=1`` makes a missing compiled extension an ImportError. Without
either, a missing extension gives one :class:`flowlang.PurePythonWarning` and the Python
backend. No other module reads the environment. ``flowlang._expr`` is imported here;
``flowlang._runtime`` (which imports the runtime's Python helpers) is found here and imported
by :func:`extension_module` when the runtime's twins are chosen (flowlang.runtime.twins).
"""

from __future__ import annotations

__all__ = [
    "ACCELERATORS",
    "AVAILABLE",
    "DEFAULT_BACKEND",
    "EXTENSION_MODULES",
    "Accelerator",
    "compiled_helper",
    "extension_module",
    "get_builder",
    "resolve_backend",
]

import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType, MappingProxyType, ModuleType
from typing import Any

from flowlang.errors import PurePythonWarning
from flowlang.expr import ir, pyeval

Builder = Callable[[ir.Node, int], Callable[[Any], Any]]

EXPR_MODULE = "flowlang._expr"
RUNTIME_MODULE = "flowlang._runtime"
#: The compiled modules, lowest layer first.
EXTENSION_MODULES = (EXPR_MODULE, RUNTIME_MODULE)


@dataclass(frozen=True)
class Accelerator:
    """One compiled twin: the extension module that defines it (under the table's name) and
    its Python twin, as ``module.qualified_name``."""

    module: str
    python: str


#: Every compiled twin, by the name both extension modules export it under.
ACCELERATORS: Mapping[str, Accelerator] = MappingProxyType(
    {
        "build_evaluator": Accelerator(EXPR_MODULE, "flowlang.expr.pyeval.build_evaluator"),
        "build_tree": Accelerator(EXPR_MODULE, "flowlang.flow.model.generated_build"),
        "first_non_finite": Accelerator(EXPR_MODULE, "flowlang.expr.values.first_non_finite"),
        "json_length_exceeds": Accelerator(EXPR_MODULE, "flowlang.expr.values.json_length_exceeds"),
        "RunFields": Accelerator(RUNTIME_MODULE, "flowlang.runtime.run.RunFields"),
        "compile_plan": Accelerator(RUNTIME_MODULE, "flowlang.runtime.plan.keep_plan"),
        "measure_data": Accelerator(RUNTIME_MODULE, "flowlang.rundata.measure"),
        "new_scope": Accelerator(RUNTIME_MODULE, "flowlang.runtime.loop.new_scope"),
        "run_loop": Accelerator(RUNTIME_MODULE, "flowlang.runtime.loop.run_loop"),
        "trace_entries": Accelerator(RUNTIME_MODULE, "flowlang.runtime.results.trace_entries"),
    }
)


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
    """``flowlang._expr`` imported, when both compiled modules are there (else None)."""
    if _flag("FLOWLANG_NO_EXTENSIONS"):
        return None
    try:
        extension = importlib.import_module(EXPR_MODULE)
        if importlib.util.find_spec(RUNTIME_MODULE) is None:
            raise ImportError(f"No module named {RUNTIME_MODULE!r}")
    except ImportError as error:
        if _flag("FLOWLANG_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "FLOWLANG_REQUIRE_EXTENSIONS is set but the compiled extension "
                f"({', '.join(EXTENSION_MODULES)}) could not be imported; build it with "
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


def extension_module(name: str) -> ModuleType:
    """The compiled module ``name`` (one of EXTENSION_MODULES), imported on the first request;
    ValueError when this process has no compiled backend."""
    if _extension is None:
        raise ValueError(f"the cython backend is not available in this process ({name})")
    if name not in EXTENSION_MODULES:
        raise ValueError(f"{name!r} is not a compiled module of flowlang")
    return importlib.import_module(name)


def get_builder(name: str | None) -> tuple[str, Builder]:
    """The backend called ``name`` (None for the default) and its IR-to-evaluator builder."""
    chosen = resolve_backend(name)
    builder: Builder = compiled_helper("build_evaluator", pyeval.build_evaluator, chosen)
    return chosen, builder


def compiled_helper(name: str, fallback: Any, backend: str | None = None) -> Any:
    """The twin called ``name`` in ACCELERATORS for ``backend``: the compiled one on ``cython``,
    else ``fallback``, which must be the table's Python twin (ValueError otherwise).

    ``backend`` None means the process default.
    """
    entry = ACCELERATORS.get(name)
    if entry is None:
        raise ValueError(f"{name!r} is not in the table of compiled twins")
    python = f"{fallback.__module__}.{fallback.__qualname__}"
    if python != entry.python:
        raise ValueError(f"the Python twin of {name!r} is {entry.python}, not {python}")
    if resolve_backend(backend) == "python":
        return fallback
    return getattr(extension_module(entry.module), name)
