"""HTTP: send prepared requests safely and turn what comes back into data and an outcome.

``GuardedHttp`` resolves the host once through an injectable resolver, checks every resolved
address against the AddressPolicy, connects to exactly a checked address (through
``GuardedTransport``: the Host header, TLS SNI and the connection pool keep the name, so a
certificate is verified for every name a connection carries; HTTP/1.1 with keep-alive over
flowlang's own pool, see ``connections``), bounds the whole exchange by
one deadline, and follows redirects only when asked, checking every hop again (across origins
only a few harmless headers and never a body go along). It asks for ``gzip, deflate`` only,
reads the raw body and inflates it itself, counting the bytes both before and after inflating
against the limit, and refuses any other or stacked content coding. ``send`` is total: whatever
goes wrong in one exchange is an HttpResult with a failure outcome, never an exception (except
cancellation). No client is involved: no cookies, hooks or environment settings.
``RecordedHttp`` answers from recorded responses, for offline runs.
"""

from __future__ import annotations

__all__ = [
    "RAW_BODY",
    "RECORDED_REQUESTS_KEPT",
    "GuardedHttp",
    "HttpResult",
    "HttpSender",
    "RecordedHttp",
    "Resolver",
    "guarded_sender",
    "system_resolver",
]

import asyncio
import codecs
import ipaddress
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin

import h11
import httpx
import orjson

from flowlang.http_rules import (
    BODY_METHODS,
    DEFAULT_PORTS,
    PreparedRequest,
    header_name_problem,
    origin_of,
    sent_origin_problem,
)
from flowlang.runtime.addresses import AddressPolicy, literal_address
from flowlang.runtime.h1 import (
    _ConnectTimeoutError,
    _ExchangeError,
    _LocalProtocolError,
    request_head,
)
from flowlang.runtime.secrets import holds_secret
from flowlang.runtime.transport import Exchange, GuardedTransport

Resolver = Callable[[str, int], Awaitable[list[str]]]
_K = TypeVar("_K")
_V = TypeVar("_V")

#: A PreparedRequest extension: a 2xx body comes back as the bytes received (a recording),
#: neither parsed nor decoded.
RAW_BODY = "flowlang.raw_body"
#: Nesting allowed in a parsed JSON response.
MAX_JSON_DEPTH = 64
#: What every request asks for: the only content codings ``_Inflater`` decodes.
ACCEPT_ENCODING = "gzip, deflate"
#: The headers a redirect to another origin keeps (when none of them carries a secret).
CROSS_ORIGIN_HEADERS = frozenset({"accept", "accept-language", "user-agent"})
#: Headers that describe a body: dropped with the body when a redirect turns into a GET.
_BODY_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "content-language", "transfer-encoding"}
)
#: Text codecs Python knows that are not character sets (they raise, or transform the text).
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "utf-7"}
)
#: Statuses that redirect (when a Location comes with them).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Entries kept in each of the sender's caches of pure results (URL readings, address
#: verdicts); a full cache starts over.
CACHE_SIZE = 4096
#: The longest key (characters of URL, header names and values, host and addresses) a cache
#: keeps an entry for: longer ones are worked out again each time.
MAX_CACHED_KEY = 2048
#: The characters of keys each cache holds at most (then it starts over): with what the entries
#: cost beside their keys, the four caches hold a few MB at most whatever the requests (about
#: 7 MB measured at worst: CACHE_SIZE tiny requests; 0.6 MB for keys near MAX_CACHED_KEY).
CACHE_CHARS = 256 * 1024
#: SSL errors that are an interrupted connection rather than a failed handshake or certificate.
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system (``getaddrinfo``), every address family."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=0, proto=0)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class HttpResult:
    """What one request came to.

    ``outcome`` is ``success`` (2xx) or a failure: ``http_error`` (any other status),
    ``timeout``, ``connection_error``, ``tls_error`` (a certificate that does not verify or
    another failed TLS handshake: permanent), ``refused`` (address guard, scheme or redirect
    rules), ``too_large``, ``invalid_json``, ``invalid_response`` (a response that cannot be
    read: an unasked or broken content coding, a charset that is no character set, anything
    unexpected) or ``invalid_request``.
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
            openers = content.count(b"[") + content.count(b"{")  # a bound on the depth
            if openers > MAX_JSON_DEPTH and not _json_depth_ok(value):
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
        codec = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):  # a name Python does not know: read as UTF-8
        return "success", content.decode("utf-8", errors="replace")
    if not codec._is_text_encoding or codec.name in _NOT_CHARSETS:
        return "invalid_response", f"the response charset {charset!r} is not a character set"
    try:
        return "success", content.decode(codec.name, errors="replace")
    except Exception as error:  # any codec failure is a bad response
        return "invalid_response", f"the response cannot be decoded as {charset!r}: {error}"


class _Cache(dict[_K, _V]):
    """A cache of pure results bounded by entries (CACHE_SIZE) and by the characters of their
    keys (CACHE_CHARS); a full cache starts over. Read it as a dict."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        #: Characters of the keys kept now.
        self.chars = 0

    def keep(self, key: _K, value: _V, chars: int, *texts: str) -> None:
        """Keep ``value`` for ``key`` (of ``chars`` characters), unless the key is longer
        than MAX_CACHED_KEY or one of ``texts`` holds a secret some run has used (a secret
        never outlives its run here)."""
        if chars > MAX_CACHED_KEY or any(holds_secret(text) for text in texts):
            return
        if len(self) >= CACHE_SIZE or self.chars + chars > CACHE_CHARS:
            self.clear()
            self.chars = 0
        self[key] = value
        self.chars += chars


