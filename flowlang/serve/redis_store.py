"""Call store in Redis: several `flowlang serve` replicas share the waiting calls.

Keys (all under ``prefix``, ``fl:`` by default):

| key | value | time to live |
|---|---|---|
| ``{prefix}call:{call_id}`` | the call's record (:class:`CallRecord` JSON) | ``ttl`` (each write) |
| ``{prefix}claim:{call_id}:{seq}`` | ``1``: webhook ``seq`` of the call was claimed | ``ttl`` |
| ``{prefix}flow:{fingerprint}`` | a flow version's source text | ``flow_ttl`` (each keep) |
| ``{prefix}waiting`` | sorted set: waiting call ids, scored by expiry (ms) | its longest member's |

Every write that touches two keys is one Lua script (registered, run by EVALSHA), so a record
and its place in ``waiting`` never disagree, and :meth:`RedisCallStore.replace` is a true
compare-and-set on ``seq``. Expiry times come from the Redis server's clock, never a replica's.

Requirements and limits: Redis 6.2 or later (GETDEL) on a single primary (or Sentinel); Redis
Cluster is not supported (the scripts touch a call's key and the shared ``waiting`` set).
**Production Redis must persist** (``appendonly yes`` with ``appendfsync everysec``): a Redis
that restarts without its data forgets every waiting call, and those callers hear the apology.
The Redis the tests start keeps nothing on disk; that is fine for tests only.

Call ids and fingerprints become parts of keys, so they are checked first (1 to 128 characters
of ``A-Z a-z 0-9 _ . : -``; ValueError otherwise). A stored record that is not one (written by
something else) raises ValueError ("call record ... unreadable"). Failures to reach Redis raise
:class:`CallStoreError`, whose message names the server with any password masked.
"""

from __future__ import annotations

