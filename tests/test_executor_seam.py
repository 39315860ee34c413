"""The executor seam (issue 13, item 1): one delivery attempt as data (Delivered, RetryAt, Dead)
against a loopback HTTPS server, outcomes and tasks through JSON, and executors deciding when a
retry runs (the local one sleeping on the clock as before; one that hands a retry away)."""

from __future__ import annotations

import json
import math
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from distributed_support import WORKFLOW, run
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import Server
from support import NOW, FakeClock

from flowlang import MappingSecrets
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    LocalStore,
    load_workflow_text,
)
from flowlang.automations.dispatch import Attempt, Delivery, idempotency_key
from flowlang.automations.executor import (
    MAX_ERROR,
    AttemptOutcome,
    AttemptTask,
    Dead,
    Delivered,
    LocalExecutor,
    RetryAt,
    outcome_from_json,
)

SECRET = "crm-token-9f2e-secret"
SCHEDULE = (0, 5, 300, 1800)

EVENT = {"id": "evt-7", "type": "call.ended", "properties": {"name": "Ann"}}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make(
    server: Server,
    *,
    port: int | None = None,
    clock: FakeClock | None = None,
    store: LocalStore | None = None,
    executor: Any = None,
    told: list[Attempt] | None = None,
    dead_letters: DeadLetterStore | None = None,
    http: Any = None,
) -> Automations:
    """Automations of WORKFLOW against ``server`` (or ``port``), without jitter."""
    text = WORKFLOW.replace("{port}", str(port or server.port))

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    return Automations(
        [load_workflow_text(text)],
        settings=DeliverySettings(
            allow_hosts=frozenset({"crm.test"}), schedule=SCHEDULE, jitter=0.0
        ),
        ssl_context=server.client_ssl_context(),
        resolver=resolver,
        secrets=MappingSecrets({"crm_token": SECRET}),
        clock=clock or FakeClock(),
        store=store,
        executor=executor,
        on_attempt=told.append if told is not None else None,
        dead_letters=dead_letters,
        http=http,
    )


def attempt(automations: Automations, number: int = 1) -> AttemptOutcome:
    """Attempt number ``number`` of the first action for EVENT, alone."""

    async def main() -> AttemptOutcome:
        async with automations:
            workflow = automations.workflows[0]
            scope, redactor = automations.attempt_scope(EVENT, {})
            return await automations.attempt_once(
                workflow, workflow.actions[0], scope, number, redactor
            )

    return run(main)


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


# --- one attempt ------------------------------------------------------------------------------


def test_a_2xx_is_delivered_with_its_result_and_reported(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 42}))
    told: list[Attempt] = []
    outcome = attempt(make(server, told=told))
    assert outcome == Delivered({"id": 42})
    assert told == [Attempt("evt-7", "sync", "post", 1, "delivered")]
    [request] = server.received.to("crm")
    assert request["headers"]["idempotency-key"] == idempotency_key("evt-7", "sync", "post")


def test_a_503_is_retried_at_the_next_time_on_the_schedule(server: Server) -> None:
    server.received.script("crm", (503, {}, {}))
    told: list[Attempt] = []
    outcome = attempt(make(server, told=told))
    assert isinstance(outcome, RetryAt)
    assert (outcome.at, outcome.wait) == (NOW + 5, 5)
    assert "503" in outcome.error
    assert told == [Attempt("evt-7", "sync", "post", 1, "retry", outcome.error, 5)]


def test_the_attempt_number_picks_the_wait_from_the_schedule(server: Server) -> None:
    server.received.script("crm", (503, {}, {}))
    outcome = attempt(make(server), number=3)
    assert isinstance(outcome, RetryAt) and (outcome.at, outcome.wait) == (NOW + 1800, 1800)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        pytest.param({"Retry-After": "120"}, 120, id="retry-after-seconds-honoured"),
        pytest.param({}, 60, id="without-retry-after-at-least-a-minute"),
        pytest.param({"Retry-After": "soon"}, 60, id="nonsense-retry-after-ignored"),
        pytest.param({"Retry-After": "99999999"}, 36000, id="retry-after-capped"),
    ],
)
def test_a_429_waits_for_retry_after_and_at_least_a_minute(
    server: Server, headers: dict[str, str], wait: float
) -> None:
    server.received.script("crm", (429, headers, {}))
    outcome = attempt(make(server))
    assert isinstance(outcome, RetryAt)
    assert (outcome.at, outcome.wait) == (NOW + wait, wait)


def test_a_refused_connection_is_retried_and_its_error_shows_no_secret(server: Server) -> None:
    outcome = attempt(make(server, port=closed_port()))
    assert isinstance(outcome, RetryAt) and (outcome.at, outcome.wait) == (NOW + 5, 5)
    assert outcome.error and SECRET not in json.dumps(outcome.to_json())


def test_a_400_is_dead_at_once(server: Server) -> None:
    server.received.script("crm", (400, {}, {"error": f"bad token {SECRET}"}))
    told: list[Attempt] = []
    outcome = attempt(make(server, told=told))
    assert isinstance(outcome, Dead) and outcome.outcome == "failed"
    assert "400" in outcome.error and SECRET not in json.dumps(outcome.to_json())
    assert [(a.number, a.outcome, a.retry_in) for a in told] == [(1, "failed", None)]


