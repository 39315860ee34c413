"""The HTTP Request step end to end against real HTTPS servers on loopback (CA made at test time)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme
from servers import Server, serve

import flowlang
from flowlang import MappingSecrets, Runtime, RuntimeSettings

SECRET = "s3cr3t-token-value"


RESPONSE = (
    "<<steps.call.outcome>> <<steps.call.response.status>> <<steps.call.response.body | json>>"
)


def http_flow(step: Mapping[str, Any], seen: str = RESPONSE) -> flowlang.CompiledFlow:
    """A flow around one http_request step `call`: each outcome says what it saw."""
    steps: dict[str, Any] = {
        "call": {"type": "http_request", "next": "ok", "on_failure": "failed", **step},
        "ok": {"type": "say", "text": f"ok {seen}"},
        "failed": {"type": "say", "text": "failed <<steps.call.outcome>> <<steps.call.error>>"},
    }
    if "on_timeout" in step:
        steps["timed_out"] = {"type": "say", "text": "timeout <<steps.call.error>>"}
    document = {"flow": "http-test", "start": "call", "steps": steps}
    # A plain http endpoint passes the check for its own host: the runtime's guard is under test.
    hosts = [urlsplit(str(step["endpoint"])).hostname or ""] if "endpoint" in step else []
    return flowlang.load_flow_text(json.dumps(document), allow_hosts=hosts)


def run_flow(
    server: Server,
    flow: flowlang.CompiledFlow,
    context: Mapping[str, Any] | None = None,
    *,
    names: Mapping[str, list[str]] | None = None,
    allow: tuple[str, ...] = ("crm.test",),
    **settings: Any,
) -> tuple[flowlang.RunResult, Runtime]:
    """Run on a runtime whose resolver maps test names to loopback."""
    table = {"crm.test": ["127.0.0.1"], **(names or {})}

    async def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown test host {host}")
        return table[host]

    async def main() -> tuple[flowlang.RunResult, Runtime]:
        runtime = Runtime(
            ssl_context=server.client_ssl_context(),
            resolver=resolver,
            secrets=MappingSecrets({"api_key": SECRET}),
            settings=RuntimeSettings(allow_hosts=frozenset(allow), **settings),
        )
        async with runtime:
            result = await runtime.start(flow, context or {})
        return result, runtime

    return asyncio.run(main())


def said(result: flowlang.RunResult) -> str:
    return " | ".join(i["text"] for i in result.instructions if i["action"] == "say")


def test_get_json_over_https_with_sni_and_certificate_checked(server: Server) -> None:
    result, _ = run_flow(server, http_flow({"endpoint": server.url("crm.test", "/json")}))
    assert result.status == "completed"
    assert said(result) == 'ok success 200 {"tier":"gold","first_name":"Ann","balance":42.5}'
    assert server.received.requests[0]["headers"]["host"] == f"crm.test:{server.port}"


def test_templated_values_are_encoded_and_cannot_change_the_url(server: Server) -> None:
    flow = http_flow(
        {
            "endpoint": server.url(
                "crm.test", "/echo/<<vars.id>>/<<vars.dots>>?q=<<vars.q>>&n=<<vars.n>>"
            ),
            "method": "GET",
        }
    )
    context = {"vars": {"id": "../admin/x y", "dots": "..", "q": "a&b=c#d", "n": 7}}
    result, _ = run_flow(server, flow, context)
    assert result.status == "completed", result.error
    request = server.received.requests[0]
    assert request["path"] == "/echo/..%2Fadmin%2Fx%20y/%2E%2E"
    assert request["query"] == "q=a%26b%3Dc%23d&n=7"


def test_post_body_keeps_types_and_dotted_keys_nest(server: Server) -> None:
    flow = http_flow(
        {
            "endpoint": server.url("crm.test", "/echo"),
            "method": "POST",
            "headers": {
                "X-Caller": "<<call.external_number>>",
                "Authorization": "Bearer <<secrets.api_key>>",
            },
            "body": {
                "customer.firstname": "<<contact.first>>",
                "customer.lastname": "Doe",
                "tags": "<<contact.tags>>",
                "count": "<<vars.n>>",
                "missing": "<<contact.nope>>",
                "note": "Caller <<call.external_number>> waited <<vars.n>>s",
                "fixed": [1, "two", None],
            },
        }
    )
    context = {
        "call": {"external_number": "+14155550100"},
        "contact": {"first": "John", "tags": ["Vip"]},
        "vars": {"n": 3},
    }
    result, _ = run_flow(server, flow, context)
    assert result.status == "completed", result.error
    request = server.received.requests[0]
    assert json.loads(request["body"]) == {
        "customer": {"firstname": "John", "lastname": "Doe"},
        "tags": ["Vip"],
        "count": 3,
        "missing": None,
        "note": "Caller +14155550100 waited 3s",
        "fixed": [1, "two", None],
    }
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-caller"] == "+14155550100"
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    trace = json.dumps(result.to_json())
    assert SECRET not in trace and "Bearer [redacted]" in trace


def test_text_response_is_text(server: Server) -> None:
    result, _ = run_flow(server, http_flow({"endpoint": server.url("crm.test", "/text")}))
    assert said(result) == 'ok success 200 "plain text, café"'


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/status/500", "http_error"),
        ("/status/404", "http_error"),
        ("/big", "too_large"),
        ("/declared-big", "too_large"),
        ("/invalid-json", "invalid_json"),
        ("/deep-json", "invalid_json"),
        ("/reset", "connection_error"),
        ("/redirect?to=/json", "http_error"),
    ],
)
def test_failures_route_to_on_failure(server: Server, path: str, outcome: str) -> None:
    result, _ = run_flow(server, http_flow({"endpoint": server.url("crm.test", path)}))
    assert result.status == "completed"
    assert result.trace[0]["outcome"] == outcome
    assert said(result).startswith(f"failed {outcome}")


def test_non_2xx_response_is_still_readable_on_the_failure_path(server: Server) -> None:
    flow = http_flow({"endpoint": server.url("crm.test", "/status/503")})
    result, _ = run_flow(server, flow)
    assert result.trace[0]["detail"]["status"] == 503


@pytest.mark.parametrize("path", ["/drip", "/silent"])
def test_one_total_deadline_even_for_a_dripping_server(server: Server, path: str) -> None:
    flow = http_flow(
        {"endpoint": server.url("crm.test", path), "timeout": "800ms", "on_timeout": "timed_out"}
    )
    started = time.monotonic()
    result, _ = run_flow(server, flow)
    elapsed = time.monotonic() - started
    assert result.trace[0]["outcome"] == "timeout"
    assert said(result).startswith("timeout no complete response within 0.8s")
    assert elapsed < 3


def test_redirects_followed_only_when_asked_and_checked_per_hop(server: Server) -> None:
    follow = {"follow_redirects": True}
    ok, _ = run_flow(
        server, http_flow({"endpoint": server.url("crm.test", "/redirect?to=/json"), **follow})
    )
    assert ok.trace[0]["outcome"] == "success"
    downgrade = server.url("crm.test", "/redirect?to=http://crm.test/json")
    refused, _ = run_flow(server, http_flow({"endpoint": downgrade, **follow}))
    assert refused.trace[0]["outcome"] == "refused"
    assert "from https to http" in said(refused)
    to_private = server.url("crm.test", "/redirect?to=https://evil.test/echo")
    guarded, _ = run_flow(
        server, http_flow({"endpoint": to_private, **follow}), names={"evil.test": ["10.0.0.5"]}
    )
    assert guarded.trace[0]["outcome"] == "refused"
    assert "10.0.0.5, a private address" in said(guarded)


def test_only_harmless_headers_go_across_origins(server: Server) -> None:
    other = server.url("other.test", "/echo")
    flow = http_flow(
        {
            "endpoint": server.url("crm.test", f"/redirect?to={other}"),
            "follow_redirects": True,
            "headers": {
                "Authorization": "Bearer <<secrets.api_key>>",
                "X-Api-Key": "fixed-key",
                "Accept": "application/json",
                "User-Agent": "agent <<secrets.api_key>>",
            },
        }
    )
    result, _ = run_flow(
        server, flow, names={"other.test": ["127.0.0.1"]}, allow=("crm.test", "other.test")
    )
    assert result.trace[0]["outcome"] == "success"
    final = server.received.requests[-1]["headers"]
    assert "authorization" not in final and "x-api-key" not in final
    assert "user-agent" not in final  # on the safe list, but it carried a secret
    assert final["accept"] == "application/json"
    first = server.received.requests[0]["headers"]
    assert first["authorization"] == f"Bearer {SECRET}" and first["x-api-key"] == "fixed-key"


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["192.168.1.1"],
        ["172.16.0.1"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["::1"],
        ["fe80::1"],
        ["fc00::1"],
        ["::ffff:127.0.0.1"],
        ["64:ff9b::7f00:1"],
        ["2002:7f00:1::1"],
        ["224.0.0.1"],
        ["8.8.8.8", "127.0.0.1"],
    ],
    ids=lambda addresses: "+".join(addresses),
)
def test_address_guard_refuses_by_resolved_address(server: Server, addresses: list[str]) -> None:
    flow = http_flow({"endpoint": server.url("evil.test", "/json")})
    result, _ = run_flow(server, flow, names={"evil.test": addresses})
    assert result.trace[0]["outcome"] == "refused"
    assert server.received.requests == []


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f.1", "017700000001", "[::ffff:127.0.0.1]", "127.0.0.1"]
)
def test_address_guard_reads_every_literal_spelling(server: Server, host: str) -> None:
    flow = http_flow({"endpoint": server.url(host, "/json")})
    result, _ = run_flow(server, flow)
    assert result.trace[0]["outcome"] == "refused"
    assert "a loopback address" in said(result)
    assert server.received.requests == []


def test_plain_http_only_for_allow_listed_hosts(ca: trustme.CA) -> None:
    with serve(ca, tls=False) as plain:
        allowed, _ = run_flow(plain, http_flow({"endpoint": plain.url("crm.test", "/json")}))
        assert allowed.trace[0]["outcome"] == "success"
        public, _ = run_flow(
            plain,
            http_flow({"endpoint": plain.url("public.test", "/json")}),
            names={"public.test": ["93.184.216.34"]},
        )
        assert public.trace[0]["outcome"] == "refused"
        assert "plain http" in said(public)
        assert len(plain.received.requests) == 1


def test_a_certificate_from_another_authority_is_refused(ca: trustme.CA) -> None:
    with serve(trustme.CA()) as impostor:
        impostor.ca = ca  # the client trusts only the test CA
        result, _ = run_flow(impostor, http_flow({"endpoint": impostor.url("crm.test", "/json")}))
    assert result.trace[0]["outcome"] == "tls_error"
    assert "CERTIFICATE_VERIFY_FAILED" in said(result)


def test_a_connection_only_carries_requests_for_the_name_its_certificate_was_checked_for(
    server: Server,
) -> None:
    """Two names on one address (a shared hosting IP): the certificate covers crm.test only.
    The request to tenant.test must not ride on crm.test's pooled connection."""
    document = {
        "flow": "two-names",
        "start": "first",
        "steps": {
            "first": {
                "type": "http_request",
                "endpoint": server.url("crm.test", "/json"),
                "next": "second",
                "on_failure": "second",
            },
            "second": {
                "type": "http_request",
                "endpoint": server.url("tenant.test", "/json"),
                "headers": {"Authorization": "Bearer <<secrets.api_key>>"},
                "next": "done",
                "on_failure": "done",
            },
            "done": {"type": "say", "text": "<<steps.second.outcome>> <<steps.second.error>>"},
        },
    }
    result, _ = run_flow(
        server,
        flowlang.load_flow_text(json.dumps(document)),
        names={"tenant.test": ["127.0.0.1"]},
        allow=("crm.test", "tenant.test"),
    )
    assert [entry["outcome"] for entry in result.trace[:2]] == ["success", "tls_error"]
    assert "CERTIFICATE_VERIFY_FAILED" in said(result)
    assert len(server.received.requests) == 1  # the credentials for tenant.test never left