def _named(error: BaseException) -> str:
    """``Kind: message`` for an exchange error (the client's own kinds without their ``_``)."""
    return f"{type(error).__name__.lstrip('_')}: {error}"


def _tls_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from a certificate or TLS handshake failure (not a reset)."""
    current: BaseException | None = error
    for _ in range(8):  # the cause chain: our error <- ssl error
        if current is None:
            return False
        if isinstance(current, ssl.SSLError) and not isinstance(current, _TRANSIENT_SSL):
            return True
        current = current.__cause__ or current.__context__
    return False


def _content_coding(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(coding, None)``: ``gzip``, ``deflate`` or None (identity); or ``(None, refusal)``."""
    codings = [item.strip().lower() for item in headers.get("content-encoding", "").split(",")]
    codings = [item for item in codings if item and item != "identity"]
    if not codings:
        return None, None
    if len(codings) > 1:
        return None, f"stacked content codings ({', '.join(codings)}) are refused"
    coding = {"x-gzip": "gzip"}.get(codings[0], codings[0])
    if coding not in ("gzip", "deflate"):
        return None, f"content coding {codings[0]!r} was not asked for ({ACCEPT_ENCODING})"
    return coding, None


class _TooLargeError(Exception):
    """The inflated body passed the limit."""


class _Inflater:
    """Inflates gzip or deflate data with zlib, never producing more than ``limit`` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        self.gzip = coding == "gzip"
        self.limit = limit
        self.size = 0
        self.head = b""
        self.decoder: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None

    def feed(self, data: bytes) -> list[bytes]:
        """The bytes ``data`` inflates to; _TooLargeError past the limit, zlib.error when
        broken."""
        if self.decoder is None:  # deflate: zlib-wrapped, or raw as some servers send it
            data = self.head + data
            if len(data) < 2:
                self.head = data
                return []
            wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out = []
        while data:
            piece = self.decoder.decompress(data, self.limit - self.size + 1)
            self.size += len(piece)
            if self.size > self.limit:
                raise _TooLargeError
            out.append(piece)
            data = self.decoder.unconsumed_tail
            if self.decoder.eof:
                data = self.decoder.unused_data
                if data and not self.gzip:
                    raise zlib.error("data after the end of the deflate stream")
                if data:  # concatenated gzip members
                    self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return out

    @property
    def complete(self) -> bool:
        """Whether the compressed stream ended properly."""
        return self.decoder is not None and bool(self.decoder.eof)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Response headers by lowercase name (repeated ones joined with ``, ``), decoded as ASCII,
    else UTF-8, else ISO-8859-1, whichever fits them all (as httpx reads them)."""
    for encoding in ("ascii", "utf-8"):  # ASCII: the usual case
        try:
            return _decoded_headers(raw, encoding)
        except UnicodeDecodeError:
            continue
    return _decoded_headers(raw, "iso-8859-1")  # every byte is a character