def test_a_retryable_failure_on_the_last_attempt_is_dead(server: Server) -> None:
    server.received.script("crm", (503, {}, {}))
    outcome = attempt(make(server), number=len(SCHEDULE))
    assert isinstance(outcome, Dead) and outcome.outcome == "exhausted" and "503" in outcome.error


def test_an_unexpected_exception_is_a_retryable_failure(server: Server) -> None:
    class Broken:
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"the sender broke near {SECRET}")

    outcome = attempt(make(server, http=Broken()))
    assert isinstance(outcome, RetryAt) and (outcome.at, outcome.wait) == (NOW + 5, 5)
    assert "unexpected error: RuntimeError: the sender broke" in outcome.error
    assert SECRET not in outcome.error


# --- outcomes and tasks as JSON -------------------------------------------------------------

OUTCOMES = [
    Delivered({"id": 42, "tags": ["a", None, 1.5, True]}),
    Delivered(None),
    RetryAt(NOW + 120, "post: HTTP 429", 120.0),
    RetryAt(NOW, "", 0.0),
    Dead("failed", "post: HTTP 400"),
    Dead("exhausted", "post: HTTP 503"),
]


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: f"{o.kind}")
def test_outcomes_round_trip_through_json(outcome: AttemptOutcome) -> None:
    assert outcome_from_json(through_json(outcome.to_json())) == outcome


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
times = st.floats(min_value=0, max_value=2**40, allow_nan=False)
outcomes = st.one_of(
    st.builds(Delivered, json_values),
    st.builds(RetryAt, times, st.text(max_size=200), times),
    st.builds(Dead, st.sampled_from(["failed", "exhausted"]), st.text(max_size=200)),
)


@settings(max_examples=200, deadline=None)
@given(outcomes)
def test_any_outcome_round_trips_through_json(outcome: AttemptOutcome) -> None:
    assert outcome_from_json(through_json(outcome.to_json())) == outcome


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "at", "wait", "error", "outcome"]), json_values))
def test_any_other_data_is_an_outcome_or_a_value_error(data: dict[str, Any]) -> None:
    for kind in (None, "delivered", "retry_at", "dead"):
        candidate = data if kind is None else {**data, "kind": kind}
        try:
            outcome = outcome_from_json(candidate)
        except ValueError as error:
            assert str(error).startswith("its ")
        else:
            assert outcome_from_json(through_json(outcome.to_json())) == outcome


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param([], "an attempt outcome is not a JSON object (list)", id="not-an-object"),
        pytest.param({"kind": "later"}, "its kind is not", id="unknown-kind"),
        pytest.param(
            {"kind": "retry_at", "at": math.nan, "error": "", "wait": 1},
            "its at is not a time",
            id="nan-time",
        ),
        pytest.param(
            {"kind": "retry_at", "at": 10**400, "error": "", "wait": 1},
            "its at is not a time",
            id="huge-time",
        ),
        pytest.param(
            {"kind": "retry_at", "at": True, "error": "", "wait": 1},
            "its at is not a time",
            id="bool-time",
        ),
        pytest.param(
            {"kind": "retry_at", "at": "1", "error": "", "wait": 1},
            "its at is not a time",
            id="text-time",
        ),
        pytest.param(
            {"kind": "retry_at", "at": 1, "error": "", "wait": -1},
            "its wait is negative",
            id="negative-wait",
        ),
        pytest.param(
            {"kind": "retry_at", "at": 1, "error": 5, "wait": 1},
            "its error is not text",
            id="error-not-text",
        ),
        pytest.param(
            {"kind": "dead", "outcome": "failed", "error": "x" * (MAX_ERROR + 1)},
            "longer than",
            id="huge-error",
        ),
        pytest.param(
            {"kind": "dead", "outcome": "lost", "error": ""},
            "its outcome is not",
            id="unknown-dead-outcome",
        ),
        pytest.param(
            {"kind": "dead", "outcome": "failed", "error": "\udcff"},
            None,
            id="lone-surrogate-is-still-text",
        ),
    ],
)
def test_malformed_outcomes_are_refused_clearly(data: Any, message: str | None) -> None:
    if message is None:
        assert outcome_from_json(data) == Dead("failed", "\udcff")
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        outcome_from_json(data)


def test_tasks_round_trip_and_refuse_what_they_cannot_be() -> None:
    task = AttemptTask("evt-7", "sync", "post", 2, NOW + 5, "k" * 32)
    assert AttemptTask.from_json(through_json(task.to_json())) == task
    assert task.retry(RetryAt(NOW + 300, "x", 295)) == AttemptTask(
        "evt-7", "sync", "post", 3, NOW + 300, "k" * 32
    )
    for change, message in [
        ({"number": 0}, "its number"),
        ({"number": 2.0}, "its number"),
        ({"number": 10**30}, "its number"),
        ({"due": math.inf}, "its due is not a time"),
        ({"event_id": ""}, "its event_id is not text"),
        ({"workflow": None}, "its workflow is not text"),
        ({"key": "k" * 5000}, "its key is longer than"),
    ]:
        with pytest.raises(ValueError, match=message):
            AttemptTask.from_json(task.to_json() | change)
    with pytest.raises(ValueError, match="an attempt task is not a JSON object"):
        AttemptTask.from_json("evt-7")


