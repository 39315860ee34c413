"""What ``flowlang automate`` shows while it works: one status line on a terminal, redrawn.

On a terminal (standard error is a tty) the line tells events read and done, deliveries, dead
letters, and the retries waiting with the time the next one is due; it is redrawn at most
:data:`REDRAW_EVERY` seconds apart, and only when it changes. Anything else written to the
terminal first erases it (:meth:`Progress.clear`), so the line never mixes with other output.
When standard error is not a terminal, or with ``-q``, nothing is drawn.
"""

from __future__ import annotations

__all__ = ["REDRAW_EVERY", "Progress"]

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from typing import TextIO

from flowlang.automations.dispatch import Attempt
from flowlang.cli.terminal import Colours

#: Seconds between two redraws of the status line, at least.
REDRAW_EVERY = 0.25


class Progress:
    """Counts what a run does; draws them on ``stream`` when ``enabled``."""

    def __init__(self, stream: TextIO, *, enabled: bool, real_time: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.real_time = real_time
        self.colours = Colours.for_stream(stream)
        self.read = self.done = self.delivered = self.dead_lettered = 0
        self.input_ended = False
        #: The clock the retries wait on (the automations' clock: simulated when offline).
        self.now: Callable[[], float] = time.time
        #: When the next attempt of each action whose last one asked for a retry is due.
        self.retries: dict[tuple[str, str, str], float] = {}
        self._shown = ""
        self._task: asyncio.Task[None] | None = None

    def attempted(self, attempt: Attempt) -> None:
        """Note an attempt: a retry is due ``retry_in`` seconds from now; else none is."""
        key = (attempt.event_id, attempt.workflow, attempt.action)
        if attempt.retry_in is not None:
            self.retries[key] = self.now() + attempt.retry_in
        else:
            self.retries.pop(key, None)

    def event_done(self, event_id: str | None) -> None:
        """Forget the retries of an event that ended."""
        for key in [key for key in self.retries if key[0] == event_id]:
            del self.retries[key]

    def waiting(self) -> list[float]:
        """When each retry still waiting is due (one being attempted is not waiting)."""
        now = self.now()
        return [due for due in self.retries.values() if due > now]

    def text(self) -> str:
        """The status line (plain, no colour)."""
        parts = [f"events {self.read} read, {self.done} done", f"{self.delivered} delivered"]
        if self.dead_lettered:
            parts.append(f"{self.dead_lettered} dead-lettered")
        waits = self.waiting()
        if waits:
            count = len(waits)
            waiting = f"waiting for {count} {'retry' if count == 1 else 'retries'}"
            if self.real_time:
                waiting += f", next at {_clock_time(min(waits))}"
            parts.append(waiting)
        elif not self.input_ended and self.read == self.done:
            parts.append("waiting for events")
        return "; ".join(parts)

    def _painted(self, text: str) -> str:
        paint = self.colours.paint
        for word, role in (("dead-lettered", "bad"), ("waiting for", "warning")):
            start = text.find(word)
            if start >= 0:
                end = text.find(";", start)
                end = len(text) if end < 0 else end
                text = text[:start] + paint(text[start:end], role) + text[end:]
        return text

    def draw(self) -> None:
        """Redraw the line if it changed (cut to the terminal's width)."""
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        text = self.text()
        if len(text) >= width:
            text = text[: max(0, width - 2)] + "…"
        if text == self._shown:
            return
        self._shown = text
        self._write(f"\r\x1b[K{self._painted(text)}")

    def clear(self) -> None:
        """Erase the line (before other output); the next redraw brings it back."""
        if self._shown:
            self._shown = ""
            self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing
            self.enabled = False

    async def _redraw(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(REDRAW_EVERY)

    def start(self) -> None:
        """Start redrawing (nothing when not enabled)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._redraw())

    async def stop(self) -> None:
        """Stop redrawing and erase the line."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.clear()


def _clock_time(at: float) -> str:
    """``12:04:31`` (local time), with the date when it is not today."""
    moment = time.localtime(at)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)
