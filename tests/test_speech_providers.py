"""Provider base URLs from the environment (FLOWLANG_SMS_URL, FLOWLANG_SLACK_URL,
FLOWLANG_SPEECH_URL) and the check the command line shares."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import Server
from support import FakeClock

from flowlang import MappingSecrets
from flowlang.automations import Automations, DeliverySettings, Providers, load_workflow_text
from flowlang.automations.actions import check_provider_url
from flowlang.http_rules import origin_of


def test_unset_or_empty_variables_keep_the_defaults() -> None:
    assert Providers.from_environment({}) == Providers()
    assert Providers.from_environment({"FLOWLANG_SMS_URL": ""}) == Providers()


def test_each_variable_sets_its_provider() -> None:
    providers = Providers.from_environment(
        {
            "FLOWLANG_SMS_URL": "https://sandbox.sms.example.com/v1/",
            "FLOWLANG_SLACK_URL": "https://slack.example.org:8443/api",
            "FLOWLANG_SPEECH_URL": "https://eu-speech.googleapis.com/v1p1beta1",
            "FLOWLANG_OTHER": "ignored",
        }
    )
    assert providers == Providers(
        sms_base_url="https://sandbox.sms.example.com/v1",
        slack_base_url="https://slack.example.org:8443/api",
        speech_base_url="https://eu-speech.googleapis.com/v1p1beta1",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://sms.example.com/v1", "must use https"),
        ("sms.example.com/v1", "must start with https://"),
        ("ftp://sms.example.com", "must start with https://"),
        ("https://user:pw@sms.example.com/v1", "credentials"),
        ("https://sms.example.com/v1?key=1", "without a query"),
        ("https://sms.example.com/v1#x", "without a query, fragment"),
        ("https://sms.example.com/<<event.x>>", "template"),
        ("https://sms.example.com/v1\r\nX-Evil: 1", "line break"),
        ("https://sms.example.com:99999/v1", "port"),
        ("https:///v1", "no host"),
        ("https://" + "a" * 3000 + ".com", "longer than 2048"),
        ("   ", "must be a URL"),
    ],
)
def test_a_bad_value_is_a_clear_error_naming_the_variable(value: str, expected: str) -> None:
    with pytest.raises(ValueError) as raised:
        Providers.from_environment({"FLOWLANG_SLACK_URL": value})
    message = str(raised.value)
    assert message.startswith("FLOWLANG_SLACK_URL") and expected in message
    assert "Error" not in message


def test_plain_http_only_for_an_allowed_host() -> None:
    assert check_provider_url(
        "--sms-url", "http://localhost:8080/sms", allow_hosts={"localhost"}
    ) == ("http://localhost:8080/sms")
    with pytest.raises(ValueError, match=r"^--sms-url must use https"):
        check_provider_url("--sms-url", "http://localhost:8080/sms")


@given(st.text(max_size=80) | st.text(max_size=40).map(lambda tail: f"https://h.example/{tail}"))
def test_any_text_is_a_checked_https_base_or_an_error_naming_it(value: str) -> None:
    try:
        url = check_provider_url("FLOWLANG_SMS_URL", value)
    except ValueError as error:
        assert str(error).startswith("FLOWLANG_SMS_URL")
        return
    assert origin_of(url).scheme == "https" and not url.endswith("/")
    assert not any(mark in url for mark in "?# \r\n")


SMS = """
workflow: text
trigger: call.ended
actions:
  - name: text_back
    type: send_sms
    sender: "+14155550100"
    recipient: "+14155550111"
    text: hello
    auth: {key_id: id, key_secret: secret}
"""


def test_a_provider_from_the_environment_is_where_actions_go(server: Server) -> None:
    environ = {"FLOWLANG_SMS_URL": f"https://crm.test:{server.port}/script/sandbox-sms/"}

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> Any:
        settings = DeliverySettings(
            allow_hosts=frozenset({"crm.test"}), providers=Providers.from_environment(environ)
        )
        async with Automations(
            [load_workflow_text(SMS)],
            settings=settings,
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets({}),
            clock=FakeClock(),
        ) as automations:
            return await automations.dispatch({"id": "e1", "type": "call.ended", "properties": {}})

    result = asyncio.run(main())
    assert [d.outcome for d in result.deliveries] == ["delivered"]
    [sent] = server.received.to("sandbox-sms")
    assert sent["path"] == "/script/sandbox-sms/messages"
