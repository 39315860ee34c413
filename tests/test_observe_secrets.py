"""No secret in any of what observability reports (SECURITY.md rule 11, the captured-logs check
extended): a flow sends ``<<secrets.token>>`` in a header and the query to a server that echoes
it back; the value appears in no span attribute, span event, metric label value or log line."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from servers import Server
from test_observe_support import SECRET, call_through, captured, observer, span_capture

import flowlang
from flowlang.runtime.secrets import Redactor, holds_secret, secret_forms


def secret_flow(server: Server, path: str) -> flowlang.CompiledFlow:
    origin = server.url("crm.test", "")
    return flowlang.load_flow_text(f"""
flow: leaky
start: lookup
steps:
  lookup:
    type: http_request
    method: POST
    endpoint: "{origin}{path}?key=<<secrets.token>>&who=<<call.external_number>>"
    headers: {{Authorization: "Bearer <<secrets.token>>", X-Token: "<<secrets.token>>"}}
    body: {{token: "<<secrets.token>>"}}
    timeout: 300ms
    next: tell
    on_failure: tell
  tell:
    type: say
    text: "You said <<steps.lookup.response.body.query ?? 'nothing'>>"
    next: ask
  ask:
    type: collect_input
    prompt: "Again <<steps.lookup.response.body.headers.authorization ?? ''>>"
    next: away
    on_no_input: away
  away: {{type: transfer, target: "queue:<<steps.lookup.response.body.query ?? 'none'>>"}}
""")


def _texts(value: Any) -> list[str]:
    """Every text inside span attributes (names and values)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return [text for key, item in value.items() for text in (key, *_texts(item))]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _texts(item)]
    return [str(value)]


def assert_clean(text: str) -> None:
    """No form of this test's SECRET in ``text``. Only this secret: the process-wide registry
    (:func:`holds_secret`) also holds what other tests' generated secrets were, and a short
    random one can match any long text, such as a metrics page's help lines."""
    only_this = Redactor()
    only_this.add(SECRET)
    assert only_this.text(text) == text
    for form in secret_forms(SECRET):
        if len(form) >= 8:
            assert form not in text


def test_the_secret_is_in_no_span_event_metric_or_log(server: Server, backend: str) -> None:
    spans = span_capture()
    obs = observer(spans)
    with captured() as lines:
        for path in ("/echo", "/silent", "/status/500"):
            call_through(
                server, obs, secret_flow(server, path), ["1"], backend=backend, call_id=f"CA{path}"
            )
    # the secret really went out (and came back in the echo)
    echoed = server.received.requests[0]
    assert quote(SECRET, safe="") in echoed["query"] or SECRET in echoed["query"]
    assert echoed["headers"]["x-token"] == SECRET
    assert holds_secret(SECRET)  # registered: the checks below can see every form of it

    finished = spans.all()
    assert {span.name for span in finished} == {"flowlang.run leaky", "POST"}
    for span in finished:
        texts = [span.name, *_texts(dict(span.attributes or {}))]
        for event in span.events:
            texts += [event.name, *_texts(dict(event.attributes or {}))]
        if span.status.description:
            texts.append(span.status.description)
        assert_clean("\n".join(texts))

    page = obs.metrics()[0].decode()
    assert "flowlang_http_client_request_duration_seconds" in page
    assert_clean(page)
    labels = [label for line in page.splitlines() if "{" in line for label in [line.split("{")[1]]]
    assert labels and all(SECRET not in label for label in labels)

    assert any('"run.finished"' in line for line in lines)
    for line in lines:
        json.loads(line)
        assert_clean(line)


def test_the_json_formatter_masks_secrets_in_fields_too() -> None:
    """The record factory masks a record's message and arguments; fields given in ``extra``
    are masked by the formatter (in every form: as is, percent-encoded, JSON-escaped)."""
    import logging

    from flowlang.observe.logs import redact_text
    from flowlang.runtime.secrets import Redactor

    Redactor().add(SECRET)
    with captured() as lines:
        logging.getLogger("flowlang.serve").warning(
            "webhook.rejected",
            extra={
                "reason": f"token {SECRET}",
                "url": f"https://x.test/?k={quote(SECRET, safe='')}",
            },
        )
    [line] = [json.loads(line) for line in lines]
    assert line["reason"] == "token [redacted]"
    assert line["url"] == "https://x.test/?k=[redacted]"
    assert redact_text("nothing secret") == "nothing secret"
