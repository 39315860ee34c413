"""Known defects of issue 13's code, found by a red-team review at the end of a session and
NOT yet fixed: each test states the behaviour the design promises and fails today.

This file is deliberately not collected (its name does not start with ``test_``): copy it to
``tests/test_known_defects_issue13.py`` to run the reproductions, fix the code until each
passes, then move each test next to the behaviour it checks and delete this file. The list,
with file:line and suggested fixes, is in issue 13's notes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from distributed_support import Kit
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import Automations, DeliverySettings, load_workflow_text
from flowlang.automations.dispatch import DeadLetterStore
from flowlang.distributed.replay import replay_all
from flowlang.http_rules import PreparedRequest
from flowlang.runtime.http import HttpResult

ONE = """\
workflow: redteam_one
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/first}
"""


# --- 3. two `flowlang replay redis://` at once send each dead letter twice --------------------


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


def test_two_shared_replays_at_once_send_a_dead_letter_once(kit: Kit) -> None:
    """The local replay holds <file>.replay.lock "so no record is delivered twice";
    replay_all (flowlang replay redis://) takes no lock nor claim and does not consult the
    ledger: two replays started together both deliver the same dead letter."""

    async def work() -> tuple[int, list[str]]:
        failing = _automations(_Http(400))
        async with failing:
            await failing.dispatch({"id": "evt-rt-1", "type": "call.ended", "properties": {}})
        (record,) = failing.dead_letters.records
        first_store, second_store = kit.store(), kit.store()
        http = _Http(200, delay=0.3)
        try:
            await first_store.add_dead(dict(record))
            one, two = _automations(http), _automations(http)
            async with one, two:
                await asyncio.gather(replay_all(one, first_store), replay_all(two, second_store))
            return await first_store.dead_count(), http.sent
        finally:
            await first_store.aclose()
            await second_store.aclose()

    left, sent = asyncio.run(asyncio.wait_for(work(), 20))
    assert left == 0
    assert len(sent) == 1, f"the dead letter was delivered {len(sent)} times by two replays"


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
