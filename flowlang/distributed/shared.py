"""The automations' shared delivery store in Redis: what every worker and pump agrees on.

Keys (all under ``prefix``, ``fl:`` by default; see flowlang.distributed.connection):

- ``{prefix}ev:{sha256(event id)[:32]}``: string ``accepting:<owner>`` (for the accept lease)
  or ``fanned_out`` (for ``dedup_window``): duplicate events.
- ``{prefix}act:{idempotency key}``: hash ``outcome, result, attempts, at`` (for
  ``ledger_ttl``): the settled ledger. Outcome ``replaying`` (with field ``replay``, the
  holder) marks a worker's replay of the action that started and has not written its outcome.
- ``{prefix}lease:{idempotency key}``: string, the owner (for the lease): one attempt in
  flight per action.
- ``{prefix}due``: sorted set of scheduled messages, member JSON ``{"task", "body", "id"}``,
  score the due time.
- ``{prefix}pumping``: hash member -> time taken: taken from ``due``, not yet published.
- ``{prefix}pump:lock``: string, the owner (for ``hold``): the one active pump.
- ``{prefix}dead``: stream, field ``record`` = a ``flowlang.deadletter/1`` record as JSON,
  never trimmed: the shared dead letters.
- ``{prefix}replaying:{stream id}``: string, the holder (for the claim): one replay of a dead
  letter at a time.
- ``{prefix}bad``: list of what was found in ``due`` or ``pumping`` that this module did not
  write, and of the messages a worker set aside (``set_aside``: failed on every try);
  ``{prefix}bad:{key}``: a key of ours that held another Redis type, moved aside.

Every step that touches more than one key, or reads then writes, is one Lua script
(registered once, run by EVALSHA). Times for due scores and the pumping hash come from the
caller's clock (seconds as a float); times to live are the server's.

Event ids are hashed into their key (any text is safe); idempotency keys and owners are checked
key parts (flowlang.distributed.connection.check_key_part).

Hostile data: something in Redis this module did not write (another program, a truncated
write, another Redis type) never ends a call with a traceback. A due or pumping member that is
not one of ours is logged (warning, logger ``flowlang.distributed``) and moved to
``{prefix}bad``; a key of ours holding another type is renamed to ``{prefix}bad:{key}`` and the
step goes on; a ledger entry that cannot be read counts as not settled (the action is sent
again, with the same Idempotency-Key); a dead letter that cannot be read is skipped (and left
in the stream). Failures to reach Redis raise :class:`~flowlang.errors.SharedStoreError`,
whose message names the server without its password.

Beyond Interface A (additions, compatible): ``settle(..., at=None)`` takes the caller's time
for ``at``; ``stale_pumping(..., limit=1000)``; ``release_pump(owner)``; ``bad_count()``;
``unsettle(key)``; the module function ``event_part(event_id)``; ``progress(key)``,
``record_delivered``, ``record_retry``, ``record_dead`` (an outcome, its retry or dead letter
and the attempt's mark in one step: a second copy of an attempt whose outcome is recorded is
``stale``), ``forget_dead(key)`` (compare-and-forget before a replay), ``renew_lease``,
``renew_claim``, ``mark_fanned_out(event_id, owner)`` -> bool, ``pumping_count()``;
``start_attempt(key, attempt, holder, seconds)`` (the ledger read, the copy check and the
lease in one step) and ``holder=`` on ``record_*`` (the lease given back in the outcome's
step); ``last_dead()``, ``claim_dead``, ``renew_dead_claim``, ``release_dead_claim`` and
``finish_replay`` (a replay's settlements, new dead letters and the removal of its record in
one step, only while its claim holds); ``start_replay(key, holder)`` (a worker's replay of an
action marked ``replaying`` in its ledger entry until ``finish_replay(...,
replayed=(key, holder))`` writes the outcome).
Only ``flowlang.accept``, ``flowlang.deliver`` and ``flowlang.replay`` are scheduled; a due
member naming another task is set aside in ``{prefix}bad``.
"""

from __future__ import annotations

__all__ = ["SharedStore"]

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from flowlang.automations.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    RecordError,
    decode_record,
    encode_record,
    nests_deeper_than,
)
from flowlang.distributed.connection import (
    DEFAULT_PREFIX,
    RedisConnection,
    check_key_part,
    check_prefix,
    connect,
)
from flowlang.distributed.messages import ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK
from flowlang.errors import SharedStoreError

log = logging.getLogger("flowlang.distributed")

#: The most of a foreign member a warning shows.
SHOWN_MAX = 80
#: The longest time a store keeps anything (ten years), and the longest lease or due time.
MAX_SECONDS = 10 * 365 * 86400.0
MAX_TIME = float(2**53)
#: A stream entry id: ``<ms>-<seq>``, both whole numbers.
STREAM_ID_MAX = 41
#: The only tasks the due set holds (anything else found there is set aside, never published).
TASKS = frozenset({ACCEPT_TASK, DELIVER_TASK, REPLAY_TASK})
#: How much deeper than a message body a due member nests (the member and its body), and
#: than a record a dead letter's results may nest (a deliver message's results, kept whole).
WRAPPING = 2
#: The largest due member: a deliver message's event and results, each at its limit.
MAX_MEMBER_BYTES = 2 * MAX_RECORD_BYTES
#: The most pumping entries one stale_pumping call looks at.
STALE_SCAN = 1000

# Shared by the scripts: a key of ours that holds another Redis type is renamed aside
# (``{prefix}bad:{key}``, given as the next key) so the step can go on; returns 1 if moved.
_ASIDE = """
local function aside(key, bad, expected)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' or kind == expected then return 0 end
  redis.call('RENAME', key, bad)
  return 1
end
"""

# KEYS: event key, its aside. ARGV: 'accepting:<owner>', lease ms.
# Returns {state, ms until the claim lapses, 1 if something foreign was moved aside}.
_CLAIM_EVENT = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'string')
local current = redis.call('GET', KEYS[1])
if current == 'fanned_out' then return {'fanned_out', 0, moved} end
if current and string.sub(current, 1, 10) == 'accepting:' then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {'accepting', left, moved}
end
if current then
  redis.call('RENAME', KEYS[1], KEYS[2])
  moved = 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'new', 0, moved}
