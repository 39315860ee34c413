"""Intake: events from the contact center (``POST /events``) and from calls, recorded durably
before they are answered, then dispatched by the automations in the background; or, with
``publish`` (``flowlang serve --broker``), checked at the door and published as a
``flowlang.accept`` message to the Celery workers, which deduplicate and deliver them (the
answer comes once the broker has the message).

An event is accepted once it is in the local store (committed, and with a store opened with
``sync=True``, on the disk): a process that dies right after answering 202 leaves it open,
owned by a process that is gone; the next process on the store takes it over and finishes it
(:meth:`EventIntake.start` at its start, and every ``takeover_interval`` seconds any live
process on the store: a worker that died is covered by the others).
"""

from __future__ import annotations

__all__ = ["EventIntake", "EventRefusedError"]

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from flowlang.automations.dispatch import Automations, DispatchResult, describe_error
from flowlang.automations.records import check_event
from flowlang.distributed.messages import AcceptMessage
from flowlang.errors import CallStoreError, EventError, EventRefusedError, StoreError
from flowlang.observe import Observer
from flowlang.runtime.secrets import SecretsProvider
from flowlang.serve.calls import CallStore
from flowlang.serve.settings import ServeSettings, require_secrets, secret_values
from flowlang.serve.signatures import (
    WebhookAuthError,
    bearer_valid,
    standard_webhook_key,
    verify_standard_webhook,
)
from flowlang.serve.voice import INTERNAL_ID

log = logging.getLogger("flowlang.serve")

#: Open events taken over from dead processes per store call (each is read and decoded in
#: memory until it is resumed), and batches taken one after another before the next interval.
TAKEOVER_BATCH = 256
MAX_BATCHES_AT_ONCE = 64

T = TypeVar("T")

#: Events that may wait for each of the events store's recording threads (beyond, 503 at once).
QUEUED_PER_THREAD = 16


