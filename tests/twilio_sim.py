"""A simulated Twilio: it drives calls through a flowlang server the way Twilio does.

It signs every request as Twilio does (HMAC-SHA1 of the URL it calls and the sorted form
fields, with the account's auth token; its own ten lines, a cross-check of the server's),
posts a call's first webhook, reads each TwiML answer verb by verb, answers Gathers with the
digits it is given (``None``: the caller presses nothing), can send every webhook twice,
reports transfers and recordings through their action and callback URLs, and ends the call
with a status callback. It talks to the server through any httpx.AsyncClient: an in-process
one (``httpx.ASGITransport``) or one aimed at a real uvicorn process; a call may move
between several servers (``clients``: one per webhook, in turn), as behind a load balancer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx

#: No call goes on for more webhooks than this (a flow that never ends fails the test).
MAX_TURNS = 50


def call_fields(call_id: str, **extra: str) -> list[tuple[str, str]]:
    """The form fields Twilio sends on every voice webhook of call ``call_id``, with ``extra``
    laid over them."""
    fields = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_id,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "From": "+14155550123",
        "To": "+18005550100",
        "Caller": "+14155550123",
        "Called": "+18005550100",
    }
    fields.update(extra)
    return list(fields.items())


def twilio_signature(token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and the sorted fields."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Call:
    """What happened on one simulated call."""

    sid: str
    said: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    gathers: list[dict[str, str]] = field(default_factory=list)
    #: The verb that ended the call: Hangup, Enqueue, Dial, Record, or "" (no more verbs).
    ended_by: str = ""
    #: Enqueue's queue, Dial's number/client/sip, Record's mailbox.
    target: str = ""
    documents: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    #: Answers to webhooks sent twice that differed from the first answer (should be none).
    differing_duplicates: list[tuple[str, str]] = field(default_factory=list)


class SimulatedTwilio:
    """Twilio, for one account (``token``) and a server published at ``public_url``."""

    def __init__(
        self,
        clients: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        public_url: str,
        token: str,
    ) -> None:
        self.clients = [clients] if isinstance(clients, httpx.AsyncClient) else list(clients)
        self._turn = itertools.cycle(range(len(self.clients)))
        self.public_url = public_url.rstrip("/")
        self.token = token
        self.sent = 0

    def _client(self) -> httpx.AsyncClient:
        return self.clients[next(self._turn)]

    async def post(
        self,
        url: str,
        params: Sequence[tuple[str, str]],
        *,
        token: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """POST ``params`` to ``url`` (a public URL), signed as Twilio signs."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        signature = twilio_signature(token or self.token, url, params)
        self.sent += 1
        return await (client or self._client()).post(
            target,
            content=urlencode(list(params)).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    def fields(self, call: Call, **extra: str) -> list[tuple[str, str]]:
        """The form fields Twilio sends on every voice webhook of ``call``."""
        return call_fields(call.sid, **extra)

    async def call(
        self,
        flow: str,
        digits: Sequence[str | None] = (),
        *,
        sid: str | None = None,
        twice: bool = False,
        caller: str = "+14155550123",
        status_callback: bool = True,
        agent_answers: bool = True,
    ) -> Call:
        """Place one call to ``flow`` and follow it to its end, answering each Gather with the
        next of ``digits`` (an empty string or None: no input). ``twice``: every webhook is
        sent again and both answers must be the same."""
        call = Call(sid or "CA" + secrets.token_hex(16))
        answers = list(digits)
        url = f"{self.public_url}/voice/{flow}"
        params = self.fields(call, From=caller, Caller=caller)
        for _ in range(MAX_TURNS):
            document = await self._webhook(call, url, params, twice)
            if document is None:
                break
            follow = await self._perform(call, document, answers, agent_answers)
            if follow is None:
                break
            url, extra = follow
            params = self.fields(call, From=caller, Caller=caller, **extra)
        else:
            raise AssertionError(f"call {call.sid} went on for more than {MAX_TURNS} webhooks")
        if status_callback:
            await self.status(call, "completed", duration="42")
        return call

    async def status(self, call: Call, status: str, duration: str = "0") -> httpx.Response:
        """A status callback for ``call``."""
        params = self.fields(call, CallStatus=status, CallDuration=duration)
        params += [("CallbackSource", "call-progress-events"), ("SequenceNumber", "3")]
        response = await self.post(f"{self.public_url}/twilio/status", params)
        call.statuses.append(response.status_code)
        return response

    async def _webhook(
        self, call: Call, url: str, params: list[tuple[str, str]], twice: bool
    ) -> ElementTree.Element | None:
        response = await self.post(url, params)
        call.statuses.append(response.status_code)
        if twice:
            again = await self.post(url, params)
            call.statuses.append(again.status_code)
            if again.text != response.text:
                call.differing_duplicates.append((response.text, again.text))
        if response.status_code != 200:
            return None
        call.documents.append(response.text)
        return ElementTree.fromstring(response.content)

    async def _perform(
        self,
        call: Call,
        document: ElementTree.Element,
        answers: list[str | None],
        agent_answers: bool,
    ) -> tuple[str, dict[str, str]] | None:
        """Play ``document``'s verbs; the next webhook (URL, extra fields), or None: the end."""
        assert document.tag == "Response", document.tag
        for verb in document:
            if verb.tag == "Say":
                call.said.append(verb.text or "")
            elif verb.tag == "Play":
                call.played.append(verb.text or "")
            elif verb.tag == "Pause":
                continue
            elif verb.tag == "Gather":
                return self._gather(call, verb, answers)
            elif verb.tag == "Redirect":
                return (verb.text or "", {})
            elif verb.tag in ("Enqueue", "Dial"):
                await self._transfer(call, verb, agent_answers)
                return None
            elif verb.tag == "Record":
                await self._record(call, verb)
                return None
            elif verb.tag == "Hangup":
                call.ended_by = "Hangup"
                return None
            else:
                raise AssertionError(f"unexpected TwiML verb {verb.tag}")
        return None

    def _gather(
        self, call: Call, verb: ElementTree.Element, answers: list[str | None]
    ) -> tuple[str, dict[str, str]]:
        call.gathers.append(dict(verb.attrib))
        for inner in verb:
            if inner.tag == "Say":
                call.said.append(inner.text or "")
            elif inner.tag == "Play":
                call.played.append(inner.text or "")
        pressed = answers.pop(0) if answers else None
        finish = verb.get("finishOnKey", "#")
        typed = pressed or ""
        if finish and finish in typed:
            typed = typed[: typed.index(finish)]
        limit = verb.get("numDigits")
        if limit and limit.isdigit():
            typed = typed[: int(limit)]
        assert verb.get("actionOnEmptyResult") == "true"
        return (
            verb.get("action") or "",
            {"Digits": typed, "FinishedOnKey": finish if pressed else ""},
        )

    async def _transfer(self, call: Call, verb: ElementTree.Element, agent_answers: bool) -> None:
        call.ended_by = verb.tag
        if verb.tag == "Enqueue":
            call.target = verb.text or ""
            extra = {"QueueResult": "bridged" if agent_answers else "hangup", "QueueTime": "7"}
        else:
            inner = next(iter(verb), None)
            call.target = (inner.text if inner is not None else verb.text) or ""
            extra = {"DialCallStatus": "completed" if agent_answers else "no-answer"}
        action = verb.get("action")
        if action:
            response = await self.post(action, self.fields(call, **extra))
            call.statuses.append(response.status_code)

    async def _record(self, call: Call, verb: ElementTree.Element) -> None:
        call.ended_by = "Record"
        callback = verb.get("recordingStatusCallback")
        recording = "RE" + secrets.token_hex(16)
        if callback:
            query = dict(httpx.URL(callback).params)
            call.target = query.get("mailbox", "")
            params = [
                ("AccountSid", "AC" + "0" * 32),
                ("CallSid", call.sid),
                ("RecordingSid", recording),
                (
                    "RecordingUrl",
                    f"https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/{recording}",
                ),
                ("RecordingStatus", "completed"),
                ("RecordingDuration", "31"),
                ("RecordingChannels", "1"),
                ("RecordingSource", "RecordVerb"),
            ]
            response = await self.post(callback, params)
            call.statuses.append(response.status_code)
        action = verb.get("action")
        if action:
            response = await self.post(action, self.fields(call, RecordingSid=recording))
            call.statuses.append(response.status_code)


def said_text(call: Call) -> str:
    """Everything the caller heard, one line."""
    return " ".join(call.said)