def test_connections_are_pooled_by_name_and_vetted_address(server: Server) -> None:
    """The pool keys a kept-alive connection by scheme, host NAME, port and the address the
    guard vetted: never by address alone (one certificate check per name)."""
    from flowlang.http_rules import PreparedRequest
    from flowlang.runtime.addresses import AddressPolicy
    from flowlang.runtime.http import GuardedHttp

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> list[Any]:
        sender = GuardedHttp(
            AddressPolicy(frozenset({"crm.test"})), server.client_ssl_context(), resolver
        )
        try:
            request = PreparedRequest("GET", server.url("crm.test", "/json"), ())
            result = await sender.send(request, timeout=5, max_body=1000, follow_redirects=False)
            assert result.outcome == "success"
            return list(sender.transport.pool._idle)
        finally:
            await sender.aclose()

    assert asyncio.run(main()) == [("https", "crm.test", server.port, "127.0.0.1")]


@pytest.mark.parametrize("value", ["x\r\nInjected: 1", "line\nbreak", "nul\x00", "café"])
def test_header_values_with_line_breaks_or_non_ascii_are_refused_before_sending(
    server: Server, value: str
) -> None:
    flow = http_flow(
        {"endpoint": server.url("crm.test", "/echo"), "headers": {"X-Value": "<<vars.v>>"}}
    )
    result, _ = run_flow(server, flow, {"vars": {"v": value}})
    assert result.trace[0]["outcome"] == "invalid_request"
    assert "header 'X-Value'" in said(result)
    assert server.received.requests == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "nan is not a JSON number"),
        (float("inf"), "inf is not a JSON number"),
        (2**64, "beyond 64 bits"),
    ],
)
def test_bodies_that_json_cannot_carry_exactly_are_refused(
    server: Server, value: Any, problem: str
) -> None:
    # A context may not carry an integer beyond 64 bits (a state could not): a literal can.
    template = f"<<{value}>>" if isinstance(value, int) else "<<vars.v>>"
    flow = http_flow(
        {"endpoint": server.url("crm.test", "/echo"), "method": "POST", "body": {"v": template}}
    )
    result, _ = run_flow(server, flow, {"vars": {"v": value}} if template == "<<vars.v>>" else {})
    assert result.trace[0]["outcome"] == "invalid_request"
    assert problem in said(result)
    assert server.received.requests == []


