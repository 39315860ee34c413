"""The accelerator seam: the one table of compiled twins, read by selection, agreement checks and
an exhaustiveness check; and ``backend="python"`` meaning all Python, end to end.

Deep property tests of single twins live next to their subject (test_properties: evaluator and
JSON walks; test_loop_twins: loop, scope, measure, trace); each check here runs its twin pair
on a table of samples, so that no table entry is without an agreement check.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import kind_cases
from test_kind_golden import KINDS, run_case

import flowlang
from flowlang import Engine, load_flow_text
from flowlang.expr import backends
from flowlang.expr.backends import ACCELERATORS, AVAILABLE, EXTENSION_MODULES, compiled_helper
from flowlang.flow.model import CompiledFlow, FieldTree, Value
from flowlang.runtime.host import RecordingHost
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.runtime.runner import Runtime
from flowlang.runtime.secrets import MappingSecrets, SecretsView
from flowlang.runtime.twins import runtime_twins

needs_cython = pytest.mark.skipif("cython" not in AVAILABLE, reason="extension not built")

#: Public types of the extension modules that are not twins: the node and plan types that
#: build_evaluator, build_tree and compile_plan make (reached only through them).
INTERNAL_TYPES = {
    "flowlang._expr": {
        "Coalesce",
        "Compare",
        "Concat",
        "Const",
        "Evaluator",
        "Key",
        "MakeList",
        "Node",
        "Not",
        "Path",
        "Pipe",
        "PythonCall",
        "StaticPath",
        "TreeBuilder",
        "Truth",
    },
    "flowlang._runtime": {
        "HostStep",
        "PlannedBranch",
        "PlannedStep",
        "SetVariablesStep",
        "SplitterStep",
        "Transit",
    },
}


def python_twin(name: str) -> Any:
    """The Python twin the table names for ``name`` (``module.qualified_name``), imported."""
    path = ACCELERATORS[name].python
    module_name, _, qualified = path.rpartition(".")
    while module_name:
        try:
            found: Any = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            qualified = f"{outer}.{qualified}"
    for part in qualified.split("."):
        found = getattr(found, part)
    return found


def twins(name: str) -> tuple[Any, Any]:
    """``(compiled, python)`` for a table entry, through the selection code."""
    python = python_twin(name)
    return compiled_helper(name, python, "cython"), compiled_helper(name, python, "python")


# --- the table --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_every_entry_names_a_python_twin_and_a_compiled_module(name: str) -> None:
    entry = ACCELERATORS[name]
    assert entry.module in EXTENSION_MODULES
    python = python_twin(name)
    assert f"{python.__module__}.{python.__qualname__}" == entry.python
    assert compiled_helper(name, python, "python") is python


@needs_cython
@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_every_entry_exists_in_its_compiled_module(name: str) -> None:
    module = importlib.import_module(ACCELERATORS[name].module)
    compiled = compiled_helper(name, python_twin(name), "cython")
    assert compiled is getattr(module, name)
    assert compiled is not python_twin(name)


@needs_cython
@pytest.mark.parametrize("module_name", EXTENSION_MODULES)
def test_every_public_name_of_the_extension_is_in_the_table(module_name: str) -> None:
    module = importlib.import_module(module_name)
    public = {name for name in vars(module) if not name.startswith("_")}
    entries = {name for name, entry in ACCELERATORS.items() if entry.module == module_name}
    assert set(module.__all__) == entries
    # anything else public is one of the module's own internal types, listed above
    own = {name for name in public if getattr(vars(module)[name], "__module__", "") == module_name}
    assert public == own, "a name imported into the extension is public: prefix it with _"
    assert public - entries == INTERNAL_TYPES[module_name]
    assert all(isinstance(vars(module)[name], type) for name in INTERNAL_TYPES[module_name])


def test_selection_refuses_a_name_outside_the_table_or_another_twin() -> None:
    with pytest.raises(ValueError, match="not in the table"):
        compiled_helper("no_such_twin", len)
    with pytest.raises(ValueError, match="the Python twin of 'measure_data' is"):
        compiled_helper("measure_data", python_twin("new_scope"), "python")


# --- agreement: one check per table entry -----------------------------------------------------

SAMPLES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64,
    1.5,
    float("nan"),
    float("-inf"),
    "",
    "text",
    "\ud800",
    [],
    [1, [2, [3.5, {"k": float("inf")}]]],
    {"a": {"b": [None, "x" * 50]}, "c": (1, 2)},
    {1: "int key", None: []},
]


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)


def _agree_build_evaluator(compiled: Any, python: Any) -> None:
    context = {"a": 2, "b": [1, 2], "c": {"d": "x"}, "e": None}
    for source in ("<<a>>", "n=<<a>> <<c.d | upper>>", "<<b[1] == 2 and a > 1>> <<e ?? c>>"):
        template = Engine(backend="python").compile(source)
        outputs = [
            builder(template.lowered, template.max_output)(context)
            for builder in (compiled, python)
        ]
        assert _same(*outputs), source


def _agree_build_tree(compiled: Any, python: Any) -> None:
    engine = Engine(backend="python")
    inner = FieldTree((("id", Value(engine.compile("<<a>>"))),), "python")
    tree = FieldTree(
        (("x", Value(None, [1, 2])), ("y", Value(engine.compile("<<a>>-<<a>>"))), ("z", inner)),
        "python",
    )
    built = [builder(tree)({"a": 7}) for builder in (compiled, python)]
    assert built[0] == built[1] == {"x": [1, 2], "y": "7-7", "z": {"id": 7}}


def _agree_first_non_finite(compiled: Any, python: Any) -> None:
    for value in SAMPLES:
        assert _same(compiled(value), python(value)), value


def _agree_json_length_exceeds(compiled: Any, python: Any) -> None:
    for value in SAMPLES:
        for limit in (0, 3, 20, 1000):
            assert compiled(value, limit) is python(value, limit), (value, limit)


def _agree_measure_data(compiled: Any, python: Any) -> None:
    for value in SAMPLES:
        for depth, budget, strict in ((3, 100, True), (1, 10, False), (10, 10_000, False)):
            assert compiled(value, depth, budget, strict) == python(value, depth, budget, strict)


def _outcome(function: Callable[[], Any]) -> Any:
    try:
        return ("value", function())
    except Exception as error:
        return ("error", type(error).__name__, str(error))


def _agree_new_scope(compiled: Any, python: Any) -> None:
    limits = (1000, 10_000, 5)
    contexts: list[Any] = [
        None,
        {},
        {"contact": {"name": "Ann"}, "vars": {"n": 1}},
        {1: "a number key"},
        {"steps": {}},
        {"vars": []},
        {"deep": [[[[[[["too deep"]]]]]]]},
        {"big": "x" * 20_000},
    ]
    for context in contexts:
        outcomes = [
            _outcome(functools.partial(twin, context, limits)) for twin in (compiled, python)
        ]
        assert outcomes[0] == outcomes[1], context


def _agree_trace_entries(compiled: Any, python: Any) -> None:
    rows = [("a", "say", "said", 0.5, None), ("b", "http_request", "success", 1.0, {"k": 1})]
    assert compiled(rows) == python(rows)
    assert compiled([]) == python([]) == []


class _Runtime:
    data_limits = (10, 20, 30)


def _agree_run_fields(compiled: Any, python: Any) -> None:
    flow = _small_flow("python")
    made = []
    for fields in (compiled, python):
        scope: dict[str, Any] = {"vars": {}}
        secrets = SecretsView(MappingSecrets({}))
        run = fields(_Runtime(), flow, scope, secrets, 3, ("a", 2), "run-1", 4, 99)
        assert scope["secrets"] is secrets
        made.append(
            (run.steps_run, run.streak, run.run_id, run.seq, run.data_size, run.trace, run.flow)
        )
    assert made[0] == made[1]


def _loop_results(backend: str) -> list[Any]:
    """A flow with every plain step kind and an HTTP step, run by ``backend``'s runtime."""
    flow = _small_flow(backend)
    recorded = {("POST", "https://api.example.com/a/7"): RecordedResponse(200, {}, {"ok": True})}
    http = RecordedHttp(recorded)

    async def main() -> list[Any]:
        async with Runtime(backend=backend, http=http, host=RecordingHost()) as runtime:
            first = await runtime.start(flow, {"contact": {"id": 7}})
            second = await runtime.resume(flow, first.state or {}, "12")
            return [
                (
                    result.status,
                    result.error,
                    result.instructions,
                    result.awaiting,
                    *((row["step"], row["type"], row["outcome"]) for row in result.trace),
                )
                for result in (first, second)
            ]

    return asyncio.run(main())


