"""What a worker reports as it works: the hooks the tasks and the pump call, and the recorder
behind them (none by default: nothing is counted; ``flowlang worker --metrics-port`` installs
Prometheus counters, :mod:`flowlang.observe.worker_metrics`).

Every value passed is a word of a fixed set (a task name, a step's outcome, a pump's kind of
publish) or a duration: nothing from an event, a URL or a secret. A recorder that raises is
logged once and never breaks a task.
"""

from __future__ import annotations

__all__ = ["Recorder", "attempt", "install", "installed", "pump_published", "task"]

import logging
from typing import Any, Protocol

log = logging.getLogger("flowlang.worker")


class Recorder(Protocol):
    """Where a worker's counts go."""

    def task(self, task: str, outcome: str) -> None:
        """A message of ``task`` came to ``outcome`` (a Step outcome, or ``requeued``)."""

    def attempt(self, outcome: str, seconds: float) -> None:
        """One delivery attempt came to ``outcome`` (delivered, retry, dead) in ``seconds``."""

    def pump_published(self, kind: str) -> None:
        """The pump published one message: ``due`` (taken from the due set) or ``again``
        (taken earlier and never marked published, or failed last round)."""


_recorder: Recorder | None = None
_failed = False


def install(recorder: Recorder | None) -> None:
    """Count with ``recorder`` from now on in this process (and in processes forked later);
    None: count nothing."""
    global _recorder
    _recorder = recorder


def installed() -> Recorder | None:
    """The recorder in use, or None."""
    return _recorder


def _broken(problem: Exception) -> None:
    global _failed
    if not _failed:
        _failed = True
        log.error("the worker's metrics could not be recorded: %s", type(problem).__name__)


def _count(what: str, *values: Any) -> None:
    """``what`` of the installed recorder with ``values``; a failing recorder is reported once
    and never fails the work it counts."""
    if _recorder is not None:
        try:
            getattr(_recorder, what)(*values)
        except Exception as problem:
            _broken(problem)


def task(name: str, outcome: str) -> None:
    """Count one message of task ``name`` that came to ``outcome``."""
    _count("task", name, outcome)


def attempt(outcome: str, seconds: float) -> None:
    """Count one delivery attempt and its duration."""
    _count("attempt", outcome, seconds)


def pump_published(kind: str) -> None:
    """Count one message the pump published."""
    _count("pump_published", kind)
