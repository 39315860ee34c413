"""Triggers: the known events, each with the ``event.properties`` it carries.

A workflow may name any trigger (applications send their own events); for a known one,
``flowlang check`` warns when the workflow reads a property the trigger does not carry.
"""

from __future__ import annotations

__all__ = ["RECORDING_UPLOADED", "TRIGGERS"]

_CALL = (
    "call_id",
    "uuid",
    "direction",
    "external_number",
    "internal_number",
    "name",
    "contact_id",
    "agent_id",
    "agent_email",
    "started_at",
    "waiting_time",
    "is_vip",
    "tags",
)

_CONTACT = (
    "contact_id",
    "name",
    "title",
    "company",
    "industry",
    "emails",
    "phone_numbers",
    "tags",
    "type",
    "custom_fields",
    "is_vip",
)

RECORDING_UPLOADED = "recording.uploaded"

#: Trigger name to the properties its events carry.
TRIGGERS: dict[str, frozenset[str]] = {
    "call.started": frozenset(_CALL),
    "call.ringing_on_agent": frozenset((*_CALL, "ringing_agent_id")),
    "call.answered": frozenset((*_CALL, "answered_at")),
    "call.modified": frozenset((*_CALL, "changes")),
    "call.ended": frozenset((*_CALL, "answered", "ended_at", "duration", "talking_time", "reason")),
    "call.raised_hand": frozenset((*_CALL, "raised_by")),
    "sms.received": frozenset(
        ("message_id", "sender", "recipient", "text", "contact_id", "name", "received_at")
    ),
    "sms.sent": frozenset(("message_id", "sender", "recipient", "text", "agent_id", "sent_at")),
    RECORDING_UPLOADED: frozenset(
        (*_CALL, "recording_id", "recording_url", "duration", "language")
    ),
    "contact.created": frozenset(_CONTACT),
    "contact.updated": frozenset((*_CONTACT, "changes")),
    "contact.deleted": frozenset(("contact_id", "name")),
}
