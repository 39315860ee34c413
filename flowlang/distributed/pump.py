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
"""

from __future__ import annotations

__all__ = ["Pump"]

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from flowlang.automations.dispatch import SystemClock, describe_error
from flowlang.distributed.shared import SharedStore
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
    ) -> None:
        if type(batch) is not int or not 1 <= batch <= 100_000:
            raise ValueError("batch must be a whole number from 1 to 100000")
        for name, value in (("interval", interval), ("hold", hold), ("stale", stale)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self.store = store
        self.publish = publish
        self.owner = owner
        self.clock: Now = clock or SystemClock()
        self.batch = batch
        self.interval = float(interval)
        self.hold = float(hold)
        self.stale = float(stale)

    async def run_once(self) -> int:
        """One round, if this pump holds the lock: publish stale pumping members again, take
        what is due, publish each and mark it published. How many were published (0 without
        the lock). SharedStoreError when the store cannot be reached; a failed publish is
        logged and its message left for a later round."""
        store = self.store
        if not await store.hold_pump(self.owner, self.hold):
            return 0
        now = self.clock.now()
        count = 0
        stale = await store.stale_pumping(now, self.stale, limit=self.batch)
        for member, task, body in stale:
            log.info(
                "pump %s: publishing a %s message again (taken, never published)", self.owner, task
            )
            if not await self._publish(member, task, body):
                return count
            count += 1
        taken = await store.take_due(now, self.batch)
        for member, task, body in taken:
            if not await self._publish(member, task, body):
                break
            count += 1
        return count

    async def _publish(self, member: str, task: str, body: dict[str, Any]) -> bool:
        """Publish one message and mark it published; False when the publish failed (the
        message stays in the pumping hash, published again once stale)."""
        try:
            await self.publish(task, body)
        except Exception as error:
            log.warning(
                "pump %s: publishing a %s message failed, it will be published again in %.0f s: %s",
                self.owner,
                task,
                self.stale,
                shorten(describe_error(error), SHOWN_ERROR),
            )
            return False
        await self.store.published(member)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Pump rounds until ``stop`` is set: at once again after a full batch, else every
        ``interval`` seconds. Never raises (a failed round is logged and the next one tried);
        gives the lock back when it stops."""
        try:
            while not stop.is_set():
                try:
                    count = await self.run_once()
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
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            with contextlib.suppress(Exception):
                await self.store.release_pump(self.owner)
