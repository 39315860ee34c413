# Included by _cevaluator.pyx, so that steps call expression nodes directly (no Python call).
#
# The compiled twins of the runtime's hot path: the step loop (flowlang.runtime.loop), the
# steps without I/O and the call-control steps (flowlang.runtime.steps), field trees
# (flowlang.flow.model.generated_build), a run's fields and new scope (flowlang.runtime.loop)
# and trace entries (flowlang.runtime.results). Cold paths (rows that could not be compiled, the
# rows of a taken branch, HTTP, results, failures) call the very Python functions the twins use.
# Property tests run generated flows through both loops and compare everything.

import asyncio as _asyncio

from cpython.time cimport monotonic as _monotonic
from cpython.time cimport perf_counter_ns as _perf_counter_ns

cdef object _RunResult = None
cdef object _compared_rows = None
cdef object _holding_rows = None
cdef dict _HOST_ACTIONS = None


cdef void _import_runtime() except *:
    """The runtime's Python helpers, imported on first use (at load it would be circular)."""
    global _RunResult, _compared_rows, _holding_rows, _HOST_ACTIONS
    from flowlang.runtime.results import RunResult
    from flowlang.runtime.steps import HOST_ACTIONS, compared_rows, holding_rows
    _RunResult, _compared_rows, _holding_rows = RunResult, compared_rows, holding_rows
    _HOST_ACTIONS = HOST_ACTIONS


cdef class PythonCall(Node):
    """A field whose render is not a compiled template (a list of values, a literal to copy,
    a template of the Python backend): called as Python."""
    cdef object render

    def __cinit__(self, object render):
        self.render = render

    cdef object eval(self, object context):
        return self.render(context)


cdef Node node_of(object render):
    """The node that renders a field: the root of a compiled template, else a PythonCall."""
    owner = getattr(render, "__self__", None)
    if type(owner) is Evaluator:
        return (<Evaluator>owner).root
    return PythonCall(render)


cdef class TreeBuilder(Node):
    """Twin of the generated ``build`` of flowlang.flow.model.FieldTree: a fresh dict per call,
    keys in document order, nested trees built inline."""
    cdef tuple keys
    cdef tuple parts

    def __cinit__(self, tuple keys, tuple parts):
        self.keys = keys
        self.parts = parts

    cdef object eval(self, object scope):
        cdef dict built = {}
        cdef Py_ssize_t index
        for index in range(len(self.keys)):
            built[self.keys[index]] = (<Node>self.parts[index]).eval(scope)
        return built

    def __call__(self, scope):
        return self.eval(scope)


def build_tree(tree):
    """The compiled ``build`` of a FieldTree (entries: key and Value, or key and FieldTree)."""
    parts = []
    for key, item in tree.entries:
        if getattr(item, "entries", None) is not None:  # a nested FieldTree, compiled first
            nested = item.build
            parts.append(nested if type(nested) is TreeBuilder else node_of(nested))
        elif item.template is None and type(item.literal) not in (list, dict):
            parts.append(Const(item.literal))
        else:  # templates; list and map literals, copied on every call
            parts.append(node_of(item.render))
    return TreeBuilder(tuple(_intern(str(key)) for key, _ in tree.entries), tuple(parts))


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


cdef tuple _RUNTIME_ROOTS = ("input", "steps", "secrets")


def new_scope(context):
    """Twin of flowlang.runtime.loop.new_scope."""
    cdef dict data = dict(context) if context else {}
    for key in data:
        if type(key) is not str:
            data = {str(key): value for key, value in data.items()}
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
    return data


cdef class RunFields:
    """Twin of flowlang.runtime.loop.RunFields: the fields of a run, read by the loop in C."""
    cdef public object runtime
    cdef public object flow
    cdef public dict scope
    cdef public object redactor
    cdef public list trace
    cdef public list instructions
    cdef public object steps_run
    cdef public object streak

    def __init__(self, runtime, flow, dict scope, secrets, steps_run=0, streak=(None, 0)):
        self.runtime = runtime
        self.flow = flow
        self.scope = scope
        self.redactor = scope["secrets"] = secrets
        self.trace = []
        self.instructions = []
        self.steps_run = steps_run
        self.streak = streak


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

    def __cinit__(self, object step, object run_step, object execute, *args):
        self.step = step
        self.kind = step.type
        self.run_step = run_step
        self.execute = execute
        self.waits = run_step is None
        self.http = self.kind == "http_request"

    cdef void plain(self, object run, object scope, Transit out) except *:
        out.take(self.run_step(run))