def _agree_loop(compiled: Any, python: Any) -> None:
    assert runtime_twins("cython").run_loop is compiled
    assert runtime_twins("python").run_loop is python
    assert _loop_results("cython") == _loop_results("python")


def _agree_compile_plan(compiled: Any, python: Any) -> None:
    from flowlang.runtime.plan import plan_flow

    flow = _small_flow("cython")
    plan = plan_flow(flow.steps)
    assert python(plan) is plan
    assert sorted(compiled(plan)) == sorted(plan)
    _agree_loop(runtime_twins("cython").run_loop, runtime_twins("python").run_loop)


AGREEMENT: dict[str, Callable[[Any, Any], None]] = {
    "build_evaluator": _agree_build_evaluator,
    "build_tree": _agree_build_tree,
    "first_non_finite": _agree_first_non_finite,
    "json_length_exceeds": _agree_json_length_exceeds,
    "RunFields": _agree_run_fields,
    "compile_plan": _agree_compile_plan,
    "measure_data": _agree_measure_data,
    "new_scope": _agree_new_scope,
    "run_loop": _agree_loop,
    "trace_entries": _agree_trace_entries,
}


def test_every_twin_has_an_agreement_check() -> None:
    assert set(AGREEMENT) == set(ACCELERATORS)


@needs_cython
@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_twins_agree(name: str) -> None:
    AGREEMENT[name](*twins(name))


