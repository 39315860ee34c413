"""One secret lookup per use, and the missing names returned by the preparation: a flow's
http_request on both step loops (automations: tests/test_action_kinds.py, ``lookups``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlang import Engine, load_flow_text
from flowlang.expr.backends import AVAILABLE
from flowlang.http_rules import PreparedRequest, RequestError
from flowlang.kinds.http_request import prepare_request
from flowlang.runtime.http import HttpResult
from flowlang.runtime.runner import Runtime
from flowlang.runtime.secrets import MappingSecrets, SecretsView

FLOW = """
flow: t
start: lookup
steps:
  lookup:
    type: http_request
    method: POST
    endpoint: "https://crm.example.com/<<secrets.path>>"
    headers: {Authorization: "Bearer <<secrets.token>>", X-Again: "<<secrets.token>>"}
    body: {token: "<<secrets.token>>", again: "<<secrets.token | upper>>"}
    next: done
    on_failure: failed
  done: {type: say, text: "<<steps.lookup.outcome>>"}
  failed: {type: say, text: "<<steps.lookup.error>>"}
"""


class CountingSecrets:
    """A secrets provider that counts every lookup, per name."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.lookups: Counter[str] = Counter()

    def get(self, name: str) -> str | None:
        self.lookups[name] += 1
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return f"vault entry {name}"


class Recorder:
    """Answers every request with 200 and keeps them."""

    def __init__(self) -> None:
        self.requests: list[PreparedRequest] = []

    async def send(self, request: PreparedRequest, **_: Any) -> HttpResult:
        self.requests.append(request)
        return HttpResult("success", 200, {}, {"ok": True})


def run(loop: str, values: dict[str, str]) -> tuple[Any, Recorder, CountingSecrets]:
    flow = load_flow_text(FLOW, engine=Engine(backend=loop))
    secrets, http = CountingSecrets(values), Recorder()

    async def main() -> Any:
        async with Runtime(backend=loop, secrets=secrets, http=http) as runtime:
            return await runtime.start(flow, {})

    return asyncio.run(main()), http, secrets


@pytest.mark.parametrize("loop", AVAILABLE)
def test_each_secret_is_looked_up_once_per_request(loop: str) -> None:
    result, http, secrets = run(loop, {"token": "tok-secret", "path": "p1"})
    assert result.status == "completed", result.error
    assert [row["outcome"] for row in result.trace] == ["success", "said"]
    assert dict(secrets.lookups) == {"path": 1, "token": 1}
    (request,) = http.requests
    assert request.url == "https://crm.example.com/p1"
    assert ("Authorization", "Bearer tok-secret") in request.headers


@pytest.mark.parametrize("loop", AVAILABLE)
def test_a_missing_secret_is_named_by_the_preparation_and_looked_up_once(loop: str) -> None:
    result, http, secrets = run(loop, {"path": "p1"})
    assert [row["outcome"] for row in result.trace] == ["invalid_request", "said"]
    assert result.instructions[-1]["text"] == "secret 'token' (vault entry token) is not set"
    assert dict(secrets.lookups) == {"path": 1, "token": 1}
    assert http.requests == []


def test_prepare_request_raises_naming_every_missing_secret_in_first_use_order() -> None:
    flow = load_flow_text(FLOW)
    view = SecretsView(MappingSecrets({}))
    with pytest.raises(RequestError) as raised:
        prepare_request(flow.step("lookup"), {"secrets": view}, 1024)
    assert str(raised.value) == (
        "secret 'path' (the secrets mapping); 'token' (the secrets mapping) is not set"
    )


def test_a_use_sees_each_name_once_and_the_view_masks_what_it_found() -> None:
    provider = CountingSecrets({"a": "alpha-secret"})
    view = SecretsView(provider)
    scope, use = view.use({"event": {}, "secrets": view})
    assert scope["secrets"] is use and scope["event"] == {}
    for _ in range(3):
        assert "a" in use and use["a"] == "alpha-secret" and "b" not in use
        with pytest.raises(KeyError):
            use["b"]
    assert use.get(42) is None and list(use) == [] and len(use) == 0  # type: ignore[call-overload]
    assert dict(provider.lookups) == {"a": 1, "b": 1}
    assert use.missing == ["b"]
    assert use.problem() == "secret 'b' (vault entry b) is not set"
    assert view.text("x alpha-secret y") == "x [redacted] y" and view.names == {"a"}
    assert view.use({"secrets": view})[1].problem() is None  # a new use starts clean


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.sampled_from(["a", "b", "c", "d", 7, None]), max_size=30),
    known=st.sets(st.sampled_from(["a", "b", "c", "d"])),
)
def test_a_use_looks_each_name_up_at_most_once_and_returns_the_missing_in_order(
    reads: list[Any], known: set[str]
) -> None:
    provider = CountingSecrets({name: f"value-of-{name}" for name in known})
    view = SecretsView(provider)
    _, use = view.use({"secrets": view})
    for name in reads:
        found = name in use
        assert found == (name in known)
        if found:
            assert use[name] == f"value-of-{name}"
    names = [name for name in reads if isinstance(name, str)]
    assert dict(provider.lookups) == dict.fromkeys(names, 1)
    assert use.missing == [name for name in dict.fromkeys(names) if name not in known]
    assert (use.problem() is None) == (not use.missing)
