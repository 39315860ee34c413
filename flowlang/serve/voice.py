"""Voice: one TwiML webhook of a call: start its run, resume it with the caller's digits, or
note what became of it (transfer, recording, end of call).

Every answer is TwiML. What a caller can make happen never raises here: a webhook for an
unknown or expired call, a state that cannot resume, a run that fails each get the configured
apology (then the fallback transfer, or a hang-up) and a log line; only a malformed request
(no CallSid, a ``seq`` that is not a number) is a 400.
"""

from __future__ import annotations

__all__ = [
    "FINAL_CALL_STATUSES",
    "EventSink",
    "Reply",
    "VoiceCalls",
    "call_context",
    "form_value",
]

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

from flowlang.errors import FlowDocumentError, FlowStateError
from flowlang.flow.load import load_flow_text
from flowlang.flow.model import CompiledFlow
from flowlang.observe import Observer
from flowlang.runtime.results import RunResult
from flowlang.runtime.runner import Runtime
from flowlang.serve.calls import CallRecord, CallStore, CallStoreError
from flowlang.serve.settings import ServeSettings
from flowlang.serve.twiml import Links, apology_twiml, hangup_twiml, twiml_for

log = logging.getLogger("flowlang.serve")

#: What a call id (Twilio's CallSid, or another provider's) may be made of.
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The statuses of a call that is over (status callbacks).
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
#: The longest form value a call's context or an event takes from a webhook, characters.
MAX_FIELD = 256
#: Seconds a segment's claim outlives the segment deadline (then a copy may run it): more
#: than the store's own worst case around a segment (a few commands, each with its timeout,
#: pool wait and one retry), so a live segment is never run twice.
CLAIM_MARGIN = 30.0
#: Seconds between two writes of a flow version's source to the store.
KEEP_SOURCE_EVERY = 3600.0
#: The namespace of the ids of the calls' own events (POST /events may not use it).
INTERNAL_ID = "twilio:"
#: The outcome of a call whose status callback said it is over.
CALL_OVER = "call_over"
#: The instruction that ends a flow with each outcome a record keeps.
_ENDINGS = ("transfer", "voicemail", "hangup")


class Reply(NamedTuple):
    """A webhook's answer: the HTTP status and the TwiML (or an error message, for a 400)."""

    status: int
    body: str


class EventSink(Protocol):
    """Where the calls' own events go (``call.ended``, ``recording.uploaded``)."""

    async def submit(self, event: dict[str, Any]) -> str:
        """Record ``event`` durably and dispatch it: ``accepted`` or ``duplicate``."""


