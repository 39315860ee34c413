"""Signatures: is a webhook from who it says (Twilio, a Standard Webhooks sender, a bearer)?

Standard library only; every comparison of a secret-derived value is constant-time
(:func:`hmac.compare_digest` on bytes). Nothing here raises on what a request carries except
:class:`WebhookAuthError`, whose reason is a short fixed phrase that never holds a secret nor a
header's value.

Twilio (``X-Twilio-Signature``): base64(HMAC-SHA1(key, URL + each POST parameter sorted by
name, then by value for a repeated name: name + value)). The URL is the configured public URL
with path and query, never the request's Host; it is tried as given, with the scheme's default
port added (``:443``, ``:80``) and with it removed, as Twilio's own validators do. A request
with ``X-Twilio-Webhooks-Signature-Settings: key=...,algorithm=HMAC_SHA256`` (a Webhooks
SharedKey) is signed with HMAC-SHA256 instead. A JSON body is signed differently: the URL's
query carries ``bodySHA256`` (hex SHA-256 of the raw body), the signature covers the URL
alone (no parameters), and the body must hash to that value: pass it as ``body``. The same
name and value posted twice is signed with both copies (the documented rule) or with one
(twilio-python's validator collapses such repeats): either verifies.

Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``):
``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the key is the base64 text
of the secret after its ``whsec_`` prefix; the signature header is a space-separated list (any
``v1`` entry that matches passes; other versions such as ``v1a`` are skipped), the timestamp
must be within the tolerance of now in both directions.
"""

from __future__ import annotations

__all__ = [
    "MAX_AUTHORIZATION",
    "MAX_SIGNATURE",
    "MAX_WEBHOOK_ID",
    "MAX_WEBHOOK_SIGNATURES",
    "WebhookAuthError",
    "bearer_valid",
    "standard_webhook_key",
    "standard_webhook_signature",
    "twilio_request_valid",
    "twilio_signature",
    "verify_standard_webhook",
]

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from flowlang.errors import WebhookAuthError

#: The longest ``X-Twilio-Signature`` looked at (a SHA-256 one is 44 characters).
MAX_SIGNATURE = 256
#: The longest settings header, URL (characters) and Twilio body hash looked at.
_MAX_SETTINGS = 1024
_MAX_URL = 8192
#: ``webhook-id``: at most this many printable ASCII characters.
MAX_WEBHOOK_ID = 256
#: ``webhook-signature``: at most this many characters, and this many entries.
_MAX_WEBHOOK_SIGNATURE_HEADER = 4096
MAX_WEBHOOK_SIGNATURES = 16
#: ``webhook-timestamp``: decimal digits, at most this many (Unix seconds).
_MAX_TIMESTAMP_DIGITS = 12
#: ``Authorization``: at most this many characters.
MAX_AUTHORIZATION = 4096

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
_DEFAULT_PORTS = {"https": 443, "http": 80}
_SECRET_PREFIX = "whsec_"


def _utf8(text: str) -> bytes:
    """Text as Twilio signs it (UTF-8); a lone surrogate is kept as bytes that cannot match."""
    return text.encode("utf-8", "surrogatepass")


def _same(left: bytes, right: bytes) -> bool:
    return hmac.compare_digest(left, right)


# --- Twilio -----------------------------------------------------------------------------------


def twilio_signature(
    key: str, url: str, params: Sequence[tuple[str, str]], algorithm: str = "sha1"
) -> str:
    """The ``X-Twilio-Signature`` of a request: base64(HMAC(key, url + name + value for each
    parameter sorted by name, then value)); ``algorithm`` is ``sha1`` or ``sha256``."""
    if algorithm not in _DIGESTS:
        raise ValueError(f"a Twilio signature is sha1 or sha256, not {algorithm!r}")
    return _twilio_mac(_utf8(key), _utf8(url), _signed_params(params), algorithm).decode("ascii")


def _signed_params(params: Sequence[tuple[str, str]]) -> bytes:
    """What a Twilio signature covers after the URL: each parameter, sorted by name and then
    value, as name + value (UTF-8; encoding the joined text once gives the same bytes)."""
    return _utf8("".join([name + value for name, value in sorted(params)]))


