"""Loopback HTTPS servers for tests, with a certificate authority made at test time (trustme).

One threaded server per test plays the CRM and its faults by path:

| path | behaviour |
|---|---|
| /echo... | 200 JSON of what arrived: method, path, raw query, headers, body |
| /json | 200 `{"tier": "gold", ...}` |
| /text | 200 text/plain |
| /status/N | status N with a JSON body |
| /drip | headers at once, then one byte every 0.3 s for a long time |
| /silent | accepts the request and never answers |
| /big | 200 with a 200 KiB streamed body (no Content-Length) |
| /declared-big | Content-Length of 10 MB |
| /invalid-json | application/json that is not JSON |
| /deep-json | JSON nested 100 levels |
| /reset | closes the connection without a response |
| /redirect?to=URL | 302 to URL |
| /script/NAME... | the next scripted response for NAME (status, headers, body; status 0 hangs), then 200 `{}` |
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme


@dataclass
class Received:
    """What a server received: every request, in order; and scripted responses by name."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)

    def script(self, name: str, *responses: tuple[int, dict[str, str], Any]) -> None:
        """Answer the next requests to /script/NAME with these (status, headers, body)."""
        self.scripts.setdefault(name, []).extend(responses)

    def to(self, name: str) -> list[dict[str, Any]]:
        """The requests that reached /script/NAME (any sub-path)."""
        return [r for r in self.requests if r["path"].startswith(f"/script/{name}")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, without a delayed-ACK stall
    received: Received
    stop: threading.Event

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        record = {
            "method": self.command,
            "path": parts.path,
            "query": parts.query,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        self.received.requests.append(record)
        path = parts.path
        if path.startswith("/echo"):
            self._send(200, json.dumps(record).encode())
        elif path == "/json":
            self._send(200, b'{"tier": "gold", "first_name": "Ann", "balance": 42.5}')
        elif path == "/text":
            self._send(200, "plain text, caf\u00e9".encode(), "text/plain; charset=utf-8")
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self._send(status, b'{"error": "nope"}')
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(100):
                if self.stop.wait(0.3):
                    return
                self.wfile.write(b" ")
                self.wfile.flush()
        elif path == "/silent":
            self.stop.wait(30)
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 4096
            for _ in range(50):
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/declared-big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(10 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/invalid-json":
            self._send(200, b'{"tier": gold')
        elif path == "/deep-json":
            self._send(200, b"[" * 100 + b"]" * 100)
        elif path == "/reset":
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path.startswith("/script/"):
            name = path.split("/")[2]
            queue = self.received.scripts.get(name) or []
            status, headers, payload = queue.pop(0) if queue else (200, {}, {})
            if status == 0:  # hang: accept the request and never answer
                self.stop.wait(30)
                return
            body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            kind = "text/plain" if isinstance(payload, str) else "application/json"
            self._send(status, body, kind, extra=headers)
        elif path == "/redirect":
            target = parse_qs(parts.query).get("to", ["/json"])[0]
            self._send(302, b"{}", extra={"Location": target})
        else:
            self._send(404, b'{"error": "not found"}')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@dataclass
class Server:
    """A running loopback server: its port, what it received, and the CA that signed it."""

    port: int
    received: Received
    ca: trustme.CA
    scheme: str

    def url(self, host: str, path: str) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def client_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@contextmanager
def serve(
    ca: trustme.CA,
    *,
    tls: bool = True,
    names: tuple[str, ...] = ("crm.test", "other.test", "localhost"),
) -> Iterator[Server]:
    """Run a loopback server for the duration of the block, then stop it and its threads."""
    received = Received()
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {"received": received, "stop": stop})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names, "127.0.0.1").configure_cert(context)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Server(httpd.server_address[1], received, ca, "https" if tls else "http")
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        time.sleep(0)  # let handler threads see the stop event
