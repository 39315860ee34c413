"""Automations delivered at least once, against loopback HTTPS impersonations of the providers."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from servers import Server
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    Providers,
    load_workflow_text,
)

SECRETS = {
    "crm_basic": "crm-basic-secret",
    "sms_key_id": "key-id",
    "sms_key_secret": "sms-secret-value",
    "slack_token": "xoxb-slack-secret",
    "speech_api_key": "speech-key-secret",
}
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


MISSED_CALL = """
workflow: missed-call
trigger: call.ended
conditions:
  - {property: "<<event.properties.answered>>", operator: equals, value: false}
actions:
  - name: log_in_crm
    type: api_request
    endpoint: https://crm.test:{port}/script/crm/activities
    headers: {Authorization: "Basic <<secrets.crm_basic>>"}
    values:
      - {key: contactName, value: "<<event.properties.name>>", format: string}
      - {key: call.waited, value: "<<event.properties.waiting_time>>", format: number}
      - {key: call.vip, value: "<<event.properties.is_vip>>", format: boolean}
  - name: text_back
    type: send_sms
    sender: "+14155550100"
    recipient: "<<event.properties.external_number>>"
    text: Sorry we missed you, <<event.properties.name>>.
    auth: {key_id: "<<secrets.sms_key_id>>", key_secret: "<<secrets.sms_key_secret>>"}
  - name: tell_team
    type: slack_notification
    token: "<<secrets.slack_token>>"
    channel: "<<event.properties.channel ?? '#support'>>"
    text: "Missed call from *<<event.properties.name>>*, CRM activity <<actions.log_in_crm.result.id>>"
