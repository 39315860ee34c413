"""Speech-to-text end to end: a loopback recording server and a Google Speech v1 impersonation
that enforces Google's rules (tests/servers.py, GOOGLE_RULES)."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from servers import (
    GoogleSpeech,
    Recordings,
    flac_silence,
    serve_google_speech,
    serve_recordings,
    wav_bytes,
)
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import (
    Automations,
    DeadLetterStore,
    DeliverySettings,
    Providers,
    load_workflow_text,
)
from flowlang.automations.speech import SpeechSettings
from flowlang.flow.model import FlowDocumentError

API_KEY = "speech-key-7d1e"
RECORDINGS_TOKEN = "rec-token-51c9"
SECRETS = {"speech_api_key": API_KEY, "recordings_token": RECORDINGS_TOKEN}
HOSTS = frozenset({"recordings.test", "other.test", "speech.test"})

WORKFLOW = """
workflow: transcribe
trigger: recording.uploaded
actions:
  - name: transcript
    type: transcribe_recording
    language: en-GB
    recording_origin: https://recordings.test:{rport}
    headers: {Authorization: "Bearer <<secrets.recordings_token>>"}
"""
PLAIN = """
workflow: transcribe
trigger: recording.uploaded
actions:
  - name: transcript
    type: transcribe_recording
