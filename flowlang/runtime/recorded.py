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
"""

from __future__ import annotations

__all__ = ["load_recorded_responses"]

import base64
from pathlib import Path

from flowlang.errors import SourcePosition
from flowlang.flow.source import DocumentError, load_document
from flowlang.runtime.http import RecordedHttp, RecordedResponse

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def load_recorded_responses(path: str | Path) -> RecordedHttp:
    """Read a responses file into a sender that answers from it."""
    document = load_document(Path(path))
    entries = document.data
    if not isinstance(entries, list):
        raise DocumentError(
            "a responses file is a list of responses", document.lines, document.position(())
        )
    responses = {}
    for index, entry in enumerate(entries):

        def fail(message: str, key: str | None = None, index: int = index) -> DocumentError:
            pointer = (index, key) if key is not None else (index,)
            position: SourcePosition = document.position(pointer)
            return DocumentError(message, document.lines, position)

        if not isinstance(entry, dict):
            raise fail("a response is key/value fields: request, status, headers, body")
        request = entry.get("request")
        method, _, url = str(request or "").partition(" ")
        if method.upper() not in _METHODS or not url.strip():
            raise fail("request must be 'METHOD URL', as in 'GET https://example.com/x'", "request")
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
        if "content-type" not in {str(name).lower() for name in headers} and not isinstance(
            body, str
        ):
            kind = "application/octet-stream" if isinstance(body, bytes) else "application/json"
            headers = {**headers, "content-type": kind}
        responses[(method.upper(), url.strip())] = RecordedResponse(
            status, {str(k): str(v) for k, v in headers.items()}, body, float(delay)
        )
    return RecordedHttp(responses)
