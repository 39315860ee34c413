"""`make dist-check`: build the sdist and the wheel, install each in a fresh virtual environment
outside the checkout, and smoke-test the installed package there.

    python .ci/dist_check.py DIST_DIR

`python -m build` (isolated) makes the sdist, then the wheel from the sdist, in DIST_DIR. The
wheel must carry the compiled extension, stripped. Installing from the sdist builds it again
from source (pip, build isolation: the proof that the sdist builds anywhere a compiler is);
the two installs run side by side. Needs the package registry (dependencies, build
requirements).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "flows"
DEMO_SECRETS = {
    "FLOWLANG_SECRET_BILLING_TOKEN": "demo-billing-token",
    "FLOWLANG_SECRET_CRM_TOKEN": "demo-crm-token",
}


def run(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str = "",
    expect: int = 0,
) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != expect:
        sys.exit(
            f"dist-check: {' '.join(argv)} exited {done.returncode}, not {expect}\n"
            f"{done.stdout}{done.stderr}"
        )
    return done.stdout


def check_wheel(wheel: Path) -> None:
    tag = wheel.name.removeprefix("flowlang-0.1.0-").removesuffix(".whl")
    if "none-any" in tag or "linux" not in tag:
        sys.exit(f"dist-check: the wheel is tagged {tag}, not for this platform: no extension?")
    with zipfile.ZipFile(wheel) as archive:
        compiled = sorted(name for name in archive.namelist() if name.endswith(".so"))
        found = [name.split("/")[-1].split(".")[0] for name in compiled]
        if found != ["_expr", "_runtime"]:
            sys.exit(f"dist-check: expected _expr and _runtime in {wheel.name}, found {compiled}")
        binaries = {name: archive.read(name) for name in compiled}
        for needed in (
            "flowlang/grammar/flowlang.lark",
            "flowlang/py.typed",
            "flowlang/flow/flow.schema.json",  # the JSON Schemas editors are pointed at
            "flowlang/automations/workflow.schema.json",
            "flowlang-0.1.0.dist-info/licenses/LICENSE",
        ):
            if needed not in archive.namelist():
                sys.exit(f"dist-check: {needed} is missing from {wheel.name}")
    for name, data in binaries.items():
        if b".debug_info" in data or b".symtab" in data:
            sys.exit(f"dist-check: {name} carries debug information or a symbol table")
        print(f"wheel {wheel.name}: {name} {len(data):,} bytes, stripped")


def smoke(venv: Path, where: Path) -> None:
    """The installed package, from outside the checkout: the commands and the compiled core."""
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_")}
    version = run([str(bin_dir / "flowlang"), "--version"], cwd=where, env=env)
    assert version == "flowlang 0.1.0\n", version
    value = run(
        [str(bin_dir / "python"), "-m", "flowlang", "eval", "<<a | length>>", "--context", "-"],
        cwd=where,
        env=env,
        stdin='{"a": [1, 2]}',
    )
    assert value == "2\n", value
    run(
        [str(bin_dir / "flowlang"), "check", *map(str, sorted(FLOWS.glob("*.yaml")))],
        cwd=where,
        env=env,
    )
    for document in ("flow", "workflow"):  # the shipped schema files, read from the install
        schema = run([str(bin_dir / "flowlang"), "schema", document], cwd=where, env=env)
        assert (
            schema.startswith("{")
            and f'"$id": "https://flowlang.dev/schema/{document}.schema.json"' in schema
        ), schema[:200]
        located = run([str(bin_dir / "flowlang"), "schema", document, "--path"], cwd=where, env=env)
        assert located.startswith(str(venv)), located
    trace = run(
        [
            str(bin_dir / "flowlang"),
            "run",
            str(FLOWS / "account_verification.yaml"),
            "--context",
            str(FLOWS / "data/account_verification.context.json"),
            "--responses",
            str(FLOWS / "data/account_verification.responses.yaml"),
            "--input",
            "ask_account=12345678#",
        ],
        cwd=where,
        env={**env, **DEMO_SECRETS},
    )
    assert "Your balance is 42.5 dollars" in trace, trace
    probe = (
        "import flowlang, sys; assert flowlang.BACKEND == 'cython', flowlang.BACKEND; "
        f"assert flowlang.__file__.startswith({str(venv)!r}), flowlang.__file__; "
        "print(flowlang.render('<<contact.emails[0]>>', {'contact': {'emails': ['ann@x.org']}}))"
    )
    out = run(
        [str(bin_dir / "python"), "-W", "error", "-c", probe],
        cwd=where,
        env={**env, "FLOWLANG_REQUIRE_EXTENSIONS": "1"},
    )
    assert out == "ann@x.org\n", out


def install(label: str, artifact: Path, scratch: Path) -> str:
    began = time.monotonic()
    venv = scratch / f"venv-{label}"
    run([sys.executable, "-m", "venv", str(venv)], cwd=scratch)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    run([*pip, str(artifact)], cwd=scratch)
    smoke(venv, scratch)
    elapsed = time.monotonic() - began
    return f"installed from the {label} in a fresh venv and smoke-tested: {elapsed:.0f} s"


def main() -> None:
    dist = Path(sys.argv[1]).resolve()
    began = time.monotonic()
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=ROOT)
    print(f"python -m build (sdist, then the wheel from it): {time.monotonic() - began:.0f} s")
    (sdist,) = dist.glob("flowlang-*.tar.gz")
    (wheel,) = dist.glob("flowlang-*.whl")
    check_wheel(wheel)
    scratch = tempfile.TemporaryDirectory(prefix="flowlang-dist-check-")
    with scratch, ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(install, label, artifact, Path(scratch.name))
            for label, artifact in (("wheel", wheel), ("sdist", sdist))
        ]
        for job in jobs:
            print(job.result())


if __name__ == "__main__":
    main()
