"""The package's structure: no import cycle, layers that import only downward, few lazy imports.

Every module of flowlang/ is parsed with ast (nothing is imported). Module-level imports are
the graph; imports under ``if TYPE_CHECKING:`` are a second graph, checked the same way. An
import inside a function is refused outside a short allow-list that says why.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowlang"

#: The layers, lowest first; a module may import its own layer and the ones below. A name
#: ending in ``.*`` covers a package's modules; the longest match wins.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ground",
        (
            "flowlang",
            "flowlang.errors",
            "flowlang.locations",
            "flowlang.settings",
            "flowlang.suggest",
            "flowlang.expr.*",
            "flowlang.engine",
            "flowlang.http_rules",
            "flowlang.rundata",
        ),
    ),
    (
        "documents",
        (
            "flowlang.flow",
            "flowlang.flow.model",
            "flowlang.flow.fields",
            "flowlang.flow.source",
            "flowlang.flow.jsondoc",
            "flowlang.flow.pointers",
            "flowlang.flow.digits",
            "flowlang.flow.conditions",
        ),
    ),
    ("kinds", ("flowlang.kinds.*",)),
    (
        "loading",
        (
            "flowlang.flow.build",
            "flowlang.flow.validate",
            "flowlang.flow.schema",
            "flowlang.flow.load",
        ),
    ),
    ("runtime", ("flowlang.runtime.*",)),
    ("automations", ("flowlang.automations.*",)),
    # Pictures of flows and workflows, and flow tests with coverage: they read documents, runs
    # and automations, and only the command line reads them.
    ("tools", ("flowlang.graph.*", "flowlang.testing.*")),
    # Automations on many processes: shared Redis, worker messages, Celery (flowlang[celery]).
    ("distributed", ("flowlang.distributed.*",)),
    # flowlang serve and what it reports: it runs flows and automations in a server, and its
    # check of Twilio's budget reads the flow graph.
    ("serve", ("flowlang.observe.*", "flowlang.serve.*")),
    # The pytest plugin is a front end like the command line: it shows failures as it does.
    ("cli", ("flowlang.cli.*", "flowlang.__main__", "flowlang.testing.plugin")),
)
#: Layers of one rank that may not import each other: loading a document needs no runtime,
#: and the runtime runs compiled flows without the loader.
SIBLINGS = {"loading": 3, "runtime": 3}
RANKS = {
    "ground": 0,
    "documents": 1,
    "kinds": 2,
    "automations": 4,
    "tools": 5,
    "distributed": 5,
    "serve": 6,
    "cli": 7,
    **SIBLINGS,
}

#: Imports inside functions that are allowed, by module and imported module, with the reason.
LAZY_ALLOWED: dict[tuple[str, str], str] = {
    ("flowlang", "flowlang.expr.backends"): (
        "the package's lazy table of public names: `import flowlang` loads nothing"
    ),
    ("flowlang", "flowlang.engine"): "the same lazy table: flowlang.render's default engines",
    ("flowlang.cli.automations", "flowlang.cli.automate_console"): (
        "a command loads only its own console (the runtime, httpx) when it runs"
    ),
    ("flowlang.cli.automations", "flowlang.cli"): "the same import (`from flowlang.cli import`)",
    ("flowlang.cli.flows", "flowlang.cli.run_console"): (
        "a command loads only its own console (the runtime, httpx) when it runs"
    ),
    ("flowlang.cli.flows", "flowlang.serve.budget"): (
        "check --serve: the serve package is loaded only when the option is given"
    ),
    ("flowlang.cli.serve", "flowlang.cli.serve_console"): (
        "a command loads only its own console (uvicorn, Starlette: the serve extra) when it runs"
    ),
    ("flowlang.cli.worker", "flowlang.cli.worker_console"): (
        "worker, automate --executor celery, replay redis://: Celery (the celery extra) is "
        "loaded only when one of them runs"
    ),
    ("flowlang.cli.worker", "flowlang.cli"): "the same import (`from flowlang.cli import`)",
    ("flowlang.cli.worker_console", "flowlang.observe.worker_metrics"): (
        "worker --metrics-port: prometheus_client is loaded only with the option, after "
        "PROMETHEUS_MULTIPROC_DIR is set or removed (multiprocess mode reads it at import)"
    ),
    ("flowlang.cli.serve_console", "flowlang.cli.worker_console"): (
        "serve --broker: Celery (the celery extra) is loaded only when the option is given"
    ),
    ("flowlang.expr.filters", "phonenumbers"): "optional heavy import: only when e164 runs",
    ("flowlang.testing.plugin", "flowlang.testing.session"): (
        "pytest loads its plugins at start-up: flowlang's loader and runtime only once a flow "
        "test file is collected"
    ),
    ("flowlang.testing.plugin", "flowlang.cli.testing"): (
        "the same: a failed case's report (as flowlang test prints it) when a case fails"
    ),
    ("flowlang.testing.plugin", "flowlang.cli.terminal"): (
        "the same: a test file's error made safe for the terminal when one cannot be read"
    ),
}
#: Package __init__ modules whose TYPE_CHECKING block only types their lazy table of names.
LAZY_TABLES = frozenset({"flowlang", "flowlang.flow", "flowlang.automations"})


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)
    typing_imports: set[str] = field(default_factory=set)
    lazy_imports: list[tuple[str, int]] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, here: str, known: set[str]) -> set[str]:
    """The flowlang modules an import statement loads (a name that is a submodule counts)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: resolved from this module's package
            package = here.split(".")[: -node.level] if here in known else here.split(".")
            base = ".".join([*package, *([base] if base else [])])
        names = {base}
        names |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    return {name for name in names if name == "flowlang" or name.startswith("flowlang.")}