class EventIntake:
    """Checks, records and dispatches events with ``automations``.

    ``POST /events`` is authenticated with Standard Webhooks signatures (the secrets named by
    ``settings.event_secrets``) or a bearer token (``settings.event_tokens``), each looked up
    in ``secrets`` on every request (a rotated secret takes effect without a restart).
    """

    def __init__(
        self,
        automations: Automations,
        settings: ServeSettings,
        secrets: SecretsProvider,
        observer: Observer,
        store: CallStore,
        clock: Any = time.time,
        publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.automations = automations
        #: When set, events are published to the workers (an accept message body each)
        #: instead of being recorded and dispatched here.
        self.publish = publish
        #: Where event ids are claimed across the processes sharing it (Redis), so that an
        #: event sent to two replicas or workers is dispatched once.
        self.store = store
        self.settings = settings
        self.secrets = secrets
        self.observer = observer
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        #: The periodic take-over (see :meth:`start`).
        self._watch: asyncio.Task[None] | None = None
        self._turns = asyncio.Semaphore(settings.dispatch_concurrency)
        #: Accepted events whose dispatch has not finished.
        self._pending = 0
        self._triggers = {workflow.trigger for workflow in automations.workflows}
        #: The events store's own threads (made on first use): ``store_threads`` that record
        #: events, and one for the periodic take-over. Not asyncio's default pool, which
        #: getaddrinfo shares: a store locked by another process holds up no DNS look-up.
        self._pools: dict[str, ThreadPoolExecutor] = {}
        #: Room for events being recorded or waiting for a recording thread; an event that
        #: finds none is answered 503 at once.
        self._recorders = threading.BoundedSemaphore(settings.store_threads * QUEUED_PER_THREAD)
        #: When a recording last failed (the store locked by another process beyond its
        #: busy_timeout, say), time.monotonic(): the events that were waiting for a thread
        #: then are refused without waiting busy_timeout each in turn.
        self._store_failed = -1.0

    def _in_store_thread(self, work: Callable[[], T], kind: str = "record") -> asyncio.Future[T]:
        """``work`` on one of the events store's threads of ``kind``: ``record`` (events) or
        ``takeover``."""
        pool = self._pools.get(kind)
        if pool is None:
            threads = self.settings.store_threads if kind == "record" else 1
            pool = ThreadPoolExecutor(threads, thread_name_prefix=f"flowlang-store-{kind}")
            self._pools[kind] = pool
        return asyncio.get_running_loop().run_in_executor(pool, work)

    def check_secrets(self) -> None:
        """ValueError naming the first configured event secret that is unset or not a Standard
        Webhooks secret (checked when the server starts; never shows the value)."""
        require_secrets(self.secrets, self.settings.event_secrets + self.settings.event_tokens)
        for name in self.settings.event_secrets:
            try:
                standard_webhook_key(self.secrets.get(name) or "")
            except ValueError:
                raise ValueError(
                    f"secret {name!r} is not a Standard Webhooks secret (whsec_ and base64)"
                ) from None

    @property
    def enabled(self) -> bool:
        """Whether ``POST /events`` takes events: only with a secret or token to check."""
        return bool(self.settings.event_secrets or self.settings.event_tokens)

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        """EventRefusedError(401) unless the request is signed or carries a known token."""
        tokens = secret_values(self.secrets, self.settings.event_tokens)
        if tokens and bearer_valid(tokens, headers.get("authorization")):
            return
        keys = secret_values(self.secrets, self.settings.event_secrets)
        if keys:
            try:
                verify_standard_webhook(
                    keys,
                    headers,
                    body,
                    now=self._clock(),
                    tolerance=self.settings.event_tolerance,
                )
                return
            except WebhookAuthError as error:
                self.observer.webhook_rejected("events", str(error))
                raise EventRefusedError(401, f"not authenticated: {error}") from None
            except ValueError:  # a configured secret that is no Standard Webhooks secret
                log.error(
                    "an event secret is not a Standard Webhooks secret (whsec_ and base64)",
                    extra={"event": "serve.misconfigured"},
                )
                self.observer.webhook_rejected("events", "misconfigured")
                raise EventRefusedError(401, "not authenticated") from None
        self.observer.webhook_rejected("events", "no credentials")
        raise EventRefusedError(401, "not authenticated: no valid signature or token")

    def parse(self, body: bytes) -> dict[str, Any]:
        """The event in a request body; EventRefusedError(400) saying what is wrong."""
        if len(body) > self.settings.max_event_bytes:
            raise EventRefusedError(
                413, f"an event body is at most {self.settings.max_event_bytes} bytes"
            )
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise EventRefusedError(400, f"the body is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise EventRefusedError(400, "an event is a JSON object {id, type, properties}")
        if not isinstance(value.get("type"), str):
            raise EventRefusedError(400, "an event needs a type (text)")
        event_id = value.get("id")
        if isinstance(event_id, str) and event_id.startswith(INTERNAL_ID):
            raise EventRefusedError(
                400, f"event ids starting with {INTERNAL_ID!r} are the calls' own events"
            )
        return value

    async def submit(self, event: Mapping[str, Any]) -> str:
        """Record ``event`` and dispatch it in the background: ``accepted``, ``unmatched``
        (recorded, no workflow takes it) or ``duplicate``. EventRefusedError(400) for an event
        refused at the door (no id, too deep or too large); EventRefusedError(503) when it cannot
        be recorded, or when ``max_pending_events`` wait already (the sender should try
        again; events being recorded at that moment, at most one per connection, may pass
        it)."""
        kind = event.get("type")
        trigger = kind if isinstance(kind, str) and kind in self._triggers else "other"
        if self.publish is not None:
            return await self._publish(self.publish, event, trigger)
        if self._pending >= self.settings.max_pending_events:
            self.observer.event(trigger, "rejected")
            raise EventRefusedError(
                503, "too many events are waiting to be dispatched; send it again later"
            )
        event_id = event.get("id")
        shared = isinstance(event_id, str) and event_id != ""
        if shared and not await self._claim(str(event_id)):
            self.observer.event(trigger, "duplicate")
            return "duplicate"
        try:
            plain = await self._accept(event, trigger)
        except BaseException:
            if shared:  # not recorded here: not taken, so that its retry is no duplicate
                await self._release(str(event_id))
            raise
        return self._accepted(plain, trigger)

    async def _publish(
        self,
        publish: Callable[[dict[str, Any]], Awaitable[None]],
        event: Mapping[str, Any],
        trigger: str,
    ) -> str:
        """Check ``event`` at the door and publish its accept message: ``accepted`` (the
        workers tell duplicates apart). EventRefusedError(400) for an event refused at the
        door, (503) when the broker does not take it (the sender should try again)."""
        settings = self.automations.settings
        try:
            plain = check_event(event, settings.max_event_depth, settings.max_event_bytes)
        except EventError as error:
            self.observer.event(trigger, "rejected")
            raise EventRefusedError(400, str(error)) from None
        try:
            await publish(AcceptMessage(plain, self._clock(), "serve").to_json())
        except Exception as error:
            log.error(
                "an event could not be published: %s",
                self.automations.redactor.text(describe_error(error)),
                extra={"event": "event.unpublished"},
            )
            raise EventRefusedError(503, "the event could not be queued; send it again") from None
        self.observer.event(trigger, "accepted")
        return "accepted"

    async def _claim(self, event_id: str) -> bool:
        """The event's first sighting across the processes sharing the store (always, with
        the in-process store); EventRefusedError(503) when the store cannot say."""
        try:
            return await self.store.claim_event(event_id, self.automations.settings.dedup_window)
        except CallStoreError as error:
            log.error("%s", error, extra={"event": "event.store_failed"})
            raise EventRefusedError(
                503, "the event store cannot be reached; send it again"
            ) from None

    async def _release(self, event_id: str) -> None:
        with contextlib.suppress(CallStoreError):
            await self.store.release_event(event_id)

    def _accepted(self, plain: dict[str, Any] | None, trigger: str) -> str:
        """Count, log and dispatch an event :meth:`Automations.accept` returned."""
        if plain is None:
            self.observer.event(trigger, "duplicate")
            return "duplicate"
        try:
            result = "accepted" if self.automations.match(plain) else "unmatched"
        except Exception:  # a condition that fails: the dispatch reports it
            result = "accepted"
        self.observer.event(trigger, result)
        self._pending += 1  # counted now: its task starts at the loop's next turn
        self._start(self._dispatch(plain))
        return result

    async def _accept(self, event: Mapping[str, Any], trigger: str) -> dict[str, Any] | None:
        """:meth:`Automations.accept`, its errors as the answers they are. With a store, on one
        of its threads: a commit synced to the disk, or one waiting for another process's, does
        not hold up the other requests; with every one of them busy (another process holds the
        store, say), EventRefusedError(503) at once rather than a turn in a queue."""
        try:
            if self.automations.store is None:
                return self.automations.accept(event)
            return await self._record(event, trigger)
        except EventError as error:
            self.observer.event(trigger, "rejected")
            raise EventRefusedError(400, str(error)) from None
        except OSError as error:
            log.error(
                "the events store cannot record an event: %s",
                error,
                extra={"event": "event.unrecorded"},
            )
            raise EventRefusedError(503, "the event could not be recorded; send it again") from None

    async def _record(self, event: Mapping[str, Any], trigger: str) -> dict[str, Any] | None:
        """:meth:`Automations.accept` on a recording thread of the store; EventRefusedError(503)
        at once when ``store_threads`` x QUEUED_PER_THREAD events are being recorded or wait
        for a thread already, and as soon as it has a thread when a recording failed while it
        waited (each waiting in turn for a locked store would answer the last after many
        busy_timeouts)."""
        recorders = self._recorders
        if not recorders.acquire(blocking=False):
            self.observer.event(trigger, "rejected")
            log.warning(
                "too many events wait to be recorded in the events store: one is refused (503)",
                extra={"event": "event.store_busy"},
            )
            raise EventRefusedError(503, "the event store is busy; send the event again")

        queued = time.monotonic()

        def record() -> dict[str, Any] | None:
            try:
                if self._store_failed >= queued:
                    raise StoreError("the store failed while the event waited to be recorded")
                try:
                    return self.automations.accept(event)
                except OSError:
                    self._store_failed = time.monotonic()
                    raise
            finally:  # released by the thread: a cancelled request does not free it early
                recorders.release()

        try:
            future = self._in_store_thread(record)
        except BaseException:
            recorders.release()
            raise
        return await future

    def _start(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(self, event: Mapping[str, Any]) -> None:
        try:
            async with self._turns:
                result = await self.automations.run(event)
        except Exception as error:  # never lost: the store keeps it open
            log.error("dispatch failed: %s", error, extra={"event": "event.dispatch_failed"})
            return
        finally:
            self._pending -= 1
        self.observer.dispatched(result)

    async def start(self) -> None:
        """Finish, in the background, the events that processes on the store which are gone
        accepted and did not finish (taken over when the automations were made), and keep
        taking over such events every ``settings.takeover_interval`` seconds."""
        self._start(self._resume())
        if self.automations.store is not None and self.publish is None:
            self._watch = asyncio.get_running_loop().create_task(
                self._take_over_from_time_to_time()
            )

    async def _resume(self) -> None:
        for problem in self.automations.problems:
            log.error("%s", problem, extra={"event": "event.unreadable"})
        self.automations.problems.clear()
        results: list[DispatchResult] = await self.automations.resume()
        if results:
            log.info(
                "resumed %d unfinished events left by processes that stopped",
                len(results),
                extra={"event": "event.resumed"},
            )
        for result in results:
            self.observer.dispatched(result)

    def _take_a_batch(self) -> int:
        """At most TAKEOVER_BATCH open events of dead processes taken over (a store thread)."""
        return self.automations.take_over(TAKEOVER_BATCH)

    async def _take_over_from_time_to_time(self) -> None:
        """Every ``takeover_interval`` seconds, take over the open events of processes on the
        store that died meanwhile (a worker killed, another server stopped by SIGKILL) and
        finish them."""
        while True:
            await asyncio.sleep(self.settings.takeover_interval)
            for _ in range(MAX_BATCHES_AT_ONCE):  # a dead process's many events, batch by batch
                try:
                    # On a store thread: the take-over waits for a store another process
                    # holds (busy_timeout), then reads and decodes at most a batch of events.
                    taken = await self._in_store_thread(self._take_a_batch, "takeover")
                except Exception as error:  # the store unusable for a while: try again later
                    log.error(
                        "looking for unfinished events: %s",
                        error,
                        extra={"event": "event.takeover"},
                    )
                    break
                if not taken:
                    break
                # Finished before the next batch is read (shielded: a drain waits for it as
                # for any dispatch, rather than cutting it short with this loop).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._start(self._resume()))
                if taken < TAKEOVER_BATCH:
                    break

    async def _close_store_pool(self, timeout: float) -> None:
        """No more work for the store's threads; wait up to ``timeout`` seconds for those
        running (a take-over: within the store's busy_timeout) before the store is closed."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        for pool in pools:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(pool.shutdown, True), timeout)

    async def drain(self, timeout: float) -> int:
        """Stop taking over; wait up to ``timeout`` seconds for dispatches in flight; cancel
        the rest (they stay open in the store: the next process on it takes them over).
        Returns how many were cancelled."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
            self._watch = None
        await self._close_store_pool(timeout)
        pending = set(self._tasks)
        if not pending:
            return 0
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(BaseException):
                await task
        return len(late)