"""


@dataclass
class Speech:
    """Both servers, and a way to run workflows against them."""

    ca: Any
    gport: int
    google: GoogleSpeech
    rport: int
    store: Recordings

    def url(self, path: str, host: str = "recordings.test") -> str:
        return f"https://{host}:{self.rport}{path}"

    def run(
        self,
        events: list[dict[str, Any]],
        workflow: str = WORKFLOW,
        *,
        clock: FakeClock | None = None,
        speech: SpeechSettings | None = None,
        schedule: tuple[float, ...] = (0,),
        secrets: dict[str, str] | None = None,
    ) -> tuple[list[Any], DeadLetterStore, FakeClock]:
        compiled = load_workflow_text(workflow.replace("{rport}", str(self.rport)))
        clock = clock or FakeClock()
        dead = DeadLetterStore()

        async def resolver(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        async def main() -> list[Any]:
            context = ssl.create_default_context()
            self.ca.configure_trust(context)
            settings = DeliverySettings(
                allow_hosts=HOSTS,
                schedule=schedule,
                providers=Providers(speech_base_url=f"https://speech.test:{self.gport}/v1"),
                speech=speech or SpeechSettings(),
            )
            async with Automations(
                [compiled],
                settings=settings,
                ssl_context=context,
                resolver=resolver,
                secrets=MappingSecrets(SECRETS if secrets is None else secrets),
                clock=clock,
                dead_letters=dead,
            ) as automations:
                return [await automations.dispatch(event) for event in events]

        return asyncio.run(main()), dead, clock


@pytest.fixture
def speech(ca: Any) -> Iterator[Speech]:
    with (
        serve_google_speech(ca, API_KEY) as (gport, google),
        serve_recordings(ca) as (rport, store),
    ):
        store.authorization = f"Bearer {RECORDINGS_TOKEN}"
        yield Speech(ca, gport, google, rport, store)


def recording(url: str, number: int = 1, **properties: Any) -> dict[str, Any]:
    return {
        "id": f"rec-{number}",
        "type": "recording.uploaded",
        "properties": {"recording_url": url, **properties},
    }


def only(results: list[Any]) -> Any:
    [result] = results
    [delivery] = result.deliveries
    return delivery


def google_bodies(google: GoogleSpeech, suffix: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in google.requests if r["path"].endswith(suffix)]


# --- https recordings: fetched, sent inline --------------------------------------------------


def test_an_https_wav_is_fetched_with_its_credentials_and_sent_inline(speech: Speech) -> None:
    audio = wav_bytes(3.5, rate=8000)
    speech.store.files["/private/c-1.wav"] = ("audio/wav", audio)
    results, dead, _ = speech.run([recording(speech.url("/private/c-1.wav"), duration=99)])
    delivery = only(results)
    assert delivery.outcome == "delivered", delivery.error
    assert delivery.result == {
        "transcript": "hello I would like to change my plan",
        "confidence": 0.92,
    }
    [fetch] = speech.store.requests
    assert fetch["headers"]["authorization"] == f"Bearer {RECORDINGS_TOKEN}"
    [body] = google_bodies(speech.google, ":recognize")
    assert base64.b64decode(body["audio"]["content"]) == audio
    assert body["config"] == {
        "encoding": "LINEAR16",
        "sampleRateHertz": 8000,
        "languageCode": "en-GB",
        "model": "phone_call",
        "useEnhanced": False,
    }
    assert not dead.records


def test_a_flac_recording_sends_its_header_rate_and_a_stereo_wav_its_channels(
    speech: Speech,
) -> None:
    speech.store.files["/private/a.flac"] = ("audio/flac", flac_silence(20, rate=16000))
    speech.store.files["/private/b.wav"] = ("audio/x-wav", wav_bytes(1, rate=16000, channels=2))
    results, _, _ = speech.run(
        [recording(speech.url("/private/a.flac"), 1), recording(speech.url("/private/b.wav"), 2)]
    )
    assert [only([r]).outcome for r in results] == ["delivered", "delivered"]
    first, second = google_bodies(speech.google, ":recognize")
    assert (first["config"]["encoding"], first["config"]["sampleRateHertz"]) == ("FLAC", 16000)
    assert second["config"]["audioChannelCount"] == 2


def test_an_https_recording_longer_than_a_minute_fails_naming_googles_rule(
    speech: Speech,
) -> None:
    speech.store.files["/private/long.wav"] = ("audio/wav", wav_bytes(61, rate=8000, tone=False))
    results, dead, _ = speech.run([recording(speech.url("/private/long.wav"))])
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 1
    assert "lasts 61 s" in delivery.error and "gs://" in delivery.error
    assert google_bodies(speech.google, "recognize") == []  # nothing sent that Google refuses
    assert len(dead.records) == 1


def test_the_impersonation_refuses_what_google_refuses(speech: Speech) -> None:
    """Why the long https path is refused above: Google's rules, enforced here."""
    base = f"https://127.0.0.1:{speech.gport}/v1"
    context = ssl.create_default_context()
    speech.ca.configure_trust(context)
    long_audio = base64.b64encode(wav_bytes(61, tone=False)).decode()
    short = base64.b64encode(wav_bytes(1)).decode()
    config = {"languageCode": "en-US"}
    cases = [
        ("recognize", {"config": config, "audio": {"uri": "https://x.test/a.wav"}}, "invalid argument"),
        ("recognize", {"config": config, "audio": {"content": "not base64!"}}, "Base64 decoding"),
        ("recognize", {"config": {}, "audio": {"content": short}}, "language_code"),
        ("recognize", {"config": config | {"encoding": "MP3"}, "audio": {"content": short}}, "encoding"),
        ("recognize", {"config": config | {"sampleRateHertz": 16000}, "audio": {"content": short}}, "match the value in the LINEAR16 header (8000)"),
        ("recognize", {"config": config, "audio": {"content": long_audio}}, "Sync input too long"),
        ("longrunningrecognize", {"config": config, "audio": {"content": long_audio}}, "Inline audio exceeds duration limit"),
        ("recognize", {"config": config, "audio": {}}, "exactly one of content or uri"),
        ("recognize", {"config": config | {"speed": 2}, "audio": {"content": short}}, 'Unknown name "speed"'),
    ]  # fmt: skip
    with httpx.Client(verify=context) as client:
        for method, body, expected in cases:
            answer = client.post(
                f"{base}/speech:{method}", json=body, headers={"X-Goog-Api-Key": API_KEY}
            )
            error = answer.json()["error"]
            assert answer.status_code == 400 and error["status"] == "INVALID_ARGUMENT", body
            assert expected in error["message"], (expected, error)


# --- gs:// recordings: uri, and long-running beyond a minute ---------------------------------