def _outside(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    return {node.module or "."}


def _walk(module: Module, body: list[ast.stmt], known: set[str], typing: bool) -> None:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            target = module.typing_imports if typing else module.imports
            target |= _targets(node, module.name, known)
        elif isinstance(node, ast.If):
            _walk(module, node.body, known, typing or _is_type_checking(node.test))
            _walk(module, node.orelse, known, typing)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                _walk(module, block, known, typing)
            for handler in node.handlers:
                _walk(module, handler.body, known, typing)
        elif isinstance(node, ast.ClassDef):
            _walk(module, node.body, known, typing)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    names = _targets(inner, module.name, known) or _outside(inner)
                    for name in sorted(names):
                        module.lazy_imports.append((name, inner.lineno))


def _modules() -> dict[str, Module]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(path) for path in paths}
    modules = {}
    for path in paths:
        module = Module(_module_name(path), path)
        _walk(module, ast.parse(path.read_text(encoding="utf-8")).body, known, False)
        module.imports.discard(module.name)
        modules[module.name] = module
    return modules


MODULES = _modules()


def _layer(name: str) -> str:
    best, best_length = None, -1
    for layer, patterns in LAYERS:
        for pattern in patterns:
            if pattern.endswith(".*"):
                prefix = pattern[:-2]
                matches = name == prefix or name.startswith(prefix + ".")
            else:
                matches = name == pattern
            if matches and len(pattern) > best_length:
                best, best_length = layer, len(pattern)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in {__file__}"
    return best


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def _graph(typing: bool) -> dict[str, set[str]]:
    graph = {name: set(module.imports) for name, module in MODULES.items()}
    if typing:
        for name, module in MODULES.items():
            if name not in LAZY_TABLES:
                graph[name] |= module.typing_imports
    return graph


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def test_no_import_cycle() -> None:
    assert _cycle(_graph(typing=False)) is None


def test_no_import_cycle_counting_type_checking_imports() -> None:
    assert _cycle(_graph(typing=True)) is None


@pytest.mark.parametrize("typing", [False, True], ids=["imports", "type-checking imports"])
def test_no_module_imports_upward(typing: bool) -> None:
    upward = []
    for name, module in MODULES.items():
        if typing and name in LAZY_TABLES:
            continue
        here = _layer(name)
        for target in sorted(module.typing_imports if typing else module.imports):
            there = _layer(target)
            if RANKS[there] > RANKS[here] or (here != there and RANKS[here] == RANKS[there]):
                upward.append(f"{name} ({here}) imports {target} ({there})")
    assert upward == []


def test_no_import_inside_functions_outside_the_allow_list() -> None:
    found = {
        (name, target): line
        for name, module in MODULES.items()
        for target, line in module.lazy_imports
    }
    unexpected = sorted(
        f"{name}:{line} imports {target}"
        for (name, target), line in found.items()
        if (name, target) not in LAZY_ALLOWED
    )
    assert unexpected == []
    assert set(LAZY_ALLOWED) <= set(found), "an allowed lazy import is gone: drop it from the list"


def test_the_analysis_sees_the_imports_it_checks() -> None:
    # Guards the test itself: edges of each kind are found, and a cycle is.
    assert "flowlang.runtime.run" in MODULES["flowlang.runtime.loop"].imports
    assert "flowlang.runtime.twins" in MODULES["flowlang.runtime.runner"].imports
    assert "flowlang.engine" in MODULES["flowlang.flow.model"].typing_imports
    assert ("flowlang.expr.backends", 1) in [
        (name, 1) for name, _ in MODULES["flowlang"].lazy_imports
    ]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) in (
        ["a", "b", "c", "a"],
        ["b", "c", "a", "b"],
        ["c", "a", "b", "c"],
    )
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_loading_a_document_does_not_import_the_runtime() -> None:
    loaded = _loaded_after("import flowlang.flow.load")
    assert [name for name in loaded if name.startswith("flowlang.runtime")] == []
    assert "flowlang._runtime" not in loaded
    assert "flowlang.flow.build" in loaded  # the import did load the loader


def test_importing_the_runtime_module_imports_the_compiled_runtime_with_it() -> None:
    loaded = _loaded_after("import flowlang.runtime.runner")
    from flowlang.expr.backends import AVAILABLE

    assert ("flowlang._runtime" in loaded) is ("cython" in AVAILABLE)