def form_value(params: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of form field ``name`` (cut to MAX_FIELD characters), or None."""
    for key, value in params:
        if key == name:
            return value[:MAX_FIELD]
    return None


def call_context(params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The ``call`` a run starts with, from the first webhook's form (Twilio's fields):
    ``id`` and ``uuid`` (CallSid), ``external_number`` (the caller on an inbound call, the one
    called on an outbound one), ``internal_number`` (the other), ``direction`` (``inbound`` or
    ``outbound``), ``caller_name`` (CallerName), ``forwarded_from``, ``parent_call_id``,
    ``account_id``, ``status`` (CallStatus) and ``provider`` (``twilio``). Absent fields are
    None."""

    def field(name: str) -> str | None:
        return form_value(params, name) or None

    direction = "inbound" if (field("Direction") or "inbound") == "inbound" else "outbound"
    caller, called = field("From"), field("To")
    external, internal = (caller, called) if direction == "inbound" else (called, caller)
    call_id = field("CallSid")
    return {
        "id": call_id,
        "uuid": call_id,
        "external_number": external,
        "internal_number": internal,
        "direction": direction,
        "caller_name": field("CallerName"),
        "forwarded_from": field("ForwardedFrom"),
        "parent_call_id": field("ParentCallSid"),
        "account_id": field("AccountSid"),
        "status": field("CallStatus"),
        "provider": "twilio",
    }


def _sid(params: Sequence[tuple[str, str]], name: str = "CallSid") -> str | None:
    """Form field ``name`` when it is an id Twilio could have sent (``_CALL_ID``), else None."""
    value = form_value(params, name)
    return value if value is not None and _CALL_ID.fullmatch(value) else None


def _whole_number(text: str | None) -> int:
    """A callback's count of seconds (``CallDuration``, ``QueueTime``); 0 when not a number."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 9:
        return 0
    return int(text)


class VoiceCalls:
    """Answers the voice webhooks of ``flows`` (by name) with ``runtime``, keeping each waiting
    call in ``store``. ``events`` receives ``call.ended`` and ``recording.uploaded``;
    ``observer`` is told of every segment. ``load_version`` compiles a flow version's source
    (kept in the store) that this process never loaded: after a redeploy, a call started on
    another replica's older version finishes on it. ``context``: the context every run starts
    from (the webhook's call fields laid over its ``call``)."""

    def __init__(
        self,
        flows: Mapping[str, CompiledFlow],
        runtime: Runtime,
        store: CallStore,
        settings: ServeSettings,
        observer: Observer,
        events: EventSink,
        load_version: Callable[[str], CompiledFlow] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        for name in flows:
            if "/" in name:
                raise ValueError(f"flow {name!r}: a served flow's name cannot hold '/'")
        self.flows = dict(flows)
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.observer = observer
        self.events = events
        self._load_version = load_version or (lambda source: load_flow_text(source))
        #: What every call's context starts from (``call.office``, say); the webhook's call
        #: fields are laid over its ``call``.
        self.context = dict(context or {})
        #: When each flow version's source was last kept in the store (monotonic seconds).
        self._kept: dict[str, float] = {}
        self._claim_seconds = settings.segment_deadline + CLAIM_MARGIN
        base = settings.public_url
        self._transfer = f"{base}/twilio/transfer"
        self._voicemail = f"{base}/twilio/voicemail"
        self._recording = f"{base}/twilio/recording"

    def links(self, flow: str, seq: int, direction: str = "inbound") -> Links:
        """The URLs a call's TwiML points Twilio at: the Gather action carries ``seq``, the
        recording callback the call's direction (what ``recording.uploaded`` tells)."""
        return Links(
            gather=f"{self.settings.public_url}/voice/{quote(flow, safe='')}?seq={seq}",
            transfer=self._transfer,
            voicemail=self._voicemail,
            recording=f"{self._recording}?direction={quote(direction, safe='')}",
        )

    async def keep_flows(self) -> None:
        """Keep the source of every served flow in the store (other replicas may need it)."""
        for flow in self.flows.values():
            await self._keep_source(flow)

    # --- the voice webhook ----------------------------------------------------------------

    async def webhook(
        self, flow_name: str, params: Sequence[tuple[str, str]], seq_text: str | None
    ) -> Reply:
        """Answer ``POST /voice/{flow}``: the first webhook of a call (no ``seq``) starts a run;
        a Gather action (``seq`` = the suspension it answers) resumes it with ``Digits``.

        Whatever goes wrong after the request was read (an unknown flow or call, a store that
        cannot be reached) is answered 200 with the apology: Twilio plays no TwiML of a 4xx
        or 5xx answer, it would say "an application error has occurred" instead.
        """
        call_id = _sid(params)
        if call_id is None:
            return Reply(400, "a voice webhook needs a CallSid of letters, digits, '_' or '-'")
        if seq_text is not None and (
            not seq_text.isascii() or not seq_text.isdigit() or len(seq_text) > 9
        ):
            return Reply(400, "seq must be a whole number")
        flow = self.flows.get(flow_name)
        if flow is None:
            log.warning("webhook for a flow not served", extra={"event": "webhook.unknown_flow"})
            return Reply(200, apology_twiml(self.settings, None))
        try:
            if seq_text is None:
                return await self._first(flow, call_id, params)
            return await self._resume(flow, call_id, int(seq_text), form_value(params, "Digits"))
        except CallStoreError as error:  # the caller hears the apology, then the fallback
            log.error("%s", error, extra={"event": "call.store_failed", "flow": flow.name})
            return self._apology(flow.name)

    def _apology(self, flow: str) -> Reply:
        return Reply(200, apology_twiml(self.settings, self.links(flow, 0)))

    async def _first(
        self, flow: CompiledFlow, call_id: str, params: Sequence[tuple[str, str]]
    ) -> Reply:
        """A call's first webhook of ``flow``: start a run. A copy delivered again gets the
        call's answer; a call redirected from another flow starts this one."""
        try:  # one round trip: the record, and the turn of a call that has none yet
            claimed, earlier = await self.store.claim_and_get(
                call_id, 0, self._claim_seconds, first=True
            )
        except ValueError as error:  # unreadable: nothing could be stored over it either
            log.error("%s", error, extra={"event": "call.unreadable"})
            return self._apology(flow.name)
        base = 0
        if earlier is not None:
            if earlier.flow == flow.name or earlier.outcome == CALL_OVER:
                return Reply(200, earlier.twiml)
            base = earlier.seq  # sent here by a <Redirect>: this flow takes the call over
        if not claimed:
            claimed, answered = await self._turn(call_id, base, first=earlier is None)
            if not claimed:
                return Reply(200, answered.twiml) if answered else self._apology(flow.name)
        await self._keep_source(flow)
        call = dict(earlier.call) if earlier is not None else call_context(params)
        record = CallRecord(
            seq=base,
            flow=flow.name,
            fingerprint=flow.fingerprint,
            twiml="",
            call=call,
            started_at=earlier.started_at if earlier is not None else time.time(),
        )
        context = dict(self.context)
        given = {name: value for name, value in call.items() if value is not None}
        base_call = context.get("call")
        context["call"] = {**base_call, **given} if isinstance(base_call, Mapping) else given
        result = await self._segment(
            flow, call_id, False, lambda: self.runtime.start(flow, context)
        )
        record = self._next(record, flow, result)
        if earlier is None:
            stored = await self.store.create(call_id, record)
        else:
            stored = await self.store.replace(call_id, base, record)
        if not stored:  # the call ended meanwhile (its status callback came first)
            current = await self._record(call_id)
            return Reply(200, current.twiml if current is not None else record.twiml)
        self._waiting_changed(
            flow.name, earlier is not None and earlier.state is not None, record.state is not None
        )
        return Reply(200, record.twiml)

    async def _resume(
        self, flow: CompiledFlow, call_id: str, seq: int, digits: str | None
    ) -> Reply:
        """A Gather action: resume the waiting run once; a copy gets the same answer."""
        claimed, record = await self._claim(call_id, seq)  # one round trip: claim and record
        if not claimed and record is not None and record.seq == seq and record.state is not None:
            # a copy runs it (or ran it and died): wait for its answer, or for the turn
            waited_on = record.flow
            claimed, record = await self._turn(call_id, seq)
            if not claimed:
                return Reply(200, record.twiml) if record else self._apology(waited_on)
        if record is None:
            log.info("webhook for an unknown call", extra={"event": "webhook.unknown_call"})
            return self._apology(flow.name)
        if record.seq > seq:  # delivered again after it was answered
            return Reply(200, record.twiml)
        if record.seq < seq or record.state is None or not claimed:
            log.warning("a webhook out of turn", extra={"event": "webhook.out_of_turn"})
            return self._apology(record.flow)
        try:
            version = await self._version(record.fingerprint, flow)
            running = self.runtime.resume(version, record.state, digits or None)
        except (FlowStateError, FlowDocumentError) as error:
            log.warning(
                "a call's state cannot resume: %s",
                error,
                extra={"event": "run.unresumable", "flow": flow.name},
            )
            result = RunResult("failed", [], [], error=str(error))
        else:
            result = await self._segment(version, call_id, True, lambda: running)
        following = self._next(record, flow, result)
        if not await self.store.replace(call_id, seq, following):
            current = await self._record(call_id)
            return Reply(200, current.twiml) if current is not None else self._apology(flow.name)
        self._waiting_changed(record.flow, True, following.state is not None)
        return Reply(200, following.twiml)

    async def _turn(
        self, call_id: str, seq: int, first: bool = False
    ) -> tuple[bool, CallRecord | None]:
        """Wait for the turn to run the segment of ``(call_id, seq)`` that another copy of the
        webhook claimed: ``(True, record)`` once this webhook holds the claim (``record``: the
        call's record then; None for a new call, with ``first``); ``(False, record)`` when
        another copy answered meanwhile; ``(False, None)`` when neither happened within
        ``duplicate_wait`` seconds, or the call's record is gone or behind ``seq``. A claim
        lapses ``segment_deadline`` + CLAIM_MARGIN seconds after it was taken, so a copy whose
        holder died runs the segment itself. Each attempt is one store round trip."""
        deadline = time.monotonic() + self.settings.duplicate_wait
        pause = 0.01
        while True:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
            claimed, record = await self._claim(call_id, seq, first)
            if claimed:
                return True, record
            if record is not None and record.seq > seq:
                return False, record
            if not first and (record is None or record.seq < seq):
                return False, None  # the call ended or moved elsewhere: nothing to wait for
            if time.monotonic() >= deadline:
                log.warning("a duplicate webhook waited in vain", extra={"event": "webhook.stuck"})
                return False, None

    async def _claim(
        self, call_id: str, seq: int, first: bool = False
    ) -> tuple[bool, CallRecord | None]:
        """:meth:`CallStore.claim_and_get` with this server's claim time; an unreadable record
        is logged and treated as absent (and unclaimed)."""
        try:
            return await self.store.claim_and_get(call_id, seq, self._claim_seconds, first=first)
        except ValueError as error:
            log.error("%s", error, extra={"event": "call.unreadable"})
            return False, None

    async def _keep_source(self, flow: CompiledFlow) -> None:
        """Keep ``flow``'s source in the store, again every KEEP_SOURCE_EVERY seconds (the
        store keeps it 7 days after the last time: calls on it must outlive the replica)."""
        now = time.monotonic()
        kept = self._kept.get(flow.fingerprint)
        if kept is None or now - kept >= KEEP_SOURCE_EVERY:
            await self.store.keep_flow(flow.fingerprint, flow.source)
            self._kept[flow.fingerprint] = now

    async def _version(self, fingerprint: str, flow: CompiledFlow) -> CompiledFlow:
        """The flow version a call runs on: ``flow`` itself, one this runtime keeps, or one
        compiled from the source the store keeps (FlowStateError when none is found)."""
        if fingerprint == flow.fingerprint:
            return flow
        versions = self.runtime.flow_versions
        if versions is not None and fingerprint in versions:
            return flow
        source = await self.store.flow_source(fingerprint)
        if source is None:
            raise FlowStateError(f"flow version {fingerprint[:16]} of {flow.name!r} is not kept")
        version = self._load_version(source)
        if version.fingerprint != fingerprint or version.name != flow.name:
            raise FlowStateError(f"the kept source of flow version {fingerprint[:16]} differs")
        if versions is not None:
            versions.add(version)
        return version

    async def _segment(
        self,
        flow: CompiledFlow,
        call_id: str,
        resumed: bool,
        run: Callable[[], Awaitable[RunResult]],
    ) -> RunResult:
        """Run one segment, observed; a context the runtime refuses is a failed run."""
        began = time.perf_counter()
        with self.observer.segment(flow.name, call_id, resumed):
            try:
                result = await run()
            except ValueError as error:  # the first webhook's fields, refused by the runtime
                result = RunResult("failed", [], [], error=str(error))
        self.observer.segment_finished(
            flow, result, time.perf_counter() - began, call_id=call_id, resumed=resumed
        )
        return result

    def _next(self, record: CallRecord, flow: CompiledFlow, result: RunResult) -> CallRecord:
        """The call's record after a segment came to ``result``, with its TwiML."""
        waiting = result.status == "waiting_for_input" and result.state is not None
        # one more per webhook of the call, whichever flow runs it: a flow that takes the call
        # over (a <Redirect>) numbers its waits on from the call's, never again from 1
        seq = record.seq + 1
        outcome, target = self._outcome(result)
        links = self.links(flow.name, seq, str(record.call.get("direction") or "inbound"))
        try:
            twiml = twiml_for(result, links, self.settings)
        except ValueError:  # a transfer target no rule takes (its text may be a caller's number)
            log.warning(
                "the run's answer cannot be TwiML (a transfer target Twilio cannot dial)",
                extra={"event": "run.untranslatable", "flow": flow.name},
            )
            twiml, outcome = apology_twiml(self.settings, links), "failed"
        return record.but(
            seq=seq,
            state=result.state if waiting else None,
            twiml=twiml,
            outcome=outcome,
            target=target,
        )

    @staticmethod
    def _outcome(result: RunResult) -> tuple[str, str | None]:
        if result.status == "waiting_for_input":
            return "waiting", None
        if result.status in ("completed", "failed"):
            return result.status, None
        for instruction in reversed(result.instructions):
            action = instruction.get("action")
            if action in _ENDINGS:
                return str(action), instruction.get("target") or instruction.get("mailbox")
        return result.status, None

    def _waiting_changed(self, flow: str, before: bool, after: bool) -> None:
        """Tell the observer when a call starts or stops waiting for the caller."""
        if before != after:
            self.observer.calls_waiting(flow, 1 if after else -1)

    async def _record(self, call_id: str) -> CallRecord | None:
        """The call's record; an unreadable one is logged and treated as absent."""
        try:
            return await self.store.get(call_id)
        except ValueError as error:
            log.error("%s", error, extra={"event": "call.unreadable"})
            return None

    # --- callbacks ----------------------------------------------------------------------------

    async def status(self, params: Sequence[tuple[str, str]]) -> Reply:
        """A status callback: a call that is over loses its record and becomes ``call.ended``."""
        call_id = _sid(params)
        if call_id is None:
            return Reply(400, "a status callback needs a CallSid")
        status = form_value(params, "CallStatus")
        if status not in FINAL_CALL_STATUSES:
            return Reply(204, "")
        try:
            record = await self.store.get(call_id)
        except (ValueError, CallStoreError) as error:  # the event goes out all the same
            log.error("%s", error, extra={"event": "call.unreadable"})
            record = None
        # recorded first: should that fail (503), the call's record is still there
        await self.events.submit(call_ended(params, record))
        try:
            deleted = await self.store.delete(call_id)
            if deleted is None or deleted.outcome == CALL_OVER:
                # over before its first webhook stored anything (or a callback sent again):
                # a first webhook finishing later must find the call over
                await self.store.create(call_id, _call_over(params))
        except (ValueError, CallStoreError) as error:  # it expires with its time to live
            log.error("%s", error, extra={"event": "call.unreadable"})
            deleted = None
        if deleted is not None and deleted.state is not None:
            self.observer.calls_waiting(deleted.flow, -1)
        return Reply(204, "")

    async def transfer_done(self, params: Sequence[tuple[str, str]]) -> Reply:
        """The action of a Dial or Enqueue: note whether an agent took the call and how long
        the caller waited in the queue; then the call is over."""
        call_id = _sid(params)
        if call_id is not None:
            answered = form_value(params, "DialCallStatus") == "completed" or (
                form_value(params, "QueueResult") == "bridged"
            )
            waited = _whole_number(form_value(params, "QueueTime"))
            try:
                await self._note_transfer(call_id, answered, waited)
            except CallStoreError as error:  # call.ended then says not answered
                log.error("%s", error, extra={"event": "call.store_failed"})
        return Reply(200, hangup_twiml())

    async def _note_transfer(self, call_id: str, answered: bool, waited: int) -> None:
        for _ in range(3):  # compare-and-set against a concurrent callback
            record = await self._record(call_id)
            if record is None:
                return
            changed = record.but(answered=answered or record.answered, waiting_time=waited)
            if await self.store.replace(call_id, record.seq, changed):
                return

    async def voicemail_done(self) -> Reply:
        """The action of a Record (voicemail left): the call is over."""
        return Reply(200, hangup_twiml())

    async def recording(self, params: Sequence[tuple[str, str]], query: Mapping[str, str]) -> Reply:
        """A recording status callback: a completed recording becomes ``recording.uploaded``."""
        if _sid(params, "RecordingSid") is None:
            return Reply(400, "a recording callback needs a RecordingSid")
        if form_value(params, "RecordingStatus") not in (None, "completed"):
            return Reply(204, "")
        await self.events.submit(recording_uploaded(params, query))
        return Reply(204, "")


def _call_over(params: Sequence[tuple[str, str]]) -> CallRecord:
    """The record of a call that ended before its first webhook stored one (the caller hung
    up during it): a first webhook finishing later answers ``<Hangup/>`` and keeps no state."""
    return CallRecord(
        seq=1,
        flow="",
        fingerprint="",
        twiml=hangup_twiml(),
        call=call_context(params),
        outcome=CALL_OVER,
    )


def call_ended(params: Sequence[tuple[str, str]], record: CallRecord | None) -> dict[str, Any]:
    """The ``call.ended`` event of a status callback (and the call's record, when kept):
    ``call_id``, the numbers, ``direction``, ``name`` (caller name), ``status`` (CallStatus),
    ``duration`` (seconds), ``answered`` (an agent took the call), ``waiting_time`` (seconds
    in the queue), ``flow`` and ``ended_by`` (waiting, completed, transfer, voicemail, hangup,
    failed) with ``target``. The id is ``twilio:call.ended:<CallSid>``: a callback delivered
    twice is one event (POST /events takes no id in the ``twilio:`` namespace)."""
    call = dict(record.call) if record is not None else call_context(params)
    call_id = form_value(params, "CallSid")
    properties: dict[str, Any] = {
        "call_id": call_id,
        "external_number": call.get("external_number"),
        "internal_number": call.get("internal_number"),
        "direction": call.get("direction"),
        "name": call.get("caller_name"),
        "status": form_value(params, "CallStatus"),
        "duration": _whole_number(form_value(params, "CallDuration")),
        "answered": record.answered if record is not None else False,
        "waiting_time": record.waiting_time if record is not None else 0,
        "flow": record.flow if record is not None else None,
        "ended_by": record.outcome if record is not None else None,
        "target": record.target if record is not None else None,
    }
    return {
        "id": f"{INTERNAL_ID}call.ended:{call_id}",
        "type": "call.ended",
        "properties": properties,
    }


def recording_uploaded(
    params: Sequence[tuple[str, str]], query: Mapping[str, str]
) -> dict[str, Any]:
    """The ``recording.uploaded`` event of a recording callback: ``call_id``,
    ``recording_id``, ``recording_url``, ``duration`` (seconds), ``mailbox`` and
    ``direction`` (from the callback URL the voicemail's TwiML gave)."""
    recording_id = form_value(params, "RecordingSid")
    properties = {
        "call_id": form_value(params, "CallSid"),
        "recording_id": recording_id,
        "recording_url": form_value(params, "RecordingUrl"),
        "duration": _whole_number(form_value(params, "RecordingDuration")),
        "mailbox": query.get("mailbox", "")[:MAX_FIELD] or None,
        "direction": "outbound" if query.get("direction") == "outbound" else "inbound",
    }
    return {
        "id": f"{INTERNAL_ID}recording.uploaded:{recording_id}",
        "type": "recording.uploaded",
        "properties": properties,
    }
