"""The server: a Starlette application answering Twilio's webhooks and the events endpoint.

Routes (under the path of ``ServeSettings.public_url``): ``POST /voice/{flow}`` (a call's
first webhook and every Gather action), ``POST /twilio/status`` (status callbacks),
``POST /twilio/transfer`` (Dial and Enqueue actions), ``POST /twilio/voicemail`` (Record
actions), ``POST /twilio/recording`` (recording status callbacks), ``POST /events``,
``GET /healthz`` and ``GET /metrics``. Every Twilio route checks ``X-Twilio-Signature``
against the public URL (never the request's Host header) and answers 403 otherwise.
"""

from __future__ import annotations

__all__ = ["Server", "build_server", "create_app", "form_fields", "query_value"]

import asyncio
import contextlib
import functools
import logging
import secrets as random_secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from flowlang.automations.dispatch import Automations, DeliverySettings
from flowlang.automations.store import LocalStore
from flowlang.automations.workflow import CompiledWorkflow
from flowlang.flow.model import CompiledFlow
from flowlang.observe import NullObserver, Observer
from flowlang.runtime.http import GuardedHttp, HttpSender, Resolver
from flowlang.runtime.runner import Runtime, RuntimeSettings
from flowlang.runtime.secrets import EnvironmentSecrets, SecretsProvider
from flowlang.runtime.versions import FlowVersions
from flowlang.serve.calls import CallStore, MemoryCallStore
from flowlang.serve.intake import EventIntake, EventRefusedError
from flowlang.serve.settings import ServeSettings, require_secrets, secret_values
from flowlang.serve.signatures import twilio_request_valid
from flowlang.serve.voice import Reply, VoiceCalls

log = logging.getLogger("flowlang.serve")

#: The secret name under which a process keeps the state key it made itself.
_OWN_STATE_KEY = "flowlang_serve_state_key"
#: At most this many form fields in one webhook (Twilio sends about 20).
MAX_FORM_FIELDS = 200
_XML = "application/xml; charset=utf-8"


class _WithOwnKey:
    """A secrets provider that also holds a random state key made for this process."""

    def __init__(self, provider: SecretsProvider) -> None:
        self._provider = provider
        self._key = random_secrets.token_urlsafe(48)

    def get(self, name: str) -> str | None:
        return self._key if name == _OWN_STATE_KEY else self._provider.get(name)

    def describe(self, name: str) -> str:
        return self._provider.describe(name)


@dataclass
class Server:
    """Everything one serving process runs: the calls, the events, and what they share."""

    settings: ServeSettings
    runtime: Runtime
    store: CallStore
    automations: Automations
    voice: VoiceCalls
    intake: EventIntake
    observer: Observer
    secrets: SecretsProvider
    #: The local store events are recorded in before they are answered (shared by every
    #: process on it; None: in memory only).
    events_store: LocalStore | None = None
    #: The HTTP client the server made for its runtime (closed after the runtime drains).
    own_sender: GuardedHttp | None = None

    async def start(self) -> None:
        """Keep the flows' sources in the store; resume events an earlier process left."""
        await self.voice.keep_flows()
        await self.intake.start()

    async def stop(self) -> None:
        """Drain (bounded by ``drain_timeout``) and close, in order: event dispatches, the
        runtime's background requests, the call store, the automations, the events store (its
        unfinished events are then taken over by the next process on it)."""
        timeout = self.settings.drain_timeout
        cancelled = await self.intake.drain(timeout)
        if cancelled:
            log.warning(
                "%d event dispatches did not finish in %g s; they resume at the next start",
                cancelled,
                timeout,
                extra={"event": "serve.drain_cut"},
            )
        try:
            async with asyncio.timeout(timeout):
                await self.runtime.aclose()
        except TimeoutError:
            log.warning(
                "background requests still in flight after %g s were dropped",
                timeout,
                extra={"event": "serve.drain_cut"},
            )
        if self.own_sender is not None:
            await self.own_sender.aclose()
        await self.store.aclose()
        await self.automations.aclose()
        if self.events_store is not None:
            self.events_store.close()


