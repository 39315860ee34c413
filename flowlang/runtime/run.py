"""Run: the per-call object of one run, its fields (read by the step loop) and its methods."""

from __future__ import annotations

__all__ = ["Run", "RunFields", "RunMethods"]

from typing import TYPE_CHECKING, Any

from flowlang.errors import DataLimitError, FlowError
from flowlang.expr.shared import MAX_SHOWN_ERROR, shorten, whole_text
from flowlang.expr.values import state_json
from flowlang.flow.model import CompiledFlow
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.failures import failure_place
from flowlang.runtime.host import Instruction
from flowlang.runtime.results import RunResult, TraceRow
from flowlang.runtime.secrets import SecretsView
from flowlang.runtime.state import make_state, new_run_id


class RunFields:
    """What the step loop reads and writes of one run (``Run`` adds the methods); the compiled
    twin keeps these fields in C. ``scope["secrets"]`` is set to ``secrets``."""

    __slots__ = (
        "data_size",
        "flow",
        "instructions",
        "owned",
        "redactor",
        "run_id",
        "runtime",
        "scope",
        "seq",
        "steps_run",
        "streak",
        "trace",
    )

    def __init__(
        self,
        runtime: Any,
        flow: CompiledFlow,
        scope: dict[str, Any],
        secrets: SecretsView,
        steps_run: int = 0,
        streak: tuple[str | None, int] = (None, 0),
        run_id: str | None = None,
        seq: int = 0,
        data_size: int = 0,
    ) -> None:
        self.runtime = runtime
        self.flow = flow
        self.scope = scope
        self.redactor = scope["secrets"] = secrets
        self.trace: list[TraceRow] = []
        self.instructions: list[Instruction] = []
        self.steps_run = steps_run
        self.streak = streak
        #: The run's id (made at its first suspension) and how many times it suspended.
        self.run_id = run_id
        self.seq = seq
        #: About the size of the run's data as JSON (kept up to date as steps write).
        self.data_size = data_size
        #: The maps of ``vars`` this run may change in place (flowlang.rundata's docstring).
        self.owned: dict[int, list[Any]] = {}


def _described(error: Exception) -> str:
    """``Type: message`` of an exception, its message whole (the output masks it, then shortens
    it); an embedding application's exception whose message cannot be read says so."""
    try:
        message = whole_text(error)
    except Exception:
        message = "(the message could not be read)"
    return f"{type(error).__name__}: {message}"


if TYPE_CHECKING:  # the methods read the fields, which the class they are mixed into has
    _Fields = RunFields
else:
    _Fields = object


class RunMethods(_Fields):
    """What a run does (``Run`` adds the fields): mask secrets, record instructions, end in a
    result, write its state. Mixed into the Python RunFields and into their compiled twin."""

    __slots__ = ()

    def redact(self, text: str) -> str:
        """``text`` without any secret value this run has used."""
        return self.redactor.text(text)

    def request_summary(self, request: PreparedRequest) -> dict[str, Any]:
        """Method, URL and headers of a request, secrets masked, for traces."""
        return {
            "method": request.method,
            "url": self.redact(request.url),
            "headers": {name: self.redact(value) for name, value in request.headers},
            "body_bytes": len(request.body) if request.body is not None else 0,
        }

    async def instruct(
        self, action: str, step: str, field: str | None = None, value: str = ""
    ) -> None:
        """Record a call-control instruction (secrets masked) and hand it to the host.

        ``field`` names the one argument of the action (``text`` for say …); None for one that
        takes none (hangup). The host's method is the action's name.
        """
        host = self.runtime.host
        if field is None:
            self.instructions.append({"action": action, "step": step})
            await getattr(host, action)(step=step)
        else:
            self.instructions.append({"action": action, "step": step, field: self.redact(value)})
            await getattr(host, action)(value, step=step)

    def failed(
        self,
        error: str,
        step_id: str | None = None,
        elapsed_ms: float = 0.0,
        cause: BaseException | None = None,
        placed: bool = True,
    ) -> RunResult:
        """The result of a run that cannot go on, with ``error`` masked, then shortened to
        MAX_SHOWN_ERROR characters (in that order: a cut secret would not be masked).

        ``step_id``: the step that was running. Its field and place (``--> file:line:column
        (step, field)`` and the caret under the failing text) are found now, on the error path
        only (unless not ``placed``), and a ``failed`` trace row is added for it (``elapsed_ms``
        long).
        """
        if step_id is None:
            return RunResult(
                "failed",
                self.trace,
                self.instructions,
                error=self._shown(error),
                variables=self.scope.get("vars"),
            )
        # The place of a template's error; not of a host's own exception, which no text of
        # the document caused.
        found = failure_place(self.flow, step_id, self.scope, cause) if placed else None
        shown = self._shown(error)
        detail: dict[str, Any] = {"error": shown}
        if found is not None:
            if found.field is not None:
                detail["field"] = found.field
            # the message is shortened alone: a long one never pushes the place out
            shown = f"{shown}\n{self.redact(found.place)}"
        step = self.flow.steps.get(step_id)
        kind = step.type if step is not None else ""
        self.trace.append((step_id, kind, "failed", elapsed_ms, detail))
        return RunResult(
            "failed", self.trace, self.instructions, error=shown, variables=self.scope.get("vars")
        )

    def _shown(self, error: str) -> str:
        return shorten(self.redact(error), MAX_SHOWN_ERROR)

    def broken(
        self, error: Exception, step_id: str | None = None, elapsed_ms: float = 0.0
    ) -> RunResult:
        """The result of a run stopped by an exception: its deadline, or anything unexpected
        (the one place where one becomes a failed run); ``step_id``: the step that ran."""
        if isinstance(error, TimeoutError):
            deadline = self.runtime.settings.run_deadline
            # No row: the deadline may have passed between two steps.
            return self.failed(f"the run took longer than {deadline:g}s")
        if isinstance(error, DataLimitError):  # its message names the step and the variable
            return self.failed(str(error), step_id, elapsed_ms, error, placed=False)
        placed = isinstance(error, FlowError)  # a template's: its field and place
        return self.failed(_described(error), step_id, elapsed_ms, error, placed=placed)

    def state(self, waiting_at: str) -> dict[str, Any]:
        """Plain JSON that resumes this run, with secrets masked and the secrets root left out;
        signed when the runtime has state keys. Each call is the run's next suspension."""
        data = {key: value for key, value in self.scope.items() if key != "secrets"}
        plain = state_json(data)
        if self.run_id is None:
            self.run_id = new_run_id()
        self.seq += 1
        return make_state(
            self.flow,
            waiting_at,
            self.run_id,
            self.seq,
            (self.steps_run, (self.streak[0], self.streak[1])),
            self.redactor.data(plain),
            self.runtime.state_keys,
            list(self.redactor.names),
        )


class Run(RunMethods, RunFields):
    """The per-call state of one run: scope, trace, counters. Never shared between calls.

    ``Run(runtime, flow, scope, SecretsView(...), steps_run, streak)``. The compiled step loop
    runs the same methods over the compiled RunFields (flowlang.runtime.twins).
    """

    __slots__ = ()
