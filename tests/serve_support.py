"""What the serve tests share: the example flows and workflows, their recorded responses, the
secrets of a test deployment, and a server driven in this process through httpx.ASGITransport."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from flowlang import MappingSecrets, load_flow, load_workflow
from flowlang.automations.store import event_key
from flowlang.flow.source import load_document
from flowlang.runtime.http import RecordedHttp
from flowlang.runtime.recorded import read_responses
from flowlang.serve.app import Server, build_server, create_app
from flowlang.serve.settings import ServeSettings
from tests.twilio_sim import SimulatedTwilio

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "flows"
WORKFLOWS = ROOT / "examples" / "workflows"
PUBLIC_URL = "https://ivr.example.com"
TWILIO_TOKEN = "test-twilio-auth-token-0f3a9c"
EVENT_TOKEN = "test-event-bearer-token-77a1d2"
EVENT_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
SECRETS = {
    "twilio_token": TWILIO_TOKEN,
    "event_token": EVENT_TOKEN,
    "event_secret": EVENT_SECRET,
    "crm_token": "test-crm-token-9d8e",
    "billing_token": "test-billing-token-4c1b",
    "calendar_key": "test-calendar-key-2a7f",
    "crm_basic": "test-crm-basic-5e6f",
    "sms_key_id": "test-sms-id",
    "sms_key_secret": "test-sms-secret-8b9c",
    "slack_token": "test-slack-token-3d4e",
    "state_key": "test-state-key-" + "s" * 40,
}
#: A Monday evening in Brno: the office is closed (after_hours asks the on-call service).
CLOSED = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def example_flows() -> list[Any]:
    return [load_flow(path) for path in sorted(FLOWS.glob("*.yaml"))]


def example_workflows() -> list[Any]:
    return [load_workflow(path) for path in sorted(WORKFLOWS.glob("*.yaml"))]


def recorded(*files: Path) -> RecordedHttp:
    """One recorded sender answering from every responses file given (the flows' and the
    workflows' by default)."""
    files = files or (
        *sorted((FLOWS / "data").glob("*.responses.yaml")),
        WORKFLOWS / "data" / "responses.yaml",
    )
    responses: dict[Any, Any] = {}
    for path in files:
        responses.update(read_responses(load_document(path), ()))
    return RecordedHttp(responses)


def settings(**changes: Any) -> ServeSettings:
    options: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "twilio_keys": ("twilio_token",),
        "event_tokens": ("event_token",),
        "event_secrets": ("event_secret",),
        "fallback_target": "queue:operator",
    }
    options.update(changes)
    return ServeSettings(**options)


@dataclass
class Served:
    """A server in this process, a client to it, and a simulated Twilio using that client."""

    server: Server
    client: httpx.AsyncClient
    twilio: SimulatedTwilio
    http: Any
    #: Every event the automations accepted (recorded), as they returned it.
    accepted: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def serving(
    flows: Iterable[Any] | None = None,
    workflows: Iterable[Any] = (),
    *,
    http: Any = None,
    secrets: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Served]:
    """A started server (stopped at the end) and a simulated Twilio aimed at it."""
    sender = http if http is not None else recorded()
    serve_settings = options.pop("settings", None) or settings()
    options.setdefault("context", {"call": {"office": "brno"}})
    options.setdefault("clock", lambda: CLOSED)
    server = build_server(
        example_flows() if flows is None else flows,
        workflows,
        serve_settings,
        secrets=MappingSecrets(secrets or SECRETS),
        http=sender,
        **options,
    )
    transport = httpx.ASGITransport(app=create_app(server))
    accepted: list[dict[str, Any]] = []
    accept = server.automations.accept

    def spied(event: Any) -> Any:
        plain = accept(event)
        if plain is not None:
            accepted.append(plain)
        return plain

    server.automations.accept = spied  # type: ignore[method-assign]
    await server.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ivr.internal") as client:
            twilio = SimulatedTwilio(client, PUBLIC_URL, TWILIO_TOKEN)
            yield Served(server, client, twilio, sender, accepted)
    finally:
        await server.stop()


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def store_event(path: Path, event_id: str) -> str | None:
    """What the events store ``path`` holds of ``event_id``: ``open`` (accepted, not
    finished), ``done``, or None (never accepted, or pruned). Read on a read-only connection
    of its own, as another process would."""
    with closing(_read_only(path)) as db:
        row = db.execute(
            "SELECT done_no FROM events WHERE key = ?", (event_key(event_id),)
        ).fetchone()
    if row is None:
        return None
    return "open" if row[0] is None else "done"


def open_events(path: Path) -> list[dict[str, Any]]:
    """The events the store ``path`` holds open (accepted, not finished), oldest first."""
    with closing(_read_only(path)) as db:
        rows = db.execute("SELECT event FROM events WHERE done_no IS NULL ORDER BY at").fetchall()
    return [json.loads(text) for (text,) in rows]


def store_rows(path: Path, table: str) -> int:
    """How many rows the store ``path`` has in ``table`` (events, settled, dead...)."""
    assert table.isidentifier()
    with closing(_read_only(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def settled_actions(path: Path, event_id: str) -> dict[str, str]:
    """The outcome of each action settled for the open event ``event_id``, by action name."""
    with closing(_read_only(path)) as db:
        rows = db.execute(
            "SELECT action, outcome FROM settled WHERE event_key = ?", (event_key(event_id),)
        ).fetchall()
    return {json.loads(action): outcome for action, outcome in rows}
