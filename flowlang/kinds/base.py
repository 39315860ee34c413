"""Kinds: what a step kind is — its fields, edges, the facts on each edge, checks and executor.

A step kind is one module under ``flowlang/kinds/`` that defines ``KIND`` (a :class:`StepKind`)
and one line in ``flowlang/kinds/registry.py``. Everything else reads the registry: the field
table and JSON Schema, ``Step.targets``, the builder and validator, both step loops and the
compiled plan. No other code tests a step's type name.
"""

from __future__ import annotations

__all__ = [
    "Checker",
    "HostAction",
    "RunView",
    "StepKind",
    "Transition",
    "no_facts",
]

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.flow.source import Document, Pointer

#: Where the run goes after a step, as ``(kind, target, outcome, detail)``: kind ``go`` (to
#: ``target``), ``wait`` (for input), ``end`` (a call-control step handed the call over) or
#: ``complete`` (no next step). A plain tuple: steps return one on every call.
Transition: TypeAlias = tuple[str, str | None, str, dict[str, Any] | None]


class RunView(Protocol):
    """What a step's executor reads and writes of one run (``flowlang.runtime.run.Run``)."""

    scope: dict[str, Any]
    data_size: int
    trace: list[Any]
    instructions: list[Any]

    @property
    def runtime(self) -> Any: ...

    @property
    def redactor(self) -> Any: ...

    def redact(self, text: str) -> str: ...

    def request_summary(self, request: Any) -> dict[str, Any]: ...

    async def instruct(
        self, action: str, step: str, field: str | None = None, value: str = ""
    ) -> None: ...


class Checker(Protocol):
    """What a kind's load-time check may use of the document builder."""

    @property
    def document(self) -> Document: ...

    def error(
        self,
        message: str,
        pointer: Pointer,
        step: str | None = None,
        field: str | None = None,
        *,
        key: bool = False,
    ) -> None: ...


#: A kind's load-time check: ``check(checker, fields, raw, pointer, step_id)``; it reports
#: through ``checker.error`` and may fill in derived fields (``on_timeout`` from ``on_failure``).
Check: TypeAlias = Callable[["Checker", dict[str, Any], dict[str, Any], "Pointer", str], None]
#: A step planned once per flow into a plain call (no I/O).
Planner: TypeAlias = Callable[["Step"], Callable[[Any], Transition]]
#: A step awaited on every run (network I/O, the host).
Executor: TypeAlias = Callable[["Step", Any], Awaitable[Transition]]
#: How a step that waits for input reads what the caller entered: ``(outcome, value, target)``.
Resume: TypeAlias = Callable[["Step", "str | None"], tuple[str, str, str]]


@dataclass(frozen=True)
class HostAction:
    """A call-control step handed to the host: the field whose text goes to the host (None: the
    action takes none), the outcome, and whether the run ends there (the call is the host's)."""

    field: str | None
    outcome: str
    ends: bool


def no_facts(step: Step) -> Mapping[str, frozenset[str]]:
    """The facts of a kind that makes none beyond ``ran`` (the default)."""
    return {}


@dataclass(frozen=True)
class StepKind:
    """One kind of step: everything the loader, the checker and both loops need to know.

    Exactly one way to run it: ``plan`` (planned once per flow into a plain call: steps without
    I/O), ``execute`` (awaited: network I/O when ``network``), or ``host`` (a call-control
    instruction). A kind that ``takes_input`` suspends the run (its plan returns ``wait``) and
    ``resume`` reads the caller's entry; its value is ``input.<step id>`` on every outcome.
    """

    name: str
    summary: str
    fields: Mapping[str, Field]
    #: Facts the step makes true on an edge beyond ``ran`` (it finished): ``response`` (its
    #: HTTP response is kept in ``steps.<id>.response``), per edge field name.
    edge_facts: Callable[[Step], Mapping[str, frozenset[str]]] = no_facts
    #: Whether the step stores ``input.<id>`` (and suspends the run for it).
    takes_input: bool = False
    #: Fields whose templates may read ``secrets`` (what goes to an HTTP server only).
    secret_fields: tuple[str, ...] = ()
    #: Whether the step does network I/O (it runs under the run's deadline).
    network: bool = False
    check: Check | None = None
    plan: Planner | None = None
    execute: Executor | None = None
    host: HostAction | None = None
    resume: Resume | None = None
    #: The name of the step's compiled twin in the extension (None: the plan is called as is).
    twin: str | None = None
    #: Top-level sections of a document this kind reads (``schedules``), with their JSON Schema.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ways = [way for way in (self.plan, self.execute, self.host) if way is not None]
        if len(ways) != 1:
            raise TypeError(
                f"step kind {self.name!r} needs exactly one way to run (plan, execute or host), "
                f"not {len(ways)}"
            )
        if self.takes_input and (self.plan is None or self.resume is None):
            raise TypeError(f"step kind {self.name!r} takes input: it needs plan and resume")
        if self.network and self.execute is None:
            raise TypeError(f"step kind {self.name!r} does network I/O: it needs execute")
        unknown = [name for name in self.secret_fields if name not in self.fields]
        if unknown:
            raise TypeError(f"step kind {self.name!r}: secret fields {unknown} are not fields")

    @property
    def edge_fields(self) -> tuple[str, ...]:
        """The fields that lead to other steps, in table order."""
        return tuple(name for name, spec in self.fields.items() if spec.is_edge)
