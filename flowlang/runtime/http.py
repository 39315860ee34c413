"""HTTP: send prepared requests safely and turn what comes back into data and an outcome.

``GuardedHttp`` resolves the host once through an injectable resolver, checks every resolved
address against the AddressPolicy, connects to exactly a checked address (through
``GuardedTransport``: the URL, the Host header, TLS SNI and the connection pool keep the name,
so a certificate is verified for every name a connection carries), bounds the whole exchange by
one deadline, streams the body with a byte counter, and follows redirects only when asked,
checking every hop again. No client is involved: no cookies, hooks or environment settings.
``RecordedHttp`` answers from recorded responses, for offline runs.
"""

from __future__ import annotations

__all__ = [
    "GuardedHttp",
    "HttpResult",
    "HttpSender",
    "RecordedHttp",
    "Resolver",
    "guarded_sender",
    "system_resolver",
]

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

import httpx
import orjson

from flowlang.runtime.addresses import AddressPolicy, literal_address
from flowlang.runtime.requests import PreparedRequest
from flowlang.runtime.transport import GuardedTransport

Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Nesting allowed in a parsed JSON response.
MAX_JSON_DEPTH = 64
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system (``getaddrinfo``), every address family."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=0, proto=0)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class HttpResult:
    """What one request came to.

    ``outcome`` is ``success`` (2xx) or a failure: ``http_error`` (any other status),
    ``timeout``, ``connection_error``, ``refused`` (address guard, scheme or redirect rules),
    ``too_large``, ``invalid_json`` or ``invalid_request``.
    """

    outcome: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None
    duration: float = 0.0

    @property
    def response(self) -> dict[str, Any] | None:
        """The response as flows see it (``status``, ``headers``, ``body``), when one came."""
        if self.status is None:
            return None
        return {"status": self.status, "headers": self.headers, "body": self.body}


class HttpSender(Protocol):
    """Sends prepared requests; the runtime's only way to the network."""

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        """Send ``request`` within ``timeout`` seconds in total."""


def _json_depth_ok(value: Any) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return True


def decode_body(content: bytes, content_type: str) -> tuple[str, Any]:
    """``("success", value)``, JSON parsed or else text; or ``("invalid_json", error)``."""
    media = content_type.split(";")[0].strip().lower()
    says_json = media == "application/json" or media.endswith("+json")
    if says_json or (not media and content.lstrip()[:1] in (b"{", b"[")):
        try:
            value = orjson.loads(content)
        except orjson.JSONDecodeError as error:
            if says_json:
                return "invalid_json", f"the response is not valid JSON: {error}"
        else:
            if not _json_depth_ok(value):
                return (
                    "invalid_json",
                    f"the response JSON nests deeper than {MAX_JSON_DEPTH} levels",
                )
            return "success", value
    charset = "utf-8"
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return "success", content.decode(charset, errors="replace")
    except LookupError:
        return "success", content.decode("utf-8", errors="replace")