__all__ = ["CallStoreError", "RedisCallStore", "check_key_part", "mask_url"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from flowlang.distributed.connection import (
    DEFAULT_PREFIX,
    RedisConnection,
    check_key_part,
    check_prefix,
    connect,
    mask_url,
)
from flowlang.serve.calls import CallRecord, CallStoreError, event_key

#: The largest ``seq``: Lua compares numbers as doubles.
SEQ_MAX = 2**53


def _check_seq(what: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= SEQ_MAX:
        raise ValueError(f"{what} must be an integer from 0 to 2**53 (got {value!r:.40})")
    return value


# The waiting set: drop members whose time is past (by the server's clock), then add or remove
# the call. A member's score is when its record expires, in milliseconds; the set lives as long
# as its longest member.
_WAITING = """
local function waiting_set(set, call_id, waits, ttl)
  local time = redis.call('TIME')
  local now = time[1] * 1000 + math.floor(time[2] / 1000)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  if waits == '1' then
    redis.call('ZADD', set, now + ttl, call_id)
    if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
  else
    redis.call('ZREM', set, call_id)
  end
end
"""

# KEYS: record, waiting set. ARGV: record JSON, ttl ms, "1" when it waits, call id.
_CREATE = (
    _WAITING
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
waiting_set(KEYS[2], ARGV[4], ARGV[3], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: record, waiting set. ARGV: expected seq, record JSON, ttl ms, "1" when it waits, call id.
# Returns 1 (stored), 0 (no record, or another seq) or -1 (the stored record is unreadable).
# The stored JSON starts with "seq" when this module wrote it; anything else is decoded.
_REPLACE = (
    _WAITING
    + """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local seq = string.match(current, '^{"seq":(%d+),')
if seq then
  seq = tonumber(seq)
else
  local ok, value = pcall(cjson.decode, current)
  if not ok or type(value) ~= 'table' or type(value['seq']) ~= 'number' then return -1 end
  seq = value['seq']
end
if seq ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
waiting_set(KEYS[2], ARGV[5], ARGV[4], tonumber(ARGV[3]))
return 1
"""
)

# KEYS: record, claim. ARGV: seq, claim lapse ms, "1" when the call may have no record yet.
# Returns {1 when claimed else 0, the record or false}. The claim is taken only on the record's
# own seq (or on no record, with ARGV[3]): an answered or out-of-turn webhook claims nothing.
_CLAIM_AND_GET = """
local current = redis.call('GET', KEYS[1])
local turn = ARGV[3] == '1'
if current then
  local seq = string.match(current, '^{"seq":(%d+),')
  if seq then
    seq = tonumber(seq)
  else
    local ok, value = pcall(cjson.decode, current)
    if ok and type(value) == 'table' and type(value['seq']) == 'number' then seq = value['seq'] end
  end
  turn = seq == tonumber(ARGV[1])
end
if turn and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return {1, current or false}
end
return {0, current or false}
"""

# KEYS: record, waiting set. ARGV: call id. Returns the record removed, or nil.
_DELETE = """
local record = redis.call('GETDEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return record
"""

# KEYS: waiting set. Returns how many members have not expired.
_COUNT = """
local time = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', time[1] * 1000 + math.floor(time[2] / 1000))
return redis.call('ZCARD', KEYS[1])
"""

_STORE_OPTIONS = ("prefix", "ttl", "flow_ttl")


class RedisCallStore:
    """:class:`~flowlang.serve.calls.CallStore` in Redis (``redis.asyncio``): any replica
    resumes any call. Records and claims live ``ttl`` seconds (renewed by every write), flow
    sources ``flow_ttl`` seconds (renewed when kept again).

    A store made by :meth:`from_url` closes its client in :meth:`aclose`; a client passed in
    stays open (its owner closes it).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = 4 * 3600,
        flow_ttl: float = 7 * 24 * 3600,
    ) -> None:
        check_prefix(prefix)
        for name, value in (("ttl", ttl), ("flow_ttl", flow_ttl)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.001:
                raise ValueError(f"{name} must be a number of seconds, at least 0.001")
            if value > 10 * 365 * 86400:
                raise ValueError(f"{name} must be at most ten years")
        self.prefix = prefix
        self.ttl = float(ttl)
        self.flow_ttl = float(flow_ttl)
        self._client = client
        self._connection = RedisConnection.of_client(client)
        self._ttl_ms = str(max(1, round(self.ttl * 1000)))
        self._flow_ttl_ms = max(1, round(self.flow_ttl * 1000))
        self._waiting_key = f"{prefix}waiting"
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)
        self._delete = client.register_script(_DELETE)
        self._claim_and_get = client.register_script(_CLAIM_AND_GET)
        self._count = client.register_script(_COUNT)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisCallStore:
        """A store on a new client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        ``prefix``, ``ttl`` and ``flow_ttl`` go to the store, every other option to
        :func:`flowlang.distributed.connection.connect` (the one connection setup, with its
        defaults, that the automations' shared store uses too).
        """
        store_options = {name: options.pop(name) for name in _STORE_OPTIONS if name in options}
        connection = connect(url, **options)
        store = cls(connection.client, **store_options)
        store._connection = connection
        return store

    def __repr__(self) -> str:
        return f"RedisCallStore({self._connection.where!r}, prefix={self.prefix!r})"

    def _key(self, kind: str, part: str) -> str:
        return f"{self.prefix}{kind}:{part}"

    @asynccontextmanager
    async def _guard(self, operation: str, call_id: str = "") -> AsyncIterator[None]:
        """Turn Redis failures into CallStoreError (or ValueError for a key of another type)."""
        async with self._connection.guard("call store", operation, CallStoreError):
            try:
                yield
            except ResponseError as error:
                if str(error).startswith("WRONGTYPE") and call_id:
                    raise ValueError(
                        f"call record {call_id!r} unreadable: its key holds another Redis type"
                    ) from None
                raise

    def _record_bytes(self, call_id: str, record: CallRecord) -> bytes:
        if not isinstance(record, CallRecord):
            raise TypeError(f"a CallRecord is stored, not a {type(record).__name__}")
        _check_seq("a record's seq", record.seq)
        try:
            return record.to_json()
        except orjson.JSONEncodeError as error:
            raise ValueError(f"call record {call_id!r} cannot be stored: {error}") from None

    async def get(self, call_id: str) -> CallRecord | None:
        key = self._key("call", check_key_part("call id", call_id))
        async with self._guard("get", call_id):
            data = await self._client.get(key)
        return None if data is None else _decoded(call_id, data)

    async def create(self, call_id: str, record: CallRecord) -> bool:
        key = self._key("call", check_key_part("call id", call_id))
        data = self._record_bytes(call_id, record)
        waits = "1" if record.state is not None else "0"
        async with self._guard("create", call_id):
            done = await self._create(
                keys=[key, self._waiting_key], args=[data, self._ttl_ms, waits, call_id]
            )
        return bool(done == 1)

    async def replace(self, call_id: str, expected_seq: int, record: CallRecord) -> bool:
        key = self._key("call", check_key_part("call id", call_id))
        expected = _check_seq("expected_seq", expected_seq)
        data = self._record_bytes(call_id, record)
        waits = "1" if record.state is not None else "0"
        async with self._guard("replace", call_id):
            done = await self._replace(
                keys=[key, self._waiting_key],
                args=[str(expected), data, self._ttl_ms, waits, call_id],
            )
        if done == -1:
            raise ValueError(f"call record {call_id!r} unreadable: its seq cannot be read")
        return bool(done == 1)

    async def claim(self, call_id: str, seq: int, seconds: float) -> bool:
        number = _check_seq("seq", seq)
        key = self._key("claim", f"{check_key_part('call id', call_id)}:{number}")
        lapse = max(1, min(int(seconds * 1000), int(self._ttl_ms)))
        async with self._guard("claim"):
            done = await self._client.set(key, b"1", nx=True, px=lapse)
        return bool(done)

    async def claim_and_get(
        self, call_id: str, seq: int, seconds: float, *, first: bool = False
    ) -> tuple[bool, CallRecord | None]:
        """The call's record and, in the same script, its claim on ``seq``'s turn (one round
        trip); a record that cannot be read raises ValueError."""
        number = _check_seq("seq", seq)
        part = check_key_part("call id", call_id)
        lapse = max(1, min(int(seconds * 1000), int(self._ttl_ms)))
        async with self._guard("claim_and_get", call_id):
            claimed, data = await self._claim_and_get(
                keys=[self._key("call", part), self._key("claim", f"{part}:{number}")],
                args=[str(number), str(lapse), "1" if first else "0"],
            )
        return claimed == 1, None if data is None else _decoded(call_id, data)

    async def delete(self, call_id: str) -> CallRecord | None:
        """Remove the call's record and return it; a record removed that cannot be read
        raises ValueError (it is gone all the same)."""
        key = self._key("call", check_key_part("call id", call_id))
        async with self._guard("delete", call_id):
            data = await self._delete(keys=[key, self._waiting_key], args=[call_id])
        return None if data is None else _decoded(call_id, data)

    async def claim_event(self, event_id: str, seconds: float) -> bool:
        key = self._key("event", event_key(event_id))
        lapse = max(1, int(seconds * 1000))
        async with self._guard("claim_event"):
            done = await self._client.set(key, b"1", nx=True, px=lapse)
        return bool(done)

    async def release_event(self, event_id: str) -> None:
        key = self._key("event", event_key(event_id))
        async with self._guard("release_event"):
            await self._client.delete(key)

    async def keep_flow(self, fingerprint: str, source: str) -> None:
        key = self._key("flow", check_key_part("fingerprint", fingerprint))
        if not isinstance(source, str):
            raise TypeError(f"a flow source is text, not a {type(source).__name__}")
        try:
            data = source.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"flow source {fingerprint!r} is not valid text: {error}") from None
        async with self._guard("keep_flow"):
            await self._client.set(key, data, px=self._flow_ttl_ms)

    async def flow_source(self, fingerprint: str) -> str | None:
        key = self._key("flow", check_key_part("fingerprint", fingerprint))
        async with self._guard("flow_source"):
            data = await self._client.get(key)
        if data is None or isinstance(data, str):
            return data
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"flow source {fingerprint!r} unreadable: not UTF-8") from None

    async def waiting(self) -> int:
        async with self._guard("waiting"):
            count = await self._count(keys=[self._waiting_key], args=[])
        return int(count)

    async def aclose(self) -> None:
        """Close the client when this store made it (:meth:`from_url`)."""
        async with self._guard("aclose"):
            await self._connection.aclose()


def _decoded(call_id: str, data: bytes | str) -> CallRecord:
    """The record stored for ``call_id``; ValueError when it is not one."""
    try:
        record = CallRecord.from_json(data)
    except ValueError as error:
        raise ValueError(f"call record {call_id!r} unreadable: {error}") from None
    wrong = [name for name, kinds in _FIELD_TYPES if not _is(getattr(record, name), kinds)]
    if wrong:
        raise ValueError(f"call record {call_id!r} unreadable: wrong type of {', '.join(wrong)}")
    return record


def _is(value: object, kinds: tuple[type, ...]) -> bool:
    """``isinstance`` where a bool is no number."""
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


_FIELD_TYPES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("seq", (int,)),
    ("flow", (str,)),
    ("fingerprint", (str,)),
    ("twiml", (str,)),
    ("state", (dict, type(None))),
    ("call", (dict,)),
    ("outcome", (str,)),
    ("target", (str, type(None))),
    ("answered", (bool,)),
    ("waiting_time", (int, float)),
    ("started_at", (int, float)),
)
