"""flowlang serve end to end: real uvicorn processes on loopback, driven by the simulated Twilio;
one process with the in-process store, two sharing Redis (one killed between two webhooks),
and a clean stop on SIGTERM with a webhook in flight."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowlang.automations.store import LocalStore
from tests.serve_process import ServeProcess, serve_arguments
from tests.serve_support import (
    EVENT_TOKEN,
    PUBLIC_URL,
    SECRETS,
    TWILIO_TOKEN,
    open_events,
    settled_actions,
    store_event,
    store_rows,
)
from tests.services import RedisServer
from tests.twilio_sim import Call, SimulatedTwilio, said_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(serve_arguments(tmp_path, "--events-store", str(tmp_path / "events.db")))
    try:
        yield server.start()
    finally:
        server.kill()


def _outcomes(server: ServeProcess) -> dict[str, str]:
    """Each action's outcome, by action name, as the server's /metrics counts them."""
    page = httpx.get(f"{server.url}/metrics", timeout=10, trust_env=False).text
    return {
        sample.labels["action"]: sample.labels["outcome"]
        for family in text_string_to_metric_families(page)
        if family.name == "flowlang_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value
    }


def _client(server: ServeProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=20, trust_env=False)


def test_one_process_serves_the_example_flows_and_stops_cleanly(
    one_server: ServeProcess, tmp_path: Path
) -> None:
    called: list[str] = []

    async def main() -> dict[str, Any]:
        async with _client(one_server) as client:
            twilio = SimulatedTwilio(client, PUBLIC_URL, TWILIO_TOKEN)
            verified = await twilio.call("account-verification", ["12345678#"], twice=True)
            assert "Your balance is 42.5 dollars" in said_text(verified)
            assert verified.differing_duplicates == []
            menu = await twilio.call("support-menu", ["3", "0"])
            assert (menu.ended_by, menu.target) == ("Enqueue", "operator")
            vip = await twilio.call("vip-routing", [], caller="+14155550100")
            assert vip.ended_by == "Enqueue"
            after = await twilio.call("after-hours", [])
            assert after.ended_by in ("Enqueue", "Record", "Dial")
            for call in (verified, menu, vip, after):
                assert all(status < 500 for status in call.statuses), call.statuses
                called.append(call.sid)
            event = {"id": "evt-e2e", "type": "contact.updated", "properties": {"name": "Ann"}}
            accepted = await client.post(
                "/events", json=event, headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
            )
            assert accepted.status_code == 202, accepted.text
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            page = (await client.get("/metrics")).text
            return {f.name: f for f in text_string_to_metric_families(page)}

    families = asyncio.run(main())
    started = families["flowlang_runs_started"]
    flows = {sample.labels.get("flow") for sample in started.samples}
    assert {"account-verification", "support-menu", "vip-routing", "after-hours"} <= flows
    assert one_server.terminate() == 0
    log = one_server.output()
    for secret in SECRETS.values():
        assert secret not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records, log
    assert all("level" in record and "event" in record for record in records)
    store = tmp_path / "events.db"
    for call in called:  # each call's end recorded once, and finished
        assert store_event(store, f"twilio:call.ended:{call}") == "done"
    assert store_event(store, "evt-e2e") == "done"
    assert open_events(store) == []


def test_sigterm_lets_a_webhook_in_flight_finish(tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(
        "flow: slow\nstart: look\nsteps:\n"
        "  look: {type: http_request, endpoint: 'https://crm.example.com/slow', method: GET,"
        " timeout: 5s, next: bye, on_failure: bye}\n"
        "  bye: {type: hangup}\n"
    )
    responses = tmp_path / "responses.yaml"
    responses.write_text(
        "- {request: GET https://crm.example.com/slow, status: 200, body: {}, delay: 1.5}\n"
    )
    server = ServeProcess(serve_arguments(tmp_path, files=[str(slow)]))
    server.arguments[server.arguments.index("--responses") + 1] = str(responses)
    server.start()
    try:

        async def main() -> httpx.Response:
            async with _client(server) as client:
                twilio = SimulatedTwilio(client, PUBLIC_URL, TWILIO_TOKEN)
                call = Call("CA" + secrets.token_hex(16))
                answer = asyncio.create_task(
                    twilio.post(f"{PUBLIC_URL}/voice/slow", twilio.fields(call))
                )
                await asyncio.sleep(0.5)
                stopping = asyncio.get_running_loop().run_in_executor(None, server.terminate)
                response = await answer
                assert await stopping == 0
                return response

        began = time.monotonic()
        response = asyncio.run(main())
        assert response.status_code == 200
        assert ElementTree.fromstring(response.content).find("Hangup") is not None
        assert time.monotonic() - began < 20
    finally:
        server.kill()


def test_two_processes_share_redis_and_a_call_outlives_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = f"fl-test-{secrets.token_hex(4)}:"
    common = ("--store", redis_server.url, "--key-prefix", prefix, "--state-key", "state_key")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ServeProcess(serve_arguments(tmp_path / "a", *common)).start()
    second = ServeProcess(serve_arguments(tmp_path / "b", *common)).start()
    try:

        async def main() -> None:
            async with _client(first) as a, _client(second) as b:
                both = SimulatedTwilio([a, b], PUBLIC_URL, TWILIO_TOKEN)
                # a call whose webhooks alternate between the two replicas
                moving = await both.call("support-menu", ["7", "*", "3", "0"], twice=True)
                assert (moving.ended_by, moving.target) == ("Enqueue", "operator")
                assert moving.differing_duplicates == []
                # an event sent to both replicas is taken once (its id is claimed in Redis)
                event = {"id": f"evt-{secrets.token_hex(4)}", "type": "contact.updated"}
                auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
                answers = [
                    await client.post("/events", json=event, headers=auth) for client in (a, b)
                ]
                assert [answer.status_code for answer in answers] == [202, 200]
                # replica A answers the first webhook, then dies; B finishes the call
                call = Call("CA" + secrets.token_hex(16))
                opening = await both.post(
                    f"{PUBLIC_URL}/voice/account-verification", both.fields(call), client=a
                )
                action = ElementTree.fromstring(opening.content).find("Gather").get("action")  # type: ignore[union-attr]
                first.kill()
                finish = await both.post(action, both.fields(call, Digits="12345678"), client=b)
                assert finish.status_code == 200
                assert "Your balance is 42.5 dollars" in finish.text
                # the same action again, now a duplicate: the same answer
                again = await both.post(action, both.fields(call, Digits="12345678"), client=b)
                assert again.text == finish.text

        asyncio.run(main())
    finally:
        first.kill()
        second.kill()


def test_an_event_answered_202_survives_a_sigkill(tmp_path: Path) -> None:
    """The event is in the store before the 202: a process killed right after it answered
    delivers nothing, and the next process on the same store takes it over and delivers it."""
    store = tmp_path / "events.db"
    slow = tmp_path / "slow"
    slow.mkdir()
    arguments = serve_arguments(slow, "--events-store", str(store))
    responses = Path(arguments[arguments.index("--responses") + 1])
    responses.write_text(responses.read_text().replace("status: 201", "status: 201\n  delay: 20"))
    first = ServeProcess(arguments).start()
    event = {
        "id": "evt-kill",
        "type": "call.ended",
        "properties": {"answered": False, "direction": "inbound", "name": "Ann",
                       "external_number": "+14155550123", "waiting_time": 3},
    }  # fmt: skip
    try:

        async def send() -> int:
            async with _client(first) as client:
                answer = await client.post(
                    "/events", json=event, headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
                )
                return answer.status_code

        assert asyncio.run(send()) == 202
        first.kill()
    finally:
        first.kill()
    assert [opened["id"] for opened in open_events(store)] == ["evt-kill"]
    assert set(settled_actions(store, "evt-kill").values()) <= {"delivered"}
    fast = tmp_path / "fast"
    fast.mkdir()
    second = ServeProcess(serve_arguments(fast, "--events-store", str(store))).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store_event(store, "evt-kill") != "done":
            time.sleep(0.05)
        assert store_event(store, "evt-kill") == "done", second.output()
        assert "resumed 1 unfinished events" in second.output()
        assert store_rows(store, "dead") == 0
        assert _outcomes(second) == {
            "log_in_crm": "delivered",
            "text_back": "delivered",
            "tell_team": "delivered",
        }
    finally:
        second.kill()


def test_two_servers_share_one_store_and_the_live_one_takes_over(tmp_path: Path) -> None:
    """Two `flowlang serve` processes on one events store (each its own in-process call
    store): an event sent to both is accepted once; the one holding an event is SIGKILLed
    while its delivery waits, and the other, still running, takes the event over and finishes
    it (its owner's lock went with the process) within its take-over interval."""
    store = tmp_path / "events.db"
    (tmp_path / "slow").mkdir()
    (tmp_path / "fast").mkdir()
    arguments = serve_arguments(tmp_path / "slow", "--events-store", str(store))
    responses = Path(arguments[arguments.index("--responses") + 1])
    responses.write_text(responses.read_text().replace("status: 201", "status: 201\n  delay: 20"))
    slow = ServeProcess(arguments).start()
    fast = ServeProcess(serve_arguments(tmp_path / "fast", "--events-store", str(store))).start()
    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
    event = {
        "id": "evt-shared",
        "type": "call.ended",
        "properties": {"answered": False, "direction": "inbound", "name": "Ann",
                       "external_number": "+14155550123", "waiting_time": 3},
    }  # fmt: skip
    try:

        async def send() -> list[int]:
            async with _client(slow) as a, _client(fast) as b:
                first = await a.post("/events", json=event, headers=auth)
                second = await b.post("/events", json=event, headers=auth)
                return [first.status_code, second.status_code]

        assert asyncio.run(send()) == [202, 200]  # one store: the second server knows it
        time.sleep(0.5)
        assert store_event(store, "evt-shared") == "open"  # the slow server is on it
        slow.kill()
        began = time.monotonic()
        while store_event(store, "evt-shared") != "done":
            assert time.monotonic() - began < 30, fast.output()
            time.sleep(0.1)
        assert "resumed 1 unfinished events" in fast.output()
        assert _outcomes(fast) == {
            "log_in_crm": "delivered",
            "text_back": "delivered",
            "tell_team": "delivered",
        }
        assert fast.terminate() == 0
        assert "Traceback" not in fast.output()
    finally:
        slow.kill()
        fast.kill()


# --- the events store locked by another process ---------------------------------------------


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's long write transaction (a sqlite3 shell, an import batch...)."""
    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_a_serving_process_answers_health_checks_while_another_holds_the_store(
    tmp_path: Path,
) -> None:
    """`flowlang serve --events-store`: a process on the store died with an open event, and
    another process (a sqlite3 shell, a deadletters import batch, a worker's long commit) holds
    the write lock. The periodic take-over (every 10 s) waits busy_timeout (5 s) for the store
    on the store's own thread, not on the event loop: /healthz answers throughout (red team:
    it waited 5 s when the take-over ran on the loop)."""
    path = tmp_path / "events.db"
    server = ServeProcess(serve_arguments(tmp_path, "--events-store", str(path))).start()
    blocker: sqlite3.Connection | None = None
    try:
        gone = LocalStore(path)
        orphan = {"id": "orphan-1", "type": "contact.updated", "properties": {"name": "Ann"}}
        assert gone.accept("orphan-1", orphan, time.time(), 3600.0)
        gone.close()  # its process died: the next take-over looks at it
        blocker = hold_write_lock(path)
        worst = 0.0
        deadline = time.monotonic() + 14.0  # more than one takeover_interval (10 s)
        with httpx.Client(base_url=server.url, timeout=20, trust_env=False) as client:
            for _ in range(200):  # bounded: 200 checks or 14 s
                if time.monotonic() > deadline:
                    break
                before = time.monotonic()
                assert client.get("/healthz").status_code == 200
                worst = max(worst, time.monotonic() - before)
                time.sleep(0.05)
        assert worst < 2.0, f"/healthz waited {worst:.1f} s: the event loop stood still"
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
        server.kill()


def test_events_sent_while_the_store_is_locked_get_503_in_bounded_time(tmp_path: Path) -> None:
    """The store locked by another process: each recording holds one of the store's own
    threads (store_threads, 4) for busy_timeout (5 s); the events waiting for a thread when
    those fail are answered 503 then, so the 24 events sent at once all have their 503 within
    about busy_timeout (red team: they queued in asyncio's default pool, which DNS look-ups
    share, each pool-full waiting busy_timeout in turn: the last after 20 s)."""

    path = tmp_path / "events.db"
    server = ServeProcess(serve_arguments(tmp_path, "--events-store", str(path))).start()
    blocker: sqlite3.Connection | None = None
    try:
        blocker = hold_write_lock(path)

        async def send_all() -> tuple[list[int], float]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=60, trust_env=False, limits=limits
            ) as client:

                async def one(number: int) -> int:
                    event = {"id": f"locked-{number}", "type": "contact.updated", "properties": {}}
                    answer = await client.post(
                        "/events", json=event, headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
                    )
                    return answer.status_code

                before = time.monotonic()
                statuses = await asyncio.gather(*(one(number) for number in range(24)))
                return list(statuses), time.monotonic() - before

        statuses, seconds = asyncio.run(asyncio.wait_for(send_all(), 90))
        assert set(statuses) == {503}, statuses
        assert seconds < 10.0, f"the last 503 came after {seconds:.1f} s (busy_timeout is 5 s)"
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
        server.kill()