"""
)

# KEYS: event key, its aside. ARGV: window ms, the claim ('accepting:<owner>') or ''.
# Marks the event fanned out unless another owner holds its claim (or it is fanned out
# already). Returns {1 if the claim was still ours (or none was given), 1 if moved aside}.
_FANNED_OUT = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'string')
if ARGV[2] ~= '' then
  local current = redis.call('GET', KEYS[1])
  if current and current ~= ARGV[2] then return {0, moved} end
  redis.call('SET', KEYS[1], 'fanned_out', 'PX', ARGV[1])
  if current then return {1, moved} end
  return {0, moved}
end
redis.call('SET', KEYS[1], 'fanned_out', 'PX', ARGV[1])
return {1, moved}
"""
)

# The ledger hash also keeps ``tried`` (the highest attempt whose outcome was recorded: a
# copy of a message at or below it is stale) and ``dead`` (the stream id of its dead letter).
# KEYS: ledger key, its aside, due, due's aside, dead, dead's aside, the action's lease.
# ARGV: mode ('settle' | 'retry' | 'dead'), outcome, result JSON, attempt, at, ttl ms,
#       due score, due member, dead-letter record JSON, the lease's holder ('' for none).
# Returns {status, dead-letter id or '', 1 if something was moved aside}; status 'ok',
# 'settled' (an outcome is recorded already: never overwritten by a retry or a dead letter,
# and a delivered one never overwritten at all) or 'stale' (this attempt's outcome is
# recorded already). Whatever the status, the lease is given back while it is the holder's:
# the attempt is over.
_RECORD = (
    _ASIDE
    + """
if ARGV[10] ~= '' and redis.call('TYPE', KEYS[7]).ok == 'string'
   and redis.call('GET', KEYS[7]) == ARGV[10] then
  redis.call('DEL', KEYS[7])
end
local moved = aside(KEYS[1], KEYS[2], 'hash')
local mode, attempt = ARGV[1], tonumber(ARGV[4])
local outcome = redis.call('HGET', KEYS[1], 'outcome')
local tried = tonumber(redis.call('HGET', KEYS[1], 'tried')) or 0
if outcome == 'delivered' then return {'settled', '', moved} end
if mode ~= 'settle' then
  if outcome then return {'settled', '', moved} end
  if tried >= attempt then return {'stale', '', moved} end
end
if attempt > tried then tried = attempt end
local entry = ''
if mode == 'retry' then
  moved = moved + aside(KEYS[3], KEYS[4], 'zset')
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
  redis.call('HSET', KEYS[1], 'tried', tried)
else
  if mode == 'dead' then
    moved = moved + aside(KEYS[5], KEYS[6], 'stream')
    local old = redis.call('HGET', KEYS[1], 'dead')
    if old then redis.call('XDEL', KEYS[5], old) end
    entry = redis.call('XADD', KEYS[5], '*', 'record', ARGV[9])
    redis.call('HSET', KEYS[1], 'dead', entry)
  end
  redis.call('HSET', KEYS[1], 'outcome', ARGV[2], 'result', ARGV[3], 'attempts', ARGV[4],
             'at', ARGV[5], 'tried', tried)
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'ok', entry, moved}
"""
)

# KEYS: ledger key, the action's lease, the lease's aside. ARGV: attempt, holder, lease ms.
# The start of an attempt, in one step: the ledger read and, only when the action is not
# settled and the attempt not stale, its lease taken. Returns {state, number, moved, kind,
# fields}: 'settled' (an outcome is recorded; fields the ledger hash's, to read), 'stale'
# (number: the highest attempt tried), 'held' (number: ms until the holder's lease lapses;
# a lease without a time to live gets one) or 'leased' (taken; number: the highest attempt
# tried); kind is the ledger key's
# type ('hash', 'none' or another: counted as unsettled).
_START = (
    _ASIDE
    + """
local kind = redis.call('TYPE', KEYS[1]).ok
local tried = 0
if kind == 'hash' then
  local outcome = redis.call('HGET', KEYS[1], 'outcome')
  if outcome and outcome ~= '' then
    return {'settled', 0, 0, kind, redis.call('HGETALL', KEYS[1])}
  end
  tried = tonumber(redis.call('HGET', KEYS[1], 'tried')) or 0
  if tried ~= math.floor(tried) or tried < 0 or tried > 1e15 then tried = 0 end
end
if tonumber(ARGV[1]) <= tried then return {'stale', tried, 0, kind, {}} end
local moved = aside(KEYS[2], KEYS[3], 'string')
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {'leased', tried, moved, kind, {}}
end
local left = redis.call('PTTL', KEYS[2])
if left < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  left = tonumber(ARGV[3])
end
return {'held', left, moved, kind, {}}
"""
)

# KEYS: ledger key. Forgets its outcome while it is dead_lettered (before a replay).
# Returns 'forgotten', 'none' (no outcome recorded) or the outcome recorded.
_FORGET_DEAD = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 'none' end
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if not outcome then return 'none' end
if outcome ~= 'dead_lettered' then return outcome end
redis.call('HDEL', KEYS[1], 'outcome', 'result', 'attempts', 'at', 'tried')
return 'forgotten'
"""

# KEYS: ledger key, its aside. ARGV: holder (the replay's mark), at, ledger ttl ms.
# The start of a worker's replay of an action, in one step: only while its ledger entry is
# absent or dead_lettered, the entry becomes outcome 'replaying' with field 'replay' = holder
# (a mark that outlives the lease: finish_replay replaces it with the outcome). Returns
# {'started', ''}, {'replaying', the mark's holder} (a replay started and did not finish) or
# {the outcome recorded, ''}; and 1 if something was moved aside.
_START_REPLAY = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'hash')
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if outcome == 'replaying' then
  return {'replaying', redis.call('HGET', KEYS[1], 'replay') or '', moved}
end
if outcome and outcome ~= '' and outcome ~= 'dead_lettered' then return {outcome, '', moved} end
if not redis.call('HGET', KEYS[1], 'result') then redis.call('HSET', KEYS[1], 'result', 'null') end
if not redis.call('HGET', KEYS[1], 'attempts') then
  redis.call('HSET', KEYS[1], 'attempts', '0')
end
redis.call('HSET', KEYS[1], 'outcome', 'replaying', 'replay', ARGV[1], 'at', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'started', '', moved}
"""
)

# KEYS: key. ARGV: value, ms. Renews the key's time to live while it still holds value.
_RENEW = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease (or lock) key, its aside. ARGV: owner, ms, '1' to renew one's own.
# Returns -1 when taken (or renewed), else ms until the holder's lapses; and 1 if moved aside.
_TAKE = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'string')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1, moved} end
if ARGV[3] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {-1, moved}
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {left, moved}
"""
)

# KEYS: lease (or lock) key. ARGV: owner. Deletes it when it is still the owner's.
_RELEASE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: due, pumping, due's aside, pumping's aside. ARGV: now, limit.
# Moves up to limit members due by now into pumping (member -> now); returns them.
_TAKE_DUE = (
    _ASIDE
    + """
