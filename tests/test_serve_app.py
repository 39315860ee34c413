"""flowlang serve in this process (httpx.ASGITransport): the example flows driven to their end by
a simulated Twilio, duplicates, callbacks into automations, signatures, and hostile requests."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from flowlang import load_flow_text
from flowlang.cli import main as cli_main
from flowlang.errors import StoreError
from flowlang.serve.calls import MemoryCallStore
from flowlang.serve.signatures import standard_webhook_signature
from tests.serve_support import (
    EVENT_SECRET,
    EVENT_TOKEN,
    PUBLIC_URL,
    ROOT,
    SECRETS,
    TWILIO_TOKEN,
    example_workflows,
    open_events,
    recorded,
    serving,
    settings,
    store_event,
    store_rows,
)
from tests.twilio_sim import SimulatedTwilio, said_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def requests_to(http: Any, fragment: str) -> int:
    return sum(1 for request in http.requests if fragment in request.url)


# --- the example flows, end to end -----------------------------------------------------------


def test_account_verification_runs_to_its_end() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("account-verification", ["12345678#"])
            assert call.gathers[0]["numDigits"] == "8"
            assert call.gathers[0]["finishOnKey"] == "#"
            assert call.gathers[0]["timeout"] == "5"
            assert "Please enter your eight digit account number" in said_text(call)
            assert "Your balance is 42.5 dollars" in said_text(call)
            assert call.ended_by == "Hangup"
            assert set(call.statuses) <= {200, 204}, call.statuses
            assert requests_to(served.http, "/verify") == 1
            assert await served.server.store.get(call.sid) is None  # the status callback

    run(main())


def test_invalid_digits_go_to_the_billing_queue() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("account-verification", ["12ab#"])
            assert "That is not a valid account number." in said_text(call)
            assert (call.ended_by, call.target) == ("Enqueue", "billing")

    run(main())


def test_no_input_takes_the_no_input_edge() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("account-verification", [None])
            assert (call.ended_by, call.target) == ("Enqueue", "billing")

    run(main())


def test_support_menu_retries_then_the_ticket_status() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("support-menu", ["7", "*", "3", "0"])
            text = said_text(call)
            assert "Sorry, that is not one of the options." in text
            assert len(call.gathers) == 4
            assert all(gather["numDigits"] == "1" for gather in call.gathers)
            assert (call.ended_by, call.target) == ("Enqueue", "operator")

    run(main())


def test_support_menu_plays_the_tech_menu() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("support-menu", ["2", "1"])
            assert call.played == ["https://media.example.com/acme/tech-menu.mp3"]
            assert (call.ended_by, call.target) == ("Enqueue", "internet")

    run(main())


def test_vip_routing_transfers_by_the_crm() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("vip-routing", [], caller="+14155550100")
            assert call.ended_by == "Enqueue"
            assert call.target in ("vip", "main")

    run(main())


def test_after_hours_records_a_voicemail_that_becomes_an_event(tmp_path: Path) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            call = await served.twilio.call("after-hours", [])
            assert "Our office is closed." in said_text(call)
            assert call.ended_by == "Record"
            assert call.target == "brno-after-hours"
        events = served.accepted
        assert {e["type"] for e in events} == {"recording.uploaded", "call.ended"}
        for event in events:  # each recorded in the store, and finished
            assert store_event(store, event["id"]) == "done"
        uploaded = next(e for e in events if e["type"] == "recording.uploaded")
        assert uploaded["properties"]["mailbox"] == "brno-after-hours"
        assert uploaded["properties"]["duration"] == 31
        assert uploaded["properties"]["direction"] == "inbound"
        assert uploaded["properties"]["call_id"] == call.sid

    run(main())


# --- duplicates and concurrency ------------------------------------------------------------


def test_every_webhook_sent_twice_gets_the_same_answer_and_runs_once() -> None:
    async def main() -> None:
        async with serving() as served:
            call = await served.twilio.call("account-verification", ["12345678#"], twice=True)
            assert call.differing_duplicates == []
            assert "Your balance is 42.5 dollars" in said_text(call)
            assert requests_to(served.http, "/verify") == 1

    run(main())


def test_concurrent_copies_of_a_gather_action_advance_the_run_once() -> None:
    async def main() -> None:
        async with serving() as served:
            twilio = served.twilio
            sid = "CA" + "1" * 32
            first = await twilio.post(
                f"{PUBLIC_URL}/voice/account-verification", twilio.fields(_call(sid))
            )
            action = ElementTree.fromstring(first.content).find("Gather").get("action")  # type: ignore[union-attr]
            params = twilio.fields(_call(sid), Digits="12345678")
            answers = await asyncio.gather(*(twilio.post(action, params) for _ in range(8)))
            assert {answer.status_code for answer in answers} == {200}
            assert len({answer.text for answer in answers}) == 1
            assert requests_to(served.http, "/verify") == 1

    run(main())


def _call(sid: str) -> Any:
    from tests.twilio_sim import Call

    return Call(sid)


# --- callbacks into automations ------------------------------------------------------------


def test_a_missed_call_runs_the_missed_call_workflow(tmp_path: Path) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            call = await served.twilio.call("account-verification", [None], agent_answers=False)
            await asyncio.wait_for(_settled(served.server), 10)
            assert requests_to(served.http, "sms.example.com") == 1
            ended = [e for e in served.accepted if e["type"] == "call.ended"]
            assert store_event(store, ended[0]["id"]) == "done"
            assert len(ended) == 1
            properties = ended[0]["properties"]
            assert properties["call_id"] == call.sid
            assert properties["answered"] is False
            assert properties["direction"] == "inbound"
            assert properties["external_number"] == "+14155550123"
            assert properties["ended_by"] == "transfer"
            assert properties["target"] == "queue:billing"
            assert properties["duration"] == 42

    run(main())


def test_an_answered_call_carries_its_queue_time(tmp_path: Path) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            await served.twilio.call("account-verification", [None], agent_answers=True)
            await asyncio.wait_for(_settled(served.server), 10)
            (ended,) = [e for e in served.accepted if e["type"] == "call.ended"]
            assert ended["properties"]["answered"] is True
            assert ended["properties"]["waiting_time"] == 7
            assert requests_to(served.http, "sms.example.com") == 0  # not a missed call

    run(main())


def test_a_status_callback_delivered_twice_is_one_event(tmp_path: Path) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            call = await served.twilio.call("account-verification", [None], agent_answers=False)
            await served.twilio.status(call, "completed", duration="42")
            await asyncio.wait_for(_settled(served.server), 10)
            assert len([e for e in served.accepted if e["type"] == "call.ended"]) == 1
            assert store_rows(store, "events") == 1
            assert requests_to(served.http, "sms.example.com") == 1

    run(main())


async def _settled(server: Any) -> None:
    while server.intake._tasks:
        await asyncio.sleep(0.01)


# --- signatures ------------------------------------------------------------------------------


def test_unsigned_forged_and_tampered_webhooks_are_refused() -> None:
    async def main() -> None:
        async with serving() as served:
            twilio, client = served.twilio, served.client
            url = f"{PUBLIC_URL}/voice/account-verification"
            fields = twilio.fields(_call("CA" + "2" * 32))
            forged = SimulatedTwilio(client, PUBLIC_URL, "not-the-token")
            assert (await forged.post(url, fields)).status_code == 403
            other_host = SimulatedTwilio(client, "https://attacker.example.net", TWILIO_TOKEN)
            assert (
                await other_host.post(
                    url.replace(PUBLIC_URL, "https://attacker.example.net"), fields
                )
            ).status_code == 403
            unsigned = await client.post("/voice/account-verification", data=dict(fields))
            assert unsigned.status_code == 403
            ok = await twilio.post(url, fields)
            assert ok.status_code == 200
            # the digits changed after signing: the signature no longer matches
            action = ElementTree.fromstring(ok.content).find("Gather").get("action")  # type: ignore[union-attr]
            signed = twilio.fields(_call("CA" + "2" * 32), Digits="11111111")
            from tests.twilio_sim import twilio_signature

            signature = twilio_signature(TWILIO_TOKEN, action, signed)
            tampered = dict(signed) | {"Digits": "22222222"}
            path = action.replace(PUBLIC_URL, "")
            answer = await client.post(
                path, data=tampered, headers={"X-Twilio-Signature": signature}
            )
            assert answer.status_code == 403
            # the seq in the signed URL cannot be changed either
            answer = await client.post(
                path.replace("seq=1", "seq=2"),
                data=dict(signed),
                headers={"X-Twilio-Signature": signature},
            )
            assert answer.status_code == 403
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200

    run(main())


def test_a_rotated_token_still_verifies() -> None:
    async def main() -> None:
        secrets = {"twilio_new": "new-token-000000", "twilio_token": TWILIO_TOKEN}
        async with serving(
            settings=settings(twilio_keys=("twilio_new", "twilio_token")), secrets=secrets | _rest()
        ) as served:
            old = await served.twilio.post(
                f"{PUBLIC_URL}/voice/vip-routing", served.twilio.fields(_call("CA" + "3" * 32))
            )
            assert old.status_code == 200
            new = SimulatedTwilio(served.client, PUBLIC_URL, "new-token-000000")
            fresh = await new.post(
                f"{PUBLIC_URL}/voice/vip-routing", new.fields(_call("CA" + "4" * 32))
            )
            assert fresh.status_code == 200

    run(main())


def _rest() -> dict[str, str]:
    from tests.serve_support import SECRETS

    return {k: v for k, v in SECRETS.items() if k != "twilio_token"}


# --- hostile requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/voice/account-verification", b"From=%2B1", 400),  # no CallSid
        ("/voice/account-verification", b"CallSid=CA%0Abad", 400),
        ("/voice/account-verification?seq=abc", b"CallSid=CA1", 400),
        ("/voice/account-verification?seq=99999999999", b"CallSid=CA1", 400),
        ("/voice/no-such-flow", b"CallSid=CA1", 200),  # the apology: Twilio plays no 4xx TwiML
        ("/voice/account-verification", b"CallSid=CA1&x=\xff\xfe", 400),  # not UTF-8
        ("/voice/account-verification", b"a=" + b"x" * 70_000, 413),
        ("/voice/account-verification", b"&".join(b"f%d=1" % i for i in range(500)), 400),
    ],
)
def test_malformed_webhooks_get_a_clear_4xx(path: str, body: bytes, status: int) -> None:
    async def main() -> None:
        async with serving(settings=settings(signatures=False)) as served:
            answer = await served.client.post(
                path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
            assert answer.status_code == status, answer.text
            assert "Traceback" not in answer.text

    run(main())


def test_a_gather_action_for_an_unknown_call_gets_the_apology() -> None:
    async def main() -> None:
        async with serving() as served:
            twilio = served.twilio
            answer = await twilio.post(
                f"{PUBLIC_URL}/voice/account-verification?seq=1",
                twilio.fields(_call("CA" + "5" * 32), Digits="1"),
            )
            assert answer.status_code == 200
            document = ElementTree.fromstring(answer.content)
            assert document.find("Say").text == settings().apology  # type: ignore[union-attr]
            assert document.find("Enqueue").text == "operator"  # type: ignore[union-attr]

    run(main())


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.one_of(st.none(), st.text(alphabet="0123456789*#", max_size=300), st.text(max_size=40)),
        max_size=6,
    )
)
def test_random_digits_never_give_a_server_error(digits: list[str | None]) -> None:
    async def main() -> None:
        async with serving() as served:
            for flow in ("account-verification", "support-menu"):
                call = await served.twilio.call(flow, digits, status_callback=True)
                assert all(status < 500 for status in call.statuses), call.statuses

    run(main())


def test_hostile_contact_data_cannot_inject_markup() -> None:
    text = 'flow: inject\nstart: hello\nsteps:\n  hello: {type: say, text: "<<call.caller_name>>", next: ask}\n  ask: {type: collect_input, prompt: "<<call.caller_name>>", next: bye, on_no_input: bye}\n  bye: {type: hangup}\n'
    flow = load_flow_text(text)

    async def main() -> None:
        async with serving([flow]) as served:
            twilio = served.twilio
            hostile = "</Say><Dial><Number>+19005550000</Number></Dial><Say>]]>&amp;\x07"
            answer = await twilio.post(
                f"{PUBLIC_URL}/voice/inject",
                twilio.fields(_call("CA" + "6" * 32), CallerName=hostile),
            )
            document = ElementTree.fromstring(answer.content)
            assert [child.tag for child in document] == ["Say", "Gather"]
            assert document.find("Dial") is None and document.find(".//Dial") is None
            assert "</Say><Dial>" in document.find("Say").text  # type: ignore[operator, union-attr]

    run(main())


# --- flow versions -----------------------------------------------------------------------------


def test_a_call_finishes_on_the_version_it_started_on_after_a_redeploy() -> None:
    old = "flow: versions\nstart: ask\nsteps:\n  ask: {type: collect_input, prompt: Enter a digit., max_digits: 1, next: done, on_no_input: done}\n  done: {type: say, text: Old version., next: bye}\n  bye: {type: hangup}\n"
    new = old.replace("Old version.", "New version.")

    async def main() -> None:
        shared = settings(state_keys=("state_key",))
        store = MemoryCallStore()
        async with serving([load_flow_text(old)], store=store, settings=shared) as served:
            twilio = served.twilio
            first = await twilio.post(
                f"{PUBLIC_URL}/voice/versions", twilio.fields(_call("CA" + "8" * 32))
            )
            action = ElementTree.fromstring(first.content).find("Gather").get("action")  # type: ignore[union-attr]
        async with serving([load_flow_text(new)], store=store, settings=shared) as served:
            twilio = served.twilio
            answer = await twilio.post(action, twilio.fields(_call("CA" + "8" * 32), Digits="1"))
            assert ElementTree.fromstring(answer.content).find("Say").text == "Old version."  # type: ignore[union-attr]
            fresh = await twilio.call("versions", ["1"])
            assert "New version." in said_text(fresh)

    run(main())


# --- events ------------------------------------------------------------------------------------


def _event(event_id: str = "evt-1") -> bytes:
    return json.dumps(
        {"id": event_id, "type": "contact.updated", "properties": {"name": "Ann", "tags": ["Vip"]}}
    ).encode()


def test_events_need_a_token_or_a_signature(tmp_path: Path) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            client = served.client
            assert (await client.post("/events", content=_event())).status_code == 401
            wrong = await client.post(
                "/events", content=_event(), headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            ok = await client.post(
                "/events", content=_event(), headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
            )
            assert ok.status_code == 202, ok.text
            # recorded before the answer: the store has it now (another connection sees it)
            assert store_event(store, "evt-1") in ("open", "done")
            assert store_rows(store, "events") == 1
            again = await client.post(
                "/events", content=_event(), headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
            )
            assert (again.status_code, again.json()) == (200, {"result": "duplicate"})
            body = _event("evt-2")
            stamp = int(time.time())
            signature = standard_webhook_signature(EVENT_SECRET, "msg-2", stamp, body)
            headers = {
                "webhook-id": "msg-2",
                "webhook-timestamp": str(stamp),
                "webhook-signature": signature,
            }
            assert (await client.post("/events", content=body, headers=headers)).status_code == 202
            stale = {**headers, "webhook-timestamp": str(stamp - 3600)}
            assert (await client.post("/events", content=body, headers=stale)).status_code == 401
            tampered = await client.post("/events", content=body + b" ", headers=headers)
            assert tampered.status_code == 401
            assert EVENT_TOKEN not in tampered.text and EVENT_SECRET not in tampered.text

    run(main())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"type": "contact.updated"}', 400),  # no id
        (b'{"id": "x"}', 400),  # no type
        (b'{"id": "deep", "type": "t", "properties": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        (b'{"id": "big", "type": "t", "p": "' + b"x" * 300_000 + b'"}', 413),
        (b"\xff\xfe{}", 400),
    ],
)
def test_hostile_events_are_refused_with_a_reason(body: bytes, status: int) -> None:
    async def main() -> None:
        async with serving(workflows=example_workflows()) as served:
            answer = await served.client.post(
                "/events", content=body, headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
            )
            assert answer.status_code == status, answer.text
            assert "error" in answer.json()

    run(main())


def test_events_are_not_taken_without_credentials_configured() -> None:
    async def main() -> None:
        async with serving(settings=settings(event_tokens=(), event_secrets=())) as served:
            answer = await served.client.post("/events", content=_event())
            assert answer.status_code == 404

    run(main())


def test_an_accepted_event_survives_the_process(tmp_path: Path) -> None:
    """An event answered 202 and not yet delivered is delivered by the next process."""
    store = tmp_path / "events.db"
    slow = recorded()
    for key, response in list(slow.responses.items()):
        slow.responses[key] = dataclasses.replace(response, delay=30.0)

    async def first() -> None:
        async with serving(
            workflows=example_workflows(),
            events_store=store,
            http=slow,
            settings=settings(drain_timeout=0.2),
        ) as served:
            ok = await served.client.post(
                "/events",
                content=_missed("evt-survives"),
                headers={"Authorization": f"Bearer {EVENT_TOKEN}"},
            )
            assert ok.status_code == 202

    async def second() -> None:
        async with serving(workflows=example_workflows(), events_store=store) as served:
            await asyncio.sleep(0)
            await asyncio.wait_for(_settled(served.server), 10)
            assert requests_to(served.http, "sms.example.com") == 1

    run(first())
    assert [event["id"] for event in open_events(store)] == ["evt-survives"]
    run(second())
    assert store_event(store, "evt-survives") == "done"


def test_a_running_server_takes_over_the_events_a_stopped_one_left(tmp_path: Path) -> None:
    """Two servers on one store: the events the first accepted and did not finish are taken
    over by the second, which was running already (within takeover_interval), once."""
    store = tmp_path / "events.db"
    slow = recorded()
    for key, response in list(slow.responses.items()):
        slow.responses[key] = dataclasses.replace(response, delay=30.0)
    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}

    async def main() -> None:
        async with serving(
            workflows=example_workflows(),
            events_store=store,
            settings=settings(takeover_interval=0.1),
        ) as running:
            async with serving(
                workflows=example_workflows(),
                events_store=store,
                http=slow,
                settings=settings(drain_timeout=0.1),
            ) as leaving:
                answer = await leaving.client.post(
                    "/events", content=_missed("evt-left"), headers=auth
                )
                assert answer.status_code == 202
                again = await running.client.post(
                    "/events", content=_missed("evt-left"), headers=auth
                )  # one store: the other server knows it
                assert again.json() == {"result": "duplicate"}
                await asyncio.sleep(0.3)  # the leaving server is alive: not taken over
                assert requests_to(running.http, "sms.example.com") == 0
            deadline = time.monotonic() + 10
            while store_event(store, "evt-left") != "done":
                assert time.monotonic() < deadline, open_events(store)
                await asyncio.sleep(0.05)
            assert requests_to(running.http, "sms.example.com") == 1

    run(main())


def _missed(event_id: str) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": "call.ended",
            "properties": {
                "answered": False,
                "direction": "inbound",
                "external_number": "+14155550123",
                "name": "Ann",
                "waiting_time": 3,
            },
        }
    ).encode()


def test_healthz() -> None:
    async def main() -> None:
        async with serving() as served:
            answer = await served.client.get("/healthz")
            assert (answer.status_code, answer.json()) == (200, {"status": "ok"})

    run(main())


def test_a_body_that_arrives_too_slowly_is_refused() -> None:
    async def slowly() -> Any:
        yield b"CallSid=CA1"
        await asyncio.sleep(5)
        yield b"&From=%2B1"

    async def main() -> None:
        async with serving(settings=settings(body_timeout=0.3)) as served:
            began = time.monotonic()
            for path in ("/voice/account-verification", "/events"):
                answer = await served.client.post(
                    path,
                    content=slowly(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert answer.status_code == 408, answer.text
            assert time.monotonic() - began < 4

    run(main())


def test_events_beyond_the_pending_bound_are_refused_for_now() -> None:
    slow = recorded()
    for key, response in list(slow.responses.items()):
        slow.responses[key] = dataclasses.replace(response, delay=30.0)

    async def main() -> None:
        bounded = settings(max_pending_events=2, dispatch_concurrency=1, drain_timeout=0.2)
        async with serving(workflows=example_workflows(), http=slow, settings=bounded) as served:
            auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
            answers = [
                await served.client.post("/events", content=_missed(f"evt-{n}"), headers=auth)
                for n in range(3)
            ]
            assert [a.status_code for a in answers] == [202, 202, 503]
            assert "send it again" in answers[2].json()["error"]

    run(main())


# --- regressions from the red-team review ------------------------------------------------------


def test_an_event_that_could_not_be_recorded_is_no_duplicate_when_sent_again(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = tmp_path / "events.db"
        async with serving(workflows=example_workflows(), events_store=store) as served:
            book = served.server.events_store
            assert book is not None
            real_accept = book.accept
            failures = iter([StoreError(f"store {store} cannot record an event: the disk is full")])

            def accept(*arguments: Any) -> bool:
                failure = next(failures, None)
                if failure is not None:
                    raise failure
                return real_accept(*arguments)

            book.accept = accept  # type: ignore[method-assign]
            auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
            first = await served.client.post("/events", content=_missed("evt-disk"), headers=auth)
            assert first.status_code == 503
            assert "send it again" in first.json()["error"]
            again = await served.client.post("/events", content=_missed("evt-disk"), headers=auth)
            assert (again.status_code, again.json()) == (202, {"result": "accepted"})
            assert store_event(store, "evt-disk") in ("open", "done")

    run(main())


def test_events_waiting_for_a_store_thread_are_bounded_and_refused_when_the_store_fails(
    tmp_path: Path,
) -> None:
    """Events are recorded on the events store's own threads (store_threads), never in
    asyncio's default pool. While the one thread is held (the store locked by another
    process), 16 events may wait for it and the next is answered 503 at once; when the held
    recording fails, those waiting are answered 503 then (not busy_timeout each in turn), and
    each is no duplicate when it is sent again."""
    store = tmp_path / "events.db"
    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}

    async def main() -> None:
        async with serving(
            workflows=example_workflows(), events_store=store, settings=settings(store_threads=1)
        ) as served:
            book = served.server.events_store
            assert book is not None
            real_accept = book.accept
            entered, leave = threading.Event(), threading.Event()
            threads: list[str] = []

            def accept(*arguments: Any) -> bool:
                threads.append(threading.current_thread().name)
                if not entered.is_set():
                    entered.set()
                    leave.wait(10)  # bounded: a store locked by another process
                    raise StoreError(f"store {store} cannot record an event: it is locked")
                return real_accept(*arguments)

            book.accept = accept  # type: ignore[method-assign]

            def post(number: int) -> Any:
                return served.client.post("/events", content=_missed(f"evt-{number}"), headers=auth)

            held = asyncio.create_task(post(0))
            assert await asyncio.to_thread(entered.wait, 5)
            waiting = [asyncio.create_task(post(number)) for number in range(1, 16)]
            for _ in range(100):  # bounded: until the 15 wait for the thread (or 1 s)
                if served.server.intake._recorders._value == 0:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.01)
            began = time.monotonic()
            refused = await post(16)
            assert time.monotonic() - began < 1.0
            assert refused.status_code == 503
            assert "send the event again" in refused.json()["error"]
            leave.set()
            began = time.monotonic()
            answers = [await task for task in [held, *waiting]]
            assert time.monotonic() - began < 2.0
            assert [answer.status_code for answer in answers] == [503] * 16
            assert threads == [
                "flowlang-store-record_0"
            ]  # the waiting ones never touched the store
            for number in range(17):
                again = await post(number)
                assert (again.status_code, again.json()) == (202, {"result": "accepted"})
            assert all(name.startswith("flowlang-store-record") for name in threads)

    run(main())


def test_the_periodic_take_over_runs_off_the_event_loop(tmp_path: Path) -> None:
    """The periodic take-over (which waits for a store another process holds, then reads every
    orphaned event) runs on a store thread: /healthz answers at once meanwhile."""
    store = tmp_path / "events.db"

    async def main() -> None:
        async with serving(
            workflows=example_workflows(),
            events_store=store,
            settings=settings(takeover_interval=0.05),
        ) as served:
            book = served.server.events_store
            assert book is not None
            real_take_over = book.take_over
            threads: list[str] = []

            def take_over(*args: Any) -> Any:
                threads.append(threading.current_thread().name)
                time.sleep(0.3)  # a store locked by another process, or many events to read
                return real_take_over(*args)

            book.take_over = take_over  # type: ignore[method-assign]
            worst = 0.0
            deadline = time.monotonic() + 1.5
            for _ in range(100):  # bounded: 100 checks or 1.5 s
                if time.monotonic() > deadline:
                    break
                began = time.monotonic()
                assert (await served.client.get("/healthz")).status_code == 200
                worst = max(worst, time.monotonic() - began)
                await asyncio.sleep(0.02)
            assert len(threads) >= 2, threads
            assert all(name.startswith("flowlang-store-takeover") for name in threads)
            assert worst < 0.2, f"/healthz waited {worst:.2f} s"

    run(main())


@pytest.mark.parametrize("threads", [0, -1, 65, True, 2.0, "4", None])
def test_store_threads_must_be_a_small_positive_count(threads: Any) -> None:
    with pytest.raises(ValueError, match="store_threads"):
        settings(store_threads=threads)


def test_a_claim_left_by_a_dead_replica_lapses_and_the_call_goes_on() -> None:
    async def main() -> None:
        async with serving(settings=settings(duplicate_wait=5.0)) as served:
            twilio, voice = served.twilio, served.server.voice
            sid = "CA" + "a" * 32
            first = await twilio.post(
                f"{PUBLIC_URL}/voice/account-verification", twilio.fields(_call(sid))
            )
            action = ElementTree.fromstring(first.content).find("Gather").get("action")  # type: ignore[union-attr]
            voice._claim_seconds = 0.5
            assert await served.server.store.claim(sid, 1, 0.5)  # a replica took it, then died
            began = time.monotonic()
            answer = await twilio.post(action, twilio.fields(_call(sid), Digits="12345678"))
            assert answer.status_code == 200
            assert "Your balance is 42.5 dollars" in answer.text
            assert time.monotonic() - began < 4

    run(main())


def test_a_call_over_before_its_first_webhook_stored_anything_keeps_no_state() -> None:
    async def main() -> None:
        async with serving() as served:
            twilio = served.twilio
            call = _call("CA" + "b" * 32)
            await twilio.status(call, "canceled")
            answer = await twilio.post(
                f"{PUBLIC_URL}/voice/account-verification", twilio.fields(call)
            )
            assert ElementTree.fromstring(answer.content).find("Hangup") is not None
            assert await served.server.store.waiting() == 0

    run(main())


def test_post_events_cannot_use_the_calls_own_event_ids() -> None:
    async def main() -> None:
        async with serving(workflows=example_workflows()) as served:
            body = json.dumps({"id": "twilio:call.ended:CA1", "type": "call.ended"}).encode()
            answer = await served.client.post(
                "/events", content=body, headers={"Authorization": f"Bearer {EVENT_TOKEN}"}
            )
            assert answer.status_code == 400
            assert "calls' own events" in answer.json()["error"]

    run(main())


def test_an_untranslatable_target_logs_no_caller_number(caplog: pytest.LogCaptureFixture) -> None:
    text = "flow: tel\nstart: go\nsteps:\n  go: {type: transfer, target: 'tel:<<call.external_number>>'}\n"

    async def main() -> None:
        async with serving([load_flow_text(text)]) as served:
            call = await served.twilio.call("tel", [], caller="+14155550199")
            assert settings().apology in said_text(call)

    with caplog.at_level("DEBUG"):
        run(main())
    assert "4155550199" not in caplog.text


def test_a_call_redirected_to_another_flow_starts_that_flow() -> None:
    second = "flow: second\nstart: hello\nsteps:\n  hello: {type: say, text: Second flow., next: bye}\n  bye: {type: hangup}\n"

    async def main() -> None:
        flows = [*_examples(), load_flow_text(second)]
        async with serving(flows) as served:
            twilio = served.twilio
            call = _call("CA" + "c" * 32)
            await twilio.post(f"{PUBLIC_URL}/voice/account-verification", twilio.fields(call))
            assert await served.server.store.waiting() == 1
            answer = await twilio.post(f"{PUBLIC_URL}/voice/second", twilio.fields(call))
            assert ElementTree.fromstring(answer.content).find("Say").text == "Second flow."  # type: ignore[union-attr]
            assert await served.server.store.waiting() == 0
            again = await twilio.post(f"{PUBLIC_URL}/voice/second", twilio.fields(call))
            assert again.text == answer.text

    run(main())


def _examples() -> list[Any]:
    from tests.serve_support import example_flows

    return example_flows()


def test_an_event_secret_that_is_no_standard_webhooks_secret_is_refused_at_start() -> None:
    from tests.serve_support import SECRETS

    with pytest.raises(ValueError, match="not a Standard Webhooks secret") as caught:
        run(_start_with({**SECRETS, "event_secret": "not base64 at all!"}))
    assert "not base64 at all" not in str(caught.value)


async def _start_with(secrets: dict[str, str]) -> None:
    async with serving(secrets=secrets):
        pass


def test_flow_sources_are_kept_again_while_calls_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowlang.serve.voice as voice_module

    async def main() -> None:
        store = MemoryCallStore()
        async with serving(store=store) as served:
            store._flows.clear()  # as if they had expired in a shared store
            monkeypatch.setattr(voice_module, "KEEP_SOURCE_EVERY", 0.0)
            await served.twilio.call("vip-routing", [], caller="+14155550100")
            flow = served.server.voice.flows["vip-routing"]
            assert await store.flow_source(flow.fingerprint) == flow.source

    run(main())


# --- regressions from the second review ----------------------------------------------------------


def test_a_redirected_call_answers_its_new_flows_menu() -> None:
    menu = (
        "flow: menu\nstart: pick\nsteps:\n"
        "  pick: {type: menu, say: Press 1., options: {'1': one}, fallback: bye}\n"
        "  one: {type: say, text: You pressed one., next: bye}\n"
        "  bye: {type: hangup}\n"
    )

    async def main() -> None:
        async with serving([*_examples(), load_flow_text(menu)]) as served:
            twilio = served.twilio
            call = _call("CA" + "d" * 32)
            await twilio.post(f"{PUBLIC_URL}/voice/account-verification", twilio.fields(call))
            redirected = await twilio.post(f"{PUBLIC_URL}/voice/menu", twilio.fields(call))
            action = ElementTree.fromstring(redirected.content).find("Gather").get("action")  # type: ignore[union-attr]
            began = time.monotonic()
            pressed = await twilio.post(action, twilio.fields(call, Digits="1"))
            assert time.monotonic() - began < 2
            assert "You pressed one." in pressed.text

    run(main())


def test_a_status_callback_sent_twice_still_ends_a_call_whose_first_webhook_is_late() -> None:
    async def main() -> None:
        async with serving() as served:
            twilio = served.twilio
            call = _call("CA" + "e" * 32)
            await twilio.status(call, "canceled")
            await twilio.status(call, "canceled")
            late = await twilio.post(f"{PUBLIC_URL}/voice/vip-routing", twilio.fields(call))
            assert ElementTree.fromstring(late.content).find("Hangup") is not None
            assert requests_to(served.http, "crm.example.com") == 0  # the flow never ran

    run(main())


def test_an_unset_twilio_key_is_refused_at_start() -> None:
    from tests.serve_support import SECRETS

    secrets = {name: value for name, value in SECRETS.items() if name != "twilio_token"}
    with pytest.raises(ValueError, match="a Twilio key") as caught:
        run(_start_with(secrets))
    assert "twilio_token" in str(caught.value)


def test_an_event_whose_finish_cannot_be_recorded_stays_open_and_is_not_sent_twice(
    tmp_path: Path,
) -> None:
    """The store fails when the event's end is recorded (disk full): the 202 stands, a resend
    is a duplicate, and the next process finishes it without sending its actions again."""
    store = tmp_path / "events.db"
    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}

    async def first() -> None:
        async with serving(workflows=example_workflows(), events_store=store) as served:
            book = served.server.events_store
            assert book is not None

            def fail(*_: Any, **__: Any) -> None:
                raise StoreError(f"store {store} cannot record a finished event: the disk is full")

            book.finish = fail  # type: ignore[method-assign]
            answer = await served.client.post(
                "/events", content=_missed("evt-finish"), headers=auth
            )
            assert (answer.status_code, answer.json()) == (202, {"result": "accepted"})
            await asyncio.wait_for(_settled(served.server), 10)
            assert requests_to(served.http, "sms.example.com") == 1
            again = await served.client.post("/events", content=_missed("evt-finish"), headers=auth)
            assert again.json() == {"result": "duplicate"}
        assert store_event(store, "evt-finish") == "open"

    async def second() -> None:
        async with serving(workflows=example_workflows(), events_store=store) as served:
            await asyncio.sleep(0)
            await asyncio.wait_for(_settled(served.server), 10)
            assert requests_to(served.http, "sms.example.com") == 0  # settled already
        assert store_event(store, "evt-finish") == "done"

    run(first())
    run(second())


# --- the form parser ------------------------------------------------------------------------


_FORM_PIECES = st.sampled_from(
    [
        "a",
        "Digits",
        "%",
        "%2",
        "%41",
        "%e9",
        "%C3%A9",
        "+",
        "=",
        "&",
        "&&",
        " ",
        "é",
        "\ud800",
        "%ZZ",
        ";",
    ]
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_FORM_PIECES, st.text(max_size=8)), max_size=40).map("".join))
def test_form_fields_are_parse_qsl_exactly(text: str) -> None:
    """form_fields (the webhooks' parser, which skips decoding plain fields) gives the very
    pairs parse_qsl gives, and refuses the same too-many-fields forms."""
    from urllib.parse import parse_qsl

    from flowlang.serve.app import form_fields

    for limit in (3, 200):
        try:
            expected: Any = parse_qsl(text, keep_blank_values=True, max_num_fields=limit)
        except ValueError:
            expected = ValueError
        try:
            got: Any = form_fields(text, limit)
        except ValueError:
            got = ValueError
        assert got == expected


def test_form_fields_refuse_too_many_fields() -> None:
    from urllib.parse import parse_qsl

    from flowlang.serve.app import MAX_FORM_FIELDS, form_fields

    for text in ("a=%41+b", "a=" + "%41+%e9" * 30, "%2B1415=" + "%2B1415" * 40):
        for _ in range(2):  # decoded afresh, then (the short ones) from the kept texts
            assert form_fields(text) == parse_qsl(text, keep_blank_values=True)

    assert len(form_fields("&".join(["a=1"] * MAX_FORM_FIELDS))) == MAX_FORM_FIELDS
    with pytest.raises(ValueError):
        form_fields("&".join(["a=1"] * (MAX_FORM_FIELDS + 1)))
    assert form_fields("a+b=%41%2&c&=&d=%e9") == [
        ("a b", "A%2"),
        ("c", ""),
        ("", ""),
        ("d", "\ufffd"),
    ]


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_FORM_PIECES, st.sampled_from(["seq", "seq=", "seq=4"])), max_size=30))
def test_query_value_is_starlettes(pieces: list[str]) -> None:
    """The Gather's ``seq`` is read as Starlette's query_params.get reads it (the last one)."""
    from starlette.requests import Request

    from flowlang.serve.app import query_value

    raw = "".join(pieces).encode("utf-8", "surrogatepass")
    scope = {"type": "http", "query_string": raw, "headers": []}
    assert query_value(scope, "seq") == Request(scope).query_params.get("seq")


# --- dead letters go to the events store ------------------------------------------------------


def test_dead_letters_are_kept_in_the_events_store_for_replay_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A permanent 400 from the SMS provider: the dead letter is in the store (nowhere else);
    flowlang deadletters export writes it, flowlang replay STORE delivers it once fixed."""
    store = tmp_path / "events.db"
    failing = recorded()
    for key, response in list(failing.responses.items()):
        if "sms.example.com" in str(key):
            failing.responses[key] = dataclasses.replace(response, status=400)

    async def main() -> None:
        async with serving(workflows=example_workflows(), events_store=store, http=failing) as s:
            auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
            answer = await s.client.post("/events", content=_missed("evt-dead"), headers=auth)
            assert answer.status_code == 202
            await asyncio.wait_for(_settled(s.server), 10)
            assert s.server.automations.dead_letters.store is s.server.events_store

    run(main())
    assert store_event(store, "evt-dead") == "done"
    assert store_rows(store, "dead") == 1
    assert sorted(path.name for path in tmp_path.iterdir() if "dead" in path.name) == []
    exported = io.StringIO()
    assert cli_main(["deadletters", "export", str(store)], exported) == 0
    (line,) = exported.getvalue().splitlines()
    record = json.loads(line)
    assert (record["format"], record["action"]) == ("flowlang.deadletter/1", "text_back")
    for secret in SECRETS.values():
        assert secret not in line
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"FLOWLANG_SECRET_{name.upper()}", value)
    responses = ROOT / "examples" / "workflows" / "data" / "responses.yaml"
    replayed = io.StringIO()
    assert cli_main(["replay", str(store), "--responses", str(responses)], replayed) == 0
    assert "replayed 1 records: delivered 1" in replayed.getvalue()
    assert store_rows(store, "dead") == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_failing_look_for_unfinished_events_is_logged_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "events.db"
    looks: list[int] = []

    async def main() -> None:
        async with serving(
            workflows=example_workflows(),
            events_store=store,
            settings=settings(takeover_interval=0.05),
        ) as served:

            def take_over(limit: int | None = None) -> int:
                looks.append(1)
                if len(looks) <= 2:
                    raise StoreError(f"store {store} cannot be read: the disk is full")
                return 0

            served.server.automations.take_over = take_over  # type: ignore[method-assign]
            deadline = time.monotonic() + 10
            while len(looks) < 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
            answer = await served.client.post("/events", content=_missed("evt-ok"), headers=auth)
            assert answer.status_code == 202

    with caplog.at_level(logging.ERROR, logger="flowlang.serve"):
        run(main())
    said = [r.getMessage() for r in caplog.records if "looking for unfinished" in r.getMessage()]
    assert len(said) == 2 and str(store) in said[0]
