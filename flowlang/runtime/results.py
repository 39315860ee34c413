"""Results: what a run came to, with its trace kept as compact rows until it is read."""

from __future__ import annotations

__all__ = ["RunResult", "TraceRow", "describe_why", "trace_entries"]

from collections.abc import Mapping
from typing import Any, TypeAlias

from flowlang.expr.values import to_text
from flowlang.runtime.host import Instruction

#: One step of a trace as the loop records it: ``(step, type, outcome, duration_ms, detail)``.
#: A tuple costs a fraction of a dict; rows become dicts only when a result's trace is read.
TraceRow: TypeAlias = tuple[str, str, str, float, "dict[str, Any] | None"]


def trace_entries(rows: list[TraceRow]) -> list[dict[str, Any]]:
    """The readable form of trace rows (the compiled twin builds the same dicts in C)."""
    return [
        {"step": s, "type": t, "outcome": o, "duration_ms": d, "detail": x}
        for s, t, o, d, x in rows
    ]


class RunResult:
    """What a run came to.

    ``status``: ``completed`` (a step without next), ``waiting_for_input`` (see ``awaiting``;
    resume with ``state``), ``ended`` (transfer, voicemail or hangup) or ``failed`` (``error``).
    ``trace`` has one entry per step (``step``, ``type``, ``outcome``, ``duration_ms``,
    ``detail``), built from the loop's rows the first time it is read; ``state`` is plain JSON,
    resumable in any process; ``variables`` are the run's ``vars`` where it stopped (what a
    host or a flow test reads after the run; never shared with another run).
    """

    __slots__ = (
        "_entries",
        "_rows",
        "awaiting",
        "error",
        "instructions",
        "state",
        "status",
        "variables",
    )

    #: Builds the trace's dicts from the rows (the compiled loop's results use the compiled
    #: twin of trace_entries).
    entries_of = staticmethod(trace_entries)

    def __init__(
        self,
        status: str,
        rows: list[TraceRow],
        instructions: list[Instruction],
        state: dict[str, Any] | None = None,
        awaiting: dict[str, Any] | None = None,
        error: str | None = None,
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self._rows = rows
        self._entries: list[dict[str, Any]] | None = None
        self.instructions = instructions
        self.state = state
        self.awaiting = awaiting
        self.error = error
        self.variables = variables

    @property
    def trace(self) -> list[dict[str, Any]]:
        """One dict per step run, in order."""
        if self._entries is None:
            self._entries = self.entries_of(self._rows)
        return self._entries

    @trace.setter
    def trace(self, entries: list[dict[str, Any]]) -> None:
        self._entries = entries

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON data."""
        return {
            "status": self.status,
            "error": self.error,
            "awaiting": self.awaiting,
            "instructions": self.instructions,
            "trace": self.trace,
            "state": self.state,
        }

    def __repr__(self) -> str:
        detail = f", error={self.error!r}" if self.error else ""
        steps = len(self._rows if self._entries is None else self._entries)
        return f"<RunResult {self.status} after {steps} steps{detail}>"


def describe_why(detail: Mapping[str, Any]) -> str | None:
    """Why a step went where it went, in words, from its trace detail: the ``why`` a step wrote
    itself (business_hours), a Condition Splitter's compared values or its expression's value
    (rows not of that shape are skipped: a page may show any trace)."""
    if isinstance(detail.get("why"), str):
        return str(detail["why"])
    rows = detail.get("rows")
    if isinstance(rows, list):
        parts = []
        for row in rows:
            if isinstance(row, list | tuple) and len(row) == 3:
                left, operator, right = row
                shown = "" if operator in ("is_empty", "is_not_empty") else f" {to_text(right)!r}"
                parts.append(f"{to_text(left)!r} {operator}{shown}")
        return "; ".join(parts)
    if "expression" in detail:
        return f"{detail['expression']} is {to_text(detail.get('value')) or 'null'}"
    return None