def test_a_95_second_gs_recording_goes_through_longrunningrecognize_and_polling(
    speech: Speech,
) -> None:
    speech.google.objects["gs://calls/c-77.wav"] = 95
    results, _, clock = speech.run(
        [recording("gs://calls/c-77.wav", duration=95)], PLAIN, clock=FakeClock()
    )
    delivery = only(results)
    assert delivery.outcome == "delivered", delivery.error
    assert delivery.result["transcript"] == "hello I would like to change my plan"
    [started] = google_bodies(speech.google, ":longrunningrecognize")
    assert started["audio"] == {"uri": "gs://calls/c-77.wav"}
    polls = [r for r in speech.google.requests if "/operations/" in r["path"]]
    assert len(polls) == 3 and clock.waits == [1.0, 2.0, 4.0]  # growing intervals


def test_a_gs_recording_of_unknown_length_moves_to_long_running_when_google_says_so(
    speech: Speech,
) -> None:
    speech.google.objects["gs://calls/c-9.flac"] = 130
    results, _, _ = speech.run([recording("gs://calls/c-9.flac")], PLAIN)
    assert only(results).outcome == "delivered", only(results).error
    paths = [r["path"] for r in speech.google.requests if r["method"] == "POST"]
    assert paths == ["/v1/speech:recognize", "/v1/speech:longrunningrecognize"]


def test_an_operation_that_never_finishes_is_bounded_and_its_retry_polls_the_same_one(
    speech: Speech,
) -> None:
    speech.google.objects["gs://calls/slow.wav"] = 300
    speech.google.mode = "never"
    limits = SpeechSettings(max_polls=4, operation_deadline=3600)
    results, _dead, clock = speech.run(
        [recording("gs://calls/slow.wav", duration=300)], PLAIN, speech=limits, schedule=(0, 5)
    )
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 2
    assert "unfinished" in delivery.error
    assert len(google_bodies(speech.google, ":longrunningrecognize")) == 1  # not started twice
    assert len([r for r in speech.google.requests if "/operations/" in r["path"]]) == 8
    assert 60 in clock.waits  # a timeout waits at least a minute before the retry


def test_the_operation_deadline_bounds_polling(speech: Speech) -> None:
    speech.google.objects["gs://calls/slow.wav"] = 300
    speech.google.mode = "never"
    limits = SpeechSettings(operation_deadline=10, poll_interval=4)
    results, _, clock = speech.run(
        [recording("gs://calls/slow.wav", duration=300)], PLAIN, speech=limits
    )
    assert only(results).outcome == "dead_lettered"
    assert sum(clock.waits) == 10 and clock.waits == [4, 6]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("error", "Audio data does not appear to be speech"),
        ("garbage", "not an operation"),
    ],
)
def test_an_operation_that_fails_or_answers_garbage_fails_with_the_reason(
    speech: Speech, mode: str, expected: str
) -> None:
    speech.google.objects["gs://calls/x.wav"] = 90
    speech.google.mode = mode
    speech.google.polls_before_done = 0
    results, dead, _ = speech.run([recording("gs://calls/x.wav", duration=90)], PLAIN)
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 1
    assert expected in delivery.error
    assert API_KEY not in json.dumps(dead.records)


# --- hostile recording servers ---------------------------------------------------------------


