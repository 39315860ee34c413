# Included by _cevaluator.pyx, so that steps call expression nodes directly (no Python call).
#
# The compiled twin of flowlang.runtime.loop and of the planners of the two steps without I/O
# (set_variables, condition_splitter) in flowlang.runtime.steps. Cold paths (rows that could not
# be compiled, the rows of a taken branch, results, failures) call the very Python functions the
# twin uses. A property test runs generated flows through both loops and compares everything.

import asyncio as _asyncio

from cpython.time cimport perf_counter as _perf_counter

cdef object _RunResult = None
cdef object _compared_rows = None
cdef object _holding_rows = None


cdef void _import_runtime() except *:
    """The runtime's Python helpers, imported on first use (at load it would be circular)."""
    global _RunResult, _compared_rows, _holding_rows
    from flowlang.runtime.results import RunResult
    from flowlang.runtime.steps import compared_rows, holding_rows
    _RunResult, _compared_rows, _holding_rows = RunResult, compared_rows, holding_rows


cdef class Renderer:
    """A field's render: the node of a compiled template, else the Python callable."""
    cdef Node node
    cdef object render

    def __cinit__(self, object render):
        owner = getattr(render, "__self__", None)
        if type(owner) is Evaluator:
            self.node = (<Evaluator>owner).root
        else:
            self.render = render

    cdef inline object call(self, object scope):
        if self.node is not None:
            return self.node.eval(scope)
        return self.render(scope)


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

    cdef object plain(self, object run, object scope):
        return self.run_step(run)


cdef void merge_variables(object variables, object values) except *:
    """Twin of flowlang.runtime.steps.merge_variables: nested maps merge copy-on-write."""
    for key, value in values.items():
        existing = variables.get(key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged = dict(existing)
            merge_variables(merged, value)
            variables[key] = merged
        else:
            variables[key] = value


cdef class SetVariablesStep(PlannedStep):
    cdef object build
    cdef list names
    cdef object target
    cdef str transition

    def __cinit__(self, object step, object run_step, object execute, *args):
        tree = step.fields["variables"]
        self.build = tree.build
        self.names = [key for key, _ in tree.entries]
        self.target = step.fields.get("next")
        self.transition = "go" if self.target else "complete"

    cdef object plain(self, object run, object scope):
        merge_variables(scope["vars"], self.build(scope))
        return (self.transition, self.target, "set", {"variables": list(self.names)})


cdef class PlannedBranch:
    cdef Renderer test
    cdef Renderer expression
    cdef object source
    cdef object target
    cdef str label
    cdef tuple rows

    def __cinit__(self, object branch, Py_ssize_t index):
        self.test = Renderer(branch.test) if branch.test is not None else None
        if branch.expression is not None:
            self.expression = Renderer(branch.expression.render)
            self.source = branch.expression.source
        self.target = branch.next
        self.label = f"branch {index}"
        self.rows = branch.rows


cdef class SplitterStep(PlannedStep):
    cdef tuple branches
    cdef object otherwise

    def __cinit__(self, object step, object run_step, object execute, *args):
        self.branches = tuple(
            PlannedBranch(branch, index) for index, branch in enumerate(step.fields["branches"])
        )
        self.otherwise = step.fields["otherwise"]

    cdef object plain(self, object run, object scope):
        cdef PlannedBranch branch
        for branch in self.branches:
            if branch.expression is not None:
                value = branch.expression.call(scope)
                if truthy(value):
                    return ("go", branch.target, branch.label,
                            {"expression": branch.source, "value": value})
            elif branch.test is not None:
                if branch.test.call(scope):
                    return ("go", branch.target, branch.label,
                            {"rows": _compared_rows(branch.rows, scope)})
            else:
                compared = _holding_rows(branch.rows, scope)
                if compared is not None:
                    return ("go", branch.target, branch.label, {"rows": compared})
        return ("go", self.otherwise, "otherwise", None)


def compile_plan(plan):
    """The compiled form of a step plan from flowlang.runtime.steps.plan_flow."""
    if _RunResult is None:
        _import_runtime()
    compiled = {}
    for step_id, (step, run_step, execute) in plan.items():
        if step.type == "set_variables":
            compiled[step_id] = SetVariablesStep(step, run_step, execute)
        elif step.type == "condition_splitter":
            compiled[step_id] = SplitterStep(step, run_step, execute)
        else:
            compiled[step_id] = PlannedStep(step, run_step, execute)
    return compiled


async def run_loop(runtime, run, dict plan, step_id):
    """Twin of flowlang.runtime.loop.run_loop over a plan from ``compile_plan``."""
    cdef PlannedStep planned
    cdef Py_ssize_t steps_run, count, max_steps, max_same
    cdef double started, finished
    cdef tuple transition
    cdef list trace = run.trace
    cdef object scope = run.scope
    settings = runtime.settings
    secret_values = run.redactor.values
    loop_time = _asyncio.get_running_loop().time
    deadline = loop_time() + settings.run_deadline
    max_steps, max_same = settings.max_steps, settings.max_same_step
    steps_run = run.steps_run
    last, count = run.streak
    started = _perf_counter()
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
                transition = planned.plain(run, scope)
            else:
                if loop_time() > deadline:
                    raise TimeoutError
                if planned.http:  # network I/O runs under the run's deadline
                    async with _asyncio.timeout_at(deadline):
                        transition = await planned.execute(planned.step, run)
                else:  # the host's own awaitable
                    transition = await planned.execute(planned.step, run)
            kind, target, outcome, detail = transition
            if detail is not None and secret_values:
                detail = run.redactor.data(detail)
            finished = _perf_counter()
            trace.append((step_id, planned.kind, outcome, (finished - started) * 1000.0, detail))
            started = finished
            if kind == "go":
                step_id = target
                continue
            run.steps_run, run.streak = steps_run, (last, count)
            if kind == "wait":
                return _RunResult(
                    "waiting_for_input", trace, run.instructions, run.state(step_id), transition[3]
                )
            if kind == "end":
                return _RunResult("ended", trace, run.instructions)
            break
        return _RunResult("completed", trace, run.instructions)
    finally:
        run.steps_run, run.streak = steps_run, (last, count)
