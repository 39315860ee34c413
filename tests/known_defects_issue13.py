"""Known defects of issue 13's code, found by a red-team review at the end of a session and
NOT yet fixed: each test states the behaviour the design promises and fails today.

This file is deliberately not collected (its name does not start with ``test_``): copy it to
``tests/test_known_defects_issue13.py`` to run the reproductions, fix the code until each
passes, then move each test next to the behaviour it checks and delete this file. The list,
with file:line and suggested fixes, is in issue 13's notes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from celery.exceptions import Reject
from distributed_support import Kit
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import DeadLetterStore
from flowlang.distributed import loop as worker_loop
from flowlang.distributed import tasks
from flowlang.distributed.celery_app import make_app
from flowlang.distributed.deliverer import Step
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult

ONE = """\
workflow: redteam_one
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
"""


# --- 1. a task that fails outside its try is acknowledged (lost), not requeued --------------


def test_a_task_without_a_running_loop_requeues_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery swallows a worker_init / worker_process_init handler's exception, so a worker
    whose loop did not start keeps consuming. run_step calls worker_loop.current() outside
    its try: the task raises RuntimeError, and with task_acks_on_failure_or_timeout=True
    Celery acknowledges the message: the event is lost. Expected: Reject(requeue=True)."""
    app = make_app("redis://127.0.0.1:1/0")
    assert app.conf.task_acks_late and app.conf.task_acks_on_failure_or_timeout
    registered = tasks.register(app, "fltest-redteam")
    monkeypatch.setattr(worker_loop, "_current", None)
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE", 0.0)
    with pytest.raises(Reject) as raised:
        registered[ACCEPT_TASK].run(v=1, event={"id": "evt-1", "type": "call.ended"})
    assert raised.value.requeue


# --- 2. an inline delivery cut by its budget is handed to another worker mid-request ---------


class _ThreadLoop:
    """A loop on its own thread with WorkerLoop.call (a timeout cancels the coroutine)."""

    call = worker_loop.WorkerLoop.call

    def __init__(self, deliverer: Any) -> None:
        self.deliverer = deliverer
        self.automations = None
        self.store = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        time.sleep(0.1)  # let the cancelled coroutine end
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _SlowReceiver:
    """Deliver: the request reaches the receiver at once, its answer takes ``answer`` s
    (below an attempt's timeout cap, 30 s); the lease is released in finally, as in
    Deliverer._deliver."""

    def __init__(self, answer: float) -> None:
        self.answer = answer
        self.received: list[str] = []

    async def deliver(self, body: dict[str, Any]) -> Step:
        self.received.append(str(body["name"]))
        await asyncio.sleep(self.answer)
        return Step("delivered")


