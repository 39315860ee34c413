# cython: language_level=3, boundscheck=False, wraparound=False, always_allow_keywords=False
# cython: binding=False, embedsignature=False
"""Compiled runtime (flowlang._runtime): the twins of the step loop's hot path.

The step loop (flowlang.runtime.loop), the steps without I/O and the call-control steps
(flowlang.kinds), a run's fields (flowlang.runtime.run) and new scope (flowlang.runtime.loop),
run data sizes (flowlang.rundata.measure) and trace entries (flowlang.runtime.results). Steps
call expression nodes directly: the node types come from the expression module
(ext/flowlang._expr.pxd), no Python call per node. Cold paths (rows that could not be compiled,
the rows of a taken branch, HTTP, results, failures) call the very Python functions the twins
use, imported below when this module loads (every one of them sits below the runtime's top
module, which is what loads this one). Property tests run generated flows through both loops and
compare everything; flowlang.expr.backends.ACCELERATORS lists the twins.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.time cimport perf_counter_ns as _perf_counter_ns
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.math cimport isfinite

from flowlang._expr cimport Node, TreeBuilder, _interned, node_of, text_of, truthy

cdef extern from "Python.h":
    Py_UCS4 PyUnicode_MAX_CHAR_VALUE(object)

from collections.abc import Mapping as _Mapping

import flowlang.rundata as _rundata

from flowlang.kinds.call_control import text_limit as _text_limit
from flowlang.kinds.condition_splitter import compared_rows as _compared_rows
from flowlang.kinds.condition_splitter import holding_rows as _holding_rows
from flowlang.kinds.registry import STEP_KINDS as _STEP_KINDS
from flowlang.rundata import DataLimitError as _DataLimitError
from flowlang.rundata import _text_size as _py_text_size
from flowlang.rundata import disown_reads as _disown_reads
from flowlang.rundata import merge_into_owned as _merge_into_owned
from flowlang.rundata import settle_stored as _settle_stored
from flowlang.rundata import state_full as _state_full
from flowlang.rundata import store_variables as _store_variables
from flowlang.rundata import variable_problem as _variable_problem
from flowlang.runtime.loop import context_problem as _context_problem
from flowlang.runtime.loop import key_text as _key_text
from flowlang.runtime.loop import unreadable_context as _unreadable_context
from flowlang.runtime.loop import vars_reads as _vars_reads
from flowlang.runtime.results import RunResult as _PythonRunResult

__all__ = ["RunFields", "compile_plan", "measure_data", "new_scope", "run_loop", "trace_entries"]


# --- run data: the twin of flowlang.rundata.measure ----------------------------------------

cdef enum:
    TOO_DEEP = -1
    TOO_LARGE = -2
    BAD_INT = -3
    BAD_TEXT = -4
    BAD_KIND = -5
    BAD_KEY = -6
    BAD_NUMBER = -7

cdef object _INT_MAX = 2**64 - 1


cdef inline Py_ssize_t _text_size(object text) except? -100:
    """A str or a subclass (read as str: no override runs)."""
    if PyUnicode_MAX_CHAR_VALUE(text) < 0xD800:
        return PyUnicode_GET_LENGTH(text) + 2
    return _py_text_size(text)


cdef inline Py_ssize_t _int_size(object value) except? -100:
    cdef int overflow = 0
    PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        return 8
    if overflow > 0 and int.__int__(value) <= _INT_MAX:  # a subclass's __le__ never runs
        return 8
    return BAD_INT


cdef Py_ssize_t _measure(object value, Py_ssize_t depth, Py_ssize_t budget, bint strict) except? -100:
    """Twin of flowlang.rundata.measure (without the trail: the error path asks it)."""
    cdef object kind = type(value)
    cdef Py_ssize_t size
    if kind is str:
        size = _text_size(value)
    elif value is None or kind is bool:
        size = 5
    elif kind is int:
        size = _int_size(value)
    elif kind is float:
        size = BAD_NUMBER if strict and not isfinite(<double>value) else 8
    elif kind is dict:
        return _measure_map(value, depth, budget, strict)
    elif kind is list or kind is tuple:
        return _measure_list(value, depth, budget, strict)
    elif isinstance(value, str):
        size = _text_size(value)
    elif isinstance(value, bool):
        size = 5
    elif isinstance(value, int):
        size = _int_size(value)
    elif isinstance(value, float):
        size = BAD_NUMBER if strict and not isfinite(<double>value) else 8
    elif isinstance(value, (list, tuple)):
        return _measure_list(value, depth, budget, strict)
    elif isinstance(value, dict):
        return _measure_map(value, depth, budget, strict)
    elif strict:
        return BAD_KIND
    else:
        if isinstance(value, _Mapping):
            return _measure_map(value, depth, budget, strict)
        size = 5
    if size < 0 or size <= budget:
        return size
    return TOO_LARGE


cdef Py_ssize_t _measure_list(object value, Py_ssize_t depth, Py_ssize_t budget, bint strict) except? -100:
    cdef Py_ssize_t size = 2, child
    if depth <= 0:
        return TOO_DEEP
    if type(value) is not list and type(value) is not tuple:  # a subclass: its own code runs
        try:
            value = list(value)
        except Exception:  # a list that cannot be read
            return BAD_KIND
    for item in value:
        child = _measure(item, depth - 1, budget - size - 1, strict)
        if child < 0:
            return child
        size += child + 1
        if size > budget:
            return TOO_LARGE
    return size if size <= budget else TOO_LARGE


cdef Py_ssize_t _measure_map(object value, Py_ssize_t depth, Py_ssize_t budget, bint strict) except? -100:
    cdef Py_ssize_t size = 2
    if depth <= 0:
        return TOO_DEEP
    if type(value) is dict:  # no copy: strong references to each entry while it is measured;
        # a size change meanwhile (a custom Mapping's code) raises RuntimeError, as in the twin
        for key, item in (<dict>value).items():
            size = _measure_entry(key, item, size, depth, budget, strict)
            if size < 0:
                return size
        return size if size <= budget else TOO_LARGE
    try:
        entries = list(value.items())
    except Exception:  # a mapping that cannot be read
        return BAD_KIND
    for key, item in entries:
        size = _measure_entry(key, item, size, depth, budget, strict)
        if size < 0:
            return size
    return size if size <= budget else TOO_LARGE


cdef inline Py_ssize_t _measure_entry(
    object key, object item, Py_ssize_t size, Py_ssize_t depth, Py_ssize_t budget, bint strict
) except? -100:
    """``size`` with one entry of a map added, or a code."""
    cdef Py_ssize_t key_size, child
    if type(key) is str or isinstance(key, str):
        key_size = _text_size(key)
        if key_size < 0:
            return key_size
    elif strict:
        return BAD_KEY
    else:
        key_size = 8
    size += key_size + 2
    child = _measure(item, depth - 1, budget - size, strict)
    if child < 0:
        return child
    size += child
    if size > budget:
        return TOO_LARGE
    return size


def measure_data(value, Py_ssize_t depth, Py_ssize_t budget, bint strict):
    """Twin of flowlang.rundata.measure (its first four arguments)."""
    return _measure(value, depth, budget, strict)


def trace_entries(list rows):
    """Twin of flowlang.runtime.results.trace_entries."""
    cdef list entries = []
    cdef tuple row
    for row in rows:
        entries.append(
            {"step": row[0], "type": row[1], "outcome": row[2], "duration_ms": row[3],
             "detail": row[4]}
        )
    return entries


#: The loop's results: a RunResult whose trace dicts are built by trace_entries above.
cdef object _RunResult = type(
    "RunResult", (_PythonRunResult,), {"__slots__": (), "entries_of": staticmethod(trace_entries)}
)


cdef tuple _RUNTIME_ROOTS = ("input", "steps", "secrets")


def new_scope(context, tuple limits):
    """Twin of flowlang.runtime.loop.new_scope."""
    cdef Py_ssize_t size
    cdef dict data = dict(context) if context else {}
    for key in data:
        if type(key) is not str:
            data = {_key_text(key): value for key, value in data.items()}
            break
    for root in _RUNTIME_ROOTS:
        if root in data:
            raise ValueError(f"the context may not set {root!r}: the runtime owns it")
    variables = data.get("vars")
    if variables is None:
        data["vars"] = {}
    elif isinstance(variables, dict):
        data["vars"] = dict(variables)
    else:
        raise ValueError("vars must be a mapping")
    data["input"] = {}
    data["steps"] = {}
    try:
        size = _measure(data, <Py_ssize_t>limits[2] + 1, limits[1], False)
    except Exception as error:  # a custom Mapping's code changed the data while it was read
        raise ValueError(_unreadable_context(error)) from None
    if size < 0:
        raise ValueError(_context_problem(data, limits))
    return data, size


cdef class RunFields:
    """Twin of flowlang.runtime.run.RunFields: the fields of a run, read by the loop in C."""
    cdef public object runtime
    cdef public object flow
    cdef public dict scope
    cdef public object redactor
    cdef public list trace
    cdef public list instructions
    cdef public object steps_run
    cdef public object streak
    cdef public object run_id
    cdef public object seq
    cdef public Py_ssize_t data_size
    cdef public dict owned
    cdef Py_ssize_t max_value, max_state, max_depth

    def __init__(self, runtime, flow, dict scope, secrets, steps_run=0, streak=(None, 0),
                 run_id=None, seq=0, Py_ssize_t data_size=0):
        self.runtime = runtime
        self.flow = flow
        self.scope = scope
        self.redactor = scope["secrets"] = secrets
        self.trace = []
        self.instructions = []
        self.steps_run = steps_run
        self.streak = streak
        self.run_id = run_id
        self.seq = seq
        self.data_size = data_size
        self.owned = {}
        self.max_value, self.max_state, self.max_depth = runtime.data_limits


cdef enum Go:
    GO_ON, WAIT, END, COMPLETE

cdef dict _KINDS = {"go": GO_ON, "wait": WAIT, "end": END, "complete": COMPLETE}


cdef class Transit:
    """Where a step sends the run: the loop's one reused record, in place of a tuple per step
    (the Python twin's ``(kind, target, outcome, detail)``)."""
    cdef Go kind
    cdef object target
    cdef object outcome
    cdef object detail

    cdef inline void set(self, Go kind, object target, object outcome, object detail):
        self.kind = kind
        self.target = target
        self.outcome = outcome
        self.detail = detail

    cdef void take(self, tuple transition) except *:
        """A transition returned by a Python executor."""
        kind, self.target, self.outcome, self.detail = transition
        self.kind = <Go><int>_KINDS[kind]


cdef class PlannedStep:
    """One step of a flow, ready for the loop: a plain call, or an executor to await."""
    cdef readonly object step
    cdef str kind
    cdef object run_step
    cdef object execute
    cdef bint waits
    cdef bint http
    cdef object reads

    def __cinit__(self, object step, object run_step, object execute, *args):
        self.step = step
        self.reads = _vars_reads(step)
        self.kind = step.type
        self.run_step = run_step
        self.execute = execute
        self.waits = run_step is None
        self.http = step.kind.network

    cdef void plain(self, object run, object scope, Transit out) except *:
        out.take(self.run_step(run))


cdef object _ABSENT = object()


cdef inline object _variable(dict variables, object key):
    """Twin of flowlang.rundata.lookup_variable: ``variables.get(key)`` as a strong
    reference, or _ABSENT when missing or when a key's ``__eq__``/``__hash__`` raised (a raising
    key is missing, grammar/SPEC.md §2)."""
    try:
        return variables.get(key, _ABSENT)
    except Exception:
        return _ABSENT


cdef void merge_variables(dict variables, object values) except *:
    """Twin of flowlang.rundata.merge_variables: nested maps merge copy-on-write.

    The entries of ``values`` are read once into a list first: looking a key up, copying or
    merging may run a hostile key's or map's code, which must not change what is being read."""
    for key, value in list(values.items()):
        existing = _variable(variables, key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged = dict(existing)
            merge_variables(merged, value)
            variables[key] = merged
        else:
            variables[key] = value


cdef bint _may_read_vars(object value):
    """Whether rendering ``value`` may read ``vars`` (lists of values count as yes)."""
    template = value.template
    if template is None:
        return False
    references = getattr(template, "references", None)
    return references is None or any(ref.root == "vars" for ref in references)


cdef class SetVariablesStep(PlannedStep):
    """Twin of flowlang.kinds.set_variables.plan_set_variables: render every value, then store each
    within the run's data limits (flowlang.rundata.store_variables).

    When the values are flat and none reads ``vars``, each is stored as soon as it is rendered
    (no intermediate dict): nothing can tell the two orders apart (a value refused renders the
    rest first, so that an error among them comes first, as in the Python twin).
    """
    cdef Node build
    cdef TreeBuilder direct
    cdef list names
    cdef object target
    cdef object step_id
    cdef Go transition

    def __cinit__(self, object step, object run_step, object execute, *args):
        tree = step.fields["variables"]
        build = tree.build
        self.build = build if type(build) is TreeBuilder else node_of(build)
        flat = all(getattr(item, "entries", None) is None for _, item in tree.entries)
        if type(build) is TreeBuilder and flat:
            if not any(_may_read_vars(item) for _, item in tree.entries):
                self.direct = <TreeBuilder>build
        self.names = [key for key, _ in tree.entries]
        self.target = _interned(step.fields.get("next"))
        self.step_id = step.id
        self.transition = GO_ON if self.target else COMPLETE

    cdef object store(self, RunFields run, dict variables, object key, object value):
        """Twin of the loop body of flowlang.rundata.store_variables: None when stored,
        else the DataLimitError to raise."""
        cdef Py_ssize_t size, old, total
        cdef bint merged = False
        cdef dict owned = run.owned
        existing = _variable(variables, key)
        if existing is _ABSENT:
            size = _measure(value, run.max_depth - 1, run.max_value, False)
            if size < 0:
                return self.refused(run, key, value)
            total = run.data_size + size + (len(key) + 2 if isinstance(key, str) else 8) + 2
        else:
            if isinstance(existing, dict) and isinstance(value, dict):
                if owned:
                    after = _merge_into_owned(run, key, existing, value)
                    if after is not None:
                        run.data_size = after
                        return None
                copied = dict(existing)
                merge_variables(copied, value)
                value = copied
                merged = True
            size = _measure(value, run.max_depth - 1, run.max_value, False)
            if size < 0:
                return self.refused(run, key, value)
            old = _measure(existing, run.max_depth, run.max_state, False)
            total = run.data_size + size - (old if old > 0 else 0)
        if total > run.max_state:
            return _DataLimitError(_state_full(self.step_id, f"vars.{key}", run.max_state))
        run.data_size = total
        variables[key] = value
        if owned or (merged and size >= _rundata.IN_PLACE_FROM):  # read here: tests lower it
            _settle_stored(owned, existing, value, size if merged else None)
        return None

    cdef object refused(self, RunFields run, object key, object value):
        return _DataLimitError(_variable_problem(self.step_id, key, value, run.runtime.data_limits))

    cdef void plain(self, object run, object scope, Transit out) except *:
        cdef Py_ssize_t index, rest
        variables = scope["vars"]
        if type(variables) is not dict:
            _store_variables(run, self.step_id, self.build.eval(scope))
        elif self.direct is not None:
            for index in range(len(self.direct.keys)):
                value = (<Node>self.direct.parts[index]).eval(scope)
                refused = self.store(<RunFields>run, <dict>variables, self.direct.keys[index], value)
                if refused is not None:  # the rest are rendered first, as in the Python twin
                    for rest in range(index + 1, len(self.direct.keys)):
                        (<Node>self.direct.parts[rest]).eval(scope)
                    raise refused
        else:
            for key, value in self.build.eval(scope).items():
                refused = self.store(<RunFields>run, <dict>variables, key, value)
                if refused is not None:
                    raise refused
        out.set(self.transition, self.target, "set", {"variables": list(self.names)})


cdef class PlannedBranch:
    cdef Node test
    cdef Node expression
    cdef object source
    cdef object target
    cdef str label
    cdef tuple rows

    def __cinit__(self, object branch, Py_ssize_t index):
        self.test = node_of(branch.test) if branch.test is not None else None
        if branch.expression is not None:
            self.expression = node_of(branch.expression.render)
            self.source = branch.expression.source
        self.target = _interned(branch.next)
        self.label = f"branch {index}"
        self.rows = branch.rows


cdef class SplitterStep(PlannedStep):
    cdef tuple branches
    cdef object otherwise

    def __cinit__(self, object step, object run_step, object execute, *args):
        self.branches = tuple(
            PlannedBranch(branch, index) for index, branch in enumerate(step.fields["branches"])
        )
        self.otherwise = _interned(step.fields["otherwise"])

    cdef void plain(self, object run, object scope, Transit out) except *:
        cdef PlannedBranch branch
        for branch in self.branches:
            if branch.expression is not None:
                value = branch.expression.eval(scope)
                if truthy(value):
                    out.set(GO_ON, branch.target, branch.label,
                            {"expression": branch.source, "value": value})
                    return
            elif branch.test is not None:
                if branch.test.eval(scope):
                    out.set(GO_ON, branch.target, branch.label,
                            {"rows": _compared_rows(branch.rows, scope)})
                    return
            else:
                compared = _holding_rows(branch.rows, scope)
                if compared is not None:
                    out.set(GO_ON, branch.target, branch.label, {"rows": compared})
                    return
        out.set(GO_ON, self.otherwise, "otherwise", None)


cdef class HostStep(PlannedStep):
    """Twin of flowlang.kinds.call_control.run_host_action: say, play, transfer, voicemail, hangup."""
    cdef object field
    cdef object outcome
    cdef bint ends
    cdef Node value
    cdef Py_ssize_t limit
    cdef object target

    def __cinit__(self, object step, object run_step, object execute, *args):
        action = step.kind.host
        self.field, self.outcome, self.ends = action.field, action.outcome, action.ends
        if self.field is not None:
            self.value = node_of(step.fields[self.field].render)
            self.limit = _text_limit(step.fields[self.field])
        self.target = _interned(step.fields.get("next"))

    cdef void done(self, object value, Transit out):
        if self.ends:
            out.set(END, None, self.outcome, None if self.field is None else {self.field: value})
        else:
            out.set(GO_ON if self.target else COMPLETE, self.target, self.outcome, None)


#: The compiled twins of step kinds, by the name a kind gives in ``twin``.
cdef dict _TWINS = {
    "SetVariablesStep": SetVariablesStep,
    "SplitterStep": SplitterStep,
    "HostStep": HostStep,
}


def _check_step_twins():
    """Every registered kind that names a compiled twin names one of these: a kind with a
    twin this module lacks is an error when the module loads, not a KeyError mid-run."""
    unknown = [
        f"{name} (twin {kind.twin!r})"
        for name, kind in _STEP_KINDS.items()
        if kind.twin is not None and kind.twin not in _TWINS
    ]
    if unknown:
        raise ImportError(
            "step kinds name compiled twins that flowlang._runtime does not have: "
            + ", ".join(unknown) + f"; it has {', '.join(sorted(_TWINS))}"
        )


_check_step_twins()


def compile_plan(plan):
    """The compiled form of a step plan from flowlang.runtime.plan.plan_flow."""
    compiled = {}
    for step_id, (step, run_step, execute) in plan.items():
        twin = step.kind.twin
        planned = PlannedStep if twin is None else _TWINS[twin]
        compiled[_interned(step_id)] = planned(step, run_step, execute)
    return compiled


async def run_loop(runtime, RunFields run, dict plan, step_id):
    """Twin of flowlang.runtime.loop.run_loop over a plan from ``compile_plan``."""
    cdef PlannedStep planned
    cdef HostStep host_step
    cdef Transit out = Transit()
    cdef Py_ssize_t steps_run, count, max_steps, max_same
    cdef double began, run_deadline
    cdef long long started, finished
    cdef list trace = run.trace
    cdef object scope = run.scope
    cdef list instructions = run.instructions
    cdef dict owned = run.owned
    host = runtime.host
    secret_values = run.redactor.used
    timer = runtime.timer  # the clock of the run's deadline (time.monotonic by default)
    began = timer()
    max_steps, max_same, run_deadline = runtime.loop_limits
    steps_run = run.steps_run
    last, count = run.streak
    started = _perf_counter_ns()
    try:
        while step_id is not None:
            if steps_run >= max_steps:
                return run.failed(f"the run took more than {max_steps} steps")
            if step_id is last or step_id == last:
                count += 1
                if count > max_same:
                    return run.failed(f"step {step_id!r} ran more than {max_same} times in a row")
            else:
                last, count = step_id, 1
            steps_run += 1
            planned = <PlannedStep>plan[step_id]
            if owned and planned.reads is not None:  # what it may read, the run no longer owns
                _disown_reads(owned, scope["vars"], planned.reads)
            if not planned.waits:
                planned.plain(run, scope, out)
            else:
                if timer() - began > run_deadline:
                    raise TimeoutError
                if planned.http:  # network I/O runs under the run's deadline
                    # asyncio is not imported when the module loads: a process that only
                    # renders templates never pays for it (the runtime has loaded it by now).
                    import asyncio
                    async with asyncio.timeout(began + run_deadline - timer()):
                        out.take(await planned.execute(planned.step, run))
                elif type(planned) is HostStep:  # recorded, then the host's own awaitable
                    host_step = <HostStep>planned
                    if host_step.field is None:
                        value = None
                        instructions.append({"action": planned.kind, "step": step_id})
                        await getattr(host, planned.kind)(step=step_id)
                    else:
                        value = text_of(host_step.value.eval(scope), host_step.limit)
                        instructions.append(
                            {"action": planned.kind, "step": step_id,
                             host_step.field: run.redact(value) if secret_values else value}
                        )
                        await getattr(host, planned.kind)(value, step=step_id)
                    host_step.done(value, out)
                else:
                    out.take(await planned.execute(planned.step, run))
            detail = out.detail
            if detail is not None and secret_values:
                detail = run.redactor.data(detail)
            finished = _perf_counter_ns()
            trace.append((step_id, planned.kind, out.outcome, (finished - started) / 1e6, detail))
            started = finished
            if out.kind == GO_ON:
                step_id = out.target
                continue
            if out.kind == WAIT:  # the counters go into the state, to carry on with
                run.steps_run, run.streak = steps_run, (last, count)
                return _RunResult(  # awaiting is the masked detail: it is output too
                    "waiting_for_input",
                    trace,
                    run.instructions,
                    run.state(step_id),
                    detail,
                    variables=run.scope.get("vars"),
                )
            if out.kind == END:
                return _RunResult("ended", trace, run.instructions, variables=run.scope.get("vars"))
            break
        return _RunResult("completed", trace, run.instructions, variables=run.scope.get("vars"))
    except Exception as error:  # the step that ran, its field and place: found now
        return run.broken(error, step_id, (_perf_counter_ns() - started) / 1e6)