def test_a_huge_recording_stops_at_the_limit_in_bounded_memory(speech: Speech) -> None:
    limit = 1024 * 1024
    tracemalloc.start()
    try:
        results, _, _ = speech.run(
            [recording(speech.url("/huge"))],
            PLAIN,
            speech=SpeechSettings(max_recording_bytes=limit),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    delivery = only(results)
    assert delivery.outcome == "dead_lettered"
    assert f"larger than {limit} bytes" in delivery.error
    assert peak < 8 * limit  # the server offered 64 MiB


def test_a_slow_recording_meets_the_deadline_and_is_retried(speech: Speech) -> None:
    workflow = PLAIN + "    timeout: 0.5\n"
    results, _, _ = speech.run([recording(speech.url("/drip"))], workflow, schedule=(0, 5))
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 2
    assert "within 0.5s" in delivery.error


@pytest.mark.parametrize(
    ("path", "kind", "body", "expected"),
    [
        ("/page.wav", "text/html", b"<html>login</html>", "answered 'text/html', not audio"),
        ("/noise.bin", "application/octet-stream", bytes(range(256)) * 8, "give the action's encoding"),
        ("/song.mp3", "audio/mpeg", b"ID3\x03\x00" + bytes(100), "MP3"),
        ("/empty.wav", "audio/wav", b"", "empty"),
    ],
)  # fmt: skip
def test_what_is_not_usable_audio_fails_permanently_and_clearly(
    speech: Speech, path: str, kind: str, body: bytes, expected: str
) -> None:
    speech.store.files[path] = (kind, body)
    results, _, _ = speech.run([recording(speech.url(path))], PLAIN, schedule=(0, 5))
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 1
    assert expected in delivery.error
    assert google_bodies(speech.google, "recognize") == []


def test_a_wav_header_lying_about_its_size_is_measured_by_the_bytes_present(
    speech: Speech,
) -> None:
    audio = bytearray(wav_bytes(2))
    data_at = audio.index(b"data") + 4
    audio[data_at : data_at + 4] = (0x7FFFFFF0).to_bytes(4, "little")  # "about 37 hours"
    speech.store.files["/liar.wav"] = ("audio/wav", bytes(audio))
    results, _, _ = speech.run([recording(speech.url("/liar.wav"))], PLAIN)
    assert only(results).outcome == "delivered", only(results).error


@pytest.mark.parametrize(
    ("rate", "byte_rate", "expected"),
    [(1, 2, "outside the 8000-48000 Hz"), (8000, 999, "inconsistent"), (96000, 192000, "96000")],
)
def test_a_wav_header_lying_about_its_rate_fails_naming_it(
    speech: Speech, rate: int, byte_rate: int, expected: str
) -> None:
    audio = bytearray(wav_bytes(1))
    fmt = audio.index(b"fmt ") + 8
    audio[fmt + 4 : fmt + 8] = rate.to_bytes(4, "little")
    audio[fmt + 8 : fmt + 12] = byte_rate.to_bytes(4, "little")
    speech.store.files["/rate.wav"] = ("audio/wav", bytes(audio))
    results, _, _ = speech.run([recording(speech.url("/rate.wav"))], PLAIN)
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and expected in delivery.error


def test_credentials_never_follow_a_redirect_to_another_origin(speech: Speech) -> None:
    speech.store.files["/elsewhere.wav"] = ("audio/wav", wav_bytes(1))
    target = speech.url("/elsewhere.wav", host="other.test")
    results, _, _ = speech.run([recording(speech.url(f"/redirect?to={target}"))])
    assert only(results).outcome == "delivered", only(results).error
    first, second = speech.store.requests
    assert first["headers"]["authorization"] == f"Bearer {RECORDINGS_TOKEN}"
    assert second["host"].startswith("other.test") and "authorization" not in second["headers"]


def test_credentials_are_not_sent_to_a_recording_url_on_another_origin(speech: Speech) -> None:
    speech.store.files["/c.wav"] = ("audio/wav", wav_bytes(1))
    results, _, _ = speech.run([recording(speech.url("/c.wav", host="other.test"))])
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and "not on recording_origin" in delivery.error
    assert speech.store.requests == []


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (401, 1), (503, 2)])
def test_recording_server_errors_fail_or_retry_by_status(
    speech: Speech, status: int, attempts: int
) -> None:
    results, _, _ = speech.run([recording(speech.url(f"/status/{status}"))], PLAIN, schedule=(0, 5))
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == attempts
    assert f"HTTP {status}" in delivery.error


