"""One Redis connection setup and one key scheme for everything flowlang keeps in Redis.

``flowlang serve``'s call store and the automations' shared delivery store (duplicates, the
settled ledger, leases, scheduled retries, dead letters) both connect through
:func:`connect` and name keys ``{prefix}{kind}:{part}`` with one prefix (``fl:`` by default),
so one Redis, one URL and one prefix serve both, and ``redis-cli --scan --pattern 'fl:*'``
lists all of it. URLs are shown with passwords masked (:func:`mask_url`); error texts from the
client are scrubbed of every form of the password (:meth:`RedisConnection.scrub`).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PREFIX",
    "KEY_PART_CHARS",
    "KEY_PART_MAX",
    "RedisConnection",
    "check_key_part",
    "check_prefix",
    "connect",
    "mask_url",
]

import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

#: The key prefix when none is given.
DEFAULT_PREFIX = "fl:"
#: Characters allowed in a key part (an id, a fingerprint) and in a prefix.
KEY_PART_CHARS = frozenset(string.ascii_letters + string.digits + "_.:-")
KEY_PART_MAX = 128
PREFIX_MAX = 64
#: The characters of a user name that :func:`mask_url` shows.
USER_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")

#: Defaults of :func:`connect`: seconds to connect and to wait for an answer, one quick retry
#: on a new connection (a restarted server or a dropped pooled connection), connections in
#: the pool and seconds a command waits for a free one.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 2.0
RETRIES = 1
MAX_CONNECTIONS = 256
POOL_TIMEOUT = 5.0
#: The schemes of a Redis URL.
SCHEMES = ("redis://", "rediss://", "unix://")
#: Characters of a client error's text that a store's error message keeps.
MESSAGE_MAX = 300


def check_key_part(what: str, value: object) -> str:
    """``value`` when it may be part of a key (1 to 128 of ``A-Z a-z 0-9 _ . : -``), else
    ValueError naming ``what``."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= KEY_PART_MAX
        and KEY_PART_CHARS.issuperset(value)
    ):
        return value
    if isinstance(value, str):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        got = f"{shown} ({len(value)} characters)"
    else:
        got = f"a {type(value).__name__}"
    raise ValueError(
        f"{what} must be 1 to {KEY_PART_MAX} characters of A-Z a-z 0-9 _ . : - (got {got})"
    )


def check_prefix(prefix: object) -> str:
    """``prefix`` when it may start keys (at most 64 of ``A-Z a-z 0-9 _ . : -``), else
    ValueError."""
    if isinstance(prefix, str) and len(prefix) <= PREFIX_MAX and KEY_PART_CHARS.issuperset(prefix):
        return prefix
    raise ValueError(f"prefix must be at most {PREFIX_MAX} characters of A-Z a-z 0-9 _ . : -")


