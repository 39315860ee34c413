"""Speech: transcribe a recording with Google Speech-to-Text v1, within Google's rules.

Google v1 reads ``audio.uri`` only as a Cloud Storage ``gs://bucket/object`` URI, and inline
``audio.content`` (base64) only for audio of at most one minute, on ``speech:recognize`` and
``speech:longrunningrecognize`` alike (https://cloud.google.com/speech-to-text/docs/async-recognize).
So:

- a ``gs://`` recording passes through as ``uri``: ``speech:recognize`` when it lasts at most
  ``sync_seconds`` (or its length is unknown; Google's "Sync input too long" then moves it to
  the long-running method), else ``speech:longrunningrecognize``, whose operation is polled
  (``operations/{name}``) with growing intervals, at most ``max_polls`` times and within
  ``operation_deadline`` seconds;
- an ``https://`` recording is fetched through the guarded HTTP layer (address guard, one
  deadline, at most ``max_recording_bytes``; the action's ``headers`` only to its fixed
  ``recording_origin``, never across a redirect to another origin), its encoding, sample rate
  and length read from its header (or the action's fields), and sent inline to
  ``speech:recognize``. Longer than a minute, Google refuses it inline: a permanent failure
  that says to store such recordings in Cloud Storage.

An operation that outlives its deadline is a retryable timeout: the operation's name is kept
by idempotency key, so the retry polls it again instead of starting another, and recorded in
the store (its ``operations`` table), so a run that resumes an interrupted event polls it too.
Without a store, a process that stops forgets it and the rerun starts a new operation.
"""

from __future__ import annotations

__all__ = ["SpeechSettings", "transcribe"]

import base64
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from flowlang.automations.audio import AudioError, AudioFacts, describe_audio
from flowlang.expr.values import OutputTooLong, to_text
from flowlang.http_rules import (
    PreparedRequest,
    RequestError,
    check_header,
    encode_body,
    origin_of,
)
from flowlang.runtime.http import RAW_BODY, HttpResult, HttpSender
from flowlang.runtime.secrets import SecretUse
from flowlang.settings import check_counts, check_durations

#: Media types a recording may be served as (none at all is allowed too: the bytes decide).
_AUDIO_TYPES = ("application/octet-stream", "binary/octet-stream", "application/ogg")
#: What a Google long-running operation's name is made of (they are numbers in v1).
_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_TOO_LONG_SYNC = "Sync input too long"


@dataclass(frozen=True)
class SpeechSettings:
    """Limits of transcriptions (README, "Speech-to-text")."""

    #: A fetched recording larger than this is refused (Google's request limit is 10 MB and
    #: base64 adds a third: 7 MiB of audio is about 9.3 MiB of request).
    max_recording_bytes: int = 7 * 1024 * 1024
    #: The request to Google (its limit: 10 MB).
    max_request_bytes: int = 10 * 1024 * 1024
    #: Longer audio uses speech:longrunningrecognize (Google's sync limit: one minute).
    sync_seconds: float = 60.0
    #: How long one attempt waits for a long-running operation, polling.
    operation_deadline: float = 600.0
    #: The first wait before polling, doubled after each poll up to max_poll_interval.
    poll_interval: float = 1.0
    max_poll_interval: float = 30.0
    max_polls: int = 60
    #: Google's answers (a long recording's transcript with its alternatives).
    max_response_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        check_counts(
            self, ("max_recording_bytes", "max_request_bytes", "max_polls", "max_response_bytes")
        )
        check_durations(
            self, ("sync_seconds", "operation_deadline", "poll_interval", "max_poll_interval")
        )


class Clock(Protocol):
    """The dispatcher's clock (a fake one in tests)."""

    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class _Failed(Exception):  # noqa: N818 - control flow: an outcome, not an error
    """Ends an attempt with an outcome: ``failed`` (permanent) or ``retry``."""

    def __init__(self, outcome: str, error: str, sent: HttpResult | None = None) -> None:
        super().__init__(error)
        self.outcome, self.error, self.sent = outcome, error, sent


def _text(name: str, value: Any, limit: int = 2048) -> str:
    try:
        return to_text(value, limit)
    except OutputTooLong:
        raise _Failed("failed", f"{name} is longer than {limit} characters") from None