def test_a_missing_recording_secret_fails_before_anything_is_sent(speech: Speech) -> None:
    results, _, _ = speech.run(
        [recording(speech.url("/private/c.wav"))], secrets={"speech_api_key": API_KEY}
    )
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and "recordings_token" in delivery.error
    assert speech.store.requests == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://files.test/a.wav", "https:// or gs://"),
        ("gs://bucket-only", "gs://bucket/object"),
        ("", "no recording_url"),
    ],
)
def test_a_recording_url_that_is_neither_https_nor_gs_fails_clearly(
    speech: Speech, url: str, expected: str
) -> None:
    results, _, _ = speech.run([recording(url)], PLAIN)
    assert expected in only(results).error


def test_explicit_encoding_and_rate_describe_headerless_audio(speech: Speech) -> None:
    speech.store.files["/raw.amr"] = ("audio/amr", b"#!AMR\n" + bytes(64))
    speech.store.files["/raw.pcm"] = ("application/octet-stream", bytes(3200))
    workflow = PLAIN + "    encoding: LINEAR16\n    sample_rate: 16000\n"
    results, _, _ = speech.run(
        [recording(speech.url("/raw.pcm"), 1), recording(speech.url("/raw.amr"), 2)], workflow
    )
    # The AMR file contradicts nothing Google can check, but LINEAR16 is what the action says.
    outcomes = [only([r]).outcome for r in results]
    assert outcomes == ["delivered", "delivered"], [only([r]).error for r in results]
    bodies = google_bodies(speech.google, ":recognize")
    assert bodies[0]["config"]["encoding"] == "LINEAR16"
    assert bodies[0]["config"]["sampleRateHertz"] == 16000


# --- workflow checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('    headers: {Authorization: "Bearer <<secrets.recordings_token>>"}\n', "need recording_origin"),
        ("    recording_origin: https://<<event.properties.host>>/\n", "recording_origin"),
        ("    recording_origin: https://recordings.test/calls\n", "without a path"),
        ("    encoding: WAV\n", "encoding"),
        ("    sample_rate: 4000\n", "sample_rate must be between 8000 and 48000"),
    ],
)  # fmt: skip
def test_workflow_checks_of_transcription_fields(extra: str, expected: str) -> None:
    with pytest.raises(FlowDocumentError) as raised:
        load_workflow_text(PLAIN + extra)
    assert expected in str(raised.value)


def run_recorded(responses: dict[tuple[str, str], Any], event: dict[str, Any]) -> Any:
    """PLAIN against recorded responses (no network): for answers no impersonation gives."""
    from flowlang.runtime.http import RecordedHttp, RecordedResponse

    recorded = RecordedHttp(
        {
            key: RecordedResponse(200, {"content-type": kind}, body)
            for key, (kind, body) in responses.items()
        }
    )

    async def main() -> Any:
        async with Automations(
            [load_workflow_text(PLAIN)],
            settings=DeliverySettings(schedule=(0,)),
            http=recorded,
            secrets=MappingSecrets(SECRETS),
            clock=FakeClock(),
        ) as automations:
            return await automations.dispatch(event)

    return only([asyncio.run(main())])


GOOGLE = "https://speech.googleapis.com/v1"


@pytest.mark.parametrize(
    ("method", "answer", "expected"),
    [
        ("longrunningrecognize", ("application/json", {"name": "../../admin"}), "no operation name"),
        ("longrunningrecognize", ("application/json", ["not", "an", "operation"]), "no operation name"),
        ("recognize", ("text/plain", "<html>proxy error</html>"), "not a recognition response"),
    ],
)  # fmt: skip
def test_garbage_from_google_fails_clearly(method: str, answer: Any, expected: str) -> None:
    duration = 95 if method == "longrunningrecognize" else 20
    delivery = run_recorded(
        {("POST", f"{GOOGLE}/speech:{method}"): answer},
        recording("gs://calls/a.wav", duration=duration),
    )
    assert delivery.outcome == "dead_lettered" and expected in delivery.error


def test_a_recording_url_to_a_refused_address_is_refused_by_the_guard(speech: Speech) -> None:
    results, _, _ = speech.run([recording(f"https://2130706433:{speech.rport}/c.wav")], PLAIN)
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and "127.0.0.1" in delivery.error
    assert speech.store.requests == []


