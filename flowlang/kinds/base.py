"""Kinds: what a step kind is — its fields, edges, the facts on each edge, checks and executor.

A step kind is one module under ``flowlang/kinds/`` that defines ``KIND`` (a :class:`StepKind`)
and one line in ``flowlang/kinds/registry.py``. Everything else reads the registry: the field
table and JSON Schema, ``Step.targets``, the builder and validator, both step loops and the
compiled plan. No other code tests a step's type name. A workflow action kind
(``flowlang.automations.kinds``) shares the :class:`Kind` base: a flow step and a workflow
action are both a ``Step`` of their kind.
"""

from __future__ import annotations

__all__ = [
    "END",
    "Checker",
    "HostAction",
    "Kind",
    "Resume",
    "Resumed",
    "RunView",
    "StepKind",
    "Transition",
    "next_or_end",
    "no_facts",
    "registered",
]

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, TypeVar

from flowlang.flow.fields import Field
from flowlang.flow.model import Step
from flowlang.flow.source import Document, Pointer
from flowlang.suggest import HintBudget

#: Where the run goes after a step, as ``(kind, target, outcome, detail)``: kind ``go`` (to
#: ``target``), ``wait`` (for input), ``end`` (a call-control step handed the call over) or
#: ``complete`` (no next step). A plain tuple: steps return one on every call.
Transition: TypeAlias = tuple[str, str | None, str, dict[str, Any] | None]


class RunView(Protocol):
    """What a step's executor reads and writes of one run (``flowlang.runtime.run.Run``)."""

    scope: dict[str, Any]
    data_size: int
    #: The maps of ``vars`` the run may change in place (flowlang.rundata's docstring).
    owned: dict[int, list[Any]]
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
    """What a kind's load-time check may use of the document builder: the document, error
    reporting, and the document's budget of "did you mean" hints."""

    @property
    def document(self) -> Document: ...

    @property
    def hint(self) -> HintBudget: ...

    #: Hosts a URL may reach with plain http (None: not checked when the document loads).
    http_hosts: frozenset[str] | None

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
#: What a step that waits for input makes of the caller's entry: ``(outcome, record, target,
#: detail)``: the record stored as ``input.<step id>`` (its ``value`` is what the flow reads),
#: the step that runs next (the step itself to wait again), the detail of its trace row.
Resumed: TypeAlias = tuple[str, dict[str, Any], str, dict[str, Any] | None]
#: How a step that waits for input reads what the caller entered: ``resume(step, digits,
#: previous)``, where ``previous`` is the step's record in the suspended run's data
#: (``input.<step id>``, None when absent). ValueError for a previous record the step cannot
#: have written (a state edited by hand): the runtime refuses that state.
Resume: TypeAlias = Callable[["Step", "str | None", Any], Resumed]


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


#: The edge label of a run that ends or completes at a step (a hangup, a say without next).
END = "end"

#: The edge a step took, from its trace row: ``(step, outcome, detail)`` to a label of
#: ``step.targets()``, :data:`END` when the run ended or completed there, or None when the row
#: took no edge (the step waits for input, or asks again).
OutcomeEdge: TypeAlias = Callable[[Step, str, "Mapping[str, Any] | None"], "str | None"]


def next_or_end(step: Step, outcome: str, detail: Mapping[str, Any] | None) -> str | None:
    """The edge of a kind with one way on (the default): ``next``, or :data:`END` when the kind
    ends the run (a call-control step that hands the call over) or the step has no ``next``."""
    host = getattr(step.kind, "host", None)
    if host is not None and host.ends:
        return END
    return "next" if step.fields.get("next") else END


@dataclass(frozen=True)
class Kind:
    """What every kind of unit declares (a flow step, a workflow action): its name as documents
    write it in ``type:``, a one-line summary, its field table, the fields whose templates may
    read ``secrets`` (what goes to a server only) and its load-time check."""

    name: str
    summary: str
    fields: Mapping[str, Field]
    #: Fields whose templates may read ``secrets`` (what goes to an HTTP server only).
    secret_fields: tuple[str, ...] = ()
    check: Check | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.secret_fields if name not in self.fields]
        if unknown:
            raise TypeError(f"kind {self.name!r}: secret fields {unknown} are not fields")


@dataclass(frozen=True)
class StepKind(Kind):
    """One kind of step: everything the loader, the checker and both loops need to know.

    Exactly one way to run it: ``plan`` (planned once per flow into a plain call: steps without
    I/O), ``execute`` (awaited: network I/O when ``network``), or ``host`` (a call-control
    instruction). A kind that ``takes_input`` suspends the run (its plan returns ``wait``) and
    ``resume`` reads the caller's entry into the record ``input.<step id>`` (on every outcome).
    """

    #: Facts the step makes true on an edge beyond ``ran`` (it finished): ``response`` (its
    #: HTTP response is kept in ``steps.<id>.response``), per edge field name.
    edge_facts: Callable[[Step], Mapping[str, frozenset[str]]] = no_facts
    #: Which edge a trace row of the step took (pictures of a run, coverage): see OutcomeEdge.
    outcome_edge: OutcomeEdge = next_or_end
    #: Whether the step stores ``input.<id>`` (and suspends the run for it).
    takes_input: bool = False
    #: Whether the step keeps a record in ``steps.<id>`` (``outcome``, ``response`` …).
    keeps_record: bool = False
    #: Whether the step does network I/O (it runs under the run's deadline).
    network: bool = False
    #: Whether the step reads the time of day (``run.runtime.clock()``): its outcome depends on
    #: when the run happens (flow tests then need ``now``).
    reads_clock: bool = False
    plan: Planner | None = None
    execute: Executor | None = None
    host: HostAction | None = None
    resume: Resume | None = None
    #: The name of the step's compiled twin in the extension (None: the plan is called as is).
    twin: str | None = None
    #: JSON Schema rules across the kind's fields, added to its step's schema (a menu needs
    #: exactly one of ``say`` and ``play``: ``oneOf``); the kind's check enforces the same.
    schema_rules: Mapping[str, Any] = field(default_factory=dict)
    #: The fields of a minimal valid step of this kind, edges aside (a menu needs ``say`` or
    #: ``play``): drawn into the generated flows of the twin tests.
    sample: Mapping[str, Any] = field(default_factory=dict)
    #: Top-level sections of a document this kind reads (``schedules``), with their JSON Schema.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Checks those sections once per document that has them, whether or not a step of the
    #: kind reads them (``read_sections(checker)``, reporting through ``checker.error``).
    read_sections: Callable[[Checker], None] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
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

    @property
    def edge_fields(self) -> tuple[str, ...]:
        """The fields that lead to other steps, in table order."""
        return tuple(name for name, spec in self.fields.items() if spec.is_edge)


KindT = TypeVar("KindT", bound=Kind)


def registered(package: str, modules: Iterable[str], kind_type: type[KindT]) -> Mapping[str, KindT]:
    """The kinds that the modules ``package.<module>`` define as ``KIND``, by name, in order;
    TypeError for a module without one (of ``kind_type``) or a name registered twice."""
    kinds: dict[str, KindT] = {}
    for name in modules:
        module = importlib.import_module(f"{package}.{name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, kind_type):
            raise TypeError(f"{module.__name__} defines no KIND (a {kind_type.__name__})")
        if kind.name in kinds:
            raise TypeError(f"{kind_type.__name__} {kind.name!r} is registered twice")
        kinds[kind.name] = kind
    return MappingProxyType(kinds)