def test_an_inline_delivery_is_not_republished_while_its_request_may_be_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scaled down (BRIDGE_TIMEOUT 3 s, INLINE_MINIMUM 0.5 s; in production 50 s and 5 s
    against an attempt cap of 30 s): the accept's own work used most of the budget, the
    inline attempt got what was left (>= INLINE_MINIMUM), it was cancelled mid-request and
    the same attempt was published for another worker: the receiver gets it twice with no
    crash. Expected: the inline attempt is given at least the attempt cap, or is not
    cancelled-and-republished (publish without inlining when the budget is short)."""
    monkeypatch.setattr(tasks, "BRIDGE_TIMEOUT", 3.0)
    monkeypatch.setattr(tasks, "INLINE_MINIMUM", 0.5)
    receiver = _SlowReceiver(answer=2.0)
    runner = _ThreadLoop(receiver)
    monkeypatch.setattr(worker_loop, "_current", runner)
    published: list[str] = []

    async def slow_accept(_: Any) -> Step:
        await asyncio.sleep(2.0)  # a slow shared store during the claim
        return Step("fanned_out", [(DELIVER_TASK, {"name": "one"})])

    def publish(task: str, body: dict[str, Any]) -> None:
        published.append(str(body["name"]))

    try:
        started = time.monotonic()
        tasks.run_step(ACCEPT_TASK, slow_accept, publish, inline=True)
        assert time.monotonic() - started < 10
    finally:
        runner.close()
    # The receiver saw "one" once (inline), and "one" was also handed to the workers.
    assert not (receiver.received == ["one"] and published == ["one"]), (
        "the inline attempt was cancelled mid-request and republished: sent twice"
    )


# --- helpers of the cases below (case 3 is fixed: tests/test_shared_replay.py) -------------


class _Http:
    def __init__(self, status: int, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.sent: list[str] = []

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.sent.append(request.url)
        await asyncio.sleep(self.delay)
        if self.status == 200:
            return HttpResult("success", 200, {}, {"ok": True})
        return HttpResult("http_error", self.status, {}, {}, f"HTTP {self.status}")


def _automations(http: _Http) -> Automations:
    return Automations(
        [load_workflow_text(ONE)],
        settings=DeliverySettings(schedule=(0,)),
        http=http,
        secrets=MappingSecrets({}),
        clock=FakeClock(),
        dead_letters=DeadLetterStore(),
    )


# --- 4. `flowlang replay redis:// --broker` loses a dead letter the workers cannot replay ------


class _Runner:
    def __init__(self, automations: Automations, store: Any) -> None:
        from flowlang.distributed.deliverer import Deliverer

        self.automations = automations
        self.store = store
        self.deliverer = Deliverer(automations, store, "redteam:1:abcd")


def test_a_handed_over_dead_letter_that_cannot_be_replayed_is_kept(kit: Kit) -> None:
    """_hand_over removes each record once published; the worker's flowlang.replay task
    turns a record it cannot replay (its workflow text does not load here, e.g. another
    flowlang version or allow_hosts) into Step("refused"), which run_step acknowledges.
    The in-process replay keeps such a record ("cannot be replayed (kept)"); via --broker it
    is gone from everywhere. Expected: still a dead letter somewhere."""
    import io

    from flowlang.cli.worker_console import _hand_over

    async def work() -> tuple[str, int]:
        failing = _automations(_Http(400))
        async with failing:
            await failing.dispatch({"id": "evt-rt-2", "type": "call.ended", "properties": {}})
        (record,) = failing.dead_letters.records
        record = dict(record) | {
            "workflow_fingerprint": "0" * 64,
            "workflow_source": "workflow: redteam_one\ntrigger: call.ended\nactions: 7\n",
        }
        store = kit.store()
        handed: list[dict[str, Any]] = []
        try:
            await store.add_dead(record)
            await _hand_over(
                kit.url,
                kit.prefix,
                lambda _task, body: handed.append(body),
                "redis://x",
                io.StringIO(),
            )
            worker = _automations(_Http(200))
            async with worker:
                step = await tasks._replay(_Runner(worker, store), handed[0])  # type: ignore[arg-type]
            return step.outcome, await store.dead_count()
        finally:
            await store.aclose()

    outcome, left = asyncio.run(asyncio.wait_for(work(), 20))
    assert not (outcome == "refused" and left == 0), (
        "the dead letter was removed by the hand-over and the worker refused (acknowledged) it"
    )


# --- 5. local store: a death between a dead letter and its settlement doubles the letter -------


def test_a_death_between_the_dead_letter_and_its_settlement_keeps_one_dead_letter(
    tmp_path: Any,
) -> None:
    """dispatch._run_workflow: dead_letters.add (one commit) then _settle (another). A
    process killed between them leaves the dead letter and an unsettled action; the process
    that takes the event over attempts it again and adds a second dead letter for the same
    action, and `flowlang replay STORE` then delivers it twice. Expected: one dead letter
    (add it and settle in one transaction)."""
    from flowlang.automations.store import LocalStore

    path = tmp_path / "s.db"
    first = LocalStore(path)
    real_settle = first.settle

    def dies_on_dead(event_id: str, workflow: str, action: str, outcome: str, result: Any) -> None:
        if outcome != "delivered":
            raise KeyboardInterrupt  # SIGKILL here: the dead letter is committed already
        real_settle(event_id, workflow, action, outcome, result)

    first.settle = dies_on_dead  # type: ignore[method-assign]

    def engine(store: LocalStore) -> Automations:
        return Automations(
            [load_workflow_text(ONE)],
            settings=DeliverySettings(schedule=(0,)),
            http=_Http(400),
            secrets=MappingSecrets({}),
            clock=FakeClock(),
            store=store,
            dead_letters=DeadLetterStore(store=store),
        )

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(
            engine(first).dispatch({"id": "evt-rt-3", "type": "call.ended", "properties": {}})
        )
    first.close()  # the process is gone: its owner lock with it
    second = LocalStore(path)
    try:
        asyncio.run(asyncio.wait_for(engine(second).resume(), 20))
        dead = second.counts()["dead"]
    finally:
        second.close()
    assert dead == 1, f"{dead} dead letters for one action"


# --- 6. a hostile store: a damaged ledger row is a traceback, not a clear error ----------------


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("UPDATE settled SET workflow = '{not json'", "settled"),
        ("UPDATE operations SET name = 'nope['", "operations"),
    ],
)
def test_a_damaged_ledger_row_is_reported_not_a_traceback(
    tmp_path: Any, statement: str, table: str
) -> None:
    """_open_event catches RecordError/KeyError/UnicodeEncodeError for the event, but the
    ledger rows go through json.loads (_value) unguarded: JSONDecodeError escapes
    take_over (and Automations(store=...), which calls it), a traceback. Expected: a
    problem on the OpenEvent or a StoreError naming the file."""
    import sqlite3

    from flowlang import StoreError
    from flowlang.automations.store import LocalStore

    path = tmp_path / "s.db"
    gone = LocalStore(path)
    assert gone.accept("evt-rt-4", {"id": "evt-rt-4", "type": "call.ended"}, 1000.0, 60.0)
    gone.settle("evt-rt-4", "redteam_one", "first", "delivered", {"ok": True})
    gone.operation("evt-rt-4", "op-key", "op-name")
    gone.close()
    raw = sqlite3.connect(path)
    raw.execute(statement)
    raw.commit()
    raw.close()
    taker = LocalStore(path)
    try:
        try:
            taken = taker.take_over()
        except StoreError:
            return
        assert taken and taken[0].problems, f"a damaged {table} row passed unnoticed"
    finally:
        taker.close()