# --- backend="python" is all Python -----------------------------------------------------------

SMALL_FLOW = """
flow: seam
start: setup
steps:
  setup:
    type: set_variables
    variables: {greeting: "Hello <<contact.id>>", items: [1, 2], nested.key: <<contact.id>>}
    next: route
  route:
    type: condition_splitter
    branches:
      - expression: <<vars.nested.key == 7>>
        next: lookup
    otherwise: bye
  lookup:
    type: http_request
    method: POST
    endpoint: https://api.example.com/a/<<contact.id>>
    body: {id: <<contact.id>>, tags: [a, b], score: 1.5}
    next: greet
    on_failure: bye
  greet:
    type: say
    text: <<vars.greeting>> <<steps.lookup.response.body.ok>>
    next: ask
  ask:
    type: collect_input
    prompt: Your code?
    next: bye
    on_no_input: bye
  bye:
    type: hangup
"""


def _small_flow(backend: str) -> CompiledFlow:
    return load_flow_text(SMALL_FLOW, name="seam.yaml", engine=Engine(backend=backend))


def _reachable(*roots: Any, limit: int = 200_000) -> Iterator[Any]:
    """Every object reachable from ``roots`` through attributes, slots, containers, closures,
    defaults and bound methods (modules and types are not entered)."""
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType)):
            continue
        seen.add(id(item))
        assert len(seen) < limit, "the walk is unbounded"
        yield item
        if isinstance(item, (str, bytes, int, float, bool)) or item is None:
            continue
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        if isinstance(item, types.FunctionType):
            pending.extend(cell.cell_contents for cell in item.__closure__ or () if _filled(cell))
            pending.extend(item.__defaults__ or ())
            pending.extend((item.__kwdefaults__ or {}).values())
            continue
        if isinstance(item, (types.MethodType, types.BuiltinMethodType)):
            pending.append(getattr(item, "__self__", None))
            pending.append(getattr(item, "__func__", None))
            continue
        if isinstance(item, functools.partial):
            pending.extend((item.func, *item.args, *item.keywords.values()))
        pending.extend(getattr(item, "__dict__", {}).values())
        for klass in type(item).__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if isinstance(slot, str) and hasattr(item, slot):
                    pending.append(getattr(item, slot))