# --- executors ------------------------------------------------------------------------------


def test_the_local_executor_sleeps_on_the_clock_until_the_task_is_due() -> None:
    clock = FakeClock()
    executor = LocalExecutor(clock)
    task = AttemptTask("e", "w", "a", 2, NOW + 7.5, "k")
    late = AttemptTask("e", "w", "a", 3, NOW - 100, "k")
    assert run(lambda: executor.schedule(task)) is True
    assert run(lambda: executor.schedule(late)) is True
    assert clock.waits == [7.5, 0.0] and clock.current == NOW + 7.5


def test_local_delivery_of_503_429_200_is_as_before(server: Server, tmp_path: Path) -> None:
    """The default executor: three attempts, waits of 5 s and Retry-After's 600 s on the fake
    clock, one idempotency key, and the same store records, deliveries and reports as before."""
    server.received.script(
        "crm", (503, {}, {}), (429, {"Retry-After": "600"}, {}), (201, {}, {"id": 9})
    )
    clock, told = FakeClock(), []
    path = tmp_path / "store.db"
    store = LocalStore(path)
    settled: list[tuple[Any, ...]] = []
    real_settle = store.settle

    def settle(*args: Any) -> None:
        settled.append(args)
        real_settle(*args)

    store.settle = settle  # type: ignore[method-assign]
    automations = make(server, clock=clock, store=store, told=told)
    assert isinstance(automations.executor, LocalExecutor)

    async def main() -> Any:
        async with automations:
            return await automations.dispatch(EVENT)

    result = run(main)
    assert result.deliveries == [
        Delivery("sync", "post", "delivered", 3, None, {"id": 9}),
        Delivery("sync", "after", "delivered", 1, None, {}),
    ]
    assert clock.waits == pytest.approx([5, 600], abs=1e-6)  # Retry-After beats the 300 s due
    assert [(a.action, a.number, a.outcome, a.retry_in) for a in told] == [
        ("post", 1, "retry", 5),
        ("post", 2, "retry", 600),
        ("post", 3, "delivered", None),
        ("after", 1, "delivered", None),
    ]
    assert len({r["headers"]["idempotency-key"] for r in server.received.to("crm")}) == 1
    assert settled == [
        ("evt-7", "sync", "post", "delivered", {"id": 9}),
        ("evt-7", "sync", "after", "delivered", {}),
    ]
    counts = store.counts()
    store.close()
    assert counts["events"] == 1 and counts["open"] == counts["settled"] == counts["retries"] == 0
    written = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.is_file())
    assert SECRET.encode() not in written


class HandingOff:
    """An executor that hands every retry to someone else (as a distributed one would)."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    async def schedule(self, task: AttemptTask) -> bool:
        self.tasks.append(through_json(task.to_json()))
        return False


def test_a_retry_handed_away_is_data_and_stays_unsettled_for_the_next_run(
    server: Server, tmp_path: Path
) -> None:
    server.received.script("crm", (503, {}, {}), (201, {}, {"id": 3}))
    clock, executor = FakeClock(), HandingOff()
    path = tmp_path / "store.db"
    local = LocalStore(path)
    store = DeadLetterStore()
    first = make(server, clock=clock, store=local, executor=executor, dead_letters=store)

    async def dispatch() -> Any:
        async with first:
            return await first.dispatch(EVENT)

    result = run(dispatch)
    assert result.deliveries == [
        Delivery("sync", "post", "scheduled", 1, result.deliveries[0].error)
    ]
    assert "503" in str(result.deliveries[0].error)
    key = idempotency_key("evt-7", "sync", "post")
    assert executor.tasks == [
        {
            "event_id": "evt-7",
            "workflow": "sync",
            "action": "post",
            "number": 2,
            "due": NOW + 5,
            "key": key,
        }
    ]
    assert clock.waits == [] and store.records == [] and server.received.to("after") == []
    counts = local.counts()  # nothing settled, not done: the next run resumes it
    assert counts["open"] == 1 and counts["settled"] == 0
    assert counts["retries"] == 1 and local.retry_of("evt-7", key) == (2, NOW + 5)
    local.close()  # the process ends: the next one takes the event over

    again_store = LocalStore(path)
    again = make(server, clock=clock, store=again_store)

    async def resume() -> Any:
        async with again:
            return await again.resume()

    [resumed] = run(resume)
    assert again_store.counts()["open"] == 0
    again_store.close()
    assert [(d.action, d.outcome, d.attempts) for d in resumed.deliveries] == [
        ("post", "delivered", 2),  # the recorded attempt, waited for: it was due in 5 s
        ("after", "delivered", 1),
    ]
    assert clock.waits == [5.0]
    assert {r["headers"]["idempotency-key"] for r in server.received.to("crm")} == {key}
