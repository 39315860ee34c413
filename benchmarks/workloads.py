"""The expression workloads, the hand-written baseline and the peers' spellings of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CONTEXT: dict[str, Any] = {
    "call": {"external_number": "+10005555555", "waiting_time": 75, "uuid": None},
    "contact": {
        "name": "Ann Smith",
        "company": "Acme",
        "type": "lead",
        "tags": ["Vip", "CampaignA"],
        "emails": ["ann@example.com", "ann.smith@work.example"],
        "custom_fields": {"MRR": 1200, "Plan Tier": "gold"},
    },
    "input": {"123": {"value": "4242"}},
}


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def w1(ctx: dict[str, Any]) -> Any:
    contact = ctx.get("contact")
    if type(contact) is dict:
        fields = contact.get("custom_fields")
        if type(fields) is dict:
            return fields.get("MRR")
    return None


def w2(ctx: dict[str, Any]) -> Any:
    contact = ctx.get("contact")
    if type(contact) is dict:
        emails = contact.get("emails")
        if type(emails) is list and emails:
            return emails[0]
    return None


def w3(ctx: dict[str, Any]) -> Any:
    inputs = ctx.get("input")
    if type(inputs) is dict:
        entry = inputs.get(123)
        if entry is None:
            entry = inputs.get("123")
        if type(entry) is dict:
            return entry.get("value")
    return None


def w4(ctx: dict[str, Any]) -> str:
    contact = ctx.get("contact")
    call = ctx.get("call")
    name = company = waited = None
    if type(contact) is dict:
        name = contact.get("name")
        company = contact.get("company")
    if type(call) is dict:
        waited = call.get("waiting_time")
    return f"Hello {_text(name)} from {_text(company)}, you waited {_text(waited)}s"


def w5(ctx: dict[str, Any]) -> bool:
    call = ctx.get("call")
    contact = ctx.get("contact")
    waited = call.get("waiting_time") if type(call) is dict else None
    kind = contact.get("type") if type(contact) is dict else None
    return type(waited) in (int, float) and waited > 60 and kind == "lead"


def w6(ctx: dict[str, Any]) -> Any:
    contact = ctx.get("contact")
    if type(contact) is dict:
        fields = contact.get("custom_fields")
        if type(fields) is dict:
            return fields.get("ARR")
    return None


@dataclass(frozen=True)
class Workload:
    """One workload: flowlang's template and every contender's spelling of the same work."""

    key: str
    title: str
    flowlang: str
    baseline: Callable[[dict[str, Any]], Any]
    jinja2: str
    liquid: str
    jmespath: str
    #: chevron's Mustache spelling (triple braces: no HTML escaping, as the other peers), or
    #: None where Mustache cannot express the work; ``mustache_gap`` then says why.
    mustache: str | None = None
    mustache_gap: str = ""


WORKLOADS = [
    Workload(
        "W1",
        'contact.custom_fields["MRR"]',
        '<<contact.custom_fields["MRR"]>>',
        w1,
        '{{ contact.custom_fields["MRR"] }}',
        "{{ contact.custom_fields.MRR }}",
        "contact.custom_fields.MRR",
        mustache="{{{contact.custom_fields.MRR}}}",
    ),
    Workload(
        "W2",
        "contact.emails[0]",
        "<<contact.emails[0]>>",
        w2,
        "{{ contact.emails[0] }}",
        "{{ contact.emails[0] }}",
        "contact.emails[0]",
        mustache="{{{contact.emails.0}}}",
    ),
    Workload(
        "W3",
        "input[123].value",
        "<<input[123].value>>",
        w3,
        '{{ input["123"].value }}',
        '{{ input["123"].value }}',
        'input."123".value',
        mustache="{{{input.123.value}}}",
    ),
    Workload(
        "W4",
        "greeting with three holes",
        "Hello <<contact.name>> from <<contact.company>>, you waited <<call.waiting_time>>s",
        w4,
        "Hello {{ contact.name }} from {{ contact.company }}, you waited {{ call.waiting_time }}s",
        "Hello {{ contact.name }} from {{ contact.company }}, you waited {{ call.waiting_time }}s",
        "join('', ['Hello ', contact.name, ' from ', contact.company, ', you waited ', "
        "to_string(call.waiting_time), 's'])",
        mustache="Hello {{{contact.name}}} from {{{contact.company}}}, "
        "you waited {{{call.waiting_time}}}s",
    ),
    Workload(
        "W5",
        "condition",
        '<<call.waiting_time > 60 and contact.type == "lead">>',
        w5,
        "{{ (call.waiting_time > 60 and contact.type == 'lead') | lower }}",
        "{% if call.waiting_time > 60 and contact.type == 'lead' %}true{% else %}false{% endif %}",
        "call.waiting_time > `60` && contact.type == 'lead'",
        mustache_gap="Mustache is logic-less: no comparison or `and`, only sections on a "
        "value's truthiness, so the data would have to carry the answer",
    ),
    Workload(
        "W6",
        "missing path",
        '<<contact.custom_fields["ARR"]>>',
        w6,
        '{{ contact.custom_fields["ARR"] }}',
        "{{ contact.custom_fields.ARR }}",
        "contact.custom_fields.ARR",
        mustache="{{{contact.custom_fields.ARR}}}",
    ),
]
BY_KEY = {workload.key: workload for workload in WORKLOADS}