def _headers(response: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class GuardedHttp:
    """The real network, behind the address guard (see the module docstring). Close it."""

    def __init__(
        self,
        policy: AddressPolicy,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver = system_resolver,
        connect_timeout: float = 3.0,
        max_redirects: int = 3,
        max_in_flight: int = 100,
    ) -> None:
        self.transport = GuardedTransport(ssl_context, max_in_flight)
        self.policy = policy
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.max_redirects = max_redirects
        # Requests beyond this wait here, in a FIFO queue that costs O(1) per request, instead
        # of in httpcore's pool, whose assignment pass is quadratic in queued requests
        # (encode/httpcore#1035): thousands of concurrent calls would otherwise stall.
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.transport.aclose()

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout), self._in_flight:
                result = await self._exchange(request, max_body, follow_redirects)
        except TimeoutError:
            result = HttpResult("timeout", error=f"no complete response within {timeout:g}s")
        result.duration = time.perf_counter() - started
        return result

    async def _exchange(
        self, request: PreparedRequest, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        current = request
        for _hop in range(self.max_redirects + 1):
            url = httpx.URL(current.url)
            refusal, target = await self._target(url)
            if refusal is not None:
                return HttpResult("refused", error=refusal)
            assert target is not None
            try:
                built = self._build(current, url, target)
                response = await self.transport.handle_async_request(built)
                response.request = built
            except httpx.TimeoutException:
                return HttpResult("timeout", error=f"timed out connecting to {url.host}")
            except (httpx.TransportError, OSError) as error:
                return HttpResult("connection_error", error=f"{type(error).__name__}: {error}")
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    status = response.status_code
                    if not follow_redirects:
                        return HttpResult(
                            "http_error",
                            status,
                            _headers(response),
                            None,
                            f"redirect {status} to {location!r} (redirects are off)",
                        )
                    next_request = self._redirect(current, url, location)
                    if isinstance(next_request, str):
                        return HttpResult("refused", status, _headers(response), None, next_request)
                    current = next_request
                    continue
                return await self._read(response, max_body)
            finally:
                await response.aclose()
        return HttpResult("refused", error=f"more than {self.max_redirects} redirects")

    async def _target(self, url: httpx.URL) -> tuple[str | None, str | None]:
        """Check scheme and address; return (refusal, address to connect to)."""
        host = url.host
        scheme = url.scheme
        if scheme not in ("https", "http"):
            return f"scheme {scheme!r} is not allowed", None
        if scheme == "http" and not self.policy.is_allowed_host(host):
            return (
                f"plain http to {host} is not allowed (https only, except allow-listed hosts)",
                None,
            )
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                resolved = await self.resolver(host, url.port or (443 if scheme == "https" else 80))
            except (OSError, UnicodeError) as error:
                return f"cannot resolve {host}: {error}", None
            addresses = []
            for text in resolved:
                try:
                    addresses.append(ipaddress.ip_address(text.split("%")[0]))
                except ValueError:
                    return f"{host} resolved to {text!r}, which is not an IP address", None
            if not addresses:
                return f"{host} did not resolve to any address", None
        for address in addresses:  # every answer must pass, or one could be swapped in later
            refusal = self.policy.check(host, address)
            if refusal is not None:
                return refusal, None
        return None, str(addresses[0])

    def _build(self, request: PreparedRequest, url: httpx.URL, address: str) -> httpx.Request:
        """The request to send, its name's connections bound to ``address`` from now on."""
        port = url.port or (443 if url.scheme == "https" else 80)
        self.transport.addresses.vet(url.raw_host.decode("ascii"), port, address)
        extensions: dict[str, Any] = {
            "timeout": {"connect": self.connect_timeout, "read": None, "write": None, "pool": None},
        }
        return httpx.Request(
            request.method,
            url,
            headers=request.headers,
            content=request.body,
            extensions=extensions,
        )

    def _redirect(
        self, request: PreparedRequest, url: httpx.URL, location: str
    ) -> PreparedRequest | str:
        if not location:
            return "a redirect without a Location header"
        target = httpx.URL(urljoin(str(url), location))
        if url.scheme == "https" and target.scheme != "https":
            return f"a redirect from https to {target.scheme} ({target}) is refused"
        same_origin = (target.scheme, target.host, target.port) == (url.scheme, url.host, url.port)
        headers = (
            request.headers
            if same_origin
            else tuple(
                (name, value)
                for name, value in request.headers
                if name.lower() not in _CREDENTIAL_HEADERS
            )
        )
        return PreparedRequest(request.method, str(target), headers, request.body)

    async def _read(self, response: httpx.Response, max_body: int) -> HttpResult:
        headers = _headers(response)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return HttpResult(
                "too_large",
                response.status_code,
                headers,
                None,
                f"the response declares {declared} bytes, more than the limit of {max_body}",
            )
        chunks = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body:
                    return HttpResult(
                        "too_large",
                        response.status_code,
                        headers,
                        None,
                        f"the response is larger than the limit of {max_body} bytes",
                    )
                chunks.append(chunk)
        except httpx.TimeoutException:
            return HttpResult(
                "timeout", response.status_code, headers, None, "timed out reading the response"
            )
        except (httpx.TransportError, httpx.DecodingError) as error:
            return HttpResult(
                "connection_error",
                response.status_code,
                headers,
                None,
                f"{type(error).__name__}: {error}",
            )
        outcome, body = decode_body(b"".join(chunks), response.headers.get("content-type", ""))
        if outcome != "success":
            return HttpResult(outcome, response.status_code, headers, None, str(body))
        status_outcome = "success" if 200 <= response.status_code < 300 else "http_error"
        problem = None if status_outcome == "success" else f"HTTP {response.status_code}"
        return HttpResult(status_outcome, response.status_code, headers, body, problem)


@dataclass(frozen=True)
class RecordedResponse:
    """A recorded response: status, headers and body (JSON value or text)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    delay: float = 0.0


class RecordedHttp:
    """Answers requests from recordings matched by method and URL; no network at all."""

    def __init__(self, responses: Mapping[tuple[str, str], RecordedResponse]) -> None:
        self.responses = dict(responses)
        self.requests: list[PreparedRequest] = []

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.requests.append(request)
        recorded = self.responses.get((request.method, request.url))
        if recorded is None:
            return HttpResult(
                "connection_error", error=f"no recorded response for {request.method} {request.url}"
            )
        if recorded.delay > timeout:
            await asyncio.sleep(timeout)
            return HttpResult(
                "timeout", error=f"no complete response within {timeout:g}s", duration=timeout
            )
        await asyncio.sleep(recorded.delay)
        headers = {name.lower(): value for name, value in recorded.headers.items()}
        body = recorded.body
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        if len(raw) > max_body:
            return HttpResult(
                "too_large",
                recorded.status,
                headers,
                None,
                f"the response is larger than the limit of {max_body} bytes",
            )
        outcome = "success" if 200 <= recorded.status < 300 else "http_error"
        return HttpResult(
            outcome,
            recorded.status,
            headers,
            body,
            None if outcome == "success" else f"HTTP {recorded.status}",
            recorded.delay,
        )


def guarded_sender(
    ssl_context: ssl.SSLContext | None,
    allow_hosts: frozenset[str],
    resolver: Resolver | None,
    connect_timeout: float,
    max_redirects: int,
    max_in_flight: int,
) -> GuardedHttp:
    """The guarded sender (certificates checked against ``ssl_context``, or the default CA
    bundle when None); close it with ``aclose``."""
    policy = AddressPolicy(frozenset(host.lower() for host in allow_hosts))
    return GuardedHttp(
        policy,
        ssl_context,
        resolver or system_resolver,
        connect_timeout,
        max_redirects,
        max_in_flight,
    )