aside(KEYS[1], KEYS[3], 'zset')
aside(KEYS[2], KEYS[4], 'hash')
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(members) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HSET', KEYS[2], member, ARGV[1])
end
return members
"""
)

# KEYS: pumping, its aside. ARGV: now, cutoff, limit, cursor, most entries to look at.
# Members taken before cutoff (or with a time that is no number) are stamped now and returned
# after the cursor to go on from ('0': the scan is complete); at most ARGV[5] entries are
# looked at per call (the script's work is bounded).
_STALE = (
    _ASIDE
    + """
aside(KEYS[1], KEYS[2], 'hash')
local found = {}
local cursor = ARGV[4]
local seen = 0
local limit, most = tonumber(ARGV[3]), tonumber(ARGV[5])
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 100)
  cursor = page[1]
  local entries = page[2]
  for i = 1, #entries, 2 do
    seen = seen + 1
    local taken = tonumber(entries[i + 1])
    if #found < limit and (taken == nil or taken < tonumber(ARGV[2])) then
      found[#found + 1] = entries[i]
    end
  end
until cursor == '0' or #found >= limit or seen >= most
for _, member in ipairs(found) do redis.call('HSET', KEYS[1], member, ARGV[1]) end
return {cursor, found}
"""
)

# KEYS: pumping, bad, bad's aside. ARGV: member. Moves a member that is not ours from pumping
# to bad.
_BAD_MEMBER = (
    _ASIDE
    + """
aside(KEYS[2], KEYS[3], 'list')
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('TYPE', KEYS[1]).ok == 'hash' then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""
)

# KEYS: bad, its aside. ARGV: text. Sets a message aside (appended to bad).
_SET_ASIDE = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'list')
redis.call('RPUSH', KEYS[1], ARGV[1])
return moved
"""
)

# KEYS: pumping. ARGV: member.
_PUBLISHED = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS: due, its aside. ARGV: score, member.
_SCHEDULE = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'zset')
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return moved
"""
)

# KEYS: dead, its aside. ARGV: record JSON. Returns {entry id, 1 if moved aside}.
_ADD_DEAD = (
    _ASIDE
    + """
local moved = aside(KEYS[1], KEYS[2], 'stream')
return {redis.call('XADD', KEYS[1], '*', 'record', ARGV[1]), moved}
"""
)

# KEYS: dead, the claim key, its aside. ARGV: entry id, holder, ms.
# Claims a dead letter for its replay (one replay at a time): 'claimed'; 'held' (another
# replay holds it; a claim without a time to live gets one); 'gone' (no longer in the stream:
# replayed meanwhile). Returns {state, 1 if something was moved aside}.
_CLAIM_DEAD = (
    _ASIDE
    + """
if redis.call('TYPE', KEYS[1]).ok ~= 'stream' then return {'gone', 0} end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return {'gone', 0} end
local moved = aside(KEYS[2], KEYS[3], 'string')
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'claimed', moved} end
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return {'held', moved}
"""
)

# KEYS: dead, its aside, the claim key, the marked ledger key and its aside, then a ledger
# key and its aside per settlement.
# ARGV: entry id ('' for none), holder, ledger ttl ms, n (records to add), the mark's holder
#       ('' for none), the n records, then per settlement: result JSON, attempts, at.
# The end of a replay, in one step: the actions delivered are settled (never a delivered
# entry overwritten); unless the claim was lost (the entry gone from the stream, or another
# holder's claim) or the replay's mark (start_replay) is no longer the holder's (this
# outcome written already, its reply lost, or the mark taken over), the new dead letters are
# added, the replayed entry removed and its claim given back, and the mark replaced by the
# outcome (dead_lettered when records are added, else nothing: the entry forgotten, unless
# settled delivered). Returns {'ok' or 'lost', 1 if something was moved aside}.
_FINISH_REPLAY = (
    _ASIDE
    + """
local entry, holder, marker = ARGV[1], ARGV[2], ARGV[5]
local n = tonumber(ARGV[4])
local moved, ours, claim = 0, 1, false
if entry ~= '' then
  if redis.call('TYPE', KEYS[3]).ok == 'string' then claim = redis.call('GET', KEYS[3]) end
  if redis.call('TYPE', KEYS[1]).ok ~= 'stream'
     or #redis.call('XRANGE', KEYS[1], entry, entry) == 0
     or (claim and claim ~= holder) then
    ours = 0
  end
end
if marker ~= '' then
  moved = moved + aside(KEYS[4], KEYS[5], 'hash')
  if redis.call('HGET', KEYS[4], 'outcome') ~= 'replaying'
     or redis.call('HGET', KEYS[4], 'replay') ~= marker then
    ours = 0
  end
end
local k = 6
for i = 6 + n, #ARGV, 3 do
  moved = moved + aside(KEYS[k], KEYS[k + 1], 'hash')
  if redis.call('HGET', KEYS[k], 'outcome') ~= 'delivered' then
    local tried = tonumber(redis.call('HGET', KEYS[k], 'tried')) or 0
    if tonumber(ARGV[i + 1]) > tried then tried = tonumber(ARGV[i + 1]) end
    redis.call('HSET', KEYS[k], 'outcome', 'delivered', 'result', ARGV[i],
               'attempts', ARGV[i + 1], 'at', ARGV[i + 2], 'tried', tried)
    redis.call('HDEL', KEYS[k], 'replay')
  end
  redis.call('PEXPIRE', KEYS[k], ARGV[3])
  k = k + 2
end
if ours == 0 then return {'lost', moved} end
if n > 0 then moved = moved + aside(KEYS[1], KEYS[2], 'stream') end
for i = 6, 5 + n do redis.call('XADD', KEYS[1], '*', 'record', ARGV[i]) end
if entry ~= '' then
  redis.call('XDEL', KEYS[1], entry)
  if claim == holder then redis.call('DEL', KEYS[3]) end
end
if marker ~= '' then
  if redis.call('HGET', KEYS[4], 'outcome') == 'replaying' then
    if n > 0 then
      redis.call('HSET', KEYS[4], 'outcome', 'dead_lettered')
    else
      redis.call('HDEL', KEYS[4], 'outcome', 'result', 'attempts', 'at')
    end
  end
  redis.call('HDEL', KEYS[4], 'replay')
end
return {'ok', moved}
"""
)