"""


def event(number: int = 1, **properties: Any) -> dict[str, Any]:
    base = {
        "answered": False,
        "name": "Ann",
        "waiting_time": "12.5",
        "is_vip": "yes",
        "external_number": "+442079460958",
    }
    return {"id": f"evt-{number}", "type": "call.ended", "properties": {**base, **properties}}


def run(
    server: Server,
    workflows: list[str],
    events: list[dict[str, Any]],
    *,
    dead_letters: DeadLetterStore | None = None,
    clock: FakeClock | None = None,
) -> tuple[list[Any], Automations]:
    compiled = [load_workflow_text(text.replace("{port}", str(server.port))) for text in workflows]

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> tuple[list[Any], Automations]:
        base = f"https://crm.test:{server.port}/script"
        settings = DeliverySettings(
            allow_hosts=frozenset({"crm.test"}),
            providers=Providers(
                sms_base_url=f"{base}/sms",
                slack_base_url=f"{base}/slack",
                speech_base_url=f"{base}/speech",
            ),
        )
        automations = Automations(
            compiled,
            settings=settings,
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets(SECRETS),
            clock=clock or FakeClock(),
            dead_letters=dead_letters,
        )
        async with automations:
            results = [await automations.dispatch(item) for item in events]
        return results, automations

    return asyncio.run(main())


def ok_slack() -> tuple[int, dict[str, str], Any]:
    return (200, {}, {"ok": True, "ts": "1700000000.1", "channel": "C1"})


def test_all_three_actions_delivered_in_order(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 77}))
    server.received.script("slack", ok_slack())
    [result], _ = run(server, [MISSED_CALL], [event()])
    assert result.matched == ["missed-call"]
    assert [(d.action, d.outcome, d.attempts) for d in result.deliveries] == [
        ("log_in_crm", "delivered", 1),
        ("text_back", "delivered", 1),
        ("tell_team", "delivered", 1),
    ]
    crm, sms, slack = (
        server.received.to("crm")[0],
        server.received.to("sms")[0],
        server.received.to("slack")[0],
    )
    assert json.loads(crm["body"]) == {"contactName": "Ann", "call": {"waited": 12.5, "vip": True}}
    assert crm["headers"]["authorization"] == "Basic crm-basic-secret"
    assert sms["path"] == "/script/sms/messages"
    assert (
        sms["headers"]["authorization"]
        == "Basic " + base64.b64encode(b"key-id:sms-secret-value").decode()
    )
    assert json.loads(sms["body"]) == {
        "sender": "+14155550100",
        "recipient": "+442079460958",
        "text": "Sorry we missed you, Ann.",
    }
    assert slack["path"] == "/script/slack/chat.postMessage"
    assert slack["headers"]["authorization"] == "Bearer xoxb-slack-secret"
    assert json.loads(slack["body"]) == {
        "channel": "#support",
        "text": "Missed call from *Ann*, CRM activity 77",
        "mrkdwn": True,
    }
    keys = [request["headers"]["idempotency-key"] for request in (crm, sms, slack)]
    assert len(set(keys)) == 3 and all(len(key) == 32 for key in keys)


def test_conditions_decide_what_runs(server: Server) -> None:
    [result], _ = run(server, [MISSED_CALL], [event(answered=True)])
    assert result.matched == [] and result.deliveries == []
    assert server.received.requests == []


def test_retries_follow_the_schedule_with_jitter_and_keep_the_idempotency_key(
    server: Server,
) -> None:
    server.received.script("crm", (503, {}, {}), (502, {}, {}), (201, {}, {"id": 5}))
    server.received.script("slack", ok_slack())
    clock = FakeClock()
    [result], _ = run(server, [MISSED_CALL], [event()], clock=clock)
    assert result.deliveries[0].outcome == "delivered" and result.deliveries[0].attempts == 3
    assert len(clock.waits) == 2
    assert 4.5 <= clock.waits[0] <= 5.5 and 270 <= clock.waits[1] <= 330
    keys = {request["headers"]["idempotency-key"] for request in server.received.to("crm")}
    assert len(keys) == 1


def test_429_honours_retry_after_and_waits_at_least_a_minute(server: Server) -> None:
    server.received.script(
        "crm", (429, {"Retry-After": "120"}, {}), (429, {}, {}), (201, {}, {"id": 1})
    )
    server.received.script("slack", ok_slack())
    clock = FakeClock()
    [result], _ = run(server, [MISSED_CALL], [event()], clock=clock)
    assert result.deliveries[0].attempts == 3
    assert clock.waits[0] >= 120 and clock.waits[1] >= 270


def test_exhausted_retries_go_to_the_dead_letter_store_and_stop_the_rest(
    server: Server, tmp_path: Path
) -> None:
    server.received.script("crm", *[(500, {}, {})] * 8)
    store = DeadLetterStore(tmp_path / "dead.jsonl")
    clock = FakeClock()
    [result], _ = run(server, [MISSED_CALL], [event()], dead_letters=store, clock=clock)
    assert [(d.action, d.outcome) for d in result.deliveries] == [
        ("log_in_crm", "dead_lettered"),
        ("text_back", "skipped"),
        ("tell_team", "skipped"),
    ]
    assert result.deliveries[0].attempts == 8
    assert len(clock.waits) == 7
    for planned, waited in zip(SCHEDULE[1:], clock.waits, strict=True):
        assert planned * 0.9 <= waited <= planned * 1.1
    [record] = DeadLetterStore.read(tmp_path / "dead.jsonl")
    assert record["action"] == "log_in_crm" and record["then"] == ["text_back", "tell_team"]
    assert record["attempts"] == 8 and "HTTP 500" in record["error"]
    text = (tmp_path / "dead.jsonl").read_text()
    assert not any(secret in text for secret in SECRETS.values())
    assert "<<secrets.crm_basic>>" in text  # the reference is kept, never the value


def test_replay_delivers_with_the_same_idempotency_key(server: Server, tmp_path: Path) -> None:
    server.received.script("crm", *[(500, {}, {})] * 8)
    store = DeadLetterStore(tmp_path / "dead.jsonl")
    run(server, [MISSED_CALL], [event()], dead_letters=store)
    first_key = server.received.to("crm")[0]["headers"]["idempotency-key"]
    server.received.script("crm", (201, {}, {"id": 9}))
    server.received.script("slack", ok_slack())
    [record] = DeadLetterStore.read(tmp_path / "dead.jsonl")

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def replay() -> list[Any]:
        base = f"https://crm.test:{server.port}/script"
        settings = DeliverySettings(
            allow_hosts=frozenset({"crm.test"}),
            providers=Providers(sms_base_url=f"{base}/sms", slack_base_url=f"{base}/slack"),
        )
        async with Automations(
            [],
            settings=settings,
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets(SECRETS),
            clock=FakeClock(),
        ) as automations:
            return await automations.replay(record)

    deliveries = asyncio.run(replay())
    assert [(d.action, d.outcome) for d in deliveries] == [
        ("log_in_crm", "delivered"),
        ("text_back", "delivered"),
        ("tell_team", "delivered"),
    ]
    assert server.received.to("crm")[-1]["headers"]["idempotency-key"] == first_key
    assert "CRM activity 9" in server.received.to("slack")[-1]["body"]


def test_permanent_failures_are_not_retried(server: Server) -> None:
    server.received.script("crm", (400, {}, {"error": "bad"}))
    clock = FakeClock()
    [result], automations = run(server, [MISSED_CALL], [event()], clock=clock)
    assert result.deliveries[0].outcome == "dead_lettered" and result.deliveries[0].attempts == 1
    assert clock.waits == [] and len(automations.dead_letters.records) == 1


def test_slack_ok_false_is_a_failure_with_slacks_error_code(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 1}))
    server.received.script("slack", (200, {}, {"ok": False, "error": "channel_not_found"}))
    [result], _ = run(server, [MISSED_CALL], [event(channel="#nowhere")])
    slack = result.deliveries[2]
    assert slack.outcome == "dead_lettered" and slack.attempts == 1
    assert slack.error == "Slack answered ok: false (channel_not_found)"


def test_slack_rate_limit_error_is_retried(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 1}))
    server.received.script("slack", (200, {}, {"ok": False, "error": "ratelimited"}), ok_slack())
    [result], _ = run(server, [MISSED_CALL], [event()])
    assert result.deliveries[2].outcome == "delivered" and result.deliveries[2].attempts == 2


def test_a_value_that_is_not_its_format_names_the_key(server: Server) -> None:
    [result], _ = run(server, [MISSED_CALL], [event(waiting_time="12,5")])
    first = result.deliveries[0]
    assert first.outcome == "dead_lettered" and first.attempts == 1
    assert first.error == "log_in_crm: value of 'call.waited' is not a number: '12,5'"
    assert server.received.to("crm") == []


def test_an_sms_recipient_must_be_e164(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 1}))
    [result], _ = run(server, [MISSED_CALL], [event(external_number="0207 946 0958")])
    assert result.deliveries[1].outcome == "dead_lettered"
    assert "recipient must be an E.164 number" in (result.deliveries[1].error or "")


def test_duplicate_events_run_once(server: Server) -> None:
    server.received.script("crm", (201, {}, {"id": 1}), (201, {}, {"id": 2}))
    server.received.script("slack", ok_slack(), ok_slack())
    results, _ = run(server, [MISSED_CALL], [event(1), event(1), event(2)])
    assert [r.duplicate for r in results] == [False, True, False]
    assert len(server.received.to("crm")) == 2


TRANSCRIBE = """
workflow: transcribe
trigger: recording.uploaded
actions:
  - {name: transcript, type: transcribe_recording, language: en-GB, model: phone_call, enhanced: true}
  - name: attach
    type: api_request
    endpoint: https://crm.test:{port}/script/crm/notes
    values:
      - {key: text, value: "<<actions.transcript.result.transcript>>", format: string}
      - {key: confidence, value: "<<actions.transcript.result.confidence>>", format: auto}