cdef void merge_variables(object variables, object values) except *:
    """Twin of flowlang.runtime.steps.merge_variables: nested maps merge copy-on-write."""
    cdef PyObject* found
    cdef Py_ssize_t position = 0
    cdef PyObject* key
    cdef PyObject* value
    if type(variables) is not dict or type(values) is not dict:
        for key_object, value_object in values.items():
            existing = variables.get(key_object)
            if isinstance(existing, dict) and isinstance(value_object, dict):
                merged = dict(existing)
                merge_variables(merged, value_object)
                variables[key_object] = merged
            else:
                variables[key_object] = value_object
        return
    while PyDict_Next(values, &position, &key, &value):
        found = PyDict_GetItem(variables, <object>key)
        if found is not NULL and isinstance(<object>found, dict) and isinstance(<object>value, dict):
            merged = dict(<object>found)
            merge_variables(merged, <object>value)
            (<dict>variables)[<object>key] = merged
        else:
            (<dict>variables)[<object>key] = <object>value


cdef bint _may_read_vars(object value):
    """Whether rendering ``value`` may read ``vars`` (lists of values count as yes)."""
    template = value.template
    if template is None:
        return False
    references = getattr(template, "references", None)
    return references is None or any(ref.root == "vars" for ref in references)


cdef class SetVariablesStep(PlannedStep):
    """Twin of flowlang.runtime.steps.plan_set_variables: render every value, then merge.

    When the values are flat and none reads ``vars``, each is merged as soon as it is rendered
    (no intermediate dict): nothing can tell the two orders apart.
    """
    cdef Node build
    cdef TreeBuilder direct
    cdef list names
    cdef object target
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
        self.transition = GO_ON if self.target else COMPLETE

    cdef void plain(self, object run, object scope, Transit out) except *:
        cdef Py_ssize_t index
        cdef PyObject* found
        variables = scope["vars"]
        if self.direct is not None and type(variables) is dict:
            for index in range(len(self.direct.keys)):
                key = self.direct.keys[index]
                value = (<Node>self.direct.parts[index]).eval(scope)
                found = PyDict_GetItem(variables, key)
                if found is not NULL and isinstance(<object>found, dict) and isinstance(value, dict):
                    merged = dict(<object>found)
                    merge_variables(merged, value)
                    value = merged
                (<dict>variables)[key] = value
        else:
            merge_variables(variables, self.build.eval(scope))
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
    """Twin of flowlang.runtime.steps.host_action: say, play, transfer, voicemail, hangup."""
    cdef object field
    cdef object outcome
    cdef bint ends
    cdef Node value
    cdef object target

    def __cinit__(self, object step, object run_step, object execute, *args):
        self.field, self.outcome, self.ends = _HOST_ACTIONS[step.type]
        if self.field is not None:
            self.value = node_of(step.fields[self.field].render)
        self.target = _interned(step.fields.get("next"))

    cdef void done(self, object value, Transit out):
        if self.field is None:
            out.set(END, None, self.outcome, None)
        elif self.ends:
            out.set(END, None, self.outcome, {self.field: value})
        else:
            out.set(GO_ON if self.target else COMPLETE, self.target, self.outcome, None)


def compile_plan(plan):
    """The compiled form of a step plan from flowlang.runtime.steps.plan_flow."""
    if _RunResult is None:
        _import_runtime()
    compiled = {}
    for step_id, (step, run_step, execute) in plan.items():
        step_id = _interned(step_id)
        if step.type == "set_variables":
            compiled[step_id] = SetVariablesStep(step, run_step, execute)
        elif step.type == "condition_splitter":
            compiled[step_id] = SplitterStep(step, run_step, execute)
        elif step.type in _HOST_ACTIONS:
            compiled[step_id] = HostStep(step, run_step, execute)
        else:
            compiled[step_id] = PlannedStep(step, run_step, execute)
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
    host = runtime.host
    secret_values = run.redactor.used
    began = _monotonic()
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
            if not planned.waits:
                planned.plain(run, scope, out)
            else:
                if _monotonic() - began > run_deadline:
                    raise TimeoutError
                if planned.http:  # network I/O runs under the run's deadline
                    async with _asyncio.timeout(began + run_deadline - _monotonic()):
                        out.take(await planned.execute(planned.step, run))
                elif type(planned) is HostStep:  # recorded, then the host's own awaitable
                    host_step = <HostStep>planned
                    if host_step.field is None:
                        value = None
                        instructions.append({"action": planned.kind, "step": step_id})
                        await host.hangup(step=step_id)
                    else:
                        value = text_of(host_step.value.eval(scope))
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
                    "waiting_for_input", trace, run.instructions, run.state(step_id), detail
                )
            if out.kind == END:
                return _RunResult("ended", trace, run.instructions)
            break
        return _RunResult("completed", trace, run.instructions)
    except Exception as error:
        return run.broken(error)