def _retryable(result: HttpResult) -> bool:
    status = result.status
    return result.outcome in ("timeout", "connection_error") or (
        status is not None and (status in (408, 425, 429) or 500 <= status < 600)
    )


def _google_error(result: HttpResult) -> str:
    """Google's ``{"error": {"code", "message", "status"}}`` as one line."""
    body = result.body
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        status = _text("status", error.get("status", ""), 64)
        message = _text("message", error.get("message", ""), 300)
        return f"Google answered {result.status} {status}: {message}".rstrip(": ")
    return result.error or f"HTTP {result.status}"


def _duration(value: Any, where: str) -> float | None:
    """Seconds from an event or action value (a number, or digits); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Failed("failed", f"{where} is not a number of seconds")
    if isinstance(value, int) and not 0 <= value < 10**7:
        raise _Failed("failed", f"{where} is not a number of seconds: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = _text(where, value, 32).strip()
        if not text.replace(".", "", 1).isascii() or not text.replace(".", "", 1).isdigit():
            raise _Failed("failed", f"{where} is not a number of seconds: {text!r}")
        seconds = float(text)
    if not 0 <= seconds < 10**7:
        raise _Failed("failed", f"{where} is not a number of seconds: {value!r}")
    return seconds


def _check_gs(uri: str) -> None:
    bucket, _, name = uri[5:].partition("/")
    if not bucket or not name or len(uri) > 2048:
        raise _Failed("failed", f"recording_url {uri!r} is not gs://bucket/object")


def results_of(body: Any) -> dict[str, Any]:
    """``transcript`` (the first alternative of each result, joined) and mean ``confidence``."""
    results = body.get("results", []) if isinstance(body, Mapping) else []
    pieces, confidences = [], []
    for item in results if isinstance(results, list) else []:
        alternatives = item.get("alternatives") if isinstance(item, Mapping) else None
        if isinstance(alternatives, list) and alternatives and isinstance(alternatives[0], Mapping):
            pieces.append(to_text(alternatives[0].get("transcript")))
            confidence = alternatives[0].get("confidence")
            if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
                confidences.append(float(confidence))
    mean = sum(confidences) / len(confidences) if confidences else None
    return {"transcript": " ".join(p for p in pieces if p), "confidence": mean}


class _Transcription:
    """One attempt of one transcribe_recording action."""

    def __init__(
        self,
        action: Any,
        scope: Mapping[str, Any],
        http: HttpSender,
        base_url: str,
        api_key: str,
        settings: SpeechSettings,
        key: str,
        timeout: float,
        clock: Clock,
        operations: MutableMapping[str, str],
        started: Callable[[str], None] | None = None,
    ) -> None:
        self.action, self.scope, self.http = action, scope, http
        self.started = started
        self.base_url, self.settings, self.key = base_url, settings, key
        self.timeout, self.clock, self.operations = timeout, clock, operations
        self.auth = [("X-Goog-Api-Key", check_header("X-Goog-Api-Key", api_key))]

    # --- the recording ------------------------------------------------------------------

    def recording_url(self) -> str:
        template = self.action.fields.get("recording_url")
        if template is not None:
            value = template.render(self.scope)
        else:
            event = self.scope.get("event") or {}
            properties = event.get("properties") if isinstance(event, Mapping) else None
            value = properties.get("recording_url") if isinstance(properties, Mapping) else None
        if not isinstance(value, str) or not value.strip():
            raise _Failed("failed", "the event has no recording_url")
        return value.strip()

    def declared_duration(self) -> float | None:
        template = self.action.fields.get("duration")
        if template is not None:
            return _duration(template.render(self.scope), "duration")
        event = self.scope.get("event") or {}
        properties = event.get("properties") if isinstance(event, Mapping) else None
        found = properties.get("duration") if isinstance(properties, Mapping) else None
        return _duration(found, "event.properties.duration")

    async def fetch(self, url: str) -> bytes:
        """The recording's bytes, through the guarded sender."""
        fields = self.action.fields
        headers: list[tuple[str, str]] = [("Accept", "audio/*, application/octet-stream")]
        if fields.get("headers"):
            try:
                origin = origin_of(url)
            except ValueError as error:
                raise _Failed("failed", f"recording_url {url!r}: {error}") from None
            if origin != fields["recording_origin"]:
                allowed = fields["recording_origin"]
                raise _Failed(
                    "failed",
                    f"recording_url is on {origin.scheme}://{origin.host}:{origin.port}, not on "
                    f"recording_origin {allowed.scheme}://{allowed.host}:{allowed.port}: its "
                    "headers are not sent there",
                )
            secrets = self.scope.get("secrets")
            try:
                for name, template in fields["headers"]:
                    value = _text(f"headers.{name}", template.render(self.scope))
                    headers.append((name, check_header(name, value)))
            finally:  # a missing secret is what went wrong, whatever it broke
                missing = secrets.problem() if isinstance(secrets, SecretUse) else None
                if missing is not None:
                    raise _Failed("failed", missing)
        request = PreparedRequest("GET", url, tuple(headers), extensions={RAW_BODY: True})
        limit = self.settings.max_recording_bytes
        sent = await self.http.send(
            request, timeout=self.timeout, max_body=limit, follow_redirects=True
        )
        if sent.outcome == "success" and isinstance(sent.body, bytes):
            media = sent.headers.get("content-type", "").split(";")[0].strip().lower()
            if media and not media.startswith("audio/") and media not in _AUDIO_TYPES:
                raise _Failed("failed", f"the recording server answered {media!r}, not audio", sent)
            if not sent.body:
                raise _Failed("failed", "the recording is empty", sent)
            return sent.body
        where = "fetching the recording"
        if sent.outcome == "too_large":
            raise _Failed(
                "failed",
                f"{where}: the recording is larger than {limit} bytes, the most Google takes "
                "inline; store it in Cloud Storage and send its gs:// URL",
                sent,
            )
        outcome = "retry" if _retryable(sent) else "failed"
        raise _Failed(outcome, f"{where}: {sent.error or sent.outcome}", sent)

    def facts(self, data: bytes) -> AudioFacts:
        fields = self.action.fields
        try:
            return describe_audio(data, fields.get("encoding"), fields.get("sample_rate"))
        except AudioError as error:
            raise _Failed("failed", str(error)) from None

    # --- Google -------------------------------------------------------------------------

    def config(self, facts: AudioFacts | None) -> dict[str, Any]:
        fields = self.action.fields
        config: dict[str, Any] = {}
        encoding, rate = fields.get("encoding"), fields.get("sample_rate")
        if facts is not None:
            encoding, rate = facts.encoding, facts.sample_rate
            if facts.channels > 1:
                config["audioChannelCount"] = facts.channels
        if encoding is not None:
            config["encoding"] = encoding
        if rate is not None:
            config["sampleRateHertz"] = rate
        return {
            **config,
            "languageCode": _text("language", fields["language"].render(self.scope)),
            "model": fields["model"],
            "useEnhanced": bool(fields["enhanced"]),
        }

    async def post(self, method: str, body: dict[str, Any]) -> HttpResult:
        try:
            payload = encode_body(body, self.settings.max_request_bytes)
        except RequestError as error:
            raise _Failed("failed", str(error)) from None
        request = PreparedRequest(
            "POST",
            f"{self.base_url}/speech:{method}",
            (*self.auth, ("Idempotency-Key", self.key), ("Content-Type", "application/json")),
            payload,
        )
        return await self.http.send(
            request,
            timeout=self.timeout,
            max_body=self.settings.max_response_bytes,
            follow_redirects=False,
        )

    def settle(self, sent: HttpResult) -> None:
        """Raise the outcome of a failed Google answer."""
        if sent.outcome == "success":
            return
        raise _Failed("retry" if _retryable(sent) else "failed", _google_error(sent), sent)

    async def long_running(self, body: dict[str, Any]) -> tuple[dict[str, Any], HttpResult]:
        name = self.operations.get(self.key)
        if name is not None and (not name or set(name) - _NAME_CHARACTERS):
            name = None  # not one Google gave (a store edited by hand): start anew
        last: HttpResult | None = None
        if name is None:
            last = await self.post("longrunningrecognize", body)
            self.settle(last)
            name = last.body.get("name") if isinstance(last.body, Mapping) else None
            if not isinstance(name, str) or not name or set(name) - _NAME_CHARACTERS:
                raise _Failed("failed", "Google's long-running answer has no operation name", last)
            self.operations[self.key] = name
            if self.started is not None:
                self.started(name)
        settings = self.settings
        deadline = self.clock.now() + settings.operation_deadline
        wait = settings.poll_interval
        request = PreparedRequest("GET", f"{self.base_url}/operations/{name}", tuple(self.auth))
        for _ in range(settings.max_polls):
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                break
            await self.clock.sleep(min(wait, remaining))
            wait = min(wait * 2, settings.max_poll_interval)
            last = await self.http.send(
                request,
                timeout=self.timeout,
                max_body=self.settings.max_response_bytes,
                follow_redirects=False,
            )
            if _retryable(last):
                continue  # the operation goes on; ask again
            if last.status == 404:
                self.operations.pop(self.key, None)
                raise _Failed("retry", f"Google no longer knows operation {name}", last)
            self.settle(last)
            operation = last.body
            done = operation.get("done", False) if isinstance(operation, Mapping) else None
            if not isinstance(done, bool):
                self.operations.pop(self.key, None)
                raise _Failed("failed", f"operation {name}: the answer is not an operation", last)
            if not done:
                continue
            self.operations.pop(self.key, None)
            error = operation.get("error")
            if error is not None:
                status = {"error": error} if isinstance(error, Mapping) else {}
                failed = HttpResult("http_error", last.status, last.headers, status)
                raise _Failed("failed", f"operation {name} failed: {_google_error(failed)}", last)
            response = operation.get("response")
            if not isinstance(response, Mapping):
                raise _Failed("failed", f"operation {name} finished without a response", last)
            return results_of(response), last
        seconds = settings.operation_deadline
        timed_out = HttpResult("timeout", error=f"operation {name} unfinished after {seconds:g}s")
        raise _Failed("retry", timed_out.error or "", timed_out)

    async def run(self) -> tuple[dict[str, Any], HttpResult]:
        url = self.recording_url()
        facts: AudioFacts | None = None
        if url[:5].lower() == "gs://":
            _check_gs(url)
            audio: dict[str, Any] = {"uri": url}
            duration = self.declared_duration()
        elif url[:8].lower() == "https://" or url[:7].lower() == "http://":
            data = await self.fetch(url)
            facts = self.facts(data)
            duration = facts.duration if facts.duration is not None else self.declared_duration()
            limit = self.settings.sync_seconds
            if duration is not None and duration > limit:
                raise _Failed(
                    "failed",
                    f"the recording lasts {duration:.0f} s: Google takes inline audio of at most "
                    f"{limit:g} s (recognize and longrunningrecognize alike); store longer "
                    "recordings in Cloud Storage and send their gs:// URL",
                )
            audio = {"content": base64.b64encode(data).decode("ascii")}
        else:
            raise _Failed("failed", "recording_url must be an https:// or gs:// URL")
        body = {"config": self.config(facts), "audio": audio}
        if duration is not None and duration > self.settings.sync_seconds:
            return await self.long_running(body)
        sent = await self.post("recognize", body)
        if sent.status == 400 and "uri" in audio and _TOO_LONG_SYNC in _google_error(sent):
            return await self.long_running(body)
        self.settle(sent)
        if not isinstance(sent.body, Mapping):
            raise _Failed("failed", "Google's answer is not a recognition response", sent)
        return results_of(sent.body), sent


async def transcribe(
    action: Any,
    scope: Mapping[str, Any],
    http: HttpSender,
    *,
    base_url: str,
    api_key: str,
    settings: SpeechSettings,
    key: str,
    timeout: float,
    clock: Clock,
    operations: MutableMapping[str, str],
    started: Callable[[str], None] | None = None,
) -> tuple[str, Any, str | None, HttpResult | None]:
    """One attempt: ``(outcome, result, error, last response)`` as dispatch's attempts are;
    the result is ``{"transcript", "confidence"}``. ``operations`` holds long-running
    operation names by idempotency key (polled again instead of started anew); ``started``
    hears each new one (the dispatcher records it in the store)."""
    try:
        attempt = _Transcription(
            action,
            scope,
            http,
            base_url,
            api_key,
            settings,
            key,
            timeout,
            clock,
            operations,
            started,
        )
        result, sent = await attempt.run()
    except _Failed as failed:
        return failed.outcome, None, f"{action.id}: {failed.error}", failed.sent
    except RequestError as problem:  # a header value that cannot be sent: permanent
        return "failed", None, f"{action.id}: {problem}", None
    return "delivered", result, None, sent
