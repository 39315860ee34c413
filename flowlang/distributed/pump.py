"""The pump: moves scheduled messages (retries, deferred accepts and attempts) from the shared
store's due set to the broker when they are due.

One pump is active at a time, whichever holds the store's pump lock (taken for ``hold``
seconds, renewed every round); any number may run, in any workers, and the others wait. Each
round (:meth:`Pump.run_once`) the holder first publishes again what a pump took but never
marked published more than ``stale`` seconds ago (a pump that stopped between taking and
publishing loses nothing), then takes up to ``batch`` due members in one step into the pumping
hash, publishes each and marks it published. A message whose publish fails stays in the
pumping hash and is published again once it is stale: delivery is at least once, and a
message may go out twice (the deliverer's ledger and leases make that harmless).

Times come from ``clock`` (``now()``: seconds, the clock the deliverer schedules with).
``publish(task, body)`` should raise on failure with a message that holds no secret (it is
logged). Beyond Interface C (compatible): :meth:`Pump.run` gives the lock back when it stops.

Bounds: each publish runs under ``publish_timeout`` (by default a third of ``stale``, at most
half of ``hold``): a publish that hangs counts as failed and its message stays for later. The
lock is renewed before each publish and the round ends when it is lost, so no other pump takes
over (and re-publishes the same member as stale) while this one is publishing. After a failed
publish nothing more is taken from the due set: the failed messages are tried first next round;
and nothing is taken while the pumping hash holds ``batch`` or more (a broker outage does not
drain the due set into it). :meth:`Pump.run` returns soon after ``stop`` is set, even while a
publish hangs (the message is then left for later). The owner is a key part, checked at once.
"""

from __future__ import annotations

__all__ = ["Pump"]

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from flowlang.automations.dispatch import SystemClock, describe_error
from flowlang.distributed import watch
from flowlang.distributed.connection import check_key_part
from flowlang.distributed.shared import MAX_SECONDS, SharedStore
from flowlang.expr.shared import shorten

log = logging.getLogger("flowlang.distributed")

#: The longest publish or store error a log line repeats.
SHOWN_ERROR = 300


class Now(Protocol):
    """A clock: seconds now."""

    def now(self) -> float:
        """Seconds since the epoch (or any origin the deliverer's clock shares)."""


class Pump:
    """Publishes the store's due messages with ``publish`` when ``owner`` holds the pump lock
    (see the module docstring)."""

    def __init__(
        self,
        store: SharedStore,
        publish: Callable[[str, dict[str, Any]], Awaitable[None]],
        owner: str,
        *,
        clock: Now | None = None,
        batch: int = 100,
        interval: float = 0.5,
        hold: float = 5.0,
        stale: float = 30.0,
        publish_timeout: float | None = None,
    ) -> None:
        if type(batch) is not int or not 1 <= batch <= 100_000:
            raise ValueError("batch must be a whole number from 1 to 100000")
        for name, value in (("interval", interval), ("hold", hold), ("stale", stale)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.001 <= value <= MAX_SECONDS
            ):
                raise ValueError(f"{name} must be a number of seconds from 0.001 to {MAX_SECONDS}")
        if publish_timeout is None:
            publish_timeout = min(stale / 3, hold / 2)
        if (
            isinstance(publish_timeout, bool)
            or not isinstance(publish_timeout, int | float)
            or not 0 < publish_timeout <= stale / 2
        ):
            raise ValueError(
                "publish_timeout must be a positive number of seconds, at most stale/2"
            )
        self.store = store
        self.publish = publish
        self.owner = check_key_part("owner", owner)
        self.clock: Now = clock or SystemClock()
        self.batch = batch
        self.interval = float(interval)
        self.hold = float(hold)
        self.stale = float(stale)
        self.publish_timeout = float(publish_timeout)
        #: Messages whose publish failed in the last round (tried first in the next).
        self._failed: list[tuple[str, str, dict[str, Any]]] = []

    async def run_once(self) -> int:
        """One round, if this pump holds the lock: publish again what failed last round and
        stale pumping members, then (unless a publish failed or the pumping hash already holds a
        batch) take what is due, publish each and mark it published; the lock is renewed before
        each publish and the round ends when it is lost. How many were published (0 without
        the lock). SharedStoreError when the store cannot be reached; a failed publish is
        logged and its message left for a later round."""
        store = self.store
        if not await store.hold_pump(self.owner, self.hold):
            self._failed = []
            return 0
        now = self.clock.now()
        count = 0
        failed, self._failed = self._failed, []
        stale = await store.stale_pumping(now, self.stale, limit=self.batch)
        seen = {member for member, _, _ in failed}
        again = failed + [item for item in stale if item[0] not in seen]
        for index, (member, task, body) in enumerate(again):
            if index >= len(failed):
                log.info(
                    "pump %s: publishing a %s message again (taken, never published)",
                    self.owner,
                    task,
                )
            outcome = await self._publish(member, task, body, renew=index > 0)
            if outcome != "published":
                if outcome == "failed":
                    self._failed = again[index:]
                return count
            watch.pump_published("again")
            count += 1
        if await store.pumping_count() >= self.batch:
            log.warning(
                "pump %s: %d or more messages wait to be published; nothing more taken",
                self.owner,
                self.batch,
            )
            return count
        taken = await store.take_due(now, self.batch)
        for index, (member, task, body) in enumerate(taken):
            outcome = await self._publish(member, task, body, renew=bool(index or again))
            if outcome != "published":
                if outcome == "failed":
                    self._failed = taken[index:]
                break
            watch.pump_published("due")
            count += 1
        return count

    async def _publish(self, member: str, task: str, body: dict[str, Any], *, renew: bool) -> str:
        """Publish one message (within ``publish_timeout``) and mark it published:
        ``published``, ``failed`` (the message stays in the pumping hash) or ``lost`` (the lock
        is no longer ours: nothing published)."""
        if renew and not await self.store.hold_pump(self.owner, self.hold):
            log.warning("pump %s: lost the pump lock; this round ends", self.owner)
            return "lost"
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.publish(task, body)
        except Exception as error:
            shown = (
                f"no answer within {self.publish_timeout:g} s"
                if isinstance(error, TimeoutError)
                else shorten(describe_error(error), SHOWN_ERROR)
            )
            log.warning(
                "pump %s: publishing a %s message failed, it will be published again: %s",
                self.owner,
                task,
                shown,
            )
            return "failed"
        await self.store.published(member)
        return "published"

    async def run(self, stop: asyncio.Event) -> None:
        """Pump rounds until ``stop`` is set: at once again after a full batch, else every
        ``interval`` seconds. Never raises (a failed round is logged and the next one tried);
        returns soon after ``stop`` (a round still going is cancelled: what it had taken and
        not published stays for later); gives the lock back when it stops."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                round_ = asyncio.ensure_future(self.run_once())
                await asyncio.wait({round_, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not round_.done():
                    round_.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await round_
                    break
                try:
                    count = round_.result()
                except Exception as error:
                    log.warning(
                        "pump %s: a round failed, trying again in %.1f s: %s",
                        self.owner,
                        self.interval,
                        shorten(describe_error(error), SHOWN_ERROR),
                    )
                    count = 0
                if count >= self.batch:
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), self.interval)
        finally:
            stopping.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_pump(self.owner), self.hold)
