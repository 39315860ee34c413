"""The Celery app of flowlang's workers (``flowlang[celery]``): the settings that lose nothing.

One task is one delivery attempt; nothing waits in the broker (no ETA, no countdown: retries
wait in the shared store's due-set and the pump publishes them when due). The settings, and
why (measured facts in the project's design notes):

- ``task_acks_late``: a message is acknowledged after its attempt, so a worker that dies
  mid-attempt leaves it to be redelivered.
- Every task of the app is a :class:`RequeueingTask`: whatever it raises (an exception, the
  soft time limit's SoftTimeLimitExceeded) becomes ``Reject(requeue=True)``, so its message
  goes back to its queue. ``task_acks_on_failure_or_timeout=False`` alone does not do that:
  Celery 5.7 then *rejects a raising task's message without requeue* (Request.on_failure),
  which deletes it, on Redis and RabbitMQ alike (measured); only a Reject with requeue keeps
  it. A hard time limit (the pool child killed) is requeued by ``task_reject_on_worker_lost``.
- ``task_reject_on_worker_lost``: the default (False) acknowledges, and so loses, the task of
  a killed pool child (measured).
- ``worker_prefetch_multiplier=1``: a worker reserves one message per process, not four.
- ``task_serializer="json"``, ``accept_content=["json"]``: nothing but JSON crosses the broker.
- ``task_ignore_result``: outcomes live in the shared ledger, not in a result backend.
- ``task_soft_time_limit=60``, ``task_time_limit=90``: above one attempt's cap (30 s) plus the
  store's round trips (prefork only; a task gives up at 50 s by itself and is requeued).
- ``worker_cancel_long_running_tasks_on_connection_loss``: a task running when the broker
  connection drops is cancelled, as its message will be redelivered.
- Redis ``visibility_timeout=300``: an unacknowledged message of a dead worker is redelivered
  after it; above the longest task (90 s), so a live one is not redelivered while it runs.
- Redis ``unacked_restore_interval=10``, ``unacked_restore_throttle=1``: the sweep that
  redelivers runs every 10 s (kombu's default throttle of 10 makes it every 100 s).
- RabbitMQ ``confirm_publish``: each publish waits for the broker's ack, so a refused or lost
  publish raises instead of vanishing.
- Bounded publishes (``publish_timeout``, 10 s): each publish passes ``timeout`` and
  ``confirm_timeout`` (py-amqp waits for a confirm with no limit otherwise, and the threads
  pool has no time limits: a broker that never confirms held a task thread for ever); on
  Redis ``socket_timeout`` bounds each command. A publish that times out raises (the message
  it came from is requeued); one that did reach the broker may then be there twice, which the
  ledger makes harmless.
- Task events off (Celery's default; ``task_events=True``, ``flowlang worker --task-events``,
  turns them on): each one is a broker publish (task-sent, -received, -started, -succeeded:
  seven per delivery), about a third of a worker's CPU on Redis (measured), and on RabbitMQ
  with publisher confirms and 100 threads they serialized the tasks (~3 deliveries/s,
  measured). Flower still shows the tasks by name: it sends ``enable_events`` to the workers
  (remote control stays on) while it watches.

Queues ``{queue_prefix}events`` (``flowlang.accept``) and ``{queue_prefix}actions``
(``flowlang.deliver``, ``flowlang.replay``) are classic durable queues by default: they work
on every RabbitMQ and on Redis (which ignores queue arguments), and persistent messages with
publisher confirms survive a broker restart. ``queue_type="quorum"`` declares quorum queues
(RabbitMQ 3.8+), replicated across a cluster; Celery then turns global QoS off by itself. A
queue that exists with another type cannot be declared again: delete it first.
"""

from __future__ import annotations

__all__ = [
    "BROKER_SCHEMES",
    "PUBLISH_TIMEOUT",
    "QUEUE_TYPES",
    "RequeueingTask",
    "WorkerSettings",
    "broker_kind",
    "make_app",
    "publish_options",
    "queue_for",
]

import contextlib
import logging
import string
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, TaskPredicate
from kombu import Exchange, Queue

from flowlang.distributed import loop as worker_loop
from flowlang.distributed.connection import mask_url
from flowlang.distributed.messages import (
    ACCEPT_TASK,
    DEFAULT_QUEUE_PREFIX,
    DELIVER_TASK,
    REPLAY_TASK,
    queue_names,
)