"""


def test_transcription_result_feeds_the_next_action(server: Server) -> None:
    server.received.script(
        "speech",
        (
            200,
            {},
            {
                "results": [
                    {"alternatives": [{"transcript": "hello there", "confidence": 0.9}]},
                    {"alternatives": [{"transcript": "goodbye", "confidence": 0.7}]},
                ]
            },
        ),
    )
    recording = {
        "id": "rec-1",
        "type": "recording.uploaded",
        "properties": {"recording_url": "gs://calls/rec-1.wav", "duration": 40},
    }
    [result], _ = run(server, [TRANSCRIBE], [recording])
    assert [d.outcome for d in result.deliveries] == ["delivered", "delivered"]
    speech = server.received.to("speech")[0]
    assert speech["path"] == "/script/speech/speech:recognize"
    assert speech["headers"]["x-goog-api-key"] == "speech-key-secret"
    assert json.loads(speech["body"]) == {
        "config": {"languageCode": "en-GB", "model": "phone_call", "useEnhanced": True},
        "audio": {"uri": "gs://calls/rec-1.wav"},
    }
    note = json.loads(server.received.to("crm")[0]["body"])
    assert note["text"] == "hello there goodbye" and abs(note["confidence"] - 0.8) < 1e-9


def test_shutdown_waits_for_actions_in_flight(server: Server) -> None:
    workflow = load_workflow_text(
        """
workflow: slow
trigger: call.ended
actions:
  - {name: call, type: api_request, endpoint: "https://crm.test:{port}/drip", timeout: 1s}
""".replace("{port}", str(server.port))
    )

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> tuple[bool, float]:
        automations = Automations(
            [workflow],
            settings=DeliverySettings(allow_hosts=frozenset({"crm.test"}), schedule=(0,)),
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            clock=FakeClock(),
        )
        task = asyncio.create_task(automations.dispatch(event()))
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        await automations.aclose()
        return task.done(), asyncio.get_running_loop().time() - started

    done, waited = asyncio.run(main())
    assert done and waited >= 0.5


def test_a_provider_timeout_is_retried_after_at_least_a_minute(server: Server) -> None:
    workflow = """
workflow: slow
trigger: call.ended
actions:
  - {name: call, type: api_request, endpoint: "https://crm.test:{port}/script/crm/x", timeout: 300ms}
"""
    server.received.script("crm", (0, {}, {}), (201, {}, {"id": 3}))
    clock = FakeClock()
    [result], _ = run(server, [workflow], [event()], clock=clock)
    assert result.deliveries[0].outcome == "delivered" and result.deliveries[0].attempts == 2
    assert clock.waits[0] >= 60


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 3600.0), ("soon", None), ("", None)],
)
def test_retry_after_reads_seconds_and_http_dates(header: str, seconds: float | None) -> None:
    from email.utils import parsedate_to_datetime

    from flowlang.automations.dispatch import retry_after_seconds

    now = parsedate_to_datetime("Wed, 21 Oct 2015 06:28:00 GMT").timestamp()
    assert retry_after_seconds(header, now) == seconds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": ()}, "schedule needs at least one attempt"),
        ({"schedule": (0, -5)}, "DeliverySettings.schedule must be seconds, zero or more"),
        ({"jitter": float("nan")}, "jitter must be seconds, zero or more"),
        ({"timeout": 0}, "timeout must be seconds, more than zero"),
        ({"max_requests_in_flight": 0}, "max_requests_in_flight must be a positive integer"),
        ({"max_response_body": -1}, "max_response_body must be an integer of at least 0"),
    ],
)
def test_delivery_settings_out_of_range_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeliverySettings(**options)
