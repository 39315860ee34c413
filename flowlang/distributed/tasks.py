"""The three Celery tasks: ``flowlang.accept``, ``flowlang.deliver``, ``flowlang.replay``.

Each message's kwargs are its JSON body (flowlang.distributed.messages), so Flower shows the
tasks by name with their event. A task runs the Deliverer's coroutine on this process's loop
thread (flowlang.distributed.loop), publishes every message of the resulting Step, in order,
to its queue (on RabbitMQ each publish waits for the broker's confirm), then awaits the Step's
confirmation (marking an event fanned out, say). Only then does Celery acknowledge the message
(``task_acks_late``), so a worker that dies anywhere before leaves it to be redelivered, and
the shared ledger and leases make that redelivery safe.

- An accept delivers its fan-out's first action itself (``inline``, the default of
  :func:`register`) instead of publishing it: one Celery task per delivery instead of two
  (a worker's throughput about 1.5x, measured); the accept is acknowledged only after that
  delivery and what it publishes, so a worker dying there leaves the accept to be redelivered
  (its claim lapses, the fan-out is made again, the ledger and the lease keep the action from
  being sent twice). Later actions, retries and other workflows' actions are published.
- A body that is refused (not a message of that task) is logged, masked, and acknowledged:
  it would be refused again on every redelivery.
- When the shared store or the broker cannot be reached (or the work does not finish in
  time, or this process has no loop), the message is rejected and requeued after a short
  pause: it is retried, never lost. Whatever else escapes :func:`run_step` (the prefork
  pool's SoftTimeLimitExceeded, landing anywhere, the pause included) is turned into the
  same requeue: Celery deletes the message of a task that raises anything but a Reject.
  Each publish is bounded (the app's ``publish_timeout``).
- A dead letter ``flowlang.replay`` cannot replay here is put back in the shared dead letters
  before its message is refused.
- Each step is reported to :mod:`flowlang.distributed.watch` (metrics, when installed).
"""

from __future__ import annotations

__all__ = ["BRIDGE_TIMEOUT", "publisher", "register"]

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from flowlang.automations.dispatch import DEAD_LETTER_FORMAT, DeliverySettings, describe_error
from flowlang.distributed import loop as worker_loop
from flowlang.distributed import watch
from flowlang.distributed.celery_app import publish_options, queue_for
from flowlang.distributed.deliverer import Step
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.distributed.replay import UNKNOWN_OUTCOME, replay_leased
from flowlang.errors import FlowError

log = logging.getLogger("flowlang.worker")

#: Seconds a task waits for its coroutine (below the soft time limit, so that the task, not
#: Celery's limit, decides: a task over it is requeued, never acknowledged as failed).
BRIDGE_TIMEOUT = 50.0
#: Seconds beyond an attempt's longest time (DeliverySettings.timeout_cap) an inline delivery
#: needs left in the task's budget (the store's round trips); else its message is published
#: instead, so an inline attempt is never cut short mid-request and handed to another worker.
INLINE_MINIMUM = 5.0
#: Seconds a task pauses before requeueing its message when the store or broker failed.
REQUEUE_PAUSE = 1.0


def publisher(app: Celery, queue_prefix: str) -> Callable[[str, dict[str, Any]], None]:
    """A blocking ``publish(task, body)`` sending one message (body as kwargs) to the task's
    queue; on RabbitMQ it returns once the broker confirmed it. Bounded: each try within the
    app's ``publish_timeout`` (write and confirm), a few tries (``task_publish_retry_policy``),
    then it raises."""
    options = publish_options(app)

    def publish(task: str, body: dict[str, Any]) -> None:
        app.send_task(task, kwargs=body, queue=queue_for(task, queue_prefix), **options)

    return publish


def _requeue(task: str, what: str, problem: BaseException) -> Reject:
    """Log ``problem`` and the Reject that puts the message back on its queue (after a
    pause, so that a store or broker that is down is not hammered). The soft time limit
    landing here cuts the pause short: the Reject is still returned."""
    text = type(problem).__name__
    try:
        text = describe_error(problem)
        runner = worker_loop.running()
        if runner is not None:
            text = _masked(runner, text)
        log.error("%s: %s failed, the message is requeued: %s", task, what, text)
        watch.task(task, "requeued")
        time.sleep(REQUEUE_PAUSE)
    except SoftTimeLimitExceeded:
        pass
    return Reject(text, requeue=True)


def run_step(
    task: str,
    work: Callable[[worker_loop.WorkerLoop], Awaitable[Step]],
    publish: Callable[[str, dict[str, Any]], None],
    *,
    inline: bool = False,
) -> str:
    """Run one task's Step: the coroutine, its publishes, its confirmation; its outcome.
    Anything it raises is a ``Reject(requeue=True)`` (a message is never lost by raising).

    ``inline`` (accept): the fan-out's first deliver message is not published but delivered
    here, at once, before the accept is confirmed and acknowledged (see :func:`_inline`)."""
    try:
        return _run_step(task, work, publish, inline=inline)
    except Reject:
        raise
    except BaseException as problem:  # SoftTimeLimitExceeded, anything else
        raise _requeue(task, "the task", problem) from None