#: Broker URL schemes, by kind.
BROKER_SCHEMES = {
    "redis": ("redis://", "rediss://"),
    "rabbitmq": ("amqp://", "amqps://", "pyamqp://"),
}
QUEUE_TYPES = ("classic", "quorum")
#: The arguments each queue type is declared with.
QUEUE_ARGUMENTS: dict[str, dict[str, str] | None] = {
    "classic": None,
    "quorum": {"x-queue-type": "quorum"},
}
#: Characters of a queue prefix.
QUEUE_PREFIX_CHARS = frozenset(string.ascii_letters + string.digits + "_.:-")
QUEUE_PREFIX_MAX = 64
log = logging.getLogger("flowlang.worker")

#: Seconds a task that raised pauses before its message is requeued (RequeueingTask).
REQUEUE_PAUSE = 1.0
#: Seconds one publish, and its confirm on RabbitMQ, may take by default.
PUBLISH_TIMEOUT = 10.0
#: The app's setting that carries ``publish_timeout`` to :func:`publish_options`.
PUBLISH_TIMEOUT_SETTING = "flowlang_publish_timeout"


#: Tries of one message (by its task id) that raised before it is set aside (RequeueingTask),
#: and how many messages' counts a process remembers.
MAX_TRIES = 5
TRIES_REMEMBERED = 10_000


