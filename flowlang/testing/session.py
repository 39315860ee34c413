"""A test session: find test files, load the flows and workflows they test (once each), run
their cases and add every run to the coverage. The command line and the pytest plugin both
run cases through a :class:`Session`.
"""

from __future__ import annotations

__all__ = ["MAX_FILES", "CaseOutcome", "FileOutcome", "Session", "find_test_files"]

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlang.automations.workflow import CompiledWorkflow, check_unique_names, load_workflow
from flowlang.errors import FlowError
from flowlang.flow.load import load_flow
from flowlang.flow.model import CompiledFlow
from flowlang.flow.source import DocumentError
from flowlang.graph.model import Coverage, FlowGraph, flow_graph
from flowlang.testing.conditions import ConditionCoverage, WorkflowConditionCoverage
from flowlang.testing.coverage import WorkflowCoverage
from flowlang.testing.expect import Failure, check_flow_case, check_workflow_case
from flowlang.testing.runner import CaseRun, run_flow_case, run_workflow_case
from flowlang.testing.spec import Case, CasesFile, case_error, read_cases_file

#: The suffix of the test files a folder is searched for.
SUFFIX = ".test.yaml"
#: The most test files one session finds in folders.
MAX_FILES = 10_000
#: Folders never searched: hidden ones, virtual environments, caches.
_SKIPPED = frozenset({"node_modules", "__pycache__", "venv"})


def find_test_files(paths: Iterable[str | Path]) -> list[Path]:
    """The test files named, and the ``*.test.yaml`` files in the folders named (sorted, hidden
    folders skipped, regular files only); a path that does not exist is a FileNotFoundError,
    one that is not a regular file or folder a ValueError."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for root, folders, files in os.walk(path):
                folders[:] = sorted(
                    f for f in folders if not f.startswith(".") and f not in _SKIPPED
                )
                found.extend(  # regular files only: a FIFO is never opened
                    Path(root) / f
                    for f in sorted(files)
                    if f.endswith(SUFFIX) and (Path(root) / f).is_file()
                )
                if len(found) > MAX_FILES:
                    raise ValueError(f"more than {MAX_FILES} test files under {path}")
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise ValueError(f"not a regular file: {path}")
        else:
            raise FileNotFoundError(str(path))
    return found


@dataclass
class CaseOutcome:
    """A case run and judged: its failures (none: it passed) and warnings."""

    cases_file: CasesFile
    case: Case
    run: CaseRun
    failures: list[Failure]
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class FileOutcome:
    """A test file: unreadable (``error``), testing a flow or workflows that do not load
    (``load_error``, the findings), or its cases' outcomes."""

    path: Path
    cases_file: CasesFile | None = None
    error: DocumentError | None = None
    load_error: str | None = None
    cases: list[CaseOutcome] = field(default_factory=list)