def test_secrets_never_reach_traces_errors_or_logs(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = http_flow(
        {
            "endpoint": server.url("crm.test", "/silent?key=<<secrets.api_key>>"),
            "headers": {"X-Key": "<<secrets.api_key>>"},
            "timeout": "300ms",
        }
    )
    result, _ = run_flow(server, flow)
    assert result.trace[0]["outcome"] == "timeout"
    assert server.received.requests[0]["query"] == f"key={SECRET}"
    everything = json.dumps(result.to_json()) + caplog.text
    assert SECRET not in everything
    assert "key=[redacted]" in everything


def test_a_long_lived_runtime_keeps_only_the_latest_background_outcomes() -> None:
    """One runtime serves a whole process (README): its record of background requests is
    bounded (the most recent BACKGROUND_RESULTS_KEPT), so memory does not grow with calls."""
    from flowlang.runtime.http import HttpResult
    from flowlang.runtime.runner import BACKGROUND_RESULTS_KEPT

    class Instant:
        sent = 0

        async def send(self, request: Any, **_: Any) -> HttpResult:
            Instant.sent += 1
            return HttpResult("success", status=200 + Instant.sent % 2)

    flow = http_flow(
        {"endpoint": "https://crm.example.com/log", "parse_response": False},
        seen="<<steps.call.outcome>>",
    )
    extra = 25

    async def many_calls() -> Runtime:
        async with Runtime(http=Instant()) as runtime:
            for _ in range(BACKGROUND_RESULTS_KEPT + extra):
                assert (await runtime.start(flow, {})).status == "completed"
                await asyncio.sleep(0)
        return runtime

    runtime = asyncio.run(many_calls())
    assert Instant.sent == BACKGROUND_RESULTS_KEPT + extra
    assert len(runtime.background_results) == BACKGROUND_RESULTS_KEPT
    assert runtime.background_results[-1]["status"] == 200 + Instant.sent % 2


def test_fire_and_forget_moves_on_and_close_waits_for_the_request(server: Server) -> None:
    flow = http_flow(
        {"endpoint": server.url("crm.test", "/drip"), "parse_response": False, "timeout": "1s"},
        seen="<<steps.call.outcome>>",
    )
    started = time.monotonic()
    result, runtime = run_flow(server, flow)
    assert result.trace[0]["outcome"] == "sent"
    assert result.status == "completed"
    assert runtime.background_results and runtime.background_results[0]["outcome"] == "timeout"
    assert time.monotonic() - started >= 0.9  # closing the runtime waited for the request


def test_secrets_in_urls_are_redacted_from_library_logs(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = http_flow({"endpoint": server.url("crm.test", "/json?key=<<secrets.api_key>>")})
    result, _ = run_flow(server, flow)
    assert result.trace[0]["outcome"] == "success"
    assert server.received.requests[0]["query"] == f"key={SECRET}"
    assert "flowlang.http" in caplog.text  # the HTTP client did log the exchange
    assert SECRET not in caplog.text