def _filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _extension_objects(*roots: Any) -> list[str]:
    found = []
    for item in _reachable(*roots):
        owner = type(item).__module__
        if isinstance(item, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            owner = getattr(item, "__module__", None) or owner
        if owner in EXTENSION_MODULES:
            found.append(f"{type(item).__name__} {item!r:.80}")
    return found


@needs_cython  # without the extension, everything is Python by construction
def test_a_python_engine_and_runtime_reach_no_object_of_the_extension() -> None:
    flow = _small_flow("python")
    twins_of = runtime_twins("python")

    async def main() -> Any:
        async with Runtime(backend="python", http=RecordedHttp({})) as runtime:
            run = runtime._run_class(
                runtime, flow, {"vars": {}}, SecretsView(MappingSecrets({})), 0, (None, 0)
            )
            result = await runtime.start(flow, {"contact": {"id": 7}})
            return runtime, run, result, runtime._plan(flow)

    runtime, run, result, plan = asyncio.run(main())
    assert _extension_objects(flow, plan, run, result, twins_of, runtime) == []
    assert type(run).__mro__[1:] == runtime_twins("python").run_class.__mro__[1:]
    assert result.trace and type(result).entries_of is python_twin("trace_entries")
    # the same walk finds the compiled objects of a cython engine and runtime
    compiled_flow = _small_flow("cython")
    assert _extension_objects(compiled_flow)
    assert _extension_objects(runtime_twins("cython"))


@pytest.fixture
def extension_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry point of the compiled modules raises, and so does loading one."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the compiled extension was used")

    monkeypatch.setattr(backends, "extension_module", refuse)
    if "cython" in AVAILABLE:
        for name, entry in ACCELERATORS.items():
            monkeypatch.setattr(importlib.import_module(entry.module), name, refuse)


@pytest.mark.parametrize("case", kind_cases(KINDS))
def test_every_golden_case_runs_with_the_extension_refusing_all_calls(
    case: dict[str, Any], tmp_path: Path, extension_raises: None
) -> None:
    result, _ = run_case(case, "python", tmp_path)
    assert result.status == case["expect"]["status"], (result.status, result.error)


def test_the_python_backend_runs_the_small_flow_with_the_extension_refusing(
    extension_raises: None,
) -> None:
    first, second = _loop_results("python")
    assert first[:2] == ("waiting_for_input", None)
    assert second[:2] == ("ended", None)
    assert flowlang.Engine(backend="python").compile("<<a>>").render({"a": 1}) == 1


def test_a_body_encoded_without_a_runtime_uses_the_process_default_walks() -> None:
    """Automations (no backend of their own) encode bodies with the default backend's walks:
    compiled where the extension is in use (the F1 benchmark measures this path)."""
    from flowlang.expr.backends import DEFAULT_BACKEND
    from flowlang.expr.values import first_non_finite, json_length_exceeds
    from flowlang.http_rules import _default_body_walks

    exceeds, scan = _default_body_walks()
    if DEFAULT_BACKEND == "python":
        assert (exceeds, scan) == (json_length_exceeds, first_non_finite)
    else:
        assert exceeds is not json_length_exceeds and scan is not first_non_finite
        assert type(exceeds).__module__ != "flowlang.expr.values"
