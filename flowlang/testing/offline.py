"""Offline, on virtual time: requests answered from a case's recordings without sleeping, and
a clock that moves only when something waits.

:class:`VirtualHttp` answers as :class:`~flowlang.runtime.http.RecordedHttp` does (the same
results, the same messages), except that a delay is not slept: a recording slower than the
step's timeout is a timeout at once, a faster one answers at once with its delay as the
duration. Each request of the run itself (not one sent in the background) moves a
:class:`VirtualTimer` on by its delay (by the timeout when the delay is longer): the runtime
reads its deadline from that timer, so a run slower than its deadline fails as it would on the
network, without waiting. It notes the requests that had no recording (a case fails on them,
even where the flow would take ``on_failure``) and the recordings never asked for.
"""

from __future__ import annotations

__all__ = ["VirtualClock", "VirtualHttp", "VirtualTimer"]

import asyncio
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult, RecordedHttp, RecordedResponse

#: The most requests of one case kept (and compared); more are answered but not kept (the
#: runtime's step limits end a loop of requests).
MAX_CASE_REQUESTS = 1000


class VirtualTimer:
    """The clock of a case's run deadlines (seconds): it moves only when a request waits."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class VirtualHttp(RecordedHttp):
    """Recorded responses on virtual time, keeping every request of the case. ``timer`` moves
    by the waits of the requests that ``foreground`` (a task) sends; one that would pass
    ``deadline`` (on the timer) stops there with TimeoutError, as the run's deadline does."""

    def __init__(
        self,
        responses: Mapping[tuple[str, str], RecordedResponse],
        timer: VirtualTimer | None = None,
    ) -> None:
        super().__init__({key: dataclasses.replace(r, delay=0.0) for key, r in responses.items()})
        self.timer = timer or VirtualTimer()
        #: The task of the run (its requests take time), and when the run's time is up.
        self.foreground: asyncio.Task[Any] | None = None
        self.deadline: float | None = None
        self.delays = {key: response.delay for key, response in responses.items()}
        #: Every request sent, in order (at most MAX_CASE_REQUESTS).
        self.sent: list[PreparedRequest] = []
        #: ``METHOD URL`` of each request that had no recording, in order.
        self.missing: list[str] = []
        self.used: set[tuple[str, str]] = set()

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        if len(self.sent) < MAX_CASE_REQUESTS:
            self.sent.append(request)
        key = (request.method, request.url)
        if key not in self.responses:
            self.missing.append(f"{request.method} {request.url}")
        else:
            self.used.add(key)
            delay = self.delays[key]
            self._wait(min(delay, timeout))
            if delay > timeout:  # as RecordedHttp: a timeout after the step's timeout
                return HttpResult(
                    "timeout", error=f"no complete response within {timeout:g}s", duration=timeout
                )
            result = await super().send(
                request, timeout=timeout, max_body=max_body, follow_redirects=follow_redirects
            )
            return dataclasses.replace(result, duration=delay)
        return await super().send(
            request, timeout=timeout, max_body=max_body, follow_redirects=follow_redirects
        )

    def _wait(self, seconds: float) -> None:
        """Move the timer on by a wait of the run's own (TimeoutError past its deadline)."""
        if self.foreground is None or asyncio.current_task() is not self.foreground:
            return  # a request in the background: the run does not wait for it
        timer = self.timer
        if self.deadline is not None and timer.seconds + seconds > self.deadline:
            timer.seconds = max(timer.seconds, self.deadline)
            raise TimeoutError  # as asyncio.timeout under the run's deadline
        timer.seconds += seconds

    def unused(self, among: Collection[tuple[str, str]]) -> list[str]:
        """``METHOD URL`` of each recording of ``among`` that no request asked for."""
        return [
            f"{method} {url}"
            for method, url in self.responses
            if (method, url) in among and (method, url) not in self.used
        ]


class VirtualClock:
    """Time for automations' retry schedules in a case: sleeping moves the clock, at once."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.current = start

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += max(0.0, seconds)
