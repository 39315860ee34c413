"""Prometheus metrics of ``flowlang worker`` (``--metrics-port``): the recorder of
:mod:`flowlang.distributed.watch`.

Series (every label value is a word of a fixed set; anything else is ``other``):

- ``flowlang_worker_steps_total{task, outcome}``: messages handled (a Celery task, or a first
  action an accept delivered inline) by task (``accept``, ``deliver``, ``replay``) and
  outcome (a step's outcome, ``requeued`` or ``abandoned``);
- ``flowlang_worker_attempts_total{outcome}``: delivery attempts made, by outcome
  (``delivered``, ``retry``, ``dead``), and ``flowlang_worker_attempt_duration_seconds``
  (the attempt with its store round trips);
- ``flowlang_worker_duplicates_total{of}``: copies dropped: an ``event`` already fanned out,
  an ``action`` already settled;
- ``flowlang_worker_stale_total``: copies of an attempt whose outcome was recorded already;
- ``flowlang_worker_abandoned_total``: fan-outs whose publishing failed (the claim lapses,
  the accept is requeued);
- ``flowlang_worker_pump_published_total{kind}``: messages the pump published, ``due`` or
  ``again`` (taken before and never marked published, or failed last round).

One process (the threads pool) registers them in a registry of its own; with
``multiprocess_path`` (the prefork pool: ``PROMETHEUS_MULTIPROC_DIR`` set before
prometheus_client is imported) each pool child writes its own files there and
:meth:`WorkerMetrics.registry` sums them for a scrape.
"""

from __future__ import annotations

__all__ = ["ATTEMPT_BUCKETS", "STEP_OUTCOMES", "TASKS", "WorkerMetrics"]

import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values

from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.observe.metrics import OTHER

#: Task names as labels.
TASKS = {ACCEPT_TASK: "accept", DELIVER_TASK: "deliver", REPLAY_TASK: "replay"}
#: What a message can come to (flowlang.distributed.deliverer.Step, and the glue's own).
STEP_OUTCOMES = frozenset(
    {
        "fanned_out",
        "duplicate",
        "deferred",
        "delivered",
        "retry",
        "dead",
        "skipped",
        "refused",
        "settled_before",
        "done",
        "replayed",
        "stale",
        "requeued",
        "abandoned",
    }
)
ATTEMPT_OUTCOMES = frozenset({"delivered", "retry", "dead"})
PUMP_KINDS = frozenset({"due", "again"})
#: One attempt: a request of at most 30 s (the timeout cap) and the store's round trips.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _word(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


class WorkerMetrics:
    """A worker's counters (see the module docstring); ``multiprocess_path``: multiprocess
    mode's folder (ValueError when it is not a folder or prometheus_client was imported
    before ``PROMETHEUS_MULTIPROC_DIR`` named it)."""

    def __init__(self, *, multiprocess_path: str | None = None) -> None:
        self.multiprocess_path = multiprocess_path
        if multiprocess_path is not None:
            if not os.path.isdir(multiprocess_path):
                raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {multiprocess_path!r} is not a folder")
            if values.ValueClass is values.MutexValue:
                raise ValueError(
                    "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported"
                )
        self._own = CollectorRegistry(auto_describe=True)
        where = None if multiprocess_path is not None else self._own
        self._summed: CollectorRegistry | None = None
        if multiprocess_path is not None:
            self._summed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._summed, path=multiprocess_path)  # type: ignore[no-untyped-call]
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        self.steps = Counter(
            "flowlang_worker_steps",
            "Messages handled (Celery tasks, and first actions delivered inline), by task and "
            "outcome.",
            ["task", "outcome"],
            registry=where,
        )
        self.attempts = Counter(
            "flowlang_worker_attempts",
            "Delivery attempts made, by outcome (delivered, retry, dead).",
            ["outcome"],
            registry=where,
        )
        self.attempt_duration = Histogram(
            "flowlang_worker_attempt_duration_seconds",
            "One delivery attempt with its shared-store round trips, seconds.",
            ["outcome"],
            buckets=ATTEMPT_BUCKETS,
            registry=where,
        )
        self.duplicates = Counter(
            "flowlang_worker_duplicates",
            "Copies dropped: an event already fanned out, an action already settled.",
            ["of"],
            registry=where,
        )
        self.stale = Counter(
            "flowlang_worker_stale",
            "Copies of an attempt whose outcome was recorded already, dropped.",
            registry=where,
        )
        self.abandoned = Counter(
            "flowlang_worker_abandoned",
            "Fan-outs whose publishing failed: the claim lapses, the accept is requeued.",
            registry=where,
        )
        self.pump = Counter(
            "flowlang_worker_pump_published",
            "Messages the pump published: due, or again (taken before, never marked published).",
            ["kind"],
            registry=where,
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    def task(self, task: str, outcome: str) -> None:
        """One message of ``task`` came to ``outcome``."""
        name = TASKS.get(task, OTHER)
        word = _word(outcome, STEP_OUTCOMES)
        self._child(self.steps, name, word).inc()
        if word == "duplicate" and name == "accept":
            self._child(self.duplicates, "event").inc()
        elif word == "settled_before" and name == "deliver":
            self._child(self.duplicates, "action").inc()
        elif word == "stale":
            self.stale.inc()
        elif word == "abandoned":
            self.abandoned.inc()

    def attempt(self, outcome: str, seconds: float) -> None:
        """One delivery attempt."""
        word = _word(outcome, ATTEMPT_OUTCOMES)
        duration = float(seconds)
        duration = min(max(duration, 0.0), 1e9) if duration == duration else 0.0
        self._child(self.attempts, word).inc()
        self._child(self.attempt_duration, word).observe(duration)

    def pump_published(self, kind: str) -> None:
        """The pump published one message."""
        self._child(self.pump, _word(kind, PUMP_KINDS)).inc()

    def registry(self) -> CollectorRegistry:
        """The registry a scrape reads: this process's, or (multiprocess mode) one that sums
        every process's files at each scrape."""
        return self._summed if self._summed is not None else self._own
