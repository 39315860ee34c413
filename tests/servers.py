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


# --- speech-to-text: audio made at test time, a recording server, Google Speech v1 ------------
#
# Appended for issue 9 (speech). The Google impersonation enforces the v1 rules flowlang must
# follow (see GOOGLE_RULES); the recording server plays a contact center's file store and its
# faults by path.

import base64 as _base64  # noqa: E402
import io as _io  # noqa: E402
import struct as _struct  # noqa: E402
import wave as _wave  # noqa: E402


def wav_bytes(seconds: float, rate: int = 8000, channels: int = 1, tone: bool = True) -> bytes:
    """A real 16-bit PCM WAV file made with the wave module (a square-ish tone, or silence)."""
    frames = int(seconds * rate)
    buffer = _io.BytesIO()
    with _wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        period = max(1, rate // 440)
        one = b"".join(
            _struct.pack("<h", (3000 if (i // (period // 2 or 1)) % 2 else -3000) if tone else 0)
            * channels
            for i in range(period)
        )
        whole, rest = divmod(frames, period)
        out.writeframes(one * whole + one[: rest * 2 * channels])
    return buffer.getvalue()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def flac_silence(seconds: float, rate: int = 8000) -> bytes:
    """A valid FLAC file of digital silence (mono, 16-bit): STREAMINFO, then frames of one
    CONSTANT subframe each, so a minute is a few kilobytes."""
    total = int(seconds * rate)
    block = 4096
    rate_codes = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 24000: 0b0111, 32000: 0b1000}
    frames = []
    for number, start in enumerate(range(0, total, block)):
        size = min(block, total - start)
        size_code = 0b1100 if size == 4096 else 0b0111  # 4096, or 16-bit (size - 1) below
        header = bytes([0xFF, 0xF8, (size_code << 4) | rate_codes[rate], 0b0000_1000])
        coded = (
            number.to_bytes(1, "big")
            if number < 0x80
            else bytes([0xC0 | (number >> 6), 0x80 | (number & 0x3F)])
        )
        header += coded + (b"" if size == 4096 else (size - 1).to_bytes(2, "big"))
        header += bytes([_crc8(header)])
        frame = header + b"\x00" + b"\x00\x00"  # subframe: CONSTANT, no wasted bits; value 0
        frames.append(frame + _crc16(frame).to_bytes(2, "big"))
    info = (rate << 44) | (0 << 41) | (15 << 36) | total  # rate, channels-1, bits-1, samples
    streaminfo = (
        block.to_bytes(2, "big")
        + block.to_bytes(2, "big")
        + (0).to_bytes(3, "big")
        + (0).to_bytes(3, "big")
        + info.to_bytes(8, "big")
        + bytes(16)  # MD5 unknown
    )
    return (
        b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo + b"".join(frames)
    )


#: The rules of Google Speech-to-Text v1 the impersonation enforces, with where they are written.
GOOGLE_RULES = {
    "uri is gs:// only": "https://cloud.google.com/speech-to-text/docs/reference/rest/v1/RecognitionAudio",
    "content xor uri": "https://cloud.google.com/speech-to-text/docs/reference/rest/v1/RecognitionAudio",
    "sync at most 1 minute, 10 MB": "https://cloud.google.com/speech-to-text/quotas",
    "inline audio at most 60 s, long-running too": "https://cloud.google.com/speech-to-text/docs/async-recognize",
    "header and config must agree (WAV, FLAC)": "https://cloud.google.com/speech-to-text/docs/reference/rest/v1/RecognitionConfig#AudioEncoding",
    "sampleRateHertz 8000-48000": "https://cloud.google.com/speech-to-text/docs/reference/rest/v1/RecognitionConfig",
}
GOOGLE_ENCODINGS = (
    "LINEAR16",
    "FLAC",
    "MULAW",
    "AMR",
    "AMR_WB",
    "OGG_OPUS",
    "SPEEX_WITH_HEADER_BYTE",
    "WEBM_OPUS",
)
_CONFIG_FIELDS = {
    "encoding",
    "sampleRateHertz",
    "audioChannelCount",
    "languageCode",
    "model",
    "useEnhanced",
    "maxAlternatives",
    "profanityFilter",
    "enableWordTimeOffsets",
    "enableAutomaticPunctuation",
}
_GOOGLE_LIMIT = 10 * 1024 * 1024
_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class GoogleError(Exception):
    """A refusal in Google's JSON error shape."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


def _header_facts(audio: bytes) -> tuple[str, int, float] | None:
    """(encoding, rate, seconds) of a WAV (the wave module) or FLAC (STREAMINFO) file."""
    if audio[:4] == b"RIFF":
        try:
            with _wave.open(_io.BytesIO(audio), "rb") as read:
                rate, width, channels = (
                    read.getframerate(),
                    read.getsampwidth(),
                    read.getnchannels(),
                )
                present = len(read.readframes(read.getnframes()))
        except (EOFError, _wave.Error) as error:
            raise GoogleError(400, "INVALID_ARGUMENT", f"Invalid WAV header: {error}") from None
        seconds = present / (rate * width * channels) if rate and width and channels else 0.0
        return ("LINEAR16" if width == 2 else "MULAW"), rate, seconds
    if audio[:4] == b"fLaC" and len(audio) >= 42:
        info = int.from_bytes(audio[18:26], "big")
        rate, samples = info >> 44, info & 0xFFFFFFFFF
        return "FLAC", rate, samples / rate if rate else 0.0
    return None


@dataclass
class GoogleSpeech:
    """State of the impersonation: objects in Cloud Storage (gs:// URI to seconds), operations,
    and how the operations endpoint behaves (``polls_before_done``, ``mode``)."""

    api_key: str
    objects: dict[str, float] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_before_done: int = 2
    #: normal | never (never done) | error (done with an error) | garbage (not JSON)
    mode: str = "normal"
    transcript: str = "hello I would like to change my plan"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def recognize(self, body: Any, method: str) -> dict[str, Any]:
        """Check a request as Google does; the answer, or GoogleError."""
        if not isinstance(body, dict):
            raise GoogleError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        config, audio = body.get("config"), body.get("audio")
        if not isinstance(config, dict):
            raise GoogleError(400, "INVALID_ARGUMENT", "RecognitionConfig not set.")
        for name in config:
            if name not in _CONFIG_FIELDS:
                raise GoogleError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid JSON payload received. Unknown name \"{name}\" at 'config': "
                    "Cannot find field.",
                )
        encoding = config.get("encoding")
        if encoding is not None and encoding not in GOOGLE_ENCODINGS:
            raise GoogleError(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value at 'config.encoding' (type.googleapis.com/google.cloud.speech.v1."
                f'RecognitionConfig.AudioEncoding), "{encoding}"',
            )
        rate = config.get("sampleRateHertz")
        if rate is not None and (type(rate) is not int or not 8000 <= rate <= 48000):
            raise GoogleError(
                400, "INVALID_ARGUMENT", f"sample_rate_hertz {rate} must be in 8000-48000"
            )
        if not isinstance(config.get("languageCode"), str) or not config["languageCode"]:
            raise GoogleError(
                400, "INVALID_ARGUMENT", "Invalid recognition 'config': language_code is required."
            )
        if not isinstance(audio, dict) or ("content" in audio) == ("uri" in audio):
            raise GoogleError(
                400, "INVALID_ARGUMENT", "RecognitionAudio must have exactly one of content or uri."
            )
        if "uri" in audio:
            uri = audio["uri"]
            if not isinstance(uri, str) or not uri.startswith("gs://"):
                raise GoogleError(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
            if uri not in self.objects:
                raise GoogleError(404, "NOT_FOUND", "Requested entity was not found.")
            seconds = self.objects[uri]
        else:
            content = audio["content"]
            raw = content.encode("ascii", "replace") if isinstance(content, str) else b"?"
            try:
                if not set(raw) <= _ALPHABET:
                    raise ValueError
                data = _base64.b64decode(raw, validate=True)
            except ValueError:
                raise GoogleError(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid value at 'audio.content' (TYPE_BYTES), Base64 decoding failed",
                ) from None
            facts = _header_facts(data)
            if facts is None:
                if encoding is None or rate is None:
                    raise GoogleError(
                        400,
                        "INVALID_ARGUMENT",
                        "Must specify both encoding and sample_rate_hertz for this audio.",
                    )
                seconds = 0.0
            else:
                kind, header_rate, seconds = facts
                if encoding is not None and encoding != kind:
                    raise GoogleError(
                        400, "INVALID_ARGUMENT", f"Specify {kind} encoding to match audio file."
                    )
                if rate is not None and rate != header_rate:
                    raise GoogleError(
                        400,
                        "INVALID_ARGUMENT",
                        f"sample_rate_hertz ({rate}) in RecognitionConfig must either be "
                        f"unspecified or match the value in the {kind} header ({header_rate}).",
                    )
            if seconds > 60 and method == "longrunningrecognize":
                raise GoogleError(
                    400,
                    "INVALID_ARGUMENT",
                    "Inline audio exceeds duration limit. Please use a GCS URI.",
                )
        if method == "recognize" and seconds > 60:
            raise GoogleError(
                400,
                "INVALID_ARGUMENT",
                "Sync input too long. For audio longer than 1 min use LongRunningRecognize with "
                "a 'uri' parameter.",
            )
        results = {
            "results": [{"alternatives": [{"transcript": self.transcript, "confidence": 0.92}]}],
            "totalBilledTime": f"{int(seconds) + 1}s",
        }
        if method == "recognize":
            return results
        name = str(7612202767953098924 + len(self.operations))
        self.operations[name] = {"polls": 0, "results": results}
        return {"name": name}

    def operation(self, name: str) -> dict[str, Any] | bytes:
        state = self.operations.get(name)
        if state is None:
            raise GoogleError(404, "NOT_FOUND", "Requested entity was not found.")
        state["polls"] += 1
        if self.mode == "garbage":
            return b"<html>502 gateway</html>"
        metadata = {
            "@type": "type.googleapis.com/google.cloud.speech.v1.LongRunningRecognizeMetadata",
            "progressPercent": min(99, 30 * state["polls"]),
        }
        if self.mode == "never" or state["polls"] <= self.polls_before_done:
            return {"name": name, "metadata": metadata}
        if self.mode == "error":
            return {
                "name": name,
                "metadata": metadata,
                "done": True,
                "error": {"code": 3, "message": "Audio data does not appear to be speech."},
            }
        response = {
            "@type": "type.googleapis.com/google.cloud.speech.v1.LongRunningRecognizeResponse",
            **state["results"],
        }
        return {
            "name": name,
            "metadata": metadata | {"progressPercent": 100},
            "done": True,
            "response": response,
        }


class _GoogleHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    google: GoogleSpeech

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, payload: Any) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kind = "text/html" if isinstance(payload, bytes) else "application/json; charset=UTF-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _GOOGLE_LIMIT:
            self.close_connection = True
            self._answer(
                400,
                {
                    "error": {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": f"Request payload size exceeds the limit: {_GOOGLE_LIMIT} bytes.",
                    }
                },
            )
            return
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        google = self.google
        google.requests.append(
            {
                "method": self.command,
                "path": path,
                "body": raw,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        try:
            if self.headers.get("X-Goog-Api-Key") != google.api_key:
                raise GoogleError(
                    400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
                )
            if self.command == "POST" and path in (
                "/v1/speech:recognize",
                "/v1/speech:longrunningrecognize",
            ):
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise GoogleError(
                        400, "INVALID_ARGUMENT", "Invalid JSON payload received."
                    ) from None
                answer: Any = google.recognize(body, path.rsplit(":", 1)[1])
            elif self.command == "GET" and path.startswith("/v1/operations/"):
                answer = google.operation(path.rsplit("/", 1)[1])
            else:
                raise GoogleError(404, "NOT_FOUND", f"The requested URL {path} was not found.")
        except GoogleError as error:
            self._answer(
                error.code,
                {"error": {"code": error.code, "message": error.message, "status": error.status}},
            )
            return
        self._answer(200, answer)

    do_GET = do_POST = _handle


@dataclass
class Recordings:
    """The recording server's files (path to (content type, bytes)) and what it received."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Authorization a path under /private/ needs.
    authorization: str = ""


class _RecordingHandler(BaseHTTPRequestHandler):
    """Files by path; /huge streams without end (up to 64 MiB), /drip one byte at a time,
    /redirect?to=URL answers 302, /private/... needs the Authorization header."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    store: Recordings
    stop: threading.Event

    def log_message(self, *args: Any) -> None:
        pass

    def _send(
        self, status: int, kind: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self.store.requests.append(
            {
                "path": path,
                "host": self.headers.get("Host", ""),
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        if path == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"RIFF" + b"\x00" * (64 * 1024 - 4)
            try:
                for _ in range(1024):  # 64 MiB at most
                    if self.stop.is_set():
                        return
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                return
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(200):
                    if self.stop.wait(0.2):
                        return
                    self.wfile.write(b"R")
                    self.wfile.flush()
            except OSError:
                return
        elif path == "/redirect":
            target = parse_qs(parts.query).get("to", ["/"])[0]
            self._send(302, "text/plain", b"moved", {"Location": target})
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), "text/plain", b"no")
        elif (
            path.startswith("/private/")
            and self.headers.get("Authorization") != self.store.authorization
        ):
            self._send(401, "text/plain", b"who are you")
        elif path in self.store.files:
            kind, body = self.store.files[path]
            self._send(200, kind, body)
        else:
            self._send(404, "text/plain", b"not found")


@contextmanager
def _serve_handler(
    ca: trustme.CA, handler: type[BaseHTTPRequestHandler], names: tuple[str, ...]
) -> Iterator[int]:
    """Serve ``handler`` over HTTPS on 127.0.0.1 (a certificate for ``names``); yield the port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, "127.0.0.1").configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        stop = getattr(handler, "stop", None)
        if isinstance(stop, threading.Event):
            stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_google_speech(ca: trustme.CA, api_key: str) -> Iterator[tuple[int, GoogleSpeech]]:
    """A loopback impersonation of Google Speech-to-Text v1 (``https://speech.test:PORT/v1``)."""
    google = GoogleSpeech(api_key)
    handler = type("GoogleHandler", (_GoogleHandler,), {"google": google})
    with _serve_handler(ca, handler, ("speech.test",)) as port:
        yield port, google


@contextmanager
def serve_recordings(ca: trustme.CA) -> Iterator[tuple[int, Recordings]]:
    """A loopback recording server (``https://recordings.test:PORT``; also other.test)."""
    store = Recordings()
    handler = type(
        "RecordingHandler", (_RecordingHandler,), {"store": store, "stop": threading.Event()}
    )
    with _serve_handler(ca, handler, ("recordings.test", "other.test")) as port:
        yield port, store