def mask_url(url: str) -> str:
    """``url`` with its password as ``***``: all user info up to the last ``@`` (only a plain
    user name is shown) and every ``password=`` query value. What is unsure is masked (a
    password holding ``/``, ``?``, ``#`` or ``@`` unencoded)."""
    if not isinstance(url, str) or "://" not in url:
        return "<not a URL>"
    merged: list[list[int]] = []
    for start, end in sorted(_hidden(url)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    shown, last = [], 0
    for start, end in merged:
        shown.append(url[last:start] + "***")
        last = end
    return "".join(shown) + url[last:]


def _hidden(url: str) -> list[tuple[int, int]]:
    """Where ``url`` holds a password: the user info after any plain user name, and the value
    of every ``password=`` query field (start and end offsets)."""
    start = url.index("://") + 3
    hidden = []
    at = url.rfind("@")
    if at >= start:
        user, colon, _ = url[start:at].partition(":")
        keep = len(user) + 1 if colon and USER_CHARS.issuperset(user) else 0
        hidden.append((start + keep, at))
    question = url.find("?", start)
    if question >= 0:
        end = url.find("#", question)
        position = question + 1
        for part in url[position : len(url) if end < 0 else end].split("&"):
            if part[:9].lower() == "password=":
                hidden.append((position + 9, position + len(part)))
            position += len(part) + 1
    return hidden


def url_secrets(url: str) -> list[str]:
    """What messages must never show of ``url``: what :func:`mask_url` hides, and its pieces
    (a URL parser splits user info holding ``/``, ``?``, ``#`` or ``:`` elsewhere), as written
    and percent-decoded."""
    if "://" not in url:
        return [url]
    secrets: list[str] = []
    for start, end in _hidden(url):
        text = url[start:end]
        pieces = text
        for separator in "/?#@":
            pieces = pieces.replace(separator, ":")
        secrets.extend((text, *pieces.split(":")))
    return [form for secret in secrets if secret for form in (secret, unquote(secret))]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def location(kwargs: dict[str, Any]) -> str:
    """Where a client with connection ``kwargs`` connects, without credentials."""
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


@dataclass
class RedisConnection:
    """A ``redis.asyncio`` client with where it connects (no credentials), what its errors
    must never show, and whether this side made it (and so closes it)."""

    client: aioredis.Redis
    where: str
    secrets: list[str] = field(default_factory=list)
    owned: bool = False

    @classmethod
    def of_client(cls, client: aioredis.Redis) -> RedisConnection:
        """A connection on a client made elsewhere (its owner closes it)."""
        kwargs = client.connection_pool.connection_kwargs
        secrets = [str(kwargs["password"])] if kwargs.get("password") else []
        return cls(client, location(kwargs), secrets)

    def scrub(self, text: str) -> str:
        """``text`` without this connection's password in any form."""
        return scrub(text, self.secrets)

    @asynccontextmanager
    async def guard(
        self, store: str, operation: str, error_class: type[Exception]
    ) -> AsyncIterator[None]:
        """Turn a failure to reach Redis in the block (RedisError, OSError) into
        ``error_class("{store} {where}: {operation} failed: {type}: {text}")``, the text
        scrubbed of the password and cut to :data:`MESSAGE_MAX` characters."""
        try:
            yield
        except (RedisError, OSError) as error:
            text = self.scrub(str(error))[:MESSAGE_MAX]
            raise error_class(
                f"{store} {self.where}: {operation} failed: {type(error).__name__}: {text}"
            ) from error

    def key(self, prefix: str, kind: str, part: str) -> str:
        """The key ``{prefix}{kind}:{part}`` (``part`` checked by the caller)."""
        return f"{prefix}{kind}:{part}"

    async def aclose(self) -> None:
        """Close the client when this side made it."""
        if self.owned:
            await self.client.aclose()


def connect(url: str, **options: Any) -> RedisConnection:
    """A new ``redis.asyncio`` client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)
    on a blocking pool; ValueError (password masked) for a URL that is not one.

    Every option goes to ``redis.asyncio.BlockingConnectionPool.from_url``. By default: 2 s to
    connect, 2 s per answer, one retry on a new connection, at most 256 connections and 5 s
    (``timeout``) to wait for a free one (redis-py's default pool fails at once beyond 100).
    The client connects on first use and belongs to that event loop.
    """
    masked = mask_url(url)
    # (a text without "://" is shown as "<not a URL>": it may be a password pasted alone)
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix:// (got {masked})")
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    options.setdefault("socket_timeout", SOCKET_TIMEOUT)
    options.setdefault("retry", Retry(ExponentialBackoff(cap=0.25, base=0.05), RETRIES))
    options.setdefault("max_connections", MAX_CONNECTIONS)
    options.setdefault("timeout", POOL_TIMEOUT)
    secrets = url_secrets(url)
    try:
        pool = aioredis.BlockingConnectionPool.from_url(url, **options)
    except (ValueError, TypeError) as error:
        raise ValueError(f"bad Redis URL {masked}: {scrub(str(error), secrets)}") from None
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose closes the pool: this side made it
    return RedisConnection(client, masked, secrets, owned=True)
