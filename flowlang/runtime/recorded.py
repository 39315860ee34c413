"""Recorded responses: a YAML or JSON file of responses by method and URL, for offline runs.

```yaml
- request: GET https://crm.example.com/api/contacts?phone=%2B14155550100
  status: 200
  headers: {content-type: application/json}
  body: {tier: gold}
  delay: 0.2          # seconds; longer than the step's timeout gives a timeout
- request: GET https://recordings.example.com/c-77.flac
  headers: {content-type: audio/flac}
  body_base64: ZkxhQwAAACI...   # binary bodies (a recording), in base64
```

:func:`read_responses` reads such a list wherever it sits in a document (a responses file, or
a case of a flow test file), so both are read one way.
"""

from __future__ import annotations

__all__ = ["RESPONSE_KEYS", "load_recorded_responses", "read_responses"]

import base64
from pathlib import Path
from typing import Any

from flowlang.flow.source import Document, DocumentError, Pointer, load_document
from flowlang.runtime.http import RecordedHttp, RecordedResponse
from flowlang.suggest import did_you_mean

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The fields of one recorded response.
RESPONSE_KEYS = ("request", "status", "headers", "body", "body_base64", "delay")


def load_recorded_responses(path: str | Path) -> RecordedHttp:
    """Read a responses file into a sender that answers from it."""
    document = load_document(Path(path))
    return RecordedHttp(read_responses(document, ()))


def read_responses(
    document: Document, at: Pointer, *, strict: bool = False
) -> dict[tuple[str, str], RecordedResponse]:
    """The responses of the list at pointer ``at`` of ``document``, by method and URL.

    DocumentError names the place of the first bad entry; ``strict``: a key that is not a
    response field is one too (with a "did you mean")."""
    entries: Any = document.data
    for key in at:
        entries = entries[key]
    if not isinstance(entries, list):
        raise DocumentError(
            "recorded responses are a list of responses", document.lines, document.position(at)
        )
    responses = {}
    for index, entry in enumerate(entries):

        def fail(message: str, key: str | None = None, index: int = index) -> DocumentError:
            pointer = (*at, index, key) if key is not None else (*at, index)
            return DocumentError(message, document.lines, document.position(pointer))

        if not isinstance(entry, dict):
            raise fail("a response is key/value fields: request, status, headers, body")
        if strict:
            for key in entry:
                if key not in RESPONSE_KEYS:
                    raise DocumentError(
                        f"unknown response field {str(key)[:64]!r}"
                        f"{did_you_mean(key, RESPONSE_KEYS)}",
                        document.lines,
                        document.key_position((*at, index, key)),
                    )
        method, url = _request(entry.get("request"), fail)
        responses[(method, url)] = _response(entry, fail)
    return responses


def _request(request: Any, fail: Any) -> tuple[str, str]:
    method, _, url = str(request or "").partition(" ") if isinstance(request, str) else ("", "", "")
    if method.upper() not in _METHODS or not url.strip():
        raise fail("request must be 'METHOD URL', as in 'GET https://example.com/x'", "request")
    return method.upper(), url.strip()


def _response(entry: dict[str, Any], fail: Any) -> RecordedResponse:
    status = entry.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise fail("status must be an HTTP status code", "status")
    headers = entry.get("headers", {})
    if not isinstance(headers, dict):
        raise fail("headers must be names and values", "headers")
    delay = entry.get("delay", 0)
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 60:
        raise fail("delay must be a number of seconds from 0 to 60", "delay")
    body = entry.get("body", "")
    if "body_base64" in entry:
        encoded = entry["body_base64"]
        if "body" in entry or not isinstance(encoded, str):
            raise fail("body_base64 is base64 text, instead of body", "body_base64")
        try:
            body = base64.b64decode("".join(encoded.split()), validate=True)
        except ValueError:
            raise fail("body_base64 is not valid base64", "body_base64") from None
    if "content-type" not in {str(name).lower() for name in headers} and not isinstance(body, str):
        kind = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        headers = {**headers, "content-type": kind}
    return RecordedResponse(
        status, {str(k): str(v) for k, v in headers.items()}, body, float(delay)
    )