class RequeueingTask(Task):  # type: ignore[misc]
    """A task whose message is never lost by raising: anything it raises but Celery's own
    predicates (Reject, Retry, Ignore) — an exception, SoftTimeLimitExceeded, SystemExit — is
    logged and turned into ``Reject(requeue=True)`` after REQUEUE_PAUSE seconds (a message
    that always fails is not spun on), so Celery puts the message back on its queue instead of
    deleting it. flowlang's tasks do this themselves (tasks.run_step); this is the net.

    A message that raised MAX_TRIES times in a row (counted per process, by its task id; a
    store or broker outage is a Reject of tasks.run_step, not counted) is not tried for ever:
    it is set aside in the shared store's ``{prefix}bad`` list with the reason (when this
    process runs a worker loop with a store), logged as an error, and acknowledged. When it
    cannot be set aside it is requeued (tried again later, never lost)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TaskPredicate:
            raise
        except BaseException as problem:  # every other escape is a requeue
            text = f"{type(problem).__name__}: requeued"
            with contextlib.suppress(BaseException):  # the soft time limit cuts the pause
                if self._set_aside(problem, args, kwargs):
                    return "set_aside"
                log.error("%s raised %s, its message is requeued", self.name, text)
                time.sleep(REQUEUE_PAUSE)
            raise Reject(text, requeue=True) from None

    def _set_aside(self, problem: BaseException, args: Any, kwargs: Any) -> bool:
        """Count one more failed try of this message; True when it reached MAX_TRIES and was
        set aside (it is then acknowledged)."""
        request = getattr(self, "request", None)
        task_id = getattr(request, "id", None)
        if not isinstance(task_id, str):
            return False
        tries = _tries.pop(task_id, 0) + 1
        if tries < MAX_TRIES:
            _tries[task_id] = tries
            while len(_tries) > TRIES_REMEMBERED:
                _tries.pop(next(iter(_tries)))
            return False
        reason = f"raised {type(problem).__name__} on each of {tries} tries"
        runner = worker_loop.running()
        store = runner.store if runner is not None else None
        if store is not None:
            try:
                runner.call(  # type: ignore[union-attr]
                    store.set_aside(self.name, {"args": list(args), "kwargs": kwargs}, reason),
                    10.0,
                )
            except Exception as error:
                log.error("%s: a message could not be set aside (%s): requeued", self.name, error)
                _tries[task_id] = tries
                return False
            where = f"set aside in {store.prefix}bad"
        else:
            where = "dropped (no shared store in this process)"
        log.error("%s: message %s %s; %s, acknowledged", self.name, task_id, reason, where)
        return True


#: Failed tries per message task id, in this process (oldest first; bounded).
_tries: dict[str, int] = {}


@dataclass(frozen=True)
class WorkerSettings:
    """The Celery settings :func:`make_app` applies (see the module docstring for why)."""

    #: Redis broker: seconds before an unacknowledged message is redelivered.
    visibility_timeout: float = 300.0
    #: Redis broker: seconds between sweeps for such messages (throttle 1: every sweep scans).
    restore_interval: float = 10.0
    restore_throttle: int = 1
    #: Seconds one task may run: soft (SoftTimeLimitExceeded), then hard (the child is killed).
    soft_time_limit: float = 60.0
    time_limit: float = 90.0
    #: Seconds a warm shutdown gives the running tasks before a cold one.
    soft_shutdown_timeout: float = 10.0
    queue_type: str = "classic"
    #: Send task events from the start (off: Flower turns them on remotely while it watches).
    task_events: bool = False
    #: Seconds one publish (and on RabbitMQ its confirm) may take before it raises.
    publish_timeout: float = PUBLISH_TIMEOUT

    @property
    def redelivers_running_tasks(self) -> bool:
        """Whether a Redis broker may redeliver a task still running (a visibility timeout
        not above the hard time limit): the lease then keeps it from being sent twice, but the
        redelivered copy waits for the lease."""
        return self.visibility_timeout <= self.time_limit

    def __post_init__(self) -> None:
        for name in (
            "visibility_timeout",
            "restore_interval",
            "soft_time_limit",
            "time_limit",
            "publish_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 86400 * 7:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.time_limit <= self.soft_time_limit:
            raise ValueError("time_limit must be above soft_time_limit")
        if not isinstance(self.restore_throttle, int) or self.restore_throttle < 1:
            raise ValueError("restore_throttle must be a whole number from 1")
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type is one of {', '.join(QUEUE_TYPES)}")


def broker_kind(url: str) -> str:
    """``redis`` or ``rabbitmq`` for a broker URL; ValueError (URL masked) otherwise."""
    if isinstance(url, str):
        for kind, schemes in BROKER_SCHEMES.items():
            if url.startswith(schemes):
                return kind
    known = ", ".join(s for group in BROKER_SCHEMES.values() for s in group)
    raise ValueError(f"a broker URL starts with one of {known} (got {mask_url(str(url))})")


def check_queue_prefix(prefix: object) -> str:
    """``prefix`` when queue names may start with it, else ValueError."""
    if (
        isinstance(prefix, str)
        and len(prefix) <= QUEUE_PREFIX_MAX
        and QUEUE_PREFIX_CHARS.issuperset(prefix)
    ):
        return prefix
    raise ValueError(
        f"a queue prefix is at most {QUEUE_PREFIX_MAX} characters of A-Z a-z 0-9 _ . : -"
    )


def queue_for(task: str, queue_prefix: str) -> str:
    """The queue ``task`` goes to."""
    events, actions = queue_names(queue_prefix)
    return events if task == ACCEPT_TASK else actions


def _queue(name: str, queue_type: str) -> Queue:
    arguments = QUEUE_ARGUMENTS[queue_type]
    return Queue(
        name,
        Exchange(name, type="direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=arguments,
    )


def make_app(
    broker_url: str,
    *,
    queue_prefix: str = DEFAULT_QUEUE_PREFIX,
    settings: WorkerSettings | None = None,
    name: str = "flowlang",
) -> Celery:
    """A Celery app on ``broker_url`` (Redis or RabbitMQ) with flowlang's settings and queues;
    ValueError (URL masked) for a URL of another kind. The tasks are added by
    :func:`flowlang.distributed.tasks.register` (the worker does it)."""
    kind = broker_kind(broker_url)
    check_queue_prefix(queue_prefix)
    settings = settings or WorkerSettings()
    events, actions = queue_names(queue_prefix)
    transport: dict[str, Any]
    if kind == "redis":
        transport = {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": settings.restore_throttle,
            "socket_timeout": settings.publish_timeout,
            "socket_connect_timeout": settings.publish_timeout,
        }
    else:
        transport = {"confirm_publish": True}
    app = Celery(name, broker=broker_url, set_as_current=False, task_cls=RequeueingTask)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout,
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_backend=None,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=[_queue(events, settings.queue_type), _queue(actions, settings.queue_type)],
        task_create_missing_queues=False,
        task_default_queue=actions,
        task_routes={
            ACCEPT_TASK: {"queue": events, "routing_key": events},
            DELIVER_TASK: {"queue": actions, "routing_key": actions},
            REPLAY_TASK: {"queue": actions, "routing_key": actions},
        },
        task_default_delivery_mode="persistent",
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_heartbeat=30 if kind == "rabbitmq" else None,
        enable_utc=True,
    )
    app.conf[PUBLISH_TIMEOUT_SETTING] = settings.publish_timeout
    return app


def publish_options(app: Celery) -> dict[str, float]:
    """The options that bound one ``send_task`` of ``app``: ``timeout`` (the write) and
    ``confirm_timeout`` (RabbitMQ's confirm), both the app's ``publish_timeout``."""
    seconds = float(app.conf.get(PUBLISH_TIMEOUT_SETTING) or PUBLISH_TIMEOUT)
    return {"timeout": seconds, "confirm_timeout": seconds}
