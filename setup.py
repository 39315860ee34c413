"""Build wiring only: the Cython modules in ext/ (optional) and grammar/ as flowlang.grammar.

The compiled extension is two modules, one per layer: ``flowlang._expr`` (ext/_expr.pyx, its
declarations in ext/flowlang._expr.pxd) and ``flowlang._runtime`` (ext/_runtime.pyx, which
cimports the first).

Metadata, dependencies and tool settings live in pyproject.toml. Environment at build time:

- ``FLOWLANG_NO_EXTENSIONS=1``: a pure-Python build (a ``py3-none-any`` wheel, no compiler).
- ``FLOWLANG_REQUIRE_EXTENSIONS=1``: the extension must build; if it cannot, the build fails
  and says how to fix it.
- neither: the extension is built if it can be; if compiling fails, a one-line warning and a
  pure-Python build (tagged as such, as markupsafe and pyyaml do).
- ``FLOWLANG_DEBUG_BUILD=1``: keep debug information (release builds are stripped).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

FIX = (
    "install a C compiler and the Python headers (Debian/Ubuntu: apt install gcc python3-dev; "
    "Fedora: dnf install gcc python3-devel), or set FLOWLANG_NO_EXTENSIONS=1 for a "
    "pure-Python build"
)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class ExtensionBuildError(Exception):
    """The compiled extension could not be built (the reason is the message)."""


class OptionalBuildExt(build_ext):
    """Cythonize and compile, turning a missing Cython or compiler into ExtensionBuildError."""

    def run(self) -> None:
        try:
            super().run()
        except PlatformError as error:  # no compiler for this platform at all
            raise ExtensionBuildError(str(error)) from error

    def build_extension(self, ext: Extension) -> None:
        try:
            from Cython.Build import cythonize
        except ImportError as error:
            raise ExtensionBuildError("Cython is not installed") from error
        (cythonized,) = cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)
        ext.sources = cythonized.sources
        if not _flag("FLOWLANG_DEBUG_BUILD") and self.compiler.compiler_type == "unix":
            ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
            if sys.platform.startswith("linux"):
                ext.extra_link_args = [*ext.extra_link_args, "-s"]
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as error:
            compiler = " ".join(getattr(self.compiler, "compiler_so", [])[:1]) or "the C compiler"
            missing = "No such file" in str(error)
            what = "was not found" if missing else "failed; its output is above"
            raise ExtensionBuildError(f"{compiler} {what}") from error


def _setup(with_extension: bool) -> None:
    options: dict[str, Any] = {}
    if with_extension:
        options["ext_modules"] = [
            Extension("flowlang._expr", ["ext/_expr.pyx"], depends=["ext/flowlang._expr.pxd"]),
            Extension(
                "flowlang._runtime", ["ext/_runtime.pyx"], depends=["ext/flowlang._expr.pxd"]
            ),
        ]
        options["cmdclass"] = {"build_ext": OptionalBuildExt}
    setup(
        packages=[*find_packages(include=["flowlang", "flowlang.*"]), "flowlang.grammar"],
        package_dir={"flowlang.grammar": "grammar"},
        package_data={
            "flowlang": ["py.typed"],
            "flowlang.flow": ["*.json"],
            "flowlang.automations": ["*.json"],
            "flowlang.grammar": ["*.lark", "*.md"],
        },
        **options,
    )


def main() -> None:
    if _flag("FLOWLANG_NO_EXTENSIONS"):
        _setup(with_extension=False)
        return
    try:
        _setup(with_extension=True)
    except ExtensionBuildError as failure:
        if _flag("FLOWLANG_REQUIRE_EXTENSIONS"):
            sys.exit(
                "error: FLOWLANG_REQUIRE_EXTENSIONS is set and the compiled extension "
                f"(flowlang._expr, flowlang._runtime) could not be built ({failure}); "
                f"to fix: {FIX}"
            )
        print(
            f"WARNING: flowlang's compiled extension could not be built ({failure}); "
            f"building the pure-Python package instead (slower; to build it: {FIX})",
            file=sys.stderr,
            flush=True,
        )
        _setup(with_extension=False)


main()
