"""Build wiring only: cythonize ext/ into the package and ship grammar/ as flowlang.grammar.

Metadata, dependencies and tool settings live in pyproject.toml.
"""

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

extensions = cythonize(
    [
        # optional: without a C compiler the package still installs and runs on the
        # pure-Python backend; FLOWLANG_REQUIRE_EXTENSIONS=1 makes that fatal at import.
        Extension("flowlang._cevaluator", ["ext/_cevaluator.pyx"], optional=True),
    ],
    compiler_directives={"language_level": "3"},
)

setup(
    packages=[*find_packages(include=["flowlang", "flowlang.*"]), "flowlang.grammar"],
    package_dir={"flowlang.grammar": "grammar"},
    package_data={
        "flowlang": ["py.typed"],
        "flowlang.flow": ["*.json"],
        "flowlang.grammar": ["*.lark", "*.md"],
    },
    ext_modules=extensions,
)