def _run_step(
    task: str,
    work: Callable[[worker_loop.WorkerLoop], Awaitable[Step]],
    publish: Callable[[str, dict[str, Any]], None],
    *,
    inline: bool = False,
) -> str:
    """:func:`run_step`'s work (its own failures already Rejects with requeue).

    ``inline`` (accept): the fan-out's first deliver message is not published but delivered
    here, at once, before the accept is confirmed and acknowledged (see :func:`_inline`)."""
    started = time.monotonic()
    try:  # no loop (it failed to start: Celery swallows that) is requeued, never acknowledged
        runner = worker_loop.current()
        step = runner.call(work(runner), BRIDGE_TIMEOUT)
    except Exception as problem:
        raise _requeue(task, "the work", problem) from None
    _count(task, step.outcome, time.monotonic() - started)
    if step.outcome == "refused":
        log.warning("%s: a message was refused (acknowledged, not retried): %s", task, step.error)
        return step.outcome
    messages = list(step.publish)
    first = messages.pop(0) if inline and messages and messages[0][0] == DELIVER_TASK else None
    try:
        for name, body in messages:
            publish(name, body)
        if first is not None:
            _inline(runner, first[1], publish, BRIDGE_TIMEOUT - (time.monotonic() - started))
    except Exception as problem:
        if step.abandon is not None:  # the fan-out's claim is let go: it lapses
            watch.task(task, "abandoned")
            with contextlib.suppress(Exception):
                runner.call(step.abandon(), BRIDGE_TIMEOUT)
        raise _requeue(task, "publishing", problem) from None
    if step.confirm is not None:
        try:
            runner.call(step.confirm(), BRIDGE_TIMEOUT)
        except Exception as problem:
            raise _requeue(task, "the confirmation", problem) from None
    if step.error:
        log.warning("%s: %s: %s", task, step.outcome, step.error)
    else:
        log.info("%s: %s", task, step.outcome)
    return step.outcome


def _inline(
    runner: worker_loop.WorkerLoop,
    body: dict[str, Any],
    publish: Callable[[str, dict[str, Any]], None],
    budget: float,
) -> None:
    """Deliver one fan-out message here instead of publishing it (one Celery task per
    delivery instead of two: about half a worker's CPU, measured), then publish what that
    step publishes. The accept is acknowledged only after this: a worker that dies here leaves
    the accept to be redelivered; its claim lapses, the fan-out is made again, and the ledger
    and the action's lease keep the action from being sent twice (as for a redelivered deliver
    message). It starts only when the task's ``budget`` holds a whole attempt (the timeout
    cap) plus INLINE_MINIMUM, so it is not cut short mid-request and handed to another worker
    while its request may still be in flight; otherwise, or when the inline work fails, the
    message is published as usual (the lease and ledger make that safe); an error publishing
    raises."""
    try:
        needed = _attempt_cap(runner) + INLINE_MINIMUM
        if budget < needed:
            raise TimeoutError(
                f"{budget:.0f} s left, an inline delivery needs {needed:.0f} s: not started"
            )
        began = time.monotonic()
        step = runner.call(_deliverer(runner).deliver(body), budget)
        _count(DELIVER_TASK, step.outcome, time.monotonic() - began)
    except Exception as problem:
        log.warning(
            "%s (inline): %s; the message is published instead",
            DELIVER_TASK,
            _masked(runner, describe_error(problem)),
        )
        publish(DELIVER_TASK, body)
        return
    for name, message in step.publish:
        publish(name, message)
    if step.error:
        log.warning("%s (inline): %s: %s", DELIVER_TASK, step.outcome, step.error)
    else:
        log.info("%s (inline): %s", DELIVER_TASK, step.outcome)


#: The outcomes of a deliver step that made an attempt (counted with its duration).
ATTEMPT_OUTCOMES = frozenset({"delivered", "retry", "dead"})


def _count(task: str, outcome: str, seconds: float) -> None:
    """Report one step (and, for a deliver that made an attempt, the attempt)."""
    watch.task(task, outcome)
    if task == DELIVER_TASK and outcome in ATTEMPT_OUTCOMES:
        watch.attempt(outcome, seconds)


def _attempt_cap(runner: worker_loop.WorkerLoop) -> float:
    """The longest one attempt's request may take (the automations' ``timeout_cap``)."""
    automations = runner.automations
    if automations is not None:
        return float(automations.settings.timeout_cap)
    return float(DeliverySettings().timeout_cap)