class Session:
    """Runs test files: ``backend`` picks the step loop, ``strict`` makes unused recordings
    and inputs failures, ``keyword`` keeps the cases whose name holds it (any case),
    ``conditions`` counts condition coverage too (flows then run on the Python loop)."""

    def __init__(
        self,
        *,
        backend: str | None = None,
        strict: bool = False,
        keyword: str | None = None,
        conditions: bool = False,
    ) -> None:
        self.backend = "python" if conditions else backend
        self.conditions = conditions
        #: Condition coverage by flow file, and by workflow (when ``conditions``).
        self.flow_conditions: dict[str, ConditionCoverage] = {}
        self.workflow_conditions: dict[str, WorkflowConditionCoverage] = {}
        self.strict = strict
        self.keyword = keyword.casefold() if keyword else None
        #: Coverage by flow file and by workflow (file and name), in the order first tested.
        self.flows: dict[str, Coverage] = {}
        self.workflows: dict[str, WorkflowCoverage] = {}
        self._flows: dict[Path, CompiledFlow | str] = {}
        self._graphs: dict[str, FlowGraph] = {}
        #: The name coverage is kept under, by resolved path: the path as first written
        #: (normalised; a workflow's with its name).
        self._names: dict[Path, str] = {}
        self._workflows: dict[Path, CompiledWorkflow | str] = {}
        #: Extra keyword arguments for the runtime of each flow (by file), such as condition
        #: coverage's.
        self.runtime_options: dict[str, dict[str, Any]] = {}

    # --- loading ----------------------------------------------------------------------------

    def read(self, path: Path) -> FileOutcome:
        """Read a test file and load what it tests (the cases are not run)."""
        outcome = FileOutcome(path)
        try:
            outcome.cases_file = read_cases_file(path)
        except DocumentError as error:
            outcome.error = error
            return outcome
        cases_file = outcome.cases_file
        if cases_file.flow is not None:
            loaded = self._flow(cases_file.flow)
            if isinstance(loaded, str):
                outcome.load_error = loaded
            else:
                outcome.error = self._without_now(cases_file)
        else:
            problems = [w for w in map(self._workflow, cases_file.workflows) if isinstance(w, str)]
            if problems:
                outcome.load_error = "\n\n".join(problems)
            else:
                try:
                    check_unique_names(self.workflows_of(cases_file))
                except (ValueError, FlowError) as error:
                    outcome.load_error = str(error)
        return outcome

    def _without_now(self, cases_file: CasesFile) -> DocumentError | None:
        """A case without ``now`` of a flow with a step that reads the clock: its outcome
        would depend on the day the tests run."""
        assert cases_file.flow is not None
        graph = self._graphs[self._names[cases_file.flow.resolve()]]
        reading = [step_id for step_id, step in graph.steps.items() if step.kind.reads_clock]
        for case in cases_file.cases:
            if reading and case.now is None:
                message = (
                    f"case {case.name[:80]!r} needs now: (in the case or the defaults): step "
                    f"{reading[0]!r} reads the time of day"
                )
                return case_error(cases_file, case, message)
        return None

    def _flow(self, path: Path) -> CompiledFlow | str:
        key = path.resolve()
        if key not in self._flows:
            try:
                flow = load_flow(path)
            except FlowError as error:
                self._flows[key] = f"{path} has errors:\n\n{error}"
            else:
                self._flows[key] = flow
                name = self._names[key] = os.path.normpath(path)
                graph = self._graphs[name] = flow_graph(flow)
                self.flows[name] = Coverage(graph)
                if self.conditions:
                    counted = self.flow_conditions[name] = ConditionCoverage(graph)
                    self.runtime_options[name] = counted.runtime_options()
        return self._flows[key]

    def _workflow(self, path: Path) -> CompiledWorkflow | str:
        key = path.resolve()
        if key not in self._workflows:
            try:
                workflow = load_workflow(path)
            except FlowError as error:
                self._workflows[key] = f"{path} has errors:\n\n{error}"
            else:
                self._workflows[key] = workflow
                name = self._names[key] = f"{os.path.normpath(path)} ({workflow.name})"
                self.workflows[name] = WorkflowCoverage(workflow)
                if self.conditions:
                    self.workflow_conditions[name] = WorkflowConditionCoverage(workflow)
        return self._workflows[key]

    def workflows_of(self, cases_file: CasesFile) -> list[CompiledWorkflow]:
        found = [self._workflows.get(path.resolve()) for path in cases_file.workflows]
        return [item for item in found if isinstance(item, CompiledWorkflow)]

    def selected(self, cases_file: CasesFile) -> list[Case]:
        """The cases of the file that the keyword keeps."""
        keyword = self.keyword
        return [c for c in cases_file.cases if keyword is None or keyword in c.name.casefold()]

    # --- running ----------------------------------------------------------------------------

    async def run_case(self, cases_file: CasesFile, case: Case) -> CaseOutcome:
        """Run one case of a file already read (and loaded) and add it to the coverage."""
        if cases_file.flow is not None:
            key = cases_file.flow.resolve()
            flow = self._flows[key]
            assert isinstance(flow, CompiledFlow)
            name = self._names[key]
            graph = self._graphs[name]
            done = await run_flow_case(flow, case, self.backend, self.runtime_options.get(name, {}))
            failures = check_flow_case(done, graph, strict=self.strict)
            self.flows[name].add(done.trace)
            warnings = [f"inputs not used: {step}" for step in done.unused_inputs]
        else:
            done = await run_workflow_case(self.workflows_of(cases_file), case)
            failures = check_workflow_case(done, strict=self.strict)
            deliveries = done.dispatch.deliveries if done.dispatch else []
            for path in cases_file.workflows:  # this file's workflows only
                known = self._names.get(path.resolve())
                if known is None:
                    continue
                self.workflows[known].add(deliveries)
                counted = self.workflow_conditions.get(known)
                if counted is not None and done.event is not None:
                    counted.add(done.event)
            warnings = []
        if self.strict:  # unused recordings and inputs are failures then, not warnings
            warnings = []
        else:
            warnings = [f"recorded response not used: {item}" for item in done.unused] + warnings
        warnings = [done.redactor.text(warning) for warning in warnings]  # a URL may hold one
        return CaseOutcome(cases_file, case, done, failures, warnings)

    def run_case_now(self, cases_file: CasesFile, case: Case) -> CaseOutcome:
        """:meth:`run_case` in an event loop of its own (the pytest plugin's items)."""
        return asyncio.run(self.run_case(cases_file, case))

    def run_file(self, path: Path) -> FileOutcome:
        """Read a test file and run its (selected) cases, in order."""
        outcome = self.read(path)
        cases_file = outcome.cases_file
        if cases_file is None or outcome.error is not None or outcome.load_error is not None:
            return outcome

        async def run_all() -> None:
            for case in self.selected(cases_file):
                outcome.cases.append(await self.run_case(cases_file, case))

        asyncio.run(run_all())
        return outcome
