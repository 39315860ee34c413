"""One HttpSettings for flows and automations: shared fields, checks and sender, each side
with its own defaults."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from flowlang.automations import DeliverySettings
from flowlang.runtime.http import GuardedHttp
from flowlang.runtime.http_settings import HttpSettings
from flowlang.runtime.runner import RuntimeSettings

SHARED = (
    "allow_hosts",
    "connect_timeout",
    "max_response_body",
    "max_request_body",
    "max_redirects",
    "max_requests_in_flight",
)
#: The defaults of SECURITY.md, as they were before the settings shared a base.
FLOW_DEFAULTS = {
    "allow_hosts": frozenset(),
    "connect_timeout": 3.0,
    "max_response_body": 64 * 1024,
    "max_request_body": 64 * 1024,
    "max_redirects": 3,
    "max_requests_in_flight": 100,
    "http_timeout_cap": 10.0,
}
AUTOMATION_DEFAULTS = {
    "allow_hosts": frozenset(),
    "connect_timeout": 5.0,
    "max_response_body": 1024 * 1024,
    "max_request_body": 1024 * 1024,
    "max_redirects": 3,
    "max_requests_in_flight": 100,
    "timeout_cap": 30.0,
}


def test_both_settings_are_http_settings_with_the_shared_fields() -> None:
    shared = {field.name for field in dataclasses.fields(HttpSettings)}
    assert shared == set(SHARED)
    for settings in (RuntimeSettings, DeliverySettings):
        assert issubclass(settings, HttpSettings)
        assert shared <= {field.name for field in dataclasses.fields(settings)}


@pytest.mark.parametrize(
    ("settings", "defaults"),
    [(RuntimeSettings(), FLOW_DEFAULTS), (DeliverySettings(), AUTOMATION_DEFAULTS)],
    ids=["flows", "automations"],
)
def test_each_side_keeps_its_defaults(settings: Any, defaults: dict[str, Any]) -> None:
    assert {name: getattr(settings, name) for name in defaults} == defaults


def test_the_keyword_arguments_still_work() -> None:
    flows = RuntimeSettings(allow_hosts=frozenset({"crm.test"}), max_response_body=10, max_steps=7)
    assert (flows.allow_hosts, flows.max_response_body, flows.max_steps) == (
        frozenset({"crm.test"}),
        10,
        7,
    )
    automations = DeliverySettings(max_redirects=0, timeout_cap=5.0, schedule=(0,))
    assert (automations.max_redirects, automations.timeout_cap) == (0, 5.0)


@pytest.mark.parametrize("settings", [HttpSettings, RuntimeSettings, DeliverySettings])
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_response_body", -1, "max_response_body must be an integer of at least 0, not -1"),
        ("max_redirects", 2.5, "max_redirects must be an integer of at least 0, not 2.5"),
        ("max_requests_in_flight", 0, "max_requests_in_flight must be a positive integer"),
        ("connect_timeout", float("nan"), "connect_timeout must be seconds, more than zero"),
        ("connect_timeout", "3s", "connect_timeout must be seconds"),
    ],
)
def test_the_shared_fields_are_checked_once_for_both_naming_the_class(
    settings: type[HttpSettings], field: str, value: Any, expected: str
) -> None:
    with pytest.raises(ValueError, match=f"^{settings.__name__}.{expected}"):
        settings(**{field: value})


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        RuntimeSettings(frozenset())  # type: ignore[misc]


def test_the_sender_is_made_from_the_settings() -> None:
    async def main() -> GuardedHttp:
        sender = DeliverySettings(allow_hosts=frozenset({"A.test"}), max_redirects=1).sender(
            None, None
        )
        await sender.aclose()
        return sender

    sender = asyncio.run(main())
    assert isinstance(sender, GuardedHttp)
    assert sender.policy.allow_hosts == frozenset({"a.test"})
    assert (sender.connect_timeout, sender.max_redirects) == (5.0, 1)