def _masked(runner: worker_loop.WorkerLoop, text: str) -> str:
    if runner.automations is not None:
        return runner.automations.redactor.text(text)
    return text


def _body(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The message body (the kwargs); None (logged) for positional arguments."""
    if args:
        log.warning(
            "%s: a message with positional arguments was refused (acknowledged, not retried)",
            task,
        )
        return None
    return kwargs


async def _replay(runner: worker_loop.WorkerLoop, record: dict[str, Any]) -> Step:
    """A dead letter through the workers (Deliverer.replay: a deliver message for its action,
    its ledger entry forgotten); when its workflow version is not loaded here, one try of it
    from the record's own text (what fails again is a dead letter again), under its action's
    lease and only while the ledger does not say it is delivered or being replayed
    (:func:`replay_leased`: a redelivered message sends nothing twice; one that finds a
    replay started and never finished keeps the record as a dead letter, "dead"). A dead
    letter that cannot be replayed here (ValueError, FlowError: nothing sent) is put back in
    the shared dead letters before it is refused (``flowlang replay --broker`` removed it once
    published): it is kept, never lost. A store error propagates (the message is requeued),
    never "refused": the action may have been sent, and a kept record would send it again."""
    deliverer = _deliverer(runner)
    step: Step = await deliverer.replay(record)
    if step.outcome != "refused" or runner.automations is None or runner.store is None:
        return await _kept(runner, record, step)
    try:
        done = await replay_leased(
            runner.automations,
            runner.store,
            record,
            holder=deliverer._token(),
            lease=deliverer.lease,
        )
    except (ValueError, FlowError) as error:  # not a record, a workflow that does not load
        refused = Step("refused", error=runner.automations.redactor.text(describe_error(error)))
        return await _kept(runner, record, refused)
    if done.state == "held":  # tried again once that lease lapses (nothing sent)
        await runner.store.schedule(
            REPLAY_TASK, dict(record), runner.automations.clock.now() + done.seconds
        )
        return Step("deferred")
    if done.state == "settled_before":
        return Step("settled_before", error=f"its action is {done.outcome} already: not sent again")
    if done.state == "unknown":  # a replay of it started and never finished: kept, not sent
        return Step("dead", error=UNKNOWN_OUTCOME)
    outcome = "dead" if done.added else "delivered"
    return Step(outcome if done.deliveries else "done", error=done.error or None)


async def _kept(runner: worker_loop.WorkerLoop, record: Any, step: Step) -> Step:
    """``step``; when it refuses a dead-letter record, the record is first added back to the
    shared dead letters (as it was; a store error propagates: the message is requeued). What
    is not a dead letter at all (no ``format`` of one) is refused and not kept."""
    if (
        step.outcome != "refused"
        or runner.store is None
        or not isinstance(record, dict)
        or record.get("format") != DEAD_LETTER_FORMAT
    ):
        return step
    try:
        await runner.store.add_dead(record)
    except ValueError as problem:  # too large or deep for the store: said, and refused
        log.error(
            "%s: a dead letter could not be kept: %s", REPLAY_TASK, _masked(runner, str(problem))
        )
        return step
    return Step("refused", error=f"{step.error} (kept in the shared dead letters)")


def register(app: Celery, queue_prefix: str, *, inline: bool = True) -> dict[str, Task]:
    """Add the three tasks to ``app`` (names exactly ``flowlang.accept``, ``flowlang.deliver``
    and ``flowlang.replay``); returns them by name. ``inline``: an accept delivers its
    fan-out's first action itself instead of publishing it (:func:`run_step`)."""
    publish = publisher(app, queue_prefix)

    @app.task(name=ACCEPT_TASK, typing=False, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def accept(*args: Any, **kwargs: Any) -> str:
        body = _body(ACCEPT_TASK, args, kwargs)
        if body is None:
            return "refused"
        return run_step(
            ACCEPT_TASK, lambda runner: _deliverer(runner).accept(body), publish, inline=inline
        )

    @app.task(name=DELIVER_TASK, typing=False, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def deliver(*args: Any, **kwargs: Any) -> str:
        body = _body(DELIVER_TASK, args, kwargs)
        if body is None:
            return "refused"
        return run_step(DELIVER_TASK, lambda runner: _deliverer(runner).deliver(body), publish)

    @app.task(name=REPLAY_TASK, typing=False, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def replay(*args: Any, **kwargs: Any) -> str:
        body = _body(REPLAY_TASK, args, kwargs)
        if body is None:
            return "refused"
        return run_step(REPLAY_TASK, lambda runner: _replay(runner, body), publish)

    return {ACCEPT_TASK: accept, DELIVER_TASK: deliver, REPLAY_TASK: replay}


def _deliverer(runner: worker_loop.WorkerLoop) -> Any:
    if runner.deliverer is None:
        raise RuntimeError("the worker loop has no deliverer")
    return runner.deliverer