def build_server(
    flows: Iterable[CompiledFlow],
    workflows: Iterable[CompiledWorkflow],
    settings: ServeSettings,
    *,
    store: CallStore | None = None,
    secrets: SecretsProvider | None = None,
    observer: Observer | None = None,
    ssl_context: ssl.SSLContext | None = None,
    http: HttpSender | None = None,
    resolver: Resolver | None = None,
    allow_hosts: Iterable[str] = (),
    events_store: Path | None = None,
    delivery: DeliverySettings | None = None,
    context: Mapping[str, Any] | None = None,
    clock: Callable[[], datetime] | None = None,
    publish_events: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> Server:
    """A server for ``flows`` and ``workflows``. ``store``: where waiting calls live (this
    process when None). ``events_store``: the local store (an SQLite file, as for
    ``flowlang automate --store``, which several processes may share) where events are
    recorded before they are answered, and where dead letters go; the open events of
    processes on it that died are taken over here (None: in memory only, so an accepted event
    and a dead letter die with the process — for tests and experiments). ``http``: a sender
    replacing the network (recorded responses). ``context``: what every call's context starts
    from. ``clock``: the time steps read (business_hours; now by default).
    ``publish_events``: publish each event's accept message to the Celery workers instead of
    dispatching it here (``serve --broker``)."""
    provider: SecretsProvider = secrets or EnvironmentSecrets()
    state_keys = settings.state_keys
    if not state_keys:
        provider = _WithOwnKey(provider)
        state_keys = (_OWN_STATE_KEY,)
    observer = observer or NullObserver()
    hosts = frozenset(allow_hosts)
    runtime_settings = RuntimeSettings(
        allow_hosts=hosts,
        run_deadline=settings.segment_deadline,
        state_keys=state_keys,
        max_state_age=settings.call_ttl,
    )
    own_sender: GuardedHttp | None = None
    sender: HttpSender
    if http is None:
        sender = own_sender = runtime_settings.sender(ssl_context, resolver)
    else:
        sender = http
    runtime = Runtime(
        settings=runtime_settings,
        secrets=provider,
        http=observer.sender(sender),
        flow_versions=FlowVersions(),
        clock=clock,
    )
    store = store or MemoryCallStore(ttl=settings.call_ttl)
    book = LocalStore(events_store, sync=True) if events_store is not None else None
    try:
        automations = Automations(
            workflows,
            settings=delivery or DeliverySettings(allow_hosts=hosts),
            ssl_context=ssl_context,
            http=http,
            resolver=resolver,
            secrets=provider,
            store=book,
            on_attempt=observer.attempt,
        )
        intake = EventIntake(
            automations, settings, provider, observer, store, publish=publish_events
        )
        intake.check_secrets()
        if settings.signatures:
            require_secrets(
                provider,
                settings.twilio_keys,
                " (a Twilio key)",
                ": every webhook would be refused",
            )
    except BaseException:  # what it took over becomes an orphan again, for the next process
        if book is not None:
            book.close()
        raise
    served = {flow.name: flow for flow in flows}
    voice = VoiceCalls(served, runtime, store, settings, observer, intake, context=context)
    return Server(
        settings, runtime, store, automations, voice, intake, observer, provider, book, own_sender
    )


# --- requests ---------------------------------------------------------------------------------


class _SlowBodyError(Exception):
    """The body did not arrive within the settings' ``body_timeout``."""


async def _body(request: Request, limit: int, seconds: float) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes (read no further);
    _SlowBodyError when it takes longer than ``seconds`` to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise _SlowBodyError from None
    return b"".join(chunks)


@functools.lru_cache(maxsize=16)
def _origin(public_url: str) -> str:
    """``scheme://netloc`` of the public URL (split once per URL, not per request)."""
    public = urlsplit(public_url)
    return f"{public.scheme}://{public.netloc}"


def _signed_url(settings: ServeSettings, request: Request) -> str:
    """The URL Twilio signed: the public origin, the path as sent, and the query."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    url = _origin(settings.public_url) + path.decode("latin-1")
    return f"{url}?{query.decode('latin-1')}" if query else url


#: Encoded texts up to this long have their decoded text kept (the last _KEPT_TEXTS of
#: them: a call sends the same numbers and names in every webhook).
_KEPT_TEXT_LENGTH = 64
_KEPT_TEXTS = 4096


def _unquote_plus(text: str) -> str:
    return unquote(text.replace("+", " "))


_kept_unquote_plus = functools.lru_cache(maxsize=_KEPT_TEXTS)(_unquote_plus)


def _decoded(text: str) -> str:
    """A form name or value decoded as parse_qsl decodes it (``+`` is a space)."""
    if len(text) <= _KEPT_TEXT_LENGTH:
        return _kept_unquote_plus(text)
    return _unquote_plus(text)


def form_fields(text: str, max_fields: int = MAX_FORM_FIELDS) -> list[tuple[str, str]]:
    """The fields of a form body: exactly ``parse_qsl(text, keep_blank_values=True,
    max_num_fields=max_fields)`` (ValueError beyond ``max_fields``), without decoding the
    names and values that hold no ``%`` or ``+``."""
    if not text:
        return []
    if text.count("&") + 1 > max_fields:
        raise ValueError("Max number of fields exceeded")
    pairs: list[tuple[str, str]] = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            if "%" in name or "+" in name:
                name = _decoded(name)
            if "%" in value or "+" in value:
                value = _decoded(value)
            pairs.append((name, value))
    return pairs


class _RefusedError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _twilio_form(server: Server, request: Request, endpoint: str) -> list[tuple[str, str]]:
    """The webhook's form fields, once its signature is checked (_RefusedError otherwise)."""
    settings = server.settings
    try:
        body = await _body(request, settings.max_form_bytes, settings.body_timeout)
    except _SlowBodyError:
        raise _RefusedError(PlainTextResponse("the form took too long to arrive", 408)) from None
    if body is None:
        raise _RefusedError(PlainTextResponse("the form is too large", 413))
    try:
        params = form_fields(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _RefusedError(PlainTextResponse("the form is not UTF-8 form data", 400)) from None
    if settings.signatures:
        valid = twilio_request_valid(
            secret_values(server.secrets, settings.twilio_keys),
            _signed_url(settings, request),
            params,
            request.headers.get("x-twilio-signature"),
            request.headers.get("x-twilio-webhooks-signature-settings"),
        )
        if not valid:
            server.observer.webhook_rejected(endpoint, "bad signature")
            log.warning(
                "webhook signature refused",
                extra={"event": "webhook.rejected", "endpoint": endpoint},
            )
            raise _RefusedError(PlainTextResponse("the request signature is not valid", 403))
    return params


def query_value(scope: Mapping[str, Any], name: str) -> str | None:
    """``Request(scope).query_params.get(name)`` (the last value of ``name``), read with
    the form parser: the same pairs, without Starlette's multi-dict."""
    raw = scope.get("query_string", b"")
    query = raw.decode("latin-1") if isinstance(raw, bytes) else ""
    found = None
    for key, value in form_fields(query, len(query) + 1):  # the bound is never reached
        if key == name:
            found = value
    return found


def _reply(reply: Reply) -> Response:
    if reply.status == 204:
        return Response(status_code=204)
    if reply.status == 400:
        return PlainTextResponse(reply.body, 400)
    return Response(reply.body, reply.status, media_type=_XML)


def create_app(server: Server, on_started: Callable[[], None] | None = None) -> Starlette:
    """The ASGI application of ``server`` (its lifespan starts and stops it; ``on_started`` is
    called once it has started)."""

    def twilio(endpoint: str, answer: Any) -> Any:
        async def handle(request: Request) -> Response:
            try:
                params = await _twilio_form(server, request, endpoint)
            except _RefusedError as refused:
                return refused.response
            try:
                reply: Reply = await answer(request, params)
            except EventRefusedError as refused:  # a callback's event could not be recorded
                reply = Reply(503 if refused.status == 503 else 400, refused.reason)
            return _reply(reply)

        return handle

    async def voice(request: Request, params: Sequence[tuple[str, str]]) -> Reply:
        return await server.voice.webhook(
            request.path_params["flow"], params, query_value(request.scope, "seq")
        )

    async def status(request: Request, params: Sequence[tuple[str, str]]) -> Reply:
        return await server.voice.status(params)

    async def transfer(request: Request, params: Sequence[tuple[str, str]]) -> Reply:
        return await server.voice.transfer_done(params)

    async def voicemail(request: Request, params: Sequence[tuple[str, str]]) -> Reply:
        return await server.voice.voicemail_done()

    async def recording(request: Request, params: Sequence[tuple[str, str]]) -> Reply:
        return await server.voice.recording(params, dict(request.query_params))

    async def events(request: Request) -> Response:
        intake = server.intake
        if not intake.enabled:
            return PlainTextResponse("events are not taken: no secret or token is configured", 404)
        try:
            try:
                body = await _body(
                    request, server.settings.max_event_bytes, server.settings.body_timeout
                )
            except _SlowBodyError:
                raise EventRefusedError(408, "the event took too long to arrive") from None
            if body is None:
                raise EventRefusedError(413, "the event is too large")
            intake.authenticate(request.headers, body)
            result = await intake.submit(intake.parse(body))
        except EventRefusedError as refused:
            return JSONResponse({"error": refused.reason}, refused.status)
        return JSONResponse({"result": result}, 200 if result == "duplicate" else 202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        page, content_type = server.observer.metrics()
        return Response(page, media_type=content_type)

    routes: list[BaseRoute] = [
        Route("/voice/{flow}", twilio("voice", voice), methods=["POST"]),
        Route("/twilio/status", twilio("status", status), methods=["POST"]),
        Route("/twilio/transfer", twilio("transfer", transfer), methods=["POST"]),
        Route("/twilio/voicemail", twilio("voicemail", voicemail), methods=["POST"]),
        Route("/twilio/recording", twilio("recording", recording), methods=["POST"]),
        Route("/events", events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    prefix = urlsplit(server.settings.public_url).path.rstrip("/")
    if prefix:
        routes = [Mount(prefix, routes=routes)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await server.start()
        except Exception as error:
            log.critical(
                "the server cannot start: %s", error, extra={"event": "serve.start_failed"}
            )
            raise
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await server.stop()

    return Starlette(routes=routes, lifespan=lifespan)