# KEYS: ledger key. Returns {its type} and, for a hash, its fields and values.
_SETTLED = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return {'none'} end
if kind ~= 'hash' then return {kind} end
return {'hash', redis.call('HGETALL', KEYS[1])}
"""


def event_part(event_id: str) -> str:
    """The key part of an event id: the first 32 hex digits of its SHA-256 (any text is safe)."""
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("an event id is non-empty text")
    return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _milliseconds(what: str, seconds: object, low: float = 0.001) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not low <= seconds <= MAX_SECONDS
    ):
        raise ValueError(f"{what} must be a number of seconds from {low} to {MAX_SECONDS:.0f}")
    return max(1, round(seconds * 1000))


def _time(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a time (a finite number of seconds)")
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_TIME:
        raise ValueError(f"{what} must be a time (a finite number of seconds)")
    return value


def _text(data: bytes | str) -> str:
    return data.decode("utf-8") if isinstance(data, bytes) else data


def _shown(data: bytes | str) -> str:
    """Some of a foreign value, printable, for a warning."""
    text = data if isinstance(data, str) else data.decode("utf-8", "backslashreplace")
    return ascii(text[:SHOWN_MAX]) + ("..." if len(text) > SHOWN_MAX else "")


def _check_stream_id(what: str, value: object, extra: tuple[str, ...] = ()) -> str:
    if isinstance(value, str) and value in extra:
        return value
    if isinstance(value, str) and len(value) <= STREAM_ID_MAX:
        first, dash, second = value.partition("-")
        if dash and first.isascii() and first.isdigit() and second.isascii() and second.isdigit():
            return value
    raise ValueError(f"{what} must be a stream entry id such as 1700000000000-0")


def parse_member(member: bytes | str) -> tuple[str, str, dict[str, Any]]:
    """``(member, task, body)`` of a due-set member :meth:`SharedStore.schedule` wrote (its
    task one of flowlang's: accept, deliver, replay); ValueError saying why otherwise."""
    raw = member if isinstance(member, bytes) else member.encode("utf-8", "surrogatepass")
    try:
        data = decode_record(raw, MAX_RECORD_DEPTH + WRAPPING)
    except RecordError as error:
        raise ValueError(f"not a scheduled message: {error}") from None
    task, body, ident = data.get("task"), data.get("body"), data.get("id")
    if not isinstance(task, str) or not task or not isinstance(body, dict):
        raise ValueError("not a scheduled message: it needs a task (text) and a body (object)")
    if task not in TASKS:
        raise ValueError(f"not a scheduled message: {_shown(task)} is not a flowlang task")
    if not isinstance(ident, str):
        raise ValueError("not a scheduled message: it has no id")
    return raw.decode("utf-8"), task, body


class SharedStore:
    """Automations' shared state in Redis (keys under ``prefix``, default ``fl:``): duplicate
    events, the settled ledger, leases, scheduled messages and their pump, dead letters.

    Events are remembered ``dedup_window`` seconds after their fan-out; ledger entries
    ``ledger_ttl`` seconds. A store made by :meth:`from_url` closes its client in
    :meth:`aclose`; a connection passed in is closed only if it says it owns its client.
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        dedup_window: float = 86400.0,
        ledger_ttl: float = 7 * 86400.0,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self._window_ms = _milliseconds("dedup_window", dedup_window)
        self._ledger_ms = _milliseconds("ledger_ttl", ledger_ttl)
        self.dedup_window = float(dedup_window)
        self.ledger_ttl = float(ledger_ttl)
        self.connection = connection
        client = connection.client
        self._client = client
        self._due = f"{prefix}due"
        self._pumping = f"{prefix}pumping"
        self._lock = f"{prefix}pump:lock"
        self._dead = f"{prefix}dead"
        self._bad = f"{prefix}bad"
        self._claim_event = client.register_script(_CLAIM_EVENT)
        self._fanned_out = client.register_script(_FANNED_OUT)
        self._record = client.register_script(_RECORD)
        self._start = client.register_script(_START)
        self._forget_dead = client.register_script(_FORGET_DEAD)
        self._start_replay = client.register_script(_START_REPLAY)
        self._renew = client.register_script(_RENEW)
        self._stale_cursor = "0"
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._take_due = client.register_script(_TAKE_DUE)
        self._stale = client.register_script(_STALE)
        self._bad_member = client.register_script(_BAD_MEMBER)
        self._published = client.register_script(_PUBLISHED)
        self._set_aside = client.register_script(_SET_ASIDE)
        self._schedule = client.register_script(_SCHEDULE)
        self._add_dead = client.register_script(_ADD_DEAD)
        self._settled = client.register_script(_SETTLED)
        self._claim_dead = client.register_script(_CLAIM_DEAD)
        self._finish_replay = client.register_script(_FINISH_REPLAY)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        dedup_window: float = 86400.0,
        ledger_ttl: float = 7 * 86400.0,
        **pool_options: Any,
    ) -> SharedStore:
        """A store on a new client for ``url`` (``redis://``, ``rediss://`` or ``unix://``;
        ValueError, password masked, otherwise); ``pool_options`` go to
        :func:`flowlang.distributed.connection.connect`."""
        connection = connect(url, **pool_options)
        return cls(connection, prefix=prefix, dedup_window=dedup_window, ledger_ttl=ledger_ttl)

    def __repr__(self) -> str:
        return f"SharedStore({self.connection.where!r}, prefix={self.prefix!r})"

    async def aclose(self) -> None:
        """Close the client when this store's connection made it."""
        async with self._guard("aclose"):
            await self.connection.aclose()

    # --- plumbing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        """Turn Redis failures into SharedStoreError (the password never shown)."""
        async with self.connection.guard("shared store", operation, SharedStoreError):
            yield

    def _key(self, kind: str, part: str) -> str:
        return f"{self.prefix}{kind}:{part}"

    def _aside(self, key: str) -> str:
        return f"{self.prefix}bad:{key[len(self.prefix) :]}"

    def _moved(self, moved: object, key: str) -> None:
        if moved == 1:
            log.warning(
                "shared store: %s held something this store did not write; moved to %s",
                key,
                self._aside(key),
            )

    # --- events -----------------------------------------------------------------------------

    async def claim_event(self, event_id: str, owner: str, lease: float) -> tuple[str, float]:
        """Claim the event for its fan-out: ``("new", 0)`` claimed now (for ``lease``
        seconds), ``("accepting", seconds until that claim lapses)`` or ``("fanned_out", 0)``."""
        key = self._key("ev", event_part(event_id))
        owner = check_key_part("owner", owner)
        ms = _milliseconds("lease", lease)
        async with self._guard("claim_event"):
            state, left, moved = await self._claim_event(
                keys=[key, self._aside(key)], args=[f"accepting:{owner}", ms]
            )
        self._moved(moved, key)
        return _text(state), int(left) / 1000

    async def renew_claim(self, event_id: str, owner: str, lease: float) -> bool:
        """Renew ``owner``'s claim of the event for ``lease`` seconds: False when it is no
        longer ``owner``'s."""
        key = self._key("ev", event_part(event_id))
        owner = check_key_part("owner", owner)
        ms = _milliseconds("lease", lease)
        async with self._guard("renew_claim"):
            return bool(await self._renew(keys=[key], args=[f"accepting:{owner}", ms]) == 1)

    async def mark_fanned_out(self, event_id: str, owner: str | None = None) -> bool:
        """Remember the event as fanned out for ``dedup_window`` seconds. With ``owner``: only
        while no other owner claims it, and True only when the claim was still ``owner``'s
        (False: it lapsed meanwhile; another worker may have fanned the event out too)."""
        key = self._key("ev", event_part(event_id))
        claim = "" if owner is None else f"accepting:{check_key_part('owner', owner)}"
        async with self._guard("mark_fanned_out"):
            ours, moved = await self._fanned_out(
                keys=[key, self._aside(key)], args=[self._window_ms, claim]
            )
        self._moved(moved, key)
        return bool(ours == 1)

    # --- the settled ledger -----------------------------------------------------------------

    async def settled(self, key: str) -> dict[str, Any] | None:
        """The ledger entry of idempotency key ``key`` (``outcome``, ``result``, ``attempts``,
        ``at``), or None when it is not settled (or its entry cannot be read: logged)."""
        return (await self.progress(key))[0]

    async def progress(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The ledger entry of ``key`` as :meth:`settled` gives it, and the highest attempt
        whose outcome was recorded (0 when none): a deliver message at or below it is stale.
        One round trip."""
        name = self._key("act", check_key_part("idempotency key", key))
        async with self._guard("settled"):
            found = await self._settled(keys=[name])
        return self._ledger(name, found[0], found[1] if len(found) > 1 else [])

    def _ledger(self, name: str, kind: Any, pairs: list[Any]) -> tuple[dict[str, Any] | None, int]:
        """A ledger entry read from its key's type and fields (see :meth:`progress`)."""
        if _text(kind) not in ("hash", "none"):
            log.warning("shared store: %s is not a ledger entry; counted as unsettled", name)
            return None, 0
        data = dict(zip(pairs[::2], pairs[1::2], strict=True))
        tried = data.get(b"tried", data.get("tried"))
        try:
            attempted = max(0, int(tried)) if tried is not None else 0
        except ValueError:
            attempted = 0
        if not {_shown(field) for field in data} - {"'tried'", "'dead'", "'replay'"}:
            return None, attempted  # no outcome yet (only the attempts tried, or nothing)
        try:
            fields = {_text(field): _text(value) for field, value in data.items()}
            entry = {
                "outcome": fields["outcome"],
                "result": json.loads(fields["result"]),
                "attempts": int(fields["attempts"]),
                "at": float(fields["at"]),
            }
        except (KeyError, ValueError, RecursionError) as error:
            log.warning(
                "shared store: the ledger entry %s cannot be read (%s); counted as unsettled",
                name,
                type(error).__name__,
            )
            return None, attempted
        if not entry["outcome"]:
            return None, attempted
        return entry, max(attempted, entry["attempts"])

    async def start_attempt(
        self, key: str, attempt: int, holder: str, seconds: float
    ) -> tuple[str, dict[str, Any] | None, float]:
        """Start ``attempt`` of the action ``key`` in one round trip: the ledger read and,
        when the action is not settled and the attempt not stale, its lease taken by
        ``holder`` for ``seconds``. ``("settled", entry, tried)`` (the entry as
        :meth:`settled` gives it: nothing taken), ``("stale", None, tried)`` (an outcome of
        this attempt or a later one is recorded: nothing taken), ``("held", None, seconds
        until the holder's lease lapses)`` or ``("leased", None, tried)`` (the lease is
        ``holder``'s: give it back with the outcome, ``record_*(..., holder=)``, or
        :meth:`release_lease`). A ledger entry that cannot be read counts as not settled, as
        for :meth:`progress`."""
        name = self._key("act", check_key_part("idempotency key", key))
        lease = self._key("lease", key)
        holder = check_key_part("owner", holder)
        if type(attempt) is not int or attempt < 1:
            raise ValueError("an attempt is a whole number from 1")
        ms = _milliseconds("lease", seconds)
        async with self._guard("start_attempt"):
            state, number, moved, kind, pairs = await self._start(
                keys=[name, lease, self._aside(lease)], args=[attempt, holder, ms]
            )
        self._moved(moved, lease)
        state = _text(state)
        if state == "held":
            return state, None, int(number) / 1000
        entry, tried = self._ledger(name, kind, pairs)
        if state != "settled":
            return state, None, max(tried, int(number))
        if entry is not None:
            return state, entry, tried
        # an outcome that cannot be read (logged): not settled, so the lease is taken now
        if attempt <= tried:
            return "stale", None, tried
        left = await self.take_lease(key, holder, seconds)
        return ("leased", None, tried) if left is None else ("held", None, left)

    async def settle(
        self, key: str, outcome: str, result: Any, attempts: int, *, at: float | None = None
    ) -> None:
        """Write the ledger entry of ``key``: settled with ``outcome`` after ``attempts``, at
        ``at`` (the caller's clock; this machine's when None). ``result`` is plain JSON (a
        value JSON cannot hold is ValueError). A ``delivered`` entry is never overwritten."""
        if not isinstance(outcome, str) or not outcome:
            raise ValueError("an outcome is non-empty text")
        await self._write("settle", key, attempts, outcome=outcome, result=result, at=at)

    async def record_delivered(
        self,
        key: str,
        result: Any,
        attempt: int,
        *,
        at: float | None = None,
        holder: str | None = None,
    ) -> str:
        """Settle ``key`` as delivered by ``attempt`` (unless it is delivered already): ``ok``
        or ``settled``. With ``holder``, the action's lease is given back in the same step
        (while it is ``holder``'s), whatever the status."""
        status, _ = await self._write(
            "settle", key, attempt, "delivered", result, at, holder=holder
        )
        return status

    async def record_retry(
        self,
        key: str,
        attempt: int,
        task: str,
        body: dict[str, Any],
        due: float,
        *,
        holder: str | None = None,
    ) -> str:
        """In one step: mark ``attempt`` of ``key`` as tried and schedule ``(task, body)`` at
        ``due``. ``ok``; ``settled`` (an outcome is recorded: nothing scheduled) or ``stale``
        (this attempt's outcome was recorded already: nothing scheduled). With ``holder``, the
        action's lease is given back in the same step (while it is ``holder``'s)."""
        member = self._member(task, body)
        score = _time("due", due)
        status, _ = await self._write(
            "retry", key, attempt, due=(repr(score), member), holder=holder
        )
        return status

    async def record_dead(
        self,
        key: str,
        record: dict[str, Any],
        attempt: int,
        *,
        at: float | None = None,
        holder: str | None = None,
    ) -> tuple[str, str]:
        """In one step: add the dead letter ``record`` (replacing the earlier dead letter of
        ``key``, if any) and settle ``key`` as ``dead_lettered`` after ``attempt``.
        ``("ok", stream id)``; ``("settled", "")`` or ``("stale", "")`` as for
        :meth:`record_retry` (nothing written). ValueError when the record cannot be
        written as JSON (nothing written, the lease kept). With ``holder``, the action's lease
        is given back in the same step (while it is ``holder``'s)."""
        text = self._dead_text(record)
        return await self._write(
            "dead", key, attempt, "dead_lettered", None, at, dead=text, holder=holder
        )

    async def _write(
        self,
        mode: str,
        key: str,
        attempt: int,
        outcome: str = "",
        result: Any = None,
        at: float | None = None,
        due: tuple[str, str] = ("0", ""),
        dead: str = "",
        holder: str | None = None,
    ) -> tuple[str, str]:
        name = self._key("act", check_key_part("idempotency key", key))
        owner = "" if holder is None else check_key_part("owner", holder)
        if type(attempt) is not int or attempt < 0:
            raise ValueError("attempts is a whole number")
        when = time.time() if at is None else _time("at", at)
        try:
            data = json.dumps(result, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"the result of {key} cannot be kept as JSON: {error}") from None
        keys = [name, self._aside(name), self._due, self._aside(self._due)]
        keys += [self._dead, self._aside(self._dead), self._key("lease", key)]
        args: list[str | int] = [mode, outcome, data, attempt, repr(when), self._ledger_ms]
        args += [*due, dead, owner]
        async with self._guard(mode if mode == "settle" else f"record_{mode}"):
            status, entry, moved = await self._record(keys=keys, args=args)
        if moved:
            log.warning(
                "shared store: a key of %s's held something this store did not write; moved "
                "aside under %sbad:",
                name,
                self.prefix,
            )
        return _text(status), _text(entry)

    async def forget_dead(self, key: str) -> str:
        """Forget the ledger entry of ``key`` while it is ``dead_lettered`` (one step, before
        its replay): ``forgotten``; ``none`` when no outcome is recorded (nothing to forget);
        else the outcome recorded (``delivered``: the entry is kept)."""
        name = self._key("act", check_key_part("idempotency key", key))
        async with self._guard("forget_dead"):
            return _text(await self._forget_dead(keys=[name]))

    async def start_replay(
        self, key: str, holder: str, *, at: float | None = None
    ) -> tuple[str, str]:
        """Mark the start of a replay of action ``key`` by ``holder`` (a worker's replay, under
        the action's lease), in one step and only while its ledger entry is absent or
        ``dead_lettered``: the entry becomes outcome ``replaying`` (a settled outcome to every
        other reader: no deliver message sends the action meanwhile) until
        :meth:`finish_replay` with ``replayed=(key, holder)`` writes the outcome. Unlike
        :meth:`forget_dead`, the mark outlives the lease: a replay that sent and could not
        write its outcome is not taken for one that never started. ``("started", "")``;
        ``("replaying", its holder)`` when a replay of it started and did not finish (nothing
        marked); else ``(the outcome recorded, "")`` (nothing marked)."""
        name = self._key("act", check_key_part("idempotency key", key))
        holder = check_key_part("holder", holder)
        when = repr(time.time() if at is None else _time("at", at))
        async with self._guard("start_replay"):
            state, marker, moved = await self._start_replay(
                keys=[name, self._aside(name)], args=[holder, when, self._ledger_ms]
            )
        self._moved(moved, name)
        return _text(state), _text(marker)

    async def unsettle(self, key: str) -> None:
        """Forget the ledger entry of ``key`` (before a dead letter's replay: the action is
        then attempted again)."""
        name = self._key("act", check_key_part("idempotency key", key))
        async with self._guard("unsettle"):
            await self._client.delete(name)

    # --- leases -----------------------------------------------------------------------------

    async def take_lease(self, key: str, owner: str, seconds: float) -> float | None:
        """Take the lease of ``key`` for ``seconds``: None when taken, else the seconds until
        the holder's lease lapses (even when the holder is ``owner``: one attempt at a time)."""
        name = self._key("lease", check_key_part("idempotency key", key))
        owner = check_key_part("owner", owner)
        ms = _milliseconds("lease", seconds)
        async with self._guard("take_lease"):
            left, moved = await self._take(keys=[name, self._aside(name)], args=[owner, ms, "0"])
        self._moved(moved, name)
        return None if left == -1 else int(left) / 1000

    async def renew_lease(self, key: str, owner: str, seconds: float) -> bool:
        """Renew the lease of ``key`` for ``seconds`` while it is still ``owner``'s: True; False
        when it lapsed (or another holds it)."""
        name = self._key("lease", check_key_part("idempotency key", key))
        owner = check_key_part("owner", owner)
        ms = _milliseconds("lease", seconds)
        async with self._guard("renew_lease"):
            return bool(await self._renew(keys=[name], args=[owner, ms]) == 1)

    async def release_lease(self, key: str, owner: str) -> None:
        """Give the lease of ``key`` back, if it is still ``owner``'s."""
        name = self._key("lease", check_key_part("idempotency key", key))
        owner = check_key_part("owner", owner)
        async with self._guard("release_lease"):
            await self._release(keys=[name], args=[owner])

    # --- scheduled messages and the pump ----------------------------------------------------

    async def schedule(self, task: str, body: dict[str, Any], due: float) -> None:
        """Keep ``(task, body)`` to publish at ``due`` (seconds on the caller's clock); task is
        one of flowlang's (accept, deliver, replay) and body a JSON object (ValueError
        otherwise)."""
        text = self._member(task, body)
        score = _time("due", due)
        async with self._guard("schedule"):
            moved = await self._schedule(
                keys=[self._due, self._aside(self._due)], args=[repr(score), text]
            )
        self._moved(moved, self._due)

    def _member(self, task: str, body: Mapping[str, Any]) -> str:
        """The due member of ``(task, body)``; ValueError when it is not one to keep."""
        if task not in TASKS:
            raise ValueError(f"only flowlang's tasks are scheduled, not {_shown(str(task))}")
        if not isinstance(body, Mapping):
            raise ValueError(f"a message body is a JSON object, not {type(body).__name__}")
        member = {"task": task, "body": body, "id": uuid.uuid4().hex}
        if nests_deeper_than(member, MAX_RECORD_DEPTH + WRAPPING):
            raise ValueError(f"a {task} message nests deeper than {MAX_RECORD_DEPTH} levels")
        try:
            return encode_record(member, MAX_MEMBER_BYTES).rstrip("\n")
        except RecordError as error:
            raise ValueError(f"a {task} message {error}") from None

    async def take_due(self, now: float, limit: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Move up to ``limit`` members due by ``now`` into the pumping hash (one step) and
        return ``(member, task, body)`` of each; a member that is not one of ours is logged
        and moved to ``{prefix}bad``."""
        at = _time("now", now)
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise ValueError("limit is a whole number from 1 to 100000")
        keys = [self._due, self._pumping, self._aside(self._due), self._aside(self._pumping)]
        async with self._guard("take_due"):
            members = await self._take_due(keys=keys, args=[repr(at), limit])
        return await self._readable(members, "due")

    async def _readable(
        self, members: list[Any], where: str
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """The members that are ours, parsed; the others moved to ``{prefix}bad``."""
        found = []
        for member in members:
            try:
                found.append(parse_member(member))
            except (ValueError, UnicodeError) as error:
                log.warning(
                    "shared store: a %s member this store did not write (%s): %s; moved to %s",
                    where,
                    error,
                    _shown(member),
                    self._bad,
                )
                async with self._guard("take_due"):
                    await self._bad_member(
                        keys=[self._pumping, self._bad, self._aside(self._bad)], args=[member]
                    )
        return found

    async def published(self, member: str) -> None:
        """Forget a member taken by :meth:`take_due` (or :meth:`stale_pumping`): it is out."""
        async with self._guard("published"):
            await self._published(keys=[self._pumping], args=[member])

    async def stale_pumping(
        self, now: float, older_than: float, *, limit: int = 1000
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Members taken more than ``older_than`` seconds before ``now`` and not published (a
        pump that stopped between taking and publishing), stamped as taken ``now``; at most
        ``limit``. One call looks at no more than ``max(limit, STALE_SCAN)`` entries and the
        next goes on from there (a long hash is covered over several calls)."""
        at = _time("now", now)
        cutoff = at - _time("older_than", older_than)
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise ValueError("limit is a whole number from 1 to 100000")
        keys = [self._pumping, self._aside(self._pumping)]
        args: list[str | int] = [repr(at), repr(cutoff), limit, self._stale_cursor]
        args.append(max(limit, STALE_SCAN))
        async with self._guard("stale_pumping"):
            cursor, members = await self._stale(keys=keys, args=args)
        self._stale_cursor = _text(cursor)
        return await self._readable(members, "pumping")

    async def pumping_count(self) -> int:
        """How many messages were taken by a pump and not yet marked published."""
        async with self._guard("pumping_count"):
            if _text(await self._client.type(self._pumping)) != "hash":
                return 0
            return int(await self._client.hlen(self._pumping))

    async def hold_pump(self, owner: str, seconds: float) -> bool:
        """Take or renew the pump's lock for ``seconds``: True when ``owner`` holds it."""
        owner = check_key_part("owner", owner)
        ms = _milliseconds("hold", seconds)
        async with self._guard("hold_pump"):
            left, moved = await self._take(
                keys=[self._lock, self._aside(self._lock)], args=[owner, ms, "1"]
            )
        self._moved(moved, self._lock)
        return bool(left == -1)

    async def release_pump(self, owner: str) -> None:
        """Give the pump's lock back, if ``owner`` holds it."""
        owner = check_key_part("owner", owner)
        async with self._guard("release_pump"):
            await self._release(keys=[self._lock], args=[owner])

    async def due_count(self) -> int:
        """How many messages are scheduled."""
        async with self._guard("due_count"):
            if _text(await self._client.type(self._due)) != "zset":
                return 0
            return int(await self._client.zcard(self._due))

    async def bad_count(self) -> int:
        """How many foreign members were moved to ``{prefix}bad``."""
        async with self._guard("bad_count"):
            if _text(await self._client.type(self._bad)) != "list":
                return 0
            return int(await self._client.llen(self._bad))

    async def set_aside(self, task: str, body: Any, reason: str) -> None:
        """Append a message that cannot be handled (``task``, its ``body``, ``reason``) to
        ``{prefix}bad`` as JSON (a body JSON cannot hold is kept as its repr), for an
        operator to look at."""
        try:
            text = json.dumps(
                {"task": str(task), "body": body, "reason": str(reason)},
                ensure_ascii=True,
                separators=(",", ":"),
                allow_nan=False,
            )
        except (TypeError, ValueError, RecursionError):
            text = json.dumps(
                {"task": str(task), "body": repr(body)[:MAX_MEMBER_BYTES], "reason": str(reason)}
            )
        async with self._guard("set_aside"):
            moved = await self._set_aside(keys=[self._bad, self._aside(self._bad)], args=[text])
        self._moved(moved, self._bad)

    # --- dead letters -----------------------------------------------------------------------

    async def add_dead(self, record: dict[str, Any]) -> str:
        """Append a ``flowlang.deadletter/1`` record to the dead letters; its stream id.
        ValueError when the record cannot be written as JSON."""
        text = self._dead_text(record)
        async with self._guard("add_dead"):
            entry, moved = await self._add_dead(
                keys=[self._dead, self._aside(self._dead)], args=[text]
            )
        self._moved(moved, self._dead)
        return _text(entry)

    @staticmethod
    def _dead_text(record: Mapping[str, Any]) -> str:
        if not isinstance(record, Mapping):
            raise ValueError(f"a dead letter is a JSON object, not {type(record).__name__}")
        if nests_deeper_than(record, MAX_RECORD_DEPTH + WRAPPING):
            raise ValueError(f"a dead letter nests deeper than {MAX_RECORD_DEPTH} levels")
        try:
            return encode_record(record, MAX_MEMBER_BYTES).rstrip("\n")
        except RecordError as error:
            raise ValueError(f"a dead letter {error}") from None

    async def dead_letters(
        self, after: str = "-", count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` dead letters after entry ``after`` (``-``: from the first), oldest
        first, as ``(entry id, record)``; an entry that is not a record is logged and skipped
        (it stays in the stream)."""
        start = _check_stream_id("after", after, ("-",))
        if type(count) is not int or not 1 <= count <= 10_000:
            raise ValueError("count is a whole number from 1 to 10000")
        found: list[tuple[str, dict[str, Any]]] = []
        async with self._guard("dead_letters"):
            if _text(await self._client.type(self._dead)) != "stream":
                return []
            while len(found) < count:
                page: list[Any] = (
                    await self._client.xrange(
                        self._dead, min=start if start == "-" else f"({start}", count=count
                    )
                    or []
                )
                for entry, fields in page:
                    start = _text(entry)
                    record = self._dead_record(start, fields)
                    if record is not None and len(found) < count:
                        found.append((start, record))
                if len(page) < count:
                    break
        return found

    def _dead_record(self, entry: str, fields: Mapping[Any, Any]) -> dict[str, Any] | None:
        raw = fields.get(b"record", fields.get("record"))
        try:
            if raw is None:
                raise RecordError("it has no record field")
            data = raw if isinstance(raw, bytes) else raw.encode()
            return decode_record(data, MAX_RECORD_DEPTH + WRAPPING)
        except (RecordError, UnicodeError) as error:
            log.warning(
                "shared store: dead letter %s in %s is not a record (%s); skipped",
                entry,
                self._dead,
                error,
            )
            return None

    async def last_dead(self) -> str | None:
        """The id of the newest dead letter (None when there is none): where a replay of what
        the stream holds now stops."""
        async with self._guard("last_dead"):
            if _text(await self._client.type(self._dead)) != "stream":
                return None
            newest: list[Any] = await self._client.xrevrange(self._dead, count=1) or []
        return _text(newest[0][0]) if newest else None

    async def claim_dead(self, entry_id: str, holder: str, seconds: float) -> str:
        """Claim dead letter ``entry_id`` for ``seconds`` to replay it (one replay at a time):
        ``claimed``; ``held`` (another replay holds it); ``gone`` (it is no longer in the
        stream). ``holder`` is a key part, a token of the one replay."""
        entry = _check_stream_id("entry_id", entry_id)
        holder = check_key_part("holder", holder)
        ms = _milliseconds("claim", seconds)
        name = self._key("replaying", entry)
        async with self._guard("claim_dead"):
            state, moved = await self._claim_dead(
                keys=[self._dead, name, self._aside(name)], args=[entry, holder, ms]
            )
        self._moved(moved, name)
        return _text(state)

    async def renew_dead_claim(self, entry_id: str, holder: str, seconds: float) -> bool:
        """Renew ``holder``'s claim of a dead letter for ``seconds``: False when it is no
        longer ``holder``'s."""
        name = self._key("replaying", _check_stream_id("entry_id", entry_id))
        holder = check_key_part("holder", holder)
        ms = _milliseconds("claim", seconds)
        async with self._guard("renew_dead_claim"):
            return bool(await self._renew(keys=[name], args=[holder, ms]) == 1)

    async def release_dead_claim(self, entry_id: str, holder: str) -> None:
        """Give a dead letter's claim back (its replay ended without an outcome written)."""
        name = self._key("replaying", _check_stream_id("entry_id", entry_id))
        holder = check_key_part("holder", holder)
        async with self._guard("release_dead_claim"):
            await self._release(keys=[name], args=[holder])

    async def finish_replay(
        self,
        added: list[dict[str, Any]],
        delivered: list[tuple[str, Any, int]],
        *,
        entry_id: str | None = None,
        holder: str | None = None,
        at: float | None = None,
        replayed: tuple[str, str] | None = None,
    ) -> str:
        """Write a replay's outcome in one step: settle each ``(key, result, attempts)`` of
        ``delivered`` as delivered (at ``at``; never overwriting a delivered entry), add the
        dead letters ``added`` and, with ``entry_id`` (claimed by ``holder``), remove that
        entry and give its claim back; with ``replayed=(key, mark holder)``
        (:meth:`start_replay`), replace that mark by the outcome (``dead_lettered`` when
        records are added, delivered when settled so, else forgotten). ``ok``; ``lost`` when
        the claim or the mark was lost (the entry is gone or another replay holds it; the mark
        replaced already, by this very write whose reply was lost or by a replay that took it
        over): then only the settlements are written, so a write tried again adds nothing
        twice. ValueError (nothing written) when a record or result cannot be kept as JSON."""
        texts = [self._dead_text(record) for record in added]
        when = repr(time.time() if at is None else _time("at", at))
        name = ""
        if entry_id is not None:
            entry = _check_stream_id("entry_id", entry_id)
            name = self._key("replaying", entry)
            if holder is None:
                raise ValueError("a claimed entry needs its holder")
            holder = check_key_part("holder", holder)
        keys = [self._dead, self._aside(self._dead), name or self._key("replaying", "-")]
        marker = ""
        if replayed is not None:
            marked = self._key("act", check_key_part("idempotency key", replayed[0]))
            marker = check_key_part("holder", replayed[1])
            keys += [marked, self._aside(marked)]
        else:
            keys += [self._key("act", "-"), self._aside(self._key("act", "-"))]
        settlements: list[str | int] = []
        for key, result, attempts in delivered:
            ledger = self._key("act", check_key_part("idempotency key", key))
            if type(attempts) is not int or attempts < 0:
                raise ValueError("attempts is a whole number")
            try:
                data = json.dumps(result, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError, RecursionError) as error:
                raise ValueError(f"the result of {key} cannot be kept as JSON: {error}") from None
            keys += [ledger, self._aside(ledger)]
            settlements += [data, attempts, when]
        args: list[str | int] = [entry_id or "", holder or "", self._ledger_ms, len(texts)]
        args += [marker, *texts, *settlements]
        async with self._guard("finish_replay"):
            status, moved = await self._finish_replay(keys=keys, args=args)
        if moved:
            log.warning(
                "shared store: a key of a replay's held something this store did not write; "
                "moved aside under %sbad:",
                self.prefix,
            )
        return _text(status)

    async def remove_dead(self, entry_id: str) -> None:
        """Remove a dead letter (after its replay)."""
        entry = _check_stream_id("entry_id", entry_id)
        async with self._guard("remove_dead"):
            if _text(await self._client.type(self._dead)) == "stream":
                await self._client.xdel(self._dead, entry)

    async def dead_count(self) -> int:
        """How many dead letters are kept."""
        async with self._guard("dead_count"):
            if _text(await self._client.type(self._dead)) != "stream":
                return 0
            return int(await self._client.xlen(self._dead))
