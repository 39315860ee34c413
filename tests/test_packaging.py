"""Packaging: the grammar ships in the package; the sdist is complete; builds without a compiler.

The build tests copy the source tree as a fresh clone has it (``git ls-files``; outside a git
checkout, the tree without build output), build with ``python -m build --no-isolation`` (this
environment's setuptools and Cython; no package registry) and never compile successfully:
``CC`` names a compiler that fails, so each build takes seconds (Cython still runs). The
compiled wheel is built, installed and smoke-tested by ``make dist-check`` (CI).
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from flowlang.expr.parser import load_grammar_text

REPO = Path(__file__).parent.parent
BUILD_TIMEOUT = 300
# What a source checkout has that the sdist leaves out, on purpose: CI wiring, git's settings.
NOT_SHIPPED = (".ci/", ".gitignore")
# Build output and caches: never part of a source tree that is copied or shipped.
JUNK = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    "*.c",
    "*.py[cod]",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".benchmarks",
    "flowlang-*.jsonl",
)
WARNING = "WARNING: flowlang's compiled extension could not be built"


def test_grammar_is_a_package_resource() -> None:
    package = resources.files("flowlang.grammar")
    assert package.joinpath("flowlang.lark").is_file()
    assert package.joinpath("SPEC.md").is_file()


def test_the_parser_loads_the_repository_grammar() -> None:
    assert load_grammar_text() == (REPO / "grammar" / "flowlang.lark").read_text(encoding="utf-8")


# --- building -------------------------------------------------------------------------------


def _source_files() -> list[str]:
    """The files of a fresh clone (with uncommitted changes), relative to the repository."""
    if (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        return sorted(name for name in listed if (REPO / name).is_file())
    ignore = shutil.ignore_patterns(*JUNK)
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = sorted(set(dirs) - ignore(folder, dirs))
        files += [
            str(Path(folder, name).relative_to(REPO)) for name in set(names) - ignore(folder, names)
        ]
    return sorted(files)


def _build_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_")}
    return {**env, **extra}


def _build(source: Path, out: Path, kind: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            f"--{kind}",
            "--no-isolation",
            "--outdir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=_build_env(**env),
        check=False,
    )


@pytest.fixture(scope="module")
def source_files() -> list[str]:
    return _source_files()


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory, source_files: list[str]) -> Path:
    """The sdist built from a copy of the tree as a fresh clone has it."""
    clone = tmp_path_factory.mktemp("clone")
    for name in source_files:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    out = tmp_path_factory.mktemp("sdist")
    built = _build(clone, out, "sdist")
    assert built.returncode == 0, built.stdout + built.stderr
    (archive,) = out.glob("*.tar.gz")
    assert archive.name == "flowlang-0.1.0.tar.gz"
    return archive


def _unpacked(sdist: Path, where: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(where, filter="data")
    return where / "flowlang-0.1.0"


def _wheel_names(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("*.whl"))


def test_sdist_ships_what_builds_and_tests_the_package(
    sdist: Path, source_files: list[str]
) -> None:
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "ext/_expr.pyx",
        "ext/flowlang._expr.pxd",
        "ext/_runtime.pyx",
        "grammar/flowlang.lark",
        "grammar/SPEC.md",
        "README.md",
        "LICENSE",
        "SECURITY.md",
        "MANIFEST.in",
        "setup.py",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/golden/rendering.yaml",
        "examples/flows/vip_routing.yaml",
    ):
        assert needed in shipped, needed
    missing = {name for name in source_files if not name.startswith(NOT_SHIPPED)} - shipped
    assert not missing, f"in the source tree but not in the sdist: {sorted(missing)}"
    generated = [name for name in shipped if name.endswith((".c", ".so", ".pyc"))]
    assert not generated, generated


def test_sdist_metadata_has_license_classifiers_and_urls(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        member = archive.extractfile("flowlang-0.1.0/PKG-INFO")
        assert member is not None
        metadata = email.message_from_bytes(member.read())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier") or []
    for classifier in (
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
        "Topic :: Communications :: Telephony",
    ):
        assert classifier in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert urls["Issues"] == "https://github.com/flowlang/flowlang/issues"
    assert {"Homepage", "Documentation"} <= set(urls)
    # Developer tools are dependency groups: the extras are the product's optional parts only
    # (flowlang serve, its Redis store, traces), never test or lint tools.
    assert sorted(metadata.get_all("Provides-Extra") or []) == ["celery", "otel", "redis", "serve"]
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for tool in ("pytest", "hypothesis", "mypy", "ruff", "opentelemetry-sdk"):
        assert tool not in requires


def test_without_a_compiler_the_build_warns_and_makes_a_pure_wheel(
    sdist: Path, tmp_path: Path
) -> None:
    source = _unpacked(sdist, tmp_path)
    built = _build(source, tmp_path / "out", "wheel", CC="/bin/false")
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert _wheel_names(tmp_path / "out") == ["flowlang-0.1.0-py3-none-any.whl"], output
    warnings = [line for line in output.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1, output
    assert "FLOWLANG_NO_EXTENSIONS=1" in warnings[0] and "python3-dev" in warnings[0]
    with zipfile.ZipFile(tmp_path / "out" / "flowlang-0.1.0-py3-none-any.whl") as wheel:
        names = wheel.namelist()
        assert "Root-Is-Purelib: true" in wheel.read("flowlang-0.1.0.dist-info/WHEEL").decode()
        wheel.extractall(tmp_path / "installed")
    assert not [name for name in names if name.endswith((".so", ".pyd", ".c", ".pyx"))]
    assert "flowlang/grammar/flowlang.lark" in names and "flowlang/py.typed" in names

    # The pure install says once, by a category one can filter, that it is the slow backend.
    # -S: no .pth files, so this checkout's editable install cannot lend its compiled module.
    probe = "import flowlang; print(flowlang.__file__); print(flowlang.render('<<a>>', {'a': 1}), flowlang.BACKEND)"
    path = os.pathsep.join([str(tmp_path / "installed"), sysconfig.get_paths()["purelib"]])
    env = _build_env(PYTHONPATH=path)
    ran = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        str(tmp_path / "installed" / "flowlang" / "__init__.py"),
        "1 python",
    ]
    assert ran.stderr.count("PurePythonWarning") == 1, ran.stderr
    quiet = subprocess.run(
        [sys.executable, "-S", "-W", "error", "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "FLOWLANG_NO_EXTENSIONS": "1"},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_required_extension_without_a_compiler_fails_and_says_how_to_fix(
    sdist: Path, tmp_path: Path
) -> None:
    source = _unpacked(sdist, tmp_path)
    built = _build(
        source, tmp_path / "out", "wheel", CC="/nonexistent/cc", FLOWLANG_REQUIRE_EXTENSIONS="1"
    )
    output = built.stdout + built.stderr
    assert built.returncode != 0, output
    assert _wheel_names(tmp_path / "out") == []
    (message,) = [
        line for line in output.splitlines() if "FLOWLANG_REQUIRE_EXTENSIONS is set" in line
    ]
    assert "/nonexistent/cc" in message
    for advice in ("apt install gcc python3-dev", "FLOWLANG_NO_EXTENSIONS=1"):
        assert advice in message
    assert WARNING not in output


def test_no_extensions_build_is_pure_and_never_compiles(sdist: Path, tmp_path: Path) -> None:
    source = _unpacked(sdist, tmp_path)
    built = _build(source, tmp_path / "out", "wheel", CC="/bin/false", FLOWLANG_NO_EXTENSIONS="1")
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert _wheel_names(tmp_path / "out") == ["flowlang-0.1.0-py3-none-any.whl"]
    assert WARNING not in output
    assert "_expr.pyx" not in output and "_runtime.pyx" not in output
    assert not list(source.glob("ext/*.c")), "Cython ran for a pure build"