def _decoded_headers(raw: list[tuple[bytes, bytes]], encoding: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode(encoding).lower()
        text = value.decode(encoding)
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class _Deadline:
    """``asyncio.timeout`` for one exchange, at a third of its cost: one timer that cancels the
    task, the cancellation turned into TimeoutError on the way out (as asyncio.timeout does,
    counting the task's cancel requests so a cancellation from outside still propagates)."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = loop.call_at(loop.time() + self._delay, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, error: Any, trace: Any) -> None:
        self._handle.cancel()
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and kind is asyncio.CancelledError
        ):
            raise TimeoutError from error


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
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self.transport = GuardedTransport(context, max_in_flight)
        self.policy = policy
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.max_redirects = max_redirects
        # Requests beyond this wait here, in a FIFO queue that costs O(1) per request; the pool
        # behind it never has a waiting list of its own.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        # Pure functions of their keys, cached: httpx's reading of a URL, and the guard's
        # verdict on a host and the addresses it resolved to (the policy never changes).
        self._urls: _Cache[str, httpx.URL] = _Cache()
        self._verdicts: _Cache[tuple[str, tuple[str, ...]], tuple[str | None, str | None]]
        self._verdicts = _Cache()
        self._names: _Cache[str, None] = _Cache()
        self._heads: _Cache[tuple[str, str, tuple[tuple[str, str], ...], int], h11.Request]
        self._heads = _Cache()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.transport.aclose()

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        started = time.perf_counter()
        try:
            async with _Deadline(timeout), self._in_flight:
                result = await self._exchange(request, max_body, follow_redirects)
        except TimeoutError:
            result = HttpResult("timeout", error=f"no complete response within {timeout:g}s")
        except Exception as error:  # one bad exchange fails its step, no more
            result = HttpResult(
                "invalid_response", error=f"the exchange failed: {type(error).__name__}: {error}"
            )
        result.duration = time.perf_counter() - started
        return result

    async def _exchange(
        self, request: PreparedRequest, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        current = request
        url = self._urls.get(current.url)
        if url is None:
            try:
                url = httpx.URL(current.url)
            except (httpx.InvalidURL, UnicodeError, ValueError) as error:
                return HttpResult("invalid_request", error=f"not a valid URL: {error}")
            self._urls.keep(current.url, url, len(current.url), current.url)
        for _hop in range(self.max_redirects + 1):
            problem = sent_origin_problem(current.url, url)
            if problem is not None:
                return HttpResult("invalid_request", error=problem)
            refusal, target = await self._target(url)
            if refusal is not None:
                return HttpResult("refused", error=refusal)
            assert target is not None
            scheme = url.scheme
            key = (scheme, url.raw_host.decode("ascii"), url.port or DEFAULT_PORTS[scheme], target)
            try:
                head = self._head(current, url)
            except (UnicodeError, ValueError, TypeError, _LocalProtocolError) as error:
                return HttpResult("invalid_request", error=f"the request cannot be sent: {error}")
            try:
                exchange = await self.transport.send(key, head, current.body, self.connect_timeout)
            except _ConnectTimeoutError:
                return HttpResult("timeout", error=f"timed out connecting to {url.host}")
            except _LocalProtocolError as error:  # a header h11 will not write: permanent
                return HttpResult("invalid_request", error=f"the request cannot be sent: {error}")
            except (_ExchangeError, OSError) as error:
                outcome = "tls_error" if _tls_failure(error) else "connection_error"
                return HttpResult(outcome, error=_named(error))
            try:
                status = exchange.response.status
                received = _headers(exchange.response.headers)
                if "transfer-encoding" in received and "content-length" in received:
                    return HttpResult(  # RFC 9112 6.3: an error (the connection is not reused)
                        "invalid_response",
                        status,
                        received,
                        None,
                        "the response has both Content-Length and Transfer-Encoding",
                    )
                location = received.get("location")
                if status in _REDIRECTS and location is not None:
                    if not follow_redirects:
                        return HttpResult(
                            "http_error",
                            status,
                            received,
                            None,
                            f"redirect {status} to {location!r} (redirects are off)",
                        )
                    next_request = self._redirect(current, url, location, status)
                    if isinstance(next_request, str):
                        return HttpResult("refused", status, received, None, next_request)
                    current, url = next_request
                    continue
                raw = bool(request.extensions.get(RAW_BODY))
                bodiless = current.method == "HEAD" or status in (204, 304)
                return await self._read(exchange, status, received, max_body, raw, bodiless)
            finally:
                exchange.close()
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
        key: tuple[str, tuple[str, ...]] = (host, ())  # () for a literal only: nothing resolved
        verdict = self._verdicts.get(key)
        if verdict is None and self._is_name(host):
            try:
                resolved = await self.resolver(host, url.port or DEFAULT_PORTS[scheme])
            except (OSError, UnicodeError, ValueError) as error:
                return f"cannot resolve {host}: {error}", None
            if not resolved:  # never cached: the name is resolved again next time
                return f"{host} did not resolve to any address", None
            key = (host, tuple(resolved))
            verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._vet(host, key[1])
            self._verdicts.keep(key, verdict, len(host) + sum(len(text) for text in key[1]))
        return verdict

    def _is_name(self, host: str) -> bool:
        """Whether ``host`` is a name (to resolve) rather than an address in any spelling."""
        if host in self._names:
            return True
        if literal_address(host) is not None:
            return False
        self._names.keep(host, None, len(host))
        return True

    def _vet(self, host: str, resolved: tuple[str, ...]) -> tuple[str | None, str | None]:
        """The guard's verdict on ``host`` (resolved to ``resolved``, or () for a literal):
        (refusal, address to connect to)."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
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

    def _head(self, request: PreparedRequest, url: httpx.URL) -> h11.Request:
        """The request head as httpx would write it (Host first, then the request's headers,
        ours, a Content-Length), checked by h11 once per distinct small request without a
        secret (cached; a secret never outlives its run in the cache)."""
        cache_key = (request.method, request.url, request.headers, len(request.body or b""))
        head = self._heads.get(cache_key)
        if head is None:
            head = self._build(request, url)
            values = [value for _, value in request.headers]
            chars = len(request.url) + sum(len(name) for name, _ in request.headers)
            chars += sum(map(len, values))
            self._heads.keep(cache_key, head, chars, request.url, *values)
        return head

    def _build(self, request: PreparedRequest, url: httpx.URL) -> h11.Request:
        method = request.method.upper()
        names = set()
        headers: list[tuple[bytes, bytes]] = []
        for name, value in request.headers:
            lower = name.lower()
            problem = header_name_problem(name)
            if problem is not None:  # the connection is verified for the URL's host only
                raise ValueError(problem)
            if lower != "accept-encoding":
                names.add(lower)
                headers.append((name.encode("ascii"), value.encode("ascii")))
        headers.append((b"Accept-Encoding", ACCEPT_ENCODING.encode()))
        if "content-length" not in names and "transfer-encoding" not in names:
            if request.body:
                headers.append((b"Content-Length", str(len(request.body)).encode()))
            elif method in BODY_METHODS:
                headers.append((b"Content-Length", b"0"))
        headers.insert(0, (b"Host", url.netloc))
        return request_head(method.encode("ascii"), url.raw_path, headers)

    def _redirect(
        self, request: PreparedRequest, url: httpx.URL, location: str, status: int
    ) -> tuple[PreparedRequest, httpx.URL] | str:
        """The next request (fetch's rules), or why the redirect is refused."""
        if not location:
            return "a redirect without a Location header"
        try:
            joined = urljoin(str(url), location)
            origin_of(joined)  # strict: a port in range, no credentials, a well-formed host
            target = httpx.URL(joined)
        except (ValueError, httpx.InvalidURL, UnicodeError) as error:
            return f"a redirect to {location!r} is refused: {self._invalid_host(location, error)}"
        if url.scheme == "https" and target.scheme != "https":
            return f"a redirect from https to {target.scheme} ({target}) is refused"
        method, body, headers = request.method, request.body, request.headers
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
            headers = tuple(item for item in headers if item[0].lower() not in _BODY_HEADERS)
        same_origin = (target.scheme, target.host, target.port) == (url.scheme, url.host, url.port)
        if not same_origin:
            if body is not None:
                return (
                    f"a {status} redirect to another origin ({target.scheme}://{target.host}) "
                    "would resend the request body; refused"
                )
            headers = tuple(
                (name, value)
                for name, value in headers
                if name.lower() in CROSS_ORIGIN_HEADERS and not holds_secret(value)
            )
        return PreparedRequest(method, str(target), headers, body), target

    def _invalid_host(self, location: str, error: Exception) -> str:
        """Why a Location is not a valid URL; a legacy IPv4 spelling of a refused address
        (``https://0177.0.0.1/``) is named as the address it spells."""
        host = location.partition("://")[2].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0]
        literal = literal_address(host) if host else None
        if literal is not None:
            refusal = self.policy.check(host, literal)
            if refusal is not None:
                return refusal
        return str(error)

    async def _read(
        self,
        exchange: Exchange,
        status: int,
        headers: dict[str, str],
        max_body: int,
        raw: bool,
        bodiless: bool,
    ) -> HttpResult:
        """The response's body read (within ``max_body``) and decoded; ``bodiless``: a response
        that has none whatever its headers say (to a HEAD, a 204 or a 304)."""

        def failed(outcome: str, error: str) -> HttpResult:
            return HttpResult(outcome, status, headers, None, error)

        coding, refusal = _content_coding(headers)
        if refusal is not None:
            return failed("invalid_response", refusal)
        declared = None if bodiless else headers.get("content-length")  # chunked: refused above
        if declared and declared.isascii() and declared.isdigit() and int(declared) > max_body:
            return failed(
                "too_large",
                f"the response declares {declared} bytes, more than the limit of {max_body}",
            )
        inflater = _Inflater(coding, max_body) if coding is not None else None
        chunks: list[bytes] = []
        size = 0
        too_large = f"the response is larger than the limit of {max_body} bytes"
        try:
            while (chunk := await exchange.next_chunk()) is not None:  # as sent, not inflated
                size += len(chunk)
                if size > max_body:
                    return failed("too_large", too_large)
                if inflater is None:
                    chunks.append(chunk)
                else:
                    chunks.extend(inflater.feed(chunk))
        except _TooLargeError:
            return failed("too_large", f"{too_large} (inflated)")
        except zlib.error as error:
            return failed("invalid_response", f"the {coding} response body is broken: {error}")
        except (_ExchangeError, OSError) as error:
            outcome = "tls_error" if _tls_failure(error) else "connection_error"
            return failed(outcome, _named(error))
        if inflater is not None and size and not inflater.complete:
            return failed("invalid_response", f"the {coding} response body is truncated")
        content = b"".join(chunks)
        if raw and 200 <= status < 300:
            return HttpResult("success", status, headers, content)
        outcome, body = decode_body(content, headers.get("content-type", ""))
        if outcome != "success":
            return failed(outcome, str(body))
        status_outcome = "success" if 200 <= status < 300 else "http_error"
        problem = None if status_outcome == "success" else f"HTTP {status}"
        return HttpResult(status_outcome, status, headers, body, problem)


@dataclass(frozen=True)
class RecordedResponse:
    """A recorded response: status, headers and body (JSON value, text, or bytes)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    delay: float = 0.0


#: Requests a RecordedHttp keeps for inspection (the latest).
RECORDED_REQUESTS_KEPT = 64


class RecordedHttp:
    """Answers requests from recordings matched by method and URL; no network at all."""

    def __init__(self, responses: Mapping[tuple[str, str], RecordedResponse]) -> None:
        self.responses = dict(responses)
        #: The last RECORDED_REQUESTS_KEPT requests sent, oldest first (a long offline run
        #: keeps no more).
        self.requests: list[PreparedRequest] = []

    async def send(
        self, request: PreparedRequest, *, timeout: float, max_body: int, follow_redirects: bool
    ) -> HttpResult:
        self.requests.append(request)
        if len(self.requests) > RECORDED_REQUESTS_KEPT:
            del self.requests[0]
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
        if isinstance(body, bytes):
            raw = body
        else:
            raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        if request.extensions.get(RAW_BODY) and 200 <= recorded.status < 300:
            body = raw
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