def test_a_resumed_run_polls_the_operation_the_interrupted_run_started(
    speech: Speech, tmp_path: Any
) -> None:
    """A run stopped while polling leaves the operation in the store; the next process takes
    the event over and polls it, and does not start (and pay for) another."""
    from pathlib import Path

    from flowlang.automations import LocalStore

    speech.google.objects["gs://calls/c-77.wav"] = 95
    speech.google.mode = "never"
    path = Path(tmp_path) / "store.db"
    event = recording("gs://calls/c-77.wav", duration=95)
    base = f"https://speech.test:{speech.gport}/v1"

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    def automations(store: LocalStore) -> Automations:
        context = ssl.create_default_context()
        speech.ca.configure_trust(context)
        settings = DeliverySettings(
            allow_hosts=HOSTS,
            providers=Providers(speech_base_url=base),
            speech=SpeechSettings(max_polls=100_000, operation_deadline=10**6),
        )
        return Automations(
            [load_workflow_text(PLAIN)],
            settings=settings,
            ssl_context=context,
            resolver=resolver,
            secrets=MappingSecrets(SECRETS),
            clock=FakeClock(),
            store=store,
        )

    async def interrupted() -> None:
        async with automations(first_store) as first:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(first.dispatch(event), 1.0)  # stopped mid-polling

    first_store = LocalStore(path)
    asyncio.run(interrupted())
    counts = first_store.counts()
    first_store.close()  # the process is gone: its event is an orphan
    assert counts["operations"] == 1 and counts["settled"] == 0 and counts["open"] == 1
    with LocalStore(path) as peek:
        [found] = peek.take_over()
    [name] = found.operations.values()
    speech.google.mode = "normal"
    speech.google.operations[name]["polls"] = 10**6  # finished meanwhile

    async def resumed() -> list[Any]:
        async with automations(second_store) as second:
            return await second.resume()

    second_store = LocalStore(path)
    try:
        [result] = asyncio.run(resumed())
    finally:
        second_store.close()
    assert only([result]).outcome == "delivered", only([result]).error
    assert len(google_bodies(speech.google, ":longrunningrecognize")) == 1


def test_the_largest_recording_accepted_fits_googles_request_limit(speech: Speech) -> None:
    audio = wav_bytes(40.5, rate=44100, channels=2, tone=False)  # 7.1 MB, under 7 MiB
    assert len(audio) <= SpeechSettings().max_recording_bytes
    speech.store.files["/big.wav"] = ("audio/wav", audio)
    results, _, _ = speech.run([recording(speech.url("/big.wav"))], PLAIN)
    assert only(results).outcome == "delivered", only(results).error  # Google takes 10 MB
    [sent] = [r for r in speech.google.requests if r["path"].endswith(":recognize")]
    assert 9_000_000 < len(sent["body"]) <= 10 * 1024 * 1024


@pytest.mark.parametrize("duration", ["n/a", 10**400, -5, True, "1e9"])
def test_a_declared_duration_that_is_not_seconds_fails_clearly(
    speech: Speech, duration: Any
) -> None:
    results, _, _ = speech.run([recording("gs://calls/a.wav", duration=duration)], PLAIN)
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 1
    assert "event.properties.duration is not a number of seconds" in delivery.error


def test_an_https_recording_with_a_header_ignores_a_bad_declared_duration(speech: Speech) -> None:
    speech.store.files["/c.wav"] = ("audio/wav", wav_bytes(1))
    results, _, _ = speech.run([recording(speech.url("/c.wav"), duration="n/a")], PLAIN)
    assert only(results).outcome == "delivered", only(results).error


def test_a_header_value_that_cannot_be_sent_fails_permanently(speech: Speech) -> None:
    results, _, _ = speech.run(
        [recording(speech.url("/private/c.wav"))],
        schedule=(0, 5),
        secrets={**SECRETS, "recordings_token": "abc\r\nX-Injected: 1"},
    )
    delivery = only(results)
    assert delivery.outcome == "dead_lettered" and delivery.attempts == 1
    assert "line break" in delivery.error and speech.store.requests == []