def _twilio_mac(key: bytes, url: bytes, signed: bytes, algorithm: str) -> bytes:
    """base64(HMAC(key, url + signed)), one call into the hash library."""
    return base64.b64encode(hmac.digest(key, url + signed, algorithm))


#: URLs up to this long have their signed forms kept (at most _KEPT_URLS of them, the ones
#: seen last: a flow's webhooks differ only by their ``seq``, so a few URLs serve every call;
#: a few MB at most, whatever requests arrive).
_KEPT_URL_LENGTH = 512
_KEPT_URLS = 1024


def _signed_urls(url: str) -> tuple[bytes, ...] | None:
    """:func:`_url_forms` as the bytes signed (None: not a URL that can be signed)."""
    if len(url) <= _KEPT_URL_LENGTH:
        return _kept_signed_urls(url)
    return _url_bytes(url)


def _url_bytes(url: str) -> tuple[bytes, ...] | None:
    forms = _url_forms(url)
    return None if forms is None else tuple(_utf8(form) for form in forms)


_kept_signed_urls = functools.lru_cache(maxsize=_KEPT_URLS)(_url_bytes)


def _url_forms(url: str) -> list[str] | None:
    """The URL as given, with its scheme's default port added, and without it (None: not a
    URL that can be signed)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    forms = [url]
    if default is None or not parts.hostname:
        return forms
    host_port = parts.netloc.rpartition("@")
    userinfo = host_port[0] + host_port[1]
    host = host_port[2]
    if port is None:
        forms.append(urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{default}")))
    elif port == default:
        bare = host[: host.rindex(":")]
        forms.append(urlunsplit(parts._replace(netloc=f"{userinfo}{bare}")))
    return forms


def _algorithm(settings_header: str | None) -> str | None:
    """``sha256`` when the Webhooks signature settings name HMAC_SHA256, ``sha1`` without
    them, None for settings that name another algorithm (or cannot be read)."""
    if not settings_header:
        return "sha1"
    if len(settings_header) > _MAX_SETTINGS or not settings_header.isascii():
        return None
    named = "HMAC_SHA1"
    for item in settings_header.split(","):
        name, _, value = item.partition("=")
        if name.strip().lower() == "algorithm":
            named = value.strip().upper()
    return {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}.get(named)


def _body_hash_valid(url: str, body: bytes | None) -> bool | None:
    """None when the URL's query has no ``bodySHA256`` (a form request); else whether ``body``
    is there and hashes to the one value it names."""
    if "bodySHA256" not in url:  # not in the query either: no need to split the URL
        return None
    query = urlsplit(url).query
    if "bodySHA256" not in query:
        return None
    named = [
        value for name, value in parse_qsl(query, keep_blank_values=True) if name == "bodySHA256"
    ]
    if not named:
        return None
    if len(named) != 1 or body is None or not named[0].isascii():
        return False
    computed = hashlib.sha256(body).hexdigest().encode("ascii")
    return _same(computed, named[0].lower().encode("ascii"))


def twilio_request_valid(
    keys: Sequence[str],
    url: str,
    params: Sequence[tuple[str, str]],
    signature: str | None,
    settings_header: str | None = None,
    *,
    body: bytes | None = None,
) -> bool:
    """Whether ``signature`` (``X-Twilio-Signature``) was made with any of ``keys`` over
    ``url`` (the public URL with path and query) and the form ``params`` (every pair, repeats
    kept). ``settings_header`` is ``X-Twilio-Webhooks-Signature-Settings`` (HMAC_SHA256, else
    SHA-1). When the URL's query carries ``bodySHA256`` (a JSON request), ``params`` are not
    signed and ``body`` (the raw bytes) must hash to it. Never raises on what a request carries:
    anything that cannot be read is False."""
    if (
        not signature
        or not isinstance(signature, str)
        or len(signature) > MAX_SIGNATURE
        or not signature.isascii()
        or not isinstance(url, str)
        or len(url) > _MAX_URL
    ):
        return False
    algorithm = _algorithm(settings_header)
    urls = _signed_urls(url)
    if algorithm is None or urls is None:
        return False
    try:
        body_valid = _body_hash_valid(url, body)
    except (ValueError, TypeError):
        return False
    if body_valid is False:
        return False
    given = signature.strip().encode("ascii")
    found = False
    try:
        signed = [b"" if body_valid else _signed_params(params)]
        if not body_valid and len(set(params)) < len(params):
            signed.append(_signed_params(list(set(params))))  # a pair twice: also signed once
        for key in keys:
            if not key:
                continue
            secret = _utf8(key)
            for url_bytes in urls:
                for data in signed:
                    expected = _twilio_mac(secret, url_bytes, data, algorithm)
                    found |= _same(expected, given)  # no early exit: each key costs the same
    except (TypeError, ValueError, AttributeError):  # parameters that are not pairs of text
        return False
    return found


# --- Standard Webhooks ------------------------------------------------------------------------


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (base64, with or without ``whsec_``);
    ValueError, without the secret's text, when it is not base64 of at least one byte."""
    text = secret[len(_SECRET_PREFIX) :] if secret.startswith(_SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("a Standard Webhooks secret is not base64 text") from None
    if not key:
        raise ValueError("a Standard Webhooks secret is empty")
    return key


def _webhook_mac(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return base64.b64encode(mac.digest())


def standard_webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` entry ``v1,<base64>`` of a message signed with ``secret``."""
    key = standard_webhook_key(secret)
    return "v1," + _webhook_mac(key, message_id, timestamp, body).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its lower-case name, from any mapping (a plain dict of other case too)."""
    try:
        value = headers.get(name)
        if value is None and len(headers) <= 256:
            value = next((v for k, v in headers.items() if k.lower() == name), None)
    except (TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def verify_standard_webhook(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = 300,
) -> str:
    """The ``webhook-id`` of a message signed with any of ``secrets`` (rotation), or
    :class:`WebhookAuthError`. The timestamp must be within ``tolerance`` seconds of ``now``
    either way; any ``v1`` entry of the space-separated signature header may match.
    ValueError (not a WebhookAuthError) when a configured secret is not base64."""
    keys = [standard_webhook_key(secret) for secret in secrets]
    message_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not message_id or not stamp or not signatures:
        raise WebhookAuthError("missing headers")
    if (
        len(message_id) > MAX_WEBHOOK_ID
        or not _printable_ascii(message_id)
        or len(signatures) > _MAX_WEBHOOK_SIGNATURE_HEADER
        or not _printable_ascii(signatures)
    ):
        raise WebhookAuthError("bad headers")
    stamp = stamp.strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookAuthError("bad timestamp")
    timestamp = int(stamp)
    if not abs(now - timestamp) <= tolerance:  # NaN now: stale
        raise WebhookAuthError("stale timestamp")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise WebhookAuthError("bad body")
    given = [
        entry[3:].encode("ascii")
        for entry in signatures.split()[:MAX_WEBHOOK_SIGNATURES]
        if entry.startswith("v1,")
    ]
    if not given:
        raise WebhookAuthError("bad signature")
    found = False
    for key in keys:
        expected = _webhook_mac(key, message_id, timestamp, bytes(body))
        for candidate in given:
            found |= _same(expected, candidate)
    if not found:
        raise WebhookAuthError("bad signature")
    return message_id


# --- Bearer tokens ----------------------------------------------------------------------------


def bearer_valid(tokens: Sequence[str], authorization: str | None) -> bool:
    """Whether ``authorization`` is ``Bearer <token>`` (the scheme in any case) for one of
    ``tokens``; each token is compared in constant time, and empty tokens never match."""
    if (
        not authorization
        or not isinstance(authorization, str)
        or len(authorization) > MAX_AUTHORIZATION
        or not _printable_ascii(authorization)
    ):
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip(" ")
    if scheme.lower() != "bearer" or not credentials:
        return False
    given = credentials.encode("ascii")
    found = False
    for token in tokens:
        if token:
            found |= _same(_utf8(token), given)
    return found
